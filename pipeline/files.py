"""Writing and hashing files: the project's only atomic writer and only hasher.

``write_atomic`` writes through a temp file in the same folder and a rename, so a reader (another
process, a browser, a crash) never sees half a file; ``sha256_file`` hashes a file in chunks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["sha256_file", "write_atomic"]


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` via ``.<name>.<pid>.tmp`` and ``os.replace``.

    Safe with parallel writers (each process has its own temp file; the last rename wins).
    Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
