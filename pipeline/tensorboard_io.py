"""TensorBoard event files: what the stages that write them share (tensorboard, train).

The backend setting (``tensorboardX`` or ``torch.utils.tensorboard``, the same tags either way),
opening a writer, and ``histogram_raw``: fast, exact histograms of large tensors.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = ["HIST_BINS", "PACKAGES", "TBBackend", "backend_value", "histogram_raw", "open_writer"]

HIST_BINS = 64  # uniform buckets per histogram (TensorBoard re-bins for display)


class TBBackend(str, Enum):
    """Which SummaryWriter implementation writes the event files."""

    tensorboardX = "tensorboardX"
    torch = "torch"  # torch.utils.tensorboard


#: the package each backend needs (torch.utils.tensorboard imports the ``tensorboard`` package)
PACKAGES = {"tensorboardX": "tensorboardX", "torch": "tensorboard"}


def backend_value(backend: Any) -> str:
    """The backend as a plain string (the schema gives an Enum, hand-made settings a str)."""
    return str(backend.value if isinstance(backend, TBBackend) else backend)


def open_writer(backend: str, logdir: Path, suffix: str = "", purge_step: int | None = None) -> Any:
    """The backend's SummaryWriter on ``logdir``; its event file's name ends with ``suffix``.

    ``purge_step``: a resumed run's first step; TensorBoard hides the events of earlier files
    in ``logdir`` from that step on (what a killed run logged after its last checkpoint).
    Imported here: TensorBoard is heavy. Event files are append-only record streams, written
    in place (``vizpipe.pipeline.files`` says why).
    """
    if backend == "torch":
        from torch.utils.tensorboard import SummaryWriter as TorchWriter

        return TorchWriter(log_dir=str(logdir), filename_suffix=suffix, purge_step=purge_step)
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir=str(logdir), filename_suffix=suffix, purge_step=purge_step)


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
