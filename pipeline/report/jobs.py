"""A sweep's job folders, read for the sweep index (``vizpipe.pipeline.report.sweep``).

Per job: its overrides, status, errors, key (and ranked) scalars and the stage of each, preview
pictures, the pictures stacked into figures across jobs (``Picture.stack``) and mergeable tables
(``vizpipe.pipeline.report.merge``), from its ``manifest.json`` only (a job folder without one is a
failed job). Linear in jobs: one manifest read per job, and only the pictures, scalars and tables
the index shows are parsed into records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vizpipe.pipeline.manifest import MANIFEST, settled
from vizpipe.pipeline.report.common import (
    REPORT_HTML,
    REPORT_MD,
    read_json,
    read_text,
    read_yaml,
    record_error,
)
from vizpipe.pipeline.stage import Picture, Scalar, Table, from_dict


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
    stage_of: dict[str, str] = field(default_factory=dict)  # scalar name -> the stage that recorded it
    stacks: list[Picture] = field(default_factory=list)  # pictures the index stacks into figures
    previews: list[Picture] = field(default_factory=list)  # paths relative to the job folder
    first: Picture | None = None  # the first picture of any stage (when there is no preview)
    tables: list[Table] = field(default_factory=list)  # tables marked mergeable (shards of a data set)
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
                if p.get("stack"):
                    job.stacks.append(from_dict(Picture, p))
                if p.get("preview") or job.first is None:
                    pic = from_dict(Picture, p)
                    job.first = job.first or pic
                    if pic.preview:
                        job.previews.append(pic)
            for t in res.get("tables") or []:
                if t.get("merge"):
                    job.tables.append(from_dict(Table, t))
            for s in res.get("scalars") or []:
                if s.get("key") or s.get("better"):
                    sc = from_dict(Scalar, s)
                    old = job.scalars.get(sc.name)
                    if old is None or sc.step >= old.step:
                        job.scalars[sc.name] = sc
                        job.stage_of[sc.name] = str(rec.get("name") or "")
        except (TypeError, ValueError, AttributeError) as exc:
            job.problems.append(f"{job.name}: unreadable result of stage {rec.get('name')}: {exc}")


def collect_job(job: Path) -> JobData:
    """Read one job folder; a folder without a manifest is a failed job."""
    problems: list[str] = []
    num_match = re.match(r"^(\d+)", job.name)
    num = int(num_match.group(1)) if num_match else None
    manifest = settled(read_json(job / MANIFEST, problems), job)  # a killed job reads interrupted
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
