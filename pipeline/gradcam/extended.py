"""vizpipe's subclasses of pytorch-grad-cam's CAM classes: two additions, by the library's public surface.

``extended(cls)`` is ``cls`` (any ``BaseCAM`` subclass the library exports, or vizpipe's own
``EigenCAMTorch``) with ``Extensions`` mixed in before it. Nothing of the library is patched; the
subclass only adds:

- **several target sets from one forward pass** (``forward_once`` then ``cams_for`` per set):
  ``BaseCAM.forward``'s own steps, in its order, split where the forward pass ends. Its recorder
  is ``Recorder``, the library's ``ActivationsAndGradients`` (the same hooks, registered by the
  library's constructor) plus ``new_backward``: the gradients of one backward pass are recorded
  apart from the last one's (the library's recorder prepends each backward's gradients to the
  list and resets it only at the next forward);
- **each layer's own map from an averaged call** (``keep_layer_maps``): its
  ``aggregate_multi_layers`` keeps the per-layer maps the library averages, each scaled as a
  one-layer call scales its map (clipped at 0, min-max), then calls the library's.

The library's public names this relies on (``BaseCAM``'s constructor, ``forward`` steps
``activations_and_grads(x)``, ``compute_cam_per_layer``, ``aggregate_multi_layers``,
``ActivationsAndGradients`` and its ``gradients`` list, ``scale_cam_image``) are those of the
grad-cam versions pyproject.toml allows; ``tests/test_gradcam.py`` runs the library's README
example with its plain public call and compares.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from pytorch_grad_cam.base_cam import BaseCAM

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["Extensions", "Recorder", "extended"]


class Recorder(ActivationsAndGradients):
    """The library's hook bookkeeping, able to start a new backward pass on the same forward."""

    def new_backward(self) -> None:
        """Forget the gradients recorded so far; the next backward pass records the layers' own."""
        self.gradients = []


class Extensions:
    """Mixed in before a library CAM class by ``extended`` (see the module docstring)."""

    #: the library class this one extends (set by ``extended``)
    library: type = BaseCAM

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The library's constructor; then its plain recorder is swapped for a ``Recorder``."""
        super().__init__(*args, **kwargs)
        self.keep_layer_maps = False
        self.layer_maps: list[np.ndarray] | None = None  # per target layer, in the library's order
        ag = self.activations_and_grads
        if type(ag) is ActivationsAndGradients:  # EigenCAMTorch keeps its own (activations on the device)
            ag.release()
            self.activations_and_grads = Recorder(
                self.model, self.target_layers, self.reshape_transform, self.detach
            )

    @property
    def one_forward(self) -> bool:
        """True when ``forward_once`` + ``cams_for`` are exactly this class's ``forward``."""
        cls = self.library
        return (
            cls.forward is BaseCAM.forward
            and cls.compute_cam_per_layer is BaseCAM.compute_cam_per_layer  # not FullGrad's
            and bool(self.detach)  # not ShapleyCAM's second-order gradients
            and isinstance(self.activations_and_grads, Recorder)
        )

    @property
    def averages_layers(self) -> bool:
        """True when the class averages its layers' maps the library's standard way (``keep_layer_maps``)."""
        return self.library.aggregate_multi_layers is BaseCAM.aggregate_multi_layers

    def forward_once(self, input_tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``BaseCAM.forward`` up to the outputs: (the input as used, the outputs (B, K))."""
        if self.compute_input_gradient:  # as the library: keeps the graph connected through frozen layers
            input_tensor = input_tensor.detach().requires_grad_(True)
        return input_tensor, self.activations_and_grads(input_tensor)

    def cams_for(
        self, input_tensor: torch.Tensor, outputs: torch.Tensor, targets: list[Any], eigen_smooth: bool
    ) -> np.ndarray:
        """``BaseCAM.forward`` after the outputs, for one target per image: the (B, H, W) maps."""
        if self.uses_gradients:
            self.model.zero_grad()
            input_tensor.grad = None  # FullGrad-like methods read the input's gradient: this set's only
            self.activations_and_grads.new_backward()
            loss = sum(target(output) for target, output in zip(targets, outputs, strict=True))
            loss.backward(retain_graph=True)
        return self.aggregate_multi_layers(self.compute_cam_per_layer(input_tensor, targets, eigen_smooth))

    def aggregate_multi_layers(self, cam_per_target_layer: list[np.ndarray]) -> np.ndarray:
        """The library's aggregation; with ``keep_layer_maps``, each layer's own map kept first."""
        self.layer_maps = None
        if self.keep_layer_maps:
            import numpy as np
            from pytorch_grad_cam.utils.image import scale_cam_image

            self.layer_maps = [scale_cam_image(np.maximum(c, 0).mean(axis=1)) for c in cam_per_target_layer]
        return super().aggregate_multi_layers(cam_per_target_layer)  # type: ignore[misc]


@functools.cache
def extended(cls: type) -> type:
    """``cls`` (a ``BaseCAM`` subclass) with ``Extensions`` mixed in; one class per ``cls``."""
    if not issubclass(cls, BaseCAM):
        raise TypeError(f"extended: {cls.__name__} is not a pytorch_grad_cam BaseCAM subclass")
    return type(
        cls.__name__, (Extensions, cls), {"library": cls, "__module__": __name__, "__doc__": cls.__doc__}
    )
