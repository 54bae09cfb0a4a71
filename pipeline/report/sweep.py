"""The sweep index: ``<sweep_dir>/index.html``, built only from the job folders' manifests.

Written by ``pipeline.callbacks.SweepReportCallback`` after every multirun job (Hydra skips
``on_multirun_end`` when a job failed, and launchers may run jobs in other processes), and
rebuildable at any time: ``python -m pipeline.report <sweep_dir>``.

Collect (``collect_sweep``: per job its overrides, status, errors, key scalars and preview
pictures, read from ``manifest.json``), then build the context of ``templates/sweep.html.j2``
(``sweep_context``: job table, comparison grids over the swept keys, leaderboard). Linear in jobs:
one manifest read per job; thumbnails are cached per picture file in the process.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.manifest import MANIFEST
from pipeline.report.common import (
    REPORT_HTML,
    REPORT_MD,
    THUMB_PX,
    Alert,
    PictureView,
    embed,
    fmt_num,
    read_json,
    read_text,
    read_yaml,
    record_error,
    url,
)
from pipeline.stage import Picture, Scalar, from_dict

ARROWS = {"higher": "↑", "lower": "↓"}


# =========================================================================== collect


@dataclass
class JobData:
    """One job folder of a sweep, from its manifest (a folder without one is a failed job)."""

    name: str  # folder name, e.g. "0_cam.layer=layer3"
    num: int | None
    overrides: list[str]
    params: dict[str, str]
    status: str
    seconds: float | None = None
    error: str | None = None
    created: str | None = None
    scalars: dict[str, Scalar] = field(default_factory=dict)  # key or ranked ones, by name (last step)
    previews: list[Picture] = field(default_factory=list)  # paths relative to the job folder
    first: Picture | None = None  # the first picture of any stage (when there is no preview)
    reports: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class SweepData:
    """Everything ``index.html`` shows, read from the sweep folder."""

    sweep_dir: Path
    jobs: list[JobData]
    swept: list[str]  # keys whose values differ between jobs, in sweep order
    task: list[str]  # the sweep's overrides (multirun.yaml), for the command line


def split_override(text: str) -> tuple[str, str]:
    """``"+cam.layer=layer3"`` -> ``("cam.layer", "layer3")``."""
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


def _read_results(job: JobData, stages: list[dict[str, Any]]) -> None:
    """Key/ranked scalars, preview pictures and the first picture from the stage records."""
    for rec in stages:
        res = rec.get("result")
        if not isinstance(res, dict):
            continue
        try:
            for p in res.get("pictures") or []:
                if p.get("preview") or job.first is None:
                    pic = from_dict(Picture, p)
                    job.first = job.first or pic
                    if pic.preview:
                        job.previews.append(pic)
            for s in res.get("scalars") or []:
                if s.get("key") or s.get("better"):
                    sc = from_dict(Scalar, s)
                    old = job.scalars.get(sc.name)
                    if old is None or sc.step >= old.step:
                        job.scalars[sc.name] = sc
        except (TypeError, ValueError, AttributeError) as exc:
            job.problems.append(f"{job.name}: unreadable result of stage {rec.get('name')}: {exc}")


def collect_job(job: Path) -> JobData:
    """Read one job folder; a folder without a manifest is a failed job."""
    problems: list[str] = []
    num_match = re.match(r"^(\d+)", job.name)
    num = int(num_match.group(1)) if num_match else None
    manifest = read_json(job / MANIFEST, problems)
    manifest = manifest if isinstance(manifest, dict) else None
    overrides = (manifest or {}).get("overrides")
    if not isinstance(overrides, list) or not overrides:
        overrides = read_yaml(job / ".hydra" / "overrides.yaml")
        overrides = overrides if isinstance(overrides, list) else []
    overrides = [str(o) for o in overrides if not str(o).lstrip("+~").startswith("hydra.")]
    params = dict(split_override(o) for o in overrides)
    if manifest is None:
        why = problems[0] if problems else f"no {MANIFEST}: the job stopped before the pipeline started"
        hint = _last_error_line(job / "run.log")
        error = why + (f"; last log line: {hint}" if hint else "")
        data = JobData(job.name, num, overrides, params, "failed", error=error)
    else:
        stages = [r for r in manifest.get("stages") or [] if isinstance(r, dict)]
        errors = [
            f"{r.get('name')}: {record_error(r)}"
            for r in [manifest.get("setup") or {}, *stages]
            if r.get("status") == "failed"
        ]
        status = str(manifest.get("status", "unknown"))
        data = JobData(job.name, num, overrides, params, status, manifest.get("seconds"))
        data.error, data.created = "; ".join(errors) or None, manifest.get("created")
        _read_results(data, stages)
    data.reports = [r for r in (REPORT_HTML, REPORT_MD) if (job / r).is_file()]
    return data


def collect_sweep(sweep_dir: Path | str) -> SweepData:
    """Read every job folder of a sweep (and ``multirun.yaml``); find the swept keys."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise FileNotFoundError(f"Sweep folder {sweep} does not exist")
    jobs = [collect_job(p) for p in sweep.iterdir() if is_job_dir(p)]
    jobs.sort(key=lambda j: (j.num if j.num is not None else 1 << 30, j.name))
    multirun = read_yaml(sweep / "multirun.yaml")
    multirun = multirun if isinstance(multirun, dict) else {}
    task = [str(t) for t in (((multirun.get("hydra") or {}).get("overrides") or {}).get("task") or [])]
    order: list[str] = [split_override(t)[0] for t in task]
    for j in jobs:
        order.extend(j.params)
    swept = [k for k in dict.fromkeys(order) if len({j.params.get(k) for j in jobs}) > 1]
    return SweepData(sweep, jobs, swept, task)


# =========================================================================== context


def grid_axes(swept: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(row key, column key, facet keys): rows prefer a layer-like key, then sweep order."""
    rows = next((k for k in swept if "layer" in k.lower()), swept[0] if swept else None)
    rest = [k for k in swept if k != rows]
    return rows, (rest[0] if rest else None), rest[1:]


def _values(jobs: list[JobData], key: str | None) -> list[str | None]:
    return [None] if key is None else list(dict.fromkeys(j.params.get(key) for j in jobs))


def _report_href(job: JobData) -> str | None:
    return url(f"{job.name}/{REPORT_HTML}") if REPORT_HTML in job.reports else None


def _job_cell(job: JobData, group: str | None, sweep: Path, key_names: list[str]) -> dict[str, Any]:
    """One job in a grid cell: status and error when not ok, preview thumbnails, key numbers."""
    pics = [p for p in job.previews if group is None or p.group in ("", group)]
    if not job.previews and job.first is not None:
        pics = [job.first]
    views = []
    for p in pics:  # embedded from inside the job's own folder; data-path relative to the sweep
        view = embed(
            sweep / job.name, PictureView(p.path, p.caption, f"{job.name}: {p.caption}", p.badge), THUMB_PX
        )
        view.path = f"{job.name}/{p.path}"
        views.append(view)
    error = job.error or ""
    return {
        "name": job.name,
        "status": job.status,
        "error": error[:300] + ("…" if len(error) > 300 else ""),
        "pictures": views,
        "scalars": [(n, fmt_num(job.scalars[n].value)) for n in key_names if n in job.scalars],
        "report": _report_href(job),
    }


def _grids(data: SweepData, key_names: list[str]) -> dict[str, Any]:
    jobs = data.jobs
    row_key, col_key, facet_keys = grid_axes(data.swept)
    groups = list(dict.fromkeys(p.group for j in jobs for p in j.previews if p.group))
    images: list[str | None] = list(groups) if len(groups) > 1 else [None]
    facets = list(dict.fromkeys(tuple(j.params.get(k) for k in facet_keys) for j in jobs))
    grids = []
    for image in images:
        for facet in facets:
            title = [f"image {image}"] if image is not None else []
            title += [f"{k}={v}" for k, v in zip(facet_keys, facet, strict=True)]
            members = [j for j in jobs if tuple(j.params.get(k) for k in facet_keys) == facet]
            if not data.swept:
                head = ["job", "result"]
                rows = [(j.name, [[_job_cell(j, image, data.sweep_dir, key_names)]]) for j in members]
            else:
                cols = _values(members, col_key)
                head = [str(row_key), *[f"{col_key}={'(unset)' if c is None else c}" for c in cols]]
                if col_key is None:
                    head = [str(row_key), "result"]
                rows = []
                for rv in _values(members, row_key):
                    line = []
                    for cv in cols:
                        hits = [
                            j
                            for j in members
                            if j.params.get(str(row_key)) == rv
                            and (col_key is None or j.params.get(col_key) == cv)
                        ]
                        line.append([_job_cell(j, image, data.sweep_dir, key_names) for j in hits])
                    rows.append(("(unset)" if rv is None else str(rv), line))
            grids.append({"title": ", ".join(title), "head": head, "rows": rows})
    return {"row_key": row_key, "col_key": col_key, "facet_keys": facet_keys, "grids": grids}


def _leaderboard(data: SweepData) -> dict[str, Any]:
    """Jobs ranked by the ranked scalar most jobs have (key ones first); jobs without it last."""
    seen: dict[str, list[Scalar]] = {}
    for j in data.jobs:
        for s in j.scalars.values():
            if s.better in ARROWS:
                seen.setdefault(s.name, []).append(s)
    if not seen:
        return {"primary": None}
    order = list(seen)
    primary = min(order, key=lambda n: (not any(s.key for s in seen[n]), -len(seen[n]), order.index(n)))
    better = seen[primary][0].better
    sign = -1.0 if better == "higher" else 1.0

    def value(j: JobData) -> float | None:
        s = j.scalars.get(primary)
        return None if s is None or s.value is None or s.value != s.value else float(s.value)

    ranked = sorted(data.jobs, key=lambda j: (value(j) is None, sign * (value(j) or 0.0)))
    row_key, col_key, facet_keys = grid_axes(data.swept)
    keys = [k for k in (row_key, col_key, *facet_keys) if k]
    rows = []
    for i, j in enumerate(ranked):
        rows.append(
            {
                "rank": str(i + 1) if value(j) is not None else "–",
                "keys": [str(j.params.get(k, "–")) for k in keys],
                "values": [fmt_num(j.scalars[n].value) if n in j.scalars else "–" for n in order],
                "status": j.status,
                "name": j.name,
                "report": _report_href(j),
            }
        )
    head = [*keys, *[f"{n} {ARROWS[str(seen[n][0].better)]}" for n in order]]
    return {"primary": primary, "better": better, "head": head, "rows": rows}


def sweep_context(data: SweepData) -> dict[str, Any]:
    """The template context of ``index.html``: header, jobs table, grids, leaderboard."""
    jobs = data.jobs
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    ok = jobs and counts.get("ok") == len(jobs)
    overall = "ok" if ok else ("failed" if counts.get("failed") else "unknown")
    created = sorted(str(j.created) for j in jobs if j.created)
    common = [o for o in (jobs[0].overrides if jobs else []) if all(o in j.overrides for j in jobs)]
    alerts = [
        Alert("error", f"Job {j.name} {j.status}: ", j.error or "see its run.log")
        for j in jobs
        if j.status not in ("ok", "running")
    ]
    alerts += [Alert("warning", "", p) for j in jobs for p in j.problems]
    key_names = list(dict.fromkeys(n for j in jobs for n, s in j.scalars.items() if s.key))
    arrows = {n: ARROWS.get(str(s.better), "") for j in jobs for n, s in j.scalars.items() if s.key}
    table = []
    for j in jobs:
        shown = [o for o in j.overrides if split_override(o)[0] in data.swept] if data.swept else j.overrides
        table.append(
            {
                "num": "–" if j.num is None else str(j.num),
                "overrides": shown,
                "status": j.status,
                "seconds": j.seconds,
                "error": j.error or "",
                "reports": [(r, url(f"{j.name}/{r}")) for r in j.reports],
                "values": [fmt_num(j.scalars[n].value) if n in j.scalars else "–" for n in key_names],
            }
        )
    return {
        "title": f"vizpipe sweep: {data.sweep_dir.name}",
        "status": overall,
        "nav": [
            ("header", "Sweep"),
            ("jobs", "Jobs"),
            ("grids", "Comparison grids"),
            ("leaderboard", "Leaderboard"),
        ],
        "sweep_dir": str(data.sweep_dir.resolve()),
        "command": shlex.join(["python", "run.py", "-m", *data.task]) if data.task else "–",
        "counts": sorted(counts.items()),
        "jobs_count": len(jobs),
        "swept": data.swept,
        "common": common,
        "started": created[0] if created else "–",
        "rebuild": f"python -m pipeline.report {shlex.quote(str(data.sweep_dir))}",
        "alerts": alerts,
        "key_columns": [f"{n} {arrows[n]}".rstrip() for n in key_names],
        "jobs": table,
        "overrides_head": "Swept overrides" if data.swept else "Overrides",
        "grid": _grids(data, key_names),
        "leaderboard": _leaderboard(data),
    }
