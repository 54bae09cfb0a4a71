"""Feature stage: what chosen layers output on the real input, as grids and raw arrays (seed §2.2).

The seed registers a ``Hook`` on ``model.features[idx]``, keeps every output (and input:
``features_in_hook``) and draws the first 100 channels of image 0 with one
``plt.subplot(10, 10, k + 1)`` each. Here forward hooks (``pipeline.hooks.capture``) on the layers
named by ``features.layers`` copy each layer's OWN output (``features.capture``: its input too)
inside the hook, before a following ``ReLU(inplace=True)`` can overwrite it. The data set is
streamed batch by batch (``input.batch_size``): each batch runs one no-grad forward pass, its
captures are drawn and appended to the ``.npy`` files at once, then dropped. A layer called
several times per forward is captured at its first call (with a warning).

Layouts (``pipeline.layers``): CNN outputs are N×C×H×W; channels-last outputs (Swin,
N×H×W×C) have their channels moved first; transformer tokens (ViT, N×(1+H·W)×C) lose their class
token and are laid on the patch grid. The ``.npy`` keeps the layer's own output as it is; grids
and statistics use the maps; the report says which reshape was used.

Per captured tensor: ``features/<layer>.npy`` (all images, ``features.dtype``), one grid per
image ``features/<layer>__<image>.png`` and an entry in ``features/stats.json``; inputs are
named ``<layer>_input``.

Which channels (``features.select``), the same for every image:

* ``first``: channels 0 .. max_channels - 1;
* ``top``: the ``max_channels`` channels with the highest mean activation over the first batch,
  most active first (``channels_drawn`` gives the order).

Normalisation before the colormap (``features.normalize``), per image: ``channel`` (each map
min..max on its own, as the seed's ``imshow``; a constant map is drawn as 0) or ``layer`` (one
min..max over all channels of the layer for that image, so tiles compare). The value ``v`` gets
colour ``cmap(v)`` exactly as matplotlib would; maps are upscaled (nearest) to at least
``features.tile_px`` pixels, ``ceil(sqrt(k))`` per row (10 x 10 for 100, as the seed).
Statistics per channel over the whole data set: mean, max and the fraction of exact zeros.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, List

import numpy as np

from pipeline.errors import ConfigError
from pipeline.stage import Histogram, Picture, Scalar, Stage, StageResult, Table

if TYPE_CHECKING:
    import torch

    from pipeline.context import RunContext
    from pipeline.layers import Layout

log = logging.getLogger(__name__)

RULE = "feature maps need a layer whose output is spatial (N×C×H×W, channels-last, or ViT tokens)"
FLOAT16_MAX = 65504.0


class ChannelSelect(str, Enum):
    """Which feature-map channels are drawn."""

    first = "first"  # channels 0..max_channels-1
    top = "top"  # the most active channels (highest mean activation of the first batch)


class FeatureNorm(str, Enum):
    """How feature maps are normalised to [0, 1] before the colormap."""

    channel = "channel"  # each channel min..max on its own
    layer = "layer"  # one min..max over the whole layer (per image)


class NpyDtype(str, Enum):
    """dtype of saved activation arrays."""

    float32 = "float32"
    float16 = "float16"


class Capture(str, Enum):
    """What a hooked layer gives: its output, its input, or both (the seed's hook keeps both)."""

    output = "output"
    input = "input"
    both = "both"


@dataclass
class FeaturesConfig:
    """``features.*``: feature maps captured with forward hooks (seed §2.2)."""

    # Layer names, globs, type:X, all, or blocks (model.blocks, else found from the model).
    layers: List[str] = field(default_factory=lambda: ["blocks"])
    # output | input | both: what each layer's hook captures.
    capture: Capture = Capture.output
    # Channels drawn per grid (the seed draws 100); >= 1.
    max_channels: int = 100
    # first | top (highest mean activation over the first batch, most active first)
    select: ChannelSelect = ChannelSelect.first
    # Matplotlib colormap name (drawn with min(cmap.N, 254) levels).
    cmap: str = "viridis"
    # channel = each channel min..max on its own | layer = one min..max over all channels (per image).
    normalize: FeatureNorm = FeatureNorm.channel
    # dtype of features/<layer>.npy: float32 | float16
    dtype: NpyDtype = NpyDtype.float32
    # Write raw activations as .npy beside the pictures (all images of the data set).
    save_npy: bool = True
    # Minimum edge of one drawn channel tile, in pixels (small maps are upscaled, nearest); >= 1.
    tile_px: int = 56


@dataclass
class Target:
    """One captured tensor: a layer's output or input, its layout and its file stem."""

    layer: str
    kind: str  # output | input
    shape: tuple[int, ...]  # as the probe saw it (first batch)
    layout: Layout
    stem: str = ""

    @property
    def label(self) -> str:
        """``layer1`` or ``layer1 (input)``."""
        return self.layer if self.kind == "output" else f"{self.layer} (input)"


class FeaturesStage(Stage):
    """Feature-map grids, raw activations and per-channel statistics of chosen layers."""

    name = "features"
    title = "Feature maps"
    config = FeaturesConfig
    order = 30

    def check(self, settings: FeaturesConfig, cfg: Any) -> None:
        """Limits, the colormap and a non-empty layer list."""
        from pipeline.render import check_cmap

        for key in ("max_channels", "tile_px"):
            value = getattr(settings, key)
            if int(value) < 1:
                raise ConfigError(f"features.{key} must be >= 1, got {value}")
        check_cmap(settings.cmap, "features.cmap")
        if not settings.layers:
            raise ConfigError("features.layers is empty; give names, globs, type:X, all or blocks")

    def validate(self, ctx: RunContext, settings: FeaturesConfig) -> None:
        """Resolve ``features.layers`` to layers with a spatial output (or input)."""
        plan(ctx, settings)

    def run(self, ctx: RunContext, settings: FeaturesConfig) -> StageResult:
        """Stream the data set; each batch's captures are drawn, saved and dropped."""
        return render(ctx, settings, collect(ctx, settings, plan(ctx, settings)))


def plan(ctx: RunContext, settings: FeaturesConfig) -> list[Target]:
    """The tensors to capture, in order, with their layouts (uses the probe; no heavy work)."""
    from pipeline.layers import infer_layout, resolve_layers, spatial_layouts
    from pipeline.names import unique_slugs

    probe = ctx.probe()
    kinds = ["output", "input"] if settings.capture.value == "both" else [settings.capture.value]
    outputs = spatial_layouts(ctx.model, probe, once=False, min_cells=1)
    inputs: dict[str, Layout] = {}
    for name, shape in probe.in_shapes.items():
        layout = infer_layout(shape, probe.input_hw)
        if probe.calls.get(name, 0) >= 1 and layout is not None:
            inputs[name] = layout
    usable = outputs if kinds == ["output"] else (inputs if kinds == ["input"] else {**inputs, **outputs})
    specs = [str(s).strip() for s in settings.layers]
    try:
        names = resolve_layers(
            ctx.model,
            specs,
            blocks=ctx.blocks() if "blocks" in specs else None,
            qualifies=lambda n, m: n in usable,
            rule=RULE,
            model_name=ctx.model_name,
        )
    except ConfigError as exc:
        raise ConfigError(f"features.layers: {exc}") from exc
    targets = []
    for name in names:
        for kind in kinds:
            table = outputs if kind == "output" else inputs
            if name in table:
                shape = probe.shapes[name] if kind == "output" else probe.in_shapes[name]
                targets.append(Target(name, kind, tuple(shape), table[name]))
    keys = [t.layer if t.kind == "output" else f"{t.layer} input" for t in targets]
    for t, stem in zip(targets, unique_slugs(keys), strict=True):
        t.stem = stem
    for t in targets:
        if probe.calls.get(t.layer, 0) > 1:
            ctx.warn(
                f"features: {t.layer} runs {probe.calls[t.layer]} times per forward; "
                "its first call is captured"
            )
    return targets


# --------------------------------------------------------------------------- collect (streamed)


@dataclass
class Accumulator:
    """Running per-channel statistics of one target over the data set, and its .npy writer."""

    target: Target
    channels: int
    drawn: list[int] | None = None
    sums: np.ndarray | None = None  # (C,) float64
    maxs: np.ndarray | None = None  # (C,) float64
    zeros: np.ndarray | None = None  # (C,) int64
    count: int = 0  # values per channel so far
    total: float = 0.0
    peak: float = -np.inf
    finite_peak: float = 0.0  # largest |finite value| (float16 range check)
    npy: BinaryIO | None = None
    grids: dict[str, str] = field(default_factory=dict)

    def add(self, maps: np.ndarray) -> None:
        """(B, C, h, w) maps of one batch."""
        with np.errstate(invalid="ignore", over="ignore"):
            s = maps.sum(axis=(0, 2, 3), dtype=np.float64)
            m = maps.max(axis=(0, 2, 3)).astype(np.float64)
            self.total += float(maps.sum(dtype=np.float64))
            top = float(maps.max())
        self.peak = top if np.isnan(top) or np.isnan(self.peak) else max(self.peak, top)  # NaN sticks
        z = (maps == 0).sum(axis=(0, 2, 3))
        self.sums = s if self.sums is None else self.sums + s
        self.maxs = m if self.maxs is None else np.maximum(self.maxs, m)
        self.zeros = z if self.zeros is None else self.zeros + z
        self.count += maps.shape[0] * maps.shape[2] * maps.shape[3]
        finite = np.abs(maps[np.isfinite(maps)])
        if finite.size:
            self.finite_peak = max(self.finite_peak, float(finite.max()))


def _open_npy(path: Path, shape: tuple[int, ...], dtype: str) -> BinaryIO:
    """An .npy file with its header written; the data is appended batch by batch (C order)."""
    f = open(path, "wb")  # noqa: SIM115 - closed by collect's finally
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)
    return f


def collect(ctx: RunContext, settings: FeaturesConfig, targets: list[Target]) -> list[Accumulator]:
    """Stream every batch through the model with the hooks on; draw and save as captures arrive."""
    import torch

    from pipeline.hooks import capture, preserved
    from pipeline.layers import to_nchw
    from pipeline.render import colormap_levels, colormap_lut

    ctx.stage_dir("features")
    lut, levels = colormap_lut(settings.cmap), colormap_levels(settings.cmap)
    n = len(ctx.inputs)
    accs = {(t.layer, t.kind): Accumulator(t, t.layout.channels) for t in targets}
    wanted = list(dict.fromkeys(t.layer for t in targets))
    what = settings.capture.value
    pending: dict[tuple[str, str], torch.Tensor] = {}

    def sink(name: str, tensor: torch.Tensor, kind: str = "output") -> None:
        if (name, kind) in accs and (name, kind) not in pending:  # a shared module: its first call
            pending[(name, kind)] = tensor

    try:
        if settings.save_npy:
            for acc in accs.values():
                t = acc.target
                acc.npy = _open_npy(
                    ctx.claim(f"features/{t.stem}.npy"), (n, *t.shape[1:]), settings.dtype.value
                )
        # every_call: each batch's forward pass reports again (pending is cleared per batch)
        with (
            preserved(ctx.model),
            torch.no_grad(),
            capture(ctx.model, wanted, sink, what=what, every_call=True),
        ):
            for batch in ctx.inputs.batches("features"):
                pending.clear()
                ctx.model(batch.tensor)
                for key, acc in accs.items():
                    raw = pending.get(key)
                    if raw is None:
                        raise RuntimeError(
                            f"features: {acc.target.label} produced no tensor in the forward pass"
                        )
                    if acc.npy is not None:
                        acc.npy.write(
                            np.ascontiguousarray(raw.numpy().astype(settings.dtype.value)).tobytes()
                        )
                    maps = to_nchw(raw, acc.target.layout).contiguous().numpy()  # (B, C, h, w)
                    if acc.drawn is None:
                        acc.drawn = choose_channels(maps, settings)
                    acc.add(maps)
                    draw_batch(ctx, acc, maps, batch.names, settings, lut, levels)
                pending.clear()
    finally:
        for acc in accs.values():
            if acc.npy is not None:
                acc.npy.close()
    return list(accs.values())


def choose_channels(maps: np.ndarray, settings: FeaturesConfig) -> list[int]:
    """The channels drawn, in tile order (``select``), from the first batch's (B, C, h, w) maps."""
    k = min(int(settings.max_channels), maps.shape[1])
    if settings.select.value != "top":
        return list(range(k))
    with np.errstate(invalid="ignore", over="ignore"):
        mean = maps.mean(axis=(0, 2, 3), dtype=np.float64)
    score = np.where(np.isnan(mean), -np.inf, mean)
    return np.argsort(-score, kind="stable")[:k].tolist()


def feature_grid(
    maps: np.ndarray,
    levels: int,
    *,
    normalize: str = "channel",
    layer_range: tuple[float, float] | None = None,
    tile_px: int = 56,
) -> np.ndarray:
    """Draw (k, H, W) maps as one (H', W') palette-index grid, ``ceil(sqrt(k))`` tiles per row.

    ``normalize="channel"``: each map min..max on its own; ``"layer"``: ``layer_range`` (the
    min and max over the whole layer for this image; default: over ``maps``). ``levels`` is
    ``pipeline.render.colormap_levels(cmap)``; write it with ``save_png(path, grid, lut)``.
    """
    from pipeline.render import (
        color_index,
        finite_range,
        grid_columns,
        minmax_scale,
        range_scale,
        tile_grid,
        upscale_factor,
    )

    k, h, w = maps.shape
    if normalize == "layer":
        lo, hi = layer_range if layer_range is not None else finite_range(maps)
        x01 = range_scale(maps, lo, hi)
    else:
        x01 = minmax_scale(maps, axes=(1, 2))
    tiles = color_index(x01, levels)  # (k, H, W) palette indices
    return tile_grid(tiles, grid_columns(k), factor=upscale_factor(h, w, tile_px))


def draw_batch(
    ctx: RunContext,
    acc: Accumulator,
    maps: np.ndarray,
    names: list[str],
    settings: FeaturesConfig,
    lut: np.ndarray,
    levels: int,
) -> None:
    """One grid per image of the batch: ``features/<stem>__<image>.png``."""
    from pipeline.render import finite_range, save_png

    normalize = settings.normalize.value
    for i, image in enumerate(names):
        layer_range = finite_range(maps[i]) if normalize == "layer" else None
        path = f"features/{acc.target.stem}__{image}.png"
        grid = feature_grid(
            maps[i, acc.drawn], levels, normalize=normalize, layer_range=layer_range, tile_px=settings.tile_px
        )
        save_png(ctx.claim(path), grid, lut)
        acc.grids[image] = path


# --------------------------------------------------------------------------- render


def render(ctx: RunContext, settings: FeaturesConfig, accs: list[Accumulator]) -> StageResult:
    """Write ``features/stats.json``; return the record (tables, pictures, scalars, histograms)."""
    from pipeline.files import finite, write_json

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
