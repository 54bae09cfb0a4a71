"""Layers: names, the user's layer specs, one probing forward pass, spatial layouts and blocks.

Specs accepted wherever a config takes layers: an exact dotted name (``layer4``,
``features.3``), a glob (``features.*``), ``type:Conv2d``, ``all`` and ``blocks``.

Layouts: a layer's output becomes a picture-able (N, C, h, w) map in one of three ways, inferred
from the shape the probe recorded (no user code):

- ``nchw``: CNN feature maps, used as they are;
- ``nhwc``: channels-last maps (torchvision's Swin blocks and norms): channels moved first;
- ``tokens``: (N, L, C) transformer tokens (ViT): ``prefix`` leading class/distillation tokens
  dropped, the remaining ``h * w`` tokens laid on the grid whose stride matches the input.

Blocks (``blocks`` in specs, ``cam.layer=auto``, ``sweep=cam_layers``): the model YAML's
``model.blocks`` when set; else ``default_blocks``: ResNet's ``layerN``; otherwise the children
of the container holding the network's stages (``CONTAINERS``: ``features``, ``trunk_output``,
``encoder.layers``, ...; else the top-level children), keeping the last one at each spatial
resolution (isotropic transformers, all at one resolution: four evenly spaced).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vizpipe.pipeline.errors import ConfigError, unknown_choice
from vizpipe.pipeline.tasks import model_output  # re-exported: what the probe and the stages call

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "Layout",
    "Probe",
    "default_blocks",
    "get_module",
    "infer_layout",
    "last_spatial_block",
    "layer_names",
    "model_output",
    "probe_model",
    "resolve_layers",
    "spatial_layouts",
    "to_nchw",
    "top_classes",
]

MAX_PREFIX_TOKENS = 8  # class + distillation + register tokens tried before the patch grid
STRIDE_TOLERANCE = 0.1  # relative difference allowed between the vertical and horizontal stride


# =========================================================================== probe


@dataclass
class Probe:
    """What one forward pass over the real input tells about the model."""

    logits: torch.Tensor  # (N, K) on CPU, float32: the model's outputs
    shapes: dict[str, tuple[int, ...]]  # module name -> output shape (first call), completion order
    in_shapes: dict[str, tuple[int, ...]]  # module name -> shape of its first tensor input
    types: dict[str, str]  # module name -> class name, definition order
    calls: dict[str, int]  # module name -> number of calls in one forward
    input_hw: tuple[int, int] = (0, 0)  # H, W of the probed batch
    last: str | None = None  # the last module to finish (e.g. a final Sigmoid)
    # what the model does (``vizpipe.pipeline.tasks``): ``logits`` are its (N, K) scores for that task
    task: str = "classification"
    # modules whose output is not one tensor: name -> dict | list | tuple (their ``shapes`` entry is
    # the first tensor's); ``levels``: a dict of (N, C, h, w) maps (an FPN), per key its shape
    containers: dict[str, str] = field(default_factory=dict)
    levels: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)
    output: object = field(default=None, repr=False)  # the model's output (detached, for the task)


def probe_model(model: nn.Module, x: torch.Tensor, task: str = "auto") -> Probe:
    """One no-grad forward pass recording the outputs and every module's output shape.

    ``task``: ``model.task`` (auto: inferred from the output, ``vizpipe.pipeline.tasks``).
    Hooks are removed afterwards and the model's mode is not touched (``vizpipe.pipeline.hooks``).
    """
    import torch
    from vizpipe.pipeline.hooks import Hooks, capture, unfinished
    from vizpipe.pipeline.tasks import check_task, infer_task

    names = [n for n, _ in model.named_modules() if n]
    types = {n: type(m).__name__ for n, m in model.named_modules() if n}
    shapes: dict[str, tuple[int, ...]] = {}
    in_shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    order: list[str] = []

    def sink(name: str, t: torch.Tensor, kind: str) -> None:
        if kind == "input":
            in_shapes.setdefault(name, tuple(t.shape))
            return
        calls[name] = calls.get(name, 0) + 1
        shapes.setdefault(name, tuple(t.shape))
        order.append(name)

    containers: dict[str, str] = {}
    levels: dict[str, dict[str, tuple[int, ...]]] = {}
    failure: Exception | None = None
    with (
        torch.no_grad(),
        capture(model, names, sink, what="both", copy=False, every_call=True),
        Hooks() as hooks,
    ):
        for name in names:
            hooks.forward(model.get_submodule(name), _container_hook(name, containers, levels))
        with unfinished(model) as running:
            try:
                out = model(x)
            except Exception as exc:  # noqa: BLE001 - explained below when the input size is the cause
                failure, where = exc, list(running)
    if failure is not None:
        diagnosis = size_error(model, x, where, failure)
        if diagnosis is not None:
            raise diagnosis from failure
        raise failure
    last = order[-1] if order else None
    if task == "auto":
        task = infer_task(out, types.get(last) if last else None)
    else:
        check_task(task, out, type(model).__name__)
    return Probe(
        logits=_probe_logits(model, x, out, task),
        shapes=shapes,
        in_shapes=in_shapes,
        types=types,
        calls=calls,
        input_hw=(int(x.shape[-2]), int(x.shape[-1])),
        last=last,
        task=task,
        containers=containers,
        levels=levels,
        output=out if task != "classification" else None,
    )


def _container_hook(
    name: str, containers: dict[str, str], levels: dict[str, dict[str, tuple[int, ...]]]
) -> Callable[..., None]:
    """A forward hook noting a module whose output is not one tensor (a dict of FPN maps: ``levels``)."""
    import torch

    def hook(module: nn.Module, args: object, output: object) -> None:
        if isinstance(output, torch.Tensor) or name in containers:
            return
        containers[name] = type(output).__name__ if not isinstance(output, dict) else "dict"
        maps = (
            isinstance(output, dict)
            and output
            and all(isinstance(v, torch.Tensor) and v.ndim == 4 for v in output.values())
        )
        if maps:
            levels[name] = {str(k): tuple(v.shape) for k, v in output.items()}

    return hook


def _probe_logits(model: nn.Module, x: torch.Tensor, out: object, task: str) -> torch.Tensor:
    """The probe's (N, K) scores: the logits of a classifier, the task's numbers of another model."""
    import torch
    from vizpipe.pipeline.tasks import scores

    if x.is_meta:  # the architecture alone, on the meta device (factory/blocks.py): shapes, no numbers
        return torch.zeros(int(x.shape[0]), 0)
    if task != "classification":
        return scores(out, task, model)
    logits = model_output(out).detach().float().cpu()
    if logits.ndim == 1:
        logits = logits[:, None]
    return logits.reshape(logits.shape[0], -1)


#: square input sides tried when a forward pass fails, to tell a size problem from another one
TRY_SIDES = (224, 299, 384, 512)


def _runs(model: nn.Module, like: torch.Tensor, side: int) -> bool:
    """Whether ``model`` runs on a (b, C, side, side) batch like ``like`` (b = 2 in train mode)."""
    import torch

    shape = (2 if model.training else 1, like.shape[1], side, side)
    try:
        with torch.no_grad():
            model(torch.zeros(shape, dtype=like.dtype, device=like.device))
    except Exception:  # noqa: BLE001 - any failure means: not at this size
        return False
    return True


def size_error(
    model: nn.Module, x: torch.Tensor, where: list[tuple[str, tuple[int, ...] | None]], exc: Exception
) -> ConfigError | None:
    """A forward pass on ``x`` failed with ``exc`` in ``where``'s last module: when the model runs on
    another square size, a ``ConfigError`` naming that layer, what reached it and the smallest
    size that works (binary search above the failing size); else None (not a size problem).

    A few forward passes of one or two images of zeros: fast, and only after a failure. The model's
    buffers may move in train mode; ``RunContext.probe`` runs this inside ``preserved``.
    """
    if x.ndim != 4:
        return None
    h, w = int(x.shape[-2]), int(x.shape[-1])
    works = next((s for s in TRY_SIDES if s > max(h, w) and _runs(model, x, s)), None)
    if works is not None:
        lo = max(h, w)  # fails (as a square, at least as large as the input)
        while works - lo > 1:
            mid = (lo + works) // 2
            lo, works = (lo, mid) if _runs(model, x, mid) else (mid, works)
        verdict, then = "too small for", f"the smallest square input that works is {works}×{works} px"
    else:
        works = next((s for s in reversed(TRY_SIDES) if s < max(h, w) and _runs(model, x, s)), None)
        if works is None:
            return None
        verdict, then = "not a size taken by", f"it runs on {works}×{works} px"
    name, shape = where[-1] if where else ("", None)
    layer = f"layer '{name}' ({type(model.get_submodule(name)).__name__})" if name else "its forward()"
    got = "failed"
    if shape:
        size = f"a {shape[-2]}×{shape[-1]} map, " if len(shape) == 4 else ""
        got = f"received {size}shape {'×'.join(map(str, shape))}, and failed"
    first = (str(exc).strip().splitlines() or [""])[0]
    return ConfigError(
        f"Input {h}×{w} px is {verdict} {type(model).__name__}: {layer} {got} "
        f"({type(exc).__name__}: {first}); {then} (e.g. input.crop={works})"
    )


def top_classes(outputs: torch.Tensor, k: int) -> torch.Tensor:
    """(N, K) model outputs -> (N, min(k, K)) class indices, the highest output first.

    The one ranking of predictions (the top-5 lists, each image's top-1 CAM target): equal outputs
    rank by class index, lowest first, as ``torch.argmax`` breaks ties (``torch.topk`` leaves the
    order of ties undefined); NaN ranks last. Ranked on the outputs themselves, not on
    probabilities, where a softmax can round distinct outputs to one value.
    """
    import torch

    scores = torch.nan_to_num(outputs.detach().float(), nan=float("-inf"))
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : min(k, scores.shape[1])]


# =========================================================================== names and specs


def layer_names(model: nn.Module) -> list[str]:
    """Every addressable (dotted) module name, in definition order, without the root."""
    return [name for name, _ in model.named_modules() if name]


def no_layers(model: nn.Module) -> str:
    """Why a model offers no layer to name (for ``unknown_choice(..., none=...)``)."""
    return (
        f"{type(model).__name__} has no addressable layers (no submodules: its forward computes "
        "everything itself), so no layer can be named; build it from nn.Module attributes "
        "(e.g. nn.Sequential) to look inside"
    )


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name raises a ``ConfigError`` with suggestions."""
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise unknown_choice("layer", name, layer_names(model), none=no_layers(model)) from exc


def resolve_layers(
    model: nn.Module,
    specs: str | Iterable[str],
    *,
    blocks: list[str] | None = None,
    qualifies: Callable[[str, nn.Module], bool] | None = None,
    rule: str = "",
    what: str = "layer",
    model_name: str = "",
) -> list[str]:
    """Turn user layer specs into an ordered list of unique module names.

    ``qualifies`` filters what a stage can use (e.g. "has conv weights"); an exact name that does
    not qualify is an error naming ``rule`` and the names that do qualify, while globs, ``type:``,
    ``all`` and ``blocks`` keep only the qualifying modules (``blocks``: the list given, see
    ``model_blocks``). Everything fails before any work.
    """
    if isinstance(specs, str):
        specs = [specs]
    modules = dict(model.named_modules())
    modules.pop("", None)
    names = list(modules)
    ok = [n for n in names if qualifies is None or qualifies(n, modules[n])]
    ctx = f"for {model_name}" if model_name else ""
    if not names:
        shown = ", ".join(str(s) for s in specs)
        raise ConfigError(f"{what.capitalize()} spec '{shown}' {ctx}: {no_layers(model)}".replace("  ", " "))
    out: list[str] = []
    for spec in specs:
        spec = str(spec).strip()
        if spec == "all":
            found = ok if qualifies is not None else [n for n in names if not any(modules[n].children())]
        elif spec == "blocks":
            listed = list(blocks or [])
            found = [b for b in listed if b in modules and (qualifies is None or qualifies(b, modules[b]))]
            if not found:
                raise ConfigError(
                    f"'blocks' of {model_name or 'this model'} ({', '.join(listed) or 'none'}) "
                    f"have no usable output: {rule or 'no match'}. Layers that qualify: "
                    f"{', '.join(ok[:30]) or '(none)'}"
                )
        elif spec.lower().startswith("type:"):
            typ = spec.split(":", 1)[1].strip().lower()
            types = sorted({type(m).__name__ for m in modules.values()})
            if typ not in {t.lower() for t in types}:
                raise unknown_choice("module type", spec.split(":", 1)[1], types, context=ctx)
            found = [n for n in ok if type(modules[n]).__name__.lower() == typ]
        elif any(ch in spec for ch in "*?["):
            found = [n for n in ok if fnmatch.fnmatchcase(n, spec)]
            if not found:
                raise unknown_choice(
                    f"{what} pattern",
                    spec,
                    ok or names,
                    context=ctx,
                    hint="the pattern matched no usable layer",
                    none=no_layers(model),
                )
        else:
            if spec not in modules:
                raise unknown_choice(what, spec, names, context=ctx, none=no_layers(model))
            if qualifies is not None and not qualifies(spec, modules[spec]):
                kind = type(modules[spec]).__name__
                shown = ", ".join(ok[:30]) + (f", ... ({len(ok) - 30} more)" if len(ok) > 30 else "")
                raise ConfigError(
                    f"Layer '{spec}' ({kind}) cannot be used: {rule or 'it does not qualify'}. "
                    f"Layers that qualify: {shown or '(none)'}"
                )
            found = [spec]
        if not found:
            raise ConfigError(
                f"{what.capitalize()} spec '{spec}' selects nothing {ctx}: {rule or 'no match'}. "
                f"Layers that qualify: {', '.join(ok[:30]) or '(none)'}"
            )
        out.extend(found)
    return list(dict.fromkeys(out))


# =========================================================================== layouts


@dataclass(frozen=True)
class Layout:
    """How a layer's output becomes an (N, C, h, w) map."""

    kind: str  # nchw | nhwc | tokens | levels (a dict of FPN maps: ``vizpipe.pipeline.tasks.wrappers``)
    h: int
    w: int
    channels: int
    prefix: int = 0  # tokens dropped before the grid (kind=tokens)

    @property
    def needs_reshape(self) -> bool:
        """True unless the output already is (N, C, h, w)."""
        return self.kind != "nchw"

    def describe(self) -> str:
        """How the output is turned into maps, for the report."""
        if self.kind == "nhwc":
            return f"channels-last N×{self.h}×{self.w}×{self.channels}, channels moved first"
        if self.kind == "tokens":
            drop = f"{self.prefix} leading token(s) dropped, " if self.prefix else ""
            return f"tokens: {drop}{self.h * self.w} tokens laid on a {self.h}×{self.w} grid"
        if self.kind == "levels":
            return (
                f"FPN levels: each |level| resized to {self.h}×{self.w} (the last level's size) and "
                f"concatenated, {self.channels} channels (grad-cam's fasterrcnn_reshape_transform)"
            )
        return f"N×{self.channels}×{self.h}×{self.w} maps as they are"


def _same_stride(h: int, w: int, in_h: int, in_w: int) -> bool:
    """True when an h×w grid covers an in_h×in_w input with one stride in both directions."""
    if h < 1 or w < 1 or h > in_h or w > in_w:
        return False
    sh, sw = in_h / h, in_w / w
    return abs(sh - sw) <= STRIDE_TOLERANCE * max(sh, sw)


def infer_layout(
    shape: tuple[int, ...], input_hw: tuple[int, int], module: nn.Module | None = None
) -> Layout | None:
    """The layout of an output of ``shape`` (batch first) for an ``input_hw`` input; None: not spatial."""
    from torch import nn

    in_h, in_w = input_hw
    if len(shape) == 4:
        _, a, b, c = shape
        last_norm = isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (c,)
        if last_norm or (_same_stride(a, b, in_h, in_w) and not _same_stride(b, c, in_h, in_w)):
            return Layout("nhwc", a, b, c)
        return Layout("nchw", b, c, a)
    if len(shape) == 3:
        _, tokens, channels = shape
        for prefix in range(0, min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
            n = tokens - prefix
            # the grid of n cells closest to the input's aspect
            grids = sorted(
                ((h, n // h) for h in range(1, n + 1) if n % h == 0),
                key=lambda g: abs(g[0] / g[1] - in_h / in_w),
            )
            for h, w in grids[:1]:
                if _same_stride(h, w, in_h, in_w) and h * w > 1:
                    return Layout("tokens", h, w, channels, prefix)
    return None


def to_nchw(tensor: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(N, ...) layer output -> (N, C, h, w) according to ``layout``."""
    if layout.kind == "nchw":
        return tensor
    if layout.kind == "nhwc":
        return tensor.permute(0, 3, 1, 2)  # (N, h, w, C) -> (N, C, h, w)
    grid = tensor[:, layout.prefix :, :]  # (N, h*w, C): class/prefix tokens dropped
    return grid.reshape(tensor.size(0), layout.h, layout.w, tensor.size(2)).permute(0, 3, 1, 2)


def spatial_layouts(
    model: nn.Module, probe: Probe, *, once: bool = True, min_cells: int = 2
) -> dict[str, Layout]:
    """Modules with a spatial output of at least ``min_cells`` cells, in completion order.

    ``once``: only modules that run exactly once per forward (a shared module's map would be
    ambiguous for a CAM; the features stage draws its first call instead).
    """
    modules = dict(model.named_modules())
    out: dict[str, Layout] = {}
    for name, shape in probe.shapes.items():
        calls = probe.calls.get(name, 0)
        if name not in modules or calls < 1 or (once and calls != 1) or probe.containers.get(name) == "dict":
            continue  # a dict (an FPN's levels, a backbone's named outputs) is no one map
        layout = infer_layout(shape, probe.input_hw, modules[name])
        if layout is not None and layout.h * layout.w >= min_cells:
            out[name] = layout
    return out


# =========================================================================== blocks


#: containers that hold a network's sequence of stages, checked in this order
CONTAINERS = ("features", "trunk_output", "layers", "stages", "blocks", "encoder.layers")


def _main_container(model: nn.Module) -> str | None:
    """The dotted name of the module holding the network's stages (``features``), or None."""
    for name in CONTAINERS:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if len(list(module.children())) >= 2:
            return name
    return None


#: where a segmentation or detection model keeps its backbone's blocks (torchvision), in this order
BACKBONES = ("backbone.body", "backbone")


def default_blocks(model: nn.Module, probe: Probe) -> list[str]:
    """The model's blocks when its YAML names none (see the module docstring); a segmentation or
    detection model's are its backbone's (``BACKBONES``: torchvision's ``backbone.body`` of a
    detector, ``backbone`` of a segmentation model), found the same way inside it."""
    if probe.task in ("segmentation", "detection"):
        for name in BACKBONES:
            if probe.containers.get(name) == "dict":
                found = _blocks_in(model, probe, name)
                if found:
                    return found
    return _blocks_in(model, probe, "")


def _blocks_in(model: nn.Module, probe: Probe, root: str) -> list[str]:
    """``default_blocks`` among the children of module ``root`` ("" = the model)."""
    prefix = f"{root}." if root else ""
    top = [f"{prefix}{n}" for n, _ in model.get_submodule(root).named_children()]
    resnet = [n for n in top if re.fullmatch(r"layer\d+", n.rsplit(".", 1)[-1])]
    if resnet:
        return resnet
    layouts = spatial_layouts(model, probe)
    container = _main_container(model) if not root else None
    kids = top
    if container is not None:
        inner = [f"{container}.{n}" for n, _ in model.get_submodule(container).named_children()]
        kids = inner if any(k in layouts for k in inner) else top
    rank = {n: i for i, n in enumerate(probe.shapes)}
    spatial = sorted((k for k in kids if k in layouts), key=lambda k: rank[k])
    if not spatial:
        return []
    sizes = {(layouts[k].h, layouts[k].w) for k in spatial}
    if len(sizes) == 1 and len(spatial) > 4:  # isotropic (ViT): four evenly spaced blocks
        n = len(spatial)
        return [spatial[i] for i in sorted({max(0, (n * q) // 4 - 1) for q in (1, 2, 3, 4)})]
    out: list[str] = []
    for i, k in enumerate(spatial):
        nxt = spatial[i + 1] if i + 1 < len(spatial) else None
        if nxt is None or (layouts[nxt].h, layouts[nxt].w) != (layouts[k].h, layouts[k].w):
            out.append(k)
    return out


def model_blocks(model: nn.Module, probe: Probe, configured: str | list[str] | None) -> list[str]:
    """``model.blocks`` (comma string or list) when set, else ``default_blocks``; names checked."""
    if configured:
        items = configured.split(",") if isinstance(configured, str) else list(configured)
        names = [str(b).strip() for b in items if str(b).strip()]
        known = set(layer_names(model))
        for b in names:
            if b not in known:
                raise unknown_choice("layer in model.blocks", b, layer_names(model), none=no_layers(model))
        return names
    return default_blocks(model, probe)


def last_spatial_block(model: nn.Module, probe: Probe, blocks: list[str]) -> str | None:
    """The last block with a spatial output (h×w > 1), or None."""
    layouts = spatial_layouts(model, probe)
    usable = [b for b in blocks if b in layouts]
    return usable[-1] if usable else None
