"""Feature stage: what chosen layers output on the real input, as grids and raw arrays (seed §2.2).

The seed registers a ``Hook`` on ``model.features[idx]``, keeps every output (and input:
``features_in_hook``) and draws the first 100 channels of image 0 with one
``plt.subplot(10, 10, k + 1)`` each. Here forward hooks (``vizpipe.pipeline.hooks.capture``) on the layers
named by ``features.layers`` copy each layer's OWN output (``features.capture``: its input too)
inside the hook, before a following ``ReLU(inplace=True)`` can overwrite it. The data set is
streamed batch by batch (``input.batch_size``): each batch runs one no-grad forward pass, its
captures are appended to the ``.npy`` files at once and its grids drawn and written by the
background writer (``vizpipe.pipeline.writer``) while the next batch runs (``features.save``
chooses the files). A layer called
several times per forward is captured at its first call (with a warning).

Layouts (``vizpipe.pipeline.layers``): CNN outputs are N×C×H×W; channels-last outputs (Swin,
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
from typing import TYPE_CHECKING, List

from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.stage import SharedConfig, Stage, StageResult

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.layers import Layout

log = logging.getLogger(__name__)

RULE = "feature maps need a layer whose output is spatial (N×C×H×W, channels-last, or ViT tokens)"


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


class FeatureFile(str, Enum):
    """A file kind the stage writes (``features.save``)."""

    npy = "npy"  # features/<layer>.npy: the layer's whole output, every image
    grid = "grid"  # features/<layer>__<image>.png: one grid of the drawn channels per image


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
    # Files written: any of npy (raw activations, all images) and grid (one PNG per image and
    # layer); [] = stats.json and the record only.
    save: List[FeatureFile] = field(default_factory=lambda: [FeatureFile.npy, FeatureFile.grid])
    # zlib level of the grid PNGs: 0 (none, fastest) .. 9 (smallest).
    png_compress_level: int = 1
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
    default = True

    def __init__(self) -> None:
        self.targets: list[Target] | None = None

    def check_settings(self, settings: FeaturesConfig, shared: SharedConfig) -> None:
        """Limits, the colormap and a non-empty layer list."""
        from vizpipe.pipeline.render import check_cmap

        for key in ("max_channels", "tile_px"):
            value = getattr(settings, key)
            if int(value) < 1:
                raise ConfigError(f"features.{key} must be >= 1, got {value}")
        if not 0 <= int(settings.png_compress_level) <= 9:
            raise ConfigError(
                "features.png_compress_level must be 0 (none, fastest) .. 9 (smallest), "
                f"got {settings.png_compress_level}"
            )
        check_cmap(settings.cmap, "features.cmap")
        if not settings.layers:
            raise ConfigError("features.layers is empty; give names, globs, type:X, all or blocks")

    def check_model(self, ctx: RunContext, settings: FeaturesConfig) -> None:
        """Resolve ``features.layers`` to layers with a spatial output (or input)."""
        self.targets = plan(ctx, settings)

    def run(self, ctx: RunContext, settings: FeaturesConfig) -> StageResult:
        """Stream the data set; each batch's captures are drawn, saved and dropped."""
        from vizpipe.stages.features.collect import collect
        from vizpipe.stages.features.render import render

        targets = self.targets if self.targets is not None else plan(ctx, settings)
        return render(ctx, settings, collect(ctx, settings, targets))


def plan(ctx: RunContext, settings: FeaturesConfig) -> list[Target]:
    """The tensors to capture, in order, with their layouts (uses the probe; no heavy work)."""
    from vizpipe.pipeline.layers import infer_layout, resolve_layers, spatial_layouts
    from vizpipe.pipeline.names import unique_slugs

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
    for spec in specs:
        if probe.containers.get(spec) == "dict":
            raise ConfigError(f"features.layers: {dict_output_error(ctx.model, probe, spec)}")
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


def dict_output_error(model: object, probe: object, name: str) -> str:
    """Why a module returning a dict (an FPN's levels, a backbone's named outputs) draws no single map,
    and the modules inside it that make each map (the FPN's ``layer_blocks``, else its children)."""
    import re

    levels = list(probe.levels.get(name, {}))  # type: ignore[attr-defined]
    inside = [n for n in probe.shapes if n.startswith(f"{name}.") and probe.containers.get(n) != "dict"]  # type: ignore[attr-defined]
    fpn = sorted(n for n in inside if re.fullmatch(rf"{re.escape(name)}\.fpn\.layer_blocks\.\d+", n))
    shown = fpn or [n for n in inside if n.count(".") == name.count(".") + 1]
    what = f"a dict of {len(levels)} maps ({', '.join(levels)})" if levels else "a dict"
    return (
        f"layer '{name}' returns {what}, not one tensor; name the modules that make them, e.g. "
        f"{', '.join(shown[:6]) or '(none)'}" + (f" (or '{name}.fpn.layer_blocks.*')" if fpn else "")
    )
