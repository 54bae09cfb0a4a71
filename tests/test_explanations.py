"""The explanations sweep end to end, and the CAM stage's pieces of it.

Quick: a pixel attribution through the CAM stage (files, record, TensorBoard tags, metrics with
their explanations), the layer sweep's duplicate jobs, the train stage's reuse within a process,
the index's stacked figure and verdicts. Slow: ``run.py -m experiment=shapes_demo
sweep=explanations`` on two methods × two layers, which also reproduces Adebayo et al.'s result
on the trained shapes model (guided backprop's maps stay similar as the layers are randomised,
Grad-CAM's do not).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from conftest import compose_config as compose
from vizpipe.pipeline.schema import settings_of
from vizpipe.stages.cam import CamStage
from vizpipe.stages.cam.record import CamDoc


def shapes_cfg(tmp_path: Path, *overrides: str):
    return compose(
        [
            "model=shapes_net",
            "input=shapes",
            "input.limit=6",
            "input.batch_size=4",
            "stages=[cam]",
            *overrides,
        ]
    )


def run_cam(cfg, out: Path, sweep: dict | None = None):
    from vizpipe.pipeline.factory import build_context

    ctx = build_context(cfg, out)
    ctx.sweep = dict(sweep or {})
    stage = CamStage()
    settings = settings_of(cfg, "cam")
    stage.check_model(ctx, settings)
    return ctx, stage.run(ctx, settings)


def test_a_pixel_attribution_is_written_drawn_and_recorded_like_a_cam(tmp_path: Path) -> None:
    cfg = shapes_cfg(
        tmp_path,
        "cam.method=saliency",
        "cam.metrics=[deletion_auc,insertion_auc,sparseness,energy_in_mask,best_mask_iou]",
        "cam.metric_args={deletion_auc: {step: 256}, insertion_auc: {step: 512}}",
    )
    ctx, res = run_cam(cfg, tmp_path / "run")
    doc = CamDoc.load(tmp_path / "run" / "cam" / "cam.json")
    assert doc.method == doc.method_key == "saliency" and doc.layers == ["input"]
    m = doc.images[0].maps[0]
    assert m.layer == "input" and m.npy.endswith("input__0_circle.npy")
    cam = np.load(tmp_path / "run" / m.npy)
    assert cam.shape == (64, 64) and cam.dtype == np.float32 and cam.max() == 1.0 and cam.min() >= 0
    assert set(m.metrics) == {
        "deletion_auc",
        "insertion_auc",
        "sparseness",
        "energy_in_mask",
        "best_mask_iou",
        "pointing_game",
        "energy_in_box",
    }
    assert doc.metric_targets["best_mask_iou"] == "the object's mask"
    assert res.params == {"method": "saliency", "layer": "input", "class": "top1"}
    assert any(p.tag == f"cam/saliency/input/0_circle/{doc.images[0].name}" for p in res.pictures)
    titles = [t.title for t in res.tables]
    assert "Metrics" in titles and "Time per metric" in titles
    explained = next(t for t in res.tables if t.title == "Metrics")
    assert [r[0] for r in explained.rows] == [k for k in doc.means if k not in ("score", "top1_accuracy")]
    assert all(r[5].startswith("https://arxiv.org/") for r in explained.rows) and explained.links == [5]
    curves = json.loads((tmp_path / "run" / "cam" / "curves.json").read_text())
    assert len(curves["deletion"]["mean"]) == 4096 // 256 + 1 and curves["insertion"]["maps"] == 6
    assert "cam/curves.json" in res.files and any(p.path == "cam/curves.png" for p in res.pictures)


def test_a_pixel_attribution_in_a_layer_sweep_is_computed_once(tmp_path: Path) -> None:
    """Only the job with the sweep's first cam.layer computes an input attribution; guided_gradcam
    (which uses the layer) and every CAM compute in every job."""
    sweep = {"cam.layer": ["conv2", "conv3"]}
    _, first = run_cam(shapes_cfg(tmp_path, "cam.method=sobel", "cam.layer=conv2"), tmp_path / "a", sweep)
    assert (tmp_path / "a" / "cam" / "cam.json").is_file() and first.data is not None
    _, again = run_cam(shapes_cfg(tmp_path, "cam.method=sobel", "cam.layer=conv3"), tmp_path / "b", sweep)
    assert not (tmp_path / "b" / "cam").exists() and again.data is None and not again.scalars
    assert again.params["computed_by"] == "cam.layer=conv2" and "nothing computed here" in again.summary
    _, layered = run_cam(
        shapes_cfg(tmp_path, "cam.method=guided_gradcam", "cam.layer=conv3"), tmp_path / "c", sweep
    )
    assert CamDoc.load(tmp_path / "c" / "cam" / "cam.json").layers == ["conv3"] and layered.data is not None


def test_sanity_checks_in_the_record(tmp_path: Path) -> None:
    cfg = shapes_cfg(tmp_path, "cam.method=gradcam", "cam.sanity=[parameters,data]", "cam.sanity_images=3")
    ctx, res = run_cam(cfg, tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "cam" / "sanity" / "sanity.json").read_text())
    steps = [s["randomised"] for s in doc["steps"]]
    assert steps == ["linear", "conv3.1", "conv3.0", "conv2.1", "conv2.0", "conv1.1", "conv1.0"]
    assert all(len(s["spearman"]) == len(s["ssim"]) == 3 for s in doc["steps"])
    assert doc["verdicts"]["parameters"] in ("pass", "fail") and doc["verdicts"]["data"] is None
    assert any("train.random_labels=true" in w for w in ctx.warnings)  # no random-label model here
    (scalar,) = [s for s in res.scalars if s.name == "cam/sanity/parameters"]
    assert scalar.key and scalar.better == "lower" and scalar.threshold == 0.5
    mean = np.mean([np.mean(s["spearman"]) for s in doc["steps"]])
    assert scalar.value == pytest.approx(mean)
    (row,) = [p for p in res.pictures if p.stack]
    assert row.path == "cam/sanity/row.png" and (tmp_path / "run" / row.path).is_file()


def test_metric_and_sanity_settings_are_refused_in_one_line() -> None:
    from vizpipe.pipeline.errors import ConfigError
    from vizpipe.stages.cam.plan import check_settings

    base = compose(["model=shapes_net", "input=shapes"])
    bad = {
        "cam.metrics coherency recompute the map with a grad-cam CAM object": [
            "cam.method=saliency",
            "cam.metrics=[coherency]",
        ],
        "Unknown cam.sanity check 'weights'. Valid choices (closest first): parameters, data": [
            "cam.sanity=[weights]"
        ],
        "cam.sanity_images must be >= 1": ["cam.sanity_images=0"],
        "cam.sanity_threshold must be in [-1, 1]": ["cam.sanity_threshold=2"],
        "Unknown CAM method 'intgrad'": ["cam.method=intgrad"],
    }
    for message, overrides in bad.items():
        cfg = compose(["model=shapes_net", "input=shapes", *overrides])
        with pytest.raises(ConfigError, match=re.escape(message)) as info:
            check_settings(settings_of(cfg, "cam"))
        assert "\n" not in str(info.value)
    check_settings(settings_of(base, "cam"))


def test_the_train_stage_trains_once_per_process(tmp_path: Path) -> None:
    """A second run with the same training reuses the weights and copies the files; another seed
    (another training) trains."""
    from vizpipe.pipeline.runner import run_pipeline
    from vizpipe.stages.train import reuse

    reuse.forget()
    common = [
        "model=shapes_net",
        "input=shapes",
        "input.limit=2",
        "stages=[train]",
        "train.epochs=1",
        "train.max_steps=2",
        "input.train_count=16",
        "input.val_count=4",
        "train.cam_images=1",  # a picture to copy
        "train.pointing_game=false",
        "train.histograms=false",
        "train.graph=false",
    ]
    first = run_pipeline(compose(common), tmp_path / "a")
    second = run_pipeline(compose(common), tmp_path / "b")
    assert first.status == second.status == "ok"
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    (train,) = [s for s in manifest["stages"] if s["name"] == "train"]
    assert train["result"]["summary"].startswith("weights trained by a (same model, data, settings")
    for rel in ("train/checkpoint.pt", "train/history.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    third = run_pipeline(compose([*common, "train.lr=0.01"]), tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert not manifest["stages"][0]["result"]["summary"].startswith("weights trained by")
    assert third.status == "ok"
    reuse.forget()


def test_random_labels_copy(tmp_path: Path) -> None:
    from vizpipe.pipeline.runner import run_pipeline
    from vizpipe.stages.train.random_labels import RandomLabels

    items = [{"label": 1, "x": i} for i in range(50)]
    labels = [RandomLabels(items, 6, 0)[i]["label"] for i in range(50)]
    assert labels == [RandomLabels(items, 6, 0)[i]["label"] for i in range(50)] and len(set(labels)) == 6
    cfg = compose(
        [
            "model=shapes_net",
            "input=shapes",
            "input.limit=4",
            "stages=[train,cam]",
            "train.epochs=1",
            "train.max_steps=2",
            "input.train_count=16",
            "input.val_count=8",
            "train.cam_images=0",
            "train.random_labels=true",
            "cam.sanity=[data]",
            "cam.sanity_images=2",
        ]
    )
    result = run_pipeline(cfg, tmp_path / "run")
    assert result.status == "ok" and (tmp_path / "run" / "train" / "random_labels.pt").is_file()
    doc = json.loads((tmp_path / "run" / "cam" / "sanity" / "sanity.json").read_text())
    assert [s["randomised"] for s in doc["steps"]] == ["random labels"] and doc["verdicts"]["data"] in (
        "pass",
        "fail",
    )


@pytest.mark.slow
def test_explanations_sweep_on_the_trained_shapes_model(tmp_path: Path) -> None:
    """Two methods × two layers on the shapes demo: one training, the duplicate job computes
    nothing, the index ranks, names winners and verdicts and stacks the randomisation figure; and
    Adebayo et al.'s qualitative result: guided backprop's maps stay similar under cascading
    randomisation (its check fails), Grad-CAM's do not (it passes)."""
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "experiment=shapes_demo",
        "sweep=explanations",
        "cam.method=gradcam,guided_backprop",
        "cam.layer=conv2,conv3",
        "input.limit=8",
        "train.random_labels=false",
        "cam.metrics=[deletion_auc,road_combined]",
        "cam.sanity=[parameters]",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 4
    first = (jobs[0] / "train" / "checkpoint.pt").read_bytes()
    for job in jobs[1:]:
        record = json.loads((job / "manifest.json").read_text())["stages"][0]["result"]
        assert record["summary"].startswith(f"weights trained by {jobs[0].name}")
        assert (job / "train" / "checkpoint.pt").read_bytes() == first
    assert not (jobs[3] / "cam").exists()  # guided_backprop at conv3: conv2's job computed it

    def sanity(job: Path) -> dict:
        return json.loads((job / "cam" / "sanity" / "sanity.json").read_text())

    gradcam, guided = sanity(jobs[1]), sanity(jobs[2])  # gradcam at conv3, guided backprop

    def means(doc: dict) -> list[float]:
        return [float(np.mean(s["spearman"])) for s in doc["steps"]]

    assert means(guided)[0] > 0.5 > means(gradcam)[0]  # the head randomised: GBP's maps stay
    assert np.mean(means(guided)) > np.mean(means(gradcam)) + 0.2
    assert guided["verdicts"]["parameters"] == "fail" and gradcam["verdicts"]["parameters"] == "pass"
    index = (sweep / "index.html").read_text()
    assert "Best per number" in index and 'class="badge pass"' in index and 'class="badge fail"' in index
    assert "report.html#cam" in index
    from PIL import Image

    with Image.open(sweep / "figures" / "randomisation_check.png") as fig:
        with Image.open(jobs[0] / "cam" / "sanity" / "row.png") as row:
            assert fig.size == (row.size[0], 3 * row.size[1])  # three jobs drew a row


def test_attributions_metrics_and_sanity_reach_tensorboard(tmp_path: Path) -> None:
    """The TensorBoard stage logs an attribution's maps, its metrics and its sanity row as it logs
    a CAM's (it reads the CAM stage's record)."""
    from test_tensorboard import read_events
    from vizpipe.pipeline.runner import run_pipeline

    cfg = compose(
        [
            "model=shapes_net",
            "input=shapes",
            "input.limit=2",
            "stages=[cam,tensorboard]",
            "cam.method=deeplift",
            "cam.metrics=[sparseness]",
            "cam.sanity=[parameters]",
            "cam.sanity_images=1",
        ]
    )
    assert run_pipeline(cfg, tmp_path / "run").status == "ok"
    tags = read_events(tmp_path / "run" / "tensorboard").Tags()
    assert any(t.startswith("cam/deeplift/input/") for t in tags["images"])
    assert {"cam/sanity/row", "cam/sanity/similarity"} <= set(tags["images"])
    assert {"cam/sparseness", "cam/sanity/parameters"} <= set(tags["scalars"])


# --------------------------------------------------------------------------- resume (issue 20)


def _interrupt_after(monkeypatch, records: int) -> list[str]:
    """SIGTERM (as its handler raises it) once ``records`` batches are recorded; the keys recorded."""
    from vizpipe.pipeline.errors import Interrupted
    from vizpipe.pipeline.progress import Progress

    real, keys = Progress.record, []

    def record(self, key, files, data=None):
        real(self, key, files, data)
        keys.append(f"{self.stage}:{key}")
        if len(keys) == records:
            raise Interrupted("SIGTERM", 143)

    monkeypatch.setattr(Progress, "record", record)
    return keys


@pytest.mark.slow
def test_a_resumed_attribution_run_keeps_its_maps_curves_and_sanity(tmp_path: Path, monkeypatch) -> None:
    """Interrupted after 2 of the CAM stage's 4 batches: the resumed run computes only the last two
    and writes what an uninterrupted run writes (maps, cam.json, the mean curves, the sanity checks)."""
    from vizpipe.pipeline.compare import compare_runs
    from vizpipe.pipeline.runner import run_pipeline

    cfg = compose(
        [
            "model=shapes_net",
            "input=shapes",
            "input.limit=16",
            "input.batch_size=4",
            "stages=[cam]",
            "cam.method=saliency",
            "cam.metrics=[deletion_auc,insertion_auc]",
            "cam.metric_args={deletion_auc:{steps:4},insertion_auc:{steps:4}}",
            "cam.sanity=[parameters]",
            "cam.sanity_images=2",
            "report.enabled=false",
        ]
    )
    full, out = tmp_path / "full", tmp_path / "run"
    assert run_pipeline(cfg, full).ok
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, out)
    monkeypatch.undo()
    keys = _interrupt_after(monkeypatch, 99)
    result = run_pipeline(cfg, out, resume=True)
    assert result.ok, result.error
    assert keys == ["cam:input/2", "cam:input/3"]  # the first two batches' maps were kept
    comparison = compare_runs(full, out)
    assert comparison.equal, comparison.first
    for name in ("cam/cam.json", "cam/curves.json", "cam/sanity/sanity.json"):
        assert (full / name).read_bytes() == (out / name).read_bytes(), name
    assert json.loads((out / "cam/curves.json").read_text())["deletion"]["maps"] == 16


@pytest.mark.slow
def test_a_resumed_run_after_training_gets_the_random_label_copy_back(tmp_path: Path, monkeypatch) -> None:
    """Interrupted in the CAM stage after the train stage (with its random-label copy) finished:
    resume keeps the training (Stage.restore) and the data randomisation check sees the copy."""
    from vizpipe.pipeline.runner import run_pipeline

    cfg = compose(
        [
            "model=shapes_net",
            "input=shapes",
            "input.limit=8",
            "input.batch_size=4",
            "stages=[train,cam]",
            "train.epochs=1",
            "train.max_steps=2",
            "input.train_count=16",
            "input.val_count=8",
            "train.cam_images=0",
            "train.random_labels=true",
            "cam.sanity=[data]",
            "cam.sanity_images=2",
            "report.enabled=false",
        ]
    )
    full, out = tmp_path / "full", tmp_path / "run"
    assert run_pipeline(cfg, full).ok
    from vizpipe.stages.train import reuse

    reuse.forget()  # the second run trains for itself
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, out)
    monkeypatch.undo()
    keys = _interrupt_after(monkeypatch, 99)
    result = run_pipeline(cfg, out, resume=True)
    assert result.ok, result.error
    assert all(k.startswith("cam:") for k in keys)  # nothing trained again
    for name in ("train/random_labels.pt", "cam/cam.json", "cam/sanity/sanity.json"):
        assert (full / name).read_bytes() == (out / name).read_bytes(), name
    assert json.loads((out / "cam/sanity/sanity.json").read_text())["verdicts"]["data"] in ("pass", "fail")
