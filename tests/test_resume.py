"""``resume``: an interrupted run finished in its folder, byte for byte what an uninterrupted run writes.

In-process: the interruption is a ``KeyboardInterrupt`` raised (as SIGTERM's handler raises
``Interrupted``) after a given number of finished batches or epochs; the command line's kills
are in ``test_durable_cli.py``.
"""

from __future__ import annotations

import json

import pytest
from conftest import compose_config
from vizpipe.pipeline.compare import compare_runs
from vizpipe.pipeline.errors import Interrupted
from vizpipe.pipeline.progress import Progress
from vizpipe.pipeline.runner import run_pipeline
from vizpipe.stages.train import reuse

STREAMED = [
    "model=seed_net",
    "input=random",
    "input.shape=[40,3,32,32]",
    "input.limit=null",
    "input.batch_size=8",
    "stages=[summary,features,cam]",
    "features.layers=[conv1,conv2]",
    "report.enabled=false",
]
TRAIN = [
    "model=shapes_net",
    "input=shapes",
    "stages=[train,cam]",
    "input.train_count=96",
    "input.val_count=32",
    "input.test_count=16",
    "input.limit=16",
    "train.epochs=3",
    "train.batch_size=32",
    "train.cam_images=2",
    "report.enabled=false",
]


def interrupt_after(monkeypatch, records: int) -> None:
    """SIGTERM (as its handler raises it) once ``records`` batches have been recorded."""
    real = Progress.record
    count = {"n": 0}

    def record(self, key, files, data=None):
        real(self, key, files, data)
        count["n"] += 1
        if count["n"] == records:
            raise Interrupted("SIGTERM", 143)

    monkeypatch.setattr(Progress, "record", record)


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    assert run_pipeline(compose_config(STREAMED), out).ok
    return out


@pytest.mark.parametrize(
    "after",  # in features; in cam's first batches; in cam's last one
    [pytest.param(2, marks=pytest.mark.slow), 7, pytest.param(9, marks=pytest.mark.slow)],
)
def test_interrupted_stream_resumes_to_the_same_files(uninterrupted, tmp_path, monkeypatch, after):
    out = tmp_path / "run"
    interrupt_after(monkeypatch, after)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(compose_config(STREAMED), out)
    m = manifest(out)
    assert m["status"] == "interrupted" and m["interrupted"]["signal"] == "SIGTERM"
    assert m["interrupted"]["resume"].endswith(f"resume={out}")
    assert not list(out.rglob("*.tmp"))  # every file complete or absent
    monkeypatch.undo()
    result = run_pipeline(compose_config(STREAMED), out, resume=True)
    assert result.ok, result.error
    comparison = compare_runs(uninterrupted, out)
    assert comparison.equal, comparison.first
    m = manifest(out)
    assert m["resumed"] and "interrupted" not in m
    assert not (out / ".vizpipe").exists()  # progress records go when their stage ends ok
    kept = {s["name"]: len(s["artifacts"]) for s in m["stages"]}
    assert kept == {s["name"]: len(s["artifacts"]) for s in manifest(uninterrupted)["stages"]}


def test_resume_skips_finished_batches(tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_after(monkeypatch, 8)  # features' 5 batches, then 3 of cam's 5
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(compose_config(STREAMED), out)
    monkeypatch.undo()
    done: list[str] = []
    real = Progress.record
    monkeypatch.setattr(
        Progress, "record", lambda self, k, f, d=None: (done.append(f"{self.stage}:{k}"), real(self, k, f, d))
    )
    assert run_pipeline(compose_config(STREAMED), out, resume=True).ok
    assert done == ["cam:conv2/3", "cam:conv2/4"]  # summary and features kept, cam from its 4th batch


def test_resume_refuses_another_config(tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(compose_config(STREAMED), out)
    monkeypatch.undo()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run_pipeline(compose_config([*STREAMED, "cam.layer=conv1", "seed=3"]), out, resume=True)
    assert not result.ok and "\n" not in result.error
    assert (
        f"resume={out}: the config differs from the run's in seed (0 there, 3 here), cam.layer"
        in result.error
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_kept_stage_with_a_changed_file_runs_again(uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    (out / "summary" / "summary.txt").write_text("edited")
    (out / "cam" / ".x.npy.123-4.tmp").write_bytes(b"left by a killed writer")
    assert run_pipeline(compose_config(STREAMED), out, resume=True).ok
    assert compare_runs(uninterrupted, out).equal
    assert not (out / "cam" / ".x.npy.123-4.tmp").exists()


def test_resume_in_an_empty_folder_starts_afresh(tmp_path):
    result = run_pipeline(compose_config([*STREAMED[:5], "stages=[summary]"]), tmp_path / "new", resume=True)
    assert result.ok and "resumed" not in manifest(tmp_path / "new")


@pytest.mark.slow
def test_training_resumes_after_its_last_epoch_with_the_same_weights(tmp_path, monkeypatch):
    """Killed after epoch 2 of 3: the resumed run's checkpoint and history.json are byte for byte
    the uninterrupted run's (optimizer, scheduler, step and random generators put back); the
    CAM stage after it sees the trained model."""
    import vizpipe.stages.train.resume as tr

    full, out = tmp_path / "full", tmp_path / "run"
    cfg = [*TRAIN, "train.scheduler={_target_:torch.optim.lr_scheduler.OneCycleLR}"]
    assert run_pipeline(compose_config(cfg), full).ok
    reuse.forget()  # the interrupted run trains for itself (not the kept training: stages/train/reuse.py)
    real = tr.save_state

    def save_then_stop(path, ctx, optimizer, scheduler, shuffle, epoch, watch):
        real(path, ctx, optimizer, scheduler, shuffle, epoch, watch)
        if epoch == 2:
            raise Interrupted("SIGTERM", 143)

    monkeypatch.setattr(tr, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(compose_config(cfg), out)
    assert manifest(out)["stages"][0]["status"] == "interrupted"
    monkeypatch.undo()
    assert run_pipeline(compose_config(cfg), out, resume=True).ok
    for name in ("train/checkpoint.pt", "train/history.json"):
        assert (full / name).read_bytes() == (out / name).read_bytes(), name
    npys = sorted(p.relative_to(full) for p in full.rglob("*.npy"))
    assert npys and all((full / p).read_bytes() == (out / p).read_bytes() for p in npys)


@pytest.mark.slow
def test_a_finished_train_stage_gives_its_weights_back(tmp_path, monkeypatch):
    """Interrupted in the CAM stage after training: resume keeps training (not run again) and
    the maps are those of the trained model."""
    full, out = tmp_path / "full", tmp_path / "run"
    assert run_pipeline(compose_config(TRAIN), full).ok
    reuse.forget()  # the interrupted run trains for itself (not the kept training: stages/train/reuse.py)
    interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(compose_config(TRAIN), out)
    monkeypatch.undo()
    result = run_pipeline(compose_config(TRAIN), out, resume=True)
    assert result.ok
    assert compare_runs(full, out).equal
