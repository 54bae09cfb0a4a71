"""``python -m vizpipe.reproduce``: the command line of ``vizpipe.pipeline.reproduce``."""

import runpy

if __name__ == "__main__":
    runpy.run_module("vizpipe.pipeline.reproduce", run_name="__main__", alter_sys=True)
