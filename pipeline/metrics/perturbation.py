"""Faithfulness by perturbation: RISE's deletion and insertion curves, and grad-cam's metrics.

**Deletion and insertion** (Petsiuk et al. 2018, RISE; their ``evaluation.py`` ``CausalMetric``):
the pixels are ordered by the map, most important first (``np.flip(np.argsort(map))``, the
paper's order, ties included); deletion starts from the image and replaces ``step`` pixels at a
time (all channels) by 0 in the model's input, insertion starts from a blurred copy (the paper's
Gaussian kernel, 11 px, sigma 5, per channel) and puts the image's pixels back. The curve is the
model's probability of the map's class at each of the ``ceil(H*W / step) + 1`` states (the first
is the untouched start); its AUC is the paper's trapezoid rule on a [0, 1] x-axis. ``step``
defaults to the image's width (the paper: 224 pixels per step on 224-px images); ``steps`` sets
the number of steps instead, the same for any image size.

Batched: the states of a map differ only in which pixels come from the start and which from the
finish, and pixel ``p`` has changed in state ``k`` exactly when its rank in the order, divided by
``step``, is below ``k``. So every state of every map of a batch is made at once with one
``torch.where`` and run through the model in chunks of at most ``CHUNK_BYTES`` of input (all steps
of an image in one forward pass whenever they fit; channels-last, which CPU convolutions run
faster on large batches), instead of the paper's one pass per step.
``tests/test_metrics.py`` checks the curves against the paper's loop and Quantus's PixelFlipping.

**grad-cam's metrics** (``pytorch_grad_cam.metrics``: ROAD, the confidence metrics, ARCC) are
called as the library documents them, with the library's targets (``library_metric``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["CHUNK_BYTES", "auc", "blur", "causal_curves", "library_metric", "salient_order"]

#: input bytes per forward pass of the deletion/insertion states (all steps of an image together)
CHUNK_BYTES = 16 << 20


def auc(curve: np.ndarray) -> np.ndarray:
    """RISE's area under a curve sampled at evenly spaced points of [0, 1] (trapezoids); (..., S) -> (...)."""
    curve = np.asarray(curve, dtype=np.float64)
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / (curve.shape[-1] - 1)


@functools.cache
def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """RISE's ``gkern``: a delta filtered by ``scipy.ndimage.gaussian_filter`` (float32, size x size)."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1
    return gaussian_filter(delta, sigma).astype(np.float32)


def blur(x: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion start: each channel of (B, C, H, W) convolved with its Gaussian (zero padding)."""
    import torch

    channels = int(x.shape[1])
    kernel = torch.from_numpy(_gaussian_kernel(int(size), float(sigma))).to(x.device, x.dtype)
    weight = kernel.expand(channels, 1, *kernel.shape).contiguous()  # depthwise: (C, 1, k, k)
    return torch.nn.functional.conv2d(x, weight, padding=int(size) // 2, groups=channels)


def salient_order(maps: np.ndarray) -> np.ndarray:
    """(B, H, W) maps -> (B, H*W) pixel indices, most important first, in RISE's order (ties too)."""
    flat = np.asarray(maps).reshape(len(maps), -1)
    return np.flip(np.argsort(flat, axis=1), axis=-1)


def causal_curves(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    maps: np.ndarray,
    classes: list[int],
    mode: str,
    *,
    step: int | None = None,
    steps: int | None = None,
    kernel: int = 11,
    sigma: float = 5.0,
    probabilities: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """Deletion (``mode="deletion"``) or insertion curves of the (B, H, W) maps of ``x`` (B, C, H, W).

    ``step``: pixels per step (default: the image's width, as RISE); ``steps``: instead, how many
    steps (the step is ``ceil(H*W / steps)``, whatever the image's size). ``model(x)`` gives the
    outputs; ``probabilities`` turns them into probabilities (default: the softmax, as RISE's
    model ends in one). Returns (B, S + 1) float64: the probability of each
    map's class at every state, the untouched start first.
    """
    import torch

    b, c, h, w = (int(v) for v in x.shape)
    if step is None:
        step = -(-h * w // int(steps)) if steps is not None else w
    step = int(step)
    n_steps = (h * w + step - 1) // step
    ranks = np.empty((b, h * w), dtype=np.int64)
    order = salient_order(maps)
    ranks[np.arange(b)[:, None], order] = np.arange(h * w)[None, :]  # each pixel's place in the order
    changed_at = torch.from_numpy(ranks // step).to(x.device).view(b, 1, h, w)  # the state it changes in
    x = x.detach()
    if mode == "deletion":
        start, finish = x, torch.zeros_like(x)
    elif mode == "insertion":
        start, finish = blur(x, kernel, sigma), x
    else:
        raise ValueError(f"causal_curves: mode must be deletion or insertion, got {mode!r}")
    softmax = probabilities or (lambda out: torch.softmax(out, dim=1))
    states = torch.arange(n_steps + 1, device=x.device).view(-1, 1, 1, 1)  # (S + 1, 1, 1, 1)
    per_image = max(1, CHUNK_BYTES // max(1, (n_steps + 1) * c * h * w * x.element_size()))
    curves = np.empty((b, n_steps + 1), dtype=np.float64)
    with torch.no_grad():
        for lo in range(0, b, per_image):
            hi = min(b, lo + per_image)
            # (n, S + 1, C, H, W): state k takes the finish's value where a pixel changed before k
            batch = torch.where(
                changed_at[lo:hi, None] < states[None], finish[lo:hi, None], start[lo:hi, None]
            ).flatten(0, 1)
            probs = _forward(model, batch, softmax)
            probs = probs.view(hi - lo, n_steps + 1, -1)
            target = torch.as_tensor(classes[lo:hi], device=probs.device).view(-1, 1, 1)
            target = target.expand(-1, n_steps + 1, 1)
            curves[lo:hi] = probs.gather(2, target)[..., 0].double().cpu().numpy()
    return curves


def _forward(
    model: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    softmax: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The probabilities of ``batch`` (N, C, H, W), at most ``CHUNK_BYTES`` of input per forward pass."""
    import torch
    from vizpipe.pipeline.layers import model_output

    n = max(1, CHUNK_BYTES // max(1, batch[0].nbytes))
    # channels-last input: CPU convolutions run ~1.5x faster on these large batches (same numbers to
    # float rounding); the model itself is not touched
    parts = [
        softmax(model_output(model(batch[i : i + n].contiguous(memory_format=torch.channels_last))).float())
        for i in range(0, len(batch), n)
    ]
    return torch.cat(parts)


def library_metric(
    name: str,
    args: dict[str, Any],
    input_tensor: Any,
    cams: np.ndarray,
    targets: list[Any],
    model: Any,
    cam: Any,
) -> np.ndarray:
    """grad-cam's metric ``name`` (``registry.METRICS``) on (N, H, W) maps: one float per image."""
    import importlib

    from vizpipe.pipeline.metrics.registry import METRICS

    spec = METRICS[name]
    cls = getattr(importlib.import_module(f"pytorch_grad_cam.metrics.{spec.module}"), spec.cls)
    if spec.how == "cams":
        result = cls(**args)(cams)
    elif spec.how == "perturb":
        result = cls(**args)(input_tensor, cams, targets, model)
    elif spec.how == "base_method":
        result = cls(**args)(input_tensor, cams, targets, model, cam)
    elif spec.how == "init_base_method":
        result = cls(base_method=cam, **args)(input_tensor, cams, targets, model)
    else:  # pragma: no cover - the table is the only source
        raise ValueError(f"metric '{name}' has an unknown calling convention '{spec.how}'")
    return np.asarray(result, dtype=np.float64).reshape(len(cams), -1)[:, 0]
