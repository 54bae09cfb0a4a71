"""Scale: light summary runs, one forward pass per batch, streamed data sets, shards, the sweep index."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from vizpipe.pipeline.cache import get_cache
from vizpipe.pipeline.runner import run_pipeline
from vizpipe.pipeline.stage import Merge, Table

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["model=resnet18", "device=cpu", "report.enabled=false"]


def write_images(folder: Path, n: int, size: tuple[int, int] = (48, 40)) -> list[Path]:
    """``n`` small random JPEGs named img_000.jpg ... (sorted = numbered)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img_{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p, quality=80)
        paths.append(p)
    return paths


@pytest.fixture(autouse=True)
def clean_cache():
    get_cache().clear()
    yield
    get_cache().clear()


# =========================================================================== imports


@pytest.mark.slow
def test_summary_run_imports_no_cam_or_drawing_library(tmp_path):
    """stages=[summary] imports neither pytorch_grad_cam, cv2, TensorBoard nor matplotlib."""
    heavy = ["pytorch_grad_cam", "cv2", "tensorboard", "tensorboardX", "matplotlib"]
    heavy += ["torch.utils.tensorboard"]
    code = (  # run.py ends with os._exit after the atexit functions: the check is one of them
        "import atexit, runpy, sys\n"
        f"atexit.register(lambda: print('LOADED', [m for m in {heavy!r} if m in sys.modules]))\n"
        f"sys.argv = ['run.py', 'stages=[summary]', 'hydra.run.dir={tmp_path / 'run'}']\n"
        "runpy.run_path('run.py', run_name='__main__')\n"
    )
    cmd = [sys.executable, "-c", code]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout, out.stdout[-500:]
    assert (tmp_path / "run" / "summary" / "summary.txt").is_file()


# =========================================================================== one forward pass


def test_classes_and_layers_of_one_method_share_one_forward_pass(compose, tmp_path):
    """Three classes x (an averaged pair of layers + each layer): one forward pass per batch."""
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.schema import settings_of
    from vizpipe.stages.cam import CamStage

    cfg = compose(
        [
            *SMALL,
            "input=random",
            "input.shape=[4,3,64,64]",
            "input.batch_size=2",
            "stages=[cam]",
            "cam.layer=[layer3,layer4]",
            "cam.per_layer=true",
            "cam.target_class=[1,7,9]",
        ]
    )
    ctx = build_context(cfg, tmp_path / "run")
    settings = settings_of(cfg, "cam")
    stage = CamStage()
    stage.check_model(ctx, settings)  # the probe's forward pass happens here
    calls = []
    handle = ctx.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        result = stage.run(ctx, settings)
    finally:
        handle.remove()
    doc = result.data
    assert len(doc.images) == 4 and all(len(img.maps) == 3 * 3 for img in doc.images)  # 3 classes x 3 kinds
    assert len(calls) == 2  # two batches of two images


# =========================================================================== EigenCAM on the device


def test_eigencam_torch_equals_the_library_with_the_sign_handled(compose, tmp_path):
    """eigencam_torch == the library's EigenCAM with Seg-Eigen-CAM's sign correction, to 1e-4."""
    import pytorch_grad_cam.eigen_cam as eigen_cam
    from pytorch_grad_cam import EigenCAM
    from pytorch_grad_cam.utils import svd_on_activations as svd
    from vizpipe.pipeline.gradcam.eigencam import EigenCAMTorch
    from vizpipe.pipeline.gradcam.methods import resolve_method

    assert resolve_method("eigencam_torch").cls is EigenCAMTorch
    torch.manual_seed(0)
    import torchvision

    model = torchvision.models.resnet18().eval()
    x = torch.randn(3, 3, 96, 96)
    for layers in (["layer2"], ["layer4"], ["layer3", "layer4"]):
        targets = [model.get_submodule(n) for n in layers]
        with mock.patch.object(eigen_cam, "get_2d_projection", svd.get_2d_projection_with_sign_correction):
            with EigenCAM(model, targets) as cam:
                library = cam(x, None)
        with EigenCAMTorch(model, targets) as cam:
            ours = cam(x, None)
        assert ours.shape == library.shape == (3, 96, 96)
        assert np.abs(ours - library).max() <= 1e-4, layers


@pytest.mark.parametrize("solver", ["svd", "gram"])
def test_eigencam_solvers_give_the_library_projection(solver):
    """Both solvers of first_component equal the library's sign-corrected projection (resnet18, 4 layers).

    ``gram`` is what a GPU uses; it is checked here on the CPU, where its arithmetic is the same.
    """
    import torchvision
    from pytorch_grad_cam.utils import svd_on_activations as svd
    from vizpipe.pipeline.gradcam.eigencam import first_component

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    seen = {}
    for name in ("layer1", "layer2", "layer3", "layer4"):  # 64-512 channels, 24²-3² pixels: both shapes
        model.get_submodule(name).register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, o))
    with torch.no_grad():
        model(torch.randn(2, 3, 96, 96))
    for name, act in seen.items():
        ours = first_component(act, solver).numpy()
        reference = svd.get_2d_projection_with_sign_correction(act.numpy())
        assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max(), name
    flat = torch.zeros(1, 4, 3, 3)  # no variance: a zero map, never NaN
    assert torch.equal(first_component(flat, solver), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="choose auto, svd or gram"):
        first_component(flat, "qr")


# =========================================================================== data sets, streamed


@pytest.mark.slow
def test_a_folder_is_streamed_in_batches_every_output_in_order(compose, tmp_path, caplog):
    """40 images in batches of 8 (limit null): every image's features and maps, in path order."""
    write_images(tmp_path / "data", 40)
    common = [
        *SMALL,
        "input=image",
        f"input.path={tmp_path / 'data'}",
        "input.batch_size=8",
        "input.resize=48",
        "input.crop=48",
        "features.layers=[layer2]",
        "features.max_channels=4",
    ]
    result = run_pipeline(compose([*common, "input.limit=null", "stages=[features,cam]"]), tmp_path / "all")
    assert result.ok, result.error
    names = [f"img_{i:03d}" for i in range(40)]
    cam = json.loads((tmp_path / "all" / "cam" / "cam.json").read_text())
    assert [img["name"] for img in cam["images"]] == names
    for name in names:
        assert len(list((tmp_path / "all" / "cam" / name).glob("*.npy"))) == 1
        assert (tmp_path / "all" / "features" / f"layer2__{name}.png").is_file()
    assert np.load(tmp_path / "all" / "features" / "layer2.npy").shape[0] == 40
    assert sum(c["count"] for c in cam["classes"]) == 40

    caplog.set_level(logging.WARNING)
    result = run_pipeline(compose([*common, "input.limit=25", "stages=[cam]"]), tmp_path / "limited")
    assert result.ok, result.error
    cam = json.loads((tmp_path / "limited" / "cam" / "cam.json").read_text())
    assert [img["name"] for img in cam["images"]] == names[:25]
    said = [r.getMessage() for r in caplog.records if "input.limit" in r.getMessage()]
    assert said == ["Using the first 25 of 40 images (input.limit=25; set input.limit=null for all of them)"]


# =========================================================================== shards merged


def test_merge_tables_sums_counts_and_weights_means():
    spec = Merge(keys=[0, 1], weight=2, means=[3, 4])
    cols = ["Class", "Name", "Images", "Top-1 accuracy", "Mean target probability"]
    a = Table("Per class", cols, [[1, "cat", 3, 1.0, 0.5], [2, "dog", 1, 0.0, None]], merge=spec)
    b = Table("Per class", cols, [[1, "cat", 1, 0.0, 0.1], [3, "eel", 2, None, 0.3]], merge=spec)
    from vizpipe.pipeline.report.merge import merge_tables

    merged = merge_tables([a, b])
    rows = {r[0]: r for r in merged.rows}
    assert rows[1] == [1, "cat", 4, 0.75, pytest.approx(0.4)]
    assert rows[2] == [2, "dog", 1, 0.0, None]
    assert rows[3] == [3, "eel", 2, None, 0.3]
    assert rows["all"][2] == 7 and rows["all"][3] == pytest.approx(3 / 5)
    assert rows["all"][4] == pytest.approx((3 * 0.5 + 1 * 0.1 + 2 * 0.3) / 6)
    assert [r[0] for r in merged.rows] == [1, 2, 3, "all"]


@pytest.mark.slow
def test_sweep_index_merges_a_data_sets_shards(compose, tmp_path):
    """Three shards of one folder: the index's merged per-class table equals the unsharded run's."""
    from vizpipe.pipeline.report import collect_sweep, write_sweep_index
    from vizpipe.pipeline.report.sweep import sweep_context

    write_images(tmp_path / "data", 12)
    common = [
        *SMALL,
        "input=image",
        f"input.path={tmp_path / 'data'}",
        "input.resize=48",
        "input.crop=48",
        "input.batch_size=4",
        "stages=[cam]",
        "cam.target_class=[1,3]",
    ]
    whole = run_pipeline(compose(common), tmp_path / "whole")
    assert whole.ok, whole.error
    sweep = tmp_path / "sweep"
    for i in range(3):
        shard = [f"input.shard={i}/3"]
        assert run_pipeline(compose([*common, *shard]), sweep / f"{i}_input.shard={i}_3", overrides=shard).ok
    task = {"hydra": {"overrides": {"task": ["input.shard=0/3,1/3,2/3"]}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(task))
    write_sweep_index(sweep)
    (group,) = sweep_context(collect_sweep(sweep))["shards"]
    assert group["ok"] == 3 and group["missing"] == []
    (table,) = group["tables"]
    expected = json.loads((tmp_path / "whole" / "cam" / "cam.json").read_text())
    rows = {r[0].text: [c.text for c in r] for r in table.rows}
    for c in expected["classes"]:
        row = rows[str(c["class_index"])]
        assert row[2] == str(c["count"])
        assert float(row[4]) == pytest.approx(c["mean_score"], rel=1e-3)
    assert rows["all"][2] == "12"
    assert "Data sets merged over shards" in (sweep / "index.html").read_text()
    # a shard that failed is named, and left out
    (sweep / "1_input.shard=1_3" / "manifest.json").unlink()
    (sweep / "1_input.shard=1_3" / ".hydra").mkdir()
    (sweep / "1_input.shard=1_3" / ".hydra" / "overrides.yaml").write_text("- input.shard=1/3\n")
    (group,) = sweep_context(collect_sweep(sweep))["shards"]
    assert group["ok"] == 2 and group["missing"] == ["1/3"]


# =========================================================================== the sweep index


def test_index_thumbnails_are_kept_on_disk(tmp_path):
    """A picture larger than the thumbnail is downscaled once; a rebuild reads the kept copy."""
    from vizpipe.pipeline.report import common

    Image.fromarray(np.zeros((600, 400, 3), np.uint8)).save(tmp_path / "big.png")
    cache = tmp_path / ".thumbs"
    view = common.embed(tmp_path, common.PictureView("big.png"), 256, cache=cache)
    (kept,) = cache.iterdir()
    common._thumbnail.cache_clear()
    with mock.patch("PIL.Image.open", side_effect=AssertionError("decoded again")):
        again = common.embed(tmp_path, common.PictureView("big.png"), 256, cache=cache)
    assert again.src == view.src and kept.stat().st_size > 0
    with Image.open(kept) as im:
        assert max(im.size) == 256


def test_joblib_workers_split_the_cores():
    from vizpipe.pipeline.callbacks import joblib_threads

    assert joblib_threads(2, 2) == 1
    assert joblib_threads(-1, 16) == 1
    assert joblib_threads(4, 16) == 4
    assert joblib_threads(1, 8) == 8
    assert joblib_threads(-2, 8) == 1  # 7 workers on 8 cores
    assert joblib_threads(32, 4) == 1


@pytest.mark.slow
def test_sweep_writes_its_index_once_and_derived_job_configs_equal_hydras(cli, tmp_path):
    """Under vizpipe's sweeper every job's .hydra/config.yaml equals the one of Hydra's basic sweeper."""
    args = ["-m", *SMALL, "input=random", "input.shape=[1,3,32,32]", "stages=[cam]"]
    args += ["cam.layer=layer3,layer4", "cam.target_class=1,2,3", "report.markdown=false"]
    ours = cli([*args, f"hydra.sweep.dir={tmp_path / 'ours'}"])
    assert ours.returncode == 0, ours.stderr[-2000:]
    basic = cli([*args, "hydra/sweeper=basic", f"hydra.sweep.dir={tmp_path / 'basic'}"])
    assert basic.returncode == 0, basic.stderr[-2000:]

    def job_names(sweep: Path) -> list[str]:
        return sorted(p.name for p in sweep.iterdir() if p.name[0].isdigit())

    jobs = job_names(tmp_path / "ours")
    assert len(jobs) == 6 and jobs == job_names(tmp_path / "basic")
    for name in jobs:
        for f in ("config.yaml", "overrides.yaml"):
            assert (tmp_path / "ours" / name / ".hydra" / f).read_text() == (
                tmp_path / "basic" / name / ".hydra" / f
            ).read_text(), (name, f)
        a = np.load(next((tmp_path / "ours" / name).rglob("*.npy")))
        assert np.array_equal(a, np.load(next((tmp_path / "basic" / name).rglob("*.npy"))))
    index = tmp_path / "ours" / "index.html"
    last_job = max((tmp_path / "ours" / n / "manifest.json").stat().st_mtime_ns for n in jobs)
    assert index.stat().st_mtime_ns >= last_job
    assert ours.stdout.count("Sweep index") + ours.stderr.count("Sweep index") == 1
