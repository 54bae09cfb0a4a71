"""Writing and hashing files: the only atomic writer and the only hasher in vizpipe.

Every file vizpipe writes goes through one mechanism: its bytes go to a hidden temporary name
in the target's folder (``.<name>.<pid>-<n>.tmp``) and the file is renamed to its final name
only when complete (``os.replace``: atomic on POSIX and Windows). A killed process, a full disk
or an I/O error never leaves a truncated file under a final name; what it leaves is a hidden
temporary file (removed by the writer when it can, and by ``resume=``).

* ``write_atomic(path, data)``: text or bytes (JSON, reports, the manifest, PNGs, checkpoints);
* ``save_npy(path, array)``, ``save_image(path, pil_image, **options)``: numpy arrays and PIL
  images, encoded in memory (the same bytes ``np.save``/``Image.save`` write to a path), then
  ``write_atomic``;
* ``Partial(path)``: a file written in pieces (the features stage's ``.npy``, appended batch by
  batch) under a hidden ``.<name>.partial`` name, renamed when ``finish`` is called; a resumed
  run continues it from a recorded length (``Partial(path, keep=n)``).

TensorBoard event files are the one exception: they are append-only record streams, each record
with its own CRC, written by the TensorBoard libraries' writer threads. A killed run leaves a
valid prefix (TensorBoard's reader skips a torn last record), so they are written in place.

Each write remembers what it wrote (``written(path)``: size, mtime and sha256 of the bytes it had
in memory), so the manifest does not read every artifact back to hash it, and the per-batch
progress record (``vizpipe.pipeline.progress``) knows each file's hash as soon as it exists.

An ``OSError`` while writing becomes a ``DiskError``: one line naming the file, the error and,
for a full disk or quota, the file system and what is free on it
(``Cannot write cam/a/x.npy: No space left on device on /mnt/x: 2.1 MB free``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vizpipe.pipeline.errors import VizpipeError

__all__ = [
    "DiskError",
    "Partial",
    "Reserve",
    "Written",
    "disk_error",
    "finite",
    "forget",
    "remember",
    "save_image",
    "save_npy",
    "sha256_file",
    "special_kind",
    "temp_name",
    "write_atomic",
    "write_json",
    "written",
]

#: what the writers of this process wrote, newest last (absolute path -> Written); bounded
_WRITTEN: OrderedDict[str, Written] = OrderedDict()
_WRITTEN_MAX = 200_000  # entries kept (a million-image run's manifest then hashes the oldest itself)
_LOCK = threading.Lock()
_COUNTER = itertools.count()
#: errno values that mean "the disk (or the quota) is full": the message says what is free
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
PARTIAL_SUFFIX = ".partial"


class DiskError(VizpipeError, OSError):
    """Writing a file failed (a full disk, a quota, a read-only or vanished folder, an I/O error).

    One line for the console and the manifest; also an ``OSError`` for callers that catch those.
    """

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True)
class Written:
    """A file as its writer left it."""

    path: Path
    bytes: int
    sha256: str
    mtime_ns: int


def temp_name(path: Path) -> Path:
    """The hidden temporary name ``path`` is written under before its rename (unique per write)."""
    return path.with_name(f".{path.name[:200]}.{os.getpid()}-{next(_COUNTER)}.tmp")


def _remember(path: Path, size: int, digest: str) -> Written:
    st = path.stat()
    entry = Written(path, size, digest, st.st_mtime_ns)
    key = str(path.absolute())
    with _LOCK:
        _WRITTEN[key] = entry
        _WRITTEN.move_to_end(key)
        while len(_WRITTEN) > _WRITTEN_MAX:
            _WRITTEN.popitem(last=False)
    return entry


def written(path: Path | str) -> Written | None:
    """What this process last wrote at ``path``, if the file is still exactly that (size and mtime)."""
    key = str(Path(path).absolute())
    with _LOCK:
        entry = _WRITTEN.get(key)
    if entry is None:
        return None
    try:
        st = os.stat(key)
    except OSError:
        return None
    return entry if (st.st_size, st.st_mtime_ns) == (entry.bytes, entry.mtime_ns) else None


def remember(path: Path | str, size: int, digest: str) -> Written:
    """Record ``path`` as holding ``size`` bytes with sha256 ``digest`` (a file read back and
    verified, e.g. by a resumed run): the manifest then takes that hash instead of reading it again."""
    return _remember(Path(path), size, digest)


def forget(path: Path | str) -> None:
    """Drop ``path`` from the record of written files (the manifest has listed it)."""
    with _LOCK:
        _WRITTEN.pop(str(Path(path).absolute()), None)


def write_atomic(path: Path | str, data: str | bytes | bytearray | memoryview) -> Path:
    """Write ``data`` (text: UTF-8) through a temp file in the same folder and a rename."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException as exc:
        _discard(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, DiskError):
            raise disk_error(exc, path) from exc
        raise
    _remember(path, len(raw), hashlib.sha256(raw).hexdigest())
    return path


def write_json(path: Path | str, doc: Any) -> Path:
    """Write ``doc`` as indented JSON (NaN/inf are refused: use ``finite``), atomically."""
    return write_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def save_npy(path: Path | str, array: Any) -> Path:
    """``np.save(path, array)``'s bytes, written atomically."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    return write_atomic(path, buffer.getbuffer())


def save_image(path: Path | str, image: Any, **options: Any) -> Path:
    """``image.save(path, **options)``'s bytes (a PIL image; ``format`` required), written atomically."""
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return write_atomic(path, buffer.getbuffer())


class Partial:
    """A file written in pieces under ``.<name>.partial`` and renamed to ``path`` by ``finish``.

    ``keep``: continue a partial file a killed run left, from its first ``keep`` bytes (the rest
    is cut off); ``None`` starts afresh. The sha256 of everything written is kept as it grows.
    """

    def __init__(self, path: Path | str, keep: int | None = None) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}{PARTIAL_SUFFIX}")
        self._hash = hashlib.sha256()
        self.size = 0
        try:
            if keep is not None and self.partial.is_file() and self.partial.stat().st_size >= keep:
                self._file = open(self.partial, "r+b")  # noqa: SIM115 - closed by finish/close
                self._file.truncate(keep)
                while self.size < keep:
                    block = self._file.read(min(1 << 20, keep - self.size))
                    if not block:
                        break
                    self._hash.update(block)
                    self.size += len(block)
                self._file.seek(self.size)
            else:
                self._file = open(self.partial, "wb")  # noqa: SIM115 - closed by finish/close
        except OSError as exc:
            raise disk_error(exc, self.path) from exc

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``."""
        try:
            self._file.write(data)
        except OSError as exc:
            raise disk_error(exc, self.path) from exc
        self._hash.update(data)
        self.size += len(data)

    def flush(self) -> int:
        """Hand what was written to the operating system (a progress record may then count on it);
        returns the length so far."""
        try:
            self._file.flush()
        except OSError as exc:
            raise disk_error(exc, self.path) from exc
        return self.size

    def finish(self) -> Path:
        """Close the file and give it its final name."""
        try:
            self._file.close()
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise disk_error(exc, self.path) from exc
        _remember(self.path, self.size, self._hash.hexdigest())
        return self.path

    def close(self) -> None:
        """Close without renaming (after an error): the partial file stays for ``resume=``."""
        try:
            self._file.close()
        except OSError:
            pass


class Reserve:
    """Disk space held back for the run's own record (``.vizpipe/reserve``), so that when the
    disk fills up the manifest can still say what failed: ``ensure`` grows it to a size
    (``posix_fallocate``: really allocated), ``give_back`` frees it for that last write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0

    def ensure(self, size: int) -> None:
        """Hold at least ``size`` bytes (quietly less when the disk has no more, or no fallocate)."""
        if size <= self.size or not hasattr(os, "posix_fallocate"):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, size)
                self.size = size
            finally:
                os.close(fd)
        except OSError:
            pass

    def give_back(self) -> bool:
        """Free the space (True when there was some to free)."""
        had = self.size > 0 or self.path.exists()
        self.path.unlink(missing_ok=True)
        self.size = 0
        return had


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def _mount_point(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def human_bytes(n: float) -> str:
    """``2.1 MB``, ``512 bytes`` (powers of 1000, as ``df -H`` and file managers count)."""
    if n < 1000:
        return f"{int(n)} bytes"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        n /= 1000.0
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} PB"


def disk_error(exc: OSError, path: Path | str) -> DiskError:
    """``exc`` as one line naming the file, the error and, for a full disk, where and what is free."""
    path = Path(path)
    what = exc.strerror or str(exc) or type(exc).__name__
    message = f"Cannot write {path}: {what}"
    if exc.errno in _FULL:
        mount = _mount_point(path)
        try:
            free = human_bytes(shutil.disk_usage(mount).free)
        except OSError:
            free = "unknown"
        message += f" on {mount}: {free} free; free some space, then finish the run with resume=<run folder>"
    elif exc.errno == errno.EFBIG:
        message += " (the process's file size limit, ulimit -f, was reached)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        message += f" (the folder {path.parent} cannot be written)"
    err = DiskError(exc.errno, message)
    err.filename = str(path)
    return err


def special_kind(path: Path | str) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder: ``a FIFO
    (named pipe)``, ``a socket``, ``a character device``, ``a block device``; else None."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, what in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return None


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def finite(value: Any) -> float | None:
    """A JSON-safe float: ``None`` for NaN, inf and None."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None
