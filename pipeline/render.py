"""Fast picture grids: scale arrays, index a colormap, tile them, write an indexed PNG.

The seed draws one ``plt.subplot`` per kernel or channel; a 100-map grid takes seconds. Here a
grid is plain array work, no figure and no axes:

1. values are scaled to [0, 1] (``minmax_scale``, ``range_scale`` or ``symmetric_scale``);
2. each value becomes a colour index (``color_index``): ``floor(v * L)``, with ``v == 1`` in the
   top level and NaN in the "bad" entry;
3. index tiles are upscaled with nearest-neighbour and placed on one canvas (``tile_grid``);
4. PIL writes the canvas as a palette PNG at ``compress_level=1`` (``save_png``), one byte per
   pixel: about 4x faster to encode and half the bytes of the same picture in RGB.

The palette (``colormap_lut``) holds ``L = min(cmap.N, 254)`` colormap levels (matplotlib's
``cmap.resampled(L)``: 254 for viridis or bwr, 10 for tab10), then the gap colour (index 254) and
the colormap's "bad" colour for NaN (index 255; black). So the drawn colour of a value ``v`` is
exactly ``matplotlib.colormaps[name].resampled(L)(v, bytes=True)[:3]``; ``colorize`` returns the
same colours as an RGB array for callers that blend (e.g. CAM overlays).
Only ``colormap_lut`` and ``check_cmap`` import matplotlib (lazily); the rest is numpy and PIL.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.errors import unknown_choice

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "BAD_INDEX",
    "MAX_LEVELS",
    "PAD_COLOR",
    "PAD_INDEX",
    "PNG_COMPRESS_LEVEL",
    "check_cmap",
    "color_index",
    "colorize",
    "colormap_levels",
    "colormap_lut",
    "encode_png",
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

#: Most colormap levels in a palette: 254 levels + the gap colour + the "bad" colour = 256.
MAX_LEVELS = 254
#: Palette index of the gaps between tiles, and its colour (mid-dark grey: distinct from bwr's
#: white and from viridis' ends).
PAD_INDEX = 254
PAD_COLOR: tuple[int, int, int] = (96, 96, 96)
#: Palette index of non-finite values (the colormap's "bad" colour).
BAD_INDEX = 255
#: zlib level for PNGs: 1 is several times faster than PIL's default (6) for ~10% more bytes.
PNG_COMPRESS_LEVEL = 1


def check_cmap(name: str, key: str = "cmap") -> None:
    """Raise a ``ConfigError`` naming ``key`` unless ``name`` is a matplotlib colormap."""
    import matplotlib

    if name not in matplotlib.colormaps:
        raise unknown_choice(f"{key} colormap", name, sorted(matplotlib.colormaps))


def colormap_levels(name: str) -> int:
    """L, the number of levels drawn for colormap ``name``: ``min(cmap.N, 254)``."""
    import matplotlib

    return min(int(matplotlib.colormaps[name].N), MAX_LEVELS)


def colormap_lut(name: str) -> np.ndarray:
    """The 256-entry palette of colormap ``name``: (256, 3) uint8.

    Rows 0..L-1 are ``cmap.resampled(L)(i, bytes=True)`` (``L = colormap_levels(name)``), row
    ``PAD_INDEX`` is ``PAD_COLOR``, row ``BAD_INDEX`` the colour matplotlib draws for NaN; rows in
    between (only when L < 254) are unused and black.
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError as exc:
        raise unknown_choice("colormap", name, sorted(matplotlib.colormaps)) from exc
    levels = min(int(cmap.N), MAX_LEVELS)
    cmap = cmap.resampled(levels)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:levels] = cmap(np.arange(levels), bytes=True)[:, :3]
    lut[PAD_INDEX] = PAD_COLOR
    lut[BAD_INDEX] = np.asarray(cmap(np.nan, bytes=True), dtype=np.uint8)[:3]
    return lut


def color_index(x01: np.ndarray, levels: int = MAX_LEVELS) -> np.ndarray:
    """Palette indices (uint8, same shape) of values in [0, 1]: ``floor(x * levels)``.

    Same rule as matplotlib's ``Colormap.__call__``: values are clipped to [0, 1], ``x == 1``
    lands in the top level ``levels - 1``, NaN gets ``BAD_INDEX``.
    """
    if not 1 <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be in 1..{MAX_LEVELS}, got {levels}")
    x = np.asarray(x01, dtype=np.float64)
    bad = np.isnan(x)
    has_bad = bool(bad.any())
    if has_bad:
        x = np.where(bad, 0.0, x)
    scaled = np.clip(x, 0.0, 1.0) * levels
    idx = np.minimum(scaled, levels - 1).astype(np.uint8)  # floor: values are >= 0
    if has_bad:
        idx[bad] = BAD_INDEX
    return idx


def colorize(x01: np.ndarray, lut: np.ndarray, levels: int | None = None) -> np.ndarray:
    """RGB colours (``x.shape + (3,)``, uint8) of values in [0, 1] through palette ``lut``.

    ``levels`` defaults to 254 (right for every colormap with at least 254 entries); pass
    ``colormap_levels(name)`` for short colormaps such as tab10.
    """
    return lut[color_index(x01, MAX_LEVELS if levels is None else levels)]


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
    if np.isfinite(x).all():
        return out
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
    """Values in [0, 1] -> uint8 ``round(x * 255)`` (NaN -> 0); for true-colour pictures."""
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
    pad_value: int | Sequence[int] | None = None,
) -> np.ndarray:
    """Lay uint8 ``tiles`` out row by row, ``ncols`` per row, on one canvas.

    ``tiles`` is (T, h, w) (palette indices; gaps default to ``PAD_INDEX``) or (T, h, w, 3)
    (RGB; gaps default to ``PAD_COLOR``). Each tile is upscaled ``factor`` times (nearest: every
    value becomes a factor x factor block); ``pad`` pixels of ``pad_value`` surround every tile.
    Tile ``k`` sits at row ``k // ncols``, column ``k % ncols``, its top-left pixel at
    ``(pad + row * (h * factor + pad), pad + col * (w * factor + pad))``. Empty cells of the last
    row are gap. Returns (H, W) or (H, W, 3).
    """
    tiles = np.asarray(tiles)
    rgb = tiles.ndim == 4
    if tiles.dtype != np.uint8 or tiles.ndim not in (3, 4) or (rgb and tiles.shape[-1] != 3):
        raise ValueError(f"tile_grid needs (T, h, w[, 3]) uint8, got {tiles.shape} {tiles.dtype}")
    count, h, w = tiles.shape[:3]
    if count == 0:
        raise ValueError("tile_grid needs at least one tile")
    if ncols < 1 or factor < 1 or pad < 0:
        raise ValueError(f"tile_grid needs ncols >= 1, factor >= 1, pad >= 0; got {ncols}, {factor}, {pad}")
    if pad_value is None:
        pad_value = PAD_COLOR if rgb else PAD_INDEX
    fill = np.asarray(pad_value, dtype=np.uint8)
    ncols = min(ncols, count)
    nrows = -(-count // ncols)
    th, tw = h * factor, w * factor
    chans = tiles.shape[3:]  # () or (3,)
    # one cell = tile + its right and bottom gap: (nrows * ncols, th + pad, tw + pad[, 3])
    cells = np.empty((nrows * ncols, th + pad, tw + pad, *chans), dtype=np.uint8)
    cells[...] = fill
    up = tiles
    if factor > 1:
        up = np.repeat(np.repeat(tiles, factor, axis=1), factor, axis=2)  # (T, th, tw[, 3])
    cells[:count, :th, :tw] = up
    body = cells.reshape(nrows, ncols, th + pad, tw + pad, *chans).swapaxes(1, 2)
    body = body.reshape(nrows * (th + pad), ncols * (tw + pad), *chans)
    canvas = np.empty((body.shape[0] + pad, body.shape[1] + pad, *chans), dtype=np.uint8)
    canvas[...] = fill
    canvas[pad:, pad:] = body
    return canvas


def encode_png(
    image: np.ndarray, lut: np.ndarray | None = None, compress_level: int = PNG_COMPRESS_LEVEL
) -> bytes:
    """A uint8 image as PNG bytes (PIL): the bytes ``save_png`` writes.

    ``image`` (H, W) with ``lut`` (256, 3): a palette PNG (``colormap_lut``); (H, W) alone:
    grayscale; (H, W, 3): RGB. ``compress_level``: zlib's 0 (none, fastest) .. 9.
    """
    import io

    from PIL import Image

    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"save_png needs a uint8 (H, W) or (H, W, 3) array, got {arr.dtype} {arr.shape}")
    if lut is not None:
        if arr.ndim != 2:
            raise ValueError("save_png: a palette (lut) needs an (H, W) index image")
        im = Image.frombuffer("P", (arr.shape[1], arr.shape[0]), arr, "raw", "P", 0, 1)
        im.putpalette(np.ascontiguousarray(lut, dtype=np.uint8).tobytes(), rawmode="RGB")
    else:
        im = Image.fromarray(arr)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", compress_level=int(compress_level))
    return buffer.getvalue()


def save_png(
    path: Path | str,
    image: np.ndarray,
    lut: np.ndarray | None = None,
    compress_level: int = PNG_COMPRESS_LEVEL,
) -> Path:
    """Write a uint8 image as PNG (``encode_png``), atomically; returns the path."""
    from vizpipe.pipeline.files import write_atomic

    return write_atomic(path, encode_png(image, lut, compress_level))


def save_figure(fig: Any, path: Path | str) -> None:
    """A matplotlib figure as a PNG at ``path``, written atomically (``vizpipe.pipeline.files``):
    the charts of the train, CAM metric and sanity-check records."""
    import io

    from vizpipe.pipeline.files import write_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())
