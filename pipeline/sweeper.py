"""``hydra/sweeper=vizpipe``: Hydra's basic sweeper, without composing every job from scratch twice.

Hydra composes each job of a sweep twice: once before the batch is launched, to fail early ("this
repeats work the launcher will do", says ``Sweeper.validate_batch_is_legal``), once in the
launcher to run it. Each composition of vizpipe's config takes ~0.12 s, about what a CAM job on
resnet18 takes. This sweeper:

* skips the early check for jobs ``python run.py`` has already checked before Hydra started
  (``vizpipe.pipeline.precheck``: every config-only rule, not only composition); any other job
  is checked as Hydra checks it;
* tells every job which keys the sweep varies and their values (``vizpipe.pipeline.sweeps.mark``);
* hands the launcher a config loader that derives value-only jobs' configs from the sweep's
  config instead of composing each (``DerivingConfigLoader``, below).

Everything else (job order, batches, ``hydra.sweeper.params``, launchers, callbacks) is the basic
sweeper's; ``hydra/sweeper=basic`` brings Hydra's back. What a job is, which overrides are
structural and how values are set: ``vizpipe.pipeline.sweeps``.

**The deriving config loader.** Most sweeps only change values (``cam.layer=layer1,layer2``): a
job's config then differs from the sweep's own config (composed once by Hydra, every non-swept
override applied) in those values and in fields of the ``hydra`` node (``overrides.task``,
``job.override_dirname``; ``job.id``/``job.num`` and the output folder are set later by the
launcher). ``DerivingConfigLoader`` wraps Hydra's config loader:

1. the first job setting a given set of keys is composed by Hydra *and* derived from the sweep's
   config (``sweeps.with_values``, and the ``hydra`` fields computed as Hydra computes them);
   only when the two are equal (same YAML, same flags) are the later jobs setting those keys
   derived, else all are composed;
2. jobs with a structural override (``sweeps.Overrides.structural``) are always composed, except
   a group override choosing what the sweep's config already chose.

Measured in-process, paired, on the 12-job CAM sweep's jobs (``OMP_NUM_THREADS=1``, a shared
2-core machine): a job config composed by Hydra 120-130 ms, derived 7.6-8.3 ms (medians of 60
pairs in each of three runs), so ~0.11 s saved on each job but the first of its kind (11 of 12).

The loader is handed to the launcher, so it works the same in a launcher's worker processes.
Hydra loads sweepers only from its ``hydra_plugins`` namespace: ``pipeline/hydra/hydra_plugins/``
holds a one-line shim that re-exports ``VizpipeSweeper`` (``vizpipe.pipeline.hydra`` puts that
folder on the path). Launcher workers unpickle ``vizpipe.pipeline.sweeper.DerivingConfigLoader``,
a regular module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict
from vizpipe.pipeline import sweeps
from vizpipe.pipeline.hydra.private import BasicSweeper, overrides_dirname

log = logging.getLogger(__name__)

_UNPROVEN, _PROVEN, _REFUSED = "unproven", "proven", "refused"


class DerivingConfigLoader(ConfigLoader):
    """Hydra's ``ConfigLoader`` whose ``load_sweep_config`` derives value-only jobs (see above)."""

    def __init__(self, inner: ConfigLoader) -> None:
        self.inner = inner
        # the keys a value-only job sets -> unproven | proven | refused
        self.kinds: Dict[Tuple[str, ...], str] = {}
        self.overrides = sweeps.Overrides(inner.get_group_options)
        self.values: Dict[str, List[str]] = {}  # the sweep's swept keys and their values (sweeps.mark)
        # job (its override set) -> its folder's name under the sweep folder, for jobs run again
        # (a resumed sweep, or a launch after a lost worker): each keeps its folder and resumes there
        self.places: Dict[frozenset, str] = {}
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

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        """One job's config: derived from the sweep's config once proven equal, else composed; in
        the folder ``places`` names for it, if any."""
        from vizpipe.pipeline.run_folder import RESUME_ENV

        cfg = self._load(master_config, sweep_overrides)
        place = self.places.get(frozenset(sweep_overrides))
        if place is not None:
            with open_dict(cfg.hydra):
                cfg.hydra.sweep.subdir = place
                cfg.hydra.job.env_set[RESUME_ENV] = "1"
        return cfg

    def _load(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        try:
            parsed = sweeps.parse(sweep_overrides)
            choices = master_config.hydra.runtime.choices
            structural = any(
                self.overrides.structural(o) and not self.overrides.same_choice(o, choices) for o in parsed
            )
        except Exception:  # noqa: BLE001 - Hydra's composition reports it properly
            structural = True
        if structural:
            return self._compose(master_config, sweep_overrides)
        kind = tuple(o.get_key_element() for o in parsed)
        state = self.kinds.get(kind, _UNPROVEN)
        if state == _PROVEN:
            self.derived += 1
            return self._derive(master_config, parsed)
        cfg = self._compose(master_config, sweep_overrides)
        if state == _UNPROVEN:
            same = _same(self._derive(master_config, parsed), cfg)
            self.kinds[kind] = _PROVEN if same else _REFUSED
            log.debug("Jobs setting %s: derived config %s Hydra's", ", ".join(kind), "==" if same else "!=")
        return cfg

    def _compose(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        self.composed += 1
        return sweeps.mark(self.inner.load_sweep_config(master_config, list(sweep_overrides)), self.values)

    def _derive(self, master: DictConfig, parsed: List[Override]) -> DictConfig:
        """The sweep's config with this job's values and ``hydra`` fields, as Hydra would set them."""
        values = [o for o in parsed if not self.overrides.is_group(o.get_key_element())]
        cfg = sweeps.with_values(master, values)
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in parsed]
            dirname = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = overrides_dirname(
                parsed, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys
            )
        OmegaConf.copy_cache(from_config=master, to_config=cfg)
        return sweeps.mark(cfg, self.values)


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
    """``BasicSweeper`` that does not compose the same job config twice (see the module docstring),
    whose launcher survives a lost worker (``vizpipe.pipeline.survive``), and which runs only the
    unfinished jobs of a resumed sweep (``resume=<sweep folder>``), each in its own folder."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """The basic sweeper's setup, with the deriving config loader and the surviving launcher."""
        from vizpipe.pipeline.survive import SurvivingLauncher

        self.loader = DerivingConfigLoader(hydra_context.config_loader)
        context = HydraContext(config_loader=self.loader, callbacks=hydra_context.callbacks)
        super().setup(hydra_context=context, task_function=task_function, config=config)
        self.launcher = SurvivingLauncher(self.launcher, self)

    def split_arguments(self, overrides: List[Override], max_batch_size: int | None) -> List[Any]:  # type: ignore[override]
        """The basic sweeper's batches; what the sweep varies is kept for its jobs; a resumed
        sweep leaves out the jobs that finished ok."""
        from vizpipe.pipeline.run_folder import resuming

        batches = BasicSweeper.split_arguments(overrides, max_batch_size)
        self.loader.values = sweeps.swept_values(job for batch in batches for job in batch)
        config = getattr(self, "config", None)  # None before setup (e.g. Hydra's own jobs listing)
        if config is not None and resuming(config.hydra.job.env_set):
            jobs = self._unfinished([job for batch in batches for job in batch])
            batches = (
                [list(b) for b in BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size)]
                if jobs
                else []
            )
        return batches

    def _unfinished(self, jobs: List[List[str]]) -> List[List[str]]:
        """The jobs of a resumed sweep that did not finish ok, each placed in its folder."""
        import json
        from pathlib import Path

        from vizpipe.pipeline.manifest import MANIFEST, settled

        assert self.config is not None
        folders = sweeps.job_folders(Path(str(self.config.hydra.sweep.dir)))
        raw = str(OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir"))
        todo = []
        for number, job in enumerate(jobs):
            folder = folders.get(frozenset(job))
            try:
                doc = (
                    settled(json.loads((folder / MANIFEST).read_text(encoding="utf-8")), folder)
                    if folder
                    else None
                )
            except (OSError, ValueError):
                doc = None
            if doc is not None and doc.get("status") == "ok":
                continue
            name = folder.name if folder is not None else raw.replace("${hydra.job.num}", str(number))
            self.loader.places[frozenset(job)] = name
            todo.append(job)
        log.info("Resuming the sweep: %d of %d job(s) to run", len(todo), len(jobs))
        return todo

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose only the jobs of ``batch`` that this process has not checked yet."""
        rest = [job for job in batch if not sweeps.was_checked(job)]
        if rest:
            super().validate_batch_is_legal(rest)
