"""Fast picture grids: normalise arrays, look colours up in a table, tile them, write a PNG.

The seed draws one ``plt.subplot`` per kernel or channel; a 100-map grid takes seconds. Here a
grid is plain array work: values are scaled to [0, 1] (``minmax_scale`` or ``symmetric_scale``),
turned into colours with a matplotlib colormap's own lookup table (``colorize``), upscaled with
nearest-neighbour and placed on one canvas (``tile_grid``), and written by PIL at a low
``compress_level`` (``save_png``). No figure, no axes.

Colour mapping matches matplotlib exactly: ``colorize(x, lut)`` equals
``matplotlib.colormaps[name](x, bytes=True)[..., :3]`` for ``x`` in [0, 1] (index
``floor(x * N)``, ``x == 1`` -> ``N - 1``, NaN -> the colormap's "bad" colour, black by default).
Only ``colormap_lut`` and ``check_cmap`` import matplotlib (lazily); the rest is numpy and PIL.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import unknown_choice

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "PAD_COLOR",
    "PNG_COMPRESS_LEVEL",
    "check_cmap",
    "colorize",
    "colormap_lut",
    "file_stems",
    "finite_range",
    "grid_columns",
    "minmax_scale",
    "range_scale",
    "save_png",
    "symmetric_scale",
    "tile_grid",
    "to_rgb8",
    "upscale_factor",
]

#: Colour of the gaps between tiles (mid-dark grey: distinct from bwr's white and viridis' ends).
PAD_COLOR: tuple[int, int, int] = (96, 96, 96)
#: zlib level for PNGs: 1 is ~3x faster than PIL's default (6) for a few % more bytes.
PNG_COMPRESS_LEVEL = 1


def check_cmap(name: str, key: str = "cmap") -> None:
    """Raise a ``ConfigError`` naming ``key`` unless ``name`` is a matplotlib colormap."""
    import matplotlib

    if name not in matplotlib.colormaps:
        raise unknown_choice(f"colormap for {key}", name, sorted(matplotlib.colormaps))


def colormap_lut(name: str) -> np.ndarray:
    """The lookup table of matplotlib colormap ``name``: (N + 1, 3) uint8, the last row "bad".

    Rows 0..N-1 are ``cmap(i, bytes=True)`` for the colormap's N entries (256 for viridis and
    bwr, 10 for tab10); row N is the colour matplotlib draws for NaN.
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError as exc:
        raise unknown_choice("colormap", name, sorted(matplotlib.colormaps)) from exc
    table = cmap(np.arange(cmap.N), bytes=True)[:, :3]  # (N, 3) uint8, as matplotlib truncates
    bad = np.asarray(cmap(np.nan, bytes=True), dtype=np.uint8)[:3]
    return np.concatenate([table, bad[None]], axis=0).astype(np.uint8)


def colorize(x01: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB with ``lut`` (from ``colormap_lut``): shape ``x.shape + (3,)``.

    Values outside [0, 1] are clipped; NaN gets the "bad" row. Same index rule as matplotlib:
    ``floor(x * N)``, with ``x == 1`` mapped to ``N - 1``.
    """
    n = lut.shape[0] - 1
    x = np.asarray(x01, dtype=np.float64)
    bad = np.isnan(x)
    scaled = np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0) * n
    idx = np.minimum(scaled.astype(np.intp), n - 1)  # floor for non-negative values
    if bad.any():
        idx[bad] = n
    return lut[idx]


def finite_range(x: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values of ``x``; (0.0, 0.0) when there is none."""
    x = np.asarray(x)
    if x.size and np.isfinite(x).all():
        return float(x.min()), float(x.max())
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


def range_scale(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
    """``(x - lo) / (hi - lo)`` in float64; 0 where ``hi == lo``; non-finite values -> NaN."""
    x = np.asarray(x, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    span = np.asarray(hi, dtype=np.float64) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)
    return np.where(np.isfinite(x), out, np.nan)


def minmax_scale(x: np.ndarray, axes: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``(x - min) / (max - min)`` with min and max taken over ``axes`` (float64).

    This is what ``plt.imshow`` does by default (``matplotlib.colors.Normalize`` with vmin and
    vmax from the data; 0 everywhere when vmin == vmax). Non-finite values are ignored for min
    and max and come out as NaN (drawn in the colormap's "bad" colour).
    """
    x = np.asarray(x, dtype=np.float64)
    if np.isfinite(x).all():
        lo = x.min(axis=axes, keepdims=True)
        hi = x.max(axis=axes, keepdims=True)
    else:
        x = np.where(np.isfinite(x), x, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice gives NaN: fine
            lo = np.nanmin(x, axis=axes, keepdims=True)
            hi = np.nanmax(x, axis=axes, keepdims=True)
    return range_scale(x, lo, hi)


def symmetric_scale(x: np.ndarray, vmax: float) -> np.ndarray:
    """``0.5 + x / (2 * vmax)`` (float64): -vmax -> 0, zero -> 0.5 (white in ``bwr``), +vmax -> 1.

    ``vmax <= 0`` (an all-zero layer) maps everything to 0.5.
    """
    x = np.asarray(x, dtype=np.float64)
    if not vmax > 0:
        return np.where(np.isnan(x), np.nan, 0.5)
    return 0.5 + x / (2.0 * float(vmax))


def to_rgb8(x01: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape ending in 3) -> uint8 ``round(x * 255)``; NaN -> 0."""
    x = np.clip(np.nan_to_num(np.asarray(x01, dtype=np.float64), nan=0.0), 0.0, 1.0)
    return np.rint(x * 255.0).astype(np.uint8)


def upscale_factor(height: int, width: int, tile_px: int) -> int:
    """The integer nearest-neighbour factor making the shorter tile edge >= ``tile_px``."""
    edge = max(1, min(int(height), int(width)))
    return max(1, -(-int(tile_px) // edge))  # ceil division


def grid_columns(count: int) -> int:
    """Columns of a near-square grid for ``count`` tiles (100 -> 10, as the seed's 10x10)."""
    return max(1, int(np.ceil(np.sqrt(max(1, count)))))


def tile_grid(
    tiles: np.ndarray,
    ncols: int,
    *,
    factor: int = 1,
    pad: int = 2,
    pad_color: Sequence[int] = PAD_COLOR,
) -> np.ndarray:
    """Lay ``tiles`` (T, h, w, 3) uint8 out row by row, ``ncols`` per row: one (H, W, 3) canvas.

    Each tile is upscaled ``factor`` times (nearest: every value becomes a factor x factor
    block); ``pad`` pixels of ``pad_color`` surround every tile. Tile ``k`` sits at row
    ``k // ncols``, column ``k % ncols``, its top-left pixel at
    ``(pad + row * (h * factor + pad), pad + col * (w * factor + pad))``. Empty cells of the last
    row are filled with ``pad_color``.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
        raise ValueError(f"tile_grid needs (T, h, w, 3) uint8, got {tiles.shape} {tiles.dtype}")
    count, h, w, _ = tiles.shape
    if count == 0:
        raise ValueError("tile_grid needs at least one tile")
    if ncols < 1 or factor < 1 or pad < 0:
        raise ValueError(
            f"tile_grid needs ncols >= 1, factor >= 1, pad >= 0; got {ncols}, {factor}, {pad}"
        )
    ncols = min(ncols, count)
    nrows = -(-count // ncols)
    th, tw = h * factor, w * factor
    color = np.asarray(pad_color, dtype=np.uint8)
    # one cell = tile + its right and bottom gap: (nrows * ncols, th + pad, tw + pad, 3)
    cells = np.empty((nrows * ncols, th + pad, tw + pad, 3), dtype=np.uint8)
    cells[...] = color
    if factor > 1:
        up = np.repeat(np.repeat(tiles, factor, axis=1), factor, axis=2)  # (T, th, tw, 3)
    else:
        up = tiles
    cells[:count, :th, :tw] = up
    body = cells.reshape(nrows, ncols, th + pad, tw + pad, 3).transpose(0, 2, 1, 3, 4)
    body = body.reshape(nrows * (th + pad), ncols * (tw + pad), 3)
    canvas = np.empty((body.shape[0] + pad, body.shape[1] + pad, 3), dtype=np.uint8)
    canvas[...] = color
    canvas[pad:, pad:] = body
    return canvas


def save_png(path: Path | str, image: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> Path:
    """Write an (H, W, 3) or (H, W) uint8 array as a PNG with PIL; returns the path."""
    from PIL import Image

    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"save_png needs a uint8 (H, W[, 3]) array, got {arr.dtype} {arr.shape}")
    p = Path(path)
    Image.fromarray(arr).save(p, format="PNG", compress_level=int(compress_level))
    return p


def file_stems(names: Sequence[str]) -> dict[str, str]:
    """File-name stems for layer names: ``safe_name(name)``, made unique with ``_2``, ``_3``, ..."""
    from pipeline.layers import safe_name

    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = stem = safe_name(name)
        n = 1
        while stem in used:
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        out[name] = stem
    return out
