"""The sweep index: ``<sweep_dir>/index.html``, built only from the job folders on disk.

Written by ``pipeline.callbacks.SweepReportCallback`` after every multirun job (Hydra skips
``on_multirun_end`` when a job failed, and launchers may run jobs in other processes), and
rebuildable at any time: ``python -m pipeline.report <sweep_dir>``.

Collect (``collect_sweep``: each job's overrides, status, errors and CAM data), then render
(``sweep_document``: the job table, comparison grids over the swept keys, a leaderboard of CAM
metrics), then write (``write_sweep_index``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.manifest import MANIFEST
from pipeline.report import (
    REPORT_HTML,
    REPORT_MD,
    SWEEP_INDEX,
    class_text,
    fmt_num,
    fmt_seconds,
    read_json,
    read_text,
    read_yaml,
    record_error,
)
from pipeline.report_markup import (
    Alert,
    Badge,
    Br,
    Cell,
    Code,
    Document,
    Heading,
    Img,
    Inline,
    Link,
    Para,
    Section,
    Strong,
    Table,
    to_html,
    write_atomic,
)

# CAM metrics where a smaller value means a better map (pytorch-grad-cam's metric docs:
# removing the most relevant pixels first should hurt the model most; a drop in confidence is bad).
LOWER_IS_BETTER = ("most_relevant", "morf", "drop_in_confidence", "drop")
# Preferred metric for ranking, when present (ROAD combined: (LeRF - MoRF) / 2, higher is better).
PRIMARY_METRICS = ("road_combined", "roadcombined", "confidence_change")
THUMB_PX = 256  # pictures are downscaled to at most this many pixels per edge


# =========================================================================== sweep: collect


@dataclass
class JobData:
    """One job folder of a sweep."""

    name: str  # folder name, e.g. "0_cam.layer=layer3"
    num: int | None
    overrides: list[str]
    params: dict[str, str]
    status: str
    seconds: float | None
    error: str | None
    created: str | None = None
    cam: dict[str, Any] | None = None
    picture: tuple[str, str] | None = None  # fallback (path, what) when there is no CAM
    reports: list[str] = field(default_factory=list)


@dataclass
class SweepData:
    """Everything ``index.html`` shows, read from the sweep folder."""

    sweep_dir: Path
    jobs: list[JobData]
    swept: list[str]  # keys whose values differ between jobs, in sweep order
    task: list[str]  # the sweep's overrides (multirun.yaml), for the command line


def _split_override(text: str) -> tuple[str, str]:
    key, _, value = str(text).partition("=")
    return key.lstrip("+~"), value


def is_job_dir(p: Path) -> bool:
    """True for a sweep's job folder: a manifest, a ``.hydra`` folder, or a ``<num>_`` name."""
    if not p.is_dir() or p.name.startswith("."):
        return False
    return (p / MANIFEST).is_file() or (p / ".hydra").is_dir() or bool(re.match(r"^\d+(_|$)", p.name))


def _last_error_line(log_path: Path) -> str | None:
    text = read_text(log_path)
    if not text:
        return None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "[ERROR]" in ln or "Error" in ln]
    return (errors or lines)[-1][:500]


def collect_job(job: Path) -> JobData:
    """Read one job folder; a folder without a manifest is a failed job."""
    problems: list[str] = []
    num_match = re.match(r"^(\d+)", job.name)
    manifest = read_json(job / MANIFEST, problems)
    overrides = read_yaml(job / ".hydra" / "overrides.yaml")
    if not isinstance(overrides, list):
        overrides = list((manifest or {}).get("overrides") or [])
    overrides = [str(o) for o in overrides if not str(o).lstrip("+~").startswith("hydra.")]
    params = dict(_split_override(o) for o in overrides)
    if manifest is None:
        why = problems[0] if problems else f"no {MANIFEST}: the job stopped before the pipeline started"
        hint = _last_error_line(job / "run.log")
        data = JobData(
            job.name,
            int(num_match.group(1)) if num_match else None,
            overrides,
            params,
            "failed",
            None,
            f"{why}" + (f"; last log line: {hint}" if hint else ""),
        )
    else:
        errors = [
            f"{r.get('name')}: {record_error(r)}"
            for r in [manifest.get("setup") or {}, *(manifest.get("stages") or [])]
            if r.get("status") == "failed"
        ]
        data = JobData(
            job.name,
            int(num_match.group(1)) if num_match else None,
            overrides,
            params,
            str(manifest.get("status", "unknown")),
            manifest.get("seconds"),
            "; ".join(errors) or None,
            manifest.get("created"),
        )
    data.cam = read_json(job / "cam" / "cam.json", problems)
    if not data.cam:
        feats = read_json(job / "features" / "stats.json", problems) or {}
        for lname, info in (feats.get("layers") or {}).items():
            for image, grid in (info.get("grids") or {}).items():
                data.picture = (str(grid), f"feature maps of {lname}, image {image}")
                break
            if data.picture:
                break
    if not data.cam and not data.picture:
        kern = read_json(job / "kernels" / "stats.json", problems) or {}
        for lname, info in (kern.get("layers") or {}).items():
            if info.get("grid"):
                data.picture = (str(info["grid"]), f"kernels of {lname}")
                break
    data.reports = [r for r in (REPORT_HTML, REPORT_MD) if (job / r).is_file()]
    return data


def collect_sweep(sweep_dir: Path | str) -> SweepData:
    """Read every job folder of a sweep (and ``multirun.yaml``); find the swept keys."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise FileNotFoundError(f"Sweep folder {sweep} does not exist")
    jobs = [collect_job(p) for p in sweep.iterdir() if is_job_dir(p)]
    jobs.sort(key=lambda j: (j.num if j.num is not None else 1 << 30, j.name))
    multirun = read_yaml(sweep / "multirun.yaml") or {}
    task = [str(t) for t in (((multirun.get("hydra") or {}).get("overrides") or {}).get("task") or [])]
    order: list[str] = [_split_override(t)[0] for t in task]
    for j in jobs:
        order.extend(j.params)
    swept = []
    for key in dict.fromkeys(order):
        values = {j.params.get(key) for j in jobs}
        if len(values) > 1:
            swept.append(key)
    return SweepData(sweep, jobs, swept, task)


# =========================================================================== sweep: document


def _values(jobs: list[JobData], key: str | None) -> list[str | None]:
    if key is None:
        return [None]
    return list(dict.fromkeys(j.params.get(key) for j in jobs))


def grid_axes(swept: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(row key, column key, facet keys): rows prefer a layer-like key, then sweep order."""
    keys = list(swept)
    rows = next((k for k in keys if "layer" in k.lower()), keys[0] if keys else None)
    rest = [k for k in keys if k != rows]
    cols = rest[0] if rest else None
    return rows, cols, rest[1:]


def metric_lower_is_better(name: str) -> bool:
    """True for CAM metrics where smaller is better (e.g. ROAD most-relevant-first)."""
    low = name.lower()
    return any(tag in low for tag in LOWER_IS_BETTER) and "least" not in low and "increase" not in low


def _job_link(job: JobData) -> Cell:
    if REPORT_HTML in job.reports:
        return Link(job.name, f"{job.name}/{REPORT_HTML}")
    return Code(job.name)


def _cell(job: JobData, image: str | None) -> list[Inline]:
    parts: list[Inline] = []
    if job.status != "ok":
        parts += [Badge(job.status), " "]
        if job.error:
            parts.append(job.error[:300] + ("…" if len(job.error) > 300 else ""))
    maps = []
    for img in (job.cam or {}).get("images") or []:
        if image is None or img.get("name") == image:
            maps.extend(img.get("maps") or [])
    for m in maps:
        if m.get("overlay"):
            parts.append(
                Img(
                    f"{job.name}/{m['overlay']}",
                    f"{job.name}: {m.get('layer')}, {m.get('target_name') or m.get('target')}",
                    thumb=True,
                )
            )
            parts.append(Code(str(m.get("layer"))))
            parts.append(f" {class_text(m.get('target'), m.get('target_name'))}: {fmt_num(m.get('score'))}")
            for key, val in (m.get("metrics") or {}).items():
                parts += [Br(), f"{key} {fmt_num(val)}"]
            if m.get("valid") is False:
                parts += [" ", Badge("invalid")]
            parts.append(Br())
    if not maps and job.picture:
        parts += [
            Img(f"{job.name}/{job.picture[0]}", job.picture[1], thumb=True),
            job.picture[1],
            Br(),
        ]
    parts.append(Link("report", f"{job.name}/{REPORT_HTML}") if REPORT_HTML in job.reports else "no report")
    return parts


def sweep_document(data: SweepData) -> Document:
    """Turn a sweep's data into a document: overview, job table, comparison grids, leaderboard."""
    jobs = data.jobs
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    overall = (
        "ok" if jobs and counts.get("ok") == len(jobs) else ("failed" if counts.get("failed") else "unknown")
    )
    created = sorted(j.created for j in jobs if j.created)
    common = [o for o in (jobs[0].overrides if jobs else []) if all(o in j.overrides for j in jobs)]
    head_rows: list[list[Cell]] = [
        ["Sweep folder", Code(str(data.sweep_dir.resolve()))],
        ["Command", Code(shlex.join(["python", "run.py", "-m", *data.task]) if data.task else "–")],
        [
            "Jobs",
            [
                f"{len(jobs)} job folders: ",
                *sum(([Badge(k), f" {v}  "] for k, v in sorted(counts.items())), []),
            ],
        ],
        ["Swept keys", [*sum(([Code(k), " "] for k in data.swept), [])] or "none"],
        ["Common overrides", [*sum(([Code(o), " "] for o in common), [])] or "none"],
        ["Started", created[0] if created else "–"],
        ["Rebuild", Code(f"python -m pipeline.report {shlex.quote(str(data.sweep_dir))}")],
    ]
    failed = [j for j in jobs if j.status not in ("ok", "running")]
    overview: list[Any] = [Table(["", ""], head_rows, cls="kv")]
    for j in failed:
        overview.append(Alert("error", [Strong(f"Job {j.name} {j.status}: "), j.error or "see its run.log"]))
    sections = [Section("header", "Sweep", overview, status=overall)]

    rows: list[list[Cell]] = []
    for j in jobs:
        shown = [o for o in j.overrides if _split_override(o)[0] in data.swept] if data.swept else j.overrides
        rows.append(
            [
                "–" if j.num is None else str(j.num),
                [*sum(([Code(o), " "] for o in shown), [])] or "(none)",
                Badge(j.status),
                fmt_seconds(j.seconds),
                Strong(j.error) if j.error else "",
                sum(([Link(r, f"{j.name}/{r}"), Br()] for r in j.reports), []) or "no report",
            ]
        )
    head = "Swept overrides" if data.swept else "Overrides"
    sections.append(
        Section(
            "jobs",
            "Jobs",
            [Table(["#", head, "Status", "Time", "Error", "Report"], rows, cls="jobs")],
        )
    )
    sections.append(Section("grids", "Comparison grids", _grid_blocks(data)))
    sections.append(Section("leaderboard", "Leaderboard", _leaderboard_blocks(data)))
    return Document(f"vizpipe sweep: {data.sweep_dir.name}", [Badge(overall), f" {len(jobs)} jobs"], sections)


def _grid_blocks(data: SweepData) -> list[Any]:
    jobs = data.jobs
    if not jobs:
        return [Para(["No job folders yet."])]
    row_key, col_key, facet_keys = grid_axes(data.swept)
    images = list(dict.fromkeys(str(i.get("name")) for j in jobs for i in (j.cam or {}).get("images") or []))
    out: list[Any] = []
    if not data.swept:
        out.append(Para(["Nothing was swept (every job has the same overrides); one cell per job."]))
    else:
        desc: list[Inline] = ["Rows: ", Code(str(row_key))]
        if col_key:
            desc += [", columns: ", Code(col_key)]
        if facet_keys:
            desc += [", one grid per value of ", *sum(([Code(k), " "] for k in facet_keys), [])]
        desc.append(
            ". Each cell shows the job's CAM overlay"
            + ("" if images else " (no CAM in these jobs: its first picture)")
            + "."
        )
        out.append(Para(desc))
    facets = list(dict.fromkeys(tuple(j.params.get(k) for k in facet_keys) for j in jobs))
    for image in images or [None]:
        for facet in facets:
            title = []
            if image is not None and len(images) > 1:
                title.append(f"image {image}")
            title += [f"{k}={v}" for k, v in zip(facet_keys, facet, strict=True)]
            if title:
                out.append(Heading(", ".join(title)))
            members = [j for j in jobs if tuple(j.params.get(k) for k in facet_keys) == facet]
            cols = _values(members, col_key)
            if col_key:
                head = [str(row_key), *[f"{col_key}={'(unset)' if c is None else c}" for c in cols]]
            else:
                head = [str(row_key or "job"), "result"]
            grid_rows: list[list[Cell]] = []
            row_vals = _values(members, row_key) if row_key else [None]
            if not data.swept:
                for j in members:
                    grid_rows.append([Code(j.name), _cell(j, image)])
            else:
                for rv in row_vals:
                    line: list[Cell] = [Code("(unset)" if rv is None else str(rv))]
                    for cv in cols:
                        hits = [
                            j
                            for j in members
                            if j.params.get(row_key) == rv
                            and (col_key is None or j.params.get(col_key) == cv)
                        ]
                        line.append(sum((_cell(j, image) for j in hits), []) or "–")
                    grid_rows.append(line)
            out.append(Table(head, grid_rows, cls="grid"))
    return out


def _leaderboard_blocks(data: SweepData) -> list[Any]:
    entries: list[dict[str, Any]] = []
    for j in data.jobs:
        for img in (j.cam or {}).get("images") or []:
            for m in img.get("maps") or []:
                if m.get("metrics"):
                    entries.append({"job": j, "image": img.get("name"), "map": m, "metrics": m["metrics"]})
    if not entries:
        return [
            Para(
                [
                    "No CAM metrics in these jobs, so no ranking. Add e.g. ",
                    Code("cam.metrics=[road_combined]"),
                    " to the sweep.",
                ]
            )
        ]
    names = list(dict.fromkeys(k for e in entries for k in e["metrics"]))
    primary = next((n for p in PRIMARY_METRICS for n in names if n.lower() == p), names[0])
    lower = metric_lower_is_better(primary)

    def key(e: dict[str, Any]) -> tuple[int, float]:
        v = e["metrics"].get(primary)
        ok = isinstance(v, (int, float)) and v == v and e["map"].get("valid") is not False
        return (0 if ok else 1, (float(v) if lower else -float(v)) if ok else 0.0)

    entries.sort(key=key)
    row_key, col_key, facet_keys = grid_axes(data.swept)
    keys = [k for k in (row_key, col_key, *facet_keys) if k]
    head = [
        "Rank",
        *keys,
        "Image",
        "Layer",
        "Target",
        "Score",
        *[f"{n} {'↓' if metric_lower_is_better(n) else '↑'}" for n in names],
        "Job",
    ]
    rows: list[list[Cell]] = []
    for i, e in enumerate(entries):
        m = e["map"]
        if key(e)[0] == 0:
            rank: Cell = str(i + 1)
        else:
            rank = Badge("invalid") if m.get("valid") is False else f"– (no {primary})"
        rows.append(
            [
                rank,
                *[str(e["job"].params.get(k, "–")) for k in keys],
                str(e["image"]),
                Code(str(m.get("layer"))),
                class_text(m.get("target"), m.get("target_name")),
                fmt_num(m.get("score")),
                *[fmt_num(e["metrics"].get(n)) for n in names],
                _job_link(e["job"]),
            ]
        )
    arrow = "lower" if lower else "higher"
    return [
        Para(
            [
                "Ranked by ",
                Code(primary),
                f" ({arrow} is better); ↑/↓ mark each metric's better direction. Invalid maps come last.",
            ]
        ),
        Table(head, rows, cls="leaderboard"),
    ]


def write_sweep_index(sweep_dir: Path | str) -> Path:
    """Write ``<sweep_dir>/index.html`` from the job folders on disk; return its path.

    Safe to call at any time and from several processes (atomic replace); it never runs a job.
    """
    sweep = Path(sweep_dir)
    doc = sweep_document(collect_sweep(sweep))
    return write_atomic(sweep / SWEEP_INDEX, to_html(doc, sweep, thumb_px=THUMB_PX))
