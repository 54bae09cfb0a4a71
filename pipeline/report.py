"""Reports: ``report.html``/``report.md`` for a run folder, ``index.html`` for a sweep folder.

Everything is read from disk (``manifest.json``, ``.hydra/``, the stages' JSON files and
pictures), so a report can be rebuilt at any time, by any process:
``python -m pipeline.report <run_or_sweep_dir>``.

Collect, then render: ``collect_run`` reads the files into plain data (``RunData``);
``run_document`` turns it into a markup-free document tree (``pipeline.report_markup``), whose
``to_html`` / ``to_markdown`` escape every string in one place. ``report.html`` embeds its
pictures as base64 data URIs (it opens offline and survives copying or zipping); ``report.md``
links them relatively. The sweep index lives in ``pipeline.report_sweep``.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.manifest import MANIFEST
from pipeline.report_markup import (
    Alert,
    Badge,
    Cell,
    Code,
    Columns,
    Details,
    Document,
    Figure,
    Gallery,
    Heading,
    Img,
    Inline,
    Link,
    Para,
    Pre,
    Section,
    Strong,
    Table,
    to_html,
    to_markdown,
    write_atomic,
)

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
    """Parse a YAML file with OmegaConf (None when missing or invalid)."""
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - a broken file is reported as missing
        return None


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
    manifest = read_json(run / MANIFEST, problems)
    if manifest is None:
        problems.append(f"{MANIFEST} is missing: this report shows only the files found on disk")
    overrides = read_yaml(run / ".hydra" / "overrides.yaml")
    if not isinstance(overrides, list):
        overrides = list((manifest or {}).get("overrides") or [])
    config = (manifest or {}).get("config") or read_yaml(run / ".hydra" / "config.yaml")
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
            "json": read_json(run / "summary" / "summary.json", problems),
            "table": read_text(run / "summary" / "summary.txt"),
            "modules": read_text(run / "summary" / "modules.txt"),
            "layers": read_text(run / "summary" / "layers.txt"),
        }
    data.kernels = read_json(run / "kernels" / "stats.json", problems)
    data.features = read_json(run / "features" / "stats.json", problems)
    data.cam = read_json(run / "cam" / "cam.json", problems)
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
            acc = EventAccumulator(
                str(ev), size_guidance={"images": 1, "histograms": 1, "scalars": 1, "tensors": 1}
            )
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


def fmt_num(value: Any, digits: int = 4) -> str:
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
    return str(len(value)) if isinstance(value, (list, tuple)) else fmt_num(value)


def fmt_seconds(value: Any) -> str:
    """Seconds with two decimals (non-breaking space before the unit), or a dash."""
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


def record_error(rec: dict[str, Any]) -> str:
    """A step record's error as the runner wrote it (its type when there is no message)."""
    return str(rec.get("error") or rec.get("error_type") or "")


def _cap(items: list[Any], limit: int, what: str, run_dir: str) -> tuple[list[Any], list[Any]]:
    """The first ``limit`` items, plus a note block when some were left out."""
    if limit <= 0 or len(items) <= limit:
        return items, []
    note = Alert(
        "info",
        [
            f"{len(items) - limit} more {what} not shown (report.max_images={limit}); they are in ",
            Code(run_dir),
        ],
    )
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
    subtitle: list[Inline] = [
        Badge(str(m.get("status", "unknown"))),
        " ",
        str(m.get("created") or ""),
    ]
    return Document(f"vizpipe report: {m.get('model') or data.run_dir.name}", subtitle, sections)


def _header_section(data: RunData) -> Section:
    m = data.manifest or {}
    cfg = data.config or {}
    inp = m.get("input") or {}
    shape = ((data.summary or {}).get("json") or {}).get("input_shape") or (cfg.get("input") or {}).get(
        "shape"
    )
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
        [
            "Seed",
            f"{m.get('seed', cfg.get('seed', '–'))}"
            + (" (deterministic algorithms)" if cfg.get("deterministic") else ""),
        ],
        ["Date", str(m.get("created") or "–")],
        ["Command", Code(_command(m))],
        [
            "Status",
            [Badge(str(m.get("status", "unknown"))), f"  total {fmt_seconds(m.get('seconds'))}"],
        ],
        ["vizpipe version", str(m.get("vizpipe") or "–")],
        ["Run folder", Code(str(m.get("run_dir") or data.run_dir))],
    ]
    if cfg.get("notes"):
        rows.append(["Notes", str(cfg["notes"])])
    body: list[Any] = [Table(["", ""], rows, cls="kv")]
    for rec in data.records:
        if rec.get("status") == "failed":
            body.append(Alert("error", [Strong(f"{rec.get('name')} failed: "), record_error(rec)]))
        elif rec.get("status") == "interrupted":
            body.append(Alert("error", [Strong(f"{rec.get('name')} was interrupted")]))
    for w in m.get("warnings") or []:
        body.append(Alert("warning", [Strong("Warning: "), str(w)]))
    for p in data.problems:
        body.append(Alert("warning", [str(p)]))
    return Section("header", "Run", body, status=str(m.get("status", "unknown")))


def _stage_section(data: RunData, name: str, rec: dict[str, Any], max_images: int) -> Section:
    status = str(rec.get("status") or "unknown")
    body: list[Any] = [
        Para(
            [
                Badge(status),
                f"  {fmt_seconds(rec.get('seconds'))}, {len(rec.get('artifacts') or [])} files in ",
                Code(f"{name}/"),
            ]
        )
    ]
    if status == "failed":
        body.append(Alert("error", [Strong("This stage failed: "), record_error(rec)]))
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
        try:
            body.extend(builder(data, max_images))
        except Exception as exc:  # noqa: BLE001 - one odd data file must not cost the whole report
            log.warning("Report section %s: %s", name, exc)
            why = f"Could not show this stage's data files: {type(exc).__name__}: {exc}"
            body.append(Alert("error", [why]))
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
            ["Total params", fmt_num(t.get("total_params"))],
            ["Trainable params", fmt_num(t.get("trainable_params"))],
            ["Non-trainable params", fmt_num(t.get("non_trainable_params"))],
            ["Total mult-adds", f"{float(t.get('total_mult_adds') or 0) / 1e9:.3f} G"],
            ["Input size", _fmt_mb(t.get("input_size_bytes"))],
            ["Forward/backward pass size", _fmt_mb(t.get("forward_backward_size_bytes"))],
            ["Params size", _fmt_mb(t.get("params_size_bytes"))],
            ["Estimated total size", _fmt_mb(t.get("total_size_bytes"))],
        ]
        out.append(Table(["Totals (torchinfo)", ""], rows, cls="kv"))
    texts: list[Any] = []
    if s.get("table"):
        texts.append(Details("torchinfo table (summary/summary.txt)", [Pre(s["table"].rstrip())]))
    if s.get("modules"):
        texts.append(Details("print(model) (summary/modules.txt)", [Pre(s["modules"].rstrip())]))
    if s.get("layers"):
        texts.append(
            Details(
                "Layer catalog: every addressable module (summary/layers.txt)",
                [Pre(s["layers"].rstrip())],
            )
        )
    return [Columns([out, texts])] if out and texts else out + texts


def _kernels_body(data: RunData, max_images: int) -> list[Any]:
    k = data.kernels
    if not k:
        return []
    out: list[Any] = [
        Para(
            [
                "Colour scale ",
                Code(str(k.get("scale"))),
                ", colormap ",
                Code(str(k.get("cmap"))),
                ". Rows are output channels, columns input channels; white is zero.",
            ]
        )
    ]
    layers = list((k.get("layers") or {}).items())
    rows: list[list[Cell]] = []
    for name, info in layers:
        rows.append(
            [
                Code(name),
                _shape(info.get("shape")),
                fmt_num(info.get("vmax")),
                _count(info.get("dead")),
            ]
        )
    if rows:
        out.append(Table(["Layer", "Weight shape", "max |w|", "Dead output channels"], rows))
    figures: list[Figure] = []
    for name, info in layers:
        if info.get("grid"):
            figures.append(
                Figure(
                    Img(str(info["grid"]), f"kernels of {name}"),
                    [Code(name), f"  {_shape(info.get('shape'))}"],
                )
            )
        if info.get("rgb"):
            figures.append(
                Figure(
                    Img(str(info["rgb"]), f"RGB filters of {name}"),
                    [Code(name), "  as RGB filters"],
                )
            )
    figures, note = _cap(figures, max_images, "kernel pictures", "kernels/")
    if figures:
        out.append(Gallery(figures, wide=True))
    return out + note


def _features_body(data: RunData, max_images: int) -> list[Any]:
    f = data.features
    if not f:
        return []
    out: list[Any] = [
        Para(
            [
                "Colormap ",
                Code(str(f.get("cmap"))),
                ", normalised per ",
                Code(str(f.get("normalize"))),
                ", channels chosen: ",
                Code(str(f.get("select"))),
                ".",
            ]
        )
    ]
    layers = list((f.get("layers") or {}).items())
    rows: list[list[Cell]] = []
    figures: list[Figure] = []
    for name, info in layers:
        npy = info.get("npy")
        rows.append(
            [
                Code(name),
                _shape(info.get("shape")),
                _count(info.get("channels_drawn")),
                fmt_num(info.get("mean")),
                fmt_num(info.get("max")),
                f"{float(info['zero_fraction']) * 100:.1f}%"
                if isinstance(info.get("zero_fraction"), (int, float))
                else "–",
                Link(str(npy), str(npy)) if npy else "–",
            ]
        )
        for image, grid in (info.get("grids") or {}).items():
            figures.append(
                Figure(
                    Img(str(grid), f"feature maps of {name} for {image}"),
                    [Code(name), f"  image {image}, {_shape(info.get('shape'))}"],
                )
            )
    if rows:
        out.append(
            Table(
                ["Layer", "Output shape", "Channels drawn", "Mean", "Max", "Zeros", "Activations"],
                rows,
            )
        )
    figures, note = _cap(figures, max_images, "feature grids", "features/")
    if figures:
        out.append(Gallery(figures))
    return out + note


def class_text(cls: Any, name: Any) -> str:
    """``"207 golden retriever"`` when the class has a name, else ``"class 207"``."""
    return f"{cls} {name}" if name else f"class {cls}"


def _cam_body(data: RunData, max_images: int) -> list[Any]:
    c = data.cam
    if not c:
        return []
    layers = c.get("layers")
    layers_text = ", ".join(str(x) for x in layers) if isinstance(layers, list) else str(layers)
    targets = c.get("targets")
    targets_text = "top-1 prediction of each image" if targets in (None, [], "auto") else str(targets)
    out: list[Any] = [
        Para(
            [
                "Method ",
                Strong(str(c.get("method"))),
                " on layer(s) ",
                Code(layers_text),
                ", target: ",
                targets_text,
                ".",
            ]
        )
    ]
    shown = left = 0
    for img in c.get("images") or []:
        name = str(img.get("name"))
        about: list[Any] = []
        top5 = [
            [
                str(i + 1),
                str(p.get("class")),
                str(p.get("name") or "–"),
                f"{float(p.get('prob', 0)) * 100:.2f}%",
            ]
            for i, p in enumerate(img.get("top5") or [])
        ]
        if top5:
            about.append(Table(["Rank", "Class", "Name", "Probability"], top5))
        figures: list[Figure] = []
        for m in img.get("maps") or []:
            if shown >= max_images > 0:
                left += 1
                continue
            layer = str(m.get("layer"))
            cap: list[Inline] = [
                Code(layer),
                f"  target {class_text(m.get('target'), m.get('target_name'))}",
                f", score {fmt_num(m.get('score'))}, logit {fmt_num(m.get('logit'))}",
                *[f", {k} {fmt_num(v)}" for k, v in (m.get("metrics") or {}).items()],
            ]
            if m.get("valid") is False:
                cap += ["  ", Badge("invalid")]
            if m.get("overlay"):
                alt = f"{c.get('method')} overlay, {name}, {layer}"
                figures.append(Figure(Img(str(m["overlay"]), alt), cap))
                shown += 1
            if m.get("heatmap"):
                figures.append(
                    Figure(
                        Img(str(m["heatmap"]), f"heatmap, {name}, {layer}"),
                        [Code(layer), "  heatmap"],
                    )
                )
        out.append(Heading(f"Image {name}"))
        if img.get("source"):
            out.append(Para(["Source: ", Code(str(img["source"]))]))
        out.append(Columns([about, [Gallery(figures)]]) if figures else Columns([about]))
    if left:
        out.append(
            Alert(
                "info",
                [
                    f"{left} more CAM maps not shown (report.max_images={max_images}); they are in ",
                    Code("cam/"),
                ],
            )
        )
    return out


def _tensorboard_body(data: RunData, max_images: int) -> list[Any]:
    tb = data.tensorboard
    out: list[Any] = []
    m = data.manifest or {}
    logdir = Path(str(m.get("run_dir") or data.run_dir)) / "tensorboard"
    out.append(
        Para(
            [
                "Open the event files with TensorBoard, then browse to ",
                Link("http://localhost:6006", "http://localhost:6006"),
                ":",
            ]
        )
    )
    out.append(Pre(f"tensorboard --logdir {shlex.quote(str(logdir))}"))
    if not tb:
        return out
    if tb.get("files"):
        out.append(
            Table(
                ["Event file", "Size"],
                [[Code(f["path"]), fmt_num(int(f["bytes"])) + " B"] for f in tb["files"]],
            )
        )
    if tb.get("tags"):
        rows: list[list[Cell]] = [
            [k, str(len(v)), ", ".join(v[:12]) + (", …" if len(v) > 12 else "")]
            for k, v in tb["tags"].items()
        ]
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
    body.append(
        Pre(
            f"python run.py --config-path {shlex.quote(run + '/.hydra')} --config-name config\n"
            f"python -m pipeline.reproduce {shlex.quote(run)}   # into a new folder, then compares"
        )
    )
    git = m.get("git")
    body.append(Heading("Code"))
    if isinstance(git, dict):
        body.append(
            Para(
                [
                    "git commit ",
                    Code(str(git.get("commit"))),
                    " (uncommitted changes)" if git.get("dirty") else " (clean tree)",
                ]
            )
        )
    else:
        body.append(Para(["git commit: unknown (not run from a git checkout)"]))
    versions = m.get("versions") or {}
    if versions:
        body.append(
            Table(
                ["Package", "Version"],
                [[k, str(v) if v else "not installed"] for k, v in versions.items()],
            )
        )
    prov = m.get("provenance") or {}
    body.append(Heading("Inputs and checkpoint"))
    rows: list[list[Cell]] = [
        [Code(str(f.get("path"))), fmt_num(f.get("bytes")), Code(str(f.get("sha256")))]
        for f in prov.get("inputs") or []
    ]
    ck = prov.get("checkpoint")
    if isinstance(ck, dict):
        rows.append(
            [
                [Strong("checkpoint "), Code(str(ck.get("path")))],
                fmt_num(ck.get("bytes")),
                Code(str(ck.get("sha256"))),
            ]
        )
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
        err = record_error(rec) if rec.get("error") else ""
        rows.append(
            [
                Code(name),
                status_cell,
                fmt_seconds(rec.get("seconds")),
                str(len(arts)),
                _fmt_mb(sum(int(a.get("bytes", 0)) for a in arts)),
                Strong(err) if err else "",
            ]
        )
        for a in arts:
            artifacts.append([Code(str(a.get("path"))), fmt_num(a.get("bytes")), Code(str(a.get("sha256")))])
    body: list[Any] = [
        Para(
            [
                "Overall status ",
                Badge(str(m.get("status", "unknown"))),
                f", {fmt_seconds(m.get('seconds'))} in all. Source: ",
                Link(MANIFEST, MANIFEST),
                ".",
            ]
        )
    ]
    body.append(Table(["Step", "Status", "Time", "Files", "Size", "Error"], rows, cls="manifest"))
    if artifacts:
        body.append(
            Details(
                f"All {len(artifacts)} artifacts with sha256 "
                "(compare two runs: python -m pipeline.compare A B)",
                [Table(["Path", "Bytes", "sha256"], artifacts, cls="hashes")],
            )
        )
    return Section("manifest", "Manifest", body, status=str(m.get("status", "unknown")))


# =========================================================================== run: write


def _settings_from_config(config: dict[str, Any] | None) -> Any:
    """``ReportConfig`` from a recorded config's ``report`` node (unknown keys ignored)."""
    from pipeline.schema import ReportConfig

    node = (config or {}).get("report") or {}
    known = {f.name for f in fields(ReportConfig)}
    return ReportConfig(**{k: v for k, v in node.items() if k in known})


def write_run_report(run_dir: Path | str, settings: Any = None) -> Path:
    """Write ``report.html`` and/or ``report.md`` into ``run_dir`` from its files; return the first.

    ``settings`` is a ``ReportConfig`` (None = the run's recorded ``report`` config, else defaults).
    Returns the Markdown path when HTML is disabled.
    """
    run = Path(run_dir)
    data = collect_run(run)
    if settings is None:
        settings = _settings_from_config(data.config)
    if not (settings.html or settings.markdown):
        from pipeline.errors import ConfigError

        raise ConfigError(
            "report.html and report.markdown are both false: nothing to write "
            "(set report.enabled=false instead)"
        )
    doc = run_document(data, int(settings.max_images))
    written: list[Path] = []
    if settings.html:
        written.append(write_atomic(run / REPORT_HTML, to_html(doc, run)))
    if settings.markdown:
        written.append(write_atomic(run / REPORT_MD, to_markdown(doc)))
    log.info("Report %s", written[0])
    return written[0]


def write_sweep_index(sweep_dir: Path | str) -> Path:
    """Write ``<sweep_dir>/index.html`` from the job folders on disk (``pipeline.report_sweep``)."""
    from pipeline.report_sweep import write_sweep_index as write

    return write(sweep_dir)


def _is_sweep(folder: Path) -> bool:
    from pipeline.report_sweep import is_job_dir

    return (folder / "multirun.yaml").is_file() or any(is_job_dir(p) for p in folder.iterdir())


# =========================================================================== CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.report <run_or_sweep_dir>``: rebuild a run report or a sweep index."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=main.__doc__)
    parser.add_argument(
        "folder",
        type=Path,
        help="a run folder (has manifest.json) or a sweep folder (has job folders)",
    )
    parser.add_argument(
        "--jobs", action="store_true", help="for a sweep: also rebuild every job's report.html first"
    )
    args = parser.parse_args(argv)
    folder: Path = args.folder
    if not folder.is_dir():
        print(f"vizpipe: error: {folder} is not a folder", file=sys.stderr)
        return 2
    is_sweep = _is_sweep(folder)
    is_run = (folder / MANIFEST).is_file() or (
        not is_sweep and ((folder / ".hydra").is_dir() or any((folder / s).is_dir() for s in STAGE_ORDER))
    )
    try:
        if is_run:
            path = write_run_report(folder)
        elif is_sweep:
            if args.jobs:
                from pipeline.report_sweep import is_job_dir

                for job in sorted(p for p in folder.iterdir() if is_job_dir(p) and (p / MANIFEST).is_file()):
                    print(f"vizpipe: report {write_run_report(job)}")
            path = write_sweep_index(folder)
        else:
            print(
                f"vizpipe: error: {folder} is neither a run folder (no {MANIFEST}) "
                "nor a sweep folder (no job folders)",
                file=sys.stderr,
            )
            return 2
    except Exception as exc:  # noqa: BLE001 - one readable line for the console
        print(
            f"vizpipe: error: could not write the report for {folder}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"vizpipe: report {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
