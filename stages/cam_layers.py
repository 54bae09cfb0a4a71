"""Which layers a CAM can use, what ``cam.layer=auto`` picks, and the inferred reshape.

A CAM needs a spatial activation (N, C, H, W). Three layouts are recognised from the output
shape the probe recorded (no user code):

- ``nchw``: CNN feature maps, used as they are;
- ``nhwc``: channels-last maps (torchvision's Swin blocks and norms): channels moved first;
- ``tokens``: (N, L, C) transformer tokens (ViT, timm Swin): ``prefix`` leading class/distillation
  tokens dropped, the remaining ``h * w`` tokens laid on the grid whose stride matches the input
  (a square grid for a square input), channels moved first.

``auto``: for transformers (modules holding two or more LayerNorm children: ViT's EncoderBlock,
Swin's SwinTransformerBlock) the first norm of the last block, as grad-cam's ViT/Swin tutorials do
(the final norm feeds only the class token, so its patch gradients are zero); otherwise the
model's last top-level block (``layer4``, ``features.20``) when it is spatial, else the last
spatial module to finish before global pooling.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, closest_first, unknown_choice

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pipeline.context import Probe

RULE = "CAM needs a spatial output (N×C×H×W, or ViT/Swin tokens) from a module that runs once per forward"

__all__ = [
    "CamLayer",
    "Layout",
    "LayoutReshape",
    "auto_layer",
    "infer_layout",
    "resolve_cam_layers",
]

MAX_PREFIX_TOKENS = 8  # class + distillation + register tokens tried before the patch grid
STRIDE_TOLERANCE = 0.1  # relative difference allowed between the vertical and horizontal stride


@dataclass(frozen=True)
class Layout:
    """How a layer's output becomes an (N, C, h, w) map."""

    kind: str  # nchw | nhwc | tokens
    h: int
    w: int
    channels: int
    prefix: int = 0  # tokens dropped before the grid (kind=tokens)

    @property
    def needs_reshape(self) -> bool:
        """True unless the output already is (N, C, h, w)."""
        return self.kind != "nchw"


@dataclass(frozen=True)
class CamLayer:
    """A resolved CAM layer: its dotted name, output shape and layout."""

    name: str
    shape: tuple[int, ...]
    layout: Layout


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
            # grids of n cells, closest to the input's aspect first
            grids = [(h, n // h) for h in range(1, n + 1) if n % h == 0]
            grids.sort(key=lambda g: abs(g[0] / g[1] - in_h / in_w))
            for h, w in grids[:1]:
                if _same_stride(h, w, in_h, in_w) and h * w > 1:
                    return Layout("tokens", h, w, channels, prefix)
    return None


class LayoutReshape:
    """grad-cam's ``reshape_transform``: each hooked layer's output to (N, C, h, w), by shape.

    The library calls one transform for every target layer (activations and gradients alike),
    so layouts are keyed by the output shape without the batch dimension.
    """

    def __init__(self, layers: Iterable[CamLayer]) -> None:
        """Key each layer's layout by its output shape (batch dimension dropped)."""
        self.layouts: dict[tuple[int, ...], Layout] = {}
        for layer in layers:
            key = tuple(layer.shape[1:])
            old = self.layouts.get(key)
            if old is not None and old != layer.layout:
                raise ConfigError(
                    f"CAM layers with the same output shape {key} need different reshapes ({old.kind} vs "
                    f"{layer.layout.kind} at '{layer.name}'); run them as separate jobs (-m cam.layer=a,b)"
                )
            self.layouts[key] = layer.layout

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        """(N, ...) layer output -> (N, C, h, w)."""
        layout = self.layouts.get(tuple(tensor.shape[1:]))
        if layout is None or layout.kind == "nchw":
            return tensor
        if layout.kind == "nhwc":
            return tensor.permute(0, 3, 1, 2)  # (N, h, w, C) -> (N, C, h, w)
        grid = tensor[:, layout.prefix :, :]  # (N, h*w, C): class/prefix tokens dropped
        return grid.reshape(tensor.size(0), layout.h, layout.w, tensor.size(2)).permute(0, 3, 1, 2)


def spatial_layers(model: nn.Module, probe: Probe, input_hw: tuple[int, int]) -> dict[str, CamLayer]:
    """Every module that runs once per forward with a spatial output, in completion order."""
    modules = dict(model.named_modules())
    out: dict[str, CamLayer] = {}
    for name, shape in probe.shapes.items():  # insertion order = order the modules finished
        if probe.calls.get(name, 0) != 1 or name not in modules:
            continue
        layout = infer_layout(shape, input_hw, modules[name])
        if layout is not None:
            out[name] = CamLayer(name, tuple(shape), layout)
    return out


def auto_layer(model: nn.Module, probe: Probe, usable: dict[str, CamLayer]) -> str:
    """The layer ``cam.layer=auto`` picks (see the module docstring)."""
    from torch import nn

    from pipeline.layers import default_blocks

    order = list(probe.shapes)
    rank = {n: i for i, n in enumerate(order)}
    blocks = []
    for name, module in model.named_modules():
        norms = [
            f"{name}.{c}" if name else c for c, m in module.named_children() if isinstance(m, nn.LayerNorm)
        ]
        if len(norms) >= 2 and name in rank:
            blocks.append((rank[name], norms))
    if blocks:
        _, norms = max(blocks)
        for norm in norms:
            if norm in usable:
                return norm
    pooled = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    grids = {n: c for n, c in usable.items() if c.layout.h * c.layout.w > 1}
    tops = default_blocks(model)
    if tops and tops[-1] in grids:
        return tops[-1]
    modules = dict(model.named_modules())
    candidates = [n for n in grids if not isinstance(modules[n], pooled)]
    if not candidates:
        raise ConfigError(
            f"cam.layer=auto found no layer with a spatial output (N×C×H×W with H×W > 1, or ViT/Swin tokens) "
            f"for this model and input {probe_input_text(probe)}; name one with cam.layer=<layer> "
            "(summary/layers.txt lists every layer's output shape) or use a larger input"
        )
    return candidates[-1]


def probe_input_text(probe: Probe) -> str:
    """A short description of the probed batch (its logits shape)."""
    return f"(logits {tuple(probe.logits.shape)})"


def _shown(names: list[str], value: str, limit: int = 25) -> str:
    ordered = closest_first(value, names)
    more = f", ... ({len(ordered) - limit} more)" if len(ordered) > limit else ""
    return ", ".join(ordered[:limit]) + more


def resolve_cam_layers(
    model: nn.Module,
    probe: Probe,
    spec: Any,
    input_hw: tuple[int, int],
    model_name: str = "",
) -> list[CamLayer]:
    """Turn ``cam.layer`` (auto, a name, a glob, ``type:X``, ``blocks`` or a list) into layers.

    Every failure is a one-line ``ConfigError`` naming the bad value, the rule and the layers
    that qualify (closest first).
    """
    from pipeline.layers import resolve_layers

    specs = [spec] if isinstance(spec, str) or spec is None else list(spec)
    if not specs:
        raise ConfigError("cam.layer is empty; use auto, a layer name or a list of names")
    modules = dict(model.named_modules())
    usable = spatial_layers(model, probe, input_hw)
    ctx = f"for {model_name}" if model_name else ""
    names: list[str] = []
    for raw in specs:
        if raw is None or not isinstance(raw, str):
            raise ConfigError(
                f"cam.layer entries must be layer names (strings); got {raw!r} ({type(raw).__name__})"
            )
        s = raw.strip()
        if s == "auto":
            names.append(auto_layer(model, probe, usable))
        elif s in modules and s:
            if s not in usable:
                raise _explain_error(s, modules[s], probe, usable)
            names.append(s)
        elif s in ("blocks", "all") or s.lower().startswith("type:") or any(ch in s for ch in "*?["):
            found = resolve_layers(
                model,
                [s],
                qualifies=lambda n, m: n in usable,
                rule=RULE,
                what="layer",
                model_name=model_name,
            )
            found = [n for n in found if n in usable]  # "blocks" is not filtered by resolve_layers
            if not found:
                raise ConfigError(
                    f"cam.layer '{s}' selects no usable layer {ctx}: {RULE}. "
                    f"Layers with spatial output: {_shown(list(usable), s)}"
                )
            names.extend(found)
        else:
            raise unknown_choice(
                "layer",
                s,
                list(usable) or list(modules),
                context=ctx,
                hint="cam.layer takes auto, a dotted layer name (summary/layers.txt), a glob or a list",
            )
    return [usable[n] for n in dict.fromkeys(names)]


def _explain_error(name: str, module: nn.Module, probe: Probe, usable: dict[str, CamLayer]) -> ConfigError:
    kind = type(module).__name__
    calls = probe.calls.get(name, 0)
    shape = probe.shapes.get(name)
    if calls == 0:
        why = "it does not run in the model's forward pass"
    elif calls > 1:
        why = f"it runs {calls} times per forward pass (a shared module), so its map would be ambiguous"
    else:
        dims = "×".join(str(v) for v in shape) if shape else "no tensor"
        why = f"its output ({dims}) has no spatial grid; {RULE}"
    return ConfigError(
        f"Layer '{name}' ({kind}) cannot be used for CAM: {why}. "
        f"Layers with spatial output (closest first): {_shown(list(usable), name)}"
    )
