"""Stream the data set through the model with the hooks on; save and draw as captures arrive.

Per batch, on the main thread: the forward pass, each target's ``.npy`` appended (one file per
target for the whole data set, in order), its running statistics. Each image's grid is made and
written by the background writer (``vizpipe.pipeline.writer``) while the next batch runs: drawn
there from the batch's maps (``draw.grid_png``), or, with ``device=cuda``, drawn for the whole
batch on the device (``draw.feature_grids``) and only encoded there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

if TYPE_CHECKING:
    import torch
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.writer import Writer
    from vizpipe.stages.features import FeaturesConfig, Target

log = logging.getLogger(__name__)


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
        if not np.isnan(self.peak):  # NaN sticks
            self.peak = top if np.isnan(top) else max(self.peak, top)
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
    """Stream every batch through the model with the hooks on; each batch's arrays are appended
    and its grids handed to the background writer (``vizpipe.pipeline.writer``) as captures arrive."""
    import torch
    from vizpipe.pipeline.hooks import capture, preserved
    from vizpipe.pipeline.layers import to_nchw
    from vizpipe.pipeline.render import colormap_levels, colormap_lut
    from vizpipe.stages.features.draw import feature_grids

    ctx.stage_dir("features")
    save = saved(settings)
    lut, levels = colormap_lut(settings.cmap), colormap_levels(settings.cmap)
    n = len(ctx.inputs)
    accs = {(t.layer, t.kind): Accumulator(t, t.layout.channels) for t in targets}
    wanted = list(dict.fromkeys(t.layer for t in targets))
    what = settings.capture.value
    pending: dict[tuple[str, str], torch.Tensor] = {}
    on_device = ctx.device.type != "cpu" and "grid" in save  # grids drawn where the model runs

    # capture() names the kind only when it hands both; otherwise every call is the one kind asked for
    def sink(name: str, tensor: torch.Tensor, kind: str = what) -> None:
        if (name, kind) in accs and (name, kind) not in pending:  # a shared module: its first call
            # a float32 copy on the tensor's device, made before a later in-place op can change it
            pending[(name, kind)] = tensor.detach().to(dtype=torch.float32, copy=True)

    try:
        if "npy" in save:
            for acc in accs.values():
                t = acc.target
                acc.npy = _open_npy(
                    ctx.claim(f"features/{t.stem}.npy"), (n, *t.shape[1:]), settings.dtype.value
                )
        # every_call: each batch's forward pass reports again (pending is cleared per batch)
        with (
            preserved(ctx.model),
            torch.no_grad(),
            capture(ctx.model, wanted, sink, what=what, copy=False, every_call=True),
            ctx.writer(limit=2 * ctx.inputs.batch_size * len(accs)) as writer,  # two batches' grids pending
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
                    host = raw.cpu()
                    if acc.npy is not None:
                        acc.npy.write(
                            np.ascontiguousarray(host.numpy().astype(settings.dtype.value)).tobytes()
                        )
                    maps = to_nchw(host, acc.target.layout).contiguous().numpy()  # (B, C, h, w)
                    if acc.drawn is None:
                        acc.drawn = choose_channels(maps, settings)
                    acc.add(maps)
                    if "grid" in save:
                        grids = None
                        if on_device:  # (B, H', W') palette indices, drawn on the device
                            nchw = to_nchw(raw, acc.target.layout)
                            grids = (
                                feature_grids(
                                    nchw, acc.drawn, levels, settings.normalize.value, int(settings.tile_px)
                                )
                                .cpu()
                                .numpy()
                            )
                        draw_batch(ctx, writer, acc, maps, grids, batch.names, settings, lut, levels)
                pending.clear()
    finally:
        for acc in accs.values():
            if acc.npy is not None:
                acc.npy.close()
    return list(accs.values())


def saved(settings: FeaturesConfig) -> set[str]:
    """The file kinds ``features.save`` names: npy, grid."""
    return {str(getattr(s, "value", s)) for s in settings.save}


def choose_channels(maps: np.ndarray, settings: FeaturesConfig) -> list[int]:
    """The channels drawn, in tile order (``select``), from the first batch's (B, C, h, w) maps."""
    k = min(int(settings.max_channels), maps.shape[1])
    if settings.select.value != "top":
        return list(range(k))
    with np.errstate(invalid="ignore", over="ignore"):
        mean = maps.mean(axis=(0, 2, 3), dtype=np.float64)
    score = np.where(np.isnan(mean), -np.inf, mean)
    return np.argsort(-score, kind="stable")[:k].tolist()


def draw_batch(
    ctx: RunContext,
    writer: Writer,
    acc: Accumulator,
    maps: np.ndarray,
    grids: np.ndarray | None,
    names: list[str],
    settings: FeaturesConfig,
    lut: np.ndarray,
    levels: int,
) -> None:
    """One grid per image of the batch, ``features/<stem>__<image>.png``, handed to the writer:
    drawn there from ``maps`` (B, C, h, w), or encoded from ``grids`` (B, H', W') drawn on the device."""
    from vizpipe.pipeline.render import encode_png
    from vizpipe.stages.features.draw import grid_png

    normalize, tile_px, level = (
        settings.normalize.value,
        int(settings.tile_px),
        int(settings.png_compress_level),
    )
    for i, image in enumerate(names):
        path = ctx.claim(f"features/{acc.target.stem}__{image}.png")
        if grids is not None:
            writer.submit(path, encode_png, grids[i], lut, level)
        else:  # maps[i] is this batch's own copy: nothing changes it afterwards
            writer.submit(path, grid_png, maps[i], acc.drawn, levels, normalize, tile_px, lut, level)
        acc.grids[image] = f"features/{acc.target.stem}__{image}.png"
