"""``python -m vizpipe.report``: the command line of ``vizpipe.pipeline.report``, under a shorter name."""

import runpy

if __name__ == "__main__":
    runpy.run_module("vizpipe.pipeline.report", run_name="__main__", alter_sys=True)
