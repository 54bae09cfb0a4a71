"""One stage's section of a run report, built generically from its ``StageResult`` record.

Knows no stage: every section is the record's tables, texts and pictures, ungrouped first, then
one block per ``group``. A stage class may ship a jinja2 fragment (``Stage.template``, a file
beside its module) that replaces the generic body; it gets ``result``, ``record``, ``run`` and
``section`` (this module's ``StageView``, pictures already embedded).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from vizpipe.pipeline.report.common import (
    Alert,
    Cell,
    PictureView,
    embed,
    fmt_num,
    record_error,
    url,
)
from vizpipe.pipeline.report.templating import environment
from vizpipe.pipeline.stage import Picture, StageResult, Table

log = logging.getLogger(__name__)


@dataclass
class TableView:
    """A ``Table`` with its cells formatted (numbers, links, code)."""

    title: str
    caption: str
    columns: list[str]
    rows: list[list[Cell]]
    kv: bool = False


@dataclass
class TextView:
    """A ``Text``: folded in HTML unless ``open``; ``pre`` keeps its layout."""

    title: str
    body: str
    pre: bool = True
    open: bool = False


@dataclass
class GalleryView:
    """Pictures side by side; ``wide`` ones one per row at their own size."""

    wide: bool
    pictures: list[PictureView]


@dataclass
class GroupView:
    """The tables, texts and pictures of one group ("" = the ungrouped ones)."""

    name: str
    tables: list[TableView] = field(default_factory=list)
    texts: list[TextView] = field(default_factory=list)
    galleries: list[GalleryView] = field(default_factory=list)


@dataclass
class KeyNumber:
    """A key scalar, formatted: ``arrow`` is ↑/↓ when the stage says which way is better."""

    name: str
    value: str
    arrow: str = ""


@dataclass
class StageView:
    """Everything the templates show for one stage."""

    id: str
    name: str
    title: str
    status: str
    seconds: float | None
    files: int  # artifacts recorded for the stage
    folder: str  # "cam/"
    alerts: list[Alert] = field(default_factory=list)
    key_numbers: list[KeyNumber] = field(default_factory=list)
    summary: str = ""
    params: list[str] = field(default_factory=list)  # "key=value"
    body: GroupView = field(default_factory=lambda: GroupView(""))
    groups: list[GroupView] = field(default_factory=list)
    pictures: list[PictureView] = field(default_factory=list)  # every shown picture, display order
    more: Alert | None = None  # "N more pictures not shown"
    fragment: Any = None  # the stage's own template, rendered (Markup); None = generic body


def status_alerts(record: dict[str, Any]) -> list[Alert]:
    """The alerts a step's status calls for (failed, skipped, interrupted)."""
    status = str(record.get("status") or "unknown")
    if status == "failed":
        return [Alert("error", "This stage failed: ", record_error(record))]
    if status == "skipped":
        return [Alert("info", "", "Skipped: an earlier step failed (see the manifest below).")]
    if status == "interrupted":
        return [Alert("error", "", "Interrupted (Ctrl-C); files written so far are kept.")]
    return []


def _cell(value: Any, link: bool, code: bool) -> Cell:
    text = fmt_num(value)
    if link and value not in (None, ""):
        return Cell(text, href=url(value), code=code)
    return Cell(text, code=code)


def table_view(t: Table) -> TableView:
    """Format a ``Table``'s cells: ``links`` columns become links, ``code`` columns monospace."""
    links, code = set(t.links), set(t.code)
    rows = [[_cell(v, i in links, i in code) for i, v in enumerate(row)] for row in t.rows]
    return TableView(t.title, t.caption, [str(c) for c in t.columns], rows, t.kv)


def _groups(result: StageResult) -> list[str]:
    """Group names in order of first appearance (tables, then texts, then pictures)."""
    names = [x.group for x in (*result.tables, *result.texts, *result.pictures)]
    return [g for g in dict.fromkeys(names) if g]


def _galleries(pictures: list[PictureView]) -> list[GalleryView]:
    """Consecutive pictures of the same kind (wide or not) share a gallery."""
    out: list[GalleryView] = []
    for p in pictures:
        if out and out[-1].wide == p.wide:
            out[-1].pictures.append(p)
        else:
            out.append(GalleryView(p.wide, [p]))
    return out


def _picture_view(p: Picture) -> PictureView:
    return PictureView(p.path, p.caption, p.caption or p.path, p.badge, p.wide)


def stage_view(
    record: dict[str, Any],
    result: StageResult | None,
    run_dir: Path,
    max_images: int,
    embed_pictures: bool,
    problem: str | None = None,
) -> StageView:
    """Build one stage's section: header line, alerts, key numbers, then its records by group.

    At most ``max_images`` pictures (0 = all) are shown, counted over the whole section in display
    order; a group whose pictures are all past the limit (a CAM image) is left out with its tables
    and texts; a note says how many more pictures and groups there are and in which folders.
    ``max_images`` is the only limit: a stage's record lists all its pictures.
    """
    name = str(record.get("name"))
    view = StageView(
        id=name,
        name=name,
        title=str(record.get("title") or name),
        status=str(record.get("status") or "unknown"),
        seconds=record.get("seconds"),
        files=len(record.get("artifacts") or []),
        folder=f"{name}/",
        alerts=status_alerts(record),
    )
    if problem:
        view.alerts.append(Alert("error", "Could not read this stage's result: ", problem))
    if result is None:
        return view
    view.alerts += [Alert("warning", "Warning: ", str(w)) for w in result.warnings]
    last = {s.name: s for s in sorted(result.key_scalars(), key=lambda s: s.step)}
    arrows = {"higher": "↑", "lower": "↓"}
    view.key_numbers = [
        KeyNumber(n, fmt_num(s.value), arrows.get(s.better or "", "")) for n, s in last.items()
    ]
    view.summary = result.summary
    view.params = [f"{k}={v}" for k, v in result.params.items()]

    order = ["", *_groups(result)]
    blocks = {g: GroupView(g) for g in order}
    for t in result.tables:
        blocks[t.group].tables.append(table_view(t))
    for x in result.texts:
        blocks[x.group].texts.append(TextView(x.title, x.body, x.pre, x.open))
    rank = {g: i for i, g in enumerate(order)}
    ordered = sorted(result.pictures, key=lambda p: rank[p.group])  # display order (stable)
    limit = len(ordered) if max_images <= 0 else max_images
    shown, hidden = ordered[:limit], ordered[limit:]
    by_group: dict[str, list[PictureView]] = {g: [] for g in order}
    for p in shown:
        pv = embed(run_dir, _picture_view(p)) if embed_pictures else _picture_view(p)
        by_group[p.group].append(pv)
        view.pictures.append(pv)
    for g in order:
        blocks[g].galleries = _galleries(by_group[g])
    view.body = blocks[""]
    shown_groups = {p.group for p in shown}
    left_out = {p.group for p in hidden if p.group and p.group not in shown_groups}
    view.groups = [blocks[g] for g in order[1:] if g not in left_out]
    if hidden:
        groups = f" in {len(left_out)} more groups" if left_out else ""
        view.more = Alert(
            "info",
            "",
            f"{len(hidden)} more pictures{groups} not shown (report.max_images={max_images}); they are in ",
            _folders([p.path for p in hidden]),
        )
    return view


def _folders(paths: list[str]) -> str:
    """The folders holding ``paths``, or their common folder when there are more than four."""
    import os

    folders = list(dict.fromkeys(f"{PurePosixPath(p).parent.as_posix()}/" for p in paths))
    if len(folders) <= 4:
        return ", ".join(folders)
    common = os.path.commonpath([f.rstrip("/") for f in folders])
    return f"{common}/ ({len(folders)} folders)" if common else f"{len(folders)} folders"


# =========================================================================== fragments


def fragment_paths() -> dict[str, Path]:
    """Stage name -> its report fragment, for the discovered stages that ship one.

    Empty when discovery fails: the report then renders every stage generically.
    """
    try:
        from vizpipe.pipeline.registry import stage_classes

        classes = stage_classes()
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not cost the report
        log.warning("Report: stage discovery failed (%s); every section is generic", exc)
        return {}
    out = {}
    for name, cls in classes.items():
        if not getattr(cls, "template", None):
            continue
        try:
            out[name] = Path(inspect.getfile(cls)).resolve().parent / str(cls.template)
        except (TypeError, OSError) as exc:  # a class without a source file: generic section
            log.warning("Report: no folder for the template of stage %s: %s", name, exc)
    return out


def render_fragment(path: Path, view: StageView, result: StageResult, record: dict, run: Any) -> None:
    """Render a stage's fragment into ``view.fragment``; on failure, an alert and the generic body."""
    try:
        template = environment().from_string(path.read_text(encoding="utf-8"))
        from markupsafe import Markup

        view.fragment = Markup(template.render(result=result, record=record, run=run, section=view))
    except Exception as exc:  # noqa: BLE001 - a stage's broken template costs only its own body
        log.warning("Report: template %s of stage %s failed: %s", path, view.name, exc)
        why = f"{path.name}: {type(exc).__name__}: {exc}"
        view.alerts.append(Alert("warning", "The stage's report template failed; generic view. ", why))
