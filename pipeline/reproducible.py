"""Byte-identical results on the CPU with any number of threads: what breaks it, and the fix.

The cause (measured with torch 2.14, Intel MKL 2024.2, 2 threads; ``tests/test_reproducible.py``).
For a float32 convolution PyTorch picks oneDNN unless the batch has one image, the kernel is at
most 3×3 and the input has at most 20,480 values (``ConvParams::use_mkldnn``: "for some case,
native is faster"): then it runs its own im2col + GEMM convolution (``slow_conv2d``). Its input
gradient is one MKL ``SGEMM(N, T, m, n, k)`` per image with ``m`` = the output's positions
(``MKL_VERBOSE`` shows ``SGEMM(N,T,1,2304,512,...)`` for resnet18's layer4 on a 2×2 input). When
``m == 1`` (a 1×1 output: a 32-px input's last stage, every squeeze-and-excitation block of
EfficientNet, MobileNetV3 and RegNetY) MKL splits the ``k`` reduction across its threads and
adds the partial sums in the order the threads finish: the gradient differs in its last bits
from one call to the next (~1e-7; a CAM's ``.npy`` is then not byte-identical). oneDNN is not
involved (``torch.backends.mkldnn.enabled=False`` sends more convolutions down the same path),
forward passes, ``Linear`` and batched matrix products were bit-identical in every trial, and
with one thread the sum has one order.

Intel's remedy is MKL's conditional numerical reproducibility (CNR): with ``MKL_CBWR=AUTO`` MKL
keeps its fastest code path for the CPU but fixes how work is split, so results are
bit-identical run to run on one machine with a fixed number of threads. MKL reads the variable
once, at its first call in the process (``mkl_cbwr_set`` after that returns
``MKL_CBWR_ERR_MODE_CHANGE_FAILURE``), so it is a setting of the process:

* the command line (``vizpipe.pipeline.process.reproducible_math``, which owns its process) sets
  ``MKL_CBWR=AUTO`` before any math runs, unless the user set it; worker processes of the
  launchers inherit it;
* in a library call (a notebook, ``run_pipeline`` in a test) MKL may already run without CNR and
  vizpipe must not change the process for good: ``reproducible`` runs a stage on one thread
  (``torch.set_num_threads(1)``, put back afterwards) only where the non-reproducible case can
  occur: on the CPU, with more than one thread, MKL present, ``MKL_CBWR`` not set, and a
  convolution of the model whose output has one position per image (the probe's shapes).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["CNR_ENV", "CNR_MODE", "cnr_requested", "one_position_convolutions", "reproducible"]

CNR_ENV = "MKL_CBWR"  # Intel MKL's conditional numerical reproducibility (read at its first call)
CNR_MODE = "AUTO"  # the CPU's own code path, reproducible run to run with a fixed thread count
CNR_OFF = ("", "OFF", "BRANCH_OFF")  # values that leave CNR off
_told: set[str] = set()  # models whose one-thread stages were explained (once per process)


def cnr_requested() -> bool:
    """True when ``MKL_CBWR`` asks for a reproducible MKL (it takes effect if set before MKL's first call)."""
    return os.environ.get(CNR_ENV, "").strip().upper() not in CNR_OFF


def one_position_convolutions(model: Any, probe: Any) -> list[str]:
    """Convolutions of ``model`` whose output (in the probe's forward pass) has one position per image."""
    from torch import nn

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    found = []
    for name, module in model.named_modules():
        shape = probe.shapes.get(name)
        if isinstance(module, kinds) and shape is not None and len(shape) >= 3:
            positions = 1
            for size in shape[2:]:
                positions *= int(size)
            if positions == 1:
                found.append(name)
    return found


def _one_thread_needed(ctx: Any) -> list[str]:
    """The convolutions that make one thread necessary for this run (empty: not needed)."""
    import torch

    if ctx.device.type != "cpu" or torch.get_num_threads() <= 1 or cnr_requested():
        return []
    if not torch.backends.mkl.is_available():
        return []
    try:
        probe = ctx.probe()
    except Exception:  # noqa: BLE001 - a model that cannot run fails in the stage, with its message
        return []
    return one_position_convolutions(ctx.model, probe)


@contextlib.contextmanager
def reproducible(ctx: Any) -> Iterator[None]:
    """Run a stage of ``ctx``'s model so that its results are the same bytes on every run.

    Does nothing unless this process's MKL may split a reduction across threads for this model
    (see the module docstring); then the stage runs with ``torch.set_num_threads(1)`` and the
    caller's thread count is put back afterwards.
    """
    import torch

    convs = _one_thread_needed(ctx)
    if not convs:
        yield
        return
    threads = torch.get_num_threads()
    (log.debug if ctx.model_name in _told else log.info)(
        "One thread for this stage (was %d): %s has convolutions with a 1×1 output (%s), whose "
        "gradients MKL sums in a varying order on several threads; set %s=%s before Python starts "
        "to keep every thread (the vizpipe command does)",
        threads,
        ctx.model_name,
        ", ".join(convs[:3]) + (f", ... ({len(convs)} in all)" if len(convs) > 3 else ""),
        CNR_ENV,
        CNR_MODE,
    )
    _told.add(ctx.model_name)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
