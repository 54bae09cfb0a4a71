"""``hydra/sweeper=vizpipe``: Hydra's basic sweeper, without composing every job from scratch twice.

Hydra composes each job of a sweep twice: once before the batch is launched, to fail early ("this
repeats work the launcher will do", says ``Sweeper.validate_batch_is_legal``), once in the
launcher to run it. Each composition of vizpipe's config takes ~0.1 s, about what a CAM job on
resnet18 takes. This sweeper:

* skips the early check for jobs ``python run.py`` has already checked before Hydra started
  (``vizpipe.pipeline.cli.precheck`` with ``vizpipe.pipeline.sweeps``: every config-only rule, not only
  composition); any other job is checked as Hydra checks it;
* hands the launcher a config loader that derives value-only jobs from a template composed by
  Hydra, once it has proven the derivation equal to Hydra's own composition for that sweep
  (``_core.DerivingConfigLoader``).

Everything else (job order, batches, ``hydra.sweeper.params``, launchers, callbacks) is the basic
sweeper's; ``hydra/sweeper=basic`` brings Hydra's back.

The config loader (``DerivingConfigLoader``):

Job configs derived from a composed one, proven equal to Hydra's own composition per sweep.

Hydra composes every job of a sweep from scratch (defaults tree, every YAML file, schema merges:
~0.1 s for vizpipe's config, more than a CAM job on resnet18 takes). Most sweeps only change
values (``cam.layer=layer1,layer2``): a job's config then differs from the sweep's own config
(composed once by Hydra, every non-swept override applied) in those values and in fields of the
``hydra`` node (``overrides.task``, ``job.override_dirname``; ``job.id``/``job.num`` and the
output folder are set later by the launcher). ``DerivingConfigLoader`` wraps Hydra's config loader:

1. the first job setting a given set of keys is composed by Hydra *and* derived from the sweep's
   config (values set with ``OmegaConf.update(cfg, key, value, merge=True)``, as Hydra sets them,
   and the ``hydra`` fields recomputed as Hydra computes them); only when the two are equal
   (same YAML, same flags) are the later jobs setting those keys derived, else all are composed;
2. jobs with a structural override (a config group, ``+``/``~``, ``hydra.*``, a dict value) are
   always composed.

The loader is handed to the launcher, so it works the same in a launcher's worker processes.

Hydra loads sweepers only from its ``hydra_plugins`` namespace: ``pipeline/hydra/hydra_plugins/``
holds a one-line shim that re-exports ``VizpipeSweeper`` (``vizpipe.pipeline.hydra`` puts that folder on
the path). Launcher workers unpickle ``vizpipe.pipeline.sweeper.DerivingConfigLoader``, a regular module.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

_UNPROVEN, _PROVEN, _REFUSED = "unproven", "proven", "refused"


class DerivingConfigLoader(ConfigLoader):
    """Hydra's ``ConfigLoader`` whose ``load_sweep_config`` derives value-only jobs (see above)."""

    def __init__(self, inner: ConfigLoader) -> None:
        self.inner = inner
        # the keys a value-only job sets -> unproven | proven | refused
        self.kinds: Dict[Tuple[str, ...], str] = {}
        self.groups: Dict[str, bool] = {}  # key -> is it a config group (asking Hydra costs ~10 ms)
        self.swept: List[str] = []  # keys the sweep varies, put in each job's hydra.job.env_set
        self.values: Dict[str, List[str]] = {}  # ... and their values, in sweep order
        self.composed = 0  # jobs composed by Hydra
        self.derived = 0  # jobs derived from the sweep's config

    # ------------------------------------------------------------------ delegated to Hydra's loader

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        """Hydra's composition."""
        return self.inner.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        """Hydra's search path."""
        return self.inner.get_search_path()

    def get_sources(self) -> Any:
        """Hydra's config sources."""
        return self.inner.get_sources()

    def list_groups(self, parent_name: str) -> Any:
        """Hydra's config groups under ``parent_name``."""
        return self.inner.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> Any:
        """Hydra's options of a config group."""
        return self.inner.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        """Hydra's defaults list."""
        return self.inner.compute_defaults_list(*args, **kwargs)

    # ------------------------------------------------------------------ the sweep's jobs

    def _structural(self, override: Any) -> bool:
        key = override.get_key_element()
        if override.is_add() or override.is_force_add() or override.is_delete() or override.package:
            return True
        if override.is_hydra_override() or isinstance(override.value(), dict):
            return True
        if key not in self.groups:
            self.groups[key] = bool(self.inner.get_group_options(key.replace(".", "/")))
        return self.groups[key]

    def _same_choice(self, master: DictConfig, override: Any) -> bool:
        """A plain group override choosing what the sweep's config already chose.

        Hydra repeats every command-line override in every job (``run.py -m model=resnet18
        cam.layer=...`` gives each job ``model=resnet18``); such a job differs from the sweep's
        config only in its values, so it can be derived (and is proven equal first, as any kind).
        """
        if override.is_add() or override.is_force_add() or override.is_delete() or override.package:
            return False
        if not self.groups.get(override.get_key_element()):
            return False
        value = override.value()
        return (
            isinstance(value, str) and master.hydra.runtime.choices.get(override.get_key_element()) == value
        )

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        """One job's config: derived from the sweep's config once proven equal, else composed."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:
            parsed = OverridesParser.create().parse_overrides(list(sweep_overrides))
            structural = any(self._structural(o) and not self._same_choice(master_config, o) for o in parsed)
        except Exception:  # noqa: BLE001 - Hydra's composition reports it properly
            return self._mark(self._compose(master_config, sweep_overrides))
        if structural:
            return self._mark(self._compose(master_config, sweep_overrides))
        kind = tuple(o.get_key_element() for o in parsed)
        state = self.kinds.get(kind, _UNPROVEN)
        if state == _PROVEN:
            self.derived += 1
            return self._derive(master_config, parsed)
        cfg = self._mark(self._compose(master_config, sweep_overrides))
        if state == _UNPROVEN:
            same = _same(self._derive(master_config, parsed), cfg)
            self.kinds[kind] = _PROVEN if same else _REFUSED
            log.debug("Jobs setting %s: derived config %s Hydra's", ", ".join(kind), "==" if same else "!=")
        return cfg

    def _compose(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        self.composed += 1
        return self.inner.load_sweep_config(master_config, list(sweep_overrides))

    def _mark(self, cfg: DictConfig) -> DictConfig:
        """Tell the job which keys the sweep varies (``vizpipe.pipeline.schema`` names job folders by them)
        and their values (``RunContext.sweep``; left out when a value holds ``$`` or a backslash,
        which OmegaConf would read as an interpolation or an escape)."""
        import json

        from vizpipe.pipeline.schema import SWEEP_VALUES_ENV, SWEPT_ENV

        if self.swept:
            values = {k: self.values[k] for k in self.swept if k in self.values}
            text = json.dumps(values, separators=(",", ":"))
            with open_dict(cfg.hydra):
                cfg.hydra.job.env_set[SWEPT_ENV] = ",".join(self.swept)
                if "$" not in text and "\\" not in text:
                    cfg.hydra.job.env_set[SWEEP_VALUES_ENV] = text
        return cfg

    def _derive(self, master: DictConfig, parsed: List[Any]) -> DictConfig:
        """The sweep's config with this job's values and ``hydra`` fields, as Hydra would set them."""
        from hydra._internal.config_loader_impl import get_overrides_dirname

        cfg = copy.deepcopy(master)
        for o in parsed:
            if self.groups.get(o.get_key_element()):  # a group's same choice (_same_choice): nothing to set
                continue
            OmegaConf.update(cfg, o.get_key_element(), o.value(), merge=True)
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in parsed]
            dirname = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=parsed,
                kv_sep=dirname.kv_sep,
                item_sep=dirname.item_sep,
                exclude_keys=dirname.exclude_keys,
            )
        OmegaConf.copy_cache(from_config=master, to_config=cfg)
        return self._mark(cfg)


def _same(a: DictConfig, b: DictConfig) -> bool:
    """Same content (unresolved YAML) and the same struct/readonly flags on the root and ``hydra``."""
    flags = ("struct", "readonly")
    return (
        OmegaConf.to_yaml(a) == OmegaConf.to_yaml(b)
        and all(a._get_flag(f) == b._get_flag(f) for f in flags)
        and all(a.hydra._get_flag(f) == b.hydra._get_flag(f) for f in flags)
    )


@dataclass
class VizpipeSweeperConf:
    """``hydra.sweeper.*`` (the same keys as ``hydra/sweeper=basic``)."""

    # the sweeper class
    _target_: str = "hydra_plugins.vizpipe_sweeper.VizpipeSweeper"
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
        values: Dict[str, List[str]] = {}
        for job in (job for batch in batches for job in batch):
            for line in job:
                key, _, value = line.partition("=")
                seen = values.setdefault(key.lstrip("+~"), [])
                if value not in seen:
                    seen.append(value)
        self.loader.swept = [k for k, v in values.items() if len(v) > 1]
        self.loader.values = {k: values[k] for k in self.loader.swept}
        return batches

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose only the jobs of ``batch`` that this process has not checked yet."""
        from vizpipe.pipeline.sweeps import was_checked

        rest = [job for job in batch if not was_checked(job)]
        if rest:
            super().validate_batch_is_legal(rest)
