"""jinja2 for the report package: the environment, its filters, and ``render``.

HTML templates (``*.html.j2``) and strings (stage fragments) are autoescaped by jinja2, so every
value is escaped where it is written. The Markdown template is not autoescaped: it writes every
value through one of the ``md*`` filters here (or ``|e`` inside raw HTML).
"""

from __future__ import annotations

import functools
import html
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.report.common import badge_class, fmt_mb, fmt_num, fmt_seconds, fmt_shape, url

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


# =========================================================================== Markdown filters


def md_text(text: Any, table: bool = False) -> str:
    """Text for Markdown: HTML and Markdown syntax escaped (and ``|``/newlines in a table cell)."""
    out = html.escape(str(text), quote=False)
    out = re.sub(r"([\\`*_\[\]#])", r"\\\1", out)
    if table:
        out = out.replace("\n", "<br>").replace("|", "\\|")
    return out


def md_cell(text: Any) -> str:
    """``md_text`` for a table cell."""
    return md_text(text, table=True)


def md_code(text: Any, table: bool = False) -> str:
    """A Markdown code span that survives backticks (and pipes in a table cell)."""
    text = str(text).replace("\n", " ")
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    body = text.replace("|", "\\|") if table else text
    return f"{ticks}{pad}{body}{pad}{ticks}"


def md_badge(status: Any) -> str:
    """A status word for Markdown: bold, upper case when it is bad, plain ``ok``."""
    word = str(status)
    if word == "ok":
        return "ok"
    return f"**{md_cell(word.upper() if word in ('failed', 'interrupted', 'invalid') else word)}**"


def fence(text: Any) -> str:
    """A fenced code block that survives backticks in ``text``."""
    text = str(text).rstrip()
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}text\n{text}\n{ticks}"


# =========================================================================== environment


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The report's jinja2 environment: autoescape for ``*.html``/``*.html.j2`` and strings."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), default_for_string=True, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        num=fmt_num,
        seconds=fmt_seconds,
        mb=fmt_mb,
        shape=fmt_shape,
        badge_class=badge_class,
        url=url,
        md=md_text,
        md_cell=md_cell,
        md_code=md_code,
        md_badge=md_badge,
        fence=fence,
    )
    env.globals.update(css=_css(), version=_version())
    return env


def render(template: str, context: dict[str, Any]) -> str:
    """Render one of ``templates/`` with ``context``."""
    return environment().get_template(template).render(context)


def _css() -> Any:
    from markupsafe import Markup

    return Markup((TEMPLATES / "report.css").read_text(encoding="utf-8"))


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("vizpipe")
    except metadata.PackageNotFoundError:
        return "(not installed)"
