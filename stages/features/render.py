"""``features/stats.json`` and the stage's record, from what ``collect`` accumulated."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.stage import Histogram, Picture, Scalar, StageResult, Table

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.stages.features import FeaturesConfig
    from vizpipe.stages.features.collect import Accumulator

log = logging.getLogger(__name__)

FLOAT16_MAX = 65504.0


def render(ctx: RunContext, settings: FeaturesConfig, accs: list[Accumulator]) -> StageResult:
    """Write ``features/stats.json``; return the record (tables, pictures, scalars, histograms)."""
    from vizpipe.pipeline.files import write_json
    from vizpipe.stages.features.collect import saved

    n = len(ctx.inputs)
    record = StageResult(stage="features")
    layers: dict[str, Any] = {}
    rows: list[list[Any]] = []
    for acc in accs:
        t = acc.target
        npy = f"features/{t.stem}.npy" if "npy" in saved(settings) else None
        if npy and settings.dtype.value == "float16" and acc.finite_peak > FLOAT16_MAX:
            ctx.warn(
                f"features: {t.label} has values beyond float16's range (|x| up to {acc.finite_peak:.3g}); "
                f"they are saved as inf in {npy}"
            )
        entry = layers[t.label] = layer_entry(acc, n, npy)
        rows.append(layer_row(t.label, entry))
        add_layer_records(record, t.label, t.stem, entry)
        log.debug("Features <%s> %s: %d channel(s) drawn per image", t.label, t.shape, len(acc.drawn or []))
    doc = {
        "cmap": settings.cmap,
        "normalize": settings.normalize.value,
        "select": settings.select.value,
        "capture": settings.capture.value,
        "sources": dict(zip(ctx.inputs.names, ctx.inputs.sources, strict=True)),  # image name -> its file
        "layers": layers,
    }
    write_json(ctx.claim("features/stats.json"), doc)
    record.summary = (
        f"{len(accs)} layer(s) × {n} image(s); colormap {settings.cmap}, normalised per "
        f"{settings.normalize.value}, channels: {settings.select.value}"
    )
    columns = ["Layer", "Shape", "Reshape", "Channels drawn", "Mean", "Max", "Zeros", "Activations"]
    record.tables = [Table("Layers", columns, rows, links=[7], code=[0])]
    record.files = [p for p in [*(r[7] for r in rows), "features/stats.json"] if p]
    record.data = doc
    return record


def layer_entry(acc: Accumulator, n: int, npy: str | None) -> dict[str, Any]:
    """One target's part of ``stats.json``: what was captured and drawn, and its statistics over
    the ``n`` images (the layer's, then each channel's; non-finite numbers are null)."""
    from vizpipe.pipeline.files import finite

    t = acc.target
    count = max(acc.count, 1)
    mean = acc.sums / count if acc.sums is not None else np.zeros(0)
    zero = acc.zeros / count if acc.zeros is not None else np.zeros(0)
    return {
        "capture": t.kind,
        "shape": [n, *t.shape[1:]],
        "layout": t.layout.kind,
        "reshape": t.layout.describe(),
        "maps": [n, t.layout.channels, t.layout.h, t.layout.w],
        "npy": npy,
        "grids": dict(acc.grids),
        "channels_drawn": [int(c) for c in acc.drawn or []],
        "mean": finite(acc.total / (count * acc.channels)) if acc.channels else None,
        "max": finite(acc.peak),
        "zero_fraction": float(zero.mean()) if zero.size else 0.0,
        "channels": [
            {
                "index": c,
                "mean": finite(mean[c]),
                "max": finite(acc.maxs[c]),
                "zero_fraction": float(zero[c]),
            }
            for c in range(acc.channels)
        ],
    }


def layer_row(label: str, entry: dict[str, Any]) -> list[Any]:
    """The target's row of the report's "Layers" table."""
    return [
        label,
        "×".join(map(str, entry["shape"])),
        entry["reshape"],
        len(entry["channels_drawn"]),
        entry["mean"],
        entry["max"],
        f"{entry['zero_fraction'] * 100:.1f}%",
        entry["npy"],
    ]


def add_layer_records(record: StageResult, label: str, stem: str, entry: dict[str, Any]) -> None:
    """The target's pictures (one grid per image; the stage's first is its preview), activation
    scalars and, with more than one finite channel mean, their histogram."""
    for image, path in entry["grids"].items():
        tag = f"features/{stem}/{image}"
        record.pictures.append(Picture(path, f"{label}  image {image}", tag=tag, preview=not record.pictures))
    for s in ("mean", "max", "zero_fraction"):
        record.scalars.append(Scalar(f"activations/{stem}/{s}", entry[s]))
    means = [c["mean"] for c in entry["channels"] if c["mean"] is not None]
    if len(means) > 1:
        record.histograms.append(Histogram(f"activations/{stem}/channel_mean", means))
