"""Objects handed over in Python for one run: a live model and its inputs (``vizpipe.inspect``).

The runner builds everything from a config. A model object and a tensor, PIL images or a
``Dataset`` cannot live in a config, so ``vizpipe.inspect`` lends them to the build for the
length of one call (``lend``) and the config names them instead:
``model._target_=vizpipe.pipeline.lent.lent_model`` (``LENT_TARGET``) and ``input.kind=objects``
(``vizpipe.pipeline.inputs.objects``). Everything else (composition, checks, stages, manifest,
report) is the command line's own code path.

The lent objects live in a ``ContextVar`` that ``lend`` resets on exit, so nothing here keeps
them after the call (and a thread or task of its own sees none). A saved config that names
``LENT_TARGET`` cannot run outside such a call: it fails with one line saying so.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LENT_TARGET", "Lent", "is_lent", "lend", "lent", "lent_model"]

#: the ``model._target_`` of a model object lent for one call
LENT_TARGET = "vizpipe.pipeline.lent.lent_model"


@dataclass
class Lent:
    """What one ``vizpipe.inspect`` call hands to the build."""

    model: nn.Module
    inputs: Any = None  # a tensor, PIL images or paths, a Dataset or DataLoader (input.kind=objects)
    context: Any = None  # the RunContext built around them (set by the build; results read from it)


_LENT: contextvars.ContextVar[Lent | None] = contextvars.ContextVar("vizpipe_lent", default=None)


@contextlib.contextmanager
def lend(model: nn.Module, inputs: Any = None) -> Iterator[Lent]:
    """Lend ``model`` (and ``inputs``) to the builds inside the ``with`` block; forgotten on exit."""
    holder = Lent(model, inputs)
    token = _LENT.set(holder)
    try:
        yield holder
    finally:
        _LENT.reset(token)
        holder.context = None


def lent(what: str = "model") -> Lent:
    """The objects lent now; outside ``vizpipe.inspect`` a ``ConfigError`` says why there are none."""
    holder = _LENT.get()
    if holder is None:
        raise ConfigError(
            f"This config's {what} is a Python object that was handed to vizpipe.inspect in another "
            "process; it cannot be rebuilt from the config. Call vizpipe.inspect again with the object, "
            "or name an importable class with model._target_=..."
        )
    return holder


def lending() -> bool:
    """True while ``vizpipe.inspect`` lends objects to a run (nothing built from them is reused)."""
    return _LENT.get() is not None


def is_lent(model_cfg: Any) -> bool:
    """True when a ``model`` config names the lent model (``LENT_TARGET``)."""
    getter = getattr(model_cfg, "get", None)
    return getter is not None and getter("_target_") == LENT_TARGET


def lent_model(
    name: str = "model", weights: str | None = None, num_classes: int | None = None, **_: Any
) -> nn.Module:
    """The model object lent for this call (``model._target_`` of a ``vizpipe.inspect`` run)."""
    if weights:
        raise ConfigError(
            f"model.weights={weights!r} cannot be put into a model object; load them yourself "
            "(model.load_state_dict) and leave model.weights unset"
        )
    if num_classes is not None:
        raise ConfigError(
            f"model.num_classes={num_classes} cannot change a model object; leave it unset "
            "(the object's own head decides)"
        )
    return lent().model
