"""Kernel stage: stats.json contract and numbers, tile content per scale, RGB filters, errors.

Kernels stage on hand-set conv weights: check messages, statistics, grids, RGB filters, record."""

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
from vizpipe.stages.kernels import (
    KernelScale,
    KernelsConfig,
    KernelsStage,
    collect,
    has_conv_weight,
    kernel_grid,
    layer_weight,
    plan,
    rgb_filter_grid,
)

# ---- Kernel stage: stats.json contract and numbers, tile content per scale, RGB filters,
# errors.
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


# ---- Kernels stage on hand-set conv weights: check messages, statistics, grids, RGB filters,
# record.
class Net(nn.Module):
    """rgb: Conv2d(3, 3, 2) with set weights (channel 1 dead); mid: Conv2d(3, 2, 1); up: ConvTranspose2d."""

    def __init__(self) -> None:
        super().__init__()
        self.rgb = nn.Conv2d(3, 3, 2, bias=False)
        self.mid = nn.Conv2d(3, 2, 1)
        self.up = nn.ConvTranspose2d(2, 4, 1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            w = torch.arange(36, dtype=torch.float32).reshape(3, 3, 2, 2) - 10.0
            w[1] = 0.0
            self.rgb.weight.copy_(w)
            self.mid.weight.copy_(torch.tensor([[1.0, -2.0, 2.0], [0.5, 0.0, 0.0]]).reshape(2, 3, 1, 1))
            self.up.weight.copy_(torch.arange(8, dtype=torch.float32).reshape(2, 4, 1, 1))

    def forward(self, x):
        x = self.up(self.mid(self.rgb(x)))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture
def ctx_kernels(tmp_path):
    return hand_context(Net(), tmp_path / "run", (1, 3, 5, 5))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_out": 0}, "kernels.max_out must be >= 1, got 0"),
        ({"max_in": 0}, "kernels.max_in must be >= 1, got 0"),
        ({"tile_px": -1}, "kernels.tile_px must be >= 1, got -1"),
        ({"dead_eps": -0.5}, "kernels.dead_eps must be >= 0, got -0.5"),
        ({"dead_eps": float("nan")}, "kernels.dead_eps must be >= 0, got nan"),
        ({"layers": []}, "kernels.layers is empty; give layer names, globs, type:Conv2d or all"),
    ],
)
def test_check_messages(kw, message):
    """Each rule: one exact line."""
    with pytest.raises(ConfigError) as info:
        KernelsStage().check_settings(KernelsConfig(**kw), RANDOM_INPUT)
    assert str(info.value) == message


def test_check_boundaries_and_cmap():
    """1 and 0 are accepted where the rule is >= 1 / >= 0; the colormap is checked by name."""
    KernelsStage().check_settings(KernelsConfig(max_out=1, max_in=1, tile_px=1, dead_eps=0.0), RANDOM_INPUT)
    with pytest.raises(ConfigError, match="kernels.cmap"):
        KernelsStage().check_settings(KernelsConfig(cmap="not_a_cmap"), RANDOM_INPUT)


def test_plan_and_qualifying_layers(ctx_kernels):
    """all = every 2-D conv with a 4-D weight (ConvTranspose2d too); a bad name is prefixed."""
    assert plan(ctx_kernels, KernelsConfig()) == ["rgb", "mid", "up"]
    assert plan(ctx_kernels, KernelsConfig(layers=["up", "rgb"])) == ["up", "rgb"]
    assert has_conv_weight("fc", ctx_kernels.model.fc) is False
    assert has_conv_weight("c", nn.Conv1d(1, 1, 1)) is False
    assert has_conv_weight("c", nn.ConvTranspose2d(1, 1, 1)) is True
    no_weight = nn.Conv2d(1, 1, 1)
    no_weight.weight = None
    assert has_conv_weight("c", no_weight) is False
    with pytest.raises(ConfigError) as info:
        plan(ctx_kernels, KernelsConfig(layers=["fc"]))
    assert str(info.value).startswith("kernels.layers: ") and "fc" in str(info.value)


def test_layer_weight_transposes_conv_transpose(ctx_kernels):
    """ConvTranspose2d (I, O, kh, kw) becomes (O, I, kh, kw); a float32 copy."""
    w = layer_weight(ctx_kernels.model.up)
    assert w.shape == (4, 2, 1, 1) and w.dtype == np.float32
    np.testing.assert_array_equal(w[:, :, 0, 0], np.arange(8.0).reshape(2, 4).T)
    w[:] = 99
    assert float(ctx_kernels.model.up.weight.max()) == 7.0


def test_collect_statistics(ctx_kernels):
    """vmax, per-output-channel L2, mean, population std and dead flags, exactly."""
    data = collect(ctx_kernels, ["rgb", "mid", "up"], 1e-8)
    rgb, mid, up = data
    w = ctx_kernels.model.rgb.weight.detach().numpy().reshape(3, -1).astype(np.float64)
    assert rgb.name == "rgb" and rgb.vmax == 25.0
    np.testing.assert_allclose(rgb.l2, np.sqrt((w**2).sum(1)))
    np.testing.assert_allclose(rgb.mean, w.mean(1))
    np.testing.assert_allclose(rgb.std, w.std(1))
    assert rgb.dead.tolist() == [False, True, False]
    assert mid.vmax == 2.0 and mid.l2.tolist() == [3.0, 0.5] and mid.mean.tolist() == [1 / 3, 0.5 / 3]
    assert mid.dead.tolist() == [False, False]
    assert collect(ctx_kernels, ["mid"], 0.6)[0].dead.tolist() == [False, True]  # max |w| 0.5 < 0.6
    assert collect(ctx_kernels, ["mid"], 0.5)[0].dead.tolist() == [False, False]  # not strictly below
    assert up.vmax == 7.0 and up.weight.shape == (4, 2, 1, 1)
    with torch.no_grad():
        ctx_kernels.model.mid.weight[0, 0] = float("nan")
        ctx_kernels.model.mid.weight[1] = 0.0
    broken = collect(ctx_kernels, ["mid"], 1e-8)[0]
    assert broken.vmax == 2.0 and broken.dead.tolist() == [False, True]  # NaN row: broken, not dead
    with torch.no_grad():
        ctx_kernels.model.mid.weight.fill_(float("inf"))
    assert collect(ctx_kernels, ["mid"], 1e-8)[0].vmax == 0.0


def test_kernel_grid_exact():
    """layer scale: 0.5 + w / (2 vmax); tile scale: each kernel min..max; rows = output channels."""
    w = np.array([[[[-2.0, 0.0]], [[1.0, 2.0]]]])  # (1, 2, 1, 2)
    grid = kernel_grid(w, 4, tile_px=1)  # vmax 2: -2 -> 0, 0 -> 0.5, 1 -> 0.75, 2 -> 1
    assert grid.shape == (2 + 1 + 2, 2 + 2 + 2 + 2 + 2)
    np.testing.assert_array_equal(grid[2, 2:4], [0, 2])
    np.testing.assert_array_equal(grid[2, 6:8], [3, 3])
    grid = kernel_grid(w, 4, vmax=4.0, tile_px=1)  # -2 -> 0.25, 0 -> .5, 1 -> .625, 2 -> .75
    np.testing.assert_array_equal(grid[2, 2:4], [1, 2])
    np.testing.assert_array_equal(grid[2, 6:8], [2, 3])
    grid = kernel_grid(w, 4, scale="tile", tile_px=1)
    np.testing.assert_array_equal(grid[2, 2:4], [0, 3])
    np.testing.assert_array_equal(grid[2, 6:8], [0, 3])
    neg = kernel_grid(-w * 3, 4, tile_px=1)  # vmax from max(|lo|, |hi|) = 6
    np.testing.assert_array_equal(neg[2, 2:4], [3, 2])
    big = kernel_grid(np.zeros((2, 1, 2, 2)), 4, tile_px=5)  # factor ceil(5 / 2) = 3
    assert big.shape == (2 + 6 + 2 + 6 + 2, 2 + 6 + 2)
    assert (big[2:8, 2:8] == 2).all()


def test_rgb_filter_grid_exact():
    """Each filter as an RGB tile: layer scale 0.5 + w / (2 vmax); tile scale min..max of the filter."""
    w = np.zeros((2, 3, 1, 1))
    w[0, :, 0, 0] = [-1.0, 0.0, 1.0]
    w[1, :, 0, 0] = [2.0, 2.0, 0.0]
    grid = rgb_filter_grid(w, tile_px=1)
    assert grid.shape == (2 + 1 + 2, 2 + 1 + 2 + 1 + 2, 3)
    assert grid[2, 2].tolist() == [64, 128, 191]  # vmax 2: 0.25, 0.5, 0.75
    assert grid[2, 5].tolist() == [255, 255, 128]
    grid = rgb_filter_grid(w, vmax=1.0, tile_px=1)
    assert grid[2, 2].tolist() == [0, 128, 255]
    grid = rgb_filter_grid(w, scale="tile", tile_px=1)
    assert grid[2, 2].tolist() == [0, 128, 255] and grid[2, 5].tolist() == [255, 255, 0]
    assert rgb_filter_grid(-w, tile_px=1)[2, 2].tolist() == [191, 128, 64]


def test_run_files_stats_and_record(ctx_kernels):
    """Grids (max_out × max_in), RGB filters of the 3-input layer only, stats.json and the record."""
    stage = KernelsStage()
    s = KernelsConfig(max_out=2, max_in=2, tile_px=4)
    stage.check_settings(s, RANDOM_INPUT)
    stage.check_model(ctx_kernels, s)
    res = stage.run(ctx_kernels, s)
    out = ctx_kernels.output_dir
    doc = json.loads((out / "kernels" / "stats.json").read_text())
    assert doc == res.data and doc["scale"] == "layer" and doc["cmap"] == "bwr"
    assert list(doc["layers"]) == ["rgb", "mid", "up"]
    rgb = doc["layers"]["rgb"]
    assert (rgb["shape"], rgb["grid"], rgb["rgb"], rgb["vmax"], rgb["dead"]) == (
        [3, 3, 2, 2],
        "kernels/rgb.png",
        "kernels/rgb_rgb.png",
        25.0,
        1,
    )
    w = ctx_kernels.model.rgb.weight.detach().numpy().reshape(3, -1).astype(np.float64)
    assert [c["index"] for c in rgb["channels"]] == [0, 1, 2]
    assert [c["dead"] for c in rgb["channels"]] == [False, True, False]
    assert [c["l2"] for c in rgb["channels"]] == pytest.approx(np.sqrt((w**2).sum(1)).tolist())
    assert [c["mean"] for c in rgb["channels"]] == pytest.approx(w.mean(1).tolist())
    assert [c["std"] for c in rgb["channels"]] == pytest.approx(w.std(1).tolist())
    mid = doc["layers"]["mid"]
    assert (mid["shape"], mid["rgb"], mid["dead"]) == ([2, 3, 1, 1], "kernels/mid_rgb.png", 0)
    assert doc["layers"]["up"]["rgb"] is None and doc["layers"]["up"]["shape"] == [4, 2, 1, 1]
    from vizpipe.pipeline.render import colormap_levels

    weight = ctx_kernels.model.rgb.weight.detach().numpy()
    png = np.asarray(Image.open(out / "kernels" / "rgb.png"))
    np.testing.assert_array_equal(
        png, kernel_grid(weight[:2, :2], colormap_levels("bwr"), vmax=25.0, tile_px=4)
    )
    assert png.shape == (2 + 2 * (4 + 2), 2 + 2 * (4 + 2))
    rgb_png = np.asarray(Image.open(out / "kernels" / "rgb_rgb.png"))
    np.testing.assert_array_equal(rgb_png, rgb_filter_grid(weight[:2], vmax=25.0, tile_px=4))
    assert res.summary == (
        "3 conv layer(s); colour scale layer, colormap bwr: rows are output channels, columns input "
        "channels, white is zero; 1 dead output channel(s)"
    )
    table = res.tables[0]
    assert (table.title, table.columns, table.code) == (
        "Layers",
        ["Layer", "Weight shape", "max |w|", "Dead output channels"],
        [0],
    )
    assert table.rows == [["rgb", "3×3×2×2", 25.0, 1], ["mid", "2×3×1×1", 2.0, 0], ["up", "4×2×1×1", 7.0, 0]]
    assert [(p.path, p.caption, p.tag, p.wide, p.preview) for p in res.pictures] == [
        ("kernels/rgb.png", "rgb  3×3×2×2", "kernels/rgb", True, True),
        ("kernels/rgb_rgb.png", "rgb  as RGB filters", "kernels/rgb/rgb", True, False),
        ("kernels/mid.png", "mid  2×3×1×1", "kernels/mid", True, True),
        ("kernels/mid_rgb.png", "mid  as RGB filters", "kernels/mid/rgb", True, False),
        ("kernels/up.png", "up  4×2×1×1", "kernels/up", True, True),
    ]
    assert res.files == ["kernels/stats.json"] and res.stage == "kernels"


def test_run_tile_scale_without_rgb_or_dead(tmp_path):
    """scale=tile, rgb_first=false: no RGB file, no 'white is zero', no dead count in the summary."""
    model = Net()
    with torch.no_grad():
        model.rgb.weight[1] = 1.0
    ctx_kernels = hand_context(model, tmp_path / "run", (1, 3, 5, 5))
    res = KernelsStage().run(
        ctx_kernels, KernelsConfig(layers=["rgb"], scale=KernelScale.tile, rgb_first=False, cmap="RdBu")
    )
    assert res.summary == (
        "1 conv layer(s); colour scale tile, colormap RdBu: rows are output channels, columns input channels"
    )
    assert res.data["layers"]["rgb"]["rgb"] is None and len(res.pictures) == 1
    assert not (ctx_kernels.output_dir / "kernels" / "rgb_rgb.png").exists()
    from vizpipe.pipeline.render import colormap_levels

    png = np.asarray(Image.open(ctx_kernels.output_dir / "kernels" / "rgb.png"))
    weight = model.rgb.weight.detach().numpy()
    np.testing.assert_array_equal(png, kernel_grid(weight, colormap_levels("RdBu"), scale="tile", tile_px=24))


def test_plan_blocks_are_the_configured_conv_blocks(ctx_kernels):
    """kernels.layers=[blocks] follows model.blocks (conv layers only)."""
    ctx_kernels.blocks_config = "mid"
    assert plan(ctx_kernels, KernelsConfig(layers=["blocks"])) == ["mid"]
    ctx_kernels.blocks_config, ctx_kernels._blocks = "up,rgb", None
    assert plan(ctx_kernels, KernelsConfig(layers=["blocks"])) == ["up", "rgb"]
