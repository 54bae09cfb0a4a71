"""Segmentation, detection and embedding models through the real CLI (issue 23's "done when").

Each run is a subprocess of ``run.py`` on a random-init torchvision model, offline, and ends in a
report with the overlays, the predicted boxes or masks and the scores; a ``-m`` sweep over
detections gives a sweep index comparing them; the segmentation demo trains and beats its
random-init and centre-blob mask IoU. Slow-marked: each is a fresh process and a real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def cam_doc(run: Path) -> dict:
    return json.loads((run / "cam" / "cam.json").read_text())


def test_a_detector_run_gives_a_report_with_boxes_scores_and_overlays(cli, tmp_path):
    run = tmp_path / "det"
    proc = cli(
        [
            "model=fasterrcnn_mobilenet_v3_large_320_fpn",
            "stages=[summary,features,cam]",
            "device=cpu",
            f"hydra.run.dir={run}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = cam_doc(run)
    image = doc["images"][0]
    assert doc["task"] == "detection" and image["detections"] and image["prediction"]
    (m,) = image["maps"]
    assert (
        m["layer"] == "backbone.body.16"
        and m["key"] == "all"
        and m["score"] == image["detections"][0]["score"]
    )
    html = (run / "report.html").read_text()
    assert "prediction: 1 detection(s)" in html and "Top-5 classes by best detection" in html
    assert "best detection class" in html  # the overlay's caption: what it explains, with its score
    features = manifest(run)["stages"][1]
    drawn = {p.name.split("__")[0] for p in (run / "features").glob("*.png")}
    assert features["status"] == "ok" and drawn and all(n.startswith("backbone.body.") for n in drawn)


def test_a_segmentation_run_gives_a_report_with_masks_and_overlays(cli, tmp_path):
    run = tmp_path / "seg"
    proc = cli(
        [
            "model=deeplabv3_mobilenet_v3_large",
            "stages=[summary,features,cam,tensorboard]",
            "input.resize=160",
            "input.crop=160",
            "device=cpu",
            f"hydra.run.dir={run}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = cam_doc(run)
    image = doc["images"][0]
    (m,) = image["maps"]
    assert doc["task"] == "segmentation" and m["valid"] and "summed over its predicted mask" in m["detail"]
    assert (run / image["prediction"]).is_file() and (run / m["overlay"]).is_file()
    html = (run / "report.html").read_text()
    assert "prediction: each pixel&#39;s class" in html and "Top-5 classes by predicted area" in html
    tags = [p["tag"] for s in manifest(run)["stages"] if s["name"] == "cam" for p in s["result"]["pictures"]]
    assert f"cam/prediction/{image['name']}" in tags  # TensorBoard logs the prediction beside the overlays


def test_an_embedding_run_with_a_concept_folder(cli, tmp_path):
    from PIL import Image
    from vizpipe.pipeline.inputs.images import bundled_photo

    photo = Image.open(bundled_photo()).convert("RGB")
    (tmp_path / "photos").mkdir()
    (tmp_path / "flags").mkdir()
    photo.save(tmp_path / "photos" / "hopper.png")
    photo.crop((0, 0, 200, 200)).save(tmp_path / "flags" / "a.png")
    photo.crop((30, 30, 230, 230)).save(tmp_path / "flags" / "b.png")
    run = tmp_path / "emb"
    proc = cli(
        [
            "model=embedding",
            "model.name=resnet18",
            "input=image",
            f"input.path={tmp_path / 'photos'}",
            f"cam.concept={tmp_path / 'flags'}",
            "stages=[summary,cam]",
            "device=cpu",
            f"hydra.run.dir={run}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (m,) = cam_doc(run)["images"][0]["maps"]
    assert m["key"] == "concept_flags" and "2 image(s) averaged" in m["detail"] and -1 <= m["score"] <= 1
    assert "cosine similarity to concept flags" in (run / "report.html").read_text()


def test_a_sweep_over_detections_compares_them_in_the_index(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        [
            "-m",
            "model=fasterrcnn_mobilenet_v3_large_320_fpn",
            "+model.kwargs.min_size=128",
            "+model.kwargs.max_size=128",
            "stages=[cam]",
            "cam.score_threshold=0",
            "cam.box=0,1",
            "device=cpu",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if (p / "manifest.json").is_file())
    keys = [cam_doc(j)["images"][0]["maps"][0]["key"] for j in jobs]
    assert keys == ["det0", "det1"]
    index = (sweep / "index.html").read_text()
    assert "cam.box" in index and "det1" in index


def test_the_segmentation_demo_beats_random_init_and_the_centre_blob(cli, tmp_path):
    run = tmp_path / "demo"
    proc = cli(
        [
            "experiment=shapes_seg_demo",
            "stages=[train,cam]",
            "input.train_count=1000",
            "input.limit=32",
            "train.epochs=3",
            "train.cam_images=0",
            "device=cpu",
            f"hydra.run.dir={run}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    history = json.loads((run / "train" / "history.json").read_text())
    loc = history["localisation"]
    before, after, centre = loc["before"]["mask_iou"], loc["after"]["mask_iou"], loc["chance"]
    assert after > before and after > centre
    assert after > 0.2 and history["epochs"][-1]["val_accuracy"] > 0.9  # pixel accuracy
    assert {k.split("/")[1] for k in loc["after"] if k.startswith("mask_iou/")} == {
        "circle",
        "square",
        "triangle",
        "cross",
        "star",
        "ring",
    }
    doc = cam_doc(run)
    assert doc["means"]["mask_iou"] > doc["means"]["centre_mask_iou"]
