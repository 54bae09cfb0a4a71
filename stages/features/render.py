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
    from vizpipe.pipeline.files import finite, write_json

    layers: dict[str, Any] = {}
    pictures: list[Picture] = []
    scalars: list[Scalar] = []
    histograms: list[Histogram] = []
    rows: list[list[Any]] = []
    n = len(ctx.inputs)
    for acc in accs:
        t = acc.target
        count = max(acc.count, 1)
        mean = acc.sums / count if acc.sums is not None else np.zeros(0)
        zero = acc.zeros / count if acc.zeros is not None else np.zeros(0)
        npy = f"features/{t.stem}.npy" if settings.save_npy else None
        if npy and settings.dtype.value == "float16" and acc.finite_peak > FLOAT16_MAX:
            ctx.warn(
                f"features: {t.label} has values beyond float16's range (|x| up to {acc.finite_peak:.3g}); "
                f"they are saved as inf in {npy}"
            )
        layer_mean = finite(acc.total / (count * acc.channels)) if acc.channels else None
        stats = {
            "mean": layer_mean,
            "max": finite(acc.peak),
            "zero_fraction": float(zero.mean()) if zero.size else 0.0,
        }
        key = t.layer if t.kind == "output" else f"{t.layer} (input)"
        layers[key] = {
            "capture": t.kind,
            "shape": [n, *t.shape[1:]],
            "layout": t.layout.kind,
            "reshape": t.layout.describe(),
            "maps": [n, t.layout.channels, t.layout.h, t.layout.w],
            "npy": npy,
            "grids": dict(acc.grids),
            "channels_drawn": [int(c) for c in acc.drawn or []],
            **stats,
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
        rows.append(
            [
                t.label,
                "×".join(map(str, [n, *t.shape[1:]])),
                t.layout.describe(),
                len(acc.drawn or []),
                stats["mean"],
                stats["max"],
                f"{stats['zero_fraction'] * 100:.1f}%",
                npy,
            ]
        )
        tag_layer = t.stem
        for image, path in acc.grids.items():
            pictures.append(
                Picture(
                    path,
                    f"{t.label}  image {image}",
                    tag=f"features/{tag_layer}/{image}",
                    preview=not pictures,
                )
            )
        for s in ("mean", "max", "zero_fraction"):
            scalars.append(Scalar(f"activations/{tag_layer}/{s}", stats[s]))
        means = [v for v in (finite(m) for m in mean) if v is not None]
        if len(means) > 1:
            histograms.append(Histogram(f"activations/{tag_layer}/channel_mean", means))
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
    return StageResult(
        stage="features",
        summary=(
            f"{len(accs)} layer(s) × {n} image(s); colormap {settings.cmap}, normalised per "
            f"{settings.normalize.value}, channels: {settings.select.value}"
        ),
        tables=[
            Table(
                "Layers",
                ["Layer", "Shape", "Reshape", "Channels drawn", "Mean", "Max", "Zeros", "Activations"],
                rows,
                links=[7],
                code=[0],
            )
        ],
        pictures=pictures,
        scalars=scalars,
        histograms=histograms,
        files=[p for p in [*(r[7] for r in rows), "features/stats.json"] if p],
        data=doc,
    )
