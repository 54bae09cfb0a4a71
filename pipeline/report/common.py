"""Shared helpers of the report package: reading files, formatting, pictures, the views.

Nothing here knows a run or a sweep: ``report.run`` and ``report.sweep`` build
their template contexts from these pieces; ``vizpipe.pipeline.report.templating`` renders them.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
SWEEP_INDEX = "index.html"
THUMB_PX = 256  # sweep index pictures are downscaled to at most this many pixels per edge
THUMBS = ".thumbs"  # <sweep>/.thumbs/: the downscaled pictures, kept for the next rebuild of the index
MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}


# =========================================================================== views shared by templates


@dataclass
class Alert:
    """A visible message box (never folded): ``level`` is error, warning or info."""

    level: str
    strong: str = ""  # bold lead-in, e.g. "cam failed: "
    text: str = ""
    code: str = ""  # a path or command after the text


@dataclass
class Cell:
    """One table cell: text, optionally a link (``href`` relative to the page) or code."""

    text: str
    href: str | None = None
    code: bool = False


@dataclass
class PictureView:
    """A picture ready for a template: embedded (``src``) or explained (``problem``)."""

    path: str  # relative to the page's folder: data-path in HTML, the link in Markdown
    caption: str = ""
    alt: str = ""
    badge: str | None = None
    wide: bool = False
    src: str | None = None  # data URI (HTML only)
    problem: str | None = None  # why there is no picture (missing, outside the folder, unreadable)


# =========================================================================== reading files


def read_json(path: Path, problems: list[str]) -> Any:
    """Parse a JSON file; a missing file is None, an unreadable one is None plus a problem."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"Could not read {path.parent.name}/{path.name}: {exc}")
        return None


def read_text(path: Path) -> str | None:
    """A text file's content, or None when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_yaml(path: Path) -> Any:
    """Parse a YAML file (Hydra's ``.hydra/*.yaml``, ``multirun.yaml``); None when missing or invalid."""
    text = read_text(path) if path.is_file() else None
    if text is None:
        return None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def record_error(rec: dict[str, Any]) -> str:
    """A step record's error as the runner wrote it (its type when there is no message)."""
    return str(rec.get("error") or rec.get("error_type") or "")


# =========================================================================== formatting (also jinja2 filters)


def fmt_num(value: Any, digits: int = 4) -> str:
    """A number for people: whole numbers with separators, other floats with ``digits`` significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.{digits}g}"
    return str(value)


def fmt_seconds(value: Any) -> str:
    """Seconds with two decimals (non-breaking space before the unit), or a dash."""
    return "–" if value is None else f"{float(value):.2f}\u00a0s"


def fmt_mb(value: Any) -> str:
    """Bytes as megabytes with two decimals, or a dash."""
    return "–" if value is None else f"{float(value) / 1e6:.2f} MB"


def fmt_shape(value: Any) -> str:
    """``[1, 3, 224, 224]`` as ``1×3×224×224``."""
    if isinstance(value, (list, tuple)):
        return "×".join(str(v) for v in value)
    return "–" if value is None else str(value)


def badge_class(status: Any) -> str:
    """The CSS class of a status badge (letters only)."""
    return re.sub(r"[^a-z]", "", str(status).lower())


def url(path: Any) -> str:
    """A page-relative file path as a URL (absolute http(s) and #anchors kept)."""
    text = str(path)
    if re.match(r"^(https?:|#)", text):
        return text
    return quote(text, safe="/#=,+@")


# =========================================================================== pictures


def inside(base: Path, rel: str) -> Path | None:
    """``base / rel`` when it stays inside ``base`` and is a file; else None."""
    try:
        path = (base / rel).resolve()
        path.relative_to(base.resolve())
    except (ValueError, OSError):
        return None
    return path if path.is_file() else None


def _data_uri(raw: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def _disk_key(path: str, mtime_ns: int, size: int, px: int) -> str:
    import hashlib

    return hashlib.sha1(f"{path}|{mtime_ns}|{size}|{px}".encode()).hexdigest() + ".png"


@functools.lru_cache(maxsize=4096)
def _thumbnail(path: str, mtime_ns: int, size: int, px: int, cache: str | None = None) -> str:
    """A data URI of the picture downscaled to ``px`` (cached per file version in this process).

    ``cache``: a folder keeping the downscaled PNGs (``<sweep>/.thumbs/``), keyed by path, mtime,
    size and ``px``, so a rebuilt index (another process, ``python -m vizpipe.report``) does not
    decode and resize every picture again. Pictures already small enough are embedded as they are.
    """
    import io

    from PIL import Image

    mime = MIME.get(Path(path).suffix.lower(), "application/octet-stream")
    kept = Path(cache, _disk_key(path, mtime_ns, size, px)) if cache else None
    if kept is not None and kept.is_file():
        return _data_uri(kept.read_bytes(), "image/png")
    raw = Path(path).read_bytes()
    if mime in ("image/png", "image/jpeg"):
        with Image.open(io.BytesIO(raw)) as im:
            if max(im.size) > px:
                im.draft("RGB", (px, px))  # JPEG: decode at a reduced size (no-op for PNG)
                im.thumbnail((px, px), Image.Resampling.LANCZOS, reducing_gap=3.0)
                small = (
                    im if im.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16") else im.convert("RGB")
                )
                buf = io.BytesIO()
                small.save(buf, format="PNG")
                raw, mime = buf.getvalue(), "image/png"
                if kept is not None:
                    from vizpipe.pipeline.files import write_atomic

                    kept.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(kept, raw)
    return _data_uri(raw, mime)


def embed(
    base: Path, view: PictureView, thumb_px: int | None = None, cache: Path | None = None
) -> PictureView:
    """Fill ``view.src`` with the picture at ``base / view.path`` (or ``view.problem``); return it.

    Paths leaving ``base`` count as missing. ``thumb_px`` downscales (cached per path, mtime, size
    in this process, and in the folder ``cache`` when given).
    """
    path = inside(base, view.path)
    if path is None:
        view.problem = f"missing picture: {view.path}"
        return view
    try:
        if thumb_px:
            st = path.stat()
            view.src = _thumbnail(
                str(path), st.st_mtime_ns, st.st_size, thumb_px, str(cache) if cache is not None else None
            )
        else:
            view.src = _data_uri(path.read_bytes(), MIME.get(path.suffix.lower(), "application/octet-stream"))
    except Exception as exc:  # noqa: BLE001 - an unreadable picture is shown as such, the page survives
        view.problem = f"unreadable picture {view.path}: {type(exc).__name__}: {exc}"
    return view
