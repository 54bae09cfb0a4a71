"""Hydra/OmegaConf composition errors turned into one line: the bad value and the valid choices.

Messages come from the exceptions' attributes (``full_key``, ``value``, ``parent_node``,
``missing_cfg_file``, ``options``, the failing node's type), never from their text.
"""

from __future__ import annotations

from typing import Any

from vizpipe.pipeline.errors import ConfigError, unknown_choice

__all__ = ["LAUNCHERS_HINT", "translate"]

#: where the launchers of the cluster extra come from (README: "Sweeps on more cores and machines")
LAUNCHERS_HINT = (
    "the joblib, submitit_local, submitit_slurm, slurm and ray launchers come with the cluster extra: "
    "pip install -e '.[cluster]'"
)


def _chain(exc: BaseException) -> list[BaseException]:
    out = []
    seen: set[int] = set()
    x: BaseException | None = exc
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        out.append(x)
        x = x.__cause__ or x.__context__
    return out


def _value_of(key: str, overrides: list[str]) -> str:
    for o in overrides:
        k, _, v = o.lstrip("+~").partition("=")
        if k == key:
            return v
    return "?"


def translate(exc: BaseException, overrides: list[str]) -> ConfigError:
    """Turn a Hydra/OmegaConf composition error into one line with the bad value and choices."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import (
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    chain = _chain(exc)
    missing_cfg = next((x for x in chain if isinstance(x, MissingConfigException)), None)
    if missing_cfg is not None and missing_cfg.missing_cfg_file:
        group, _, option = str(missing_cfg.missing_cfg_file).rpartition("/")
        choices = [o for o in (missing_cfg.options or []) if not o.startswith("_")]
        if group:
            hint = f"Set {group}=<one of these>"
            if group == "hydra/launcher":
                hint += f"; {LAUNCHERS_HINT}"
            return unknown_choice(f"{group} option", option, choices, hint=hint)
        return unknown_choice("config", option, choices)
    oc = next(
        (x for x in chain if isinstance(x, OmegaConfBaseException) and getattr(x, "full_key", None)), None
    )
    if oc is not None:
        key = str(oc.full_key)
        if isinstance(oc, ConfigKeyError | AttributeError) and not isinstance(oc, ValidationError):
            return _unknown_key(key, oc.parent_node)
        if isinstance(oc, MissingMandatoryValue):
            return ConfigError(f"{key} is required for this choice (it is ??? in conf/); set {key}=...")
        if isinstance(oc, ValidationError):
            return _bad_value(oc, key, overrides)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ConfigError(f"Invalid config: {first}")


def _unknown_key(key: str, parent: Any) -> ConfigError:
    """ "Unknown config key 'cam.target_clas'; did you mean 'cam.target_class'? ..." """
    prefix, _, _ = key.rpartition(".")
    names = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
    choices = [f"{prefix}.{n}" if prefix else n for n in names if n != "defaults"]
    return unknown_choice(
        "config key",
        key,
        choices,
        hint="Keys are listed in conf/ with comments; python run.py --cfg job shows them all",
    )


def _node_type(oc: Any) -> Any:
    """The type the failing node holds: an Enum class, a list's element type, int, float, ..."""
    parent = oc.parent_node
    key = str(oc.full_key).rpartition(".")[2]
    if "[" in key:  # a list element: summary.col_names[0]
        return ("element", getattr(getattr(parent, "_metadata", None), "element_type", None))
    node = parent._get_node(key) if parent is not None and hasattr(parent, "_get_node") else None
    if node is None:
        return (None, None)
    from omegaconf import ListConfig
    from omegaconf.nodes import BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode

    if isinstance(node, EnumNode):
        return ("enum", node.enum_type)
    if isinstance(node, ListConfig):
        return ("list", None)
    for cls, text in (
        (IntegerNode, "an integer"),
        (FloatNode, "a number"),
        (BooleanNode, "true or false"),
        (StringNode, "a string"),
    ):
        if isinstance(node, cls):
            return ("scalar", text)
    if hasattr(node, "_metadata") and getattr(node._metadata, "object_type", None) not in (None, dict):
        return ("list", None) if getattr(node._metadata, "element_type", None) else (None, None)
    return (None, None)


def _bad_value(oc: Any, key: str, overrides: list[str]) -> ConfigError:
    from enum import Enum

    kind, info = _node_type(oc)
    base_key = key.split("[")[0]
    value = oc.value if oc.value is not None else _value_of(base_key, overrides)
    if kind == "element" and isinstance(info, type) and issubclass(info, Enum):
        return unknown_choice(f"value in {base_key}", value, [m.name for m in info])
    if kind == "enum":
        return unknown_choice(f"value for {key}", value, [m.name for m in info])
    if kind == "list" or isinstance(getattr(oc, "parent_node", None), dict):
        return ConfigError(
            f"{key} must be a list, got '{value}'; write '{key}=[{value}]' (quoted in a shell)"
        )
    if kind == "scalar":
        return ConfigError(f"Invalid value '{value}' for {key}: expected {info} (see the comments in conf/)")
    return ConfigError(f"Invalid value '{value}' for {key} (see the comments in conf/)")
