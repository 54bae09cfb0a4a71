"""vizpipe.pipeline.render: colours equal matplotlib's, tiles land where documented, PNGs round-trip."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image
from vizpipe.pipeline import render
from vizpipe.pipeline.errors import ConfigError


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
