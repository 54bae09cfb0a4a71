"""The device path of the pictures, run on CPU tensors: a batch coloured in torch gives the bytes the
writer's NumPy path gives (CAM overlays and heatmaps, feature grids). tests/test_gpu.py runs the
same functions on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.image import show_cam_on_image
from vizpipe.pipeline.render import colormap_levels, encode_png, finite_range
from vizpipe.stages.cam.draw import colour_batch, heatmap_png, heatmap_rgb, mask_of, npy_bytes, overlay_png
from vizpipe.stages.features.draw import feature_grid, feature_grids, grid_png


def cam_batch(seed: int = 0, b: int = 4, h: int = 24, w: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Maps with every case the drawing meets (NaN, ±inf, out of [0, 1], a flat map, exact 1s and
    values on colour boundaries) and images in [0, 1] (one black)."""
    rng = np.random.default_rng(seed)
    maps = rng.uniform(-0.3, 1.3, (b, h, w)).astype(np.float32)
    maps[0, 0, :4] = [np.nan, np.inf, -np.inf, 1.0]
    maps[1] = 0.0
    maps[2, 1, :5] = np.array([1, 2, 127, 128, 254], dtype=np.float32) / 255
    rgb = rng.uniform(0, 1, (b, h, w, 3)).astype(np.float32)
    rgb[3] = 0.0
    return maps, rgb


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.5, 0.75, 1.0])
def test_colour_batch_equals_show_cam_on_image(weight):
    maps, rgb = cam_batch()
    overlays, heatmaps = colour_batch(torch.from_numpy(maps), torch.from_numpy(rgb), weight)
    assert overlays.dtype == heatmaps.dtype == torch.uint8 and overlays.shape == (4, 24, 20, 3)
    for i in range(len(maps)):
        mask = mask_of(maps[i])
        with np.errstate(invalid="ignore"):  # weight 1 on a black image: 0/0, drawn black
            want = show_cam_on_image(rgb[i], mask, use_rgb=True, image_weight=weight)
            png = overlay_png(rgb[i], maps[i], weight, 1)
        np.testing.assert_array_equal(overlays[i].numpy(), want, err_msg=f"image {i}")
        np.testing.assert_array_equal(heatmaps[i].numpy(), heatmap_rgb(mask))
        # the bytes the writer writes either way
        assert encode_png(overlays[i].numpy(), None, 1) == png
        assert encode_png(heatmaps[i].numpy(), None, 1) == heatmap_png(maps[i], 1)


def test_colour_batch_leaves_out_what_is_not_wanted():
    maps, rgb = cam_batch()
    overlays, heatmaps = colour_batch(torch.from_numpy(maps), torch.from_numpy(rgb), 0.5, overlay=False)
    assert overlays is None and heatmaps is not None
    overlays, heatmaps = colour_batch(torch.from_numpy(maps), torch.from_numpy(rgb), 0.5, heatmap=False)
    assert overlays is not None and heatmaps is None


def test_npy_bytes_are_np_save(tmp_path):
    cam = np.linspace(0, 1, 12, dtype=np.float64).reshape(3, 4)
    np.save(tmp_path / "a.npy", cam.astype(np.float32))
    assert npy_bytes(cam) == (tmp_path / "a.npy").read_bytes()


def feature_batch(seed: int = 0) -> np.ndarray:
    """(B, C, h, w) activations with a constant channel, NaN/inf, an all-NaN channel and an image
    with no finite value at all."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(3, 7, 5, 6)).astype(np.float32)
    maps[0, 1] = 2.5
    maps[0, 2, 0, :3] = [np.nan, np.inf, -np.inf]
    maps[1, 3] = np.nan
    maps[2] = np.inf
    return maps


@pytest.mark.parametrize("normalize", ["channel", "layer"])
@pytest.mark.parametrize(("drawn", "tile_px"), [([0, 1, 2, 3, 4, 5, 6], 1), ([3, 0, 2], 12), ([5], 7)])
def test_feature_grids_equal_feature_grid(normalize, drawn, tile_px):
    maps = feature_batch()
    levels = colormap_levels("viridis")
    grids = feature_grids(torch.from_numpy(maps), drawn, levels, normalize, tile_px)
    assert grids.dtype == torch.uint8
    for i in range(len(maps)):
        layer_range = finite_range(maps[i]) if normalize == "layer" else None
        with np.errstate(invalid="ignore"):
            want = feature_grid(
                maps[i, drawn], levels, normalize=normalize, layer_range=layer_range, tile_px=tile_px
            )
            png = grid_png(maps[i], drawn, levels, normalize, tile_px, np.zeros((256, 3), np.uint8), 1)
        np.testing.assert_array_equal(grids[i].numpy(), want, err_msg=f"image {i}")
        assert encode_png(grids[i].numpy(), np.zeros((256, 3), np.uint8), 1) == png


def test_feature_grids_short_colormap():
    """tab10 has 10 levels: indices 0..9, the top value in the top level."""
    maps = feature_batch()
    grids = feature_grids(torch.from_numpy(maps), [0, 4], colormap_levels("tab10"), "channel", 1)
    want = feature_grid(maps[1, [0, 4]], colormap_levels("tab10"), tile_px=1)
    np.testing.assert_array_equal(grids[1].numpy(), want)
    assert int(grids[1].max()) <= 254
