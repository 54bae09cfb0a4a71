"""The fault matrix, part two (issue 20): runs that survive kills, signals, full disks, concurrent
runs and bad files, each tried through the real command line with its expected outcome.

``CASES`` is the table (the README's *Reliability* section lists the same rows): each ``Case``
tries one thing in a fresh ``tmp_path`` and returns an ``Outcome``; ``test_case`` checks what
every row promises (its exit status, at most one ``vizpipe: error:`` line naming what went
wrong, never a traceback) and each row's ``check`` its own facts, above all that nothing is
lost: every file a manifest lists is there with its recorded sha256, no truncated file carries
a final name, and a resumed run's ``.npy`` files are byte for byte an uninterrupted run's.
The launcher rows (a worker killed under joblib, submitit, Ray) are in ``test_launchers.py``;
the in-process resume tests in ``test_resume.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

SMALL = ["model=seed_net", "input=random", "input.shape=[1,3,32,32]"]
#: the CAM run killed and resumed: 300 images in a folder, resnet18 (random weights), small pictures
CAM300 = [
    "model=resnet18",
    "device=cpu",
    "input=image",
    "input.limit=null",
    "input.batch_size=20",
    "input.resize=null",
    "input.crop=null",
    "stages=[cam]",
    "report.enabled=false",
]
#: the shapes demo's training, smaller (the same config: model, data, optimizer, one-cycle schedule)
SHAPES = [
    "experiment=shapes_demo",
    "stages=[train]",
    "input.train_count=256",
    "input.val_count=64",
    "input.limit=16",
    "train.epochs=4",
    "train.cam_images=2",
    "report.enabled=false",
]


@dataclass
class Outcome:
    """What a case left: exit status and output."""

    rc: int
    out: str = ""
    err: str = ""


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}


def default_sigint() -> None:
    """SIGINT's default action in the child, whatever the shell running the tests does with it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        preexec_fn=default_sigint,
    )


def run(args: list[str], cwd: Path) -> Outcome:
    proc = start(args, cwd)
    out, err = proc.communicate(timeout=900)
    return Outcome(proc.returncode, out, err)


def finish(proc: subprocess.Popen) -> Outcome:
    out, err = proc.communicate(timeout=900)
    return Outcome(proc.returncode, out, err)


def wait_for(test: Callable[[], bool], what: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if test():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def batches_done(folder: Path, stage: str) -> int:
    path = folder / ".vizpipe" / "progress" / f"{stage}.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


def manifest(folder: Path) -> dict:
    from vizpipe.pipeline.manifest import load

    return load(folder)


def nothing_lost(folder: Path) -> None:
    """Every artifact the manifest lists is there with its sha256; every .npy loads; no
    temporary file is left under a final name."""
    from vizpipe.pipeline.files import sha256_file

    m = json.loads((folder / "manifest.json").read_text())
    for rec in [m.get("setup") or {}, *m.get("stages", []), m.get("report") or {}]:
        for a in rec.get("artifacts") or []:
            assert sha256_file(folder / a["path"]) == a["sha256"], a["path"]
    for npy in folder.rglob("*.npy"):
        np.load(npy)
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def images(folder: Path, count: int = 300, side: int = 48) -> Path:
    """``count`` small RGB PNG files (seeded noise), once per folder."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"im{i:03d}.png")
    return folder


def npys(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.npy"))}


# =========================================================================== one owner per folder


def case_two_runs_one_folder(tmp: Path) -> Outcome:
    """Two runs started at once into one folder: one runs, one is refused; the folder holds only
    the winner's files (its .hydra/ and run.log included)."""
    out = tmp / "out"
    procs = [start([*SMALL, f"stages=[{s}]", f"hydra.run.dir={out}"], tmp) for s in ("summary", "kernels")]
    a, b = (finish(p) for p in procs)
    ok, refused = (a, b) if a.rc == 0 else (b, a)
    stage = "summary" if ok is a else "kernels"
    assert ok.rc == 0 and refused.rc == 2, (a, b)
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert folders == [stage]
    overrides = (out / ".hydra" / "overrides.yaml").read_text()
    assert f"stages=[{stage}]" in overrides and "kernels" not in overrides.replace(f"[{stage}]", "")
    assert (out / "run.log").read_text().count("run folder") <= 1
    nothing_lost(out)
    return refused


def case_used_folder(tmp: Path) -> Outcome:
    """A run into a finished run's folder: refused; every file there stays byte for byte."""
    out = tmp / "out"
    assert run([*SMALL, "stages=[summary]", f"hydra.run.dir={out}"], tmp).rc == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    got = run([*SMALL, "stages=[kernels]", f"hydra.run.dir={out}"], tmp)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    return got


def case_same_second(tmp: Path) -> Outcome:
    """Two runs whose timestamped folder is the same (a pattern of one per year): two folders."""
    args = [*SMALL, "stages=[summary]", "hydra.run.dir=out/${now:%Y}"]
    a, b = (finish(p) for p in [start(args, tmp), start(args, tmp)])
    assert a.rc == b.rc == 0, (a, b)
    year = time.strftime("%Y")
    assert sorted(p.name for p in (tmp / "out").iterdir()) == [year, f"{year}_1"]
    for folder in (tmp / "out").iterdir():
        nothing_lost(folder)
        assert (folder / "run.log").read_text().count("run folder") <= 1
    return Outcome(0)


def case_sweep_into_used_folder(tmp: Path) -> Outcome:
    sweep = tmp / "sweep"
    assert run(["-m", *SMALL, "stages=[summary]", "seed=1,2", f"hydra.sweep.dir={sweep}"], tmp).rc == 0
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    got = run(["-m", *SMALL, "stages=[summary]", "seed=1,2", f"hydra.sweep.dir={sweep}"], tmp)
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before
    return got


# =========================================================================== signals and resume


def interrupted_cam(tmp: Path, sig: int) -> Outcome:
    """SIGTERM or SIGINT once the CAM stage has finished a few batches: one line, exit 128+sig,
    the manifest says interrupted and how to resume; ``resume=`` then ends with the files of an
    uninterrupted run."""
    folder = images(tmp / "imgs", 80)
    args = [*CAM300, f"input.path={folder}"]
    full = run([*args, "hydra.run.dir=full"], tmp)
    assert full.rc == 0, full.err
    proc = start([*args, "hydra.run.dir=cut"], tmp)
    wait_for(lambda: batches_done(tmp / "cut", "cam") >= 1, "a finished CAM batch")
    proc.send_signal(sig)
    got = finish(proc)
    m = manifest(tmp / "cut")
    assert m["status"] == "interrupted" and m["interrupted"]["signal"] == signal.Signals(sig).name
    assert m["interrupted"]["resume"].endswith(f"resume={(tmp / 'cut').resolve()}")
    nothing_lost(tmp / "cut")
    again = run([*args, "resume=cut"], tmp)
    assert again.rc == 0, again.err
    assert npys(tmp / "full") == npys(tmp / "cut")
    return got


def case_sigterm(tmp: Path) -> Outcome:
    return interrupted_cam(tmp, signal.SIGTERM)


def case_sigint(tmp: Path) -> Outcome:
    return interrupted_cam(tmp, signal.SIGINT)


def case_resume_other_config(tmp: Path) -> Outcome:
    out = tmp / "out"
    proc = start(
        [
            *SMALL,
            "input.shape=[64,3,32,32]",
            "input.limit=null",
            "input.batch_size=4",
            "stages=[cam]",
            f"hydra.run.dir={out}",
        ],
        tmp,
    )
    wait_for(lambda: batches_done(out, "cam") >= 1, "a finished CAM batch")
    proc.kill()
    proc.communicate()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    got = run(
        [
            *SMALL,
            "input.shape=[64,3,32,32]",
            "input.limit=null",
            "input.batch_size=8",
            "stages=[cam]",
            f"resume={out}",
        ],
        tmp,
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    return got


def case_resume_finished(tmp: Path) -> Outcome:
    out = tmp / "out"
    assert run([*SMALL, "stages=[summary]", f"hydra.run.dir={out}"], tmp).rc == 0
    got = run([*SMALL, "stages=[summary]", f"resume={out}"], tmp)
    assert "nothing to resume" in got.out
    return got


def case_killed_sweep(tmp: Path) -> Outcome:
    """kill -9 of a sweep (basic launcher) in its second job: the index reads it interrupted;
    resume runs the second and third jobs only, the first's files untouched."""
    sweep = tmp / "sweep"
    args = [
        "-m",
        *SMALL,
        "input.shape=[48,3,32,32]",
        "input.limit=null",
        "input.batch_size=4",
        "stages=[cam]",
        "seed=1,2,3",
    ]
    proc = start([*args, f"hydra.sweep.dir={sweep}"], tmp)
    wait_for(lambda: batches_done(sweep / "1_seed=2", "cam") >= 1, "the second job's first batch")
    proc.kill()
    proc.communicate()
    from vizpipe.pipeline.report import collect_sweep

    assert {j.name: j.status for j in collect_sweep(sweep).jobs} == {
        "0_seed=1": "ok",
        "1_seed=2": "interrupted",
    }
    first = {p: p.stat().st_mtime_ns for p in (sweep / "0_seed=1").rglob("*")}
    got = run([*args, f"resume={sweep}"], tmp)
    assert {j.name: j.status for j in collect_sweep(sweep).jobs} == {
        "0_seed=1": "ok",
        "1_seed=2": "ok",
        "2_seed=3": "ok",
    }
    assert {p: p.stat().st_mtime_ns for p in (sweep / "0_seed=1").rglob("*")} == first
    return got


# =========================================================================== disks and files


def tiny_disk(tmp: Path, size: str = "2m") -> Path | None:
    """A tmpfs of ``size`` at ``tmp/disk`` (root only; None elsewhere)."""
    disk = tmp / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True
    )
    return disk if done.returncode == 0 else None


def case_full_disk(tmp: Path) -> Outcome:
    """The run folder on a 2 MB file system that fills up during CAM: one line naming the file,
    the error and what is free; the manifest says the stage failed; no truncated file."""
    disk = tiny_disk(tmp)
    if disk is None:
        pytest.skip("mounting a tmpfs needs root")
    try:
        got = run(
            [
                *SMALL,
                "input.shape=[200,3,64,64]",
                "input.limit=null",
                "stages=[cam]",
                f"hydra.run.dir={disk / 'out'}",
            ],
            tmp,
        )
        m = json.loads((disk / "out" / "manifest.json").read_text())
        assert m["status"] == "failed" and m["stages"][0]["status"] == "failed"
        assert "No space left on device" in m["stages"][0]["error"]
        nothing_lost(disk / "out")
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    return got


def case_file_size_limit(tmp: Path) -> Outcome:
    """No root needed: the process's file size limit (``ulimit -f``) stops the CAM writes."""
    import resource

    def limit() -> None:
        default_sigint()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))

    args = [*SMALL, "input.shape=[200,3,64,64]", "input.limit=null", "stages=[cam]", "hydra.run.dir=out"]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        preexec_fn=limit,
    )
    got = finish(proc)
    m = json.loads((tmp / "out" / "manifest.json").read_text())
    assert m["stages"][0]["status"] == "failed" and "File too large" in m["stages"][0]["error"]
    nothing_lost(tmp / "out")
    return got


def case_bomb_stop(tmp: Path) -> Outcome:
    from PIL import Image

    folder = images(tmp / "imgs", 4, 32)
    Image.new("L", (12000, 16000)).save(folder / "zz_bomb.png")  # 192 M pixels: PIL refuses it
    return run(
        ["model=seed_net", "input=image", f"input.path={folder}", "stages=[cam]", "hydra.run.dir=out"], tmp
    )


def case_bomb_skip(tmp: Path) -> Outcome:
    case_bomb_stop(tmp)
    got = run(
        [
            "model=seed_net",
            "input=image",
            f"input.path={tmp / 'imgs'}",
            "input.on_bad_image=skip",
            "stages=[cam]",
            "hydra.run.dir=out2",
        ],
        tmp,
    )
    m = manifest(tmp / "out2")
    skipped = "skipped (input.on_bad_image=skip): zz_bomb.png (too large to decode safely"
    assert any(skipped in w for w in m["warnings"])
    assert len(json.loads((tmp / "out2" / "cam" / "cam.json").read_text())["images"]) == 4
    return got


def case_fifo(tmp: Path) -> Outcome:
    os.mkfifo(tmp / "pipe")
    return run(
        ["model=seed_net", "input=image", f"input.path={tmp / 'pipe'}", "stages=[cam]", "hydra.run.dir=out"],
        tmp,
    )


# =========================================================================== kill -9 and resume


def test_kill_cam_at_three_points_then_resume(tmp_path):
    """``kill -9`` at three points of a 300-image CAM run (early, in the middle, late), then
    ``resume=``: every ``.npy`` byte for byte an uninterrupted run's; batches are not redone."""
    folder = images(tmp_path / "imgs")
    args = [*CAM300, f"input.path={folder}"]
    assert run([*args, "hydra.run.dir=full"], tmp_path).rc == 0
    reference = npys(tmp_path / "full")
    assert len(reference) == 300
    for point in (2, 8, 14):  # of 15 batches
        cut = tmp_path / f"cut{point}"
        proc = start([*args, f"hydra.run.dir={cut}"], tmp_path)
        wait_for(lambda cut=cut, point=point: batches_done(cut, "cam") >= point, f"batch {point}")
        proc.kill()
        proc.communicate()
        assert manifest(cut)["status"] == "interrupted"
        again = run([*args, f"resume={cut}"], tmp_path)
        assert again.rc == 0, again.err
        assert f"cam: {point}" in again.out or f"cam: {point + 1}" in again.out  # batches kept
        assert npys(cut) == reference, point
        nothing_lost(cut)


def test_kill_shapes_training_then_resume(tmp_path):
    """``kill -9`` during the shapes demo's training (after its second epoch), then ``resume=``:
    the checkpoint's tensors equal an uninterrupted run's (CPU)."""
    import torch

    assert run([*SHAPES, "hydra.run.dir=full"], tmp_path).rc == 0
    cut = tmp_path / "cut"
    proc = start([*SHAPES, f"hydra.run.dir={cut}"], tmp_path)
    state = cut / ".vizpipe" / "progress" / "train.state"
    history = cut / "train" / "history.json"
    wait_for(lambda: state.is_file() and json.loads(history.read_text())["epochs_done"] >= 2, "epoch 2")
    proc.kill()
    proc.communicate()
    again = run([*SHAPES, f"resume={cut}"], tmp_path)
    assert again.rc == 0, again.err
    a = torch.load(tmp_path / "full" / "train" / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "train" / "checkpoint.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# =========================================================================== the table


@dataclass(frozen=True)
class Case:
    """One row: what is tried, and what must come of it."""

    name: str
    tried: str  # one line (README: Reliability)
    act: Callable[[Path], Outcome]
    status: int  # expected exit status (refused before any work: 2; a failed run: 1; signals 130/143)
    says: str = ""  # a substring of the one line on stderr ("" = no error line)


CASES = [
    Case(
        "two-runs-one-folder",
        "two runs started at once into one folder",
        case_two_runs_one_folder,
        2,
        "vizpipe never mixes two runs in one folder",
    ),
    Case(
        "used-folder",
        "a run into a finished run's folder",
        case_used_folder,
        2,
        "already holds another run's files",
    ),
    Case("same-second", "two runs whose timestamped folder is the same", case_same_second, 0),
    Case(
        "sweep-into-used-folder",
        "a sweep into an existing sweep folder",
        case_sweep_into_used_folder,
        2,
        "already holds another run's files",
    ),
    Case("sigterm", "SIGTERM during CAM, then resume=", case_sigterm, 143, "interrupted by SIGTERM"),
    Case("sigint", "Ctrl-C (SIGINT) during CAM, then resume=", case_sigint, 130, "interrupted by SIGINT"),
    Case(
        "resume-other-config",
        "resume= with another input.batch_size",
        case_resume_other_config,
        2,
        "the config differs from the run's in input.batch_size (4 there, 8 here)",
    ),
    Case("resume-finished", "resume= of a finished run", case_resume_finished, 0),
    Case("killed-sweep", "kill -9 of a sweep in its second job, then resume=", case_killed_sweep, 0),
    Case(
        "full-disk",
        "the run folder's disk fills up during CAM (2 MB tmpfs)",
        case_full_disk,
        1,
        "No space left on device on",
    ),
    Case(
        "file-size-limit",
        "the file size limit (ulimit -f) is hit during CAM",
        case_file_size_limit,
        1,
        "File too large",
    ),
    Case(
        "decompression-bomb",
        "a 192-megapixel PNG in the input folder",
        case_bomb_stop,
        1,
        "zz_bomb.png' is too large to decode safely",
    ),
    Case("decompression-bomb-skip", "the same with input.on_bad_image=skip", case_bomb_skip, 0),
    Case("fifo", "input.path names a FIFO", case_fifo, 1, "is a FIFO (named pipe)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case, tmp_path: Path) -> None:
    out = case.act(tmp_path)
    assert out.rc == case.status, (out.rc, out.out[-2000:], out.err[-2000:])
    assert "Traceback" not in out.err and "Traceback" not in out.out, out.err[-3000:]
    errors = [line for line in out.err.splitlines() if line.startswith("vizpipe: error:")]
    if case.status in (130, 143):  # a signal: one line saying so, what was kept and how to resume
        assert not errors and out.err.strip().splitlines()[-1].startswith(f"vizpipe: {case.says}")
        assert "every finished file is kept in" in out.err and "resume=" in out.err
    elif case.says:
        assert len(errors) == 1 and case.says in errors[0], out.err
    else:
        assert not errors, out.err
