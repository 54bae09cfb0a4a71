"""Kernel stage: stats.json contract and numbers, tile content per scale, RGB filters, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import RANDOM_INPUT, hand_context, run_cli
from PIL import Image
from torch import nn
from vizpipe.pipeline.context import RunContext
from vizpipe.pipeline.errors import ConfigError
from vizpipe.stages.kernels import KernelScale, KernelsConfig, KernelsStage

SMALL = ["model=seed_net", "input=random", "input.shape=[1,3,32,32]"]
PAD = 2  # vizpipe.pipeline.render.tile_grid's default gap


def hand_ctx(model: nn.Module, out: Path, shape: tuple[int, ...] = (1, 3, 16, 16)) -> RunContext:
    """A RunContext around any module (no config): for layer types no conf/model file has."""
    return hand_context(model, out, shape)


def check_stage(ctx: RunContext, settings: KernelsConfig) -> None:
    """What the runner does before any stage runs: the config-only rules, then the model's."""
    stage = KernelsStage()
    stage.check_settings(settings, RANDOM_INPUT)
    stage.check_model(ctx, settings)


def run_stage(ctx: RunContext, **kw: object) -> dict:
    settings = KernelsConfig(**kw)
    stage = KernelsStage()
    stage.check_settings(settings, RANDOM_INPUT)
    stage.check_model(ctx, settings)
    return stage.run(ctx, settings).data


def grid_rgb(ctx: RunContext, rel: str) -> np.ndarray:
    with Image.open(ctx.output_dir / rel) as im:
        return np.asarray(im.convert("RGB"))


def cell(grid: np.ndarray, r: int, c: int, th: int, tw: int) -> np.ndarray:
    y, x = PAD + r * (th + PAD), PAD + c * (tw + PAD)
    return grid[y : y + th, x : x + tw]


def up(a: np.ndarray, f: int) -> np.ndarray:
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1)


@pytest.fixture
def ctx(make_ctx) -> RunContext:
    return make_ctx(SMALL)


def test_stats_contract_and_numbers(ctx: RunContext) -> None:
    res = run_stage(ctx)  # layers=[all]: conv1 (32, 3, 3, 3), conv2 (64, 32, 5, 5)
    assert set(res) == {"scale", "cmap", "layers"}
    assert res["scale"] == "layer" and res["cmap"] == "bwr"
    assert list(res["layers"]) == ["conv1", "conv2"]
    on_disk = json.loads((ctx.output_dir / "kernels" / "stats.json").read_text())
    assert on_disk == res
    for name, entry in res["layers"].items():
        assert set(entry) == {"shape", "grid", "rgb", "vmax", "dead", "channels"}
        w = ctx.model.get_submodule(name).weight.detach().double()
        assert entry["shape"] == list(w.shape)
        assert entry["grid"] == f"kernels/{name}.png" and (ctx.output_dir / entry["grid"]).is_file()
        assert entry["vmax"] == pytest.approx(float(w.abs().max()), rel=1e-6)
        assert entry["dead"] == 0 and len(entry["channels"]) == w.shape[0]
        flat = w.flatten(1)
        for ch in entry["channels"][::7]:
            o = ch["index"]
            assert set(ch) == {"index", "l2", "mean", "std", "dead"}
            assert ch["l2"] == pytest.approx(float(flat[o].norm()), rel=1e-6)
            assert ch["mean"] == pytest.approx(float(flat[o].mean()), rel=1e-6, abs=1e-12)
            assert ch["std"] == pytest.approx(float(flat[o].std(unbiased=False)), rel=1e-6)
            assert ch["dead"] is False
    assert res["layers"]["conv1"]["rgb"] == "kernels/conv1_rgb.png"
    assert (ctx.output_dir / "kernels" / "conv1_rgb.png").is_file()
    assert res["layers"]["conv2"]["rgb"] is None  # 32 input channels: no RGB picture


def test_layer_scale_tile_is_the_kernel_and_white_is_zero(ctx: RunContext) -> None:
    with torch.no_grad():
        ctx.model.conv2.weight[1, 2, 0, 0] = 0.0
    res = run_stage(ctx, layers=["conv2"], max_out=3, max_in=4, tile_px=10)
    entry = res["layers"]["conv2"]
    grid = grid_rgb(ctx, entry["grid"])
    f = 2  # ceil(10 / 5)
    assert grid.shape[:2] == (PAD + 3 * (5 * f + PAD), PAD + 4 * (5 * f + PAD))
    cmap = matplotlib.colormaps["bwr"].resampled(254)
    w = ctx.model.conv2.weight.detach().double().numpy()
    vmax = entry["vmax"]
    for o in range(3):
        for i in range(4):
            want = cmap(0.5 + w[o, i] / (2 * vmax), bytes=True)[..., :3]
            np.testing.assert_array_equal(cell(grid, o, i, 5 * f, 5 * f), up(want, f))
    zero = cell(grid, 1, 2, 5 * f, 5 * f)[0, 0]
    assert tuple(zero) == tuple(cmap(0.5, bytes=True)[:3]) and zero.min() >= 250  # white


def test_tile_scale_reproduces_the_seed(ctx: RunContext) -> None:
    res = run_stage(ctx, layers=["conv2"], max_out=2, max_in=3, scale=KernelScale.tile, cmap="bwr", tile_px=5)
    assert res["scale"] == "tile"
    grid = grid_rgb(ctx, res["layers"]["conv2"]["grid"])
    cmap = matplotlib.colormaps["bwr"].resampled(254)
    w = ctx.model.conv2.weight.detach().double().numpy()
    for o in range(2):
        for i in range(3):
            k = w[o, i]
            normed = (k - k.min()) / (k.max() - k.min())  # imshow's own min..max per kernel
            np.testing.assert_allclose(normed, matplotlib.colors.Normalize()(k), atol=1e-12)
            np.testing.assert_array_equal(cell(grid, o, i, 5, 5), cmap(normed, bytes=True)[..., :3])


def test_rgb_filters_of_a_three_channel_layer(ctx: RunContext) -> None:
    res = run_stage(ctx, layers=["conv1"], max_out=5)
    rgb = grid_rgb(ctx, res["layers"]["conv1"]["rgb"])
    w = ctx.model.conv1.weight.detach().double().numpy()  # (32, 3, 3, 3)
    vmax = res["layers"]["conv1"]["vmax"]
    f, ncols = 8, 3  # 24 px tiles; ceil(sqrt(5)) columns
    assert rgb.shape[:2] == (PAD + 2 * (3 * f + PAD), PAD + ncols * (3 * f + PAD))
    for o in range(5):
        want = np.rint((0.5 + w[o].transpose(1, 2, 0) / (2 * vmax)) * 255).astype(np.uint8)
        np.testing.assert_array_equal(cell(rgb, *divmod(o, ncols), 3 * f, 3 * f), up(want, f))
    fresh = dataclasses.replace(ctx, output_dir=ctx.output_dir.parent / "run2", _claimed=set())
    res = run_stage(fresh, layers=["conv1"], rgb_first=False)
    assert res["layers"]["conv1"]["rgb"] is None


def test_dead_channel_is_reported(ctx: RunContext) -> None:
    with torch.no_grad():
        ctx.model.conv2.weight[5] = 0.0
    entry = run_stage(ctx, layers=["conv2"])["layers"]["conv2"]
    assert entry["dead"] == 1
    assert [c["index"] for c in entry["channels"] if c["dead"]] == [5]
    assert entry["channels"][5]["l2"] == 0.0


def test_model_is_left_as_found(ctx: RunContext) -> None:
    model = ctx.model
    model.train()
    model.conv1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_stage(ctx)
    assert model.training and not model.conv1.weight.requires_grad
    assert model.conv2.weight.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_transposed_conv_is_drawn_as_out_by_in(tmp_path: Path) -> None:
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3), nn.ReLU(), nn.Linear(18, 2))
    entry = run_stage(hand_ctx(model, tmp_path / "run", (1, 4, 8, 16)), layers=["all"])
    assert list(entry["layers"]) == ["0"]
    assert entry["layers"]["0"]["shape"] == [6, 4, 3, 3]  # stored as (4, 6, 3, 3)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            ["pool"],
            r"Layer 'pool' \(MaxPool2d\) cannot be used: kernel grids need a 2-D conv.*"
            r"Layers that qualify: conv1, conv2",
        ),
        (["conv3"], r"kernels\.layers: Unknown layer 'conv3' for seed_net; did you mean 'conv"),
        (["type:Linear"], r"selects nothing.*Layers that qualify: conv1, conv2"),
        ([], r"kernels\.layers is empty"),
    ],
)
def test_bad_layers_fail_in_check_model(ctx: RunContext, layers: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_stage(ctx, KernelsConfig(layers=layers))
    assert not (ctx.output_dir / "kernels").exists()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_out": 0}, r"kernels\.max_out must be >= 1, got 0"),
        ({"tile_px": -1}, r"kernels\.tile_px must be >= 1"),
        ({"dead_eps": -1.0}, r"kernels\.dead_eps must be >= 0"),
        ({"cmap": "bwrr"}, r"Unknown kernels\.cmap colormap 'bwrr'.*bwr"),
    ],
)
def test_bad_settings_fail_in_check_settings(ctx: RunContext, kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_stage(ctx, KernelsConfig(**kw))


@pytest.mark.slow
def test_cli_non_conv_layer_fails_before_any_work(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = run_cli([*SMALL, "stages=[kernels]", "kernels.layers=[linear1]", f"hydra.run.dir={run}"])
    assert proc.returncode != 0
    assert "Layer 'linear1' (Linear) cannot be used" in proc.stderr
    assert "Layers that qualify: conv1, conv2" in proc.stderr
    assert not (run / "kernels").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["skipped"]
