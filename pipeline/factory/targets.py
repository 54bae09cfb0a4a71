"""Every ``_target_`` vizpipe builds goes through ``instantiate`` here (one place to vet targets)."""

from __future__ import annotations

from typing import Any

from vizpipe.pipeline.errors import ConfigError, VizpipeError

__all__ = ["instantiate", "reason"]


def instantiate(node: dict[str, Any], what: str, *args: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, *args, **kwargs)``; failures become one ``ConfigError`` line.

    ``what`` names the config key in messages (e.g. ``model._target_``). A ``VizpipeError``
    raised by the target itself is passed on unchanged.
    """
    from hydra.utils import instantiate as hydra_instantiate

    target = node.get("_target_")
    try:
        return hydra_instantiate(node, *args, _convert_="all", **kwargs)
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
