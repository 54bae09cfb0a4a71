"""vizpipe's command line: ``python run.py [overrides]`` or ``python run.py -m [sweep overrides]``.

Thin on purpose: the command line is ``vizpipe.pipeline.cli`` (also the ``vizpipe`` console script
and ``python -m vizpipe``); the logic lives in ``vizpipe.pipeline`` (``run_pipeline``), which tests
call directly.
"""

if __name__ == "__main__":
    import gc

    gc.disable()  # while the libraries load and the command line is checked: see freeze_startup

    from vizpipe.pipeline.cli import command_line

    command_line()
