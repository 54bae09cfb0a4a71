"""``python -m vizpipe.compare``: the command line of ``vizpipe.pipeline.compare``, under a shorter name."""

import runpy

if __name__ == "__main__":
    runpy.run_module("vizpipe.pipeline.compare", run_name="__main__", alter_sys=True)
