"""Streamed stages at speed, through the real command line: the background writer and the DataLoader
workers change no byte; cam.save and features.save choose the files and the report and sweep index
still work; Ctrl-C leaves only complete files, each listed in the manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from vizpipe.pipeline.inputs import auto_workers

#: small, quick runs: resnet18 at 64 px, batches of 8
FAST = ["model=resnet18", "device=cpu", "input.resize=64", "input.crop=64", "input.batch_size=8"]


def write_images(folder: Path, n: int, size: int = 72) -> Path:
    """``n`` seeded photo-like JPEGs (smooth colours plus noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).resize((size, size))
        noisy = np.asarray(small).astype(np.int16) + rng.integers(-10, 10, (size, size, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"img_{i:03d}.jpg", quality=90)
    return folder


def files(run: Path, *suffixes: str) -> dict[str, bytes]:
    """Every file of the run with one of ``suffixes``: run-relative path -> bytes."""
    return {
        p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.suffix in suffixes
    }


def artifacts(run: Path) -> dict[str, str]:
    """The manifest's artifacts: path -> sha256."""
    manifest = json.loads((run / "manifest.json").read_text())
    steps = [manifest["setup"], *manifest["stages"], manifest["report"]]
    return {a["path"]: a["sha256"] for s in steps for a in s.get("artifacts", [])}


def test_auto_workers():
    """None for one or two batches or data in memory; else half the cores, 1..8."""
    assert auto_workers(64, 32, "image") == 0
    assert auto_workers(10_000, 32, "random") == auto_workers(10_000, 32, "objects") == 0
    assert 1 <= auto_workers(65, 32, "image") <= 8
    assert auto_workers(65, 32, "image") == auto_workers(10_000, 32, "shapes")


def test_config_rules(compose):
    """writers, input.workers and the PNG levels are checked before any work, in one line each."""
    import copy
    import re

    from omegaconf import OmegaConf
    from vizpipe.pipeline.errors import ConfigError
    from vizpipe.pipeline.runner import check_config

    cfg = compose(["stages=[features,cam]"])
    bad = {
        "writers": (-1, "writers must be >= 0 or null (auto), got -1"),
        "input.workers": (-2, "input.workers must be >= 0 or null (auto), got -2"),
        "cam.png_compress_level": (
            10,
            "cam.png_compress_level must be 0 (none, fastest) .. 9 (smallest), got 10",
        ),
        "features.png_compress_level": (-1, "features.png_compress_level must be 0 (none, fastest) .. 9"),
    }
    for key, (value, message) in bad.items():
        job = copy.deepcopy(cfg)
        OmegaConf.update(job, key, value)
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_config(job)
    for key, value in {"writers": 0, "cam.save": [], "features.save": ["grid"]}.items():
        OmegaConf.update(cfg, key, value)
    check_config(cfg)


@pytest.mark.slow
def test_writer_and_workers_change_no_byte(cli, tmp_path):
    """A run with background writers and DataLoader workers equals one with both off: every .npy,
    PNG and JSON record the same bytes, every file listed in the manifest with its hash."""
    folder = write_images(tmp_path / "images", 44)  # 6 batches of 8: auto starts workers
    base = [*FAST, "stages=[features,cam]", "input=image", f"input.path={folder}", "input.limit=null"]
    base += ["features.layers=[layer1,layer4]", "report.enabled=false"]
    runs = {}
    for name, extra in {"overlap": ["writers=3"], "serial": ["writers=0", "input.workers=0"]}.items():
        runs[name] = tmp_path / name
        proc = cli([*base, *extra, f"hydra.run.dir={runs[name]}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
    log = (runs["overlap"] / "run.log").read_text()
    assert "worker process(es) (auto)" in log and "0 worker process(es)" not in log
    a = files(runs["overlap"], ".npy", ".png")
    b = files(runs["serial"], ".npy", ".png")
    assert len(a) == 44 * 3 + 44 * 2 + 2 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    for record in ("cam/cam.json", "features/stats.json"):
        assert (runs["overlap"] / record).read_bytes() == (runs["serial"] / record).read_bytes()
    listed = artifacts(runs["overlap"])
    assert set(a) <= set(listed) and not [p for p in runs["overlap"].rglob(".*") if p.is_file()]


@pytest.mark.slow
def test_save_chooses_the_files_and_the_report_and_index_follow(cli, tmp_path):
    """cam.save=[heatmap]: only heatmaps (the report previews them, cam.json has null for the
    rest); features.save=[npy]: no grids; a sweep over cam.save with no pictures still indexes."""
    folder = write_images(tmp_path / "images", 3)
    base = [*FAST, "input=image", f"input.path={folder}"]
    run = tmp_path / "run"
    proc = cli(
        [*base, "stages=[features,cam]", "cam.save=[heatmap]", "features.save=[npy]", f"hydra.run.dir={run}"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted(p.relative_to(run).as_posix() for p in (run / "cam").rglob("*") if p.is_file())
    assert written == ["cam/cam.json"] + [
        f"cam/img_00{i}/layer4__{c}_heatmap.png" for i, c in cam_classes(run)
    ]
    maps = [m for img in json.loads((run / "cam" / "cam.json").read_text())["images"] for m in img["maps"]]
    assert all(
        m["npy"] is None and m["overlay"] is None and m["heatmap"].endswith("_heatmap.png") for m in maps
    )
    assert not list((run / "features").glob("*.png")) and list((run / "features").glob("*.npy"))
    report = (run / "report.md").read_text()
    assert "_heatmap.png" in report and "_overlay.png" not in report
    sweep = tmp_path / "sweep"
    proc = cli(["-m", *base, "stages=[cam]", "cam.save=[npy],[]", f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if (p / "manifest.json").is_file())
    assert len(jobs) == 2 and (sweep / "index.html").is_file()
    assert (
        list(jobs[0].rglob("*.npy")) and not list(jobs[1].rglob("*.npy")) and not list(sweep.rglob("*.png"))
    )


def cam_classes(run: Path) -> list[tuple[int, int]]:
    """(image number, its top-1 class) of a run's cam.json."""
    doc = json.loads((run / "cam" / "cam.json").read_text())
    return [(int(img["name"][-1]), img["maps"][0]["target"]) for img in doc["images"]]


def default_sigint() -> None:
    """SIGINT's default action in the child (a background shell may have set SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_leaves_complete_files_each_listed(tmp_path):
    """Interrupted while the writer is busy: the manifest says interrupted, every file in cam/ is
    whole (no temporary file left) and listed with its hash, and the images written have all
    three files."""
    folder = write_images(tmp_path / "images", 400)
    run = tmp_path / "run"
    args = [*FAST, "stages=[cam]", "input=image", f"input.path={folder}", "input.limit=null", "writers=1"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={run}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list((run / "cam").glob("*/*.npy"))) < 24:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    on_disk = {p.relative_to(run).as_posix() for p in (run / "cam").rglob("*") if p.is_file()}
    assert not [p for p in on_disk if Path(p).name.startswith(".")]  # no temporary file left
    listed = artifacts(run)
    assert on_disk and on_disk <= set(listed)
    from vizpipe.pipeline.files import sha256_file

    assert all(sha256_file(run / p) == listed[p] for p in on_disk)
    for p in on_disk:
        if p.endswith(".npy"):
            np.load(run / p)  # whole
        else:
            Image.open(run / p).load()
    folders = {Path(p).parent for p in on_disk}
    complete = [f for f in folders if len([p for p in on_disk if Path(p).parent == f]) == 3]
    assert len(complete) >= 20 and len(folders) - len(complete) <= 1  # at most the image being handed over
