"""The background writer: pictures and arrays encoded and written while the model computes the next batch.

A streamed stage hands each file to a ``Writer`` as a path and a function that makes its bytes
(``submit(path, encode, *args)``: colour a map, encode a PNG, serialise an array). Writer threads
run the function and write the bytes atomically (``vizpipe.pipeline.files.write_atomic``: a hidden
temporary name, then a rename), so the model never waits for PNG encoding or the disk, and no
file ever appears under its final name half written.

* **Threads, not processes.** PIL's PNG encoder (zlib), OpenCV's colormap, NumPy's arithmetic and
  file writes release the GIL, so threads encode in parallel with the model; a process pool would
  pickle every map and image through a pipe on the main thread (measured: ``benchmarks/RESULTS.md``).
* **Bounded.** At most ``limit`` files are queued or being written; ``submit`` waits beyond that
  (back-pressure), so memory stays bounded however large the data set.
* **Per-batch completion.** ``after(callback)`` runs ``callback()`` once every file submitted
  before it is complete under its final name, in the order the callbacks were registered: a stage
  records a batch as done there (a resumable run's progress record), never before its files exist.
* **Errors.** The first failing file stops the writer: what is queued is dropped, the next
  ``submit``/``after``/``close`` raises ``WriteError`` naming the file (``Cannot write
  cam/a/x.png: No space left on device``), and no callback runs for a batch with a missing file.
  Files finished before stay complete.
* **Ctrl-C / an exception in the stage.** Leaving the ``with`` block waits for the queued files
  (a batch or two), so every image computed is complete; a second Ctrl-C while waiting drops the
  rest of the queue (files being written still finish: never half a file).

``threads=0`` writes each file on the caller's thread inside ``submit``: the same bytes in the
same files, without overlap (the reference the tests compare with).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vizpipe.pipeline.errors import VizpipeError

log = logging.getLogger(__name__)

__all__ = ["WriteError", "Writer", "auto_threads"]

#: writer threads at most (PNG encoding scales with cores; beyond this the disk is the limit)
MAX_THREADS = 8


class WriteError(VizpipeError):
    """A file of the background writer could not be made or written (named in the message)."""

    def __init__(self, path: str, cause: BaseException) -> None:
        self.path = path
        reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        super().__init__(f"Cannot write {path}: {reason}")


def auto_threads() -> int:
    """Writer threads for ``writers: null`` (auto): half the usable cores, 1 to ``MAX_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores // 2))


class _Group:
    """The files submitted between two ``after`` calls, and what to run when they are complete."""

    __slots__ = ("callback", "closed", "failed", "pending")

    def __init__(self) -> None:
        self.pending = 0  # files of the group not yet complete
        self.closed = False  # ``after`` was called: no more files join the group
        self.failed = False  # one of its files failed (its callback never runs)
        self.callback: Callable[[], None] | None = None


class Writer:
    """Encode and write files on background threads (see the module docstring); a context manager."""

    def __init__(self, threads: int | None = None, limit: int = 256, root: Path | str | None = None) -> None:
        self.threads = auto_threads() if threads is None else max(0, int(threads))
        self.limit = max(1, int(limit))
        self.root = Path(root) if root is not None else None  # paths in messages are relative to it
        self.written = 0  # files complete
        self._error: BaseException | None = None  # the first failure, raised on the stage's thread
        self._lock = threading.Lock()
        self._groups: deque[_Group] = deque([_Group()])
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.limit)
        self._workers: list[threading.Thread] = []
        self._closed = False

    # ------------------------------------------------------------------ the stage's side

    def submit(self, path: Path | str, encode: Callable[..., bytes], *args: Any) -> None:
        """Write ``encode(*args)`` to ``path`` (atomically), on a writer thread; waits while ``limit``
        files are pending. ``encode`` and ``args`` must not change after this call."""
        self._raise()
        group = self._groups[-1]
        with self._lock:
            group.pending += 1
        task = (Path(path), encode, args, group)
        if self.threads == 0:
            self._run(task)
            self._raise()
            return
        self._start()
        self._queue.put(task)  # blocks while the queue is full: back-pressure

    def after(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once every file submitted so far is complete (and every earlier
        callback has run); on the writer thread that finishes the last of them, or now."""
        self._raise()
        with self._lock:
            group = self._groups[-1]
            group.callback, group.closed = callback, True
            self._groups.append(_Group())
            ready = self._ready()
        self._call(ready)
        self._raise()

    def wait(self) -> None:
        """Block until every file submitted so far is complete; raise ``WriteError`` if one failed."""
        if self._workers:
            self._queue.join()
        self._raise()

    def close(self) -> None:
        """Wait for every file, stop the threads; raise ``WriteError`` if a file failed."""
        if self._closed:
            self._raise()
            return
        try:
            self.wait()
        finally:
            self._stop()
        self._raise()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        # the stage failed or was interrupted: finish what is queued (every computed image complete)
        try:
            if self._workers:
                self._queue.join()
        except KeyboardInterrupt:  # a second Ctrl-C: drop the queue, let the running files finish
            self._drop_queue()
            raise
        finally:
            self._stop()

    # ------------------------------------------------------------------ the threads' side

    def _start(self) -> None:
        if self._workers or self._closed:
            return
        for k in range(self.threads):
            t = threading.Thread(target=self._loop, name=f"vizpipe-writer-{k}", daemon=True)
            t.start()
            self._workers.append(t)

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            try:
                if task is None:
                    return
                self._run(task)
            finally:
                self._queue.task_done()

    def _run(self, task: tuple[Path, Callable[..., Any], tuple[Any, ...], _Group]) -> None:
        """Make and write one file; account for it (its group's callback may run here)."""
        from vizpipe.pipeline.files import write_atomic

        path, encode, args, group = task
        ok = False
        if self._error is None:  # after a failure the queue is only drained
            try:
                write_atomic(path, encode(*args))
                ok = True
            except Exception as exc:  # noqa: BLE001 - kept, raised on the stage's thread
                self._fail(path, exc)
        with self._lock:
            group.pending -= 1
            group.failed = group.failed or not ok
            self.written += ok
            ready = self._ready()
        self._call(ready)

    def _call(self, callbacks: list[Callable[[], None]]) -> None:
        """Run completion callbacks; a failing one stops the writer like a failing file (whatever
        it raises, an interruption included, is raised again on the stage's thread)."""
        for fn in callbacks:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - kept, raised on the stage's thread
                self._fail(None, exc)

    def _ready(self) -> list[Callable[[], None]]:
        """Callbacks of the oldest closed groups whose files are all complete (call with the lock)."""
        out: list[Callable[[], None]] = []
        while self._groups[0].closed and self._groups[0].pending == 0:
            group = self._groups.popleft()
            if group.callback is not None and not group.failed and self._error is None:
                out.append(group.callback)
        return out

    def _fail(self, path: Path | None, exc: BaseException) -> None:
        """Keep the first failure: a ``VizpipeError`` (it names its file: a full disk is
        ``files.DiskError``'s one line) or an interruption as it is, else a ``WriteError``."""
        if isinstance(exc, VizpipeError) or not isinstance(exc, Exception):
            error: BaseException = exc
        else:
            rel = path if path is not None else Path("(a batch's completion callback)")
            if self.root is not None and path is not None:
                try:
                    rel = path.relative_to(self.root)
                except ValueError:
                    pass
            error = WriteError(rel.as_posix(), exc)
            error.__cause__ = exc
        with self._lock:
            if self._error is None:
                self._error = error
                log.debug("Writer: %s", error)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _drop_queue(self) -> None:
        """Forget the queued files (they are never written; their groups' callbacks never run)."""
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                return
            if task is not None:
                with self._lock:
                    task[3].pending -= 1
                    task[3].failed = True
            self._queue.task_done()

    def _stop(self) -> None:
        """Stop the threads (each finishes its current file)."""
        if self._closed:
            return
        self._closed = True
        for _ in self._workers:
            self._queue.put(None)
        for t in self._workers:
            t.join()
        self._workers.clear()
