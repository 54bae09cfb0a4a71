"""The background writer (pipeline/writer.py): every file complete under its name, bounded, in order
callbacks, the first failing file named, and what Ctrl-C leaves."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from vizpipe.pipeline.errors import VizpipeError
from vizpipe.pipeline.writer import WriteError, Writer, auto_threads


def payload(text: str) -> bytes:
    return text.encode()


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_every_file_written_with_its_bytes(tmp_path, threads):
    """threads=0 writes inside submit; threads >= 1 on background threads: the same files."""
    with Writer(threads, limit=4, root=tmp_path) as writer:
        for k in range(40):
            writer.submit(tmp_path / f"f{k}.txt", payload, f"file {k}")
    assert writer.written == 40
    assert [(tmp_path / f"f{k}.txt").read_text() for k in range(40)] == [f"file {k}" for k in range(40)]
    assert hidden(tmp_path) == []  # no temporary file left


def test_auto_threads_is_bounded():
    assert 1 <= auto_threads() <= 8
    assert Writer(None).threads == auto_threads()


def test_submit_waits_when_limit_files_are_pending(tmp_path):
    """Back-pressure: with limit=2 and one blocked thread, a fourth submit waits (1 running + 2 queued)."""
    gate = threading.Event()

    def slow(text: str) -> bytes:
        gate.wait(10)
        return text.encode()

    writer = Writer(1, limit=2, root=tmp_path)
    for k in range(3):  # one taken by the thread, two queued
        writer.submit(tmp_path / f"f{k}", slow, str(k))
    time.sleep(0.2)  # the thread has taken the first
    blocked = threading.Thread(target=writer.submit, args=(tmp_path / "f3", slow, "3"))
    blocked.start()
    blocked.join(0.5)
    assert blocked.is_alive()  # waiting for room
    gate.set()
    blocked.join(10)
    assert not blocked.is_alive()
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0", "f1", "f2", "f3"]


def test_callbacks_run_in_order_once_their_files_exist(tmp_path):
    """after(cb): cb runs when every file submitted before it is complete, in registration order."""
    seen: list[tuple[int, bool]] = []
    gate = threading.Event()

    def slow(text: str) -> bytes:
        if text == "0-0":
            gate.wait(10)  # the first batch's first file finishes last
        return text.encode()

    def done(batch: int) -> None:
        seen.append((batch, all((tmp_path / f"{batch}-{k}").is_file() for k in range(3))))

    with Writer(3, limit=16, root=tmp_path) as writer:
        for b in range(3):
            for k in range(3):
                writer.submit(tmp_path / f"{b}-{k}", slow, f"{b}-{k}")
            writer.after(lambda b=b: done(b))
        time.sleep(0.3)
        assert seen == []  # batch 0 is not complete, and later batches wait for it
        gate.set()
    assert seen == [(0, True), (1, True), (2, True)]


def test_callback_with_no_pending_file_runs_at_once(tmp_path):
    seen = []
    with Writer(2, root=tmp_path) as writer:
        writer.after(lambda: seen.append("empty"))
        assert seen == ["empty"]


def test_a_failing_file_is_named_and_stops_the_writer(tmp_path):
    """The first failure: named in one line (run-relative), later files and callbacks dropped."""
    seen = []

    def broken(text: str) -> bytes:
        raise OSError(28, "No space left on device")

    (tmp_path / "cam").mkdir()
    writer = Writer(1, limit=8, root=tmp_path)
    writer.submit(tmp_path / "cam" / "ok.png", payload, "fine")
    writer.after(lambda: seen.append("batch 0"))
    writer.submit(tmp_path / "cam" / "x_overlay.png", broken, "x")
    writer.after(lambda: seen.append("batch 1"))
    with pytest.raises(WriteError) as info:
        writer.wait()
        writer.submit(tmp_path / "cam" / "late.png", payload, "late")
    assert str(info.value) == "Cannot write cam/x_overlay.png: No space left on device"
    assert isinstance(info.value, VizpipeError) and isinstance(info.value.__cause__, OSError)
    with pytest.raises(WriteError):
        writer.submit(tmp_path / "cam" / "late.png", payload, "late")
    with pytest.raises(WriteError):
        writer.close()
    assert seen == ["batch 0"]  # the failed batch is never reported done
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == ["ok.png"]


def test_a_failing_callback_fails_the_writer(tmp_path):
    def boom() -> None:
        raise VizpipeError("Cannot write .vizpipe/progress/cam.jsonl: disk full")

    writer = Writer(1, root=tmp_path)
    writer.submit(tmp_path / "a", payload, "a")
    writer.after(boom)
    with pytest.raises(VizpipeError, match="progress/cam.jsonl: disk full"):
        writer.close()


def test_an_interruption_in_a_callback_is_raised_on_the_stage_thread(tmp_path):
    """A callback on a writer thread that raises KeyboardInterrupt (SIGTERM's ``Interrupted`` in the
    resume tests) stops the writer: raised as it is on the stage's thread, no later callback runs."""
    seen = []
    gate = threading.Event()

    def slow(text: str) -> bytes:
        gate.wait(5)
        return text.encode()

    def stop() -> None:
        raise KeyboardInterrupt("stop")

    writer = Writer(1, limit=8, root=tmp_path)
    writer.submit(tmp_path / "a", slow, "a")
    writer.after(stop)  # runs on the writer thread, once "a" is written
    writer.submit(tmp_path / "b", payload, "b")
    writer.after(lambda: seen.append("later"))
    gate.set()
    with pytest.raises(KeyboardInterrupt, match="stop"):
        writer.close()
    assert seen == [] and (tmp_path / "a").read_text() == "a"


def test_an_interrupted_stage_leaves_every_queued_file_complete(tmp_path):
    """Leaving the with block by an exception (Ctrl-C) waits for what is queued: whole files only."""
    gate = threading.Event()

    def slow(text: str) -> bytes:
        gate.wait(10)
        return text.encode()

    with pytest.raises(KeyboardInterrupt):
        with Writer(2, limit=64, root=tmp_path) as writer:
            for k in range(10):
                writer.submit(tmp_path / f"f{k}", slow, str(k))
            threading.Timer(0.3, gate.set).start()
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{k}" for k in range(10)]
    assert all((tmp_path / f"f{k}").read_text() == str(k) for k in range(10))


def test_a_second_interrupt_drops_the_queue_but_never_leaves_half_a_file(tmp_path):
    """While waiting for the queue, a second Ctrl-C drops the queued files; the running one finishes."""
    gate = threading.Event()

    def slow(text: str) -> bytes:
        gate.wait(10)
        return text.encode()

    writer = Writer(1, limit=64, root=tmp_path)
    for k in range(5):
        writer.submit(tmp_path / f"f{k}", slow, str(k))
    time.sleep(0.2)

    def interrupted_join() -> None:
        threading.Timer(0.2, gate.set).start()
        raise KeyboardInterrupt

    writer._queue.join = interrupted_join  # the wait in __exit__ is interrupted again
    with pytest.raises(KeyboardInterrupt):
        writer.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["f0"]  # the file being written finished; the queued four were dropped
    assert (tmp_path / "f0").read_text() == "0"
