"""Markup for vizpipe's reports: a tiny document tree and its HTML and Markdown renderers.

``pipeline.report`` and ``pipeline.report_sweep`` build a ``Document`` of sections, tables,
figures and alerts that holds plain text only; ``to_html`` and ``to_markdown`` are the only
place where text becomes markup, so every string is escaped in exactly one place.
``to_html`` embeds pictures as base64 data URIs (the page opens offline and survives copying or
zipping); ``to_markdown`` links them relatively.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union
from urllib.parse import quote

# =========================================================================== document tree


@dataclass(frozen=True)
class Code:
    """Monospace text (a command, a path, an override)."""

    text: str


@dataclass(frozen=True)
class Strong:
    """Emphasised text."""

    text: str


@dataclass(frozen=True)
class Link:
    """A link; ``href`` is relative to the document's folder (or an absolute URL)."""

    text: str
    href: str


@dataclass(frozen=True)
class Badge:
    """A status word (ok, failed, skipped, ...) drawn as a coloured label."""

    status: str


@dataclass(frozen=True)
class Img:
    """A picture at ``path`` (relative to the document's folder)."""

    path: str
    alt: str
    thumb: bool = False  # downscale to THUMB_PX (sweep grids)


@dataclass(frozen=True)
class Br:
    """A line break."""


Inline = Union[str, Code, Strong, Link, Badge, Img, Br]
Cell = Union[Inline, list]  # one inline or a list of inlines


@dataclass
class Para:
    """A paragraph of inlines."""

    parts: list[Inline]


@dataclass
class Alert:
    """A visible message box: ``level`` is error, warning or info. Never collapsed."""

    level: str
    parts: list[Inline]


@dataclass
class Table:
    """A table; each cell is an inline or a list of inlines."""

    head: list[str]
    rows: list[list[Cell]]
    cls: str = ""


@dataclass
class Pre:
    """Preformatted text (a torchinfo table, print(model), YAML)."""

    text: str


@dataclass
class Figure:
    """A picture with a caption."""

    img: Img
    caption: list[Inline]


@dataclass
class Gallery:
    """Figures side by side (``wide``: one per row, for wide grids)."""

    figures: list[Figure]
    wide: bool = False


@dataclass
class Heading:
    """A sub-heading inside a section."""

    text: str
    level: int = 3


@dataclass
class Details:
    """A collapsible block (``<details>``)."""

    summary: str
    body: list[Any]
    open: bool = False


@dataclass
class Columns:
    """Columns of blocks side by side when there is room (stacked in Markdown)."""

    columns: list[list[Any]]


@dataclass
class Section:
    """A top-level section with a stable ``id`` (the browser test looks for these)."""

    id: str
    title: str
    body: list[Any]
    status: str | None = None


@dataclass
class Document:
    """A whole report: a title, a subtitle and sections in order."""

    title: str
    subtitle: list[Inline]
    sections: list[Section]


# =========================================================================== files


def inside(base: Path, rel: str) -> Path | None:
    """``base / rel`` when it stays inside ``base`` and is a file; else None."""
    try:
        path = (base / rel).resolve()
        path.relative_to(base.resolve())
    except (ValueError, OSError):
        return None
    return path if path.is_file() else None


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file and a rename (safe with parallel writers)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# =========================================================================== HTML

_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--bg:#fff;--alt:#f6f8fa;--line:#d1d9e0;--accent:#0969da}
*{box-sizing:border-box}
body{
  margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
  background:var(--bg)}
header.top{padding:18px 32px 10px;border-bottom:1px solid var(--line);background:var(--alt)}
header.top h1{margin:0 0 4px;font-size:24px}
nav{
  position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);
  padding:6px 32px;display:flex;flex-wrap:wrap;gap:4px 14px}
nav a{color:var(--accent);text-decoration:none;font-size:14px}
main{padding:8px 32px 48px;max-width:1400px}
section{margin-top:22px}
h2{
  font-size:20px;border-bottom:1px solid var(--line);padding-bottom:4px;display:flex;gap:10px;
  align-items:center}
h3{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--alt)}
table.kv td:first-child{font-weight:600;white-space:nowrap;background:var(--alt)}
table.kv th{display:none}
table.hashes code{font-size:12px}
table.grid td{text-align:center;min-width:120px}
table.grid img{display:block;margin:0 auto 4px;max-width:256px}
code{
  font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--alt);
  padding:1px 4px;border-radius:4px;word-break:break-all}
pre{
  font:12.5px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--alt);
  border:1px solid var(--line);padding:10px;overflow:auto;max-height:640px}
details{margin:8px 0}
summary{cursor:pointer;color:var(--accent)}
.badge{
  display:inline-block;padding:0 8px;border-radius:10px;font-size:12.5px;font-weight:600;
  color:#fff;background:#6e7781;vertical-align:middle}
.badge.ok{background:#1a7f37}
.badge.failed,.badge.invalid{background:#cf222e}
.badge.interrupted{background:#bc4c00}
.badge.running,.badge.pending,.badge.writing{background:#0969da}
.badge.skipped{background:#8c959f}
.alert{border-left:4px solid;padding:8px 12px;margin:8px 0;border-radius:4px}
.alert.error{border-color:#cf222e;background:#ffebe9}
.alert.warning{border-color:#bf8700;background:#fff8c5}
.alert.info{border-color:#0969da;background:#ddf4ff}
.columns{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start}
.columns>div{flex:0 1 auto;min-width:0;max-width:100%}
.columns>div:last-child{flex:1 1 420px}
.gallery{
  display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px;margin:10px 0}
.gallery.wide{display:flex;flex-wrap:wrap;align-items:flex-start}
.gallery.wide figure{flex:0 1 auto;max-width:100%}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:8px;background:#fff}
figure img{width:100%;height:auto;display:block;margin:0 auto}
.gallery.wide figure img{width:auto;max-width:100%;max-height:400px}
.gallery.wide figure img{image-rendering:pixelated}
figcaption{font-size:13px;color:var(--muted);margin-top:6px}
.missing{color:#cf222e;font-style:italic}
footer{color:var(--muted);font-size:12px;padding:12px 32px;border-top:1px solid var(--line)}
"""

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}


@dataclass
class _HtmlCtx:
    base: Path
    thumb_px: int | None


def _image_uri(path: Path, thumb_px: int | None) -> str:
    """A data URI of the picture (downscaled with PIL when ``thumb_px`` is smaller)."""
    raw = path.read_bytes()
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    if thumb_px and mime in ("image/png", "image/jpeg"):
        import io

        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            if max(im.size) > thumb_px:
                im.thumbnail((thumb_px, thumb_px), Image.Resampling.LANCZOS)
                buf = io.BytesIO()
                im.save(buf, format="PNG", optimize=True)
                raw, mime = buf.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("vizpipe")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _href(href: str) -> str:
    if re.match(r"^(https?:|#)", href):
        return _esc(href)
    return _esc(quote(href, safe="/#=,+@"))


def _inline_html(part: Any, ctx: _HtmlCtx) -> str:
    if isinstance(part, list):
        return "".join(_inline_html(p, ctx) for p in part)
    if isinstance(part, Code):
        return f"<code>{_esc(part.text)}</code>"
    if isinstance(part, Strong):
        return f"<strong>{_esc(part.text)}</strong>"
    if isinstance(part, Br):
        return "<br>"
    if isinstance(part, Link):
        return f'<a href="{_href(part.href)}">{_esc(part.text)}</a>'
    if isinstance(part, Badge):
        cls = re.sub(r"[^a-z]", "", part.status.lower())
        return f'<span class="badge {cls}">{_esc(part.status)}</span>'
    if isinstance(part, Img):
        path = inside(ctx.base, part.path)
        if path is None:
            return f'<span class="missing">missing picture: {_esc(part.path)}</span>'
        try:
            uri = _image_uri(path, ctx.thumb_px if part.thumb else None)
        except Exception as exc:  # noqa: BLE001 - an unreadable picture is shown as such
            why = f"unreadable picture {part.path}: {exc}"
            return f'<span class="missing">{_esc(why)}</span>'
        path_attr = _esc(part.path)
        return f'<img src="{uri}" alt="{_esc(part.alt)}" title="{path_attr}" data-path="{path_attr}">'
    return _esc(part)


def _block_html(block: Any, ctx: _HtmlCtx) -> str:
    if isinstance(block, Para):
        return f"<p>{_inline_html(block.parts, ctx)}</p>"
    if isinstance(block, Alert):
        inner = _inline_html(block.parts, ctx)
        return f'<div class="alert {_esc(block.level)}" role="alert">{inner}</div>'
    if isinstance(block, Heading):
        return f"<h{block.level}>{_esc(block.text)}</h{block.level}>"
    if isinstance(block, Pre):
        return f"<pre>{_esc(block.text)}</pre>"
    if isinstance(block, Table):
        head = "".join(f"<th>{_esc(h)}</th>" for h in block.head)
        body = "".join(
            "<tr>" + "".join(f"<td>{_inline_html(c, ctx)}</td>" for c in row) + "</tr>" for row in block.rows
        )
        cls = f' class="{_esc(block.cls)}"' if block.cls else ""
        return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Gallery):
        figs = "".join(
            f"<figure>{_inline_html(f.img, ctx)}"
            f"<figcaption>{_inline_html(f.caption, ctx)}</figcaption></figure>"
            for f in block.figures
        )
        return f'<div class="gallery{" wide" if block.wide else ""}">{figs}</div>'
    if isinstance(block, Columns):
        cols = ("<div>" + "\n".join(_block_html(b, ctx) for b in col) + "</div>" for col in block.columns)
        return '<div class="columns">' + "".join(cols) + "</div>"
    if isinstance(block, Details):
        inner = "\n".join(_block_html(b, ctx) for b in block.body)
        opened = " open" if block.open else ""
        return f"<details{opened}><summary>{_esc(block.summary)}</summary>\n{inner}\n</details>"
    raise TypeError(f"Unknown block {type(block).__name__}")


def to_html(doc: Document, base: Path, thumb_px: int | None = None) -> str:
    """Render ``doc`` as one self-contained HTML page; pictures under ``base`` become data URIs."""
    __version__ = _version()
    ctx = _HtmlCtx(Path(base), thumb_px)
    nav = "".join(f'<a href="#{_esc(s.id)}">{_esc(s.title)}</a>' for s in doc.sections)
    parts = []
    for s in doc.sections:
        badge = _inline_html(Badge(s.status), ctx) if s.status else ""
        body = "\n".join(_block_html(b, ctx) for b in s.body)
        sid = _esc(s.id)
        parts.append(
            f'<section id="{sid}" data-section="{sid}">\n<h2>{_esc(s.title)} {badge}</h2>\n{body}\n</section>'
        )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="vizpipe {_esc(__version__)}">\n'
        f"<title>{_esc(doc.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header class="top"><h1>{_esc(doc.title)}</h1>'
        f"<div>{_inline_html(doc.subtitle, ctx)}</div></header>\n"
        f"<nav>{nav}</nav>\n<main>\n" + "\n".join(parts) + "\n</main>\n"
        f"<footer>Written by vizpipe {_esc(__version__)} from the files in this folder; "
        "rebuild with "
        f"<code>python -m pipeline.report &lt;folder&gt;</code>.</footer>\n</body>\n</html>\n"
    )


# =========================================================================== Markdown


def _md_text(text: Any, table: bool = False) -> str:
    out = html.escape(str(text), quote=False)
    out = re.sub(r"([\\`*_\[\]#])", r"\\\1", out)
    out = out.replace("\n", "<br>" if table else "\n")
    return out.replace("|", "\\|") if table else out


def _md_code(text: str, table: bool = False) -> str:
    text = str(text).replace("\n", " ")
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    body = text.replace("|", "\\|") if table else text
    return f"{ticks}{pad}{body}{pad}{ticks}"


def _inline_md(part: Any, table: bool = False) -> str:
    if isinstance(part, list):
        return "".join(_inline_md(p, table) for p in part)
    if isinstance(part, Code):
        return _md_code(part.text, table)
    if isinstance(part, Strong):
        return f"**{_md_text(part.text, table)}**" if part.text.strip() else ""
    if isinstance(part, Br):
        return "<br>" if table else "  \n"
    if isinstance(part, Link):
        return f"[{_md_text(part.text, table)}]({quote(part.href, safe='/#:=,+@')})"
    if isinstance(part, Badge):
        word = part.status.upper() if part.status in ("failed", "interrupted", "invalid") else part.status
        return f"**{_md_text(word, table)}**" if part.status != "ok" else "ok"
    if isinstance(part, Img):
        return f"![{_md_text(part.alt, table)}]({quote(part.path, safe='/=,+@')})"
    return _md_text(part, table)


def _fence(text: str) -> str:
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}text\n{text}\n{ticks}"


def _block_md(block: Any) -> str:
    if isinstance(block, Para):
        return _inline_md(block.parts)
    if isinstance(block, Alert):
        label = {"error": "Error", "warning": "Warning"}.get(block.level, "Note")
        return f"> **{label}:** {_inline_md(block.parts)}"
    if isinstance(block, Heading):
        return f"{'#' * block.level} {_md_text(block.text)}"
    if isinstance(block, Pre):
        return _fence(block.text)
    if isinstance(block, Table):
        head = [_md_text(h, True) or " " for h in block.head]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(_inline_md(c, True) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Gallery):
        return "\n\n".join(f"{_inline_md(f.img)}  \n{_inline_md(f.caption)}" for f in block.figures)
    if isinstance(block, Columns):
        return "\n\n".join(_block_md(b) for col in block.columns for b in col)
    if isinstance(block, Details):
        inner = "\n\n".join(_block_md(b) for b in block.body)
        opened = " open" if block.open else ""
        summary = html.escape(block.summary)
        return f"<details{opened}><summary>{summary}</summary>\n\n{inner}\n\n</details>"
    raise TypeError(f"Unknown block {type(block).__name__}")


def to_markdown(doc: Document) -> str:
    """Render ``doc`` as Markdown for a forge: pictures linked relatively, long texts folded."""
    out = [f"# {_md_text(doc.title)}", _inline_md(doc.subtitle)]
    out.append(" · ".join(f"[{_md_text(s.title)}](#{s.id})" for s in doc.sections))
    for s in doc.sections:
        out.append(
            f'<a id="{html.escape(s.id)}"></a>\n\n## {_md_text(s.title)}'
            + (f" ({_inline_md(Badge(s.status))})" if s.status else "")
        )
        out.extend(_block_md(b) for b in s.body)
    return "\n\n".join(out) + "\n"
