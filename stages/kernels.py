"""Kernel stage: convolution weights as colour grids, with per-channel numbers (seed §2.1).

The seed draws the 64 kernels of output channel 0 of vgg11 ``features.3`` with one
``plt.subplot(9, 9, idx + 1)`` + ``plt.imshow(kernel, cmap='bwr')`` each. Here every requested
conv layer gets one grid: rows are output channels (up to ``kernels.max_out``), columns are input
channels (up to ``kernels.max_in``), every kernel upscaled (nearest) so that its shorter edge is at
least ``kernels.tile_px`` pixels (a 3x3 kernel becomes 24x24 by default).

Colour scale (``kernels.scale``):

* ``layer`` (default): one symmetric scale per layer. A weight ``w`` is drawn at
  ``0.5 + w / (2 * vmax)`` of the diverging colormap, with ``vmax = max |w|`` over the whole
  layer, so white in ``bwr`` is exactly zero and tiles of one layer can be compared.
* ``tile``: each kernel min..max on its own (``imshow``'s default), exactly what the seed
  draws; white is then not zero.

A layer with 3 input channels (in practice the first conv, which sees the RGB image) is also drawn
as RGB filters (``kernels.rgb_first``): filter ``o`` as a kh x kw colour image, the same output
channels as the grid's rows, laid out near-square. Scale ``layer``: each colour channel at
``0.5 + w / (2 * vmax)`` (grey = zero); scale ``tile``: the filter's min..max over all 3 channels.

Files: ``kernels/<layer>.png``, ``kernels/<layer>_rgb.png`` and ``kernels/stats.json``: per layer
its shape [O, I, kh, kw], ``vmax``, the number of dead output channels and, per output channel
(all of them, not only the drawn rows), the L2 norm, mean and std (population) of its weights and
whether it is dead (max |w| < ``kernels.dead_eps``). ``ConvTranspose2d`` weights (I, O, kh, kw)
are transposed to (O, I, kh, kw) first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, List

import numpy as np
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.stage import Picture, SharedConfig, Stage, StageResult, Table

if TYPE_CHECKING:
    from torch import nn
    from vizpipe.pipeline.context import RunContext

log = logging.getLogger(__name__)


class KernelScale(str, Enum):
    """Colour scale of kernel grids."""

    layer = "layer"  # one symmetric scale per layer: white is exactly zero
    tile = "tile"  # each kernel scaled on its own (the seed's behaviour)


@dataclass
class KernelsConfig:
    """``kernels.*``: convolution kernel grids (seed §2.1)."""

    # Layer names (dotted), globs (features.*), type:Conv2d, or all (every conv layer).
    layers: List[str] = field(default_factory=lambda: ["all"])
    # Rows: at most this many output channels per layer (>= 1).
    max_out: int = 16
    # Columns: at most this many input channels per output channel (>= 1).
    max_in: int = 64
    # layer = one symmetric colour scale per layer: w drawn at 0.5 + w / (2 max|w|), white = 0;
    # tile = each kernel min..max on its own (the seed's imshow; white is then not zero).
    scale: KernelScale = KernelScale.layer
    # Diverging matplotlib colormap name (drawn with min(cmap.N, 254) levels).
    cmap: str = "bwr"
    # Minimum edge of one drawn kernel tile, in pixels (kernels are upscaled with nearest).
    tile_px: int = 24
    # Also draw a layer with 3 input channels (the first conv) as RGB filters (up to max_out).
    rgb_first: bool = True
    # An output channel whose max |weight| is below this is reported as dead (>= 0).
    dead_eps: float = 1e-8


RULE = "kernel grids need a 2-D convolution with a weight (Conv2d or ConvTranspose2d)"


def has_conv_weight(name: str, module: nn.Module) -> bool:
    """True for a Conv2d / ConvTranspose2d with a 4-D weight: the layers kernel grids can draw."""
    from torch import nn

    if not isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        return False
    weight = getattr(module, "weight", None)
    return weight is not None and weight.ndim == 4


@dataclass
class LayerKernels:
    """What ``collect`` gathers for one layer (before anything is drawn)."""

    name: str
    weight: np.ndarray  # (O, I, kh, kw) float32 on CPU: the whole layer
    vmax: float  # max |w| over the layer (finite values); the symmetric scale's end
    l2: np.ndarray  # (O,) per output channel
    mean: np.ndarray  # (O,)
    std: np.ndarray  # (O,) population std (ddof=0)
    dead: np.ndarray  # (O,) bool: max |w| < dead_eps


class KernelsStage(Stage):
    """Kernel grids (and RGB filters) of conv layers, with per-output-channel statistics."""

    name = "kernels"
    title = "Kernel grids"
    config = KernelsConfig
    order = 20
    default = True

    def check_settings(self, settings: KernelsConfig, shared: SharedConfig) -> None:
        """Limits, the colormap and a non-empty layer list."""
        from vizpipe.pipeline.render import check_cmap

        for key in ("max_out", "max_in", "tile_px"):
            value = getattr(settings, key)
            if int(value) < 1:
                raise ConfigError(f"kernels.{key} must be >= 1, got {value}")
        if not float(settings.dead_eps) >= 0:
            raise ConfigError(f"kernels.dead_eps must be >= 0, got {settings.dead_eps}")
        check_cmap(settings.cmap, "kernels.cmap")
        if not settings.layers:
            raise ConfigError("kernels.layers is empty; give layer names, globs, type:Conv2d or all")

    def check_model(self, ctx: RunContext, settings: KernelsConfig) -> None:
        """Resolve ``kernels.layers`` to conv layers."""
        plan(ctx, settings)

    def run(self, ctx: RunContext, settings: KernelsConfig) -> StageResult:
        """Collect the weights and statistics, then write the grids and ``stats.json``."""
        layers = plan(ctx, settings)
        data = collect(ctx, layers, float(settings.dead_eps))
        return render(ctx, data, settings)


def plan(ctx: RunContext, settings: KernelsConfig) -> list[str]:
    """The conv layers ``kernels.layers`` names, in order (no heavy work)."""
    from vizpipe.pipeline.layers import resolve_layers

    specs = [str(s) for s in settings.layers]
    blocks = ctx.blocks() if "blocks" in specs else None
    try:
        return resolve_layers(
            ctx.model, specs, blocks=blocks, qualifies=has_conv_weight, rule=RULE, model_name=ctx.model_name
        )
    except ConfigError as exc:
        raise ConfigError(f"kernels.layers: {exc}") from exc


def layer_weight(module: nn.Module) -> np.ndarray:
    """The conv weight as a (O, I, kh, kw) float32 numpy array on CPU (a copy)."""
    import torch
    from torch import nn

    w = module.weight.detach()
    if isinstance(module, nn.ConvTranspose2d):
        w = w.transpose(0, 1)  # stored as (I, O / groups, kh, kw)
    return w.to(device="cpu", dtype=torch.float32, copy=True).contiguous().numpy()


def collect(ctx: RunContext, layers: list[str], dead_eps: float) -> list[LayerKernels]:
    """Per layer: the weights, the layer's symmetric scale and per-output-channel statistics."""
    out = []
    for name in layers:
        w = layer_weight(ctx.model.get_submodule(name))  # (O, I, kh, kw)
        flat = w.reshape(w.shape[0], -1).astype(np.float64)  # (O, I * kh * kw)
        finite = np.abs(w[np.isfinite(w)])
        vmax = float(finite.max()) if finite.size else 0.0
        out.append(
            LayerKernels(
                name=name,
                weight=w,
                vmax=vmax,
                l2=np.sqrt((flat**2).sum(axis=1)),
                mean=flat.mean(axis=1),
                std=flat.std(axis=1),
                # NaN/inf rows are broken, not dead (the core warns about non-finite weights)
                dead=np.isfinite(flat).all(axis=1) & (np.abs(flat).max(axis=1) < dead_eps),
            )
        )
    return out


def kernel_grid(
    weight: np.ndarray,
    levels: int,
    *,
    scale: str = "layer",
    vmax: float | None = None,
    tile_px: int = 24,
) -> np.ndarray:
    """Draw (R, C, kh, kw) kernels as one (H, W) palette-index grid: row r = output channel r.

    ``scale="layer"``: ``0.5 + w / (2 * vmax)`` (``vmax`` defaults to max |w| of ``weight``);
    ``scale="tile"``: each kernel min..max on its own (the seed's ``imshow``). ``levels`` is
    ``vizpipe.pipeline.render.colormap_levels(cmap)``; write it with ``save_png(path, grid, lut)``.
    """
    from vizpipe.pipeline.render import (
        color_index,
        finite_range,
        minmax_scale,
        symmetric_scale,
        tile_grid,
        upscale_factor,
    )

    rows, cols, kh, kw = weight.shape
    if scale == "tile":
        x01 = minmax_scale(weight, axes=(2, 3))
    else:
        if vmax is None:
            lo, hi = finite_range(weight)
            vmax = max(abs(lo), abs(hi))
        x01 = symmetric_scale(weight, vmax)
    tiles = color_index(x01, levels).reshape(rows * cols, kh, kw)
    return tile_grid(tiles, cols, factor=upscale_factor(kh, kw, tile_px))


def rgb_filter_grid(
    weight: np.ndarray, *, scale: str = "layer", vmax: float | None = None, tile_px: int = 24
) -> np.ndarray:
    """Draw (R, 3, kh, kw) filters as RGB images on a near-square (H, W, 3) uint8 grid."""
    from vizpipe.pipeline.render import (
        finite_range,
        grid_columns,
        minmax_scale,
        symmetric_scale,
        tile_grid,
        to_rgb8,
        upscale_factor,
    )

    rgb = np.ascontiguousarray(weight.transpose(0, 2, 3, 1))  # (R, kh, kw, 3)
    if scale == "tile":
        x01 = minmax_scale(rgb, axes=(1, 2, 3))
    else:
        if vmax is None:
            lo, hi = finite_range(weight)
            vmax = max(abs(lo), abs(hi))
        x01 = symmetric_scale(rgb, vmax)
    kh, kw = rgb.shape[1:3]
    return tile_grid(to_rgb8(x01), grid_columns(len(rgb)), factor=upscale_factor(kh, kw, tile_px))


def render(ctx: RunContext, data: list[LayerKernels], settings: KernelsConfig) -> StageResult:
    """Write each layer's grid (and RGB filters) and ``kernels/stats.json``; return the record."""
    from vizpipe.pipeline.files import finite, write_json
    from vizpipe.pipeline.names import unique_slugs
    from vizpipe.pipeline.render import colormap_levels, colormap_lut, save_png

    scale = settings.scale.value
    lut, levels = colormap_lut(settings.cmap), colormap_levels(settings.cmap)
    stems = dict(zip([d.name for d in data], unique_slugs([d.name for d in data]), strict=True))
    layers: dict[str, Any] = {}
    pictures: list[Picture] = []
    rows: list[list[Any]] = []
    for d in data:
        o, i, kh, kw = d.weight.shape
        shown = d.weight[: settings.max_out, : settings.max_in]  # (R, C, kh, kw)
        stem = stems[d.name]
        grid = f"kernels/{stem}.png"
        image = kernel_grid(shown, levels, scale=scale, vmax=d.vmax, tile_px=settings.tile_px)
        save_png(ctx.claim(grid), image, lut)
        pictures.append(
            Picture(grid, f"{d.name}  {o}×{i}×{kh}×{kw}", tag=f"kernels/{stem}", wide=True, preview=True)
        )
        rgb = None
        if settings.rgb_first and i == 3:
            rgb = f"kernels/{stem}_rgb.png"
            filters = d.weight[: settings.max_out]  # (R, 3, kh, kw)
            image = rgb_filter_grid(filters, scale=scale, vmax=d.vmax, tile_px=settings.tile_px)
            save_png(ctx.claim(rgb), image)
            pictures.append(Picture(rgb, f"{d.name}  as RGB filters", tag=f"kernels/{stem}/rgb", wide=True))
        dead = int(d.dead.sum())
        rows.append([d.name, f"{o}×{i}×{kh}×{kw}", finite(d.vmax), dead])
        layers[d.name] = {
            "shape": [o, i, kh, kw],
            "grid": grid,
            "rgb": rgb,
            "vmax": d.vmax,
            "dead": dead,
            "channels": [
                {
                    "index": c,
                    "l2": finite(d.l2[c]),
                    "mean": finite(d.mean[c]),
                    "std": finite(d.std[c]),
                    "dead": bool(d.dead[c]),
                }
                for c in range(o)
            ],
        }
        log.debug(
            "Kernels <%s> %s: %dx%d tiles, vmax %.3g, %d dead output channel(s)",
            d.name,
            "x".join(map(str, d.weight.shape)),
            shown.shape[0],
            shown.shape[1],
            d.vmax,
            dead,
        )
    doc = {"scale": scale, "cmap": settings.cmap, "layers": layers}
    write_json(ctx.claim("kernels/stats.json"), doc)
    total_dead = sum(r[3] for r in rows)
    return StageResult(
        stage="kernels",
        summary=(
            f"{len(data)} conv layer(s); colour scale {scale}, colormap {settings.cmap}: rows are output "
            "channels, columns input channels"
            + (", white is zero" if scale == "layer" else "")
            + (f"; {total_dead} dead output channel(s)" if total_dead else "")
        ),
        tables=[
            Table("Layers", ["Layer", "Weight shape", "max |w|", "Dead output channels"], rows, code=[0])
        ],
        pictures=pictures,
        files=["kernels/stats.json"],
        data=doc,
    )
