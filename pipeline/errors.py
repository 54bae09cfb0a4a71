"""User-facing errors: one readable line that names the rule, the bad value and the choices."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ConfigError", "Interrupted", "VizpipeError", "closest_first", "unknown_choice"]


class VizpipeError(Exception):
    """An error caused by the user's config or input.

    Its ``str`` is a single line meant for the console; the CLI prints it without a traceback
    (the full traceback still goes to the run's log file).
    """


class ConfigError(VizpipeError):
    """A config value is invalid (unknown choice, wrong type, out of range)."""


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal: SIGINT (Ctrl-C) or SIGTERM (what Slurm, Kubernetes
    and systemd send). A ``KeyboardInterrupt``, so both end a run the same way: the current batch
    is dropped (every file is complete or absent), the manifest says ``interrupted`` and how to
    resume. ``code`` is the shell's exit status for it (128 + the signal number: 130, 143).
    ``vizpipe.pipeline.process.stop_on_signals`` raises it."""

    def __init__(self, signal_name: str = "SIGINT", code: int = 130) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.code = code


def closest_first(value: str, choices: Iterable[str]) -> list[str]:
    """Return ``choices`` ordered by similarity to ``value`` (most similar first, ties keep order)."""
    items = list(dict.fromkeys(str(c) for c in choices))
    low = str(value).lower()

    def score(c: str) -> float:
        s = difflib.SequenceMatcher(None, low, c.lower()).ratio()
        if c.lower().startswith(low) or low.startswith(c.lower()):
            s += 0.25
        return s

    order = {c: i for i, c in enumerate(items)}
    return sorted(items, key=lambda c: (-score(c), order[c]))


def unknown_choice(
    what: str,
    value: object,
    choices: Iterable[str],
    *,
    context: str = "",
    limit: int = 25,
    hint: str = "",
    none: str = "",
) -> ConfigError:
    """Build the standard "unknown X" error: bad value, closest match, valid choices.

    Example: ``Unknown layer 'layer5' for resnet18; did you mean 'layer4'? Valid choices
    (closest first): layer4, layer1, ...``. With no choice at all, the message says so (``none``:
    why there is none, from the caller) instead of listing nothing.
    """
    items = [c for c in dict.fromkeys(str(c) for c in choices) if c.strip()]  # "" names nothing (a root)
    where = f" {context}" if context else ""
    if not items:
        msg = f"Unknown {what} '{value}'{where}: {none or f'there is no {what} to choose from'}"
        return ConfigError(msg + (f". {hint}" if hint else ""))
    ordered = closest_first(str(value), items)
    close = difflib.get_close_matches(str(value), items, n=1, cutoff=0.5)
    if not close and ordered:
        low = str(value).lower()
        close = [c for c in items if c.lower() == low or low in c.lower()][:1]
    msg = f"Unknown {what} '{value}'{(' ' + context) if context else ''}"
    if close:
        msg += f"; did you mean '{close[0]}'?"
    else:
        msg += "."
    if close:  # the best match leads the list even when several choices tie on similarity
        ordered = [close[0], *(c for c in ordered if c != close[0])]
    shown = ordered[:limit]
    more = f", ... ({len(ordered) - limit} more)" if len(ordered) > limit else ""
    msg += f" Valid choices (closest first): {', '.join(shown)}{more}"
    if hint:
        msg += f". {hint}"
    return ConfigError(msg)
