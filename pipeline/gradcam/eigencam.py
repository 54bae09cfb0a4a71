"""EigenCAM on the model's device: ``cam.method=eigencam_torch``.

EigenCAM (Muhammad & Yeasin, 2020, https://arxiv.org/abs/2008.00299) projects a layer's
activations on their first principal component. The library's ``EigenCAM`` copies every
activation to the CPU and runs a full numpy SVD per image (``full_matrices=True``: a U of
(h·w)² numbers, 3136² for resnet18's ``layer1`` at 224 px). ``EigenCAMTorch`` is the same
method as a ``BaseCAM`` subclass that keeps the activations where the model runs and computes
the component with one batched ``torch.linalg.svd`` (thin), the projection, ReLU, min-max scaling
and the bilinear resize on that device; only the finished (B, H, W) maps come back to the CPU
(to be written).

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


def first_component(activations: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) activations -> (B, h, w) projections on their first principal component.

    As the library's ``get_2d_projection``: NaN set to 0, pixels as rows, centred per channel;
    sign fixed by Seg-Eigen-CAM's Eq. 13 (see the module docstring).
    """
    a = torch.where(torch.isnan(activations), torch.zeros_like(activations), activations)
    b, c, h, w = a.shape
    rows = a.reshape(b, c, h * w).transpose(1, 2)  # (B, h*w, C)
    rows = rows - rows.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)  # vh: (B, k, C)
    proj = torch.bmm(rows, vh[:, 0, :, None])[..., 0]  # (B, h*w)
    flip = proj.amin(dim=1).abs() > proj.amax(dim=1).abs()
    proj = torch.where(flip[:, None], -proj, proj)
    return proj.reshape(b, h, w)


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
