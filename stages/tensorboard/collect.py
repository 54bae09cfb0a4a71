"""Gather everything the writer will write, before it is opened (no writer involved here)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.names import slug, unique_slugs

if TYPE_CHECKING:
    import numpy as np
    from vizpipe.pipeline.context import RunContext
    from vizpipe.stages.tensorboard import TensorboardConfig

log = logging.getLogger(__name__)

STATS = ("mean", "max", "zero_fraction")
TAG_CHARS = "._/-"


@dataclass
class Collected:
    """Everything the writer will write."""

    images: list[tuple[str, Any, str, int]] = field(default_factory=list)  # (tag, array, dataformats, step)
    histograms: list[tuple[str, Any, int]] = field(default_factory=list)  # (tag, tensor or array, step)
    scalars: list[tuple[str, float, int]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (tag, markdown)
    hparams: tuple[dict[str, str], dict[str, float]] | None = None
    graph: bytes | None = None  # serialized GraphDef
    graph_error: str | None = None  # why there is no graph (the model could not be traced)
    skipped: dict[str, str] = field(default_factory=dict)  # what was not logged, and why
    activations_from: str | None = None


def safe_tags(tags: list[str]) -> list[str]:
    """Tags with every part file-name safe (no spaces), made unique (a clash gets a short hash)."""
    parts = ["/".join(slug(p) for p in t.split("/")) for t in tags]
    return unique_slugs(parts, ids=tags, keep=TAG_CHARS, max_len=300)


def collect(ctx: RunContext, settings: TensorboardConfig) -> Collected:
    """Gather images, histograms, scalars, texts and the hparams row."""
    data = Collected()
    if settings.graph:
        data.graph, data.graph_error = trace_graph(ctx)
    if settings.images:
        _input_images(ctx, data)
    if settings.pictures:
        _pictures(ctx, data)
    if settings.histograms:
        _parameter_histograms(ctx, data)
    if settings.activations:
        _activations(ctx, data)
    if settings.text:
        _texts(ctx, data)
    if settings.hparams:
        data.hparams = hparams_row(ctx)
    return data


def load_png(ctx: RunContext, rel: str) -> np.ndarray | None:
    """A picture written earlier in this run as (H, W, 3) uint8, or None with a warning."""
    import numpy as np
    from PIL import Image

    path = ctx.output_dir / rel
    if not path.is_file():
        ctx.warn(f"TensorBoard: picture {rel} is missing from {ctx.output_dir}; not logged")
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)  # (H, W, 3)


def _input_images(ctx: RunContext, data: Collected) -> None:
    """The first batch, un-normalised: add_images, and one torchvision make_grid image."""
    import torch
    from torchvision.utils import make_grid

    rgb = ctx.inputs.first().rgb  # (N, H, W, 3) float32 in [0, 1]
    data.images.append(("input/batch", rgb, "NHWC", 0))
    batch = torch.from_numpy(rgb).permute(0, 3, 1, 2)  # (N, 3, H, W)
    grid = make_grid(batch, nrow=min(8, batch.shape[0]), padding=2, pad_value=1.0)  # (3, H', W')
    data.images.append(("input/grid", grid.numpy(), "CHW", 0))


def _pictures(ctx: RunContext, data: Collected) -> None:
    """Every tagged picture of the earlier stages' records."""
    pictures = [p for r in ctx.results.values() for p in r.pictures if p.tag]
    if not pictures:
        data.skipped["pictures"] = "no earlier stage of this run made a tagged picture"
        return
    for p, tag in zip(pictures, safe_tags([p.tag for p in pictures]), strict=True):
        img = load_png(ctx, p.path)
        if img is not None:
            data.images.append((tag, img, "HWC", p.step))


def _parameter_histograms(ctx: RunContext, data: Collected) -> None:
    """One histogram per parameter: weights/<module>, biases/<module>, else params/<name>."""
    named = list(ctx.model.named_parameters())
    tags = []
    for name, _ in named:
        module, _, pname = name.rpartition(".")
        if module and pname in ("weight", "bias"):
            tags.append(f"{'weights' if pname == 'weight' else 'biases'}/{module}")
        else:
            tags.append(f"params/{name}")
    for (_, p), tag in zip(named, safe_tags(tags), strict=True):
        data.histograms.append((tag, p.detach(), 0))


def _activations(ctx: RunContext, data: Collected) -> None:
    """The earlier records' scalars and histograms; without activation scalars, the blocks'."""
    scalars = [s for r in ctx.results.values() for s in r.scalars if s.value is not None]
    histograms = [h for r in ctx.results.values() for h in r.histograms if len(h.values) > 1]
    if not any(s.name.startswith("activations/") for s in scalars):
        stats = capture_block_stats(ctx)
        data.activations_from = "tensorboard"
        log.debug("TensorBoard: no stage recorded activations; statistics of blocks %s", list(stats))
        for layer, values in stats.items():
            for s in STATS:
                if values.get(s) is not None:
                    scalars.append(_scalar(f"activations/{layer}/{s}", values[s]))
            if len(values.get("channel_mean") or []) > 1:
                histograms.append(_histogram(f"activations/{layer}/channel_mean", values["channel_mean"]))
    else:
        data.activations_from = "records"
    for s, tag in zip(scalars, safe_tags([s.name for s in scalars]), strict=True):
        data.scalars.append((tag, float(s.value), s.step))
    for h, tag in zip(histograms, safe_tags([h.name for h in histograms]), strict=True):
        data.histograms.append((tag, h.values, h.step))


def _scalar(name: str, value: float) -> Any:
    from vizpipe.pipeline.stage import Scalar

    return Scalar(name, value)


def _histogram(name: str, values: list[float]) -> Any:
    from vizpipe.pipeline.stage import Histogram

    return Histogram(name, values)


def capture_block_stats(ctx: RunContext) -> dict[str, dict[str, Any]]:
    """Activation statistics of the model's blocks from one no-grad pass over the first batch.

    Mean, max and the fraction of exact zeros, plus each channel's mean; channels-last and token
    outputs are laid out as maps first (``vizpipe.pipeline.layers``), so statistics are per channel.
    """
    import torch
    from vizpipe.pipeline.hooks import capture, preserved
    from vizpipe.pipeline.layers import spatial_layouts, to_nchw

    layouts = spatial_layouts(ctx.model, ctx.probe())
    names = [n for n in ctx.blocks() if n in layouts]
    stats: dict[str, dict[str, Any]] = {}

    def sink(name: str, t: torch.Tensor, kind: str) -> None:
        x = to_nchw(t, layouts[name]).float()  # (N, C, h, w)
        stats[name] = {
            "mean": float(x.mean()),
            "max": float(x.max()),
            "zero_fraction": float((x == 0).float().mean()),
            "channel_mean": x.transpose(0, 1).reshape(x.shape[1], -1).mean(1).tolist(),
        }

    with preserved(ctx.model), torch.no_grad(), capture(ctx.model, names, sink):
        ctx.model(ctx.inputs.first().tensor)
    return {n: stats[n] for n in names if n in stats}


def trace_graph(ctx: RunContext) -> tuple[bytes | None, str | None]:
    """The model's GraphDef (serialized) traced on the first batch, or (None, error) with a warning.

    Uses ``torch.utils.tensorboard._pytorch_graph.graph``, the function both libraries'
    ``add_graph`` call, but keeps only the GraphDef: each library also writes a placeholder
    run-metadata profile under its own tag, which would make the tags differ by backend. The
    tracer switches the whole model to eval and back; every module's own mode is restored
    (``preserved``). Tracing adds no hooks; its console noise goes to the debug log. A model that
    cannot be traced never fails the run.
    """
    import torch
    from vizpipe.pipeline.hooks import preserved
    from vizpipe.pipeline.tasks.wrappers import model_for_cam

    out = io.StringIO()
    try:
        from torch.utils.tensorboard._pytorch_graph import graph

        with (
            preserved(ctx.model),
            torch.no_grad(),
            contextlib.redirect_stdout(out),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # TracerWarnings about data-dependent Python values
            traced = model_for_cam(ctx.model, ctx.task)  # a segmentation model's dict output: its "out"
            graph_def, _placeholder_profile = graph(traced, ctx.inputs.first().tensor)
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
    texts = [t for r in ctx.results.values() for t in r.texts if t.tag]
    for t, tag in zip(texts, safe_tags([t.tag for t in texts]), strict=True):
        data.texts.append((tag, _code_block(t.body) if t.pre else t.body))
    config = resolved_config_markdown(ctx.output_dir)
    if config is None:
        data.skipped["config/resolved"] = "no manifest.json or .hydra/config.yaml in the run folder"
    else:
        data.texts.append(("config/resolved", config))


def _code_block(text: str) -> str:
    """Markdown preformatted block (TensorBoard's text plugin renders markdown)."""
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def top5_markdown(ctx: RunContext) -> str:
    """Per image of the first batch, a markdown table of the top-5 predictions."""
    batch = ctx.inputs.first()
    parts = []
    for name, source, row in zip(batch.names, batch.sources, ctx.top_k(5), strict=True):
        lines = [
            f"**{name}** ({source})",
            "",
            "| rank | class | name | prob | logit |",
            "|---:|---:|---|---:|---:|",
        ]
        for rank, p in enumerate(row, 1):
            cls = str(p["name"] or "-").replace("|", "\\|")
            prob = "–" if p["prob"] is None else f"{p['prob']:.4f}"
            logit = "–" if p["logit"] is None else f"{p['logit']:.3f}"
            lines.append(f"| {rank} | {p['class']} | {cls} | {prob} | {logit} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


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


def hparams_row(ctx: RunContext) -> tuple[dict[str, str], dict[str, float]]:
    """One HParams row: the model and every stage's ``params`` -> mean top-1 probability and the
    stages' key numbers (``hparams/<name>``). Values are strings so every job of a sweep has the
    same column types."""
    top1 = [row[0]["prob"] for row in ctx.top_k(1) if row]  # an embedding ranks no classes
    hp: dict[str, str] = {"model": ctx.model_name}
    metrics: dict[str, float] = {}
    finite = [p for p in top1 if p is not None]
    if finite:
        metrics["hparams/top1_prob"] = sum(finite) / len(finite)
    for result in ctx.results.values():
        hp.update({k: str(v) for k, v in result.params.items()})
        for s in result.key_scalars():
            if s.value is not None:
                metrics[f"hparams/{slug(s.name.replace('/', '_'))}"] = float(s.value)
    return hp, metrics
