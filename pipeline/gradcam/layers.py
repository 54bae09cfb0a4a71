"""Which layers a CAM can use, what ``cam.layer=auto`` picks, and the library's reshape.

A CAM needs a spatial activation. The layouts (N×C×H×W, channels-last, ViT tokens) are inferred
from the shape the probe recorded (``vizpipe.pipeline.layers.infer_layout``, shared with the features
stage); ``LayoutReshape`` hands them to grad-cam as its ``reshape_transform``.

``auto``: for transformers (modules holding two or more LayerNorm children: ViT's EncoderBlock,
Swin's SwinTransformerBlock) the first norm of the last block, as grad-cam's ViT/Swin tutorials do
(the final norm feeds only the class token, so its patch gradients are zero); otherwise the last
of the model's blocks with a spatial output (``model.blocks``, else found: ``layer4``,
``features.denseblock4``/``norm5``), else the last spatial module to finish before global pooling.

The blocks end where the resolution halves, so for VGG and AlexNet the last block is
``features[-1]``, the final ``MaxPool2d``: the layer grad-cam's README recommends for them
("Choosing the layer(s) to extract activations from": "VGG, densenet161 and mobilenet:
model.features[-1]"; ResNet: ``model.layer4[-1]``, the same output as ``layer4``). Its map is
the max-pooled last convolution's (Grad-CAM's channel weights, the mean gradients, are the same
up to a constant factor there), at half its resolution; name the last ReLU (vgg11
``features.19``) to map at the full one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import ConfigError, closest_first, unknown_choice
from vizpipe.pipeline.layers import Layout, infer_layout, to_nchw

if TYPE_CHECKING:
    import torch
    from torch import nn
    from vizpipe.pipeline.layers import Probe

RULE = "CAM needs a spatial output (N×C×H×W, or ViT/Swin tokens) from a module that runs once per forward"

__all__ = ["CamLayer", "LayoutReshape", "auto_layer", "resolve_cam_layers"]


@dataclass(frozen=True)
class CamLayer:
    """A resolved CAM layer: its dotted name, output shape and layout."""

    name: str
    shape: tuple[int, ...]
    layout: Layout


class LayoutReshape:
    """grad-cam's ``reshape_transform``: each hooked layer's output to (N, C, h, w), by shape.

    The library calls one transform for every target layer (activations and gradients alike),
    so layouts are keyed by the output shape without the batch dimension.
    """

    def __init__(self, layers: Iterable[CamLayer]) -> None:
        """Key each layer's layout by its output shape (batch dimension dropped)."""
        self.layouts: dict[tuple[int, ...], Layout] = {}
        for layer in layers:
            if layer.layout.kind == "levels":
                continue  # a dict, recognised by its type
            key = tuple(layer.shape[1:])
            old = self.layouts.get(key)
            if old is not None and old != layer.layout:
                raise ConfigError(
                    f"CAM layers with the same output shape {key} need different reshapes ({old.kind} vs "
                    f"{layer.layout.kind} at '{layer.name}'); run them as separate jobs (-m cam.layer=a,b)"
                )
            self.layouts[key] = layer.layout

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        """(N, ...) layer output -> (N, C, h, w); a dict of FPN levels -> ``fpn_reshape``."""
        if isinstance(tensor, dict):
            from vizpipe.pipeline.tasks.wrappers import fpn_reshape

            return fpn_reshape(tensor)
        layout = self.layouts.get(tuple(tensor.shape[1:]))
        return tensor if layout is None else to_nchw(tensor, layout)


def spatial_layers(model: nn.Module, probe: Probe) -> dict[str, CamLayer]:
    """Every module that runs once per forward with a spatial output, in completion order."""
    modules = dict(model.named_modules())
    out: dict[str, CamLayer] = {}
    for name, shape in probe.shapes.items():  # insertion order = order the modules finished
        if probe.calls.get(name, 0) != 1 or name not in modules:
            continue
        if name in probe.levels:  # a dict of FPN maps: the tutorial's reshape (gradient-free methods)
            maps = list(probe.levels[name].values())
            _, _, h, w = maps[-1]
            channels = sum(m[1] for m in maps)
            out[name] = CamLayer(name, (maps[-1][0], channels, h, w), Layout("levels", h, w, channels))
            continue
        if probe.containers.get(name) == "dict":
            continue
        layout = infer_layout(shape, probe.input_hw, modules[name])
        if layout is not None:
            out[name] = CamLayer(name, tuple(shape), layout)
    return out


def auto_layer(
    model: nn.Module, probe: Probe, usable: dict[str, CamLayer], blocks: list[str], key: str = "cam.layer"
) -> str:
    """The layer ``cam.layer=auto`` picks (see the module docstring); ``key`` names the setting."""
    from torch import nn

    order = list(probe.shapes)
    rank = {n: i for i, n in enumerate(order)}
    transformer_blocks = []
    for name, module in model.named_modules():
        norms = [
            f"{name}.{c}" if name else c for c, m in module.named_children() if isinstance(m, nn.LayerNorm)
        ]
        if len(norms) >= 2 and name in rank:
            transformer_blocks.append((rank[name], norms))
    if transformer_blocks:
        _, norms = max(transformer_blocks)
        for norm in norms:
            if norm in usable:
                return norm
    pooled = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    grids = {n: c for n, c in usable.items() if c.layout.h * c.layout.w > 1}
    spatial_blocks = [b for b in blocks if b in grids]
    if spatial_blocks:
        return spatial_blocks[-1]
    modules = dict(model.named_modules())
    candidates = [n for n in grids if not isinstance(modules[n], pooled)]
    if not candidates:
        raise ConfigError(
            f"{key}=auto found no layer with a spatial output (N×C×H×W with H×W > 1, or ViT/Swin tokens) "
            f"for this model and input {probe_input_text(probe)}; name one with {key}=<layer> "
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
    blocks: list[str],
    model_name: str = "",
    key: str = "cam.layer",
) -> list[CamLayer]:
    """Turn ``cam.layer`` (auto, a name, a glob, ``type:X``, ``blocks`` or a list) into layers.

    Every failure is a one-line ``ConfigError`` naming the bad value, the rule and the layers
    that qualify (closest first); ``key`` is the setting the messages name (e.g. ``train.cam_layer``).
    """
    from vizpipe.pipeline.layers import resolve_layers

    specs = [spec] if isinstance(spec, str) or spec is None else list(spec)
    if not specs:
        raise ConfigError(f"{key} is empty; use auto, a layer name or a list of names")
    modules = dict(model.named_modules())
    usable = spatial_layers(model, probe)
    ctx = f"for {model_name}" if model_name else ""
    names: list[str] = []
    for raw in specs:
        if raw is None or not isinstance(raw, str):
            raise ConfigError(
                f"{key} entries must be layer names (strings); got {raw!r} ({type(raw).__name__})"
            )
        s = raw.strip()
        if s == "auto":
            names.append(auto_layer(model, probe, usable, blocks, key))
        elif s in modules and s:
            if s not in usable:
                raise _explain_error(s, modules[s], probe, usable)
            names.append(s)
        elif s in ("blocks", "all") or s.lower().startswith("type:") or any(ch in s for ch in "*?["):
            found = resolve_layers(
                model,
                [s],
                blocks=blocks,
                qualifies=lambda n, m: n in usable,
                rule=RULE,
                what="layer",
                model_name=model_name,
            )
            if not found:
                raise ConfigError(
                    f"{key} '{s}' selects no usable layer {ctx}: {RULE}. "
                    f"Layers with spatial output: {_shown(list(usable), s)}"
                )
            names.extend(found)
        else:
            raise unknown_choice(
                "layer",
                s,
                list(usable) or list(modules),
                context=ctx,
                hint=f"{key} takes auto, a dotted layer name (summary/layers.txt), a glob or a list",
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
