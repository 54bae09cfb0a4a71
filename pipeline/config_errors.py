"""Hydra/OmegaConf composition errors turned into one line: the bad value and the valid choices.

Messages come from the exceptions' attributes (``full_key``, ``value``, ``parent_node``,
``missing_cfg_file``, ``options``, ``override``, the failing node's type and raw value), never
from their text. Covered: unknown config options and keys (``+key=value`` offered where the node
takes new keys, e.g. ``hydra.launcher.ray.init``), wrong types and enum values, ``???`` values,
interpolations that cannot be resolved (``${oc.env:NOPE}``, ``${model.nme}``), unreadable
overrides; ``hydra.*`` overrides included (``hydra_overrides``, ``check_hydra_values``).
An unknown top-level key that names a config group (``local``: ``conf/local/default.yaml`` without
``# @package _global_``) says what the group's file must start with.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from vizpipe.pipeline.errors import ConfigError, unknown_choice

__all__ = ["LAUNCHERS_HINT", "as_config_error", "check_hydra_values", "hydra_overrides", "translate"]

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


def translate(
    exc: BaseException, overrides: list[str], group_options: Callable[[str], list[str]] | None = None
) -> ConfigError:
    """Turn a Hydra/OmegaConf composition error into one line with the bad value and choices.

    ``group_options(group)``: a group's options on the search path composed with (the precheck's
    ``Composer.all_group_options``); by default Hydra's loader's, when Hydra is initialised."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigKeyError,
        GrammarParseError,
        InterpolationResolutionError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    chain = _chain(exc)
    unreadable = next((x for x in chain if isinstance(x, OverrideParseException)), None)
    if unreadable is not None:
        return _unreadable(unreadable.override, unreadable.message)
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
        if isinstance(oc, InterpolationResolutionError | GrammarParseError):
            return _unresolved(oc, key, overrides)
        if isinstance(oc, ConfigKeyError | AttributeError) and not isinstance(oc, ValidationError):
            return _group_under_its_name(key, overrides, group_options) or _unknown_key(
                key, oc.parent_node, overrides
            )
        if isinstance(oc, MissingMandatoryValue):
            return ConfigError(f"{key} is required for this choice (it is ??? in conf/); set {key}=...")
        if isinstance(oc, ValidationError):
            return _bad_value(oc, key, overrides)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ConfigError(f"Invalid config: {first}")


def _group_under_its_name(
    key: str, overrides: list[str], group_options: Callable[[str], list[str]] | None
) -> ConfigError | None:
    """A config group's file whose keys landed under the group's name: a top-level key no schema
    has that names a group (``local``, ``experiment``, ...), because the file does not start with
    ``# @package _global_`` (Hydra puts a group's file at its group's name by default)."""
    from hydra.core.global_hydra import GlobalHydra

    if "." in key or "[" in key:
        return None
    try:
        if group_options is not None:
            options = list(group_options(key))
        elif GlobalHydra.instance().is_initialized():
            options = list(GlobalHydra.instance().config_loader().get_group_options(key))
        else:
            options = []
    except Exception:  # noqa: BLE001 - not a group after all: the usual message
        return None
    if not options:
        return None
    chosen = _value_of(key, overrides)
    option = chosen if chosen != "?" else ("default" if "default" in options else options[0])
    return ConfigError(
        f"Config file {key}/{option}.yaml puts its keys under '{key}', which is not a config key; to "
        "set top-level keys (seed: 1, cam: {method: scorecam}) it must start with the line "
        "'# @package _global_', as conf/experiment/*.yaml do"
    )


def _unknown_key(key: str, parent: Any, overrides: list[str] | None = None) -> ConfigError:
    """ "Unknown config key 'cam.target_clas'; did you mean 'cam.target_class'? ..."

    Under a node that takes new keys (a free-form mapping such as ``cam.kwargs`` or Ray's
    ``hydra.launcher.ray.init``, not a typed dataclass) the fix is Hydra's append, ``+key=value``.
    """
    import difflib

    prefix, _, name = key.rpartition(".")
    names = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
    names = [n for n in names if n != "defaults"]
    choices = [f"{prefix}.{n}" if prefix else n for n in names]
    hint = "Keys are listed in conf/ with comments; python run.py --cfg job shows them all"
    if prefix == "hydra.launcher":
        hint = (
            "hydra.launcher holds the keys of the launcher picked with hydra/launcher=NAME "
            "(python run.py hydra/launcher=NAME --cfg hydra -p hydra.launcher shows them)"
        )
    if prefix and _takes_new_keys(parent):
        value = _value_of(key, overrides or [])
        append = f"+{key}={'...' if value == '?' else value}"
        if not difflib.get_close_matches(name, names, n=1, cutoff=0.5):
            held = f"has {', '.join(names)}" if names else "is empty"
            return ConfigError(f"Unknown config key '{key}' ({prefix} {held}); to add it, write {append}")
        hint = f"{prefix} takes new keys: to add one, write {append}"
    return unknown_choice("config key", key, choices, hint=hint)


def _takes_new_keys(node: Any) -> bool:
    """True for a free-form mapping (``Dict[str, Any]``, a plain dict), False for a typed dataclass."""
    meta = getattr(node, "_metadata", None)
    return meta is not None and getattr(meta, "object_type", None) is dict


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


def _unreadable(override: str, reason: str) -> ConfigError:
    """An override Hydra's grammar cannot read (``hydra.run.dir=[x``): the override and the reason."""
    first = (str(reason).strip().splitlines() or [""])[0]
    return ConfigError(f"Cannot read the override {override!r} ({first}); check its quoting and brackets")


#: ``${oc.env:NAME}`` / ``${oc.env:NAME,default}``, ``${resolver:...}``, ``${a.b}`` in a raw value
_ENV_REF = re.compile(r"\$\{oc\.env:\s*([^,}\s'\"]+)\s*(,)?")
_RESOLVER_REF = re.compile(r"\$\{([\w.]+):")
_KEY_REF = re.compile(r"\$\{([\w.\-\[\]]+)\}")
#: resolvers a user may mean (OmegaConf's and Hydra's); the ones registered are offered
_RESOLVERS = ("oc.env", "oc.select", "oc.decode", "oc.create", "oc.dict.keys", "oc.dict.values", "now")


def _raw(oc: Any, key: str, overrides: list[str]) -> str:
    """The failing node's value as written (the interpolation, unresolved), found from the root."""
    from omegaconf import OmegaConf

    prefix, _, name = key.rpartition(".")
    raw = None
    try:
        root = oc.parent_node._get_root()
        container = OmegaConf.select(root, prefix) if prefix else root
        raw = container._get_node(name)._value()
    except Exception:  # noqa: BLE001 - no such node (a list element, a key given only on the command line)
        pass
    return str(raw) if isinstance(raw, str) else _value_of(key, overrides)


def _unresolved(oc: Any, key: str, overrides: list[str]) -> ConfigError:
    """An interpolation that cannot be resolved: which part, and how to fix it."""
    import os

    from omegaconf import OmegaConf
    from omegaconf.errors import GrammarParseError

    raw = _raw(oc, key, overrides)
    where = f"Cannot resolve {key}={raw!r}"
    if isinstance(oc, GrammarParseError):
        return ConfigError(
            f"{where}: not a valid interpolation (write ${{key}} or ${{resolver:args}}; "
            "a literal $ before { is written \\$)"
        )
    unset = [m.group(1) for m in _ENV_REF.finditer(raw) if not m.group(2) and m.group(1) not in os.environ]
    if unset:
        name = unset[0]
        return ConfigError(
            f"{where}: the environment variable {name} is not set; set it (export {name}=...) "
            f"or give a default: ${{oc.env:{name},<default>}}"
        )
    unknown = [r for r in _RESOLVER_REF.findall(raw) if not OmegaConf.has_resolver(r)]
    if unknown:
        known = [r for r in _RESOLVERS if OmegaConf.has_resolver(r)]
        return ConfigError(f"{where}: {unknown_choice('resolver', unknown[0], known)}")
    root = oc.parent_node._get_root() if getattr(oc, "parent_node", None) is not None else None
    for ref in _KEY_REF.findall(raw):
        if root is None or ref.startswith("."):
            continue  # a relative reference: OmegaConf's own message below
        parent_key, _, name = ref.rpartition(".")
        parent = OmegaConf.select(root, parent_key, throw_on_missing=False) if parent_key else root
        if not OmegaConf.is_dict(parent):
            return ConfigError(f"{where}: {parent_key} is not a config node")
        if OmegaConf.is_missing(parent, name):
            return ConfigError(f"{where}: {ref} is not set (it is ??? in conf/); set {ref}=...")
        if name not in parent:
            return ConfigError(f"{where}: {_unknown_key(ref, parent)}")
    cause = oc.__cause__ or oc.__context__
    why = f"{type(cause).__name__}: {cause}" if cause is not None else type(oc).__name__
    return ConfigError(f"{where}: {' '.join(why.split())}")


def as_config_error(exc: BaseException, overrides: list[str]) -> ConfigError | None:
    """``exc`` as vizpipe's one-line error: a ``ConfigError`` as it is, a Hydra or OmegaConf error
    translated (``translate``); None for anything else (a bug, which keeps its traceback)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, HydraException | OmegaConfBaseException):
        return translate(exc, overrides)
    return None


def hydra_overrides(overrides: list[str]) -> list[str]:
    """The command line's overrides of Hydra's own config (``hydra/launcher=ray``,
    ``hydra.launcher.ray.init.num_cpus=2``), each readable by Hydra's grammar (else one line),
    sweeps left out: the precheck composes with them, so a key that does not exist there costs
    one line too (with ``+key=value`` where the node takes new keys)."""
    from hydra.errors import OverrideParseException
    from vizpipe.pipeline import sweeps

    out: list[str] = []
    for o in filter(sweeps.is_hydra_own, overrides):
        try:
            (parsed,) = sweeps.parse([o])
        except OverrideParseException as exc:
            raise _unreadable(o, exc.message) from exc
        if not parsed.is_sweep_override():
            out.append(o)
    return out


def check_hydra_values(compose: Callable[..., Any], overrides: list[str]) -> None:
    """Resolve the interpolations in the ``hydra.*`` values given on the command line
    (``hydra.run.dir=out/${oc.env:USER}``) before Hydra does, so a bad one is one line.

    ``compose(overrides, hydra=True)`` composes with Hydra's node (``Composer.compose``); values
    using the ``${hydra:...}`` resolver are left to Hydra (it only exists inside a job).
    """
    from omegaconf import OmegaConf

    keys = []
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if "${" in value and "${hydra:" not in value and not key.startswith("hydra/"):
            keys.append(key)
    if not keys:
        return
    from hydra.core.utils import setup_globals

    setup_globals()  # Hydra's resolvers (now:, hydra:), as Hydra registers them before resolving
    cfg = compose([], hydra=True)
    for key in keys:
        try:
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except Exception as exc:  # noqa: BLE001 - OmegaConf's errors, translated to one line
            raise translate(exc, overrides) from exc
