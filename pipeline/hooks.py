"""Hooks and model state, in one place: every hook vizpipe registers, and the model left ``preserved``.

* ``Hooks``: the one bookkeeper through which vizpipe registers forward hooks (as grad-cam's
  ``ActivationsAndGradients`` keeps its handles): each handle kept, all removed by ``release()``
  (a context manager; also after an error). ``capture``, ``counted`` and the CAM adapter's graph
  cut and clone hooks (``vizpipe.pipeline.gradcam.adapter``) all register through it.
* ``capture(model, names, sink)``: forward hooks on the named modules that hand each call's
  output (and/or input) to ``sink(name, tensor, kind)``; removed on exit, also after an error.
  With ``copy=True`` the tensor is detached and copied (float32, CPU) inside the hook, before
  later modules run: a following ``ReLU(inplace=True)`` would otherwise overwrite a saved conv output.
* ``counted(module)``: counts a module's forward calls (the CAM stage's perturbation passes).
* ``unfinished(model)``: the modules whose forward call has started and not returned (after an
  error inside the model: where it happened, and the shape that reached it);
* ``preserved(model)``: snapshots what a stage may change and restores it on exit: every
  module's train/eval flag, each parameter's ``requires_grad`` and ``.grad``, every buffer's
  values (BatchNorm running statistics change in train mode), hooks added meanwhile (removed)
  and child modules swapped meanwhile (put back).

The other hooks on a model during a CAM are pytorch-grad-cam's own, and stay in the library
because its CAM classes build them and read what they record: every ``BaseCAM`` constructs an
``ActivationsAndGradients`` in its ``__init__`` (two forward hooks per target layer, and per
forward pass a tensor hook on each target layer's output for its gradient; ``compute_cam_per_layer``
reads the activations and gradients they keep), and ``AblationCAM.get_cam_weights`` adds a forward
hook of its own and swaps the target layer for its ablation layer while it runs. The adapter
removes them with the library's ``release()``; ``preserved`` removes any hook left behind and
puts swapped modules back.

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

__all__ = [
    "HOOK_DICTS",
    "Hooks",
    "capture",
    "counted",
    "first_tensor",
    "hook_count",
    "preserved",
    "unfinished",
    "versions",
]

#: the per-module hook dictionaries snapshotted and cleaned by ``preserved``
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_EXTRAS = (
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)

Sink = Callable[[str, "torch.Tensor"], None]
ForwardHook = Callable[..., Any]  # hook(module, args, output) -> None or a replacement output


class Hooks:
    """The forward hooks vizpipe registers: handles kept, all removed by ``release()``.

    A context manager; ``release`` is idempotent. Hooks on one module run in registration order,
    except those added with ``prepend=True``, which run before every hook already there.
    """

    def __init__(self) -> None:
        self.handles: list[Any] = []

    def forward(self, module: nn.Module, hook: ForwardHook, *, prepend: bool = False) -> None:
        """Register ``hook(module, args, output)`` on ``module`` (a returned tensor replaces the output)."""
        self.handles.append(module.register_forward_hook(hook, prepend=prepend))

    def forward_pre(self, module: nn.Module, hook: Callable[..., None]) -> None:
        """Register ``hook(module, args)`` on ``module``, run before its forward."""
        self.handles.append(module.register_forward_pre_hook(hook))

    def release(self) -> None:
        """Remove every hook registered through this object."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def __len__(self) -> int:
        return len(self.handles)

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
    """Forward hooks on ``names`` that call ``sink(name, tensor, kind)``, kind "input" or "output"
    (always passed, whatever ``what`` asks for).

    ``what``: output | input | both. ``copy``: hand a detached float32 CPU copy made inside the
    hook (else the tensor itself, e.g. to read its shape). ``every_call``: call ``sink`` for every
    call of a module (a shared module runs several times per forward); else the first call only,
    per ``with`` block. Non-tensor outputs are skipped.
    """
    import torch

    if what not in ("output", "input", "both"):
        raise ValueError(f"capture: what must be output, input or both, got {what!r}")
    seen: set[tuple[str, str]] = set()

    def emit(name: str, kind: str, value: object) -> None:
        if not every_call and (name, kind) in seen:
            return
        t = first_tensor(value)
        if t is None:
            return
        seen.add((name, kind))
        if copy:
            t = t.detach().to(device="cpu", dtype=torch.float32, copy=True)
        sink(name, t, kind)

    def make(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            if what in ("input", "both"):
                emit(name, "input", args)
            if what in ("output", "both"):
                emit(name, "output", output)

        return hook

    with Hooks() as hooks:
        for name in names:
            hooks.forward(model.get_submodule(name) if name else model, make(name))
        yield


@contextlib.contextmanager
def counted(module: nn.Module) -> Iterator[Callable[[], int]]:
    """Count ``module``'s forward calls inside the block; yields a function returning the count so far."""
    count = [0]

    def hook(mod: nn.Module, args: object, output: object) -> None:
        count[0] += 1

    with Hooks() as hooks:
        hooks.forward(module, hook)
        yield lambda: count[0]


@contextlib.contextmanager
def unfinished(model: nn.Module) -> Iterator[list[tuple[str, tuple[int, ...] | None]]]:
    """Track the modules that started a forward call and have not returned yet.

    Yields a list of ``(name, shape of the first tensor input)``, outermost first: after an
    exception inside the model, its last item is the module that raised. Hooks removed on exit.
    """
    stack: list[tuple[str, tuple[int, ...] | None]] = []

    def make(name: str) -> tuple[Callable[..., None], Callable[..., None]]:
        def enter(module: nn.Module, args: object) -> None:
            t = first_tensor(args)
            stack.append((name, tuple(t.shape) if t is not None else None))

        def leave(module: nn.Module, args: object, output: object) -> None:
            if stack and stack[-1][0] == name:
                stack.pop()

        return enter, leave

    with Hooks() as hooks:
        for name, module in model.named_modules():
            enter, leave = make(name)
            hooks.forward_pre(module, enter)
            hooks.forward(module, leave)
        yield stack


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
