"""vizpipe's command line: ``python run.py [overrides]`` or ``python run.py -m [sweep overrides]``.

Thin on purpose: the logic lives in ``pipeline`` (``run_pipeline``), which tests call directly.
"""

from __future__ import annotations

import gc
import sys

if __name__ == "__main__":
    gc.disable()  # while the libraries load and the command line is checked: see freeze_startup


import hydra
from omegaconf import DictConfig

import pipeline.schema  # noqa: F401 - registers the config schema and resolvers
from pipeline.cli import finish, precheck, run_then_exit, sweep_exit, sweep_values
from pipeline.memory import freeze_startup


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run the pipeline into Hydra's run (or job) folder."""
    from hydra.core.hydra_config import HydraConfig

    from pipeline.runner import run_pipeline

    hc = HydraConfig.get()
    result = run_pipeline(
        cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task), sweep=sweep_values(hc.job.env_set)
    )
    finish(result, multirun=str(hc.mode) == "RunMode.MULTIRUN")


def cli() -> None:
    """Check the command line, run it through Hydra, end a sweep with its status."""
    precheck(sys.argv[1:])
    freeze_startup()  # the imports are done: later garbage collections skip them (pipeline.memory)
    main()
    sweep_exit()


if __name__ == "__main__":
    run_then_exit(cli)  # without Python's slow teardown (pipeline.cli.run_then_exit)
