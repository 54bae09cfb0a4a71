"""Feature stage: what chosen layers output on the real input, as grids and raw arrays (seed §2.2).

The seed registers a ``Hook`` on ``model.features[idx]``, keeps every output and draws the first
100 channels of image 0 with one ``plt.subplot(10, 10, k + 1)`` each. Here forward hooks on the
layers named by ``features.layers`` save each layer's OWN output: the hook copies it at once,
because a following ``ReLU(inplace=True)`` (vgg, squeezenet, resnet) would otherwise overwrite it
with post-ReLU values. One no-grad forward pass runs; as each requested layer fires, its output
is summarised, written and dropped, so only one captured layer is held at a time. Hooks are
removed in ``finally`` (a context manager) and the model's mode is never touched. A layer called
several times per forward is captured at its first call (with a warning).

Per layer: ``features/<layer>.npy`` (the whole N x C x H x W output, ``features.dtype``), one grid
per image ``features/<layer>__<image>.png`` and an entry in ``features/stats.json``.

Which channels (``features.select``), the same for every image of the batch:

* ``first``: channels 0 .. max_channels - 1;
* ``top``: the ``max_channels`` channels with the highest mean activation over the batch, most
  active first (``channels_drawn`` gives the order: tile ``j`` is channel ``channels_drawn[j]``).

Normalisation before the colormap (``features.normalize``), per image:

* ``channel``: each channel's map ``(x - min) / (max - min)`` over its own H x W (what the seed's
  ``imshow`` does; a constant map is drawn as 0);
* ``layer``: one min and max over all C channels of the layer for that image, so tiles compare.

The normalised value ``v`` gets colour ``cmap(v)`` exactly as matplotlib would
(``pipeline.render.colorize``); maps are upscaled (nearest) to at least ``features.tile_px``
pixels and laid out ``ceil(sqrt(k))`` per row (10 x 10 for 100, as the seed). Statistics per
channel over the whole batch: mean, max and the fraction of values exactly 0 (``zero_fraction``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.context import RunContext
from pipeline.errors import ConfigError
from pipeline.schema import FeaturesConfig
from stages import Stage

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

RULE = "feature maps need a layer whose output is N x C x H x W (4-D) in this model's forward"
FLOAT16_MAX = 65504.0


class FeaturesStage(Stage):
    """Feature-map grids, raw activations and per-channel statistics of chosen layers."""

    name = "features"

    def validate(self, ctx: RunContext, settings: FeaturesConfig) -> None:
        """Check limits and the colormap; resolve ``features.layers`` to 4-D-output layers."""
        plan(ctx, settings)

    def run(self, ctx: RunContext, settings: FeaturesConfig) -> dict[str, Any]:
        """One forward pass; each layer is collected, rendered and dropped as it fires."""
        import torch

        from pipeline.render import colormap_levels, colormap_lut, file_stems

        layers = plan(ctx, settings)
        calls = ctx.probe().calls
        for name in layers:
            if calls.get(name, 0) > 1:
                ctx.warn(f"features: {name} runs {calls[name]} times per forward; its first call "
                         "is captured")
        out = ctx.stage_dir("features")
        lut, levels = colormap_lut(settings.cmap), colormap_levels(settings.cmap)
        stems = file_stems(layers)
        entries: dict[str, dict[str, Any]] = {}

        def on_output(name: str, act: torch.Tensor) -> None:
            data = collect_layer(name, act, settings)
            entries[name] = render_layer(ctx, data, stems[name], settings, lut, levels)

        with torch.no_grad(), OutputCapture(ctx.model, layers, on_output):
            ctx.model(ctx.inputs.tensor)
        missing = [n for n in layers if n not in entries]
        if missing:
            raise RuntimeError(f"features: layer(s) {', '.join(missing)} produced no tensor output")
        result = {
            "cmap": settings.cmap,
            "normalize": settings.normalize.value,
            "select": settings.select.value,
            "layers": {n: entries[n] for n in layers},
        }
        text = json.dumps(result, indent=2, allow_nan=False) + "\n"
        (out / "stats.json").write_text(text, encoding="utf-8")
        return result


def plan(ctx: RunContext, settings: FeaturesConfig) -> list[str]:
    """Validate ``settings`` and return the layers to capture, in order (one probe forward)."""
    from pipeline.layers import default_blocks, resolve_layers
    from pipeline.render import check_cmap

    for key in ("max_channels", "tile_px"):
        value = getattr(settings, key)
        if int(value) < 1:
            raise ConfigError(f"features.{key} must be >= 1, got {value}")
    check_cmap(settings.cmap, "features.cmap")
    specs = [str(s).strip() for s in settings.layers]
    if not specs:
        raise ConfigError("features.layers is empty; give names, globs, type:X, all or blocks")
    shapes = ctx.probe().shapes

    def qualifies(name: str, module: nn.Module | None = None) -> bool:
        return len(shapes.get(name, ())) == 4

    out: list[str] = []
    try:
        for spec in specs:
            if spec == "blocks":  # resolve_layers does not filter blocks: keep the 4-D ones
                blocks = default_blocks(ctx.model)
                found = [b for b in blocks if qualifies(b)]
                if not found:
                    ok = ", ".join([n for n in shapes if qualifies(n)][:30]) or "(none)"
                    raise ConfigError(
                        f"'blocks' of {ctx.model_name} ({', '.join(blocks)}) have no "
                        f"N x C x H x W output. Layers that qualify: {ok}"
                    )
            else:
                found = resolve_layers(
                    ctx.model, [spec], qualifies=qualifies, rule=RULE, model_name=ctx.model_name
                )
            out.extend(found)
    except ConfigError as exc:
        raise ConfigError(f"features.layers: {exc}") from exc
    return list(dict.fromkeys(out))


class OutputCapture:
    """Forward hooks that hand each named layer's own output, copied, to ``sink`` once.

    The copy is made inside the hook, before later modules run: a ``ReLU(inplace=True)`` after a
    conv would otherwise turn the saved conv output into post-ReLU values. ``sink(name, tensor)``
    receives a float32 CPU tensor that nothing else references. Use as a context manager: the
    hooks are removed on exit, also after an error.
    """

    def __init__(
        self, model: nn.Module, names: list[str], sink: Callable[[str, torch.Tensor], None]
    ) -> None:
        self.model = model
        self.names = list(names)
        self.sink = sink
        self.seen: set[str] = set()
        self._handles: list[Any] = []

    def _hook(self, name: str) -> Callable[..., None]:
        import torch

        from pipeline.layers import first_tensor

        def hook(module: nn.Module, args: object, output: object) -> None:
            if name in self.seen:
                return
            t = first_tensor(output)
            if t is None:
                return
            self.seen.add(name)
            copy = t.detach().to(device="cpu", dtype=torch.float32, copy=True)  # (N, C, H, W)
            self.sink(name, copy)

        return hook

    def __enter__(self) -> OutputCapture:
        try:
            for name in self.names:
                module = self.model.get_submodule(name)
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Remove every hook this object registered."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class LayerFeatures:
    """What ``collect_layer`` gathers for one layer (before anything is drawn)."""

    name: str
    act: np.ndarray  # (N, C, H, W) float32: the layer's own output
    drawn: list[int]  # channel indices, in tile order
    mean: np.ndarray  # (C,) over the batch
    max: np.ndarray  # (C,)
    zero_fraction: np.ndarray  # (C,) fraction of values exactly 0
    layer: dict[str, float | None]  # mean, max, zero_fraction over the whole output


def collect_layer(name: str, act: torch.Tensor, settings: FeaturesConfig) -> LayerFeatures:
    """Per-channel statistics over the batch and the channels to draw."""
    a = act.numpy()  # (N, C, H, W) float32
    if a.ndim != 4:
        raise RuntimeError(f"features: {name} output has shape {tuple(a.shape)}, expected 4-D")
    with np.errstate(invalid="ignore", over="ignore"):
        mean = a.mean(axis=(0, 2, 3), dtype=np.float64)
        mx = a.max(axis=(0, 2, 3)).astype(np.float64)
        layer = {"mean": _num(a.mean(dtype=np.float64)), "max": _num(a.max())}
    zero = (a == 0).mean(axis=(0, 2, 3), dtype=np.float64)
    layer["zero_fraction"] = float(zero.mean())  # every channel has H*W*N values
    k = min(int(settings.max_channels), a.shape[1])
    if settings.select.value == "top":
        score = np.where(np.isnan(mean), -np.inf, mean)
        drawn = np.argsort(-score, kind="stable")[:k].tolist()
    else:
        drawn = list(range(k))
    return LayerFeatures(name, a, drawn, mean, mx, zero, layer)


def feature_grid(
    maps: np.ndarray, levels: int, *, normalize: str = "channel",
    layer_range: tuple[float, float] | None = None, tile_px: int = 56,
) -> np.ndarray:
    """Draw (k, H, W) maps as one (H', W') palette-index grid, ``ceil(sqrt(k))`` tiles per row.

    ``normalize="channel"``: each map min..max on its own; ``"layer"``: ``layer_range`` (the
    min and max over the whole layer for this image; default: over ``maps``). ``levels`` is
    ``pipeline.render.colormap_levels(cmap)``; write it with ``save_png(path, grid, lut)``.
    """
    from pipeline.render import (
        color_index,
        finite_range,
        grid_columns,
        minmax_scale,
        range_scale,
        tile_grid,
        upscale_factor,
    )

    k, h, w = maps.shape
    if normalize == "layer":
        lo, hi = layer_range if layer_range is not None else finite_range(maps)
        x01 = range_scale(maps, lo, hi)
    else:
        x01 = minmax_scale(maps, axes=(1, 2))
    tiles = color_index(x01, levels)  # (k, H, W) palette indices
    return tile_grid(tiles, grid_columns(k), factor=upscale_factor(h, w, tile_px))


def _num(value: float) -> float | None:
    """A JSON-safe float: None for NaN/inf."""
    v = float(value)
    return v if np.isfinite(v) else None


def render_layer(
    ctx: RunContext, d: LayerFeatures, stem: str, settings: FeaturesConfig, lut: np.ndarray,
    levels: int,
) -> dict[str, Any]:
    """Write the layer's ``.npy`` and one grid per image; return its ``stats.json`` entry."""
    from pipeline.layers import safe_name
    from pipeline.render import finite_range, save_png

    npy = None
    if settings.save_npy:
        dtype = settings.dtype.value
        npy = f"features/{stem}.npy"
        if dtype == "float16":
            lo, hi = finite_range(d.act)
            if max(abs(lo), abs(hi)) > FLOAT16_MAX:
                ctx.warn(f"features: {d.name} has values beyond float16's range (|x| up to "
                         f"{max(abs(lo), abs(hi)):.3g}); they are saved as inf in {npy}")
        with np.errstate(over="ignore"):
            np.save(ctx.output_dir / npy, d.act.astype(dtype, copy=False))
    grids: dict[str, str] = {}
    normalize = settings.normalize.value
    for i, image in enumerate(ctx.inputs.names[: d.act.shape[0]]):
        maps = d.act[i, d.drawn]  # (k, H, W)
        layer_range = finite_range(d.act[i]) if normalize == "layer" else None
        path = f"features/{stem}__{safe_name(image)}.png"
        grid = feature_grid(
            maps, levels, normalize=normalize, layer_range=layer_range, tile_px=settings.tile_px
        )
        save_png(ctx.output_dir / path, grid, lut)
        grids[image] = path
    a = d.act
    log.info("Features <%s> %s: %d channel(s) drawn per image, %d image(s)",
             d.name, "x".join(map(str, a.shape)), len(d.drawn), len(grids))
    return {
        "shape": list(a.shape),
        "npy": npy,
        "grids": grids,
        "channels_drawn": [int(c) for c in d.drawn],
        "mean": d.layer["mean"],
        "max": d.layer["max"],
        "zero_fraction": d.layer["zero_fraction"],
        "channels": [
            {
                "index": c,
                "mean": _num(d.mean[c]),
                "max": _num(d.max[c]),
                "zero_fraction": float(d.zero_fraction[c]),
            }
            for c in range(a.shape[1])
        ],
    }
