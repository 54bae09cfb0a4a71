"""The background writer and the per-batch progress record are one mechanism (issues 20 and 25): a
batch is recorded by the writer once every one of its files is complete under its final name, a
write error (a full disk) fails the run in ``files.DiskError``'s one line with nothing recorded
that was not written, and ``resume=`` then redoes the rest, byte for byte."""

from __future__ import annotations

import errno
import io
import json
import threading
import time
from pathlib import Path

from conftest import compose_config
from vizpipe.pipeline import files
from vizpipe.pipeline.compare import compare_runs
from vizpipe.pipeline.progress import PROGRESS_DIR, Progress
from vizpipe.pipeline.runner import run_pipeline

STREAMED = [
    "model=seed_net",
    "input=random",
    "input.shape=[40,3,32,32]",
    "input.limit=null",
    "input.batch_size=8",
    "stages=[features,cam]",
    "features.layers=[conv1,conv2]",
    "report.enabled=false",
    "writers=2",
]


def test_a_batch_is_recorded_by_the_writer_once_its_files_exist(tmp_path, monkeypatch):
    """Slow writes keep files pending when a batch ends: its record comes later, from a writer
    thread, and every file it lists is then complete with the hash it records."""
    real_write, real_record = files.write_atomic, Progress.record
    seen: list[tuple[str, str, bool]] = []

    def slow_write(path, data):
        time.sleep(0.003)
        return real_write(path, data)

    def record(self, key, listed, data=None):
        complete = all(
            (w := files.written(self.run_dir / f)) is not None
            and w.sha256 == files.sha256_file(self.run_dir / f)
            for f in listed
        )
        seen.append((f"{self.stage}:{key}", threading.current_thread().name, complete and bool(listed)))
        real_record(self, key, listed, data)

    monkeypatch.setattr(files, "write_atomic", slow_write)
    monkeypatch.setattr(Progress, "record", record)
    assert run_pipeline(compose_config(STREAMED), tmp_path / "run").ok
    assert sorted(k for k, _, _ in seen) == sorted(
        [f"features:batch/{b}" for b in range(5)] + [f"cam:conv2/{b}" for b in range(5)]
    )
    assert all(ok for _, _, ok in seen), seen
    assert any(name.startswith("vizpipe-writer") for _, name, _ in seen), seen


def test_a_full_disk_in_the_writer_fails_in_one_line_and_resume_finishes(tmp_path, monkeypatch):
    """ENOSPC while a writer thread writes one overlay of CAM's third batch: the run fails in
    ``DiskError``'s one line naming that file; the record holds only batches whose files all
    exist (not the failed one's); ``resume=`` finishes the run as an uninterrupted one."""
    full = tmp_path / "full"
    assert run_pipeline(compose_config(STREAMED), full).ok
    out = tmp_path / "run"
    victim = "random_19"  # CAM's third batch (images 16..23)
    real_open = open

    class Full(io.BufferedWriter):
        def write(self, data):  # type: ignore[override]
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(path, mode="r", *a, **k):
        p = Path(path)
        if "w" in mode and p.name.endswith(".tmp") and "_overlay.png" in p.name and p.parent.name == victim:
            return Full(real_open(path, mode, *a, **k))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full_open)
    result = run_pipeline(compose_config(STREAMED), out)
    monkeypatch.undo()
    assert not result.ok and "\n" not in result.error
    assert f"Cannot write {out}/cam/{victim}/" in result.error
    assert "_overlay.png: No space left on device on /" in result.error and "resume=" in result.error
    lines = (out / PROGRESS_DIR / "cam.jsonl").read_text().splitlines()
    recorded = [json.loads(line) for line in lines]
    assert recorded and all((out / f[0]).is_file() for r in recorded for f in r["files"])
    assert not any(f[0].startswith(f"cam/{victim}/") for r in recorded for f in r["files"])
    assert not list(out.rglob("*.tmp"))  # nothing half written
    resumed = run_pipeline(compose_config(STREAMED), out, resume=True)
    assert resumed.ok, resumed.error
    comparison = compare_runs(full, out)
    assert comparison.equal, comparison.first
