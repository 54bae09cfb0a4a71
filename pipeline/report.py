"""Reports: ``report.html``/``report.md`` for a run folder, ``index.html`` for a sweep folder.

Everything is read from disk (``manifest.json``, ``.hydra/``, the stages' JSON files and
pictures), so a report can be rebuilt at any time, by any process:
``python -m pipeline.report <run_or_sweep_dir>``.

Collect, then render:

* ``collect_run`` / ``collect_sweep`` read files into plain data (``RunData`` / ``SweepData``);
* ``run_document`` / ``sweep_document`` turn that data into a small document tree (sections,
  tables, figures, alerts) that knows nothing about markup;
* ``to_html`` / ``to_markdown`` render the tree. They are the only place where text becomes
  markup, so every string (layer names, class names, config values, error texts, overrides) is
  escaped in exactly one place. ``report.html`` embeds its pictures as base64 data URIs (it opens
  offline and survives copying or zipping); ``report.md`` links them relatively.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import re
import shlex
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union
from urllib.parse import quote

from pipeline.manifest import MANIFEST

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
SWEEP_INDEX = "index.html"
# Canonical stage order (used only when a folder has no manifest to say what ran).
STAGE_ORDER = ("summary", "kernels", "features", "cam", "tensorboard")
STAGE_TITLES = {
    "summary": "Summary",
    "kernels": "Kernel grids",
    "features": "Feature maps",
    "cam": "Class activation maps",
    "tensorboard": "TensorBoard",
}
# CAM metrics where a smaller value means a better map (pytorch-grad-cam's metric docs:
# removing the most relevant pixels first should hurt the model most; a drop in confidence is bad).
LOWER_IS_BETTER = ("most_relevant", "morf", "drop_in_confidence", "drop")
# Preferred metric for ranking, when present (ROAD combined: (LeRF - MoRF) / 2, higher is better).
PRIMARY_METRICS = ("road_combined", "roadcombined", "confidence_change")
THUMB_PX = 256  # sweep index: pictures are downscaled to at most this many pixels per edge


# =========================================================================== document tree
# A tiny, markup-free document model. Strings are plain text; renderers escape them.


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


# =========================================================================== reading files


def _read_json(path: Path, problems: list[str]) -> Any:
    """Parse a JSON file; a missing file is None, an unreadable one is None plus a problem."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"Could not read {path.name}: {exc}")
        return None


def _read_text(path: Path) -> str | None:
    """A text file's content, or None when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _read_yaml(path: Path) -> Any:
    """Parse a YAML file with OmegaConf (None when missing or invalid)."""
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - a broken file is reported as missing
        return None


def _inside(base: Path, rel: str) -> Path | None:
    """``base / rel`` when it stays inside ``base`` and is a file; else None."""
    try:
        path = (base / rel).resolve()
        path.relative_to(base.resolve())
    except (ValueError, OSError):
        return None
    return path if path.is_file() else None


def _write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file and a rename (safe with parallel writers)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# =========================================================================== run: collect


@dataclass
class RunData:
    """Everything a run report shows, read from the run folder."""

    run_dir: Path
    manifest: dict[str, Any] | None
    overrides: list[str]
    config: dict[str, Any] | None
    records: list[dict[str, Any]]  # setup, each stage, report (manifest order)
    stages: list[str]  # stage names in run order
    summary: dict[str, Any] | None = None
    kernels: dict[str, Any] | None = None
    features: dict[str, Any] | None = None
    cam: dict[str, Any] | None = None
    tensorboard: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def collect_run(run_dir: Path | str) -> RunData:
    """Read a run folder: manifest, recorded overrides and config, and each stage's data files."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"Run folder {run} does not exist")
    problems: list[str] = []
    manifest = _read_json(run / MANIFEST, problems)
    if manifest is None:
        problems.append(f"{MANIFEST} is missing: this report shows only the files found on disk")
    overrides = _read_yaml(run / ".hydra" / "overrides.yaml")
    if not isinstance(overrides, list):
        overrides = list((manifest or {}).get("overrides") or [])
    config = (manifest or {}).get("config") or _read_yaml(run / ".hydra" / "config.yaml")
    if manifest is not None:
        records = [manifest.get("setup") or {"name": "setup", "status": "pending"}]
        records += list(manifest.get("stages") or [])
        records.append(manifest.get("report") or {"name": "report", "status": "pending"})
        stages = [str(r.get("name")) for r in manifest.get("stages") or []]
    else:
        stages = [s for s in STAGE_ORDER if (run / s).is_dir()]
        records = [{"name": s, "status": "unknown"} for s in stages]
    data = RunData(run, manifest, [str(o) for o in overrides], config, records, stages)
    data.problems = problems
    if (run / "summary").is_dir():
        data.summary = {
            "json": _read_json(run / "summary" / "summary.json", problems),
            "table": _read_text(run / "summary" / "summary.txt"),
            "modules": _read_text(run / "summary" / "modules.txt"),
            "layers": _read_text(run / "summary" / "layers.txt"),
        }
    data.kernels = _read_json(run / "kernels" / "stats.json", problems)
    data.features = _read_json(run / "features" / "stats.json", problems)
    data.cam = _read_json(run / "cam" / "cam.json", problems)
    if (run / "tensorboard").is_dir():
        data.tensorboard = collect_tensorboard(run / "tensorboard", run)
    return data


def collect_tensorboard(folder: Path, run: Path) -> dict[str, Any]:
    """Event files under ``folder`` and the tags they hold (by kind), read with TensorBoard."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    out: dict[str, Any] = {
        "files": [{"path": p.relative_to(run).as_posix(), "bytes": p.stat().st_size} for p in files],
        "tags": {},
        "error": None,
    }
    events = [p for p in files if "tfevents" in p.name]
    if not events:
        return out
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        tags: dict[str, set[str]] = {}
        for ev in events:
            acc = EventAccumulator(str(ev), size_guidance={"images": 1, "histograms": 1, "scalars": 1, "tensors": 1})
            acc.Reload()
            for kind, names in acc.Tags().items():
                if isinstance(names, bool):
                    if names:
                        tags.setdefault(kind, set()).add("(present)")
                elif names:
                    tags.setdefault(kind, set()).update(str(n) for n in names)
        out["tags"] = {k: sorted(v) for k, v in sorted(tags.items())}
    except Exception as exc:  # noqa: BLE001 - the file list is still shown
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


# =========================================================================== run: document


def _fmt_num(value: Any, digits: int = 4) -> str:
    """A number for people: ints with separators, floats with ``digits`` significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _count(value: Any) -> str:
    """A count that a stage may record as a number or as the list of items."""
    return str(len(value)) if isinstance(value, (list, tuple)) else _fmt_num(value)


def _fmt_seconds(value: Any) -> str:
    return "–" if value is None else f"{float(value):.2f}\u00a0s"


def _fmt_mb(value: Any) -> str:
    return "–" if value is None else f"{float(value) / 1e6:.2f} MB"


def _shape(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "×".join(str(v) for v in value)
    return "–" if value is None else str(value)


def _command(manifest: dict[str, Any] | None) -> str:
    cmd = (manifest or {}).get("command")
    if isinstance(cmd, list):
        return shlex.join(str(c) for c in cmd)
    return str(cmd) if cmd else "–"


def _record_error(rec: dict[str, Any]) -> str:
    err = str(rec.get("error") or "")
    etype = rec.get("error_type")
    if etype and etype not in err.split(":", 1)[0]:
        return f"{etype}: {err}"
    return err


def _cap(items: list[Any], limit: int, what: str, run_dir: str) -> tuple[list[Any], list[Any]]:
    """The first ``limit`` items, plus a note block when some were left out."""
    if limit <= 0 or len(items) <= limit:
        return items, []
    note = Alert("info", [f"{len(items) - limit} more {what} not shown (report.max_images={limit}); they are in ", Code(run_dir)])
    return items[:limit], [note]


def run_document(data: RunData, max_images: int = 64) -> Document:
    """Turn a run's data into a document: header, one section per stage, provenance, manifest."""
    sections = [_header_section(data)]
    by_name = {str(r.get("name")): r for r in data.records}
    for name in data.stages:
        rec = by_name.get(name, {"name": name, "status": "unknown"})
        sections.append(_stage_section(data, name, rec, max_images))
    sections.append(_provenance_section(data))
    sections.append(_manifest_section(data))
    m = data.manifest or {}
    subtitle: list[Inline] = [Badge(str(m.get("status", "unknown"))), " ", str(m.get("created") or "")]
    return Document(f"vizpipe report: {m.get('model') or data.run_dir.name}", subtitle, sections)


def _header_section(data: RunData) -> Section:
    m = data.manifest or {}
    cfg = data.config or {}
    inp = m.get("input") or {}
    shape = ((data.summary or {}).get("json") or {}).get("input_shape") or (cfg.get("input") or {}).get("shape")
    input_text = str(inp.get("kind") or (cfg.get("input") or {}).get("kind") or "–")
    if inp.get("path"):
        input_text += f": {inp['path']}"
    if shape:
        input_text += f" (batch {_shape(shape)})"
    weights = m.get("weights")
    ckpt = (cfg.get("model") or {}).get("checkpoint")
    weights_text = str(weights) if weights else f"random init (seed {m.get('seed', '–')})"
    if ckpt:
        weights_text += f" + checkpoint {ckpt}"
    rows: list[list[Cell]] = [
        ["Model", Strong(str(m.get("model") or (cfg.get("model") or {}).get("name") or "–"))],
        ["Weights", weights_text],
        ["Input", input_text],
        ["Device", str(m.get("device") or "–")],
        ["Seed", f"{m.get('seed', cfg.get('seed', '–'))}" + (" (deterministic algorithms)" if cfg.get("deterministic") else "")],
        ["Date", str(m.get("created") or "–")],
        ["Command", Code(_command(m))],
        ["Status", [Badge(str(m.get("status", "unknown"))), f"  total {_fmt_seconds(m.get('seconds'))}"]],
        ["vizpipe version", str(m.get("vizpipe") or "–")],
        ["Run folder", Code(str(m.get("run_dir") or data.run_dir))],
    ]
    if cfg.get("notes"):
        rows.append(["Notes", str(cfg["notes"])])
    body: list[Any] = [Table(["", ""], rows, cls="kv")]
    for rec in data.records:
        if rec.get("status") == "failed":
            body.append(Alert("error", [Strong(f"{rec.get('name')} failed: "), _record_error(rec)]))
        elif rec.get("status") == "interrupted":
            body.append(Alert("error", [Strong(f"{rec.get('name')} was interrupted")]))
    for w in m.get("warnings") or []:
        body.append(Alert("warning", [Strong("Warning: "), str(w)]))
    for p in data.problems:
        body.append(Alert("warning", [str(p)]))
    return Section("header", "Run", body, status=str(m.get("status", "unknown")))


def _stage_section(data: RunData, name: str, rec: dict[str, Any], max_images: int) -> Section:
    status = str(rec.get("status") or "unknown")
    body: list[Any] = [Para([Badge(status), f"  {_fmt_seconds(rec.get('seconds'))}, {len(rec.get('artifacts') or [])} files in ", Code(f"{name}/")])]
    if status == "failed":
        body.append(Alert("error", [Strong("This stage failed: "), _record_error(rec)]))
    elif status == "skipped":
        body.append(Alert("info", ["Skipped: an earlier step failed (see the manifest below)."]))
    elif status == "interrupted":
        body.append(Alert("error", ["Interrupted (Ctrl-C); files written so far are kept."]))
    builder = {
        "summary": _summary_body,
        "kernels": _kernels_body,
        "features": _features_body,
        "cam": _cam_body,
        "tensorboard": _tensorboard_body,
    }.get(name)
    if builder is not None:
        body.extend(builder(data, max_images))
    else:
        arts = [a.get("path", "") for a in rec.get("artifacts") or []]
        if arts:
            body.append(Table(["File"], [[Link(a, a)] for a in arts]))
    return Section(name, STAGE_TITLES.get(name, name), body, status=status)


def _summary_body(data: RunData, max_images: int) -> list[Any]:
    s = data.summary
    if not s:
        return []
    out: list[Any] = []
    doc = s.get("json") or {}
    t = doc.get("totals") or {}
    if t:
        rows: list[list[Cell]] = [
            ["Input shape", _shape(doc.get("input_shape"))],
            ["Total params", _fmt_num(t.get("total_params"))],
            ["Trainable params", _fmt_num(t.get("trainable_params"))],
            ["Non-trainable params", _fmt_num(t.get("non_trainable_params"))],
            ["Total mult-adds", f"{float(t.get('total_mult_adds') or 0) / 1e9:.3f} G"],
            ["Input size", _fmt_mb(t.get("input_size_bytes"))],
            ["Forward/backward pass size", _fmt_mb(t.get("forward_backward_size_bytes"))],
            ["Params size", _fmt_mb(t.get("params_size_bytes"))],
            ["Estimated total size", _fmt_mb(t.get("total_size_bytes"))],
        ]
        out.append(Table(["Totals (torchinfo)", ""], rows, cls="kv"))
    if s.get("table"):
        out.append(Details("torchinfo table (summary/summary.txt)", [Pre(s["table"].rstrip())]))
    if s.get("modules"):
        out.append(Details("print(model) (summary/modules.txt)", [Pre(s["modules"].rstrip())]))
    if s.get("layers"):
        out.append(Details("Layer catalog: every addressable module (summary/layers.txt)", [Pre(s["layers"].rstrip())]))
    return out


def _kernels_body(data: RunData, max_images: int) -> list[Any]:
    k = data.kernels
    if not k:
        return []
    out: list[Any] = [Para(["Colour scale ", Code(str(k.get("scale"))), ", colormap ", Code(str(k.get("cmap"))), ". Rows are output channels, columns input channels; white is zero."])]
    layers = list((k.get("layers") or {}).items())
    rows: list[list[Cell]] = []
    for name, info in layers:
        rows.append([Code(name), _shape(info.get("shape")), _fmt_num(info.get("vmax")), _count(info.get("dead"))])
    if rows:
        out.append(Table(["Layer", "Weight shape", "max |w|", "Dead output channels"], rows))
    figures: list[Figure] = []
    for name, info in layers:
        if info.get("grid"):
            figures.append(Figure(Img(str(info["grid"]), f"kernels of {name}"), [Code(name), f"  {_shape(info.get('shape'))}"]))
        if info.get("rgb"):
            figures.append(Figure(Img(str(info["rgb"]), f"RGB filters of {name}"), [Code(name), "  as RGB filters"]))
    figures, note = _cap(figures, max_images, "kernel pictures", "kernels/")
    if figures:
        out.append(Gallery(figures, wide=True))
    return out + note


def _features_body(data: RunData, max_images: int) -> list[Any]:
    f = data.features
    if not f:
        return []
    out: list[Any] = [Para(["Colormap ", Code(str(f.get("cmap"))), ", normalised per ", Code(str(f.get("normalize"))), ", channels chosen: ", Code(str(f.get("select"))), "."])]
    layers = list((f.get("layers") or {}).items())
    rows: list[list[Cell]] = []
    figures: list[Figure] = []
    for name, info in layers:
        npy = info.get("npy")
        rows.append([
            Code(name), _shape(info.get("shape")), _count(info.get("channels_drawn")),
            _fmt_num(info.get("mean")), _fmt_num(info.get("max")),
            f"{float(info['zero_fraction']) * 100:.1f}%" if isinstance(info.get("zero_fraction"), (int, float)) else "–",
            Link(str(npy), str(npy)) if npy else "–",
        ])
        for image, grid in (info.get("grids") or {}).items():
            figures.append(Figure(Img(str(grid), f"feature maps of {name} for {image}"), [Code(name), f"  image {image}, {_shape(info.get('shape'))}"]))
    if rows:
        out.append(Table(["Layer", "Output shape", "Channels drawn", "Mean", "Max", "Zeros", "Activations"], rows))
    figures, note = _cap(figures, max_images, "feature grids", "features/")
    if figures:
        out.append(Gallery(figures))
    return out + note


def _class_text(cls: Any, name: Any) -> str:
    return f"{cls} {name}" if name else f"class {cls}"


def _cam_body(data: RunData, max_images: int) -> list[Any]:
    c = data.cam
    if not c:
        return []
    layers = c.get("layers")
    layers_text = ", ".join(str(x) for x in layers) if isinstance(layers, list) else str(layers)
    targets = c.get("targets")
    targets_text = "top-1 prediction of each image" if targets in (None, [], "auto") else str(targets)
    out: list[Any] = [Para(["Method ", Strong(str(c.get("method"))), " on layer(s) ", Code(layers_text), ", target: ", targets_text, "."])]
    shown = 0
    left = 0
    for img in c.get("images") or []:
        name = str(img.get("name"))
        out.append(Heading(f"Image {name}"))
        if img.get("source"):
            out.append(Para(["Source: ", Code(str(img["source"]))]))
        top5 = img.get("top5") or []
        if top5:
            out.append(Table(
                ["Rank", "Class", "Name", "Probability"],
                [[str(i + 1), str(p.get("class")), str(p.get("name") or "–"), f"{float(p.get('prob', 0)) * 100:.2f}%"] for i, p in enumerate(top5)],
            ))
        figures: list[Figure] = []
        for m in img.get("maps") or []:
            if shown >= max_images > 0:
                left += 1
                continue
            cap: list[Inline] = [
                Code(str(m.get("layer"))), f"  target {_class_text(m.get('target'), m.get('target_name'))}",
                f", score {_fmt_num(m.get('score'))}", f", logit {_fmt_num(m.get('logit'))}",
            ]
            for key, val in (m.get("metrics") or {}).items():
                cap.append(f", {key} {_fmt_num(val)}")
            if m.get("valid") is False:
                cap += ["  ", Badge("invalid")]
            if m.get("overlay"):
                figures.append(Figure(Img(str(m["overlay"]), f"{c.get('method')} overlay, {name}, {m.get('layer')}"), cap))
                shown += 1
            if m.get("heatmap"):
                figures.append(Figure(Img(str(m["heatmap"]), f"heatmap, {name}, {m.get('layer')}"), [Code(str(m.get("layer"))), "  heatmap"]))
        if figures:
            out.append(Gallery(figures))
    if left:
        out.append(Alert("info", [f"{left} more CAM maps not shown (report.max_images={max_images}); they are in ", Code("cam/")]))
    return out


def _tensorboard_body(data: RunData, max_images: int) -> list[Any]:
    tb = data.tensorboard
    out: list[Any] = []
    m = data.manifest or {}
    logdir = Path(str(m.get("run_dir") or data.run_dir)) / "tensorboard"
    out.append(Para(["Open the event files with TensorBoard, then browse to ", Link("http://localhost:6006", "http://localhost:6006"), ":"]))
    out.append(Pre(f"tensorboard --logdir {shlex.quote(str(logdir))}"))
    if not tb:
        return out
    if tb.get("files"):
        out.append(Table(["Event file", "Size"], [[Code(f["path"]), _fmt_num(int(f["bytes"])) + " B"] for f in tb["files"]]))
    if tb.get("tags"):
        rows: list[list[Cell]] = [[k, str(len(v)), ", ".join(v[:12]) + (", …" if len(v) > 12 else "")] for k, v in tb["tags"].items()]
        out.append(Table(["Kind", "Tags", "Names"], rows))
    if tb.get("error"):
        out.append(Alert("warning", ["Could not list the tags: ", str(tb["error"])]))
    return out


def _provenance_section(data: RunData) -> Section:
    m = data.manifest or {}
    body: list[Any] = []
    body.append(Heading("Overrides"))
    if data.overrides:
        body.append(Para(sum(([Code(o), " "] for o in data.overrides), [])))
    else:
        body.append(Para(["None: the config is conf/config.yaml's defaults."]))
    run = str(m.get("run_dir") or data.run_dir)
    body.append(Heading("Re-run"))
    body.append(Pre(
        f"python run.py --config-path {shlex.quote(run + '/.hydra')} --config-name config\n"
        f"python -m pipeline.reproduce {shlex.quote(run)}   # same, into a new folder, then compares"
    ))
    git = m.get("git")
    body.append(Heading("Code"))
    if isinstance(git, dict):
        body.append(Para(["git commit ", Code(str(git.get("commit"))), " (uncommitted changes)" if git.get("dirty") else " (clean tree)"]))
    else:
        body.append(Para(["git commit: unknown (not run from a git checkout)"]))
    versions = m.get("versions") or {}
    if versions:
        body.append(Table(["Package", "Version"], [[k, str(v) if v else "not installed"] for k, v in versions.items()]))
    prov = m.get("provenance") or {}
    body.append(Heading("Inputs and checkpoint"))
    rows: list[list[Cell]] = [[Code(str(f.get("path"))), _fmt_num(f.get("bytes")), Code(str(f.get("sha256")))] for f in prov.get("inputs") or []]
    ck = prov.get("checkpoint")
    if isinstance(ck, dict):
        rows.append([[Strong("checkpoint "), Code(str(ck.get("path")))], _fmt_num(ck.get("bytes")), Code(str(ck.get("sha256")))])
    if rows:
        body.append(Table(["File", "Bytes", "sha256"], rows, cls="hashes"))
    else:
        body.append(Para(["No input files and no checkpoint (random input and/or random init, seeded)."]))
    if data.config:
        from omegaconf import OmegaConf

        text = OmegaConf.to_yaml(OmegaConf.create(data.config)).rstrip()
        body.append(Details("Resolved config", [Pre(text)], open=True))
    return Section("provenance", "Provenance", body)


def _manifest_section(data: RunData) -> Section:
    m = data.manifest or {}
    rows: list[list[Cell]] = []
    artifacts: list[list[Cell]] = []
    for rec in data.records:
        arts = rec.get("artifacts") or []
        status = str(rec.get("status") or "unknown")
        name = str(rec.get("name"))
        if name == "report" and status in ("pending", "running"):
            status_cell: Cell = [Badge("writing"), " (this report)"]
        else:
            status_cell = Badge(status)
        err = _record_error(rec) if rec.get("error") else ""
        rows.append([Code(name), status_cell, _fmt_seconds(rec.get("seconds")), str(len(arts)),
                     _fmt_mb(sum(int(a.get("bytes", 0)) for a in arts)), Strong(err) if err else ""])
        for a in arts:
            artifacts.append([Code(str(a.get("path"))), _fmt_num(a.get("bytes")), Code(str(a.get("sha256")))])
    body: list[Any] = [Para(["Overall status ", Badge(str(m.get("status", "unknown"))), f", {_fmt_seconds(m.get('seconds'))} in all. Source: ", Link(MANIFEST, MANIFEST), "."])]
    body.append(Table(["Step", "Status", "Time", "Files", "Size", "Error"], rows, cls="manifest"))
    if artifacts:
        body.append(Details(f"All {len(artifacts)} artifacts with sha256 (compare two runs: python -m pipeline.compare A B)", [Table(["Path", "Bytes", "sha256"], artifacts, cls="hashes")]))
    return Section("manifest", "Manifest", body, status=str(m.get("status", "unknown")))


# =========================================================================== run: write


def _settings_from_config(config: dict[str, Any] | None) -> Any:
    """``ReportConfig`` from a recorded config's ``report`` node (unknown keys ignored)."""
    from pipeline.schema import ReportConfig

    node = (config or {}).get("report") or {}
    known = {f.name for f in fields(ReportConfig)}
    return ReportConfig(**{k: v for k, v in node.items() if k in known})


def write_run_report(run_dir: Path | str, settings: Any = None) -> Path:
    """Write ``report.html`` and/or ``report.md`` into ``run_dir`` from its files; return the HTML path.

    ``settings`` is a ``ReportConfig`` (None = the run's recorded ``report`` config, else defaults).
    Returns the Markdown path when HTML is disabled.
    """
    run = Path(run_dir)
    data = collect_run(run)
    if settings is None:
        settings = _settings_from_config(data.config)
    if not (settings.html or settings.markdown):
        from pipeline.errors import ConfigError

        raise ConfigError("report.html and report.markdown are both false: nothing to write (set report.enabled=false instead)")
    doc = run_document(data, int(settings.max_images))
    written: list[Path] = []
    if settings.html:
        written.append(_write_atomic(run / REPORT_HTML, to_html(doc, run)))
    if settings.markdown:
        written.append(_write_atomic(run / REPORT_MD, to_markdown(doc)))
    log.info("Report %s", written[0])
    return written[0]


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


def _is_job_dir(p: Path) -> bool:
    if not p.is_dir() or p.name.startswith("."):
        return False
    return (p / MANIFEST).is_file() or (p / ".hydra").is_dir() or bool(re.match(r"^\d+(_|$)", p.name))


def _last_error_line(log_path: Path) -> str | None:
    text = _read_text(log_path)
    if not text:
        return None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "[ERROR]" in ln or "Error" in ln]
    return (errors or lines)[-1][:500]


def collect_job(job: Path) -> JobData:
    """Read one job folder; a folder without a manifest is a failed job."""
    problems: list[str] = []
    num_match = re.match(r"^(\d+)", job.name)
    manifest = _read_json(job / MANIFEST, problems)
    overrides = _read_yaml(job / ".hydra" / "overrides.yaml")
    if not isinstance(overrides, list):
        overrides = list((manifest or {}).get("overrides") or [])
    overrides = [str(o) for o in overrides if not str(o).lstrip("+~").startswith("hydra.")]
    params = dict(_split_override(o) for o in overrides)
    if manifest is None:
        why = problems[0] if problems else f"no {MANIFEST}: the job stopped before the pipeline started"
        hint = _last_error_line(job / "run.log")
        data = JobData(job.name, int(num_match.group(1)) if num_match else None, overrides, params, "failed", None,
                       f"{why}" + (f"; last log line: {hint}" if hint else ""))
    else:
        errors = [f"{r.get('name')}: {_record_error(r)}" for r in [manifest.get("setup") or {}, *(manifest.get("stages") or [])] if r.get("status") == "failed"]
        data = JobData(job.name, int(num_match.group(1)) if num_match else None, overrides, params,
                       str(manifest.get("status", "unknown")), manifest.get("seconds"), "; ".join(errors) or None,
                       manifest.get("created"))
    data.cam = _read_json(job / "cam" / "cam.json", problems)
    if not data.cam:
        feats = _read_json(job / "features" / "stats.json", problems) or {}
        for lname, info in (feats.get("layers") or {}).items():
            for image, grid in (info.get("grids") or {}).items():
                data.picture = (str(grid), f"feature maps of {lname}, image {image}")
                break
            if data.picture:
                break
    if not data.cam and not data.picture:
        kern = _read_json(job / "kernels" / "stats.json", problems) or {}
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
    jobs = [collect_job(p) for p in sweep.iterdir() if _is_job_dir(p)]
    jobs.sort(key=lambda j: (j.num if j.num is not None else 1 << 30, j.name))
    multirun = _read_yaml(sweep / "multirun.yaml") or {}
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
            parts.append(Img(f"{job.name}/{m['overlay']}", f"{job.name}: {m.get('layer')}, {m.get('target_name') or m.get('target')}", thumb=True))
            parts.append(Code(str(m.get("layer"))))
            parts.append(f" {_class_text(m.get('target'), m.get('target_name'))}: {_fmt_num(m.get('score'))}")
            if m.get("valid") is False:
                parts += [" ", Badge("invalid")]
            parts.append(Br())
    if not maps and job.picture:
        parts += [Img(f"{job.name}/{job.picture[0]}", job.picture[1], thumb=True), job.picture[1], Br()]
    parts.append(Link("report", f"{job.name}/{REPORT_HTML}") if REPORT_HTML in job.reports else "no report")
    return parts


def sweep_document(data: SweepData) -> Document:
    """Turn a sweep's data into a document: overview, job table, comparison grids, leaderboard."""
    jobs = data.jobs
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    overall = "ok" if jobs and counts.get("ok") == len(jobs) else ("failed" if counts.get("failed") else "unknown")
    created = sorted(j.created for j in jobs if j.created)
    common = [o for o in (jobs[0].overrides if jobs else []) if all(o in j.overrides for j in jobs)]
    head_rows: list[list[Cell]] = [
        ["Sweep folder", Code(str(data.sweep_dir.resolve()))],
        ["Command", Code(shlex.join(["python", "run.py", "-m", *data.task]) if data.task else "–")],
        ["Jobs", [f"{len(jobs)} job folders: ", *sum(([Badge(k), f" {v}  "] for k, v in sorted(counts.items())), [])]],
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
        rows.append([
            "–" if j.num is None else str(j.num),
            [*sum(([Code(o), " "] for o in shown), [])] or "(none)",
            Badge(j.status),
            _fmt_seconds(j.seconds),
            Strong(j.error) if j.error else "",
            sum(([Link(r, f"{j.name}/{r}"), Br()] for r in j.reports), []) or "no report",
        ])
    head = "Swept overrides" if data.swept else "Overrides"
    sections.append(Section("jobs", "Jobs", [Table(["#", head, "Status", "Time", "Error", "Report"], rows, cls="jobs")]))
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
        desc.append(". Each cell shows the job's CAM overlay" + ("" if images else " (no CAM in these jobs: its first picture)") + ".")
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
            head = [str(row_key or "job"), *[("–" if c is None else f"{col_key}={c}") if col_key else "" for c in cols]]
            grid_rows: list[list[Cell]] = []
            row_vals = _values(members, row_key) if row_key else [None]
            if not data.swept:
                for j in members:
                    grid_rows.append([Code(j.name), _cell(j, image)])
            else:
                for rv in row_vals:
                    line: list[Cell] = [Code("(unset)" if rv is None else str(rv))]
                    for cv in cols:
                        hits = [j for j in members if j.params.get(row_key) == rv and (col_key is None or j.params.get(col_key) == cv)]
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
        return [Para(["No CAM metrics in these jobs, so no ranking. Add e.g. ", Code("cam.metrics=[road_combined]"), " to the sweep."])]
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
    head = ["Rank", *keys, "Image", "Layer", "Target", "Score", *[f"{n} {'↓' if metric_lower_is_better(n) else '↑'}" for n in names], "Job"]
    rows: list[list[Cell]] = []
    for i, e in enumerate(entries):
        m = e["map"]
        rank: Cell = str(i + 1) if key(e)[0] == 0 else [Badge("invalid")]
        rows.append([
            rank, *[str(e["job"].params.get(k, "–")) for k in keys], str(e["image"]), Code(str(m.get("layer"))),
            _class_text(m.get("target"), m.get("target_name")), _fmt_num(m.get("score")),
            *[_fmt_num(e["metrics"].get(n)) for n in names], _job_link(e["job"]),
        ])
    arrow = "lower" if lower else "higher"
    return [
        Para(["Ranked by ", Code(primary), f" ({arrow} is better); ↑/↓ mark each metric's better direction. Invalid maps come last."]),
        Table(head, rows, cls="leaderboard"),
    ]


def write_sweep_index(sweep_dir: Path | str) -> Path:
    """Write ``<sweep_dir>/index.html`` from the job folders on disk; return its path.

    Safe to call at any time and from several processes (atomic replace); it never runs a job.
    """
    sweep = Path(sweep_dir)
    doc = sweep_document(collect_sweep(sweep))
    return _write_atomic(sweep / SWEEP_INDEX, to_html(doc, sweep, thumb_px=THUMB_PX))


# =========================================================================== HTML

_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--bg:#fff;--alt:#f6f8fa;--line:#d1d9e0;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header.top{padding:18px 32px 10px;border-bottom:1px solid var(--line);background:var(--alt)}
header.top h1{margin:0 0 4px;font-size:24px}
nav{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);padding:6px 32px;display:flex;flex-wrap:wrap;gap:4px 14px}
nav a{color:var(--accent);text-decoration:none;font-size:14px}
main{padding:8px 32px 48px;max-width:1400px}
section{margin-top:22px}
h2{font-size:20px;border-bottom:1px solid var(--line);padding-bottom:4px;display:flex;gap:10px;align-items:center}
h3{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--alt)}
table.kv td:first-child{font-weight:600;white-space:nowrap;background:var(--alt)}
table.kv th{display:none}
table.hashes code{font-size:12px}
table.grid td{text-align:center;min-width:120px}
table.grid img{display:block;margin:0 auto 4px;max-width:256px}
code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--alt);padding:1px 4px;border-radius:4px;word-break:break-all}
pre{font:12.5px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--alt);border:1px solid var(--line);padding:10px;overflow:auto;max-height:640px}
details{margin:8px 0}
summary{cursor:pointer;color:var(--accent)}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12.5px;font-weight:600;color:#fff;background:#6e7781;vertical-align:middle}
.badge.ok{background:#1a7f37}.badge.failed,.badge.invalid{background:#cf222e}.badge.interrupted{background:#bc4c00}
.badge.running,.badge.pending,.badge.writing{background:#0969da}.badge.skipped{background:#8c959f}
.alert{border-left:4px solid;padding:8px 12px;margin:8px 0;border-radius:4px}
.alert.error{border-color:#cf222e;background:#ffebe9}.alert.warning{border-color:#bf8700;background:#fff8c5}
.alert.info{border-color:#0969da;background:#ddf4ff}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:14px;margin:10px 0}
.gallery.wide{grid-template-columns:1fr}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:8px;background:#fff}
figure img{width:100%;height:auto;display:block;margin:0 auto}
.gallery.wide figure img{width:auto;max-width:100%}
.gallery.wide figure img{image-rendering:pixelated}
figcaption{font-size:13px;color:var(--muted);margin-top:6px}
.missing{color:#cf222e;font-style:italic}
footer{color:var(--muted);font-size:12px;padding:12px 32px;border-top:1px solid var(--line)}
"""

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml", ".webp": "image/webp"}


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
        path = _inside(ctx.base, part.path)
        if path is None:
            return f'<span class="missing">missing picture: {_esc(part.path)}</span>'
        try:
            uri = _image_uri(path, ctx.thumb_px if part.thumb else None)
        except Exception as exc:  # noqa: BLE001 - an unreadable picture is shown as such
            return f'<span class="missing">unreadable picture {_esc(part.path)}: {_esc(exc)}</span>'
        return f'<img src="{uri}" alt="{_esc(part.alt)}" title="{_esc(part.path)}" data-path="{_esc(part.path)}">'
    return _esc(part)


def _block_html(block: Any, ctx: _HtmlCtx) -> str:
    if isinstance(block, Para):
        return f"<p>{_inline_html(block.parts, ctx)}</p>"
    if isinstance(block, Alert):
        return f'<div class="alert {_esc(block.level)}" role="alert">{_inline_html(block.parts, ctx)}</div>'
    if isinstance(block, Heading):
        return f"<h{block.level}>{_esc(block.text)}</h{block.level}>"
    if isinstance(block, Pre):
        return f"<pre>{_esc(block.text)}</pre>"
    if isinstance(block, Table):
        head = "".join(f"<th>{_esc(h)}</th>" for h in block.head)
        body = "".join("<tr>" + "".join(f"<td>{_inline_html(c, ctx)}</td>" for c in row) + "</tr>" for row in block.rows)
        cls = f' class="{_esc(block.cls)}"' if block.cls else ""
        return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Gallery):
        figs = "".join(
            f"<figure>{_inline_html(f.img, ctx)}<figcaption>{_inline_html(f.caption, ctx)}</figcaption></figure>"
            for f in block.figures
        )
        return f'<div class="gallery{" wide" if block.wide else ""}">{figs}</div>'
    if isinstance(block, Details):
        inner = "\n".join(_block_html(b, ctx) for b in block.body)
        return f"<details{' open' if block.open else ''}><summary>{_esc(block.summary)}</summary>\n{inner}\n</details>"
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
        parts.append(f'<section id="{_esc(s.id)}" data-section="{_esc(s.id)}">\n<h2>{_esc(s.title)} {badge}</h2>\n{body}\n</section>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="vizpipe {_esc(__version__)}">\n'
        f"<title>{_esc(doc.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header class="top"><h1>{_esc(doc.title)}</h1><div>{_inline_html(doc.subtitle, ctx)}</div></header>\n'
        f"<nav>{nav}</nav>\n<main>\n" + "\n".join(parts) + "\n</main>\n"
        f"<footer>Written by vizpipe {_esc(__version__)} from the files in this folder; rebuild with "
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
    if isinstance(block, Details):
        inner = "\n\n".join(_block_md(b) for b in block.body)
        return f"<details{' open' if block.open else ''}><summary>{html.escape(block.summary)}</summary>\n\n{inner}\n\n</details>"
    raise TypeError(f"Unknown block {type(block).__name__}")


def to_markdown(doc: Document) -> str:
    """Render ``doc`` as Markdown for a forge: pictures linked relatively, long texts in <details>."""
    out = [f"# {_md_text(doc.title)}", _inline_md(doc.subtitle)]
    out.append(" · ".join(f"[{_md_text(s.title)}](#{s.id})" for s in doc.sections))
    for s in doc.sections:
        out.append(f'<a id="{html.escape(s.id)}"></a>\n\n## {_md_text(s.title)}' + (f" ({_inline_md(Badge(s.status))})" if s.status else ""))
        out.extend(_block_md(b) for b in s.body)
    return "\n\n".join(out) + "\n"


# =========================================================================== CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.report <run_or_sweep_dir>``: rebuild a run report or a sweep index."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=main.__doc__)
    parser.add_argument("folder", type=Path, help="a run folder (has manifest.json) or a sweep folder (has job folders)")
    args = parser.parse_args(argv)
    folder: Path = args.folder
    if not folder.is_dir():
        print(f"vizpipe: error: {folder} is not a folder", file=sys.stderr)
        return 2
    is_sweep = (folder / "multirun.yaml").is_file() or any(_is_job_dir(p) for p in folder.iterdir())
    is_run = (folder / MANIFEST).is_file() or (not is_sweep and (
        (folder / ".hydra").is_dir() or any((folder / s).is_dir() for s in STAGE_ORDER)))
    try:
        if is_run:
            path = write_run_report(folder)
        elif is_sweep:
            path = write_sweep_index(folder)
        else:
            print(f"vizpipe: error: {folder} is neither a run folder (no {MANIFEST}) nor a sweep folder (no job folders)", file=sys.stderr)
            return 2
    except Exception as exc:  # noqa: BLE001 - one readable line for the console
        print(f"vizpipe: error: could not write the report for {folder}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"vizpipe: report {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
