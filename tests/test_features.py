"""Feature stage: the saved maps are the layer's own output, tiles show the documented colours."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import vizpipe.stages.features.collect as features_mod
from conftest import RANDOM_INPUT, hand_context, run_cli
from PIL import Image
from torch import nn
from vizpipe.pipeline.context import RunContext
from vizpipe.pipeline.errors import ConfigError
from vizpipe.stages.features import ChannelSelect, FeatureNorm, FeaturesConfig, FeaturesStage, NpyDtype

SMALL = ["model=seed_net", "input=random", "input.shape=[2,3,32,32]"]
PAD = 2  # vizpipe.pipeline.render.tile_grid's default gap
LAYER_KEYS = {
    "shape",
    "npy",
    "grids",
    "channels_drawn",
    "mean",
    "max",
    "zero_fraction",
    "channels",
    "capture",
    "layout",
    "reshape",
    "maps",
}


def hand_ctx(model: nn.Module, out: Path, shape: tuple[int, ...] = (2, 3, 12, 12)) -> RunContext:
    """A RunContext around any module (no config)."""
    return hand_context(model, out, shape)


def conv_relu() -> nn.Module:
    """conv -> ReLU(inplace) -> conv: hooking "0" without a copy would save post-ReLU values."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True), nn.Conv2d(8, 4, 3))


def check_stage(ctx: RunContext, settings: FeaturesConfig) -> None:
    """What the runner does before any stage runs: the config-only rules, then the model's."""
    stage = FeaturesStage()
    stage.check_settings(settings, RANDOM_INPUT)
    stage.check_model(ctx, settings)


def run_stage(ctx: RunContext, **kw: object) -> dict:
    settings = FeaturesConfig(**kw)
    stage = FeaturesStage()
    stage.check_settings(settings, RANDOM_INPUT)
    stage.check_model(ctx, settings)
    return stage.run(ctx, settings).data


def reference_outputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    """Plain forward hooks that clone each layer's output: what the stage must save exactly."""
    got: dict[str, np.ndarray] = {}

    def hook(name: str):
        def save(module: nn.Module, args: object, output: torch.Tensor) -> None:
            got.setdefault(name, output.detach().clone().numpy())

        return save

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return got


def load_npy(ctx: RunContext, entry: dict) -> np.ndarray:
    return np.load(ctx.output_dir / entry["npy"], allow_pickle=False)


def grid_rgb(ctx: RunContext, rel: str) -> np.ndarray:
    with Image.open(ctx.output_dir / rel) as im:
        return np.asarray(im.convert("RGB"))


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_npy_equals_a_forward_hook_with_checkpoint_and_tensor(make_ctx, tmp_path: Path) -> None:
    """Acceptance: input=tensor + model.checkpoint -> .npy == a forward hook, exactly."""
    import torchvision

    torch.manual_seed(123)  # weights unlike the run's seeded init
    ref_model = torchvision.models.squeezenet1_1().eval()
    ckpt = tmp_path / "squeezenet.pt"
    torch.save(ref_model.state_dict(), ckpt)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    pt = tmp_path / "batch.pt"
    torch.save(x, pt)
    layers = ["features.0", "features.3.squeeze", "features.3"]  # the first two feed ReLU(inplace)
    ctx = make_ctx(
        [
            "model=torchvision",
            "model.name=squeezenet1_1",
            f"model.checkpoint={ckpt}",
            "input=tensor",
            f"input.path={pt}",
        ]
    )
    res = run_stage(ctx, layers=layers, max_channels=4)

    fresh = torchvision.models.squeezenet1_1()
    fresh.load_state_dict(torch.load(ckpt, weights_only=True))
    want = reference_outputs(fresh.eval(), torch.load(pt, weights_only=True), layers)
    for name in layers:
        got = load_npy(ctx, res["layers"][name])
        assert got.dtype == np.float32 and got.shape == want[name].shape
        assert np.array_equal(got, want[name]), name
    assert (want["features.0"] < 0).any()  # pre-ReLU: a copy made after the ReLU would differ
    assert no_hooks(ctx.model)


def test_saved_output_is_the_layer_own_before_inplace_relu(tmp_path: Path) -> None:
    ctx = hand_ctx(conv_relu(), tmp_path / "run")
    res = run_stage(ctx, layers=["0", "1", "2"])
    conv, relu, last = (load_npy(ctx, res["layers"][n]) for n in ("0", "1", "2"))
    want = reference_outputs(conv_relu().eval(), ctx.inputs.tensor, ["0", "1", "2"])
    assert (conv < 0).any() and np.array_equal(conv, want["0"])
    assert np.array_equal(relu, np.maximum(conv, 0)) and np.array_equal(last, want["2"])


def test_stats_contract_and_per_channel_numbers(tmp_path: Path) -> None:
    ctx = hand_ctx(conv_relu(), tmp_path / "run")
    res = run_stage(ctx, layers=["1"], max_channels=5)
    assert res == json.loads((ctx.output_dir / "features" / "stats.json").read_text())
    assert (res["cmap"], res["normalize"], res["select"]) == ("viridis", "channel", "first")
    entry = res["layers"]["1"]
    assert set(entry) == LAYER_KEYS
    a = load_npy(ctx, entry).astype(np.float64)  # (2, 8, 10, 10), post-ReLU: has zeros
    assert entry["shape"] == [2, 8, 10, 10] and entry["npy"] == "features/1.npy"
    assert entry["grids"] == {"img0": "features/1__img0.png", "img1": "features/1__img1.png"}
    assert entry["channels_drawn"] == [0, 1, 2, 3, 4]
    assert (entry["capture"], entry["layout"], entry["maps"]) == ("output", "nchw", [2, 8, 10, 10])
    assert entry["mean"] == pytest.approx(a.mean()) and entry["max"] == pytest.approx(a.max())
    assert 0 < entry["zero_fraction"] == pytest.approx((a == 0).mean())
    assert [c["index"] for c in entry["channels"]] == list(range(8))  # every channel, not 5
    for c in entry["channels"]:
        ch = a[:, c["index"]]  # over the batch
        assert c["mean"] == pytest.approx(ch.mean(), abs=1e-9)
        assert c["max"] == pytest.approx(ch.max())
        assert c["zero_fraction"] == pytest.approx((ch == 0).mean())


@pytest.mark.parametrize("normalize", ["channel", "layer"])
def test_tile_k_is_channel_k_after_normalisation_and_colormap(make_ctx, normalize: str) -> None:
    ctx = make_ctx(SMALL)  # seed_net conv2: (2, 64, 11, 11)
    res = run_stage(
        ctx,
        layers=["conv2"],
        max_channels=7,
        select=ChannelSelect.top,
        normalize=FeatureNorm(normalize),
        cmap="magma",
        tile_px=22,
    )
    entry = res["layers"]["conv2"]
    a = load_npy(ctx, entry).astype(np.float64)
    order = np.argsort(-a.mean(axis=(0, 2, 3)), kind="stable")[:7].tolist()
    assert entry["channels_drawn"] == order  # most active over the batch first
    cmap = matplotlib.colormaps["magma"].resampled(254)
    f, ncols, th = 2, 3, 22  # ceil(22 / 11); ceil(sqrt(7)); 11 * f
    for i, image in enumerate(["random_0", "random_1"]):
        grid = grid_rgb(ctx, entry["grids"][image])
        assert grid.shape[:2] == (PAD + 3 * (th + PAD), PAD + ncols * (th + PAD))
        lo, hi = a[i].min(), a[i].max()  # whole layer, this image
        for j, c in enumerate(order):
            x = a[i, c]
            if normalize == "channel":
                lo, hi = x.min(), x.max()
            want = cmap((x - lo) / (hi - lo), bytes=True)[..., :3]
            r, col = divmod(j, ncols)
            y0, x0 = PAD + r * (th + PAD), PAD + col * (th + PAD)
            tile = grid[y0 : y0 + th, x0 : x0 + th]
            np.testing.assert_array_equal(tile, np.repeat(np.repeat(want, f, 0), f, 1))


def test_float16_and_no_npy(tmp_path: Path) -> None:
    ctx = hand_ctx(conv_relu(), tmp_path / "run")
    entry = run_stage(ctx, layers=["0"], dtype=NpyDtype.float16)["layers"]["0"]
    half = load_npy(ctx, entry)
    want = reference_outputs(conv_relu().eval(), ctx.inputs.tensor, ["0"])["0"]
    assert half.dtype == np.float16 and np.array_equal(half, want.astype(np.float16))
    ctx2 = hand_ctx(conv_relu(), tmp_path / "run2")
    entry = run_stage(ctx2, layers=["0"], save=["grid"])["layers"]["0"]
    assert entry["npy"] is None and not list((ctx2.output_dir / "features").glob("*.npy"))


def test_hooks_removed_and_model_left_as_found(tmp_path: Path, monkeypatch) -> None:
    model = conv_relu().train()
    model[0].weight.requires_grad_(False)
    ctx = hand_ctx(model, tmp_path / "run")
    model.train()  # hand_ctx put it in eval mode
    run_stage(ctx, layers=["0", "2"])
    assert model.training and no_hooks(model)
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad

    def boom(*args: object, **kw: object) -> dict:
        raise RuntimeError("disk full")

    monkeypatch.setattr(features_mod, "draw_batch", boom)
    ctx = hand_ctx(model, tmp_path / "run2")
    model.train()
    with pytest.raises(RuntimeError, match="disk full"):
        run_stage(ctx, layers=["0", "2"])
    assert no_hooks(model) and model.training


def test_blocks_are_the_models_and_any_spatial_layer_can_be_drawn(make_ctx) -> None:
    ctx = make_ctx(SMALL)
    res = run_stage(ctx, max_channels=3)  # layers=[blocks]: seed_net's YAML names conv1, conv2
    assert list(res["layers"]) == ["conv1", "conv2"]
    fresh = make_ctx([*SMALL, "model.blocks=null"], out=ctx.output_dir.parent / "found")
    assert fresh.blocks() == ["conv1", "conv2"]  # found: the last spatial module at each resolution
    fresh = make_ctx(SMALL, out=ctx.output_dir.parent / "any")
    res = run_stage(fresh, layers=["pool", "adaptive_pool"], max_channels=3)
    assert sum("pool runs 2 times per forward" in w for w in fresh.warnings) == 1  # not again in run
    assert res["layers"]["adaptive_pool"]["shape"] == [2, 64, 1, 1]
    with Image.open(fresh.output_dir / res["layers"]["adaptive_pool"]["grids"]["random_0"]) as im:
        assert im.size == (PAD + 2 * (56 + PAD), PAD + 2 * (56 + PAD))  # 1x1 maps upscaled 56x


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            ["linear1"],
            r"features\.layers: Layer 'linear1' \(Linear\) cannot be used: feature maps "
            r"need .*spatial.*Layers that qualify: conv1, pool, conv2, adaptive_pool",
        ),
        (["conv3"], r"Unknown layer 'conv3' for seed_net; did you mean 'conv.'\? Valid choices"),
        (["features.*"], r"Unknown layer pattern 'features\.\*'"),
        ([], r"features\.layers is empty"),
    ],
)
def test_bad_layers_fail_in_check_model(make_ctx, layers: list[str], message: str) -> None:
    ctx = make_ctx(SMALL)
    with pytest.raises(ConfigError, match=message):
        check_stage(ctx, FeaturesConfig(layers=layers))
    assert not (ctx.output_dir / "features").exists()


def test_blocks_without_maps_fail(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 4))
    with pytest.raises(
        ConfigError, match=r"'blocks' of tiny \(none\) have no usable output: feature maps need"
    ):
        check_stage(hand_ctx(model, tmp_path / "run"), FeaturesConfig())


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_channels": 0}, r"features\.max_channels must be >= 1, got 0"),
        ({"tile_px": 0}, r"features\.tile_px must be >= 1"),
        ({"cmap": "virdis"}, r"features\.cmap colormap 'virdis'; did you mean 'viridis'"),
    ],
)
def test_bad_settings_fail_in_check_settings(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_stage(hand_ctx(conv_relu(), tmp_path / "run"), FeaturesConfig(**kw))


@pytest.mark.slow
def test_cli_vgg11_kernels_and_features_of_features_3(tmp_path: Path) -> None:
    """Acceptance: the issue's command writes the kernel grid, stats, feature grid and .npy."""
    run = tmp_path / "run"
    proc = run_cli(
        [
            "model=vgg11",
            "stages=[kernels,features]",
            "kernels.layers=[features.3]",
            "features.layers=[features.3]",
            f"hydra.run.dir={run}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert [(s["name"], s["status"]) for s in manifest["stages"]] == [("kernels", "ok"), ("features", "ok")]
    kern = json.loads((run / "kernels" / "stats.json").read_text())["layers"]["features.3"]
    assert kern["shape"] == [128, 64, 3, 3] and kern["rgb"] is None
    with Image.open(run / kern["grid"]) as im:  # 16 rows x 64 columns of 24 px tiles
        assert im.size == (PAD + 64 * (24 + PAD), PAD + 16 * (24 + PAD))
    feat = json.loads((run / "features" / "stats.json").read_text())["layers"]["features.3"]
    assert feat["shape"] == [1, 128, 112, 112] and len(feat["channels_drawn"]) == 100
    a = np.load(run / feat["npy"])
    assert a.shape == (1, 128, 112, 112) and (a < 0).any()  # conv output, before ReLU(inplace)
    with Image.open(run / feat["grids"]["grace_hopper"]) as im:
        side = PAD + 10 * (112 + PAD)
        assert im.size == (side, side)
    assert math.isclose(feat["mean"], float(a.mean(dtype=np.float64)), rel_tol=1e-6)
