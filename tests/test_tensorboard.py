"""TensorBoard stage: event files read back with TensorBoard's own EventAccumulator, both backends.

The kernels/features/cam results here are hand-made (real PNGs drawn with PIL, the documented
data contracts), so these tests pin what this stage does with them; the end-to-end test at the
bottom runs the real stages before it.

TensorBoard stage on a tiny CNN: what collect gathers per option, and the event file read back."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import RANDOM_INPUT, hand_context
from omegaconf import OmegaConf
from PIL import Image
from test_cam import TinyCNN
from torch import nn
from vizpipe.pipeline.context import RunContext
from vizpipe.pipeline.hooks import hook_count
from vizpipe.pipeline.stage import Histogram, Picture, Scalar, StageResult, Text
from vizpipe.stages.tensorboard import TBBackend, TensorboardConfig, TensorBoardStage, backend_name
from vizpipe.stages.tensorboard.collect import (
    Collected,
    capture_block_stats,
    collect,
    hparams_row,
    resolved_config_markdown,
    safe_tags,
    top5_markdown,
)
from vizpipe.stages.tensorboard.write import SUFFIX, histogram_raw, render

# ---- TensorBoard stage: event files read back with TensorBoard's own EventAccumulator, both
# backends.
BACKENDS = [b.value for b in TBBackend]
SMALL = ["input=random", "input.shape=[2,3,64,64]"]


# --------------------------------------------------------------------------- helpers


def read_events(logdir: Path) -> Any:
    """TensorBoard's own reader, keeping every event."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(
        str(logdir), size_guidance={"images": 0, "histograms": 0, "scalars": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def text_of(acc: Any, tag: str) -> str:
    return acc.Tensors(tag)[0].tensor_proto.string_val[0].decode("utf-8")


def png_pixels(acc: Any, tag: str) -> np.ndarray:
    ev = acc.Images(tag)[0]
    with Image.open(io.BytesIO(ev.encoded_image_string)) as im:
        return np.asarray(im.convert("RGB"))


def hparams_of(acc: Any) -> dict[str, str]:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    ssi = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    return {k: v.string_value for k, v in ssi.session_start_info.hparams.items()}


def draw_png(run: Path, rel: str, size: tuple[int, int], seed: int) -> np.ndarray:
    """A random RGB picture of ``size`` (W, H) at ``run/rel``; returns its pixels."""
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    (run / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(px).save(run / rel)
    return px


def fake_results(ctx: RunContext) -> tuple[dict[str, StageResult], dict[str, np.ndarray]]:
    """Earlier stages' records (the stage contract), pointing at real PNGs drawn here."""
    run, (n0, n1) = ctx.output_dir, ctx.inputs.names
    pngs = {
        "kernels/conv1": draw_png(run, "kernels/conv1.png", (40, 30), 1),
        "kernels/conv1/rgb": draw_png(run, "kernels/conv1_rgb.png", (20, 10), 2),
        "kernels/layer1.0.conv1": draw_png(run, "kernels/layer1.0.conv1.png", (50, 60), 3),
        f"features/layer1/{n0}": draw_png(run, f"features/layer1__{n0}.png", (33, 17), 4),
        f"features/layer1/{n1}": draw_png(run, f"features/layer1__{n1}.png", (33, 17), 5),
        f"cam/gradcam/layer4/7/{n0}": draw_png(run, f"cam/{n0}.png", (64, 64), 6),
        f"cam/gradcam/layer4/281_tabby_cat/{n1}": draw_png(run, f"cam/{n1}.png", (64, 64), 7),
    }
    paths = {
        "kernels/conv1": "kernels/conv1.png",
        "kernels/conv1/rgb": "kernels/conv1_rgb.png",
        "kernels/layer1.0.conv1": "kernels/layer1.0.conv1.png",
        f"features/layer1/{n0}": f"features/layer1__{n0}.png",
        f"features/layer1/{n1}": f"features/layer1__{n1}.png",
        f"cam/gradcam/layer4/7/{n0}": f"cam/{n0}.png",
        f"cam/gradcam/layer4/281_tabby_cat/{n1}": f"cam/{n1}.png",
    }

    def pictures(prefix: str) -> list[Picture]:
        return [Picture(path, tag=tag) for tag, path in paths.items() if tag.startswith(prefix)]

    results = {
        "summary": StageResult(
            "summary",
            texts=[Text("torchinfo", "TORCHINFO TABLE\nTotal params: 123", tag="summary/torchinfo")],
        ),
        "kernels": StageResult("kernels", pictures=pictures("kernels/")),
        "features": StageResult(
            "features",
            pictures=pictures("features/"),
            scalars=[
                Scalar("activations/layer1/mean", 0.5),
                Scalar("activations/layer1/max", 3.0),
                Scalar("activations/layer1/zero_fraction", 0.25),
            ],
            histograms=[Histogram("activations/layer1/channel_mean", [0.1 * i for i in range(4)])],
        ),
        "cam": StageResult(
            "cam",
            params={"method": "gradcam", "layer": "layer4", "class": "top1"},
            pictures=pictures("cam/"),
            scalars=[Scalar("cam/score", 0.4, key=True), Scalar("cam/confidence_change", -0.2, key=True)],
        ),
    }
    return results, pngs


def write_manifest(compose: Any, run: Path, overrides: list[str], backend: str) -> None:
    """What the runner writes before any stage: the resolved config and the overrides."""
    cfg = compose([*overrides, f"tensorboard.backend={backend}"])
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    run.mkdir(parents=True, exist_ok=True)
    (run / "manifest.json").write_text(json.dumps({"config": resolved, "overrides": overrides}))


def run_stage(ctx: RunContext, **settings: Any) -> StageResult:
    stage, cfg = TensorBoardStage(), TensorboardConfig(**settings)
    stage.check_settings(cfg, RANDOM_INPUT)
    stage.check_model(ctx, cfg)
    ctx._claimed.clear()  # each call here is a new attempt of the stage in the same folder
    return stage.run(ctx, cfg)


# --------------------------------------------------------------------------- tests


def test_unknown_backend_is_rejected_at_the_boundary(make_ctx, compose) -> None:
    ctx = make_ctx(["model=seed_net", "input=random", "input.shape=[1,3,32,32]"])
    from vizpipe.pipeline.config_errors import translate

    with pytest.raises(Exception, match="tensorboard.backend") as err:
        compose(["tensorboard.backend=tf"])  # the schema's enum rejects it at composition
    msg = str(translate(err.value, ["tensorboard.backend=tf"]))
    assert "'tf'" in msg and "tensorboardX" in msg and "torch" in msg and "\n" not in msg
    assert ctx is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_files_hold_every_kind(make_ctx, compose, tmp_path: Path, backend: str) -> None:
    """Graph, images, histograms, scalars, text and hparams, read back by EventAccumulator."""
    overrides = ["model=resnet18", *SMALL]
    run = tmp_path / "run"
    ctx = make_ctx(overrides, out=run)
    write_manifest(compose, run, overrides, backend)
    ctx.results, pngs = fake_results(ctx)
    model = ctx.model
    model.fc.train()  # a mixed-mode model: the tracer's blanket eval()/train() must be undone
    modes = {n: m.training for n, m in model.named_modules()}
    hooks = hook_count(model)
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}

    res = run_stage(ctx, backend=backend)

    # one event file, named with our suffix, and no extra (hparams) sub-run
    logdir = run / "tensorboard"
    assert [p.name for p in logdir.iterdir()] == [Path(res.files[0]).name]
    assert res.files[0].endswith(SUFFIX) and res.data["graph_error"] is None and not ctx.warnings
    # the model as found
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert hook_count(model) == hooks
    assert all(torch.equal(p, params_before[n]) for n, p in model.named_parameters())

    acc = read_events(logdir)
    tags = acc.Tags()
    n0, n1 = ctx.inputs.names
    # ---- images: exact tags, and the pixels of every picture made earlier in the run
    assert set(tags["images"]) == {"input/batch", "input/grid", *pngs}
    assert set(res.data["tags"]["images"]) == set(tags["images"])
    for tag, px in pngs.items():
        assert np.array_equal(png_pixels(acc, tag), px), tag
    rgb = ctx.inputs.first().rgb  # (2, 64, 64, 3) un-normalised
    batch = png_pixels(acc, "input/batch")  # the library tiles N images side by side
    assert batch.shape == (64, 128, 3)
    assert np.abs(batch[:, 64:].astype(int) - np.round(rgb[1] * 255)).max() <= 1
    grid = png_pixels(acc, "input/grid")  # torchvision make_grid, padding 2
    assert grid.shape == (64 + 4, 2 * (64 + 2) + 2, 3)
    assert np.abs(grid[2:66, 2:66].astype(int) - np.round(rgb[0] * 255)).max() <= 1
    # ---- histograms: every parameter, with its real values
    expected_h = {"activations/layer1/channel_mean"}
    plural = {"weight": "weights", "bias": "biases"}
    for name, _ in model.named_parameters():
        module, _, pname = name.rpartition(".")
        expected_h.add(f"{plural[pname]}/{module}")
    assert set(tags["histograms"]) == expected_h
    h = acc.Histograms("weights/conv1")[0].histogram_value
    w = model.conv1.weight.detach().double()
    assert h.num == w.numel() and h.min == pytest.approx(float(w.min()))
    assert h.sum == pytest.approx(float(w.sum()), abs=1e-4)
    assert h.sum_squares == pytest.approx(float((w * w).sum()), rel=1e-6)
    assert sum(h.bucket) == h.num and h.bucket_limit[-1] == pytest.approx(float(w.max()))
    bn = acc.Histograms("weights/bn1")[0].histogram_value  # constant 1.0 at init
    assert (bn.num, bn.min, bn.max, sum(bn.bucket)) == (64, 1.0, 1.0, 64)
    assert list(acc.Histograms("activations/layer1/channel_mean")[0].histogram_value.bucket_limit)[-1] == (
        pytest.approx(0.3)
    )
    # ---- scalars: the earlier records' values at their steps, the hparams metrics
    assert {acc.Scalars(t)[0].step for t in tags["scalars"]} == {0}
    scalars = {t: acc.Scalars(t)[0].value for t in tags["scalars"]}
    assert scalars == pytest.approx(
        {
            "activations/layer1/mean": 0.5,
            "activations/layer1/max": 3.0,
            "activations/layer1/zero_fraction": 0.25,
            "cam/score": 0.4,
            "cam/confidence_change": -0.2,
            "hparams/top1_prob": float(np.mean([r[0]["prob"] for r in ctx.top_k(1)])),
            "hparams/cam_score": 0.4,
            "hparams/cam_confidence_change": -0.2,
        }
    )
    # ---- text: top-5, torchinfo table, resolved config
    assert (
        set(tags["tensors"])
        == {
            "predictions/top5/text_summary",
            "summary/torchinfo/text_summary",
            "config/resolved/text_summary",
        }
        == set(res.data["tags"]["text"])
    )
    top5 = text_of(acc, "predictions/top5/text_summary")
    for name, row in zip(ctx.inputs.names, ctx.top_k(5), strict=True):
        assert f"**{name}**" in top5 and f"| 1 | {row[0]['class']} |" in top5
        assert f"| 5 | {row[4]['class']} |" in top5
    assert "Total params: 123" in text_of(acc, "summary/torchinfo/text_summary")
    config = text_of(acc, "config/resolved/text_summary")
    assert f"backend: {backend}" in config and "name: resnet18" in config
    assert "`input=random`" in config  # the overrides head the config
    # ---- graph: traced modules appear in the GraphDef; no per-library placeholder profile tag
    assert tags["graph"] and tags["run_metadata"] == []
    nodes = " ".join(n.name for n in acc.Graph().node)
    for child in ("conv1", "layer1", "layer4", "fc"):
        assert f"[{child}]" in nodes
    # ---- hparams row
    assert hparams_of(acc) == {"model": "resnet18", "layer": "layer4", "class": "top1", "method": "gradcam"}
    assert res.data["skipped"] == {} and res.data["activations_from"] == "records"


def test_both_backends_write_the_same_tags(make_ctx, tmp_path: Path) -> None:
    """No stage results: the stage's own fallback (block stats) in both libraries."""
    seen = {}
    for backend in BACKENDS:
        ctx = make_ctx(["model=seed_net", "input=random", "input.shape=[1,3,32,32]"], out=tmp_path / backend)
        res = run_stage(ctx, backend=backend)
        tags = read_events(tmp_path / backend / "tensorboard").Tags()
        seen[backend] = {k: sorted(v) if isinstance(v, list) else v for k, v in tags.items()}
        assert res.data["skipped"].keys() == {"pictures", "config/resolved"}
        assert res.data["activations_from"] == "tensorboard"
        assert "activations/conv2/zero_fraction" in seen[backend]["scalars"]
        assert "summary/torchinfo/text_summary" not in seen[backend]["tensors"]  # no summary stage ran
        assert [s for s in seen[backend]["scalars"] if s.startswith("hparams/")] == ["hparams/top1_prob"]
        assert hparams_of(read_events(tmp_path / backend / "tensorboard")) == {"model": "seed_net"}
    assert seen["tensorboardX"] == seen["torch"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_records_are_logged_at_their_own_steps_with_their_values(
    make_ctx, tmp_path: Path, backend: str
) -> None:
    """A record's ``step`` is the event's step (a CAM-over-time frame, a per-epoch number)."""
    run = tmp_path / "run"
    ctx = make_ctx(["model=seed_net", "input=random", "input.shape=[1,3,32,32]"], out=run)
    frames = {step: draw_png(run, f"train/frame_{step}.png", (20, 12), step) for step in (0, 3)}
    ctx.results = {
        "train": StageResult(
            "train",
            pictures=[Picture(f"train/frame_{step}.png", tag=f"frames/{step}", step=step) for step in frames],
            scalars=[Scalar("activations/x/mean", 1.5, step=7), Scalar("epoch/accuracy", 0.25, step=2)],
            histograms=[Histogram("activations/x/channel_mean", [1.0, 2.0, 4.0], step=5)],
        )
    }
    off = dict(graph=False, images=False, histograms=False, text=False, hparams=False)
    run_stage(ctx, backend=backend, **off)
    acc = read_events(run / "tensorboard")
    assert [(e.step, e.value) for e in acc.Scalars("activations/x/mean")] == [(7, 1.5)]
    assert [(e.step, e.value) for e in acc.Scalars("epoch/accuracy")] == [(2, 0.25)]
    ((event),) = acc.Histograms("activations/x/channel_mean")
    h = event.histogram_value
    assert (event.step, h.num, h.min, h.max, h.sum, h.sum_squares) == (5, 3, 1.0, 4.0, 7.0, 21.0)
    for step, px in frames.items():
        assert [e.step for e in acc.Images(f"frames/{step}")] == [step]
        assert np.array_equal(png_pixels(acc, f"frames/{step}"), px)


def test_block_statistics_are_each_blocks_own_activations(make_ctx, tmp_path: Path) -> None:
    """Without activation records the stage logs each block's mean, max, zero fraction and the
    histogram of its per-channel means, as measured here by a hook on the block itself."""
    ctx = make_ctx(["model=seed_net", "input=random", "input.shape=[2,3,32,32]"], out=tmp_path / "run")
    seen: dict[str, torch.Tensor] = {}
    handles = [
        ctx.model.get_submodule(b).register_forward_hook(
            lambda m, a, o, b=b: seen.setdefault(b, o.detach().clone())
        )
        for b in ctx.blocks()
    ]
    with torch.no_grad():
        ctx.model(ctx.inputs.first().tensor)
    for h in handles:
        h.remove()
    run_stage(ctx, graph=False, images=False, histograms=False, text=False, hparams=False)
    acc = read_events(tmp_path / "run" / "tensorboard")
    assert sorted(seen) == ["conv1", "conv2"]
    for block, out in seen.items():  # (N, C, h, w)
        scalars = {s: acc.Scalars(f"activations/{block}/{s}")[0] for s in ("mean", "max", "zero_fraction")}
        assert {s: e.step for s, e in scalars.items()} == dict.fromkeys(scalars, 0)
        assert scalars["mean"].value == pytest.approx(float(out.mean()), rel=1e-5)
        assert scalars["max"].value == pytest.approx(float(out.max()), rel=1e-6)
        assert scalars["zero_fraction"].value == pytest.approx(float((out == 0).float().mean()), abs=1e-7)
        per_channel = out.transpose(0, 1).flatten(1).mean(1).double()  # (C,)
        h = acc.Histograms(f"activations/{block}/channel_mean")[0].histogram_value
        assert (h.num, h.min, h.max) == (
            out.shape[1],
            pytest.approx(float(per_channel.min()), rel=1e-5),
            pytest.approx(float(per_channel.max()), rel=1e-5),
        )
        assert h.sum == pytest.approx(float(per_channel.sum()), rel=1e-5, abs=1e-6)
        assert h.sum_squares == pytest.approx(float((per_channel**2).sum()), rel=1e-5)


class DictOut(nn.Module):
    """Returns ``{"out": logits}`` like torchvision's segmentation models: strict tracing fails."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) -> {"out": (N, 5)}."""
        return {"out": self.fc(self.drop(torch.relu(self.conv(x)).mean((2, 3))))}


def hand_ctx(model: nn.Module, out: Path, n: int = 2, hw: int = 24) -> RunContext:
    from conftest import hand_context

    modes = [(m, m.training) for m in model.modules()]
    ctx = hand_context(model, out, (n, 3, hw, hw))
    for m, training in modes:  # keep the test's mixed modes
        m.training = training
    ctx.model_name = "dict_out"
    return ctx


def test_histogram_raw_is_exact_and_skips_non_finite_values() -> None:
    x = torch.tensor([1.0, 2.0, float("nan"), 4.0, float("inf"), -1.0])
    h = histogram_raw(x, bins=5)
    assert (h["num"], h["min"], h["max"], h["sum"], h["sum_squares"]) == (4, -1.0, 4.0, 6.0, 22.0)
    assert h["bucket_limits"] == pytest.approx([-1, 0, 1, 2, 3, 4])
    assert h["bucket_counts"] == [0, 1, 0, 1, 1, 1]  # an empty bucket left of the minimum
    assert histogram_raw(torch.full((3,), float("nan"))) is None
    const = histogram_raw(torch.ones(7, dtype=torch.float16))
    assert const["num"] == 7 and sum(const["bucket_counts"]) == 7
    assert const["bucket_limits"][0] < 1.0 < const["bucket_limits"][1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_untraceable_model_only_warns(tmp_path: Path, backend: str) -> None:
    model = DictOut().eval()
    model.drop.train()  # mixed modes survive the failed trace too
    with torch.no_grad():
        model.conv.weight[0, 0, 0, 0] = float("nan")  # non-finite weights stay out of histograms
    ctx = hand_ctx(model, tmp_path / "run")
    res = run_stage(ctx, backend=backend)
    assert "dict" in res.data["graph_error"] and "graph no" in res.summary
    assert any("no model graph" in w and "dict_out" in w for w in ctx.warnings)
    assert model.drop.training and not model.training and not model.conv.training
    assert hook_count(model) == 0
    tags = read_events(tmp_path / "run" / "tensorboard").Tags()
    assert not tags["graph"]
    assert {"input/batch", "input/grid"} <= set(tags["images"])
    assert {"weights/conv", "biases/fc"} <= set(tags["histograms"])
    acc = read_events(tmp_path / "run" / "tensorboard")
    assert acc.Histograms("weights/conv")[0].histogram_value.num == model.conv.weight.numel() - 1
    assert "predictions/top5/text_summary" in tags["tensors"]
    assert hparams_of(acc)["model"] == "dict_out"  # NaN logits: a row without metrics


def test_switches_missing_pictures_and_a_second_attempt(make_ctx, tmp_path: Path) -> None:
    """Each kind can be switched off; a missing PNG warns; a rerun replaces its own file only."""
    run = tmp_path / "run"
    ctx = make_ctx(["model=resnet18", *SMALL], out=run)
    ctx.results, pngs = fake_results(ctx)
    (run / "kernels/conv1_rgb.png").unlink()
    other = run / "tensorboard" / "events.out.tfevents.1.host.train"  # e.g. a train stage's file
    other.parent.mkdir(parents=True)
    other.write_bytes(b"")
    off = dict(graph=False, histograms=False, activations=False, text=False, hparams=False)
    run_stage(ctx, **off)
    res = run_stage(ctx, **off)  # same folder again: the first attempt's file is replaced
    assert any("kernels/conv1_rgb.png is missing" in w for w in ctx.warnings)
    files = sorted(p.name for p in (run / "tensorboard").iterdir())
    assert len(files) == 2 and other.name in files and "graph no" in res.summary
    tags = read_events(run / "tensorboard").Tags()
    assert set(tags["images"]) == {
        "input/batch",
        "input/grid",
        *[t for t in pngs if t != "kernels/conv1/rgb"],
    }
    assert not tags["histograms"] and not tags["scalars"] and not tags["tensors"]
    assert not tags["graph"]


@pytest.mark.slow
def test_real_stages_feed_tensorboard(compose, tmp_path: Path) -> None:
    """End to end through the runner: tags come from what the real stages wrote in this run."""
    from vizpipe.pipeline.runner import run_pipeline

    cfg = compose(
        [
            "model=resnet18",
            *SMALL,
            "stages=[summary,kernels,features,cam,tensorboard]",
            "kernels.layers=[conv1,layer1.0.conv1]",
            "features.layers=[layer1,layer4]",
        ]
    )
    result = run_pipeline(cfg, tmp_path / "run")
    manifest = json.loads(result.manifest_path.read_text())
    assert result.ok, result.error
    tb = next(s for s in manifest["stages"] if s["name"] == "tensorboard")
    assert any(a["path"].startswith("tensorboard/events.out.tfevents") for a in tb["artifacts"])
    acc = read_events(tmp_path / "run" / "tensorboard")
    tags = acc.Tags()
    images = set(tags["images"])
    names = cfg.input.shape[0]
    assert {"kernels/conv1", "kernels/conv1/rgb", "kernels/layer1.0.conv1"} <= images
    assert sum(t.startswith("features/layer1/") for t in images) == names
    assert sum(t.startswith("features/layer4/") for t in images) == names
    cam = [t for t in images if t.startswith("cam/gradcam/layer4/")]
    assert len(cam) == names
    for layer in ("layer1", "layer4"):
        assert {f"activations/{layer}/{s}" for s in ("mean", "max", "zero_fraction")} <= set(tags["scalars"])
        assert f"activations/{layer}/channel_mean" in tags["histograms"]
    assert {"hparams/top1_prob", "hparams/cam_score", "cam/score"} <= set(tags["scalars"])
    assert tags["graph"] and len(tags["tensors"]) == 3
    hp = hparams_of(acc)
    assert hp["model"] == "resnet18" and hp["method"] == "gradcam" and hp["layer"] == "layer4"
    assert "Total params" in text_of(acc, "summary/torchinfo/text_summary")


# ---- TensorBoard stage on a tiny CNN: what collect gathers per option, and the event file read
# back.
OFF = {k: False for k in ("graph", "images", "pictures", "histograms", "activations", "text", "hparams")}


def settings(**on) -> TensorboardConfig:
    """Every option off except those given."""
    return TensorboardConfig(**{**OFF, **on})


@pytest.fixture
def ctx(tmp_path):
    return hand_context(TinyCNN(), tmp_path / "run", (2, 3, 8, 8))


def read_events_tensorboard(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(
        str(logdir), size_guidance={"images": 0, "histograms": 0, "scalars": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def test_everything_off_collects_nothing(ctx):
    """All options off: an empty Collected; check accepts the installed backends."""
    assert collect(ctx, settings()) == Collected()
    assert backend_name(TensorboardConfig()) == "tensorboardX"
    assert backend_name(settings(backend="torch")) == "torch"
    TensorBoardStage().check_settings(TensorboardConfig(), RANDOM_INPUT)


def test_input_images(ctx):
    """input/batch: the first batch NHWC; input/grid: make_grid(nrow=min(8, N), padding 2, white)."""
    data = collect(ctx, settings(images=True))
    (tag1, batch, fmt1, step1), (tag2, grid, fmt2, step2) = data.images
    rgb = ctx.inputs.first().rgb
    assert (tag1, fmt1, step1, tag2, fmt2, step2) == ("input/batch", "NHWC", 0, "input/grid", "CHW", 0)
    np.testing.assert_array_equal(batch, rgb)
    assert grid.shape == (3, 8 + 4, 2 * 8 + 6)  # 2 images in one row, 2 px padding
    assert (grid[:, :2, :] == 1.0).all() and (grid[:, :, 10:12] == 1.0).all()
    np.testing.assert_allclose(grid[:, 2:10, 2:10], rgb[0].transpose(2, 0, 1))
    np.testing.assert_allclose(grid[:, 2:10, 12:20], rgb[1].transpose(2, 0, 1))


def write_png(path: Path, value: int) -> np.ndarray:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((4, 5, 3), value, dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def test_pictures_tags_steps_and_missing_files(ctx):
    """Tagged pictures are loaded as RGB at their step; a missing file warns; untagged are skipped."""
    out = ctx.output_dir
    a = write_png(out / "k" / "a.png", 10)
    write_png(out / "k" / "c.png", 30)
    ctx.results = {
        "kernels": StageResult(
            "kernels",
            pictures=[
                Picture("k/a.png", tag="kernels/layer one", step=3),
                Picture("k/b.png", tag="kernels/missing"),
                Picture("k/c.png"),
            ],
        )
    }
    data = collect(ctx, settings(pictures=True))
    assert [(t, f, s) for t, _, f, s in data.images] == [("kernels/layer_one", "HWC", 3)]
    np.testing.assert_array_equal(data.images[0][1], a)
    assert ctx.warnings == [f"TensorBoard: picture k/b.png is missing from {out}; not logged"]
    ctx.results = {"x": StageResult("x", pictures=[Picture("k/c.png")])}
    data = collect(ctx, settings(pictures=True))
    assert data.images == [] and data.skipped == {
        "pictures": "no earlier stage of this run made a tagged picture"
    }


def test_parameter_histograms_tags(ctx):
    """weights/<module> and biases/<module>; other parameters params/<name>; values the parameter."""
    ctx.model.scale = nn.Parameter(torch.ones(2))
    ctx.model.bias = nn.Parameter(torch.ones(1))  # a root-level "bias": no module, so params/bias
    ctx.model.c1.extra = nn.Parameter(torch.zeros(1))
    data = collect(ctx, settings(histograms=True))
    assert [(t, s) for t, _, s in data.histograms] == [
        ("params/scale", 0),
        ("params/bias", 0),
        ("weights/c1", 0),
        ("biases/c1", 0),
        ("params/c1.extra", 0),
        ("weights/c2", 0),
        ("biases/c2", 0),
        ("weights/fc", 0),
        ("biases/fc", 0),
    ]
    values = dict((t, v) for t, v, _ in data.histograms)
    assert torch.equal(values["weights/c2"], ctx.model.c2.weight.detach())
    assert values["weights/c2"].requires_grad is False


def test_activations_from_records(ctx):
    """With activation scalars in the records: those scalars and histograms (values > 1), at their steps."""
    ctx.results = {
        "features": StageResult(
            "features",
            scalars=[
                Scalar("activations/c1/mean", 0.5, step=2),
                Scalar("activations/c1/max", None),
                Scalar("other thing", 7.0),
            ],
            histograms=[
                Histogram("activations/c1/channel_mean", [1.0, 2.0], step=4),
                Histogram("h/one", [1.0]),
            ],
        )
    }
    data = collect(ctx, settings(activations=True))
    assert data.activations_from == "records"
    assert data.scalars == [("activations/c1/mean", 0.5, 2), ("other_thing", 7.0, 0)]
    assert data.histograms == [("activations/c1/channel_mean", [1.0, 2.0], 4)]


def test_activations_from_the_blocks(ctx):
    """Without activation scalars: mean, max, zero fraction and channel means of each block, exactly."""
    ctx.results = {"x": StageResult("x", scalars=[Scalar("cam/score", 0.25)])}
    data = collect(ctx, settings(activations=True))
    assert data.activations_from == "tensorboard"
    blocks = ctx.blocks()
    x = ctx.inputs.first().tensor
    with torch.no_grad():
        outs = {"c1": ctx.model.c1(x)}
        outs["act"] = torch.relu(outs["c1"])
        outs["c2"] = ctx.model.c2(outs["act"])
        outs["pool"] = torch.relu(outs["c2"]).mean(dim=(2, 3), keepdim=True)
    stats = capture_block_stats(ctx)
    assert list(stats) == [b for b in blocks if b in stats] and stats
    for name, s in stats.items():
        o = outs[name]
        assert s["mean"] == pytest.approx(float(o.mean()), rel=1e-5)
        assert s["max"] == pytest.approx(float(o.max()), rel=1e-6)
        assert s["zero_fraction"] == pytest.approx(float((o == 0).float().mean()))
        assert s["channel_mean"] == pytest.approx(o.mean(dim=(0, 2, 3)).tolist(), rel=1e-5, abs=1e-7)
    expected = [("cam/score", 0.25, 0)]
    for name, s in stats.items():
        expected += [(f"activations/{name}/{k}", s[k], 0) for k in ("mean", "max", "zero_fraction")]
    assert [(t, st) for t, _, st in data.scalars] == [(t, st) for t, _, st in expected]
    assert [v for _, v, _ in data.scalars] == pytest.approx([v for _, v, _ in expected])
    assert [t for t, _, _ in data.histograms] == [f"activations/{n}/channel_mean" for n in stats]


def test_top5_markdown_exact(ctx):
    """Per image a markdown table: rank, class, escaped name, prob (4 places), logit (3 places)."""
    ctx.categories = ["a|b", "dog", None]
    text = top5_markdown(ctx)
    blocks = text.split("\n\n")
    assert len(blocks) == 4  # (title, table) per image
    rows = ctx.top_k(5)
    lines = [
        "**img0** (randn)",
        "",
        "| rank | class | name | prob | logit |",
        "|---:|---:|---|---:|---:|",
    ]
    for rank, p in enumerate(rows[0], 1):
        name = {0: "a\\|b", 1: "dog", 2: "-"}[p["class"]]
        lines.append(f"| {rank} | {p['class']} | {name} | {p['prob']:.4f} | {p['logit']:.3f} |")
    assert text.split("\n\n**img1**")[0] == "\n".join(lines)
    assert "\n\n**img1** (randn)\n\n| rank |" in text


def test_texts_and_resolved_config(ctx):
    """Record texts (preformatted ones indented 4), the top-5 and the config from manifest.json."""
    ctx.results = {
        "summary": StageResult(
            "summary",
            texts=[
                Text("t", "line1\nline2\n", tag="summary/torch info"),
                Text("m", "**bold**", tag="notes", pre=False),
                Text("untagged", "x"),
            ],
        )
    }
    data = collect(ctx, settings(text=True))
    assert [t for t, _ in data.texts] == ["predictions/top5", "summary/torch_info", "notes"]
    assert data.texts[1][1] == "    line1\n    line2" and data.texts[2][1] == "**bold**"
    assert data.skipped == {"config/resolved": "no manifest.json or .hydra/config.yaml in the run folder"}
    out = ctx.output_dir
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "config.yaml").write_text("a: 1\nb: two\n")
    assert resolved_config_markdown(out) == "Overrides: (none)\n\n    a: 1\n    b: two"
    (out / "manifest.json").write_text(json.dumps({"config": {"m": {"k": 2}}, "overrides": ["m.k=2", "x=y"]}))
    assert resolved_config_markdown(out) == "Overrides: `m.k=2` `x=y`\n\n    m:\n      k: 2"
    (out / "manifest.json").write_text(json.dumps({"config": {"z": 1}, "overrides": None}))
    assert resolved_config_markdown(out) == "Overrides: (none)\n\n    z: 1"
    (out / "manifest.json").write_text("{broken")
    assert resolved_config_markdown(out) == "Overrides: (none)\n\n    a: 1\n    b: two"
    (out / "manifest.json").write_text(json.dumps({"config": "not a dict"}))
    assert resolved_config_markdown(out).startswith("Overrides: (none)\n\n    a: 1")
    data = collect(ctx, settings(text=True))
    assert data.texts[-1][0] == "config/resolved" and data.skipped == {}


def test_hparams_row(ctx):
    """model + every record's params as strings -> mean top-1 probability and the key scalars."""
    ctx.results = {
        "cam": StageResult(
            "cam",
            params={"method": "gradcam", "layer": 3},
            scalars=[
                Scalar("cam/score", 0.5, key=True),
                Scalar("cam/energy in box", 0.25, key=True),
                Scalar("cam/none", None, key=True),
                Scalar("cam/not_key", 1.0),
            ],
        )
    }
    hp, metrics = hparams_row(ctx)
    assert hp == {"model": "tiny", "method": "gradcam", "layer": "3"}
    top1 = [row[0]["prob"] for row in ctx.top_k(1)]
    assert metrics == {
        "hparams/top1_prob": pytest.approx(sum(top1) / 2),
        "hparams/cam_score": 0.5,
        "hparams/cam_energy_in_box": 0.25,
    }
    assert list(metrics)[0] == "hparams/top1_prob"


def test_safe_tags():
    """Each part slugged, '/' kept; clashes get distinct suffixes; equal tags stay equal."""
    assert safe_tags(["a b/c d", "x/y.z-w_v"]) == ["a_b/c_d", "x/y.z-w_v"]
    tags = safe_tags(["a b", "a_b", "a b"])
    assert tags[0] == tags[2] and tags[0] != tags[1] and all(t.startswith("a_b_") for t in tags)


class Untraceable(TinyCNN):
    def forward(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError("cannot trace me\nmore")
        return super().forward(x)


@pytest.mark.parametrize("backend", ["tensorboardX", "torch"])
def test_render_reads_back(tmp_path, backend):
    """Everything written is read back by EventAccumulator with its tag, step and value."""
    ctx = hand_context(TinyCNN(), tmp_path / "run", (2, 3, 8, 8))
    out = ctx.output_dir
    write_png(out / "p.png", 200)
    ctx.results = {
        "cam": StageResult(
            "cam",
            params={"method": "gradcam"},
            pictures=[Picture("p.png", tag="cam/one", step=5)],
            scalars=[Scalar("activations/l/mean", 1.5, key=True, step=2)],
            histograms=[Histogram("activations/l/channel_mean", [1.0, 2.0, 3.0], step=1)],
            texts=[Text("t", "hello", tag="summary/t", pre=False)],
        )
    }
    stale = out / "tensorboard" / "events.out.tfevents.1.host.vizpipe"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    s = TensorboardConfig(backend=backend, histograms=False)
    res = TensorBoardStage().run(ctx, s)
    assert not stale.exists()
    acc = read_events_tensorboard(out / "tensorboard")
    tags = acc.Tags()
    assert sorted(tags["images"]) == ["cam/one", "input/batch", "input/grid"]
    assert [(e.step, e.width, e.height) for e in acc.Images("cam/one")] == [(5, 5, 4)]
    assert [(e.step, e.value) for e in acc.Scalars("activations/l/mean")] == [(2, 1.5)]
    assert [e.step for e in acc.Histograms("activations/l/channel_mean")] == [1]
    h = acc.Histograms("activations/l/channel_mean")[0].histogram_value
    assert (h.min, h.max, h.num, h.sum, h.sum_squares) == (1.0, 3.0, 3.0, 6.0, 14.0)
    assert acc.Scalars("hparams/activations_l_mean")[0].value == 1.5
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    assert sorted(content) == [
        "_hparams_/experiment",
        "_hparams_/session_end_info",
        "_hparams_/session_start_info",
    ]
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert {k: v.string_value for k, v in start.session_start_info.hparams.items()} == {
        "model": "tiny",
        "method": "gradcam",
    }
    assert acc.Graph() is not None
    data = res.data
    assert (
        data["backend"] == backend and data["graph_error"] is None and data["activations_from"] == "records"
    )
    assert data["tags"]["images"] == ["input/batch", "input/grid", "cam/one"]
    assert data["tags"]["histograms"] == ["activations/l/channel_mean"]
    assert data["tags"]["scalars"] == [
        "activations/l/mean",
        "hparams/top1_prob",
        "hparams/activations_l_mean",
    ]
    assert data["tags"]["text"] == [
        "predictions/top5/text_summary",
        "summary/t/text_summary",
    ]
    assert data["skipped"] == {"config/resolved": "no manifest.json or .hydra/config.yaml in the run folder"}
    for tag in data["tags"]["text"]:
        assert tag in tags["tensors"]
    files = res.files
    assert (
        len(files) == 1
        and files[0].startswith("tensorboard/events.out.tfevents.")
        and files[0].endswith(".vizpipe")
    )
    assert res.summary == (
        f"{backend}: graph yes, 3 images, 1 histograms, 3 scalars, 2 texts; view: tensorboard --logdir {out}"
    )
    sizes, kinds = res.tables
    assert sizes.columns == ["Event file", "Bytes"] and sizes.rows == [
        [files[0], (out / files[0]).stat().st_size]
    ]
    assert kinds.rows == [
        ["graph", 1, "(the model graph)"],
        ["images", 3, "input/batch, input/grid, cam/one"],
        ["histograms", 1, "activations/l/channel_mean"],
        ["scalars", 3, "activations/l/mean, hparams/top1_prob, hparams/activations_l_mean"],
        ["text", 2, "predictions/top5/text_summary, summary/t/text_summary"],
    ]
    assert res.texts[0].body == f"tensorboard --logdir {out}\n# then browse to http://localhost:6006"
    assert res.texts[0].open is True and res.texts[0].title == "Open it" and res.stage == "tensorboard"


def test_render_untraceable_nonfinite_and_long_tag_lists(tmp_path):
    """No graph (a warning, graph_error); a histogram with no finite values warns; > 12 tags elided."""
    ctx = hand_context(Untraceable(), tmp_path / "run", (1, 3, 8, 8))
    data = collect(ctx, settings(graph=True))
    assert data.graph is None and data.graph_error == "RuntimeError: cannot trace me"
    assert ctx.warnings == [
        "TensorBoard: no model graph, tiny cannot be traced by torch.jit.trace "
        "(RuntimeError: cannot trace me); everything else is still logged"
    ]
    data.histograms = [("bad", torch.tensor([float("nan"), float("inf")]), 0), ("good", torch.ones(3), 0)]
    data.scalars = [(f"s{i}", float(i), i) for i in range(13)]
    res = render(ctx, settings(), data)
    assert ctx.warnings[-1] == "TensorBoard: histogram bad has no finite values; not logged"
    assert res.data["tags"]["histograms"] == ["good"]
    rows = {r[0]: r for r in res.tables[1].rows}
    assert "graph" not in rows and "images" not in rows and "text" not in rows
    assert rows["scalars"][1] == 13 and rows["scalars"][2].endswith("s10, s11, …")
    assert rows["scalars"][2].count(", ") == 12
    assert res.summary.startswith(
        "tensorboardX: graph no, 0 images, 1 histograms, 13 scalars, 0 texts; view: "
    )
    acc = read_events_tensorboard(ctx.output_dir / "tensorboard")
    assert [(e.step, e.value) for e in acc.Scalars("s12")] == [(12, 12.0)]


def test_check_names_the_missing_package(monkeypatch):
    """A backend whose package is missing fails with the package and the pip command."""
    import importlib.util

    real = importlib.util.find_spec
    missing = set()
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    from vizpipe.pipeline.errors import ConfigError

    missing.add("tensorboardX")
    with pytest.raises(ConfigError) as info:
        TensorBoardStage().check_settings(TensorboardConfig(graph=False), RANDOM_INPUT)
    assert str(info.value) == (
        "tensorboard.backend=tensorboardX needs the 'tensorboardX' package, which is not installed; "
        "pip install tensorboardX (or: pip install -e .)"
    )
    TensorBoardStage().check_settings(TensorboardConfig(backend="torch"), RANDOM_INPUT)
    missing.add("tensorboard")
    with pytest.raises(ConfigError) as info:
        TensorBoardStage().check_settings(TensorboardConfig(backend="torch", graph=False), RANDOM_INPUT)
    assert str(info.value).startswith("tensorboard.backend=torch needs the 'tensorboard' package")
    missing.discard("tensorboardX")
    with pytest.raises(ConfigError) as info:
        TensorBoardStage().check_settings(TensorboardConfig(), RANDOM_INPUT)  # the graph needs tensorboard
    assert str(info.value).startswith("tensorboard.backend=tensorboardX needs the 'tensorboard' package")
    TensorBoardStage().check_settings(TensorboardConfig(graph=False), RANDOM_INPUT)


class Silent(TinyCNN):
    def forward(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError()
        return super().forward(x)


class Loud(TinyCNN):
    def forward(self, x):
        if torch.jit.is_tracing():
            raise ValueError("  " + "x" * 400 + "\nsecond")
        return super().forward(x)


def test_graph_error_text(tmp_path):
    """An empty message gives the type alone; a long first line is cut at 300 characters."""
    from vizpipe.stages.tensorboard.collect import trace_graph

    ctx = hand_context(Silent(), tmp_path / "a", (1, 3, 8, 8))
    assert trace_graph(ctx) == (None, "RuntimeError")
    ctx = hand_context(Loud(), tmp_path / "b", (1, 3, 8, 8))
    graph, err = trace_graph(ctx)
    assert graph is None and err == "ValueError: " + "x" * 300
    ok = hand_context(TinyCNN(), tmp_path / "c", (1, 3, 8, 8))
    graph, err = trace_graph(ok)
    assert err is None and isinstance(graph, bytes) and b"c1" in graph and ok.warnings == []


def test_input_grid_has_at_most_eight_per_row(tmp_path):
    """Nine images: make_grid lays 8 per row, then a second row."""
    ctx = hand_context(TinyCNN(), tmp_path / "run", (9, 3, 4, 4))
    data = collect(ctx, settings(images=True))
    grid = data.images[1][1]
    assert grid.shape == (3, 2 * (4 + 2) + 2, 8 * (4 + 2) + 2)
    np.testing.assert_allclose(grid[:, 8:12, 2:6], ctx.inputs.first().rgb[8].transpose(2, 0, 1))
