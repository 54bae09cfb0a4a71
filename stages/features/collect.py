"""Stream the data set through the model with the hooks on; save and draw as captures arrive.

Per batch, on the main thread: the forward pass, each target's ``.npy`` appended (one file per
target for the whole data set, in order), its running statistics. Each image's grid is made and
written by the background writer (``vizpipe.pipeline.writer``) while the next batch runs: drawn
there from the batch's maps (``draw.grid_png``), or, with ``device=cuda``, drawn for the whole
batch on the device (``draw.feature_grids``) and only encoded there.

Each ``features/<layer>.npy`` is appended under a hidden partial name
(``vizpipe.pipeline.files.Partial``) and renamed when the pass ends, so no truncated ``.npy``
ever carries a final name. After each batch the stage takes every accumulator's state (running
statistics and the ``.npy`` length so far, flushed) and hands the writer a callback that records
it with the batch's grids in ``ctx.progress`` once those grids are written (``Writer.after``):
a batch is recorded only when all its files exist. A resumed run (``resume=``) puts the state of
the last recorded batch back, cuts each partial ``.npy`` to its recorded length and goes on with
the next batch, so its files are byte for byte those of an uninterrupted run. Batches are
appended in order, so only the finished batches from the first one on are kept (a gap is done
again from there).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.files import Partial

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
    npy: Partial | None = None
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

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs to go on from here (JSON: floats are exact)."""
        return {
            "drawn": self.drawn,
            "sums": None if self.sums is None else self.sums.tolist(),
            "maxs": None if self.maxs is None else self.maxs.tolist(),
            "zeros": None if self.zeros is None else self.zeros.tolist(),
            "count": self.count,
            "total": self.total,
            "peak": self.peak,
            "finite_peak": self.finite_peak,
            "grids": dict(self.grids),
            "npy_bytes": None if self.npy is None else self.npy.flush(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Put back what ``state`` recorded (the ``.npy`` is cut to its length by ``_open_npy``)."""
        self.drawn = state["drawn"]
        for key, dtype in (("sums", np.float64), ("maxs", np.float64), ("zeros", np.int64)):
            value = state[key]
            setattr(self, key, None if value is None else np.asarray(value, dtype=dtype))
        self.count, self.total = int(state["count"]), float(state["total"])
        self.peak, self.finite_peak = float(state["peak"]), float(state["finite_peak"])
        self.grids = dict(state["grids"])


def _open_npy(path: Path, shape: tuple[int, ...], dtype: str, keep: int | None = None) -> Partial:
    """An .npy file with its header written (or a partial one continued from ``keep`` bytes); the
    data is appended batch by batch (C order)."""
    if keep is not None:
        f = Partial(path, keep=keep)
        if f.size == keep:
            return f
        f.close()
    f = Partial(path)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)
    return f


def _resumed(ctx: RunContext, keys: list[str]) -> tuple[int, dict[str, Any] | None]:
    """(finished batches from the first on, the state recorded after the last of them)."""
    done = ctx.progress.done()
    n = 0
    while n < len(keys) and keys[n] in done:
        n += 1
    return n, (done[keys[n - 1]] if n else None)


def _open_arrays(
    ctx: RunContext,
    accs: dict[tuple[str, str], Accumulator],
    settings: FeaturesConfig,
    n: int,
    kept: int,
    state: dict[str, Any] | None,
    npy: bool,
) -> int:
    """Open each target's streamed ``.npy`` (cut back to a resumed run's length) and put a resumed
    run's per-target state back; the batches kept (0 when a partial file is gone or short)."""
    if npy:
        paths = {key: ctx.claim(f"features/{acc.target.stem}.npy") for key, acc in accs.items()}
        for key, acc in accs.items():
            keep = state[acc.target.stem]["npy_bytes"] if state is not None else None
            acc.npy = _open_npy(paths[key], (n, *acc.target.shape[1:]), settings.dtype.value, keep)
        if state is not None and any(a.npy.size != state[a.target.stem]["npy_bytes"] for a in accs.values()):
            kept, state = 0, None  # a partial file is gone or short: every file starts over
            for key, acc in accs.items():
                acc.npy.close()
                acc.npy = _open_npy(paths[key], (n, *acc.target.shape[1:]), settings.dtype.value)
    if state is not None:
        for acc in accs.values():
            acc.restore(state[acc.target.stem])
    return kept


def _take(
    ctx: RunContext,
    writer: Any,
    acc: Accumulator,
    raw: Any,
    names: list[str],
    settings: FeaturesConfig,
    palette: tuple[np.ndarray, int] | None,
    on_device: bool,
) -> None:
    """One target's capture of one batch: appended to its ``.npy`` and statistics, its grids handed
    to the background writer (drawn on the device when ``on_device``); ``palette``: the colormap's
    (lut, levels), None when no grid is saved."""
    from vizpipe.pipeline.layers import to_nchw
    from vizpipe.stages.features.draw import feature_grids

    if raw is None:
        raise RuntimeError(f"features: {acc.target.label} produced no tensor in the forward pass")
    host = raw.cpu()
    if acc.npy is not None:
        acc.npy.write(np.ascontiguousarray(host.numpy().astype(settings.dtype.value)).tobytes())
    maps = to_nchw(host, acc.target.layout).contiguous().numpy()  # (B, C, h, w)
    if acc.drawn is None:
        acc.drawn = choose_channels(maps, settings)
    acc.add(maps)
    if palette is None:
        return
    lut, levels = palette
    grids = None
    if on_device:  # (B, H', W') palette indices, drawn on the device
        nchw = to_nchw(raw, acc.target.layout)
        tile = int(settings.tile_px)
        grids = feature_grids(nchw, acc.drawn, levels, settings.normalize.value, tile).cpu().numpy()
    draw_batch(ctx, writer, acc, maps, grids, names, settings, lut, levels)


def collect(ctx: RunContext, settings: FeaturesConfig, targets: list[Target]) -> list[Accumulator]:
    """Stream every batch through the model with the hooks on; each batch's arrays are appended
    and its grids handed to the background writer (``vizpipe.pipeline.writer``) as captures arrive."""
    import torch
    from vizpipe.pipeline.hooks import capture, preserved
    from vizpipe.pipeline.render import colormap_levels, colormap_lut

    ctx.stage_dir("features")
    save = saved(settings)
    palette = (colormap_lut(settings.cmap), colormap_levels(settings.cmap)) if "grid" in save else None
    n = len(ctx.inputs)
    accs = {(t.layer, t.kind): Accumulator(t, t.layout.channels) for t in targets}
    wanted = list(dict.fromkeys(t.layer for t in targets))
    what = settings.capture.value
    pending: dict[tuple[str, str], torch.Tensor] = {}
    on_device = ctx.device.type != "cpu" and "grid" in save  # grids drawn where the model runs

    def sink(name: str, tensor: torch.Tensor, kind: str) -> None:
        if (name, kind) in accs and (name, kind) not in pending:  # a shared module: its first call
            # a float32 copy on the tensor's device, made before a later in-place op can change it
            pending[(name, kind)] = tensor.detach().to(dtype=torch.float32, copy=True)

    keys = [f"batch/{b}" for b in range(-(-n // ctx.inputs.batch_size))]
    kept, state = _resumed(ctx, keys)
    try:
        kept = _open_arrays(ctx, accs, settings, n, kept, state, "npy" in save)
        # every_call: each batch's forward pass reports again (pending is cleared per batch)
        with (
            preserved(ctx.model),
            torch.no_grad(),
            capture(ctx.model, wanted, sink, what=what, copy=False, every_call=True),
            ctx.writer(limit=2 * ctx.inputs.batch_size * len(accs)) as writer,  # two batches' grids pending
        ):
            for unit, batch, _ in ctx.progress.batches(ctx.inputs, "features", only=range(kept)):
                if batch is None:
                    continue  # finished before: its state is the one put back
                pending.clear()
                ctx.model(batch.tensor)
                for key, acc in accs.items():
                    _take(ctx, writer, acc, pending.get(key), batch.names, settings, palette, on_device)
                pending.clear()
                grids = [
                    acc.grids[name] for acc in accs.values() for name in batch.names if name in acc.grids
                ]
                states = {acc.target.stem: acc.state() for acc in accs.values()}  # the .npy flushed
                # recorded by the writer once this batch's grids (and every earlier file) are written
                writer.after(functools.partial(ctx.progress.record, unit, grids, states))
        for acc in accs.values():
            if acc.npy is not None:
                acc.npy.finish()
                acc.npy = None
    finally:
        for acc in accs.values():
            if acc.npy is not None:
                acc.npy.close()  # the partial file stays for resume=
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
