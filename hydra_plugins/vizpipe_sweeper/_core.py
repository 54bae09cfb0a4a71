"""Job configs derived from a composed one, proven equal to Hydra's own composition per sweep.

Hydra composes every job of a sweep from scratch (defaults tree, every YAML file, schema merges:
~0.1 s for vizpipe's config, more than a CAM job on resnet18 takes). Most sweeps only change
values (``cam.layer=layer1,layer2``): their jobs' configs differ from each other in those values
and in three fields of the ``hydra`` node (``overrides.task``, ``job.override_dirname`` and the
launcher's ``job.id``/``job.num``). ``DerivingConfigLoader`` wraps Hydra's config loader:

1. the first job of a kind (same structural overrides, same value keys) is composed by Hydra and
   kept as the template;
2. the second is composed by Hydra *and* derived from the template (values set with
   ``OmegaConf.update(cfg, key, value, merge=True)``, as Hydra sets them, and the ``hydra`` node's
   fields recomputed as Hydra computes them); only when the two are equal (same YAML, same flags)
   are later jobs of that kind derived, else they are all composed;
3. jobs with a structural override (a config group, ``+``/``~``, ``hydra.*``, a dict value) are
   always composed.

The loader is handed to the launcher, so it works the same in a launcher's worker processes.
"""

import copy
import logging
from typing import Any, Dict, List, Tuple

from hydra.core.config_loader import ConfigLoader
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

_UNPROVEN, _PROVEN, _REFUSED = "unproven", "proven", "refused"


class DerivingConfigLoader(ConfigLoader):
    """Hydra's ``ConfigLoader`` whose ``load_sweep_config`` derives value-only jobs (see above)."""

    def __init__(self, inner: ConfigLoader) -> None:
        self.inner = inner
        # kind of job (structural overrides, value keys) -> (state, template config)
        self.kinds: Dict[Tuple[Any, ...], Tuple[str, DictConfig | None]] = {}
        self.groups: Dict[str, bool] = {}  # key -> is it a config group (asking Hydra costs ~10 ms)
        self.swept: List[str] = []  # keys the sweep varies, put in each job's hydra.job.env_set
        self.composed = 0  # jobs composed by Hydra
        self.derived = 0  # jobs derived from a template

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

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        """One job's config: derived from a proven template when it can be, else composed."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:
            parsed = OverridesParser.create().parse_overrides(list(sweep_overrides))
            structural = tuple(o.input_line for o in parsed if self._structural(o))
        except Exception:  # noqa: BLE001 - Hydra's composition reports it properly
            return self._compose(master_config, sweep_overrides)
        values = [o for o in parsed if o.input_line not in structural]
        kind = (structural, tuple(o.get_key_element() for o in values))
        state, template = self.kinds.get(kind, (_UNPROVEN, None))
        if state == _PROVEN and template is not None:
            self.derived += 1
            return self._derive(template, master_config, parsed, values)
        cfg = self._mark(self._compose(master_config, sweep_overrides))
        if state == _REFUSED:
            return cfg
        if template is None:
            self.kinds[kind] = (_UNPROVEN, copy.deepcopy(cfg))
        else:
            derived = self._derive(template, master_config, parsed, values)
            same = _same(derived, cfg)
            self.kinds[kind] = (_PROVEN if same else _REFUSED, template)
            log.debug("Jobs of kind %s: derived config %s Hydra's", kind, "==" if same else "!=")
        return cfg

    def _compose(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        self.composed += 1
        return self.inner.load_sweep_config(master_config, list(sweep_overrides))

    def _mark(self, cfg: DictConfig) -> DictConfig:
        """Tell the job which keys the sweep varies (``pipeline.schema`` names job folders by them)."""
        from pipeline.schema import SWEPT_ENV

        if self.swept:
            with open_dict(cfg.hydra):
                cfg.hydra.job.env_set[SWEPT_ENV] = ",".join(self.swept)
        return cfg

    @staticmethod
    def _derive(template: DictConfig, master: DictConfig, parsed: List[Any], values: List[Any]) -> DictConfig:
        """The template with this job's values and ``hydra`` fields, as Hydra would set them."""
        from hydra._internal.config_loader_impl import get_overrides_dirname

        cfg = copy.deepcopy(template)  # already marked
        for o in values:
            OmegaConf.update(cfg, o.get_key_element(), o.value(), merge=True)
        app = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in app]
            dirname = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=app,
                kv_sep=dirname.kv_sep,
                item_sep=dirname.item_sep,
                exclude_keys=dirname.exclude_keys,
            )
        OmegaConf.copy_cache(from_config=master, to_config=cfg)
        return cfg


def _same(a: DictConfig, b: DictConfig) -> bool:
    """Same content (unresolved YAML) and the same struct/readonly flags on the root and ``hydra``."""
    flags = ("struct", "readonly")
    return (
        OmegaConf.to_yaml(a) == OmegaConf.to_yaml(b)
        and all(a._get_flag(f) == b._get_flag(f) for f in flags)
        and all(a.hydra._get_flag(f) == b.hydra._get_flag(f) for f in flags)
    )
