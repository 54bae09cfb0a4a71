"""Feature stage: the saved maps are the layer's own output, tiles show the documented colours.

Features stage on a tiny CNN: plan (capture output/input/both), stats.json values, grids, record."""

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
from test_cam import Shared, TinyCNN
from torch import nn
from vizpipe.pipeline.context import RunContext
from vizpipe.pipeline.errors import ConfigError
from vizpipe.stages.features import (
    Capture,
    ChannelSelect,
    FeatureNorm,
    FeaturesConfig,
    FeaturesStage,
    NpyDtype,
    plan,
)
from vizpipe.stages.features.collect import Accumulator, choose_channels
from vizpipe.stages.features.draw import feature_grid

# ---- Feature stage: the saved maps are the layer's own output, tiles show the documented
# colours.
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


# ---- Features stage on a tiny CNN: plan (capture output/input/both), stats.json values, grids,
# record.
def direct(model: TinyCNN, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each module's output, computed by hand."""
    with torch.no_grad():
        c1 = model.c1(x)
        act = torch.relu(c1)
        c2 = model.c2(act)
    return {"c1": c1, "act": act, "c2": c2}


@pytest.fixture
def ctx(tmp_path):
    """TinyCNN, three 8×8 images streamed two at a time."""
    c = hand_context(TinyCNN(), tmp_path / "run", (3, 3, 8, 8), batch_size=2)
    return c


def run(ctx, **kw):
    stage = FeaturesStage()
    s = FeaturesConfig(**kw)
    stage.check_settings(s, RANDOM_INPUT)
    stage.check_model(ctx, s)
    return stage.run(ctx, s)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_channels": 0}, "features.max_channels must be >= 1, got 0"),
        ({"tile_px": 0}, "features.tile_px must be >= 1, got 0"),
        ({"layers": []}, "features.layers is empty; give names, globs, type:X, all or blocks"),
    ],
)
def test_check_messages(kw, message):
    """Limits and an empty layer list fail with one exact line."""
    with pytest.raises(ConfigError) as info:
        FeaturesStage().check_settings(FeaturesConfig(**kw), RANDOM_INPUT)
    assert str(info.value) == message


def test_check_accepts_ones_and_checks_the_cmap():
    """1 is allowed for both limits; an unknown colormap names the key."""
    FeaturesStage().check_settings(FeaturesConfig(max_channels=1, tile_px=1), RANDOM_INPUT)
    with pytest.raises(ConfigError, match="features.cmap"):
        FeaturesStage().check_settings(FeaturesConfig(cmap="nope_cmap"), RANDOM_INPUT)


def test_plan_capture_kinds_and_stems(ctx):
    """output / input / both: the targets, their shapes and file stems, in layer order."""
    out = plan(ctx, FeaturesConfig(layers=["c2", "c1"]))
    assert [(t.layer, t.kind, t.shape, t.stem, t.label) for t in out] == [
        ("c2", "output", (2, 6, 8, 8), "c2", "c2"),
        ("c1", "output", (2, 4, 8, 8), "c1", "c1"),
    ]
    out = plan(ctx, FeaturesConfig(layers=["c1"], capture=Capture.input))
    assert [(t.layer, t.kind, t.shape, t.stem, t.label) for t in out] == [
        ("c1", "input", (2, 3, 8, 8), "c1_input", "c1 (input)")
    ]
    out = plan(ctx, FeaturesConfig(layers=["c1", "c2"], capture=Capture.both))
    assert [(t.layer, t.kind, t.stem) for t in out] == [
        ("c1", "output", "c1"),
        ("c1", "input", "c1_input"),
        ("c2", "output", "c2"),
        ("c2", "input", "c2_input"),
    ]
    assert out[3].layout.channels == 4 and out[2].layout.channels == 6
    assert ctx.warnings == []


def test_plan_errors_and_shared_warning(tmp_path):
    """Unknown layers are prefixed with features.layers; a shared module is warned about."""
    ctx = hand_context(Shared(), tmp_path / "run", (1, 3, 8, 8))
    with pytest.raises(ConfigError) as info:
        plan(ctx, FeaturesConfig(layers=["fc"]))
    assert str(info.value).startswith("features.layers: ")
    assert "fc" in str(info.value)
    out = plan(ctx, FeaturesConfig(layers=["act"]))
    assert [(t.layer, t.kind) for t in out] == [("act", "output")]
    assert ctx.warnings == ["features: act runs 2 times per forward; its first call is captured"]


@pytest.mark.parametrize("capture", [Capture.input, Capture.output])
def test_run_captures_one_kind(ctx, capture):
    """capture=input (or output) alone: the stage runs and saves that tensor (input used to fail
    with "produced no tensor": the hook's calls were taken for outputs)."""
    res = run(ctx, layers=["c2"], capture=capture, max_channels=2)
    x = ctx.inputs.dataset.x
    want = direct(ctx.model, x)["act" if capture is Capture.input else "c2"]
    key, stem = ("c2 (input)", "c2_input") if capture is Capture.input else ("c2", "c2")
    assert list(res.data["layers"]) == [key] and res.data["layers"][key]["capture"] == capture.value
    saved = np.load(ctx.output_dir / "features" / f"{stem}.npy")
    np.testing.assert_allclose(saved, want.numpy(), rtol=1e-5, atol=1e-6)
    assert sorted(res.data["layers"][key]["grids"]) == ["img0", "img1", "img2"]


def test_run_stats_npy_grids_and_record(ctx, tmp_path):
    """Output and input captured over three images in two batches: every number and file."""
    res = run(
        ctx,
        layers=["c1", "c2"],
        capture=Capture.both,
        max_channels=3,
        select=ChannelSelect.top,
        normalize=FeatureNorm.layer,
        tile_px=16,
        cmap="gray",
    )
    x = ctx.inputs.dataset.x
    ref = direct(ctx.model, x)
    ref_in = {"c1": x, "c2": ref["act"]}
    doc = json.loads((ctx.output_dir / "features" / "stats.json").read_text())
    assert doc == res.data
    assert (doc["cmap"], doc["normalize"], doc["select"], doc["capture"]) == ("gray", "layer", "top", "both")
    assert doc["sources"] == {"img0": "randn", "img1": "randn", "img2": "randn"}
    assert list(doc["layers"]) == ["c1", "c1 (input)", "c2", "c2 (input)"]
    from vizpipe.pipeline.render import colormap_levels

    levels = colormap_levels("gray")
    for key, arr in [
        ("c1", ref["c1"]),
        ("c1 (input)", ref_in["c1"]),
        ("c2", ref["c2"]),
        ("c2 (input)", ref_in["c2"]),
    ]:
        entry = doc["layers"][key]
        a = arr.numpy().astype(np.float64)
        stem = key.replace(" (input)", "_input")
        c = a.shape[1]
        first_mean = a[:2].mean(axis=(0, 2, 3))
        top = np.argsort(-first_mean, kind="stable")[:3].tolist()
        assert entry["capture"] == ("input" if "input" in key else "output")
        assert entry["shape"] == [3, c, 8, 8] and entry["maps"] == [3, c, 8, 8]
        assert entry["layout"] == "nchw" and entry["reshape"] == f"N×{c}×8×8 maps as they are"
        assert entry["npy"] == f"features/{stem}.npy"
        assert entry["channels_drawn"] == top
        assert entry["grids"] == {f"img{i}": f"features/{stem}__img{i}.png" for i in range(3)}
        assert entry["mean"] == pytest.approx(a.mean(), rel=1e-6, abs=1e-9)
        assert entry["max"] == pytest.approx(a.max(), rel=1e-6)
        assert entry["zero_fraction"] == pytest.approx((a == 0).mean())
        assert [ch["index"] for ch in entry["channels"]] == list(range(c))
        for ch in entry["channels"]:
            k = ch["index"]
            assert ch["mean"] == pytest.approx(a[:, k].mean(), rel=1e-6, abs=1e-9)
            assert ch["max"] == pytest.approx(a[:, k].max(), rel=1e-6)
            assert ch["zero_fraction"] == pytest.approx((a[:, k] == 0).mean())
        saved = np.load(ctx.output_dir / entry["npy"])
        assert saved.dtype == np.float32 and saved.shape == (3, c, 8, 8)
        np.testing.assert_allclose(saved, a, rtol=1e-5, atol=1e-6)
        for i in range(3):
            png = np.asarray(Image.open(ctx.output_dir / entry["grids"][f"img{i}"]))
            maps = a[i].astype(np.float32)
            want = feature_grid(
                maps[top], levels, normalize="layer", layer_range=(maps.min(), maps.max()), tile_px=16
            )
            assert png.shape == want.shape == (2 + 2 * (16 + 2), 2 + 2 * (16 + 2))
            np.testing.assert_array_equal(png, want)
    # zeros: the input of c2 is a ReLU output, so it has exact zeros
    assert doc["layers"]["c2 (input)"]["zero_fraction"] > 0
    # the record
    assert res.stage == "features"
    assert res.summary == ("4 layer(s) × 3 image(s); colormap gray, normalised per layer, channels: top")
    table = res.tables[0]
    assert table.columns == [
        "Layer",
        "Shape",
        "Reshape",
        "Channels drawn",
        "Mean",
        "Max",
        "Zeros",
        "Activations",
    ]
    assert table.links == [7] and table.code == [0]
    e = doc["layers"]["c1"]
    assert table.rows[0] == [
        "c1",
        "3×4×8×8",
        "N×4×8×8 maps as they are",
        3,
        e["mean"],
        e["max"],
        f"{e['zero_fraction'] * 100:.1f}%",
        "features/c1.npy",
    ]
    assert [r[0] for r in table.rows] == ["c1", "c1 (input)", "c2", "c2 (input)"]
    assert res.files == [
        "features/c1.npy",
        "features/c1_input.npy",
        "features/c2.npy",
        "features/c2_input.npy",
        "features/stats.json",
    ]
    assert [p.tag for p in res.pictures[:4]] == [
        "features/c1/img0",
        "features/c1/img1",
        "features/c1/img2",
        "features/c1_input/img0",
    ]
    assert res.pictures[0].caption == "c1  image img0" and res.pictures[3].caption == "c1 (input)  image img0"
    assert [p.preview for p in res.pictures] == [True] + [False] * 11
    assert [s.name for s in res.scalars[:3]] == [
        "activations/c1/mean",
        "activations/c1/max",
        "activations/c1/zero_fraction",
    ]
    assert [s.value for s in res.scalars[:3]] == [e["mean"], e["max"], e["zero_fraction"]]
    assert [h.name for h in res.histograms] == [
        "activations/c1/channel_mean",
        "activations/c1_input/channel_mean",
        "activations/c2/channel_mean",
        "activations/c2_input/channel_mean",
    ]
    assert res.histograms[0].values == pytest.approx([ch["mean"] for ch in e["channels"]])
    assert ctx.warnings == []


def test_run_first_channels_channel_norm_no_npy(ctx):
    """select=first draws channels 0..k-1; save_npy=false writes no arrays; per-channel scaling."""
    res = run(ctx, layers=["c2"], max_channels=2, save=["grid"], tile_px=8)
    entry = res.data["layers"]["c2"]
    assert entry["channels_drawn"] == [0, 1] and entry["npy"] is None
    assert not list((ctx.output_dir / "features").glob("*.npy"))
    assert res.files == ["features/stats.json"] and res.tables[0].rows[0][7] is None
    a = direct(ctx.model, ctx.inputs.dataset.x)["c2"].numpy()
    from vizpipe.pipeline.render import colormap_levels

    png = np.asarray(Image.open(ctx.output_dir / entry["grids"]["img1"]))
    np.testing.assert_array_equal(png, feature_grid(a[1, :2], colormap_levels("viridis"), tile_px=8))
    res_all = run(
        ctx.__class__(**{**ctx.__dict__, "_claimed": set(), "warnings": []}), layers=["c1"], max_channels=99
    )
    assert res_all.data["layers"]["c1"]["channels_drawn"] == [0, 1, 2, 3]


def test_float16_npy_and_overflow_warning(tmp_path):
    """dtype=float16 saves half precision; values beyond its range warn with the file named."""
    model = TinyCNN()
    with torch.no_grad():
        model.c1.weight.fill_(0.0)
        model.c1.bias.copy_(torch.tensor([1e5, -2e5, 1.0, 0.0]))
    ctx = hand_context(model, tmp_path / "run", (1, 3, 4, 4))
    res = run(ctx, layers=["c1"], dtype=NpyDtype.float16)
    saved = np.load(ctx.output_dir / "features" / "c1.npy")
    assert saved.dtype == np.float16
    assert np.isinf(saved[0, 0]).all() and np.isinf(saved[0, 1]).all() and (saved[0, 2] == 1).all()
    assert ctx.warnings == [
        "features: c1 has values beyond float16's range (|x| up to 2e+05); "
        "they are saved as inf in features/c1.npy"
    ]
    entry = res.data["layers"]["c1"]
    assert entry["max"] == 1e5 and entry["zero_fraction"] == 0.25
    assert [ch["zero_fraction"] for ch in entry["channels"]] == [0.0, 0.0, 0.0, 1.0]
    ctx2 = hand_context(model, tmp_path / "run2", (1, 3, 4, 4))
    run(ctx2, layers=["c1"])  # float32: no warning
    assert ctx2.warnings == []


def test_choose_channels():
    """first: 0..k-1; top: highest mean first, ties in index order, NaN last, k capped at C."""
    maps = np.zeros((1, 4, 1, 1))
    maps[0, :, 0, 0] = [1.0, np.nan, 3.0, 1.0]
    s = FeaturesConfig(max_channels=3)
    assert choose_channels(maps, s) == [0, 1, 2]
    s.select = ChannelSelect.top
    assert choose_channels(maps, s) == [2, 0, 3]
    s.max_channels = 10
    assert choose_channels(maps, s) == [2, 0, 3, 1]
    s.max_channels = 1
    assert choose_channels(maps, s) == [2]


def test_feature_grid_exact_indices():
    """Channel scaling maps each tile min..max; layer scaling uses one range; tiles laid ceil(sqrt k)."""
    maps = np.array([[[0.0, 1.0], [2.0, 3.0]], [[10.0, 10.0], [10.0, 14.0]]], dtype=np.float32)
    grid = feature_grid(maps, 4, tile_px=2)
    # 2 tiles -> 2 columns; factor 1; pad 2 around: 2 + 2 + 2 + 2 + 2 = 10 wide, 2 + 2 + 2 = 6 high
    assert grid.shape == (6, 10)
    np.testing.assert_array_equal(grid[2:4, 2:4], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(grid[2:4, 6:8], [[0, 0], [0, 3]])
    layer = feature_grid(maps, 4, normalize="layer", tile_px=2)
    np.testing.assert_array_equal(layer[2:4, 2:4], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(layer[2:4, 6:8], [[2, 2], [2, 3]])
    given = feature_grid(maps, 4, normalize="layer", layer_range=(0.0, 28.0), tile_px=4)
    assert given.shape == (2 + 4 + 2, 2 + 4 + 2 + 4 + 2)
    np.testing.assert_array_equal(given[2:6:2, 8:12:2], [[1, 1], [1, 2]])
    three = feature_grid(np.zeros((3, 1, 1), np.float32), 4, tile_px=1)
    assert three.shape == (2 + 1 + 2 + 1 + 2, 2 + 1 + 2 + 1 + 2)


def test_accumulator_statistics_and_nan():
    """Sums, maxima, zeros and counts add up over batches; a NaN peak sticks; finite peak ignores inf."""
    from vizpipe.stages.features import Target

    t = Target("l", "output", (1, 2, 1, 2), None)
    acc = Accumulator(t, 2)
    acc.add(np.array([[[[1.0, 0.0]], [[-2.0, -1.0]]]]))
    acc.add(np.array([[[[3.0, 0.0]], [[np.inf, -5.0]]]]))
    assert acc.sums.tolist() == [4.0, np.inf] and acc.maxs.tolist() == [3.0, np.inf]
    assert acc.zeros.tolist() == [2, 0] and acc.count == 4
    assert acc.peak == np.inf and acc.finite_peak == 5.0 and acc.total == np.inf
    acc.add(np.array([[[[np.nan, 0.0]], [[1.0, 1.0]]]]))
    assert np.isnan(acc.peak)
    acc.add(np.array([[[[9.0, 0.0]], [[1.0, 1.0]]]]))  # a later finite batch keeps the NaN
    assert np.isnan(acc.peak) and acc.count == 8 and acc.zeros.tolist() == [4, 0]
    assert acc.maxs.dtype == np.float64 and acc.sums.dtype == np.float64
    small = Accumulator(t, 2)
    small.add(np.array([[[[1.0, 2.0]], [[3.0, 4.0]]]], dtype=np.float16))
    assert small.maxs.dtype == np.float64 and small.total == 10.0 and small.peak == 4.0


def test_plan_input_capture_needs_a_spatial_input(ctx):
    """capture=input: fc's input (N×6) is not spatial; pool's (N×6×8×8) is; both keeps what exists."""
    with pytest.raises(ConfigError) as info:
        plan(ctx, FeaturesConfig(layers=["fc"], capture=Capture.input))
    assert str(info.value).startswith("features.layers: ")
    out = plan(ctx, FeaturesConfig(layers=["pool"], capture=Capture.input))
    assert [(t.layer, t.kind, t.shape) for t in out] == [("pool", "input", (2, 6, 8, 8))]
    out = plan(ctx, FeaturesConfig(layers=["pool"], capture=Capture.both))
    assert [(t.layer, t.kind, t.shape) for t in out] == [
        ("pool", "output", (2, 6, 1, 1)),
        ("pool", "input", (2, 6, 8, 8)),
    ]
    with pytest.raises(ConfigError):
        plan(ctx, FeaturesConfig(layers=["fc"], capture=Capture.both))


def test_plan_blocks_are_the_configured_blocks(ctx):
    """features.layers=[blocks] follows model.blocks."""
    ctx.blocks_config = "c2"
    assert [t.layer for t in plan(ctx, FeaturesConfig(layers=["blocks"]))] == ["c2"]
    ctx.blocks_config, ctx._blocks = "act,c1", None
    assert [t.layer for t in plan(ctx, FeaturesConfig(layers=[" blocks "]))] == ["act", "c1"]
