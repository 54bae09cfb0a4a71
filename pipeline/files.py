"""Writing and hashing files: the only atomic writer and the only hasher in vizpipe."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["finite", "sha256_file", "write_atomic", "write_json"]


def write_atomic(path: Path | str, data: str | bytes) -> Path:
    """Write ``data`` through a temp file in the same folder and a rename (never half a file)."""
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


def write_json(path: Path | str, doc: Any) -> Path:
    """Write ``doc`` as indented JSON (NaN/inf are refused: use ``finite``), atomically."""
    return write_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


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
