"""``python -m vizpipe [overrides]`` and the ``vizpipe`` console script: the same as ``python run.py``."""

import gc


def main() -> None:
    """The ``vizpipe`` command (``[project.scripts]``)."""
    gc.disable()  # while the libraries load and the command line is checked (process.freeze_startup)
    from vizpipe.pipeline.cli import command_line

    command_line()


if __name__ == "__main__":
    main()
