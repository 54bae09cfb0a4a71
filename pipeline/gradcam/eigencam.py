"""EigenCAM on the model's device: ``cam.method=eigencam_torch``.

EigenCAM (Muhammad & Yeasin, 2020, https://arxiv.org/abs/2008.00299) projects a layer's
activations on their first principal component. The library's ``EigenCAM`` copies every
activation to the CPU and runs a full numpy SVD per image (``full_matrices=True``: a U of
(h·w)² numbers, 3136² for resnet18's ``layer1`` at 224 px). ``EigenCAMTorch`` is the same
method as a ``BaseCAM`` subclass that keeps the activations where the model runs and computes
the component on that device (on the CPU one batched thin ``torch.linalg.svd``; on a GPU, where
batched SVDs of these sizes run one matrix after another, the top eigenvector of the Gram matrix
by repeated squaring in float64: matrix products only), then the projection, ReLU, min-max scaling
and the bilinear resize; only the finished (B, H, W) maps come back to the CPU (to be written).

The sign of a principal component is arbitrary (SVD returns v or -v, and numpy's and torch's
LAPACK calls pick differently), and EigenCAM's ReLU turns the two signs into different maps.
``EigenCAMTorch`` fixes it as Seg-Eigen-CAM does (Chung & Ying, 2025, Eq. 13; the library's
``get_2d_projection_with_sign_correction``): the projection is flipped when its most negative
value is larger in magnitude than its most positive one. Its maps equal the library's EigenCAM
computed with that sign correction to 1e-4 (``tests/test_scale.py``), and the library's plain
EigenCAM wherever its SVD happened to return that sign.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.base_cam import BaseCAM

__all__ = ["EigenCAMTorch", "first_component"]


class _OnDevice(ActivationsAndGradients):
    """The library's hook bookkeeping, keeping activations on their device (no gradients needed)."""

    def save_activation(self, module: torch.nn.Module, input: Any, output: Any) -> None:  # noqa: A002
        """Keep the layer's output, detached, where it is."""
        activation = output if self.reshape_transform is None else self.reshape_transform(output)
        self.activations.append(activation.detach())

    def save_gradient(self, module: torch.nn.Module, input: Any, output: Any) -> None:  # noqa: A002
        """EigenCAM uses no gradients."""


def first_component(activations: torch.Tensor, solver: str = "auto") -> torch.Tensor:
    """(B, C, h, w) activations -> (B, h, w) projections on their first principal component.

    As the library's ``get_2d_projection``: NaN set to 0, pixels as rows, centred per channel;
    sign fixed by Seg-Eigen-CAM's Eq. 13 (see the module docstring). ``solver``: ``svd`` (one
    batched thin ``torch.linalg.svd``), ``gram`` (:func:`_top_vector`: matrix products only) or
    ``auto`` (``gram`` on a GPU, where batched SVDs of these sizes run one matrix at a time,
    ``svd`` on the CPU).
    """
    a = torch.where(torch.isnan(activations), torch.zeros_like(activations), activations)
    b, c, h, w = a.shape
    rows = a.reshape(b, c, h * w).transpose(1, 2)  # (B, h*w, C)
    rows = rows - rows.mean(dim=1, keepdim=True)
    if solver == "auto":
        solver = "svd" if rows.device.type == "cpu" else "gram"
    if solver == "svd":
        _, _, vh = torch.linalg.svd(rows, full_matrices=False)  # vh: (B, k, C)
        proj = torch.bmm(rows, vh[:, 0, :, None])[..., 0]  # (B, h*w)
    elif solver == "gram":
        proj = _top_vector(rows.double()).to(rows.dtype)
    else:
        raise ValueError(f"eigencam solver {solver!r}: choose auto, svd or gram")
    flip = proj.amin(dim=1).abs() > proj.amax(dim=1).abs()
    proj = torch.where(flip[:, None], -proj, proj)
    return proj.reshape(b, h, w)


def _top_vector(rows: torch.Tensor, squarings: int = 20, polish: int = 3) -> torch.Tensor:
    """(B, n, C) centred rows -> (B, n): ``rows @ v1``, v1 their first right singular vector (any sign).

    v1 is the top eigenvector of the Gram matrix ``rowsᵀ rows`` (or, when there are fewer rows than
    channels, ``rows rowsᵀ``'s top eigenvector u1 gives v1 ∝ ``rowsᵀ u1``). Raising the Gram matrix
    G to the power 2^``squarings`` by repeated squaring (normalised each time) leaves
    λ1^N·v1·v1ᵀ, every other direction shrunk by (λ2/λ1)^N (N ≈ 10⁶: converged unless the top two
    singular values agree to ~1e-5, where the component itself is ill-defined); its largest column is
    v1. ``polish`` power steps with G itself then remove the rounding of the squarings. Only batched
    matrix products: fast on a GPU, in float64.
    """
    wide = rows.shape[1] < rows.shape[2]  # fewer pixels than channels: the smaller Gram matrix
    gram = rows @ rows.transpose(1, 2) if wide else rows.transpose(1, 2) @ rows  # (B, k, k)
    tiny = torch.finfo(gram.dtype).tiny
    power = gram / gram.flatten(1).norm(dim=1).clamp_min(tiny)[:, None, None]
    for _ in range(squarings):
        power = power @ power
        power = power / power.flatten(1).norm(dim=1).clamp_min(tiny)[:, None, None]
    best = power.norm(dim=1).argmax(dim=1)  # the largest column of λ1^N v1 v1ᵀ
    vec = torch.gather(power, 2, best[:, None, None].expand(-1, power.shape[1], 1))  # (B, k, 1)
    for _ in range(polish):
        vec = gram @ vec
        vec = vec / vec.norm(dim=1, keepdim=True).clamp_min(tiny)
    if wide:  # u1 -> v1 = rowsᵀ u1 / |rowsᵀ u1|
        vec = rows.transpose(1, 2) @ vec
        vec = vec / vec.norm(dim=1, keepdim=True).clamp_min(tiny)
    return (rows @ vec)[..., 0]


def _scale(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W): the library's ``scale_cam_image`` (min-max, then cv2's bilinear resize)."""
    cams = cams - cams.amin(dim=(1, 2), keepdim=True)
    cams = cams / (1e-7 + cams.amax(dim=(1, 2), keepdim=True))
    width, height = size
    return torch.nn.functional.interpolate(
        cams[:, None], size=(height, width), mode="bilinear", align_corners=False
    )[:, 0]


class EigenCAMTorch(BaseCAM):
    """EigenCAM with the activations, SVD and scaling on the model's device (see the module docstring)."""

    def __init__(
        self, model: torch.nn.Module, target_layers: list[torch.nn.Module], reshape_transform: Any = None
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)
        self.activations_and_grads.release()  # the library's hooks copy to the CPU; ours keep the device
        self.activations_and_grads = _OnDevice(model, target_layers, reshape_transform)

    def get_cam_image(
        self,
        input_tensor: Any,
        target_layer: Any,
        targets: Any,
        activations: Any,
        grads: Any,
        eigen_smooth: bool,
    ) -> np.ndarray:
        """One layer's projections (for callers of the library's per-layer API), on the CPU."""
        return first_component(torch.as_tensor(activations)).cpu().numpy()

    def compute_cam_per_layer(
        self, input_tensor: torch.Tensor, targets: Any, eigen_smooth: bool
    ) -> list[np.ndarray]:
        """Per target layer, the (B, 1, H, W) maps: computed on the device, returned as numpy."""
        size = self.get_target_width_height(input_tensor)
        out = []
        for activations in self.activations_and_grads.activations:  # (B, C, h, w) on the device
            cams = torch.clamp(first_component(activations.float()), min=0)
            out.append(_scale(cams, size)[:, None].cpu().numpy().astype(np.float32))
        return out
