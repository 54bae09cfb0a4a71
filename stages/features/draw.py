"""A feature grid: the drawn channels of one image, scaled, coloured by palette index and tiled.

Two ways to the same bytes:

* **one image on the CPU** (``feature_grid``, ``grid_png``): NumPy (``vizpipe.pipeline.render``),
  run on the background writer's threads (``vizpipe.pipeline.writer``);
* **a batch on the model's device** (``feature_grids``, for ``device=cuda``): the same float64
  arithmetic in torch on the whole (B, C, h, w) batch, so only the finished uint8 index grids come
  back to the CPU to be encoded. Scaling is ``(x - lo) / (hi - lo)`` and ``floor(v * L)`` in
  float64 (exactly rounded on every device), the upscaling is nearest (``repeat_interleave``) and
  the gaps are ``PAD_INDEX``: the grids equal ``feature_grid``'s (``tests/test_features_draw.py``
  on CPU tensors, ``tests/test_gpu.py`` on CUDA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["feature_grid", "feature_grids", "grid_png"]


def feature_grid(
    maps: np.ndarray,
    levels: int,
    *,
    normalize: str = "channel",
    layer_range: tuple[float, float] | None = None,
    tile_px: int = 56,
) -> np.ndarray:
    """Draw (k, H, W) maps as one (H', W') palette-index grid, ``ceil(sqrt(k))`` tiles per row.

    ``normalize="channel"``: each map min..max on its own; ``"layer"``: ``layer_range`` (the
    min and max over the whole layer for this image; default: over ``maps``). ``levels`` is
    ``vizpipe.pipeline.render.colormap_levels(cmap)``; write it with ``save_png(path, grid, lut)``.
    """
    from vizpipe.pipeline.render import (
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


def grid_png(
    maps: np.ndarray,
    drawn: list[int],
    levels: int,
    normalize: str,
    tile_px: int,
    lut: np.ndarray,
    level: int,
) -> bytes:
    """The grid PNG of one image: ``maps`` (C, h, w) all its channels, ``drawn`` those drawn, in order."""
    from vizpipe.pipeline.render import encode_png, finite_range

    layer_range = finite_range(maps) if normalize == "layer" else None
    grid = feature_grid(maps[drawn], levels, normalize=normalize, layer_range=layer_range, tile_px=tile_px)
    return encode_png(grid, lut, level)


def feature_grids(
    maps: torch.Tensor, drawn: list[int], levels: int, normalize: str, tile_px: int
) -> torch.Tensor:
    """``feature_grid`` of every image of a batch at once: ``maps`` (B, C, h, w) on any device ->
    (B, H', W') uint8 palette indices on the same device (``drawn`` channels, in order)."""
    import torch
    from vizpipe.pipeline.render import BAD_INDEX, PAD_INDEX, grid_columns, upscale_factor

    x = maps.to(torch.float64)
    h, w = x.shape[2:]
    finite = torch.isfinite(x)
    if normalize == "layer":  # one range per image over all its channels (finite values only)
        lo = torch.where(finite, x, torch.inf).amin(dim=(1, 2, 3), keepdim=True)
        hi = torch.where(finite, x, -torch.inf).amax(dim=(1, 2, 3), keepdim=True)
        none = ~finite.any(dim=(1, 2, 3), keepdim=True)  # finite_range: (0, 0) when no value is finite
        lo, hi = torch.where(none, 0.0, lo), torch.where(none, 0.0, hi)
        x, finite = x[:, drawn], finite[:, drawn]
    else:  # each channel on its own (minmax_scale: NaN bounds when a channel has no finite value)
        x, finite = x[:, drawn], finite[:, drawn]
        lo = torch.where(finite, x, torch.inf).amin(dim=(2, 3), keepdim=True)
        hi = torch.where(finite, x, -torch.inf).amax(dim=(2, 3), keepdim=True)
        none = ~finite.any(dim=(2, 3), keepdim=True)
        lo, hi = torch.where(none, torch.nan, lo), torch.where(none, torch.nan, hi)
    span = hi - lo
    positive = span > 0
    x01 = torch.where(positive, (x - lo) / torch.where(positive, span, 1.0), 0.0)  # range_scale
    x01 = torch.where(finite, x01, torch.nan)
    bad = torch.isnan(x01)
    scaled = torch.where(bad, 0.0, x01).clamp(0.0, 1.0) * levels  # color_index
    top = torch.tensor(levels - 1.0, dtype=torch.float64, device=x.device)
    index = torch.minimum(scaled, top).to(torch.uint8).masked_fill(bad, BAD_INDEX)  # floor: values >= 0
    k = index.shape[1]
    factor = upscale_factor(h, w, tile_px)
    if factor > 1:
        index = index.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
    return _tiles(index, grid_columns(k), PAD_INDEX)


def _tiles(index: torch.Tensor, ncols: int, pad_value: int, pad: int = 2) -> torch.Tensor:
    """``tile_grid`` of each image's (k, th, tw) tiles: (B, H', W') with ``pad`` gaps of ``pad_value``."""

    b, k, th, tw = index.shape
    ncols = min(ncols, k)
    nrows = -(-k // ncols)
    cells = index.new_full((b, nrows * ncols, th + pad, tw + pad), pad_value)
    cells[:, :k, :th, :tw] = index
    body = cells.reshape(b, nrows, ncols, th + pad, tw + pad).permute(0, 1, 3, 2, 4)  # swap ncols, th
    body = body.reshape(b, nrows * (th + pad), ncols * (tw + pad))
    canvas = index.new_full((b, body.shape[1] + pad, body.shape[2] + pad), pad_value)
    canvas[:, pad:, pad:] = body
    return canvas
