"""Hooks and model state, in one place: ``capture`` layer outputs, leave the model ``preserved``.

Every stage that runs the model goes through these two context managers:

* ``capture(model, names, sink)``: forward hooks on the named modules that hand each call's
  output (and/or input) to ``sink``; removed on exit, also after an error. With ``copy=True`` the
  tensor is detached and copied (float32, CPU) inside the hook, before later modules run: a
  following ``ReLU(inplace=True)`` would otherwise overwrite a saved conv output.
* ``preserved(model)``: snapshots what a stage may change and restores it on exit: every
  module's train/eval flag, each parameter's ``requires_grad`` and ``.grad``, every buffer's
  values (BatchNorm running statistics change in train mode), hooks added meanwhile (removed)
  and child modules swapped meanwhile (put back).

``versions(model)`` fingerprints parameters and buffers cheaply (tensor identity and autograd
version counter: any in-place change bumps it), for checks that a model was left untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["HOOK_DICTS", "capture", "first_tensor", "hook_count", "preserved", "versions"]

#: the per-module hook dictionaries snapshotted and cleaned by ``preserved``
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_EXTRAS = (
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)

Sink = Callable[[str, "torch.Tensor"], None]


def first_tensor(value: object) -> torch.Tensor | None:
    """The first tensor in a module output or input (tensor, tuple/list, dict), or None."""
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list | tuple):
        for v in value:
            t = first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        for v in value.values():
            t = first_tensor(v)
            if t is not None:
                return t
    return None


@contextlib.contextmanager
def capture(
    model: nn.Module,
    names: Iterable[str],
    sink: Callable[..., None],
    *,
    what: str = "output",
    copy: bool = True,
    every_call: bool = False,
) -> Iterator[None]:
    """Forward hooks on ``names`` that call ``sink(name, tensor)`` (``sink(name, tensor, kind)``
    when ``what="both"``; kind is "input" or "output").

    ``what``: output | input | both. ``copy``: hand a detached float32 CPU copy made inside the
    hook (else the tensor itself, e.g. to read its shape). ``every_call``: call ``sink`` for every
    call of a module (a shared module runs several times per forward); else the first call only,
    per ``with`` block. Non-tensor outputs are skipped.
    """
    import torch

    if what not in ("output", "input", "both"):
        raise ValueError(f"capture: what must be output, input or both, got {what!r}")
    seen: set[tuple[str, str]] = set()
    handles: list[Any] = []

    def emit(name: str, kind: str, value: object) -> None:
        if not every_call and (name, kind) in seen:
            return
        t = first_tensor(value)
        if t is None:
            return
        seen.add((name, kind))
        if copy:
            t = t.detach().to(device="cpu", dtype=torch.float32, copy=True)
        if what == "both":
            sink(name, t, kind)
        else:
            sink(name, t)

    def make(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            if what in ("input", "both"):
                emit(name, "input", args)
            if what in ("output", "both"):
                emit(name, "output", output)

        return hook

    try:
        for name in names:
            module = model.get_submodule(name) if name else model
            handles.append(module.register_forward_hook(make(name)))
        yield
    finally:
        for h in handles:
            h.remove()


class _Snapshot:
    """What ``preserved`` puts back."""

    def __init__(self, model: nn.Module, buffers: bool) -> None:
        mods = list(model.modules())
        self.training = [(m, m.training) for m in mods]
        self.params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
        self.children = [(m, name, child) for m in mods for name, child in m._modules.items()]
        self.hooks = [(m, {d: set(getattr(m, d, {})) for d in HOOK_DICTS}) for m in mods]
        self.buffers = [(b, b.detach().clone()) for b in model.buffers() if b is not None] if buffers else []

    def restore(self) -> int:
        """Put everything back; return how many hooks were removed."""
        import torch

        for parent, name, child in self.children:
            if parent._modules.get(name) is not child:
                parent._modules[name] = child
        removed = 0
        for m, before in self.hooks:
            for d, keys in before.items():
                hooks = getattr(m, d, None)
                if hooks is None:
                    continue
                for key in [k for k in hooks if k not in keys]:
                    hooks.pop(key, None)
                    for extra in _HOOK_EXTRAS:
                        getattr(m, extra, {}).pop(key, None)
                    removed += 1
        for p, requires_grad, grad in self.params:
            p.grad = grad
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
        with torch.no_grad():
            for live, saved in self.buffers:
                if not torch.equal(live, saved):
                    live.copy_(saved)
        for m, training in self.training:
            m.training = training
        return removed


@contextlib.contextmanager
def preserved(model: nn.Module, *, buffers: bool = True) -> Iterator[_Snapshot]:
    """Leave ``model`` exactly as found: modes, ``requires_grad``, grads, hooks, children, buffers.

    Parameters' values are not copied (no visualisation changes them; see ``versions``).
    """
    snap = _Snapshot(model, buffers)
    try:
        yield snap
    finally:
        snap.restore()


def versions(model: nn.Module) -> list[tuple[int, int]]:
    """(identity, version counter) of every parameter and buffer: changes when any is modified."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b is not None)]
    return [(id(t), int(t._version)) for t in tensors]


def hook_count(model: nn.Module) -> int:
    """Hooks registered on the model's modules (all kinds)."""
    return sum(len(getattr(m, d, {})) for m in model.modules() for d in HOOK_DICTS)
