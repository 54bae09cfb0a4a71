"""Every ``_target_`` vizpipe builds goes through ``instantiate`` here (one place to vet targets)."""

from __future__ import annotations

from typing import Any

from vizpipe.pipeline.errors import ConfigError, VizpipeError

__all__ = ["instantiate"]


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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"Could not build {what} '{target}': {first}") from exc
