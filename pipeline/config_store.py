"""vizpipe's entries in Hydra's ConfigStore and its resolvers; ``register()`` (idempotent) adds them.

* ``<group>/_schema`` for the core groups (``vizpipe.pipeline.schema``: model, device, input,
  report) and for every stage ``vizpipe.pipeline.registry`` discovers (its ``config`` dataclass);
  each YAML option of a group starts with ``defaults: [_schema, _self_]`` (plugin stages' YAML is
  stored as ``<name>/default``);
* ``vizpipe_schema``: the root (``schema.root_schema``), first in ``conf/config.yaml``'s defaults;
* the folder of vizpipe's Hydra plugin on ``sys.path`` (``vizpipe.pipeline.hydra``), where Hydra
  finds ``hydra/sweeper=vizpipe`` (``vizpipe.pipeline.sweeper``);
* the resolvers ``vizpipe_safe`` (``names.safe_dirname``), ``vizpipe_jobdir`` (job folder
  names: ``sweeps.job_dirname``), ``vizpipe_groups`` (``--help``'s list of config groups:
  ``help_groups``) and ``vizpipe_blocks`` (the model's blocks for ``sweep=cam_layers``:
  ``vizpipe.pipeline.factory.blocks``).

Options whose name starts with ``_`` are internal (``is_internal``): the stored schemas
(``<group>/_schema``) and the bases other options build on (``input/_base``,
``model/_torchvision``). ``--help`` does not list them and the precheck refuses them on the
command line (``vizpipe.pipeline.composer``); vizpipe's own YAML builds on them.

Importing this module registers them too, so ``import vizpipe.pipeline.config_store`` is all a
script needs before composing vizpipe's config (``hydra.main``, the Compose API).
"""

from __future__ import annotations

from collections.abc import Iterable

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

__all__ = ["INTERNAL_PREFIX", "help_groups", "is_internal", "public_options", "register"]

#: config options whose name starts with this are internal (see the module docstring)
INTERNAL_PREFIX = "_"

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
    if not OmegaConf.has_resolver("vizpipe_groups"):
        OmegaConf.register_new_resolver("vizpipe_groups", help_groups)
    if not OmegaConf.has_resolver("vizpipe_blocks"):
        OmegaConf.register_new_resolver("vizpipe_blocks", _blocks)
    _registered = True


def _blocks(*, _root_: object) -> str:
    from vizpipe.pipeline.factory.blocks import resolve_blocks  # torch, only when a sweep asks

    return resolve_blocks(_root_=_root_)


def is_internal(option: str) -> bool:
    """True for an internal option of a config group (``_schema``, ``_base``, ``_torchvision``)."""
    return option.startswith(INTERNAL_PREFIX)


def public_options(options: Iterable[str]) -> list[str]:
    """``options`` without the internal ones, in their order."""
    return [o for o in options if not is_internal(o)]


def help_groups() -> str:
    """``--help``'s config groups, one line each (``model: alexnet, densenet121, ...``).

    Hydra's ``$APP_CONFIG_GROUPS`` lists every option, internal ones included; ``conf/config.yaml``'s
    ``hydra.help.template`` reads this (``${vizpipe_groups:}``) instead: the groups Hydra's
    config loader finds (not ``hydra/``), each with its public options, sorted as Hydra sorts them.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    if not GlobalHydra.instance().is_initialized():
        return "(config groups: see conf/)"
    loader = GlobalHydra.instance().config_loader()

    def groups(parent: str) -> list[str]:
        out: list[str] = []
        for name in loader.list_groups(parent):
            group = f"{parent}/{name}" if parent else name
            if group == "hydra":
                continue
            if loader.get_group_options(group, ObjectType.CONFIG):
                out.append(group)
            if loader.get_group_options(group, ObjectType.GROUP):
                out += groups(group)
        return out

    lines = []
    for group in sorted(groups("")):
        options = public_options(sorted(loader.get_group_options(group, ObjectType.CONFIG)))
        if options:
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


register()
