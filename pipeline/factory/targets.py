"""Every ``_target_`` vizpipe builds goes through ``instantiate`` here, and every rule about targets.

A config is code: a ``_target_`` names a Python callable that ``hydra.utils.instantiate`` imports
and calls. vizpipe builds exactly these (``vizpipe.pipeline.registry.built_keys``), and nothing
else in a config is ever instantiated:

* ``model._target_``: the model factory (``conf/model/``: ``vizpipe.pipeline.models``);
* the keys a stage names in ``Stage.targets`` (the train stage: ``train.optimizer._target_`` and
  ``train.scheduler._target_``; a plugin stage may name its own).

Each is built one level deep: a ``_target_`` nested in its values (``model.kwargs.x._target_``),
or anywhere else in the config, is refused in one line naming the key and the target
(``check_targets``, run with every config rule, and again by ``instantiate``). Hydra's own
targets (``hydra.callbacks``, the logging configs' ``()`` factories, launchers and sweepers) are
Hydra's to build; ``vizpipe.pipeline.trust`` vets them, and the targets above, when a config
comes from a folder vizpipe did not ship. ``trusted`` says which targets are vizpipe's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from vizpipe.pipeline.errors import ConfigError, VizpipeError

__all__ = [
    "MODEL_MODULES",
    "check_targets",
    "instantiate",
    "reason",
    "target_nodes",
    "trusted",
]

#: modules whose callables ``model._target_`` may name in a config from anywhere (vizpipe's factories)
MODEL_MODULES = ("vizpipe.pipeline.models", "vizpipe.pipeline.lent")
#: what a refusal says about where to read more
SEE = "a config is code: see the README's Security section"
_NAME = re.compile(r"[A-Za-z]\w*")


def target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(key, target)`` for every ``_target_`` in a plain container (dicts and lists), depth first;
    ``key`` is the dotted path of the node holding it (``model.kwargs.x``)."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, str(node["_target_"])
        for k, v in node.items():
            if k != "_target_":
                yield from target_nodes(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            yield from target_nodes(v, f"{path}[{i}]")


def refusal(key: str, target: str, built: list[str]) -> ConfigError:
    """The one line for a ``_target_`` vizpipe never builds."""
    keys = ", ".join(k + "._target_" for k in built)
    return ConfigError(
        f"{key}._target_='{target}' is refused: vizpipe builds only {keys} "
        f"and never a _target_ nested in them or anywhere else ({SEE}); remove it, or build the object "
        "in a factory of your own named by model._target_"
    )


def check_targets(cfg: Any, built: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse a ``_target_`` anywhere in a run's config but at the keys vizpipe builds (``built``:
    ``vizpipe.pipeline.registry.built_keys``, the model's and what each stage names).

    ``cfg``: a composed config (its ``hydra`` node is Hydra's and is left out) or a plain dict.
    Reads the values as written: an interpolation is not resolved (nothing runs).
    """
    from omegaconf import OmegaConf

    doc = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    if not isinstance(doc, dict):
        return
    for key, target in target_nodes({k: v for k, v in doc.items() if k != "hydra"}):
        if key not in built:
            raise refusal(key, target, list(built))


def trusted(target: str, modules: tuple[str, ...]) -> bool:
    """True when ``target`` is a public class or function defined in one of ``modules``.

    The name is checked as text first (``<module>.<Name>``, one public identifier, no ``_``-private
    or dunder part), then looked up in the module, which is vizpipe's or torch's own (importing
    it runs nothing new); a name the module merely imports from elsewhere is not trusted.
    """
    import importlib

    module, _, name = str(target).rpartition(".")
    if module not in modules or not _NAME.fullmatch(name):
        return False
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    home = str(getattr(obj, "__module__", ""))
    return callable(obj) and (home == module or home.startswith(module + "."))


def instantiate(node: dict[str, Any], what: str, *args: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, *args, **kwargs)``, one level deep; failures become one
    ``ConfigError`` line.

    ``what`` names the config key in messages (e.g. ``train.optimizer``). A ``_target_`` nested in
    ``node``'s values is refused before anything is imported (``check_targets`` refuses it earlier
    for a whole config); the values reach the target as plain data. A ``VizpipeError`` raised by
    the target itself is passed on unchanged.
    """
    from hydra.utils import instantiate as hydra_instantiate

    target = node.get("_target_")
    nested = [(k, t) for k, t in target_nodes(dict(node)) if k]
    if nested:
        key, inner = nested[0]
        raise ConfigError(
            f"{what}.{key}._target_='{inner}' is refused: vizpipe builds {what}._target_ ('{target}') and "
            f"passes its values as plain data, never building a _target_ nested in them ({SEE})"
        )
    try:
        return hydra_instantiate(node, *args, _convert_="all", _recursive_=False, **kwargs)
    except VizpipeError:
        raise
    except Exception as exc:  # instantiate wraps import and call errors
        cause = exc.__cause__
        if isinstance(cause, VizpipeError):
            raise cause from exc
        missing = _missing_name(str(target), what) if isinstance(target, str) else None
        raise (missing or ConfigError(f"Could not build {what} '{target}': {reason(exc)}")) from exc


def _missing_name(target: str, what: str) -> ConfigError | None:
    """When ``target``'s module imports but has no such name: the names it has, closest first."""
    import importlib

    from vizpipe.pipeline.errors import unknown_choice

    module, _, name = target.rpartition(".")
    try:
        found = importlib.import_module(module) if module else None
    except Exception:  # noqa: BLE001 - the module itself does not import: reason() says why
        return None
    if found is None or hasattr(found, name):
        return None
    names = [
        f"{module}.{n}" for n in dir(found) if not n.startswith("_") and callable(getattr(found, n, None))
    ]
    return unknown_choice(f"{what} _target_", target, names)


def reason(exc: BaseException) -> str:
    """The cause of a failed ``instantiate`` in one line: the innermost chained exception's type
    and first line (``TypeError: __init__() got an unexpected keyword argument 'x'``), not Hydra's
    wrapper (``Error in call to target '...':``, whose cause is on its next lines)."""
    inner = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    if inner is exc:
        return lines[0] if lines else type(exc).__name__
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__
