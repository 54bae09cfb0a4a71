"""A stage's progress, batch by batch, so an interrupted run resumes where it stopped.

``<run>/.vizpipe/progress/<stage>.jsonl`` holds one JSON line per finished unit of work (a batch
of a streamed stage): its key, the files it wrote (run-relative path, size, sha256) and the
stage's own record of it (``data``: e.g. the CAM rows of its images, or the features stage's
running statistics). A batch is recorded only once every one of its files is complete under its
final name (``vizpipe.pipeline.files`` writes atomically and knows each file's hash), so a record
never promises a file that is not there. Whoever writes the files may record the batch: the
stage's loop, or a background writer thread once the batch's last file is written
(``record`` is thread-safe and may be called in any order of keys).

``resume=`` opens the same file: ``done()`` gives the records whose files are still exactly as
recorded (size and sha256 read back), the last record of a key winning; a batch with a missing
or changed file is done again. ``batches(inputs, desc, key)`` walks a stage's data set in order,
yielding the batches still to do and, in their place, the records of the finished ones, so the
stage rebuilds its state in the original order. ``state_path`` is a file of the stage's own for
state that is not per batch (the train stage's optimizer and random generators).

The lines are appended and flushed, not fsynced: a record survives a killed process; after a
power cut the re-read hashes catch a file the system had not written yet. The runner clears a
stage's record when the stage ends ok.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.files import disk_error, remember, sha256_file, written

if TYPE_CHECKING:
    from vizpipe.pipeline.inputs import Batch, Inputs

log = logging.getLogger(__name__)

__all__ = ["PROGRESS_DIR", "Progress"]

PROGRESS_DIR = ".vizpipe/progress"


class Progress:
    """One stage's progress record in a run folder (``Progress.off()``: none, nothing recorded)."""

    def __init__(self, run_dir: Path | str | None, stage: str, *, resume: bool = False) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.stage = stage
        self.resume = resume
        self._lock = threading.Lock()
        self._file: Any = None
        self._done: dict[str, dict[str, Any]] | None = None
        self.path = self.run_dir / PROGRESS_DIR / f"{stage}.jsonl" if self.run_dir is not None else None

    @classmethod
    def off(cls) -> Progress:
        """A record that keeps nothing (a stage run outside ``run_pipeline``)."""
        return cls(None, "")

    @property
    def enabled(self) -> bool:
        """Whether this record is kept on disk."""
        return self.path is not None

    # ------------------------------------------------------------------ what was done before

    def done(self) -> dict[str, Any]:
        """Key -> ``data`` of every recorded unit whose files are intact (only when resuming)."""
        if self._done is None:
            self._done = self._read() if self.resume and self.path is not None else {}
        return {k: v["data"] for k, v in self._done.items()}

    def kept_files(self) -> set[str]:
        """The run-relative files of the units ``done`` returns."""
        self.done()
        return {f[0] for entry in (self._done or {}).values() for f in entry["files"]}

    def _read(self) -> dict[str, dict[str, Any]]:
        assert self.path is not None and self.run_dir is not None
        entries: dict[str, dict[str, Any]] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return {}
        for line in lines:
            try:
                entry = json.loads(line)
                entries[str(entry["key"])] = {"files": list(entry["files"]), "data": entry.get("data")}
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line: that unit is done again
        intact = {k: e for k, e in entries.items() if all(self._intact(f) for f in e["files"])}
        if len(intact) < len(entries):
            log.info(
                "%s: %d of %d finished batch(es) have a missing or changed file; they are done again",
                self.stage,
                len(entries) - len(intact),
                len(entries),
            )
        return intact

    def _intact(self, f: list[Any]) -> bool:
        assert self.run_dir is not None
        path = self.run_dir / str(f[0])
        try:
            if path.stat().st_size != int(f[1]) or sha256_file(path) != str(f[2]):
                return False
        except (OSError, ValueError, IndexError):
            return False
        remember(path, int(f[1]), str(f[2]))  # the manifest takes this hash, not a second read
        return True

    # ------------------------------------------------------------------ recording

    def record(self, key: str, files: Iterable[Path | str], data: Any = None) -> None:
        """Record unit ``key`` as finished: every one of ``files`` is complete under its final name."""
        if self.path is None or self.run_dir is None:
            return
        listed = []
        for f in files:
            path = Path(f) if Path(f).is_absolute() else self.run_dir / f
            known = written(path)
            size, digest = (known.bytes, known.sha256) if known else (path.stat().st_size, sha256_file(path))
            listed.append([path.relative_to(self.run_dir).as_posix(), size, digest])
        line = json.dumps({"key": key, "files": listed, "data": data}, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(self.path, "a" if self.resume else "w", encoding="utf-8")  # noqa: SIM115
                self._file.write(line)
                self._file.flush()
            except OSError as exc:
                raise disk_error(exc, self.path) from exc

    def state_path(self) -> Path | None:
        """A file for the stage's own resume state (``None`` when nothing is recorded)."""
        if self.path is None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.with_suffix(".state")

    def close(self) -> None:
        """Close the record file (it stays). A line a full disk kept out is lost, never half
        written: ``done`` skips a torn last line."""
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None

    def clear(self) -> None:
        """The stage ended ok: its record and state go."""
        self.close()
        if self.path is None:
            return
        for p in (self.path, self.path.with_suffix(".state")):
            p.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass

    # ------------------------------------------------------------------ a streamed pass

    def batches(
        self, inputs: Inputs, desc: str | None, key: str = "batch", only: Collection[int] | None = None
    ) -> Iterator[tuple[str, Batch | None, Any]]:
        """Walk ``inputs`` batch by batch in order: ``(unit key, batch, None)`` for a batch to do,
        ``(unit key, None, data)`` for one recorded as done. ``only``: the batch numbers that may
        be skipped (default: any recorded one)."""
        done = self.done()
        size = inputs.batch_size
        count = -(-len(inputs) // size) if len(inputs) else 0
        keys = [f"{key}/{n}" for n in range(count)]
        skip = {n for n, k in enumerate(keys) if k in done and (only is None or n in only)}
        if skip:
            log.info("%s: %d of %d batch(es) finished before; resuming", desc or self.stage, len(skip), count)
        n = 0
        for batch in inputs.batches(desc, skip=skip):
            here = batch.index[0] // size
            while n < here:
                yield keys[n], None, done[keys[n]]
                n += 1
            yield keys[here], batch, None
            n = here + 1
        while n < count:
            if n in skip:
                yield keys[n], None, done[keys[n]]
            n += 1
