"""TensorBoard stage: one event file per run that stock TensorBoard reads (seed §3).

Seed §3: ``SummaryWriter``, ``add_graph``, ``add_image(s)`` with ``make_grid``, ``add_scalar``,
``add_histogram``. Everything goes through ONE writer into ``<run>/tensorboard/`` (closed in
``finally``), so ``tensorboard --logdir <sweep>`` shows each job as one run named by its folder.
The backend (``tensorboardX`` or ``torch.utils.tensorboard``) changes nothing in the tags:

================================================  ==========  =================================
tag                                               kind        from
================================================  ==========  =================================
(graph)                                           graph       the GraphDef traced on the batch
``input/batch``, ``input/grid``                   images      ``add_images``; one ``make_grid``
``kernels/<layer>`` (``.../rgb``)                 images      this run's kernels stage
``features/<layer>/<image>``                      images      this run's features stage
``cam/<method>/<layer>/<class>/<image>``          images      this run's cam overlays
``weights/<module>``, ``biases/<module>``         histograms  parameters (else ``params/<name>``),
                                                              via ``add_histogram_raw``
``activations/<layer>/{mean,max,zero_fraction}``  scalars     features stage (else an own
``activations/<layer>/channel_mean``              histograms  capture of the model's blocks)
``predictions/top5``, ``summary/torchinfo``,      text        ``ctx.top_k``, summary stage (else
``config/resolved`` (``/text_summary`` added)                 torchinfo now), ``manifest.json``
``hparams/{top1_prob,score,<cam metric>}``        scalars     one HParams row: model, layer,
                                                              class, method -> these metrics
================================================  ==========  =================================

Layer, module, image and class names are made tag-safe (``safe_name``: no ``/`` or spaces inside a
part); a clash gets ``_2``, ``_3`` ... appended.

All at step 0 (a look at one model, not a training curve). Pitfalls handled here:
``add_hparams`` opens a timestamped sub-run in both libraries, so the three hparams summaries
are written through the run's own writer instead; two tensorboardX writers opened in the same
second in one folder share a file name (the first one's data is lost), so there is one writer
and its file name carries the ``.vizpipe`` suffix, distinct from any other writer's there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.context import RunContext
from pipeline.errors import ConfigError, unknown_choice
from pipeline.layers import safe_name
from pipeline.schema import TBBackend, TensorboardConfig
from stages import Stage

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = tuple(b.value for b in TBBackend)
#: the package each backend needs (torch.utils.tensorboard imports the ``tensorboard`` package)
PACKAGES = {"tensorboardX": "tensorboardX", "torch": "tensorboard"}
LOGDIR = "tensorboard"
#: event-file name suffix: keeps this writer's file apart from any other writer's in the folder
SUFFIX = ".vizpipe"
STEP = 0
STATS = ("mean", "max", "zero_fraction")
TEXT_SUFFIX = "/text_summary"  # both libraries append it to add_text tags
HIST_BINS = 64  # uniform buckets per histogram (TensorBoard re-bins for display)


@dataclass
class Collected:
    """Everything the writer will write, gathered before it is opened."""

    # (tag, array, dataformats); dataformats starting with "N" go through add_images
    images: list[tuple[str, Any, str]] = field(default_factory=list)
    # (tag, tensor or array); summarised with torch one at a time while writing (histogram_raw)
    histograms: list[tuple[str, Any]] = field(default_factory=list)
    scalars: list[tuple[str, float]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (tag, markdown)
    hparams: tuple[dict[str, str], dict[str, float]] | None = None
    graph: bytes | None = None  # serialized GraphDef
    graph_error: str | None = None  # why there is no graph (the model could not be traced)
    skipped: dict[str, str] = field(default_factory=dict)  # what was not logged, and why
    activations_from: str | None = None


class TensorBoardStage(Stage):
    """Event files for stock TensorBoard: graph, images, histograms, scalars, text, hparams."""

    name = "tensorboard"

    def validate(self, ctx: RunContext, settings: TensorboardConfig) -> None:
        """Check the backend name and that the packages it needs are installed."""
        backend = backend_name(settings)
        if backend not in BACKENDS:
            raise unknown_choice("tensorboard.backend", backend, BACKENDS)
        # the graph is traced with torch.utils.tensorboard's helper whichever backend writes it
        packages = [PACKAGES[backend]] + (["tensorboard"] if settings.graph else [])
        for package in dict.fromkeys(packages):
            if importlib.util.find_spec(package) is None:
                raise ConfigError(
                    f"tensorboard.backend={backend} needs the '{package}' package, which is not "
                    f"installed; pip install {package} (or: pip install -e .)"
                )

    def run(self, ctx: RunContext, settings: TensorboardConfig) -> dict[str, Any]:
        """Collect what to log from the context and earlier stages, then write one event file."""
        data = collect(ctx, settings)
        return render(ctx, settings, data)


def backend_name(settings: TensorboardConfig) -> str:
    """The backend as a plain string (the schema gives an Enum, hand-made settings a str)."""
    b = settings.backend
    return str(b.value if isinstance(b, TBBackend) else b)


# --------------------------------------------------------------------------- collect


def collect(ctx: RunContext, settings: TensorboardConfig) -> Collected:
    """Gather images, histograms, scalars, texts and the hparams row (no writer involved)."""
    data = Collected()
    if settings.graph:
        data.graph, data.graph_error = trace_graph(ctx)
    if settings.images:
        _input_images(ctx, data)
    if settings.kernels:
        _kernel_images(ctx, data)
    if settings.features:
        _feature_images(ctx, data)
    if settings.cam:
        _cam_images(ctx, data)
    if settings.histograms:
        _parameter_histograms(ctx, data)
    if settings.activations:
        _activation_stats(ctx, data)
    if settings.text:
        _texts(ctx, data)
    if settings.hparams:
        data.hparams = hparams_row(ctx)
    return data


def _tag(*parts: object) -> str:
    """Join tag parts with '/', each made safe (no '/' or spaces inside a part)."""
    return "/".join(safe_name(p) for p in parts)


def _unique(tag: str, taken: list[tuple[Any, ...]]) -> str:
    """``tag``, or ``tag_2``, ``tag_3`` ... when an entry of ``taken`` already uses it."""
    used = {t[0] for t in taken}
    unique, n = tag, 2
    while unique in used:
        unique, n = f"{tag}_{n}", n + 1
    return unique


def _add_image(data: Collected, tag: str, array: Any, fmt: str) -> None:
    """Append an image under a unique tag."""
    data.images.append((_unique(tag, data.images), array, fmt))


def _missing_stage(ctx: RunContext, data: Collected, stage: str) -> dict[str, Any] | None:
    """The result of ``stage`` from this run, or None (recorded in ``skipped``)."""
    res = ctx.results.get(stage)
    if not res:
        data.skipped[stage] = f"the {stage} stage did not run before tensorboard in this run"
        log.info("TensorBoard: no %s pictures (%s)", stage, data.skipped[stage])
        return None
    return res


def load_png(ctx: RunContext, rel: str, what: str) -> np.ndarray | None:
    """A picture written earlier in this run as (H, W, 3) uint8, or None with a warning."""
    import numpy as np
    from PIL import Image

    path = ctx.output_dir / rel
    if not path.is_file():
        ctx.warn(f"TensorBoard: {what} picture {rel} is missing from {ctx.output_dir}; not logged")
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)  # (H, W, 3)


def _input_images(ctx: RunContext, data: Collected) -> None:
    """The un-normalised input batch: add_images, and one torchvision make_grid image."""
    import torch
    from torchvision.utils import make_grid

    rgb = ctx.inputs.rgb  # (N, H, W, 3) float32 in [0, 1]
    data.images.append(("input/batch", rgb, "NHWC"))
    batch = torch.from_numpy(rgb).permute(0, 3, 1, 2)  # (N, 3, H, W)
    grid = make_grid(batch, nrow=min(8, batch.shape[0]), padding=2, pad_value=1.0)  # (3, H', W')
    data.images.append(("input/grid", grid.numpy(), "CHW"))


def _kernel_images(ctx: RunContext, data: Collected) -> None:
    res = _missing_stage(ctx, data, "kernels")
    for layer, info in (res or {}).get("layers", {}).items():
        for key, tag in (("grid", _tag("kernels", layer)), ("rgb", _tag("kernels", layer, "rgb"))):
            if info.get(key):
                img = load_png(ctx, info[key], f"kernel {key} of {layer}")
                if img is not None:
                    _add_image(data, tag, img, "HWC")


def _feature_images(ctx: RunContext, data: Collected) -> None:
    res = _missing_stage(ctx, data, "features")
    for layer, info in (res or {}).get("layers", {}).items():
        for image, rel in (info.get("grids") or {}).items():
            img = load_png(ctx, rel, f"feature grid of {layer} for {image}")
            if img is not None:
                _add_image(data, _tag("features", layer, image), img, "HWC")


def class_label(target: Any, target_name: str | None) -> str:
    """A class as it appears in tags and hparams: ``281`` or ``281_tabby``."""
    if target is None:
        return "none"
    return f"{target}_{target_name}" if target_name else str(target)


def _cam_images(ctx: RunContext, data: Collected) -> None:
    res = _missing_stage(ctx, data, "cam")
    if not res:
        return
    method = res.get("method_key") or str(res.get("method", "cam")).lower()
    for image in res.get("images", []):
        for m in image.get("maps", []):
            if not m.get("overlay"):
                continue
            img = load_png(ctx, m["overlay"], f"CAM overlay of {image.get('name')}")
            if img is not None:
                cls = class_label(m.get("target"), m.get("target_name"))
                tag = _tag("cam", method, m.get("layer"), cls, image.get("name"))
                _add_image(data, tag, img, "HWC")


def _parameter_histograms(ctx: RunContext, data: Collected) -> None:
    """One histogram per parameter: weights/<module>, biases/<module>, else params/<name>."""
    for name, p in ctx.model.named_parameters():
        module, _, pname = name.rpartition(".")
        if module and pname == "weight":
            tag = _tag("weights", module)
        elif module and pname == "bias":
            tag = _tag("biases", module)
        else:
            tag = _tag("params", name)
        data.histograms.append((_unique(tag, data.histograms), p.detach()))


def _activation_stats(ctx: RunContext, data: Collected) -> None:
    """Per captured layer: mean, max, zero fraction as scalars; channel means as a histogram."""
    import numpy as np

    res = ctx.results.get("features")
    if res and res.get("layers"):
        data.activations_from = "features"
        layers = {
            layer: {
                **{s: info.get(s) for s in STATS},
                "channel_mean": [
                    c["mean"] for c in info.get("channels") or [] if c.get("mean") is not None
                ],
            }
            for layer, info in res["layers"].items()
        }
    else:
        layers = capture_block_stats(ctx)
        data.activations_from = "tensorboard"
        log.info("TensorBoard: features did not run; activation stats of blocks %s", list(layers))
    for layer, stats in layers.items():
        for s in STATS:
            v = stats.get(s)
            if v is not None:
                tag = _unique(_tag("activations", layer, s), data.scalars)
                data.scalars.append((tag, float(v)))
        means = np.asarray(stats.get("channel_mean") or [], dtype=np.float64)
        if means.size > 1:
            tag = _unique(_tag("activations", layer, "channel_mean"), data.histograms)
            data.histograms.append((tag, means))


def capture_block_stats(ctx: RunContext) -> dict[str, dict[str, Any]]:
    """Activation statistics of the model's blocks from one no-grad pass (hooks removed after).

    Used only when the features stage did not run; same statistics it records: mean, max and the
    fraction of exact zeros over the batch, plus each channel's mean.
    """
    import torch

    from pipeline.layers import default_blocks, first_tensor

    model = ctx.model
    names = [n for n in default_blocks(model) if n]
    stats: dict[str, dict[str, Any]] = {}

    def make_hook(name: str) -> Any:
        def hook(module: torch.nn.Module, args: object, output: object) -> None:
            t = first_tensor(output)
            if name in stats or t is None or not t.is_floating_point() or t.numel() == 0:
                return
            x = t.detach().float()
            stats[name] = {
                "mean": float(x.mean()),
                "max": float(x.max()),
                "zero_fraction": float((x == 0).float().mean()),
                # (N, C, ...) -> (C,): mean over batch and positions
                "channel_mean": x.transpose(0, 1).reshape(x.shape[1], -1).mean(1).tolist()
                if x.ndim >= 3
                else [],
            }

        return hook

    handles = []
    try:
        for n in names:
            handles.append(model.get_submodule(n).register_forward_hook(make_hook(n)))
        with torch.no_grad():
            model(ctx.inputs.tensor)
    finally:
        for h in handles:
            h.remove()
    return {n: stats[n] for n in names if n in stats}


@contextlib.contextmanager
def modes_restored(model: Any) -> Iterator[None]:
    """Restore every module's own train/eval flag on exit (``model.train(x)`` sets them all)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def trace_graph(ctx: RunContext) -> tuple[bytes | None, str | None]:
    """The model's GraphDef (serialized) traced on the real batch, or (None, error) with a warning.

    Uses ``torch.utils.tensorboard._pytorch_graph.graph``, the function both libraries'
    ``add_graph`` call, but keeps only the GraphDef: each library also writes a placeholder
    run-metadata profile under its own tag (``step1`` vs ``profiler``), which would make the tags
    differ by backend. The tracer switches the whole model to eval and back to the root's mode;
    every module's own mode is restored here. Tracing adds no hooks; its console noise goes to
    the debug log. A model that cannot be traced never fails the run.
    """
    import torch

    out = io.StringIO()
    try:
        from torch.utils.tensorboard._pytorch_graph import graph

        with (
            modes_restored(ctx.model),
            torch.no_grad(),
            contextlib.redirect_stdout(out),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # TracerWarnings about data-dependent Python values
            graph_def, _placeholder_profile = graph(ctx.model, ctx.inputs.tensor)
        return graph_def.SerializeToString(), None
    except Exception as exc:  # noqa: BLE001 - a graph never fails a run
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        err = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        ctx.warn(
            f"TensorBoard: no model graph, {ctx.model_name} cannot be traced by torch.jit.trace "
            f"({err}); everything else is still logged"
        )
        return None, err
    finally:
        if out.getvalue().strip():
            log.debug("Tracing printed:\n%s", out.getvalue())


def _texts(ctx: RunContext, data: Collected) -> None:
    data.texts.append(("predictions/top5", top5_markdown(ctx)))
    table = torchinfo_table(ctx)
    if table is not None:
        data.texts.append(("summary/torchinfo", _code_block(table)))
    config = resolved_config_markdown(ctx.output_dir)
    if config is None:
        data.skipped["config/resolved"] = "no manifest.json or .hydra/config.yaml in the run folder"
        log.info("TensorBoard: no resolved config to log (%s)", data.skipped["config/resolved"])
    else:
        data.texts.append(("config/resolved", config))


def _code_block(text: str) -> str:
    """Markdown preformatted block (TensorBoard's text plugin renders markdown)."""
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def top5_markdown(ctx: RunContext) -> str:
    """Per image, a markdown table of the top-5 predictions."""
    parts = []
    for name, source, row in zip(ctx.inputs.names, ctx.inputs.sources, ctx.top_k(5), strict=True):
        lines = [f"**{name}** ({source})", "", "| rank | class | name | prob | logit |"]
        lines.append("|---:|---:|---|---:|---:|")
        for rank, p in enumerate(row, 1):
            cls = str(p["name"] or "-").replace("|", "\\|")
            lines.append(f"| {rank} | {p['class']} | {cls} | {p['prob']:.4f} | {p['logit']:.3f} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def torchinfo_table(ctx: RunContext) -> str | None:
    """The summary stage's torchinfo table, or a fresh one with its defaults; None if it fails."""
    res = ctx.results.get("summary")
    if res and res.get("table"):
        return str(res["table"])
    from pipeline.schema import SummaryConfig
    from stages.summary import collect as summary_collect

    try:
        with modes_restored(ctx.model):  # torchinfo restores only the root's mode
            return str(summary_collect(ctx, SummaryConfig())["table"])
    except Exception as exc:  # noqa: BLE001 - a missing table never fails the stage
        ctx.warn(f"TensorBoard: torchinfo table not logged ({type(exc).__name__}: {exc})")
        return None


def resolved_config_markdown(run_dir: Path) -> str | None:
    """The run's resolved config as YAML (from manifest.json, else .hydra/config.yaml)."""
    from omegaconf import OmegaConf

    manifest = run_dir / "manifest.json"
    overrides: list[str] = []
    yaml_text = None
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = {}
        if isinstance(doc.get("config"), dict):
            yaml_text = OmegaConf.to_yaml(OmegaConf.create(doc["config"]))
            overrides = [str(o) for o in doc.get("overrides") or []]
    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    if yaml_text is None and hydra_cfg.is_file():
        yaml_text = hydra_cfg.read_text(encoding="utf-8")
    if yaml_text is None:
        return None
    head = "Overrides: " + (" ".join(f"`{o}`" for o in overrides) if overrides else "(none)")
    return head + "\n\n" + _code_block(yaml_text)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def hparams_row(ctx: RunContext) -> tuple[dict[str, str], dict[str, float]]:
    """One HParams row: model, layer, class, method -> mean top-1 prob, target score, CAM metrics.

    Values are strings so every job of a sweep has the same column types. Without a cam stage in
    this run, layer and method are ``none`` and class is the top-1 prediction.
    """
    top1 = [row[0] for row in ctx.top_k(1)]
    classes = list(dict.fromkeys(class_label(p["class"], p["name"]) for p in top1))
    hp = {"model": ctx.model_name, "layer": "none", "class": ",".join(classes), "method": "none"}
    metrics: dict[str, float] = {}
    m = _mean([float(p["prob"]) for p in top1])
    if m is not None:
        metrics["hparams/top1_prob"] = m
    cam = ctx.results.get("cam")
    if cam:
        maps = [mp for img in cam.get("images", []) for mp in img.get("maps", [])]
        layers = [str(x) for x in cam.get("layers") or []] or [str(mp.get("layer")) for mp in maps]
        hp["layer"] = "+".join(dict.fromkeys(layers)) or "none"
        hp["method"] = str(cam.get("method_key") or cam.get("method") or "none")
        targets = [class_label(mp.get("target"), mp.get("target_name")) for mp in maps]
        hp["class"] = ",".join(dict.fromkeys(targets)) or hp["class"]
        score = _mean([_num(mp.get("score")) for mp in maps])
        if score is not None:
            metrics["hparams/score"] = score
        names = list(dict.fromkeys(k for mp in maps for k in (mp.get("metrics") or {})))
        for k in names:
            v = _mean([_num((mp.get("metrics") or {}).get(k)) for mp in maps])
            if v is not None:
                metrics[f"hparams/{safe_name(k)}"] = v
    return hp, metrics


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- render


def open_writer(backend: str, logdir: Path) -> Any:
    """The backend's SummaryWriter on ``logdir`` (imported here: TensorBoard is heavy)."""
    if backend == "torch":
        from torch.utils.tensorboard import SummaryWriter as TorchWriter

        return TorchWriter(log_dir=str(logdir), filename_suffix=SUFFIX)
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir=str(logdir), filename_suffix=SUFFIX)


def _add_graph_def(backend: str, writer: Any, graph_def: bytes) -> None:
    """The graph event, as ``add_graph`` writes it, without the per-library placeholder profile."""
    if backend == "torch":
        from tensorboard.compat.proto.event_pb2 import Event
    else:
        from tensorboardX.proto.event_pb2 import Event

    writer.file_writer.add_event(Event(graph_def=graph_def))


def _add_hparams(backend: str, writer: Any, hp: dict[str, str], metrics: dict[str, float]) -> None:
    """The three hparams summaries through ``writer`` itself: no timestamped sub-run."""
    if backend == "torch":
        from torch.utils.tensorboard.summary import hparams
    else:
        from tensorboardX.summary import hparams

    for summary in hparams(hp, metrics):  # experiment, session start, session end
        writer.file_writer.add_summary(summary, STEP)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, STEP)


def histogram_raw(values: Any, bins: int = HIST_BINS) -> dict[str, Any] | None:
    """``add_histogram_raw``'s arguments for the finite values of a tensor or array; None if none.

    Computed with torch on the tensor's own device in O(n): uniform buckets (``torch.histc``)
    between min and max, exact num, sum and sum of squares. ``add_histogram`` would first copy
    the values to a float64 numpy array (800 MB for VGG16's 102M-weight classifier layer) and
    take seconds per large layer. As in the libraries' own histograms, an empty bucket left of
    the first edge keeps the minimum visible (TensorBoard stores right edges only).
    """
    import torch

    x = torch.as_tensor(values).detach().flatten()
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()
    if x.numel() == 0:
        return None
    lo, hi = (float(v) for v in torch.aminmax(x))  # NaN and inf show up here: one cheap pass
    if not (math.isfinite(lo) and math.isfinite(hi)):
        x = x[torch.isfinite(x)]
        if x.numel() == 0:
            return None
        lo, hi = (float(v) for v in torch.aminmax(x))
    n = x.numel()
    if hi > lo:
        counts = torch.histc(x.float(), bins=bins, min=lo, max=hi).double().cpu().tolist()
        limits = torch.linspace(lo, hi, bins + 1, dtype=torch.float64).tolist()
    else:  # a constant tensor (fresh BatchNorm weights and biases): one narrow bucket around it
        half = max(abs(lo) * 1e-3, 1e-6)
        counts, limits = [float(n)], [lo - half, hi + half]
    return {
        "min": lo,
        "max": hi,
        "num": n,
        "sum": float(x.sum(dtype=torch.float64)),
        "sum_squares": float(torch.linalg.vector_norm(x, dtype=torch.float64)) ** 2,
        "bucket_limits": limits,
        "bucket_counts": [0.0, *counts],
    }


def render(ctx: RunContext, settings: TensorboardConfig, data: Collected) -> dict[str, Any]:
    """Write everything through one writer (closed in ``finally``); return tags and files."""
    backend = backend_name(settings)
    out = ctx.stage_dir(LOGDIR)
    for stale in sorted(out.glob(f"events.out.tfevents.*{SUFFIX}")):
        log.info("TensorBoard: removing %s from an earlier attempt in this folder", stale.name)
        stale.unlink()
    tags: dict[str, list[str]] = {"images": [], "histograms": [], "scalars": [], "text": []}
    writer = open_writer(backend, out)
    try:
        if data.graph is not None:
            _add_graph_def(backend, writer, data.graph)
        for tag, array, fmt in data.images:
            if fmt.startswith("N"):
                writer.add_images(tag, array, STEP, dataformats=fmt)
            else:
                writer.add_image(tag, array, STEP, dataformats=fmt)
            tags["images"].append(tag)
        for tag, values in data.histograms:
            hist = histogram_raw(values)
            if hist is None:
                ctx.warn(f"TensorBoard: histogram {tag} has no finite values; not logged")
                continue
            writer.add_histogram_raw(tag, global_step=STEP, **hist)
            tags["histograms"].append(tag)
        for tag, value in data.scalars:
            writer.add_scalar(tag, value, STEP)
            tags["scalars"].append(tag)
        for tag, text in data.texts:
            writer.add_text(tag, text, STEP)
            tags["text"].append(tag + TEXT_SUFFIX)
        if data.hparams is not None:
            _add_hparams(backend, writer, *data.hparams)
            tags["scalars"].extend(data.hparams[1])
    finally:
        writer.close()
    files = sorted(
        p.relative_to(ctx.output_dir).as_posix() for p in out.glob(f"*tfevents*{SUFFIX}")
    )
    log.info(
        "TensorBoard (%s): graph %s, %d images, %d histograms, %d scalars, %d texts -> %s; "
        "view: tensorboard --logdir %s",
        backend, "yes" if data.graph is not None else "no", len(tags["images"]),
        len(tags["histograms"]), len(tags["scalars"]), len(tags["text"]), out, ctx.output_dir,
    )
    return {
        "backend": backend,
        "logdir": LOGDIR,
        "event_files": files,
        "graph": data.graph is not None,
        "graph_error": data.graph_error,
        "tags": tags,
        "hparams": (
            {"hparams": data.hparams[0], "metrics": data.hparams[1]} if data.hparams else None
        ),
        "activations_from": data.activations_from,
        "skipped": data.skipped,
        "view": f"tensorboard --logdir {ctx.output_dir}",
    }
