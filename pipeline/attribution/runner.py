"""``AttributionRunner``: a pixel attribution method with the CAM path's interface.

The CAM stage asks a runner for the maps of a batch for each class set (``maps``), as it asks
grad-cam's ``CamRunner``; this one calls captum (or grad-cam's ``sobel_cam``) instead:

* the captum object is built once per stage (``__enter__``) on the model (``guided_gradcam``: with
  its ``cam.layer``); captum registers its hooks (guided backprop's ReLU hooks, DeepLift's) for one
  ``attribute`` call and removes them itself; the stage wraps everything in
  ``vizpipe.pipeline.hooks.preserved``, which puts back modes, ``requires_grad``, grads and hooks;
* with ``cam.freeze_params`` the parameters get no gradients (captum differentiates by the input);
* random methods (``gradient_shap``, ``noise_tunnel``) draw from torch's and numpy's generators
  seeded with ``seed`` + the batch's first index (``seeded``): the same maps for the same config,
  and the caller's random numbers as they were;
* the (B, C, H, W) attribution becomes a (B, H, W) map: ``|sum over channels|`` / its maximum
  (``to_maps``; ``methods.py`` says why).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.attribution.methods import ATTRIBUTIONS, AttributionSpec, normalize

if TYPE_CHECKING:
    import torch
    from torch import nn
    from vizpipe.pipeline.gradcam.layers import CamLayer

__all__ = ["AttributionRunner", "captum_call", "display_scale", "seeded", "to_maps"]

#: arguments of ``attribute`` that vizpipe passes itself (the rest of a method's args go to its constructor)
CONSTRUCTOR_ARGS = ("multiply_by_inputs", "eps")
#: vizpipe's own arguments (not captum's)
OWN_ARGS = ("base_method",)


def to_maps(attribution: torch.Tensor | np.ndarray) -> np.ndarray:
    """(B, C, H, W) attributions -> (B, H, W) float32 maps: ``|sum over C|`` over its maximum (0 stays 0)."""
    a = attribution.detach().float().cpu().numpy() if hasattr(attribution, "detach") else attribution
    maps = np.abs(np.asarray(a, dtype=np.float64).sum(axis=1))  # (B, H, W)
    top = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return (maps / np.where(top > 0, top, 1.0)).astype(np.float32)


def display_scale(cam: np.ndarray, outlier_perc: float = 2.0) -> np.ndarray:
    """A map as captum draws it (``visualize_image_attr``, absolute values): scaled by the value where
    the sorted map's cumulative sum reaches ``100 - outlier_perc`` % of its total, clipped to [0, 1]."""
    values = np.sort(np.abs(np.asarray(cam, dtype=np.float64)).ravel())
    sums = np.cumsum(values)
    if not len(sums) or sums[-1] <= 0:
        return np.zeros_like(cam, dtype=np.float32)
    threshold = values[int(np.nonzero(sums >= sums[-1] * 0.01 * (100.0 - outlier_perc))[0][0])]
    return np.clip(np.abs(cam) / threshold, 0.0, 1.0).astype(np.float32)


@contextlib.contextmanager
def seeded(seed: int, device: Any = None) -> Iterator[None]:
    """torch's and numpy's global generators seeded with ``seed`` inside (captum draws from both:
    ``GradientShap``'s interpolation points come from ``np.random``), as they were outside."""
    import torch

    devices = [device] if device is not None and getattr(device, "type", "cpu") == "cuda" else []
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            np.random.seed(int(seed) % 2**32)
            yield
    finally:
        np.random.set_state(state)


def baselines(kind: str, x: torch.Tensor, mean: list[float] | None, std: list[float] | None) -> Any:
    """The baselines tensor of ``x`` (B, C, H, W): ``zero`` | ``black`` | ``blur``."""
    import torch

    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "black":
        c = int(x.shape[1])
        m = torch.as_tensor((list(mean or [0.0]) * c)[:c], dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        s = torch.as_tensor((list(std or [1.0]) * c)[:c], dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        return ((0.0 - m) / s).expand_as(x).contiguous()
    from vizpipe.pipeline.metrics.perturbation import blur

    return blur(x.detach())


def captum_call(
    model: nn.Module,
    spec: AttributionSpec,
    args: dict[str, Any],
    x: torch.Tensor,
    classes: list[int],
    layer: nn.Module | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> torch.Tensor:
    """captum's ``spec.cls`` on ``x`` for one class per image, with ``args``: the (B, C, H, W) attribution."""
    import torch
    from captum import attr as captum_attr

    own = {k: v for k, v in args.items() if k not in OWN_ARGS}
    ctor = {k: own.pop(k) for k in CONSTRUCTOR_ARGS if k in own}
    target = torch.as_tensor([int(c) for c in classes], device=x.device)
    inputs = x.detach().clone().requires_grad_(True)
    if "baselines" in own:
        kind = own.pop("baselines")
        base = baselines(kind, inputs.detach(), mean, std)
        own["baselines"] = (
            base[:1] if spec.name == "gradient_shap" or _base_is(args, "gradient_shap") else base
        )
    if spec.name == "occlusion" or _base_is(args, "occlusion"):
        _occlusion_windows(own, x)
    if spec.name == "noise_tunnel":
        base_spec = ATTRIBUTIONS[normalize(args["base_method"])]
        base_ctor = {k: ctor.pop(k) for k in list(ctor)}
        inner = getattr(captum_attr, base_spec.cls)(model, **base_ctor)
        if "baselines" in own and base_spec.name == "gradient_shap":
            own["baselines"] = own["baselines"][:1]
        return captum_attr.NoiseTunnel(inner).attribute(inputs, target=target, **own)
    cls = getattr(captum_attr, spec.cls)
    obj = cls(model, layer, **ctor) if spec.uses_layer else cls(model, **ctor)
    return obj.attribute(inputs, target=target, **own)


def _base_is(args: dict[str, Any], name: str) -> bool:
    return str(args.get("base_method", "")) == name


def _occlusion_windows(args: dict[str, Any], x: torch.Tensor) -> None:
    """Occlusion's window and stride: an eighth of the image's side and half that, unless given."""
    c, h, w = (int(v) for v in x.shape[1:])
    if args.get("sliding_window_shapes") is None:
        args["sliding_window_shapes"] = (c, max(1, h // 8), max(1, w // 8))
    if args.get("strides") is None:
        win = args["sliding_window_shapes"]
        args["strides"] = tuple(max(1, int(v) // 2) if i else int(v) for i, v in enumerate(win))
    args["sliding_window_shapes"] = tuple(int(v) for v in args["sliding_window_shapes"])
    args["strides"] = tuple(int(v) for v in args["strides"])


class AttributionRunner:
    """A pixel attribution for the CAM stage: ``maps`` like ``CamRunner.maps``; a context manager."""

    one_forward = False  # the stage computes the outputs first, then asks for each class set
    captures = False  # no per-layer maps
    obj = None  # no grad-cam CAM object (coherency and arcc need one: refused by the plan)

    def __init__(
        self,
        model: nn.Module,
        settings: Any,
        spec: AttributionSpec,
        layers: list[CamLayer],
        *,
        kwargs: dict[str, Any],
        seed: int = 0,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        self.model, self.settings, self.spec, self.layers = model, settings, spec, layers
        self.kwargs, self.seed, self.mean, self.std = dict(kwargs), int(seed), mean, std
        self.forwards = 0
        self.layer: nn.Module | None = None

    def __enter__(self) -> AttributionRunner:
        """Resolve the layer (``guided_gradcam``) and freeze the parameters (``cam.freeze_params``)."""
        if self.spec.uses_layer:
            self.layer = self.model.get_submodule(self.layers[0].name)
        if bool(getattr(self.settings, "freeze_params", True)):
            self.model.requires_grad_(False)  # put back by hooks.preserved around the stage
        return self

    def __exit__(self, *exc: object) -> None:
        self.layer = None

    def maps(
        self,
        x: torch.Tensor,
        class_sets: list[list[int]] | None,
        logits: torch.Tensor | None = None,
        *,
        rgb: np.ndarray | None = None,
        first_index: int = 0,
    ) -> tuple[torch.Tensor, list[tuple[np.ndarray, None]]]:
        """The (B, H, W) maps of ``x`` for each class set (None: each image's top-1).

        ``logits``: the batch's outputs (B, K) on the CPU; ``rgb`` (B, H, W, 3) in [0, 1]: the
        images as drawn (``sobel`` reads them); ``first_index``: the batch's first data set index
        (seeds the random methods).
        """
        import torch

        if logits is None:
            raise ValueError("AttributionRunner.maps needs the batch's logits")
        from vizpipe.pipeline.gradcam.adapter import top1

        out = []
        for classes in class_sets or [top1(logits)]:
            if self.spec.name == "sobel":
                out.append((sobel_maps(x if rgb is None else rgb, self.mean, self.std), None))
                continue
            with (
                seeded(self.seed + int(first_index), x.device),
                torch.enable_grad(),
                warnings.catch_warnings(),
            ):
                # captum says it sets (and removes) backward hooks on ReLUs: what guided backprop is
                warnings.filterwarnings(
                    "ignore", message="Setting backward hooks on ReLU", category=UserWarning
                )
                a = captum_call(
                    self.model, self.spec, self.kwargs, x, classes, self.layer, self.mean, self.std
                )
            self.forwards += 1
            out.append((to_maps(a), None))
        return logits, out


def sobel_maps(images: Any, mean: list[float] | None = None, std: list[float] | None = None) -> np.ndarray:
    """grad-cam's ``sobel_cam`` of each image (B, H, W, 3 in [0, 1], or a model input to un-normalise)."""
    from pytorch_grad_cam.sobel_cam import sobel_cam

    if hasattr(images, "detach"):  # a (B, C, H, W) model input: back to pixels
        c = int(images.shape[1])
        m = np.asarray((list(mean or [0.0]) * c)[:c], dtype=np.float32).reshape(1, c, 1, 1)
        s = np.asarray((list(std or [1.0]) * c)[:c], dtype=np.float32).reshape(1, c, 1, 1)
        pixels = images.detach().float().cpu().numpy() * s + m
        images = np.clip(pixels, 0, 1).transpose(0, 2, 3, 1)
        if c == 1:
            images = np.repeat(images, 3, axis=3)
    edges = np.stack([sobel_cam(np.uint8(255 * np.clip(img, 0, 1))) for img in np.asarray(images)])
    return to_maps(edges[:, None].astype(np.float64))
