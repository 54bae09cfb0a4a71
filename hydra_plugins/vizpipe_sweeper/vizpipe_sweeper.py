"""``hydra/sweeper=vizpipe``: Hydra's basic sweeper, without composing every job from scratch twice.

Hydra composes each job of a sweep twice: once before the batch is launched, to fail early ("this
repeats work the launcher will do", says ``Sweeper.validate_batch_is_legal``), once in the
launcher to run it. Each composition of vizpipe's config takes ~0.1 s, about what a CAM job on
resnet18 takes. This sweeper:

* skips the early check for jobs ``python run.py`` has already checked before Hydra started
  (``pipeline.cli.precheck`` with ``pipeline.sweeps``: every config-only rule, not only
  composition); any other job is checked as Hydra checks it;
* hands the launcher a config loader that derives value-only jobs from a template composed by
  Hydra, once it has proven the derivation equal to Hydra's own composition for that sweep
  (``_core.DerivingConfigLoader``).

Everything else (job order, batches, ``hydra.sweeper.params``, launchers, callbacks) is the basic
sweeper's; ``hydra/sweeper=basic`` brings Hydra's back.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Dict, List

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.vizpipe_sweeper._core import DerivingConfigLoader


@dataclass
class VizpipeSweeperConf:
    """``hydra.sweeper.*`` (the same keys as ``hydra/sweeper=basic``)."""

    # the sweeper class
    _target_: str = "hydra_plugins.vizpipe_sweeper.vizpipe_sweeper.VizpipeSweeper"
    # jobs handed to the launcher at once; null = all of them in one batch
    max_batch_size: int | None = None
    # declarative sweeps, key -> comma-separated values (conf/sweep/*.yaml set these)
    params: Dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="vizpipe", node=VizpipeSweeperConf, provider="vizpipe"
)


class VizpipeSweeper(BasicSweeper):
    """``BasicSweeper`` that does not compose the same job config twice (see the module docstring)."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """The basic sweeper's setup, with the deriving config loader for the launcher."""
        self.loader = DerivingConfigLoader(hydra_context.config_loader)
        context = HydraContext(config_loader=self.loader, callbacks=hydra_context.callbacks)
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def split_arguments(self, overrides: List[Override], max_batch_size: int | None) -> List[Any]:  # type: ignore[override]
        """The basic sweeper's batches; the keys whose values differ between jobs are kept for them."""
        batches = BasicSweeper.split_arguments(overrides, max_batch_size)
        values: Dict[str, set] = {}
        for job in (job for batch in batches for job in batch):
            for line in job:
                key, _, value = line.partition("=")
                values.setdefault(key.lstrip("+~"), set()).add(value)
        self.loader.swept = [k for k, v in values.items() if len(v) > 1]
        return batches

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose only the jobs of ``batch`` that this process has not checked yet."""
        from pipeline.sweeps import was_checked

        rest = [job for job in batch if not was_checked(job)]
        if rest:
            super().validate_batch_is_legal(rest)
