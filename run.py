"""vizpipe's command line: ``python run.py [overrides]`` or ``python run.py -m [sweep overrides]``.

Thin on purpose: the logic lives in ``pipeline`` (``run_pipeline``), which tests call directly.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import pipeline.schema  # noqa: F401 - registers the config schema and resolvers
from pipeline.cli import finish, precheck, sweep_exit


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run the pipeline into Hydra's run (or job) folder."""
    from hydra.core.hydra_config import HydraConfig

    from pipeline.runner import run_pipeline

    hc = HydraConfig.get()
    result = run_pipeline(cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task))
    finish(result, multirun=str(hc.mode) == "RunMode.MULTIRUN")


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
    sweep_exit()
