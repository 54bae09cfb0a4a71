"""Atomic writes, disk errors in one line, partial files, and the record of what was written."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from vizpipe.pipeline import files


def test_save_npy_and_save_image_write_the_bytes_the_libraries_write(tmp_path):
    """The one mechanism changes no byte: np.save and PIL's save to a path give the same files."""
    from PIL import Image

    arr = np.random.default_rng(0).random((5, 7), dtype=np.float32)
    np.save(tmp_path / "direct.npy", arr)
    files.save_npy(tmp_path / "atomic.npy", arr)
    assert (tmp_path / "direct.npy").read_bytes() == (tmp_path / "atomic.npy").read_bytes()
    im = Image.fromarray((arr * 255).astype(np.uint8))
    im.save(tmp_path / "direct.png", format="PNG", compress_level=1)
    files.save_image(tmp_path / "atomic.png", im, format="PNG", compress_level=1)
    assert (tmp_path / "direct.png").read_bytes() == (tmp_path / "atomic.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "atomic.npy",
        "atomic.png",
        "direct.npy",
        "direct.png",
    ]


def test_written_remembers_the_hash_until_the_file_changes(tmp_path):
    path = files.write_atomic(tmp_path / "a.bin", b"abc")
    known = files.written(path)
    assert known is not None and known.sha256 == hashlib.sha256(b"abc").hexdigest() and known.bytes == 3
    path.write_bytes(b"abcd")  # changed behind the writer's back: not trusted any more
    assert files.written(path) is None
    files.write_atomic(path, b"x")
    files.forget(path)
    assert files.written(path) is None


def test_a_failed_write_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    """ENOSPC in the middle of a write: the error names the file, the disk and what is free; the
    temporary file goes; an earlier file of that name stays as it was."""
    (tmp_path / "old.npy").write_bytes(b"earlier")
    real_open = open

    class Full(io.BufferedWriter):
        def write(self, data):  # type: ignore[override]
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(path, mode="r", *a, **k):
        if "w" in mode and Path(path).name.endswith(".tmp"):
            return Full(real_open(path, mode, *a, **k))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full_open)
    for target in ("new.npy", "old.npy"):
        with pytest.raises(files.DiskError) as err:
            files.save_npy(tmp_path / target, np.zeros(3))
        message = str(err.value)
        assert message.startswith(f"Cannot write {tmp_path / target}: No space left on device on /")
        assert " free; " in message and "resume=" in message and "\n" not in message
        assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.npy"]
    assert (tmp_path / "old.npy").read_bytes() == b"earlier"


def test_disk_error_texts(tmp_path):
    too_big = files.disk_error(OSError(errno.EFBIG, "File too large"), tmp_path / "x")
    limit = "(the process's file size limit, ulimit -f, was reached)"
    assert str(too_big) == f"Cannot write {tmp_path / 'x'}: File too large {limit}"
    denied = files.disk_error(PermissionError(errno.EACCES, "Permission denied"), tmp_path / "d" / "x")
    assert f"(the folder {tmp_path / 'd'} cannot be written)" in str(denied)
    assert files.human_bytes(2_100_000) == "2.1 MB" and files.human_bytes(512) == "512 bytes"


def test_partial_is_renamed_when_finished_and_continued_after_a_kill(tmp_path):
    out = tmp_path / "f.npy"
    part = files.Partial(out)
    part.write(b"header")
    part.write(b"batch0")
    assert part.flush() == 12 and not out.exists()
    part.write(b"half-")  # the batch a kill interrupts
    part.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".f.npy.partial"]
    again = files.Partial(out, keep=12)  # the recorded length: the half batch is cut off
    assert again.size == 12
    again.write(b"batch1")
    again.finish()
    assert out.read_bytes() == b"headerbatch0batch1"
    assert files.written(out).sha256 == hashlib.sha256(b"headerbatch0batch1").hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npy"]


def test_special_kind_names_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert files.special_kind(fifo) == "a FIFO (named pipe)"
    assert files.special_kind(tmp_path) is None and files.special_kind(tmp_path / "none") is None
