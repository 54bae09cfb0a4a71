"""TensorBoard stage on a tiny CNN: what collect gathers per option, and the event file read back.

Records of earlier stages are hand-made ``StageResult`` objects; the event file is read with
TensorBoard's EventAccumulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RANDOM_INPUT, hand_context
from test_stage_cam import TinyCNN
from torch import nn
from vizpipe.pipeline.stage import Histogram, Picture, Scalar, StageResult, Text
from vizpipe.stages.tensorboard import TensorboardConfig, TensorBoardStage, backend_name
from vizpipe.stages.tensorboard.collect import (
    Collected,
    capture_block_stats,
    collect,
    hparams_row,
    resolved_config_markdown,
    safe_tags,
    top5_markdown,
)
from vizpipe.stages.tensorboard.write import render

OFF = {k: False for k in ("graph", "images", "pictures", "histograms", "activations", "text", "hparams")}


def settings(**on) -> TensorboardConfig:
    """Every option off except those given."""
    return TensorboardConfig(**{**OFF, **on})


@pytest.fixture
def ctx(tmp_path):
    return hand_context(TinyCNN(), tmp_path / "run", (2, 3, 8, 8))


def read_events(logdir: Path):
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
    acc = read_events(out / "tensorboard")
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
    acc = read_events(ctx.output_dir / "tensorboard")
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
