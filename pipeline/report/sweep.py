"""The sweep index: ``<sweep_dir>/index.html``, built only from the job folders' manifests.

Written by ``vizpipe.pipeline.callbacks.SweepReportCallback`` when the sweep ends, and rebuildable at any
time: ``python -m vizpipe.report <sweep_dir>``.

Collect (``vizpipe.pipeline.report.jobs.collect_sweep``), then build the context of
``templates/sweep.html.j2`` here (``sweep_context``: job table with the key numbers, comparison
grids over the swept keys, merged shards, leaderboard with every number's rank, verdicts and
winners, and the figures stacked from every job's pictures: ``figures.py``). Thumbnails, the main
cost, are cached per picture file (path, mtime, size): in the process, and on disk in
``<sweep>/.thumbs/`` (only
pictures larger than ``THUMB_PX`` are downscaled and kept), so a rebuilt index resizes nothing
twice. Written once per sweep: ``vizpipe.pipeline.callbacks`` says when.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from vizpipe.pipeline.report.common import (
    REPORT_HTML,
    THUMB_PX,
    THUMBS,
    Alert,
    PictureView,
    embed,
    fmt_num,
    url,
)
from vizpipe.pipeline.report.figures import stacked_figures
from vizpipe.pipeline.report.jobs import JobData, SweepData, split_override
from vizpipe.pipeline.stage import Scalar

ARROWS = {"higher": "↑", "lower": "↓"}


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
        pic = PictureView(p.path, p.caption, f"{job.name}: {p.caption}", p.badge)
        view = embed(sweep / job.name, pic, THUMB_PX, cache=sweep / THUMBS)
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


def _unset(value: str | None) -> str:
    return "(unset)" if value is None else str(value)


def _grid(data: SweepData, members: list[JobData], image: str | None, key_names: list[str]) -> dict[str, Any]:
    """One comparison grid: rows over the row key, columns over the column key (linear in jobs)."""

    def cell(j: JobData) -> dict[str, Any]:
        return _job_cell(j, image, data.sweep_dir, key_names)

    if not data.swept:
        return {"head": ["job", "result"], "rows": [(j.name, [[cell(j)]]) for j in members]}
    row_key, col_key, _ = grid_axes(data.swept)
    cols = _values(members, col_key)
    head = [str(row_key), *([f"{col_key}={_unset(c)}" for c in cols] if col_key else ["result"])]
    at: dict[tuple[str | None, str | None], list[JobData]] = {}
    for j in members:
        at.setdefault((j.params.get(str(row_key)), j.params.get(col_key) if col_key else None), []).append(j)
    rows = [
        (_unset(rv), [[cell(j) for j in at.get((rv, cv), [])] for cv in cols])
        for rv in _values(members, row_key)
    ]
    return {"head": head, "rows": rows}


def _grids(data: SweepData, key_names: list[str]) -> dict[str, Any]:
    """One grid per preview group (when jobs have several) and per value of the facet keys."""
    row_key, col_key, facet_keys = grid_axes(data.swept)
    groups = list(dict.fromkeys(p.group for j in data.jobs for p in j.previews if p.group))
    images: list[str | None] = list(groups) if len(groups) > 1 else [None]
    facets: dict[tuple[str | None, ...], list[JobData]] = {}
    for j in data.jobs:
        facets.setdefault(tuple(j.params.get(k) for k in facet_keys), []).append(j)
    grids = []
    for image in images:
        for facet, members in facets.items():
            title = [f"image {image}"] if image is not None else []
            title += [f"{k}={v}" for k, v in zip(facet_keys, facet, strict=True)]
            grids.append({"title": ", ".join(title), **_grid(data, members, image, key_names)})
    return {"row_key": row_key, "col_key": col_key, "facet_keys": facet_keys, "grids": grids}


def _leaderboard(data: SweepData) -> dict[str, Any]:
    """Jobs ranked by the ranked scalar most jobs have (key ones first, then ones whose value
    differs between jobs: a number every job shares ranks nothing); jobs without it last.

    Every number also shows its rank among the jobs on that number (1 = best; ties share a rank),
    a number with a pass line (``Scalar.threshold``) its verdict (those numbers lead the columns),
    and ``winners`` names the best job(s) per number. Each row links to its report and to the
    section of the stage that recorded the ranked number (its maps). A number every job shares is
    named above the table (``shared``); a finished job with none of the numbers below it
    (``unranked``: e.g. a job that computed nothing new).
    """
    seen: dict[str, list[Scalar]] = {}
    for j in data.jobs:
        for s in j.scalars.values():
            if s.better in ARROWS:
                seen.setdefault(s.name, []).append(s)
    if not seen:
        return {"primary": None}
    order = list(seen)

    def same(n: str) -> bool:
        return len(seen[n]) > 1 and len({s.value for s in seen[n]}) == 1

    primary = min(
        order, key=lambda n: (not any(s.key for s in seen[n]), same(n), -len(seen[n]), order.index(n))
    )
    better = seen[primary][0].better
    sign = -1.0 if better == "higher" else 1.0
    # a number every job shares ranks nothing: it is named above the table, not a column
    shared = [n for n in order if same(n) and len(seen[n]) == len(data.jobs)] if not same(primary) else []
    order = [n for n in order if n not in shared]
    # numbers with a pass line (the verdicts) lead the columns
    order = sorted(order, key=lambda n: not any(s.threshold is not None for s in seen[n]))
    ranks = {n: _ranks(data.jobs, n, str(seen[n][0].better)) for n in order}

    def value(j: JobData) -> float | None:
        return _value(j, primary)

    # a finished job with none of the numbers is named below the table, not a row of dashes
    unranked = [j for j in data.jobs if j.status == "ok" and not any(n in j.scalars for n in order)]
    jobs = [j for j in data.jobs if j not in unranked]
    ranked = sorted(jobs, key=lambda j: (value(j) is None, sign * (value(j) or 0.0)))
    row_key, col_key, facet_keys = grid_axes(data.swept)
    keys = [k for k in (row_key, col_key, *facet_keys) if k]
    rows = []
    for i, j in enumerate(ranked):
        rows.append(
            {
                "rank": str(i + 1) if value(j) is not None else "–",
                "params": [str(j.params.get(k, "–")) for k in keys],
                "numbers": [fmt_num(j.scalars[n].value) if n in j.scalars else "–" for n in order],
                "ranks": [ranks[n].get(j.name) for n in order],
                "verdicts": [_verdict(j.scalars.get(n)) for n in order],
                "status": j.status,
                "name": j.name,
                "report": _report_href(j),
                "maps": _maps_href(j, primary),
            }
        )
    head = [*keys, *[f"{n} {ARROWS[str(seen[n][0].better)]}" for n in order]]
    winners = _winners(data.jobs, order, ranks, keys, seen)
    same_values = [f"{n} {fmt_num(seen[n][0].value)}" for n in shared]
    return {
        "primary": primary,
        "better": better,
        "head": head,
        "rows": rows,
        "winners": winners,
        "shared": same_values,
        "unranked": [(j.name, _report_href(j)) for j in unranked],
    }


def _value(j: JobData, name: str) -> float | None:
    s = j.scalars.get(name)
    return None if s is None or s.value is None or s.value != s.value else float(s.value)


def _ranks(jobs: list[JobData], name: str, better: str) -> dict[str, int]:
    """Job name -> its rank on scalar ``name`` (1 = best; equal values share the better rank:
    1 + how many jobs are strictly better)."""
    import bisect

    sign = -1.0 if better == "higher" else 1.0
    values = {j.name: sign * v for j in jobs if (v := _value(j, name)) is not None}
    ordered = sorted(values.values())
    return {n: 1 + bisect.bisect_left(ordered, v) for n, v in values.items()}


def _verdict(s: Scalar | None) -> str | None:
    """``pass``/``fail`` for a number with a pass line (``Scalar.threshold``), else None."""
    if s is None or s.threshold is None or s.value is None or s.value != s.value:
        return None
    ok = s.value > s.threshold if s.better == "higher" else s.value < s.threshold
    return "pass" if ok else "fail"


def _maps_href(j: JobData, name: str) -> str | None:
    """The job report's section of the stage that recorded ``name`` (its pictures)."""
    stage = j.stage_of.get(name)
    if REPORT_HTML not in j.reports or not stage:
        return None
    return url(f"{j.name}/{REPORT_HTML}#{stage}")


def _winners(
    jobs: list[JobData], order: list[str], ranks: dict[str, dict[str, int]], keys: list[str], seen: dict
) -> list[dict[str, Any]]:
    """Per ranked number that differs between jobs: its best value and the job(s) that reach it."""
    out = []
    for n in order:
        best = [j for j in jobs if ranks[n].get(j.name) == 1]
        if not best or len({s.value for s in seen[n]}) < 2:
            continue
        labels = [", ".join(f"{k}={j.params[k]}" for k in keys if k in j.params) or j.name for j in best]
        out.append(
            {
                "name": n,
                "arrow": ARROWS[str(seen[n][0].better)],
                "value": fmt_num(best[0].scalars[n].value),
                "jobs": labels,
                "hrefs": [_maps_href(j, n) or _report_href(j) for j in best],
            }
        )
    return out


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
                "numbers": [fmt_num(j.scalars[n].value) if n in j.scalars else "–" for n in key_names],
            }
        )
    shards = _shards(data)
    figures = stacked_figures(data)
    return {
        "title": f"vizpipe sweep: {data.sweep_dir.name}",
        "status": overall,
        "nav": [
            ("header", "Sweep"),
            ("jobs", "Jobs"),
            *([("shards", "Merged shards")] if shards else []),
            ("grids", "Comparison grids"),
            ("leaderboard", "Leaderboard"),
            *([("figures", "Figures")] if figures else []),
        ],
        "sweep_dir": str(data.sweep_dir.resolve()),
        "command": shlex.join(["python", "run.py", "-m", *data.task]) if data.task else "–",
        "counts": sorted(counts.items()),
        "jobs_count": len(jobs),
        "swept": data.swept,
        "common": common,
        "started": created[0] if created else "–",
        "rebuild": f"python -m vizpipe.report {shlex.quote(str(data.sweep_dir))}",
        "alerts": alerts,
        "key_columns": [f"{n} {arrows[n]}".rstrip() for n in key_names],
        "jobs": table,
        "overrides_head": "Swept overrides" if data.swept else "Overrides",
        "grid": _grids(data, key_names),
        "leaderboard": _leaderboard(data),
        "shards": shards,
        "figures": figures,
    }


def _shards(data: SweepData) -> list[dict[str, Any]]:
    """The merged tables of each data set run as shards (``input.shard``), formatted."""
    from vizpipe.pipeline.report.merge import shard_groups
    from vizpipe.pipeline.report.sections import table_view

    return [
        {
            "params": g.params,
            "shards": len(g.shards),
            "ok": g.ok,
            "missing": g.missing,
            "tables": [table_view(t) for t in g.tables],
        }
        for g in shard_groups(data.jobs, data.swept)
    ]
