"""vizpipe.pipeline.render: colours equal matplotlib's, tiles land where documented, PNGs round-trip.

Exact values of the picture helpers in ``pipeline/render.py``: palettes, indices, scaling, tiling,
PNGs."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image
from vizpipe.pipeline import render
from vizpipe.pipeline import render as R
from vizpipe.pipeline.errors import ConfigError


# ---- vizpipe.pipeline.render: colours equal matplotlib's, tiles land where documented, PNGs
# round-trip.
@pytest.mark.parametrize("name", ["viridis", "bwr", "tab10", "gray"])
def test_colorize_equals_matplotlib_resampled_colormap(name: str) -> None:
    cmap = matplotlib.colormaps[name]
    levels = render.colormap_levels(name)
    assert levels == min(cmap.N, 254)
    rng = np.random.default_rng(0)
    edges = [0.0, 1.0, 0.5, 1.0 / levels, 1.0 - 1e-12, 0.25, np.nan]
    x = np.concatenate([rng.random(5000), edges])
    got = render.colorize(x, render.colormap_lut(name), levels)
    want = cmap.resampled(levels)(x, bytes=True)[:, :3]
    np.testing.assert_array_equal(got, want)


def test_lut_reserves_gap_and_bad_rows() -> None:
    lut = render.colormap_lut("viridis")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[render.PAD_INDEX]) == render.PAD_COLOR
    bad = matplotlib.colormaps["viridis"](np.nan, bytes=True)[:3]
    assert tuple(lut[render.BAD_INDEX]) == tuple(bad)
    assert len({tuple(c) for c in lut[:254]}) > 200  # real colormap levels, not a constant


def test_color_index_clips_and_marks_nan() -> None:
    idx = render.color_index(np.array([-3.0, 0.0, 0.999, 1.0, 7.0, np.nan]), 254)
    assert idx.dtype == np.uint8
    assert idx.tolist() == [0, 0, 253, 253, 253, render.BAD_INDEX]
    with pytest.raises(ValueError):
        render.color_index(np.zeros(3), 255)


def test_minmax_scale_per_slice_like_imshow() -> None:
    x = np.stack([np.arange(6.0).reshape(2, 3), np.full((2, 3), 4.0)])  # second slice constant
    out = render.minmax_scale(x, axes=(1, 2))
    np.testing.assert_array_equal(out[0], np.arange(6.0).reshape(2, 3) / 5.0)
    np.testing.assert_array_equal(out[1], np.zeros((2, 3)))  # Normalize: vmin == vmax -> 0
    auto = matplotlib.colors.Normalize()(np.arange(6.0))
    np.testing.assert_allclose(render.minmax_scale(np.arange(6.0)), auto)


def test_minmax_scale_ignores_non_finite() -> None:
    out = render.minmax_scale(np.array([1.0, np.inf, 3.0, np.nan, 2.0]))
    np.testing.assert_array_equal(out[[0, 2, 4]], [0.0, 1.0, 0.5])
    assert np.isnan(out[1]) and np.isnan(out[3])
    assert render.finite_range(np.array([np.nan, -2.0, np.inf, 5.0])) == (-2.0, 5.0)
    assert render.finite_range(np.array([np.nan])) == (0.0, 0.0)


def test_symmetric_scale_puts_zero_in_the_middle() -> None:
    np.testing.assert_array_equal(
        render.symmetric_scale(np.array([-2.0, 0.0, 1.0, 2.0]), 2.0), [0.0, 0.5, 0.75, 1.0]
    )
    np.testing.assert_array_equal(render.symmetric_scale(np.zeros(3), 0.0), [0.5, 0.5, 0.5])


@pytest.mark.parametrize(
    ("shape", "tile_px", "factor"), [((3, 3), 24, 8), ((7, 7), 24, 4), ((112, 112), 56, 1), ((1, 5), 56, 56)]
)
def test_upscale_factor(shape: tuple[int, int], tile_px: int, factor: int) -> None:
    assert render.upscale_factor(*shape, tile_px) == factor


def test_grid_columns() -> None:
    assert [render.grid_columns(n) for n in (1, 3, 7, 64, 100, 101)] == [1, 2, 3, 8, 10, 11]


@pytest.mark.parametrize("rgb", [False, True])
def test_tile_grid_places_each_tile_where_documented(rgb: bool) -> None:
    rng = np.random.default_rng(1)
    count, h, w, factor, pad, ncols = 7, 2, 3, 3, 2, 3
    tiles = rng.integers(0, 200, size=(count, h, w, 3) if rgb else (count, h, w)).astype(np.uint8)
    grid = render.tile_grid(tiles, ncols, factor=factor, pad=pad)
    th, tw, nrows = h * factor, w * factor, 3
    assert grid.shape[:2] == (pad + nrows * (th + pad), pad + ncols * (tw + pad))
    gap = np.asarray(render.PAD_COLOR if rgb else render.PAD_INDEX, dtype=np.uint8)
    covered = np.zeros(grid.shape[:2], bool)
    for k in range(nrows * ncols):
        r, c = divmod(k, ncols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        cell = grid[y : y + th, x : x + tw]
        if k < count:
            want = np.repeat(np.repeat(tiles[k], factor, axis=0), factor, axis=1)
            np.testing.assert_array_equal(cell, want)
        else:
            assert (cell == gap).all()  # empty cells of the last row are gap
        covered[y : y + th, x : x + tw] = True
    assert (grid[~covered] == gap).all()  # everything else is gap


def test_tile_grid_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        render.tile_grid(np.zeros((0, 2, 2), np.uint8), 1)
    with pytest.raises(ValueError):
        render.tile_grid(np.zeros((1, 2, 2), np.float32), 1)


def test_save_png_palette_and_rgb_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 256, size=(17, 23)).astype(np.uint8)
    lut = render.colormap_lut("bwr")
    path = render.save_png(tmp_path / "p.png", idx, lut)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), idx)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), lut[idx])
    rgb = rng.integers(0, 256, size=(5, 4, 3)).astype(np.uint8)
    with Image.open(render.save_png(tmp_path / "c.png", rgb)) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)
    with pytest.raises(ValueError):
        render.save_png(tmp_path / "bad.png", rgb, lut)


def test_check_cmap_names_the_key_and_the_closest_choice() -> None:
    render.check_cmap("viridis", "features.cmap")
    want = r"features\.cmap colormap 'virdis'; did you mean 'viridis'"
    with pytest.raises(ConfigError, match=want):
        render.check_cmap("virdis", "features.cmap")


# ---- Exact values of the picture helpers in ``pipeline/render.py``: palettes, indices,
# scaling, tiling, PNGs.
def test_constants() -> None:
    """The palette layout: 254 levels, gap at 254 (grey 96), bad at 255, PNG level 1."""
    assert (R.MAX_LEVELS, R.PAD_INDEX, R.BAD_INDEX, R.PNG_COMPRESS_LEVEL) == (254, 254, 255, 1)
    assert R.PAD_COLOR == (96, 96, 96)


def test_check_cmap_accepts_known_and_names_the_key() -> None:
    """A known colormap passes; an unknown one names the key, the value and the closest match."""
    assert R.check_cmap("viridis") is None
    with pytest.raises(ConfigError) as exc:
        R.check_cmap("viridiss", key="features.cmap")
    msg = str(exc.value)
    assert msg.startswith("Unknown features.cmap colormap 'viridiss'; did you mean 'viridis'?")
    with pytest.raises(ConfigError, match=r"^Unknown cmap colormap 'nope'"):
        R.check_cmap("nope")


def test_colormap_levels() -> None:
    """L = min(N, 254): 254 for viridis, 10 for tab10."""
    assert R.colormap_levels("viridis") == 254
    assert R.colormap_levels("tab10") == 10
    assert R.colormap_levels("bwr") == 254


def test_colormap_lut_rows() -> None:
    """Rows 0..L-1 are the resampled colormap, 254 the gap grey, 255 the bad colour, the rest black."""
    lut = R.colormap_lut("tab10")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    cmap = matplotlib.colormaps["tab10"].resampled(10)
    np.testing.assert_array_equal(lut[:10], cmap(np.arange(10), bytes=True)[:, :3])
    assert not lut[10:254].any()
    assert tuple(lut[254]) == (96, 96, 96)
    assert tuple(lut[255]) == tuple(np.asarray(cmap(np.nan, bytes=True))[:3])
    v = R.colormap_lut("viridis")
    vc = matplotlib.colormaps["viridis"].resampled(254)
    np.testing.assert_array_equal(v[:254], vc(np.arange(254), bytes=True)[:, :3])
    assert tuple(v[253]) == tuple(vc(253, bytes=True)[:3])
    with pytest.raises(ConfigError, match=r"^Unknown colormap 'virdis'; did you mean 'viridis'\?"):
        R.colormap_lut("virdis")


def test_color_index_floor_clip_and_nan() -> None:
    """floor(x*L), clipped to [0, 1], 1.0 in the top level, NaN -> 255."""
    x = np.array([-1.0, 0.0, 0.49, 0.5, 0.999, 1.0, 2.0, np.nan])
    np.testing.assert_array_equal(R.color_index(x, 10), [0, 0, 4, 5, 9, 9, 9, 255])
    out = R.color_index(np.array([0.0, 1.0, 0.5]))
    np.testing.assert_array_equal(out, [0, 253, 127])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(R.color_index(np.array([[0.3]]), 1), [[0]])
    for bad in (0, 255):
        with pytest.raises(ValueError, match=rf"^levels must be in 1\.\.254, got {bad}$"):
            R.color_index(np.zeros(2), bad)
    assert R.color_index(np.zeros(1), 254)[0] == 0


def test_colorize_uses_the_lut() -> None:
    """colorize = lut[color_index]: default 254 levels, or the given level count."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:, 0] = np.arange(256)
    out = R.colorize(np.array([0.0, 1.0, np.nan]), lut)
    np.testing.assert_array_equal(out[:, 0], [0, 253, 255])
    assert out.shape == (3, 3)
    np.testing.assert_array_equal(R.colorize(np.array([1.0, 0.55]), lut, 10)[:, 0], [9, 5])


def test_finite_range() -> None:
    """(min, max) over finite values; (0, 0) for none or empty."""
    assert R.finite_range(np.array([3.0, -2.0, 5.0])) == (-2.0, 5.0)
    assert R.finite_range(np.array([np.nan, 1.0, np.inf, -4.0])) == (-4.0, 1.0)
    assert R.finite_range(np.array([np.nan, np.inf])) == (0.0, 0.0)
    assert R.finite_range(np.array([])) == (0.0, 0.0)
    lo, hi = R.finite_range(np.array([1, 7], dtype=np.int64))
    assert (lo, hi) == (1.0, 7.0) and isinstance(lo, float)


def test_range_scale() -> None:
    """(x-lo)/(hi-lo); 0 where hi == lo; non-finite -> NaN."""
    np.testing.assert_allclose(R.range_scale(np.array([2.0, 4.0, 6.0]), 2.0, 6.0), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(R.range_scale(np.array([5.0, 7.0]), 3.0, 3.0), [0.0, 0.0])
    np.testing.assert_array_equal(R.range_scale(np.array([5.0]), 3.0, 1.0), [0.0])
    out = R.range_scale(np.array([1.0, np.inf, np.nan]), 0.0, 2.0)
    assert out[0] == 0.5 and np.isnan(out[1]) and np.isnan(out[2])
    assert R.range_scale(np.array([1], dtype=np.int32), 0, 4).dtype == np.float64


def test_minmax_scale_axes_and_nan() -> None:
    """Min/max over ``axes``; non-finite values ignored for the range and NaN in the result."""
    x = np.array([[0.0, 2.0, 4.0], [1.0, 1.0, 3.0]])
    np.testing.assert_allclose(R.minmax_scale(x), [[0, 0.5, 1], [0.25, 0.25, 0.75]])
    np.testing.assert_allclose(R.minmax_scale(x, axes=1), [[0, 0.5, 1], [0, 0, 1]])
    np.testing.assert_allclose(R.minmax_scale(x, axes=0), [[0, 1, 1], [1, 0, 0]])
    y = np.array([[np.nan, 2.0, 6.0], [np.inf, np.nan, np.nan]])
    out = R.minmax_scale(y, axes=1)
    np.testing.assert_allclose(out[0, 1:], [0.0, 1.0])
    assert np.isnan(out[0, 0]) and np.isnan(out[1]).all()
    np.testing.assert_array_equal(R.minmax_scale(np.full(3, 7.0)), [0.0, 0.0, 0.0])


def test_symmetric_scale() -> None:
    """0.5 + x/(2 vmax); vmax <= 0 -> 0.5 everywhere (NaN stays NaN)."""
    np.testing.assert_allclose(R.symmetric_scale(np.array([-2.0, 0.0, 1.0, 2.0]), 2.0), [0, 0.5, 0.75, 1])
    out = R.symmetric_scale(np.array([3.0, np.nan]), 0.0)
    assert out[0] == 0.5 and np.isnan(out[1])
    np.testing.assert_array_equal(R.symmetric_scale(np.array([1.0]), -1.0), [0.5])
    np.testing.assert_allclose(R.symmetric_scale(np.array([1.0]), 1e-9), [0.5 + 0.5e9])


def test_to_rgb8() -> None:
    """round(x*255), clipped, NaN -> 0."""
    out = R.to_rgb8(np.array([0.0, 0.5, 1.0, 1.5, -0.2, np.nan, 0.1]))
    np.testing.assert_array_equal(out, [0, 128, 255, 255, 0, 0, 26])
    assert out.dtype == np.uint8


def test_upscale_factor_and_grid_columns() -> None:
    """ceil(tile_px / shorter edge) (>= 1); ceil(sqrt(count)) columns (>= 1)."""
    assert R.upscale_factor(7, 10, 64) == 10
    assert R.upscale_factor(8, 8, 64) == 8
    assert R.upscale_factor(100, 200, 64) == 1
    assert R.upscale_factor(0, 5, 3) == 3
    assert R.upscale_factor(9, 9, 10) == 2
    assert [R.grid_columns(n) for n in (0, 1, 2, 4, 5, 9, 10, 100, 101)] == [1, 1, 2, 2, 3, 3, 4, 10, 11]


def test_tile_grid_layout_exact() -> None:
    """Tiles at (pad + r*(h*f+pad), pad + c*(w*f+pad)), gaps filled, empty cells gap."""
    tiles = np.arange(3 * 2 * 3, dtype=np.uint8).reshape(3, 2, 3)
    g = R.tile_grid(tiles, 2, pad=1)
    assert g.shape == (1 + 2 * 3, 1 + 2 * 4)
    expect = np.full((7, 9), 254, dtype=np.uint8)
    expect[1:3, 1:4] = tiles[0]
    expect[1:3, 5:8] = tiles[1]
    expect[4:6, 1:4] = tiles[2]
    np.testing.assert_array_equal(g, expect)
    up = R.tile_grid(tiles[:1], 5, factor=2, pad=0)
    np.testing.assert_array_equal(up, np.repeat(np.repeat(tiles[0], 2, axis=0), 2, axis=1))
    default = R.tile_grid(tiles[:1], 1)
    assert default.shape == (2 + 2 + 2, 3 + 2 + 2)
    assert default[0, 0] == 254 and default[2, 2] == 0
    np.testing.assert_array_equal(R.tile_grid(tiles, 3, pad=1, pad_value=7)[0], np.full(13, 7))


def test_tile_grid_rgb() -> None:
    """RGB tiles: gaps in PAD_COLOR unless pad_value is given."""
    tiles = np.full((2, 1, 1, 3), 200, dtype=np.uint8)
    g = R.tile_grid(tiles, 1, pad=1)
    assert g.shape == (5, 3, 3)
    assert tuple(g[0, 0]) == (96, 96, 96) and tuple(g[1, 1]) == (200, 200, 200)
    assert tuple(g[3, 1]) == (200, 200, 200) and tuple(g[2, 1]) == (96, 96, 96)
    g2 = R.tile_grid(tiles, 2, pad=1, pad_value=(1, 2, 3))
    assert g2.shape == (3, 5, 3) and tuple(g2[0, 0]) == (1, 2, 3)


def test_tile_grid_errors() -> None:
    """Wrong dtype/shape, no tile, bad ncols/factor/pad: ValueErrors naming the values."""
    with pytest.raises(ValueError, match=r"needs \(T, h, w\[, 3\]\) uint8, got \(2, 2, 2\) float64"):
        R.tile_grid(np.zeros((2, 2, 2)), 1)
    with pytest.raises(ValueError, match="uint8, got"):
        R.tile_grid(np.zeros((2, 2, 2, 4), dtype=np.uint8), 1)
    with pytest.raises(ValueError, match="uint8, got"):
        R.tile_grid(np.zeros((2, 2), dtype=np.uint8), 1)
    with pytest.raises(ValueError, match="^tile_grid needs at least one tile$"):
        R.tile_grid(np.zeros((0, 2, 2), dtype=np.uint8), 1)
    t = np.zeros((1, 2, 2), dtype=np.uint8)
    for args, text in (((0, 1, 0), "0, 1, 0"), ((1, 0, 0), "1, 0, 0"), ((1, 1, -1), "1, 1, -1")):
        with pytest.raises(ValueError, match=rf"ncols >= 1, factor >= 1, pad >= 0; got {text}$"):
            R.tile_grid(t, args[0], factor=args[1], pad=args[2])
    assert R.tile_grid(t, 1, factor=1, pad=0).shape == (2, 2)


def test_save_png_palette_gray_rgb(tmp_path: Path) -> None:
    """Palette PNG with the lut, grayscale without, RGB for (H, W, 3); pixels round-trip."""
    idx = np.array([[0, 1], [254, 255]], dtype=np.uint8)
    lut = R.colormap_lut("viridis")
    p = R.save_png(tmp_path / "p.png", idx, lut)
    assert p == tmp_path / "p.png"
    with Image.open(p) as im:
        assert im.mode == "P" and im.size == (2, 2)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), lut[idx])
    g = R.save_png(str(tmp_path / "g.png"), idx)
    with Image.open(g) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), idx)
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    with Image.open(R.save_png(tmp_path / "c.png", rgb)) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)


def test_save_png_errors(tmp_path: Path) -> None:
    """Non-uint8, wrong shapes and a palette with an RGB image are refused."""
    with pytest.raises(ValueError, match=r"uint8 \(H, W\) or \(H, W, 3\) array, got float64 \(2, 2\)"):
        R.save_png(tmp_path / "x.png", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="got uint8"):
        R.save_png(tmp_path / "x.png", np.zeros((2, 2, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="got uint8"):
        R.save_png(tmp_path / "x.png", np.zeros((2,), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"^save_png: a palette \(lut\) needs an \(H, W\) index image$"):
        R.save_png(tmp_path / "x.png", np.zeros((2, 2, 3), dtype=np.uint8), np.zeros((256, 3), np.uint8))
    assert not (tmp_path / "x.png").exists()


def test_save_png_compress_level_changes_bytes(tmp_path: Path) -> None:
    """compress_level is honoured: level 0 > the default level 1 > level 9 in bytes."""
    img = (np.tile(np.arange(64, dtype=np.uint8), (64, 1)) * 7 + np.arange(64)[:, None] * 3).astype(np.uint8)
    a = R.save_png(tmp_path / "a.png", img).stat().st_size
    b = R.save_png(tmp_path / "b.png", img, compress_level=0).stat().st_size
    c = R.save_png(tmp_path / "c.png", img, compress_level=9).stat().st_size
    assert b > a > c


def test_scaling_small_spans_rowwise_nan_and_dtypes() -> None:
    """A span below 1 still divides; NaN-aware min/max are per row; grids stay uint8."""
    np.testing.assert_allclose(R.range_scale(np.array([0.25, 0.5]), 0.0, 0.5), [0.5, 1.0])
    out = R.minmax_scale(np.array([[np.nan, 0.0, 4.0], [1.0, 3.0, np.inf]]), axes=1)
    np.testing.assert_allclose(out[0, 1:], [0.0, 1.0])
    np.testing.assert_allclose(out[1, :2], [0.0, 1.0])
    assert np.isnan(out[0, 0]) and np.isnan(out[1, 2])
    g = R.tile_grid(np.ones((2, 2, 2), dtype=np.uint8), 2, pad_value=3)
    assert g.dtype == np.uint8
    assert R.tile_grid(np.ones((1, 1, 1, 3), dtype=np.uint8), 1).dtype == np.uint8
