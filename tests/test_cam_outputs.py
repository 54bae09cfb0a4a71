"""The CAM stage run end to end on a tiny CNN: cam.json read back, files, pixels, the record.

Three labelled 16×16 images with object boxes, streamed in batches of 2."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import RANDOM_INPUT
from PIL import Image
from test_cam import TinyCNN
from vizpipe.pipeline.context import RunContext
from vizpipe.pipeline.inputs import Inputs
from vizpipe.stages.cam import CamConfig, CamStage
from vizpipe.stages.cam.draw import heatmap_rgb
from vizpipe.stages.cam.record import CamDoc, CamImage, CamMap, ClassSummary, Prediction
from vizpipe.stages.cam.render import SAMPLE_IMAGES, result, summarize

BOXES = [(2.0, 2.0, 8.0, 8.0), (8.0, 0.0, 16.0, 6.0), (0.0, 10.0, 5.0, 16.0)]
CATS = ["cat", "dog", "bird"]


class Boxed:
    """Items with labels 0, 1, 2 and a box each."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(3, 3, 16, 16, generator=g)
        self.rgb = torch.rand(3, 3, 16, 16, generator=g)

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int):
        return {"x": self.x[i], "rgb": self.rgb[i], "index": i, "label": i, "box": torch.tensor(BOXES[i])}


def boxed_context(out: Path, *, labels: bool = True) -> RunContext:
    """TinyCNN on the Boxed items (batch size 2), with class names."""
    data = Boxed()
    if not labels:
        data.__class__ = type(
            "Plain", (Boxed,), {"__getitem__": lambda s, i: {"x": s.x[i], "rgb": s.rgb[i], "index": i}}
        )
    cpu = torch.device("cpu")
    inputs = Inputs(
        dataset=data,
        names=["im0", "im1", "im2"],
        sources=["a.png", "b.png", "c.png"],
        mean=[0.0] * 3,
        std=[1.0] * 3,
        device=cpu,
        batch_size=2,
    )
    return RunContext(
        model=TinyCNN().eval(), model_name="tiny", inputs=inputs, device=cpu, output_dir=out, categories=CATS
    )


def run(ctx: RunContext, **kw):
    stage = CamStage()
    s = CamConfig(**kw)
    stage.check_settings(s, RANDOM_INPUT)
    stage.check_model(ctx, s)
    res = stage.run(ctx, s)
    doc = CamDoc.load(ctx.output_dir / "cam" / "cam.json")
    assert doc == res.data
    return doc, res


def test_full_record_with_boxes_labels_metrics_and_per_layer_maps(tmp_path):
    """Every map row, metric, file path, pixel, aggregate and the stage record, exactly."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange  # noqa: F401
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from vizpipe.pipeline.metrics.localisation import localisation

    ctx = boxed_context(tmp_path)
    doc, res = run(
        ctx,
        layer=["c1", "c2"],
        per_layer=True,
        target_class=[2, "cat"],
        metrics=["complexity"],
        pointing_tolerance=0.0,
        image_weight=0.3,
    )
    x = ctx.inputs.dataset.x
    with torch.no_grad():
        logits = ctx.model(x)
    probs = torch.softmax(logits, 1)
    assert (doc.method, doc.method_key, doc.layers, doc.targets) == (
        "GradCAM",
        "gradcam",
        ["c1", "c2"],
        [2, "cat"],
    )
    assert doc.reshape == {"c1": "N×4×16×16 maps as they are", "c2": "N×6×16×16 maps as they are"}
    assert doc.metric_targets == {
        "complexity": "the map alone",
        "pointing_game": "the object's box",
        "energy_in_box": "the object's box",
    }
    assert doc.grouped_by == "label" and doc.forward_passes == 0
    expected_order = [(g, c) for g in ("c1+c2", "c1", "c2") for c in (2, 0)]
    for i, im in enumerate(doc.images):
        assert (im.name, im.source, im.label, im.box, im.valid) == (
            f"im{i}",
            "abc"[i] + ".png",
            i,
            list(BOXES[i]),
            True,
        )
        order = probs[i].argsort(descending=True).tolist()
        assert [(p.class_index, p.name) for p in im.top5] == [(c, CATS[c]) for c in order]
        assert [p.prob for p in im.top5] == pytest.approx([float(probs[i, c]) for c in order], rel=1e-6)
        assert [(m.layer, m.target) for m in im.maps] == expected_order
        assert im.label_score == pytest.approx(float(probs[i, i]), rel=1e-6)  # its label's probability
        for m in im.maps:
            stem = f"cam/im{i}/{m.layer.replace('+', '_')}__{m.target}_{CATS[m.target]}"
            assert (m.overlay, m.heatmap, m.npy) == (
                f"{stem}_overlay.png",
                f"{stem}_heatmap.png",
                f"{stem}.npy",
            )
            assert m.target_name == CATS[m.target] and m.valid
            assert m.score == pytest.approx(float(probs[i, m.target]), rel=1e-6)
            assert m.logit == pytest.approx(float(logits[i, m.target]), rel=1e-6)
            arr = np.load(tmp_path / m.npy)
            assert arr.dtype == np.float32 and arr.shape == (16, 16)
            want = localisation(arr, BOXES[i], 0.0)
            assert list(m.metrics) == ["complexity", "pointing_game", "energy_in_box"]
            assert m.metrics["pointing_game"] == want["pointing_game"]
            assert m.metrics["energy_in_box"] == pytest.approx(want["energy_in_box"], rel=1e-6)
            assert m.metrics["complexity"] == pytest.approx(float(np.abs(arr).sum() / arr.size), rel=1e-5)
            heat = np.asarray(Image.open(tmp_path / m.heatmap))
            np.testing.assert_array_equal(heat, heatmap_rgb(np.clip(arr, 0, 1)))
            rgb = ctx.inputs.dataset.rgb[i].permute(1, 2, 0).numpy().astype(np.float32)
            over = show_cam_on_image(rgb, np.clip(arr, 0, 1), use_rgb=True, image_weight=0.3)
            np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / m.overlay)), over)
    # per class (by label): every image its own class
    assert [(c.class_index, c.name, c.count) for c in doc.classes] == [
        (0, "cat", 1),
        (1, "dog", 1),
        (2, "bird", 1),
    ]
    for c, im in zip(doc.classes, doc.images, strict=True):
        assert c.top1_accuracy == float(im.top5[0].class_index == im.label)
        assert c.mean_score == pytest.approx(np.mean([m.score for m in im.maps]))  # the maps' targets
        assert c.mean_label_score == pytest.approx(float(probs[c.class_index, c.class_index]), rel=1e-6)
        assert c.mean_label_score != pytest.approx(c.mean_score)  # they were mixed under one name
        assert list(c.metrics) == ["pointing_game", "energy_in_box", "complexity"]
        assert c.metrics["complexity"] == pytest.approx(np.mean([m.metrics["complexity"] for m in im.maps]))
    maps = [m for im in doc.images for m in im.maps]
    assert list(doc.means) == ["score", "pointing_game", "energy_in_box", "complexity", "top1_accuracy"]
    assert doc.means["score"] == pytest.approx(np.mean([m.score for m in maps]))
    assert doc.means["pointing_game"] == pytest.approx(np.mean([m.metrics["pointing_game"] for m in maps]))
    assert doc.means["top1_accuracy"] == pytest.approx(
        np.mean([im.top5[0].class_index == im.label for im in doc.images])
    )
    # the stage's record
    assert res.summary == "GradCAM on c1, c2, target: class(es) [2, 'cat']; 3 image(s), 18 map(s)"
    assert res.params == {"method": "gradcam", "layer": "c1+c2", "class": "[2, 'cat']"}
    assert res.files == ["cam/cam.json"] and res.stage == "cam"
    assert [(s.name, s.key, s.better) for s in res.scalars] == [
        ("cam/score", True, None),
        ("cam/pointing_game", True, "higher"),
        ("cam/energy_in_box", True, "higher"),
        ("cam/complexity", True, "lower"),
        ("cam/top1_accuracy", True, "higher"),
    ]
    assert [s.value for s in res.scalars] == [doc.means[k] for k in doc.means]
    per_class = res.tables[0]
    assert per_class.title == "Per class (label)"
    assert per_class.columns == [
        "Class",
        "Name",
        "Images",
        "Top-1 accuracy",
        "Mean target probability",
        "Mean label probability",
        "pointing_game",
        "energy_in_box",
        "complexity",
    ]
    assert per_class.caption.startswith("Mean target probability: the model's probability of the class")
    assert per_class.rows[0][:3] == [0, "cat", 1] and len(per_class.rows) == 3
    assert per_class.rows[0][4:6] == [doc.classes[0].mean_score, doc.classes[0].mean_label_score]
    assert per_class.merge.keys == [0, 1] and per_class.merge.weight == 2
    assert per_class.merge.means == [3, 4, 5, 6, 7, 8]
    top5 = res.tables[1]
    assert (top5.title, top5.columns, top5.group) == (
        "Top-5 predictions",
        ["Rank", "Class", "Name", "Probability"],
        "im0",
    )
    assert top5.caption == "Source: a.png; label 0 cat"
    p0 = doc.images[0].top5[0]
    assert top5.rows[0] == [1, p0.class_index, p0.name, f"{p0.prob * 100:.2f}%"]
    assert [r[0] for r in top5.rows] == [1, 2, 3]
    # per class, top-5 of each image, and what the metrics mean and cost (explain.py)
    assert [t.title for t in res.tables[4:]] == ["Metrics", "Time per metric"]
    assert len(res.tables) == 6 and len(res.pictures) == 2 * 18
    m = doc.images[0].maps[0]
    first, heat = res.pictures[0], res.pictures[1]
    assert first.path == m.overlay and first.group == "im0" and first.preview and first.badge is None
    assert first.tag == "cam/gradcam/c1+c2/2_bird/im0"
    assert first.caption == (
        f"c1+c2  target 2 bird, score {m.score:.4g}, logit {m.logit:.4g}, "
        f"complexity {m.metrics['complexity']:.4g}, pointing_game {m.metrics['pointing_game']:.4g}, "
        f"energy_in_box {m.metrics['energy_in_box']:.4g}"
    )
    assert (heat.path, heat.caption, heat.group, heat.tag) == (m.heatmap, "c1+c2  heatmap", "im0", None)
    assert ctx.warnings == []


def test_top1_targets_without_labels_or_names(tmp_path):
    """target_class=null: each image's own top-1; classes group by the top-1 class."""
    ctx = boxed_context(tmp_path, labels=False)
    ctx.categories = None
    doc, res = run(ctx, layer="c2")
    with torch.no_grad():
        top1 = ctx.model(ctx.inputs.dataset.x).argmax(1).tolist()
    assert [[(m.layer, m.target, m.target_name) for m in im.maps] for im in doc.images] == [
        [("c2", c, None)] for c in top1
    ]
    assert all(im.label is None and im.box is None for im in doc.images)
    assert doc.metric_targets == {} and doc.targets is None and doc.grouped_by == "top-1 class"
    assert list(doc.means) == ["score"]
    assert [(c.class_index, c.count, c.top1_accuracy) for c in doc.classes] == [
        (k, top1.count(k), None) for k in sorted(set(top1))
    ]
    assert doc.images[0].maps[0].npy == f"cam/im0/c2__{top1[0]}.npy"
    assert res.summary == "GradCAM on c2, target: top-1 prediction of each image; 3 image(s), 3 map(s)"
    assert res.params == {"method": "gradcam", "layer": "c2", "class": "top1"}
    assert res.tables[0].title == "Per class (top-1 class)"
    assert res.tables[1].caption == "Source: a.png"
    assert res.pictures[0].tag == f"cam/gradcam/c2/{top1[0]}/im0"
    assert res.pictures[0].caption.startswith(f"c2  target class {top1[0]}, score ")


def test_invalid_maps_are_marked_and_warned(tmp_path):
    """Non-finite parameters: every map invalid (no score), one warning; a NaN input: image invalid."""
    ctx = boxed_context(tmp_path, labels=False)
    ctx.nonfinite_params = ["c1.weight", "c2.weight", "fc.weight", "fc.bias"]
    ctx.inputs.invalid = {1: "NaN"}
    doc, res = run(ctx, layer="c2", target_class=0)
    assert ctx.warnings == [
        "CAM: 3 of 3 map(s) are invalid (3 × the model has non-finite parameters (c1.weight, c2.weight, "
        "fc.weight)); they are marked valid=false and left out of the metrics and means"
    ]
    assert [m.valid for im in doc.images for m in im.maps] == [False] * 3
    assert [m.score for im in doc.images for m in im.maps] == [None] * 3
    assert all(m.logit is not None for im in doc.images for m in im.maps)
    assert [im.valid for im in doc.images] == [True, False, True]
    assert [p.prob for p in doc.images[1].top5] == [None] * 3
    assert doc.images[0].top5[0].prob is not None
    assert doc.means == {"score": None}
    assert res.tables[2].caption == "Source: b.png (input holds NaN/inf: invalid)"
    assert res.tables[2].rows[0][3] is None
    assert [p.badge for p in res.pictures] == ["invalid", None] * 3
    assert "score –, logit" in res.pictures[0].caption
    ctx2 = boxed_context(tmp_path / "b", labels=False)
    ctx2.inputs.invalid = {2: "inf"}
    doc, _ = run(ctx2, layer="c2", target_class=0)
    assert [m.valid for im in doc.images for m in im.maps] == [True, True, False]
    assert ctx2.warnings == [
        "CAM: 1 of 3 map(s) are invalid (1 × non-finite values in the input); "
        "they are marked valid=false and left out of the metrics and means"
    ]


def fake_image(i: int, label, top: int, score, metrics=None, valid=True) -> CamImage:
    m = CamMap("l", 0, None, score, 1.0, "o.png", "h.png", "a.npy", metrics or {}, valid)
    return CamImage(f"i{i}", "src", [Prediction(top, None, 0.5)] if top >= 0 else [], [m], label)


class NoNames:
    def class_name(self, index):
        return {1: "one"}.get(index)


def test_summarize_groups_means_and_ignores_invalid_and_nonfinite():
    """Grouping by label only when every image has one; None/NaN/invalid values stay out of means."""
    images = [
        fake_image(0, 1, 1, 0.2, {"zeta": 1.0, "energy_in_box": 0.5}),
        fake_image(1, 1, 0, 0.4, {"zeta": float("nan"), "energy_in_box": None}),
        fake_image(2, 0, 0, 0.9, {"zeta": 5.0}, valid=False),
    ]
    classes, means, by = summarize(NoNames(), images)
    assert by == "label"
    assert classes == [
        ClassSummary(0, None, 1, 1.0, None, {"energy_in_box": None, "zeta": None}),
        ClassSummary(1, "one", 2, 0.5, pytest.approx(0.3), {"energy_in_box": 0.5, "zeta": 1.0}),
    ]
    assert means == {"score": pytest.approx(0.3), "energy_in_box": 0.5, "zeta": 1.0, "top1_accuracy": 2 / 3}
    images[2].label = None  # one unlabelled image: group by top-1, no accuracy
    classes, means, by = summarize(NoNames(), images)
    assert by == "top-1 class" and "top1_accuracy" not in means
    assert [(c.class_index, c.count, c.top1_accuracy) for c in classes] == [(0, 2, None), (1, 1, None)]
    images.append(fake_image(3, None, -1, 0.1))  # no predictions: class -1
    classes, _, _ = summarize(NoNames(), images)
    assert [c.class_index for c in classes] == [-1, 0, 1]
    assert summarize(NoNames(), []) == ([], {"score": None}, "top-1 class")


def test_result_lists_every_image_and_samples_the_first_for_tensorboard(tmp_path):
    """Every image gets its pictures and top-5 table (the report limits them: report.max_images);
    only SAMPLE_IMAGES images' overlays are tagged for TensorBoard and previewed; the summary says so."""
    ctx = RunContext(model=None, model_name="m", inputs=None, device=torch.device("cpu"), output_dir=tmp_path)
    images = [fake_image(i, None, 0, 0.5) for i in range(SAMPLE_IMAGES + 1)]
    doc = CamDoc("GradCAM", "gradcam", ["l"], 3, {"l": "tokens: 4 tokens laid on a 2×2 grid"}, {}, images)
    res = result(ctx, doc)
    assert SAMPLE_IMAGES == 32
    assert res.summary == (
        "GradCAM on l, target: class(es) 3; 33 image(s), 33 map(s); TensorBoard and the sweep index get "
        "the first 32 images' maps (the report all, up to report.max_images; every map is in cam/); "
        "reshape l: tokens: 4 tokens laid on a 2×2 grid"
    )
    assert len(res.pictures) == 66 and len(res.tables) == 1 + 33
    assert [bool(p.tag) for p in res.pictures[::2]] == [True] * 32 + [False]  # overlays
    assert [p.preview for p in res.pictures[::2]] == [True] * 32 + [False]
    assert not any(p.tag or p.preview for p in res.pictures[1::2])  # heatmaps
    assert res.tables[0].title == "Per class (top-1 class)"
    assert res.tables[0].columns[-2:] == ["Mean target probability", "Mean label probability"]
    assert res.params["class"] == "3"
    assert CamDoc.load(tmp_path / "cam" / "cam.json") == dataclasses.replace(doc)
    ctx._claimed.clear()
    one = result(ctx, dataclasses.replace(doc, images=images[:1], reshape={}))
    assert [t.title for t in one.tables] == ["Top-5 predictions"]  # one unlabelled image: no class table
    assert one.summary == "GradCAM on l, target: class(es) 3; 1 image(s), 1 map(s)"
    images[0].label = 1
    ctx._claimed.clear()
    one = result(ctx, dataclasses.replace(doc, images=images[:1], reshape={}))
    assert [t.title for t in one.tables] == ["Per class (top-1 class)", "Top-5 predictions"]
    assert one.tables[1].caption == "Source: src; label 1"


@pytest.mark.parametrize(
    ("method", "name", "passes"), [("scorecam", "ScoreCAM", 5), ("ablationcam", "AblationCAM", 6)]
)
def test_perturbation_passes_are_announced_and_counted(tmp_path, caplog, capsys, method, name, passes):
    """ScoreCAM/AblationCAM: the expected passes logged up front equal the passes counted in cam.json;
    the library's own tqdm bar per image is not left on the console."""
    import logging

    ctx = boxed_context(tmp_path, labels=False)
    ctx.inputs.batch_size = 32  # one batch of 3
    with caplog.at_level(logging.INFO, logger="vizpipe.stages.cam.compute"):
        doc, res = run(ctx, method=method, layer="c2", target_class=1, batch_size=4)
    # per image ceil(6 channels / 4) = 2 masked batches; + 1 forward per batch (+ 1 for AblationCAM)
    expected = 1 + (passes - 5) + 3 * 2
    assert doc.forward_passes == expected
    assert (
        f"{name} on c2: about {expected} forward passes to run (1 class set(s) x 3 image(s) x "
        "ceil(channels / cam.batch_size 4); channels c2: 6)"
    ) in caplog.messages
    err = capsys.readouterr().err
    assert "it/s]" not in err and "%|" not in err, err


def test_announce_metrics(caplog):
    """The metrics' cost is stated before they run; ROAD's imputation is named."""
    import logging

    from vizpipe.stages.cam.compute import announce_metrics

    ctx = boxed_context(Path("unused"), labels=False)
    with caplog.at_level(logging.INFO, logger="vizpipe.stages.cam.compute"):
        announce_metrics(ctx, SimpleNamespace(metrics=[]), 2)
        announce_metrics(ctx, SimpleNamespace(metrics=["complexity", "coherency"]), 2)
        announce_metrics(ctx, SimpleNamespace(metrics=["road_combined", "arcc", "drop_in_confidence"]), 1)
    assert caplog.messages == [
        "cam.metrics complexity, coherency on 6 map(s): about 1 extra forward pass(es) per map batch",
        "cam.metrics road_combined, arcc, drop_in_confidence on 3 map(s): about 18 extra forward pass(es) "
        "per map batch; road_combined, arcc impute every image per percentile (slow on a CPU: ~0.3-1 s "
        "per image)",
    ]


def test_scorecam_chunks_give_the_same_maps(tmp_path, monkeypatch):
    """Splitting a batch image by image (ScoreCAM's memory cap) changes no map, box or label."""
    import vizpipe.stages.cam.compute as compute

    whole, _ = run(boxed_context(tmp_path / "a"), method="scorecam", layer="c2", target_class=[0, 2])
    monkeypatch.setattr(compute, "SCORECAM_MAX_BYTES", 1)
    ctx = boxed_context(tmp_path / "b")
    split, _ = run(ctx, method="scorecam", layer="c2", target_class=[0, 2])
    assert [(im.name, im.label, im.box) for im in split.images] == [
        (im.name, im.label, im.box) for im in whole.images
    ]
    assert [(m.layer, m.target, m.metrics["pointing_game"]) for im in split.images for m in im.maps] == [
        (m.layer, m.target, m.metrics["pointing_game"]) for im in whole.images for m in im.maps
    ]
    assert [m.metrics["energy_in_box"] for im in split.images for m in im.maps] == pytest.approx(
        [m.metrics["energy_in_box"] for im in whole.images for m in im.maps], rel=1e-5
    )
    for a, b in zip(whole.images, split.images, strict=True):
        for ma, mb in zip(a.maps, b.maps, strict=True):
            np.testing.assert_allclose(
                np.load(tmp_path / "b" / mb.npy), np.load(tmp_path / "a" / ma.npy), atol=1e-5
            )


def test_per_layer_maps_from_one_call_are_listed_class_by_class(tmp_path):
    """Without metrics, per-layer maps come from the averaged call: per class, averaged then each layer.

    With metrics (or a meta method) each group runs on its own: group by group. Same maps either way.
    """
    ctx = boxed_context(tmp_path / "a")
    one, _ = run(ctx, layer=["c1", "c2"], per_layer=True, target_class=[2, 0])
    # every kind of map (averaged and per layer) gets the localisation scores of its own map
    from vizpipe.pipeline.metrics.localisation import localisation

    for i, im in enumerate(one.images):
        for m in im.maps:
            want = localisation(np.load(tmp_path / "a" / m.npy), BOXES[i], 0.03)
            assert m.metrics == pytest.approx(want)
    assert [(m.layer, m.target) for m in one.images[0].maps] == [
        ("c1+c2", 2),
        ("c1", 2),
        ("c2", 2),
        ("c1+c2", 0),
        ("c1", 0),
        ("c2", 0),
    ]
    ctx = boxed_context(tmp_path / "b", labels=False)
    apart, _ = run(ctx, layer=["c1", "c2"], per_layer=True, target_class=[2, 0], metrics=["complexity"])
    assert [(m.layer, m.target) for m in apart.images[0].maps] == [
        ("c1+c2", 2),
        ("c1+c2", 0),
        ("c1", 2),
        ("c1", 0),
        ("c2", 2),
        ("c2", 0),
    ]
    for a, b in zip(one.images, apart.images, strict=True):
        by_key = {(m.layer, m.target): m for m in b.maps}
        for m in a.maps:
            np.testing.assert_allclose(
                np.load(tmp_path / "a" / m.npy),
                np.load(tmp_path / "b" / by_key[m.layer, m.target].npy),
                atol=1e-5,
            )
    ctx = boxed_context(tmp_path / "c", labels=False)
    meta, _ = run(ctx, method="finercam", layer=["c1", "c2"], per_layer=True, target_class=[2, 0])
    assert [(m.layer, m.target) for m in meta.images[0].maps] == [
        ("c1+c2", 2),
        ("c1+c2", 0),
        ("c1", 2),
        ("c1", 0),
        ("c2", 2),
        ("c2", 0),
    ]


def test_map_writer_clips_the_drawing_but_saves_the_raw_map(tmp_path):
    """The .npy keeps NaN/inf/out-of-range values; the pictures draw nan->0, inf->1, clipped to [0, 1]."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from vizpipe.stages.cam import CamConfig
    from vizpipe.stages.cam.render import MapWriter

    ctx = boxed_context(tmp_path)
    batch = ctx.inputs.first()
    cam = np.linspace(-0.5, 1.5, 256, dtype=np.float32).reshape(16, 16)
    cam[0, 0], cam[0, 1], cam[0, 2] = np.nan, np.inf, -np.inf
    maps = np.stack([np.zeros_like(cam), cam]).astype(np.float64)
    rows = [CamMap("a+b", 1, "dog", 0.5, 1.0, None, None, None) for _ in range(2)]
    with ctx.writer() as writer:
        out = MapWriter(ctx, CamConfig(image_weight=0.75), writer)(batch, maps, rows)[1]
    stem = "cam/im1/a_b__1_dog"
    assert (out.overlay, out.heatmap, out.npy) == (
        f"{stem}_overlay.png",
        f"{stem}_heatmap.png",
        f"{stem}.npy",
    )
    assert (out.layer, out.target, out.score) == ("a+b", 1, 0.5)
    saved = np.load(tmp_path / out.npy)
    assert saved.dtype == np.float32
    np.testing.assert_array_equal(saved, cam)
    mask = cam.copy()
    mask[0, 0], mask[0, 1], mask[0, 2] = 0.0, 1.0, 0.0
    mask = np.clip(mask, 0, 1)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / out.heatmap)), heatmap_rgb(mask))
    over = show_cam_on_image(batch.rgb[1].astype(np.float32), mask, use_rgb=True, image_weight=0.75)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / out.overlay)), over)


def test_cam_json_round_trip_and_refusals(tmp_path):
    """to_json: indented JSON ending in a newline, NaN refused; load: unknown keys refused."""
    import json

    doc = CamDoc("GradCAM", "gradcam", ["l"], None, {}, {}, [fake_image(0, None, 0, 0.5)])
    text = doc.to_json()
    assert text.endswith("}\n") and text.startswith('{\n  "method": "GradCAM",\n  "method_key": "gradcam"')
    path = tmp_path / "cam.json"
    path.write_text(text)
    assert CamDoc.load(path) == doc and CamDoc.load(str(path)) == doc
    data = json.loads(text)
    data["extra"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match="extra"):
        CamDoc.load(path)
    bad = dataclasses.replace(doc, means={"score": float("nan")})
    with pytest.raises(ValueError):
        bad.to_json()


def test_stage_runs_without_validate(tmp_path):
    """run() plans by itself when validate was not called."""
    ctx = boxed_context(tmp_path, labels=False)
    res = CamStage().run(ctx, CamConfig(layer="c1", target_class=0))
    assert res.data.layers == ["c1"] and [m.target for im in res.data.images for m in im.maps] == [0, 0, 0]


def test_perturbation_passes_with_augmentation_and_two_classes(tmp_path, caplog):
    """aug_smooth multiplies the expected passes by the library's 6 augmentations; class sets too."""
    import logging

    ctx = boxed_context(tmp_path, labels=False)
    ctx.inputs.batch_size = 32
    with caplog.at_level(logging.INFO, logger="vizpipe.stages.cam.compute"):
        doc, _ = run(ctx, method="scorecam", layer="c2", target_class=[0, 1], batch_size=4, aug_smooth=True)
    expected = (1 + 3 * 2) * 6 * 2
    assert (
        f"ScoreCAM on c2: about {expected} forward passes to run (2 class set(s) x 3 image(s) x "
        "ceil(channels / cam.batch_size 4) x 6 augmentations; channels c2: 6)"
    ) in caplog.messages
    # counted: those, plus the one forward pass giving the batch's logits (no one-forward path here)
    assert doc.forward_passes == expected + 1


def zero_head(ctx: RunContext, bias: list[float]) -> RunContext:
    """The head's weights zeroed (as torchvision's vit_b_16 at random init): every image gets the
    logits ``bias``, and no gradient reaches the layers below it."""
    with torch.no_grad():
        ctx.model.fc.weight.zero_()
        ctx.model.fc.bias.copy_(torch.tensor(bias))
    return ctx


def test_flat_maps_are_invalid_warned_badged_and_left_out_of_metrics_and_means(tmp_path):
    """A zero-init head: every map is all zero. Each is marked invalid with its reason, warned once,
    badged in the report, scores no metric and joins no mean; the model's score is kept."""
    ctx = zero_head(boxed_context(tmp_path), [0.0, 0.0, 0.0])
    doc, res = run(ctx, layer=["c1", "c2"], per_layer=True, metrics=["complexity"])
    maps = [m for im in doc.images for m in im.maps]
    assert len(maps) == 3 * 3  # averaged + two per-layer maps per image
    for m in maps:
        assert np.array_equal(np.load(tmp_path / m.npy), np.zeros((16, 16), np.float32))
        assert m.valid is False
        assert m.invalid_reason == "flat map (every pixel 0): no spatial evidence for the class at this layer"
        assert set(m.metrics.values()) == {None} and m.metrics  # the keys stay, the numbers go
        assert m.score == pytest.approx(1 / 3)  # the model's probability is still a true number
    assert ctx.warnings == [
        "CAM: 9 of 9 map(s) are invalid (9 × flat map (every pixel 0): no spatial evidence for the class "
        "at this layer); they are marked valid=false and left out of the metrics and means"
    ]
    assert set(doc.means.values()) - {1 / 3} <= {None} and doc.means["score"] is None
    assert all(set(c.metrics.values()) == {None} and c.mean_score is None for c in doc.classes)
    overlays = [p for p in res.pictures if p.badge is not None]
    assert len(overlays) == 9 and {p.badge for p in overlays} == {"invalid"}
    assert all(
        p.caption.endswith(
            "; invalid: flat map (every pixel 0): no spatial evidence for the class at this layer"
        )
        for p in overlays
    )
    assert all(s.value is None for s in res.scalars if s.name != "cam/top1_accuracy")


def test_one_flat_layer_among_valid_ones_is_the_only_invalid_map(tmp_path):
    """Validity is per map: ``c1`` outputs the same value everywhere (zero weights), so its map is
    flat and invalid, while ``c2`` (zero padding makes its borders differ) and the average stay valid."""
    from vizpipe.stages.cam.rows import flat_problem

    ctx = boxed_context(tmp_path)  # with boxes: localisation scores
    with torch.no_grad():
        ctx.model.c1.weight.zero_()
        ctx.model.c1.bias.fill_(1.0)
    doc, _ = run(ctx, layer=["c1", "c2"], per_layer=True, target_class=1)
    for im in doc.images:
        assert [(m.layer, m.valid) for m in im.maps] == [("c1+c2", True), ("c1", False), ("c2", True)]
        assert im.maps[1].invalid_reason.startswith("flat map (every pixel 0)")
        assert im.maps[0].invalid_reason is None and im.maps[0].metrics["pointing_game"] is not None
        assert im.maps[1].metrics == {"pointing_game": None, "energy_in_box": None}
    assert ctx.warnings == [
        "CAM: 3 of 9 map(s) are invalid (3 × flat map (every pixel 0): no spatial evidence for the class "
        "at this layer); they are marked valid=false and left out of the metrics and means"
    ]
    assert doc.means["score"] is not None
    assert flat_problem(np.full((4, 4), 0.25, np.float32)).startswith("flat map (every pixel 0.25)")
    assert flat_problem(np.eye(4, dtype=np.float32)) is None


def test_ties_break_the_same_way_in_the_top5_and_the_top1_target(tmp_path):
    """Classes 1 and 2 tie for the top output: the top-5 list and the map both put class 1 first."""
    ctx = zero_head(boxed_context(tmp_path, labels=False), [0.5, 2.0, 2.0])
    doc, _ = run(ctx, layer="c2")
    for im in doc.images:
        assert [p.class_index for p in im.top5] == [1, 2, 0]
        assert [m.target for m in im.maps] == [1] == [im.top5[0].class_index]
    ctx2 = zero_head(boxed_context(tmp_path / "b", labels=False), [0.0] * 3)
    doc2, _ = run(ctx2, layer="c2", method="scorecam", batch_size=8)  # the per-class-set path too
    assert [(im.top5[0].class_index, im.maps[0].target) for im in doc2.images] == [(0, 0)] * 3
