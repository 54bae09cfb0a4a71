"""vizpipe's entries in Hydra's ConfigStore and its resolvers; ``register()`` (idempotent) adds them.

* ``<group>/_schema`` for the core groups (``vizpipe.pipeline.schema``: model, device, input,
  report) and for every stage ``vizpipe.pipeline.registry`` discovers (its ``config`` dataclass);
  each YAML option of a group starts with ``defaults: [_schema, _self_]`` (plugin stages' YAML is
  stored as ``<name>/default``);
* ``vizpipe_schema``: the root (``schema.root_schema``), first in ``conf/config.yaml``'s defaults;
* the folder of vizpipe's Hydra plugin on ``sys.path`` (``vizpipe.pipeline.hydra``), where Hydra
  finds ``hydra/sweeper=vizpipe`` (``vizpipe.pipeline.sweeper``);
* the resolvers ``vizpipe_safe`` (``names.safe_dirname``) and ``vizpipe_jobdir`` (job folder
  names: ``sweeps.job_dirname``).

Importing this module registers them too, so ``import vizpipe.pipeline.config_store`` is all a
script needs before composing vizpipe's config (``hydra.main``, the Compose API).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

__all__ = ["register"]

_registered = False


def register() -> None:
    """Register the schemas, the plugin stages' YAML, the sweeper and the resolvers (idempotent)."""
    global _registered
    if _registered:
        return
    from vizpipe.pipeline import hydra as hydra_plugin
    from vizpipe.pipeline.names import safe_dirname
    from vizpipe.pipeline.registry import plugin_yaml, stage_classes
    from vizpipe.pipeline.schema import CORE_GROUPS, root_schema
    from vizpipe.pipeline.sweeps import job_dirname

    hydra_plugin.register()  # Hydra finds hydra/sweeper=vizpipe (pipeline/sweeper.py) there
    cs = ConfigStore.instance()
    for group, node in CORE_GROUPS.items():
        cs.store(group=group, name="_schema", node=node)
    for name, cls in stage_classes().items():
        if cls.config is not None:
            cs.store(group=name, name="_schema", node=cls.config)
        yaml = plugin_yaml(name)
        if yaml is not None:
            cs.store(group=name, name="default", node=OmegaConf.load(yaml))
    cs.store(name="vizpipe_schema", node=root_schema())
    if not OmegaConf.has_resolver("vizpipe_safe"):
        OmegaConf.register_new_resolver("vizpipe_safe", safe_dirname)
    if not OmegaConf.has_resolver("vizpipe_jobdir"):
        OmegaConf.register_new_resolver("vizpipe_jobdir", job_dirname)
    _registered = True


register()
