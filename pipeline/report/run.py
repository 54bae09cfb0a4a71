"""A run's report: collect the run folder (``collect_run``), then build the template context.

Everything is read from disk (``manifest.json`` with each stage's ``StageResult`` record,
``.hydra/``), so a report can be rebuilt at any time by any process. ``run_context`` prepares
plain data for ``templates/run.html.j2`` and ``templates/run.md.j2``: the run header, one generic
section per stage (``vizpipe.pipeline.report.sections``), the provenance and the manifest.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vizpipe.pipeline.manifest import MANIFEST, settled
from vizpipe.pipeline.report.common import (
    MIME,
    Alert,
    fmt_num,
    fmt_shape,
    read_json,
    read_yaml,
    record_error,
)
from vizpipe.pipeline.report.sections import StageView, fragment_paths, render_fragment, stage_view
from vizpipe.pipeline.stage import Picture, StageResult


@dataclass
class StageData:
    """One stage of the run: its manifest record and its result (None: failed, skipped, unreadable)."""

    record: dict[str, Any]
    result: StageResult | None = None
    problem: str | None = None  # why the recorded result could not be read


@dataclass
class RunData:
    """Everything a run report shows, read from the run folder."""

    run_dir: Path
    manifest: dict[str, Any] | None
    overrides: list[str]
    config: dict[str, Any] | None
    records: list[dict[str, Any]]  # setup, each stage, report (manifest order)
    stages: list[StageData]
    problems: list[str] = field(default_factory=list)
    _config_yaml: str | None = field(default=None, repr=False)  # made once for report.html and .md

    def config_yaml(self) -> str | None:
        """The resolved config as YAML (None without one), made once per report."""
        if self._config_yaml is None and self.config:
            import yaml

            self._config_yaml = yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True).rstrip()
        return self._config_yaml


def _read_result(rec: dict[str, Any]) -> StageData:
    doc = rec.get("result")
    if doc is None:
        return StageData(rec)
    try:
        return StageData(rec, StageResult.from_dict(doc))
    except (TypeError, ValueError) as exc:
        return StageData(rec, problem=f"{type(exc).__name__}: {exc}")


def _folders_on_disk(run: Path) -> list[StageData]:
    """Without a manifest: one section per sub-folder, showing the pictures found in it."""
    out = []
    for folder in sorted(p for p in run.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        rels = [p.relative_to(run).as_posix() for p in files]
        pictures = [Picture(r, caption=r) for r in rels if Path(r).suffix.lower() in MIME]
        rec = {"name": folder.name, "status": "unknown", "artifacts": [{"path": r} for r in rels]}
        summary = "No manifest: the pictures found in this folder."
        out.append(StageData(rec, StageResult(folder.name, summary=summary, pictures=pictures)))
    return out


def collect_run(run_dir: Path | str) -> RunData:
    """Read a run folder: the manifest (with each stage's ``StageResult``), overrides and config."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"Run folder {run} does not exist")
    problems: list[str] = []
    manifest = settled(read_json(run / MANIFEST, problems), run)  # a killed run reads interrupted
    if manifest is not None and not isinstance(manifest, dict):
        problems.append(f"{MANIFEST} is not a JSON object")
        manifest = None
    if manifest is None:
        problems.append(f"{MANIFEST} is missing: this report shows only the files found on disk")
    overrides = read_yaml(run / ".hydra" / "overrides.yaml")
    if not isinstance(overrides, list):
        overrides = list((manifest or {}).get("overrides") or [])
    config = (manifest or {}).get("config") or read_yaml(run / ".hydra" / "config.yaml")
    if manifest is not None:
        stages = [_read_result(r) for r in manifest.get("stages") or []]
        records = [manifest.get("setup") or {"name": "setup", "status": "pending"}]
        records += [s.record for s in stages]
        records.append(manifest.get("report") or {"name": "report", "status": "pending"})
    else:
        stages = _folders_on_disk(run)
        records = [s.record for s in stages]
    for s in stages:
        if s.problem:
            problems.append(f"Could not read the result of stage {s.record.get('name')}: {s.problem}")
    config = config if isinstance(config, dict) else None
    return RunData(run, manifest, [str(o) for o in overrides], config, records, stages, problems)


def settings_from_config(config: dict[str, Any] | None) -> Any:
    """``ReportConfig`` from a recorded config's ``report`` node (unknown keys ignored)."""
    from vizpipe.pipeline.schema import ReportConfig

    node = (config or {}).get("report") or {}
    known = {f.name for f in fields(ReportConfig)}
    return ReportConfig(**{k: v for k, v in node.items() if k in known})


# =========================================================================== context


def _command(manifest: dict[str, Any]) -> str:
    cmd = manifest.get("command")
    if isinstance(cmd, list):
        return shlex.join(str(c) for c in cmd)
    return str(cmd) if cmd else "–"


def _run_warnings(data: RunData) -> list[str]:
    """The manifest's warnings that no stage section shows (the build's, a failed stage's): the
    manifest lists every warning of the run, and a stage's record also holds its own."""
    shown = Counter(str(w) for s in data.stages if s.result is not None for w in s.result.warnings)
    out = []
    for w in map(str, (data.manifest or {}).get("warnings") or []):
        if shown[w] > 0:
            shown[w] -= 1
        else:
            out.append(w)
    return out


def _header(data: RunData) -> dict[str, Any]:
    m = data.manifest or {}
    cfg = data.config or {}
    inp = m.get("input") or {}
    icfg = cfg.get("input") or {}
    kind = str(inp.get("kind") or icfg.get("kind") or "–")
    input_text = kind
    if inp.get("path") or icfg.get("root"):
        input_text += f": {inp.get('path') or icfg.get('root')}"
    if kind in ("shapes", "imagefolder", "cifar10") and icfg.get("split"):
        input_text += f", {icfg['split']} split"
    shape = icfg.get("shape")
    if shape and kind == "random":  # input.shape describes the random batch only
        input_text += f" (batch {fmt_shape(shape)})"
    ckpt = (cfg.get("model") or {}).get("checkpoint")
    weights = str(m["weights"]) if m.get("weights") else f"random init (seed {m.get('seed', '–')})"
    if ckpt:
        weights += f" + checkpoint {ckpt}"
    alerts: list[Alert] = []
    for rec in data.records:
        if rec.get("status") == "failed":
            alerts.append(Alert("error", f"{rec.get('name')} failed: ", record_error(rec)))
        elif rec.get("status") == "interrupted":
            alerts.append(Alert("error", f"{rec.get('name')} was interrupted"))
    stopped = m.get("interrupted")
    if isinstance(stopped, dict) and m.get("status") != "ok":
        alerts.append(
            Alert(
                "error", f"Interrupted ({stopped.get('why')}); finish it with: ", str(stopped.get("resume"))
            )
        )
    alerts += [Alert("warning", "Warning: ", w) for w in _run_warnings(data)]
    alerts += [Alert("warning", "", p) for p in data.problems]
    deterministic = " (deterministic algorithms)" if cfg.get("deterministic") else ""
    return {
        "model": str(m.get("model") or (cfg.get("model") or {}).get("name") or "–"),
        "weights": weights,
        "input": input_text,
        "device": str(m.get("device") or "–"),
        "seed": f"{m.get('seed', cfg.get('seed', '–'))}{deterministic}",
        "date": str(m.get("created") or "–"),
        "command": _command(m),
        "status": str(m.get("status", "unknown")),
        "seconds": m.get("seconds"),
        "version": str(m.get("vizpipe") or "–"),
        "run_folder": str(m.get("run_dir") or data.run_dir),
        "notes": str(cfg["notes"]) if cfg.get("notes") else None,
        "alerts": alerts,
    }


def _provenance(data: RunData) -> dict[str, Any]:
    m = data.manifest or {}
    run = str(m.get("run_dir") or data.run_dir)
    rerun = (
        f"python run.py --config-path {shlex.quote(run + '/.hydra')} --config-name config\n"
        f"python -m vizpipe.reproduce {shlex.quote(run)}   # into a new folder, then compares"
    )
    git = m.get("git") if isinstance(m.get("git"), dict) else None
    prov = m.get("provenance") or {}
    hashes = [
        {"path": str(f.get("path")), "bytes": f.get("bytes"), "sha256": str(f.get("sha256")), "what": ""}
        for f in prov.get("inputs") or []
    ]
    ck = prov.get("checkpoint")
    if isinstance(ck, dict):
        hashes.append(
            {
                "path": str(ck.get("path")),
                "bytes": ck.get("bytes"),
                "sha256": str(ck.get("sha256")),
                "what": "checkpoint ",
            }
        )
    return {
        "overrides": data.overrides,
        "rerun": rerun,
        "git": git,
        "versions": [(k, str(v) if v else "not installed") for k, v in (m.get("versions") or {}).items()],
        "hashes": hashes,
        "config_yaml": data.config_yaml(),
    }


def _manifest(data: RunData) -> dict[str, Any]:
    m = data.manifest or {}
    steps = []
    artifacts = []
    for rec in data.records:
        arts = rec.get("artifacts") or []
        status = str(rec.get("status") or "unknown")
        writing = rec.get("name") == "report" and status in ("pending", "running")
        steps.append(
            {
                "name": str(rec.get("name")),
                "status": "writing" if writing else status,
                "writing": writing,
                "seconds": rec.get("seconds"),
                "files": len(arts),
                "bytes": sum(int(a.get("bytes") or 0) for a in arts),
                "error": record_error(rec) if rec.get("error") else "",
            }
        )
        artifacts += [
            {"path": str(a.get("path")), "bytes": fmt_num(a.get("bytes")), "sha256": str(a.get("sha256"))}
            for a in arts
        ]
    return {
        "status": str(m.get("status", "unknown")),
        "seconds": m.get("seconds"),
        "steps": steps,
        "artifacts": artifacts,
    }


def run_context(data: RunData, max_images: int = 64, html: bool = True) -> dict[str, Any]:
    """The template context of a run report (``html``: embed pictures, render stage fragments).

    Keys: ``title``, ``status``, ``created``, ``nav`` (section ids and titles), ``header``,
    ``stages`` (``StageView`` list, manifest order), ``provenance``, ``manifest``, ``run``
    (the ``RunData``).
    """
    m = data.manifest or {}
    fragments = fragment_paths() if html and data.stages else {}
    stages: list[StageView] = []
    for s in data.stages:
        view = stage_view(s.record, s.result, data.run_dir, max_images, html, s.problem)
        path = fragments.get(view.name)
        if path is not None and s.result is not None:
            render_fragment(path, view, s.result, s.record, data)
        stages.append(view)
    nav = [("header", "Run"), *[(v.id, v.title) for v in stages], ("provenance", "Provenance")]
    nav.append(("manifest", "Manifest"))
    return {
        "title": f"vizpipe report: {m.get('model') or data.run_dir.name}",
        "status": str(m.get("status", "unknown")),
        "created": str(m.get("created") or ""),
        "nav": nav,
        "header": _header(data),
        "stages": stages,
        "provenance": _provenance(data),
        "manifest": _manifest(data),
        "run": data,
    }
