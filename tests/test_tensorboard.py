"""TensorBoard stage: event files read back with TensorBoard's own EventAccumulator, both backends.

The kernels/features/cam results here are hand-made (real PNGs drawn with PIL, the documented
data contracts), so these tests pin what this stage does with them; the end-to-end test at the
bottom runs the real stages before it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from pipeline.context import Inputs, RunContext
from pipeline.errors import ConfigError
from pipeline.schema import TBBackend, TensorboardConfig
from stages.tensorboard import SUFFIX, TensorBoardStage, histogram_raw

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


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def draw_png(run: Path, rel: str, size: tuple[int, int], seed: int) -> np.ndarray:
    """A random RGB picture of ``size`` (W, H) at ``run/rel``; returns its pixels."""
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    (run / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(px).save(run / rel)
    return px


def fake_results(ctx: RunContext) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """kernels/features/cam results in the documented contracts, pointing at real PNGs."""
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
    results = {
        "summary": {"table": "TORCHINFO TABLE\nTotal params: 123", "totals": {}},
        "kernels": {
            "scale": "layer",
            "cmap": "bwr",
            "layers": {
                "conv1": {"grid": "kernels/conv1.png", "rgb": "kernels/conv1_rgb.png"},
                "layer1.0.conv1": {"grid": "kernels/layer1.0.conv1.png", "rgb": None},
            },
        },
        "features": {
            "layers": {
                "layer1": {
                    "shape": [2, 64, 16, 16],
                    "grids": {n0: f"features/layer1__{n0}.png", n1: f"features/layer1__{n1}.png"},
                    "mean": 0.5,
                    "max": 3.0,
                    "zero_fraction": 0.25,
                    "channels": [{"index": i, "mean": 0.1 * i, "max": 1.0} for i in range(4)],
                }
            }
        },
        "cam": {
            "method": "GradCAM",
            "method_key": "gradcam",
            "layers": ["layer4"],
            "images": [
                {
                    "name": n0,
                    "maps": [
                        {"layer": "layer4", "target": 7, "target_name": None, "score": 0.2,
                         "overlay": f"cam/{n0}.png", "metrics": {"confidence_change": -0.5}},
                    ],
                },
                {
                    "name": n1,
                    "maps": [
                        {"layer": "layer4", "target": 281, "target_name": "tabby cat",
                         "score": 0.6, "overlay": f"cam/{n1}.png",
                         "metrics": {"confidence_change": 0.1}},
                    ],
                },
            ],
        },
    }
    return results, pngs


def write_manifest(compose: Any, run: Path, overrides: list[str], backend: str) -> None:
    """What the runner writes before any stage: the resolved config and the overrides."""
    cfg = compose([*overrides, f"tensorboard.backend={backend}"])
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    run.mkdir(parents=True, exist_ok=True)
    (run / "manifest.json").write_text(json.dumps({"config": resolved, "overrides": overrides}))


def run_stage(ctx: RunContext, **settings: Any) -> dict[str, Any]:
    stage, cfg = TensorBoardStage(), TensorboardConfig(**settings)
    stage.validate(ctx, cfg)
    return stage.run(ctx, cfg)


# --------------------------------------------------------------------------- tests


def test_unknown_backend_is_rejected_at_the_boundary(make_ctx, compose) -> None:
    ctx = make_ctx(["model=seed_net", "input=random", "input.shape=[1,3,32,32]"])
    with pytest.raises(ConfigError) as err:
        TensorBoardStage().validate(ctx, TensorboardConfig(backend="tensorflow"))  # type: ignore[arg-type]
    msg = str(err.value)
    assert "'tensorflow'" in msg and "tensorboardX" in msg and "torch" in msg and "\n" not in msg
    with pytest.raises(Exception, match="tensorboard.backend"):
        compose(["tensorboard.backend=tf"])  # the schema's enum rejects it at composition


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
    assert [p.name for p in logdir.iterdir()] == [Path(res["event_files"][0]).name]
    assert res["event_files"][0].endswith(SUFFIX) and res["graph"] and not ctx.warnings
    # the model as found
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert hook_count(model) == hooks
    assert all(torch.equal(p, params_before[n]) for n, p in model.named_parameters())

    acc = read_events(logdir)
    tags = acc.Tags()
    n0, n1 = ctx.inputs.names
    # ---- images: exact tags, and the pixels of every picture made earlier in the run
    assert set(tags["images"]) == {"input/batch", "input/grid", *pngs}
    assert set(res["tags"]["images"]) == set(tags["images"])
    for tag, px in pngs.items():
        assert np.array_equal(png_pixels(acc, tag), px), tag
    rgb = ctx.inputs.rgb  # (2, 64, 64, 3) un-normalised
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
    # ---- scalars: activation stats from the features stage, the hparams metrics
    scalars = {t: acc.Scalars(t)[0].value for t in tags["scalars"]}
    assert scalars == pytest.approx({
        "activations/layer1/mean": 0.5,
        "activations/layer1/max": 3.0,
        "activations/layer1/zero_fraction": 0.25,
        "hparams/top1_prob": float(np.mean([r[0]["prob"] for r in ctx.top_k(1)])),
        "hparams/score": 0.4,
        "hparams/confidence_change": -0.2,
    })
    # ---- text: top-5, torchinfo table, resolved config
    assert set(tags["tensors"]) == {
        "predictions/top5/text_summary", "summary/torchinfo/text_summary",
        "config/resolved/text_summary",
    } == set(res["tags"]["text"])
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
    assert hparams_of(acc) == {
        "model": "resnet18", "layer": "layer4", "class": "7,281_tabby cat", "method": "gradcam",
    }
    assert res["skipped"] == {} and res["activations_from"] == "features"


def test_both_backends_write_the_same_tags(make_ctx, tmp_path: Path) -> None:
    """No stage results: the stage's own fallbacks (block stats, torchinfo) in both libraries."""
    seen = {}
    for backend in BACKENDS:
        ctx = make_ctx(["model=seed_net", "input=random", "input.shape=[1,3,32,32]"],
                       out=tmp_path / backend)
        res = run_stage(ctx, backend=backend)
        tags = read_events(tmp_path / backend / "tensorboard").Tags()
        seen[backend] = {k: sorted(v) if isinstance(v, list) else v for k, v in tags.items()}
        assert res["skipped"].keys() == {"kernels", "features", "cam", "config/resolved"}
        assert res["activations_from"] == "tensorboard"
        assert "activations/conv2/zero_fraction" in seen[backend]["scalars"]
        assert "summary/torchinfo/text_summary" in seen[backend]["tensors"]
        assert "hparams/score" not in seen[backend]["scalars"]  # no cam: only top1_prob
        assert hparams_of(read_events(tmp_path / backend / "tensorboard"))["method"] == "none"
    assert seen["tensorboardX"] == seen["torch"]


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
    g = torch.Generator().manual_seed(0)
    inputs = Inputs(
        tensor=torch.randn(n, 3, hw, hw, generator=g),
        rgb=torch.rand(n, hw, hw, 3, generator=g).numpy(),
        names=[f"img{i}" for i in range(n)],
        sources=["test"] * n,
        mean=[0.5] * 3,
        std=[0.5] * 3,
    )
    return RunContext(model=model, model_name="dict_out", inputs=inputs,
                      device=torch.device("cpu"), output_dir=out)


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
    assert res["graph"] is False and "dict" in res["graph_error"]
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
    off = dict(graph=False, features=False, cam=False, histograms=False, activations=False,
               text=False, hparams=False)
    run_stage(ctx, **off)
    res = run_stage(ctx, **off)  # same folder again: the first attempt's file is replaced
    assert any("kernels/conv1_rgb.png is missing" in w for w in ctx.warnings)
    files = sorted(p.name for p in (run / "tensorboard").iterdir())
    assert len(files) == 2 and other.name in files and res["graph"] is False
    tags = read_events(run / "tensorboard").Tags()
    assert set(tags["images"]) == {"input/batch", "input/grid", "kernels/conv1",
                                   "kernels/layer1.0.conv1"}
    assert not tags["histograms"] and not tags["scalars"] and not tags["tensors"]
    assert not tags["graph"]


@pytest.mark.slow
def test_real_stages_feed_tensorboard(compose, tmp_path: Path) -> None:
    """End to end through the runner: tags come from what the real stages wrote in this run."""
    from pipeline.runner import run_pipeline

    cfg = compose(["model=resnet18", *SMALL, "stages=[summary,kernels,features,cam,tensorboard]",
                   "kernels.layers=[conv1,layer1.0.conv1]", "features.layers=[layer1,layer4]"])
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
        assert {f"activations/{layer}/{s}" for s in ("mean", "max", "zero_fraction")} <= set(
            tags["scalars"]
        )
        assert f"activations/{layer}/channel_mean" in tags["histograms"]
    assert {"hparams/top1_prob", "hparams/score"} <= set(tags["scalars"])
    assert tags["graph"] and len(tags["tensors"]) == 3
    hp = hparams_of(acc)
    assert hp["model"] == "resnet18" and hp["method"] == "gradcam" and hp["layer"] == "layer4"
    assert "Total params" in text_of(acc, "summary/torchinfo/text_summary")
