"""The model wrappers grad-cam's tutorials write by hand, inferred from the task instead.

grad-cam assumes a model returns one tensor and a target layer outputs one tensor. Its tutorials
show what to write when that is not so; vizpipe does the same, from ``model.task``:

* **dict outputs** (segmentation; the tutorial "Class Activation Maps for Semantic Segmentation"):
  the library would see ``{"out": ..., "aux": ...}``, so the tutorial wraps the model in
  ``SegmentationModelOutputWrapper`` whose ``forward`` returns ``model(x)["out"]``.
  ``SegmentationOutput`` is that wrapper: the CAM object gets it, the targets get each image's
  (K, H, W) scores (``SemanticSegmentationTarget``);
* **list-of-dict outputs** (detection; the tutorial "Class Activation Maps for Object Detection
  With Faster RCNN"): the model is handed to the library as it is (the tutorial's choice), and
  the targets read each image's dict (``FasterRCNNBoxScoreTarget``: boxes, labels, scores);
* **FPN feature reshapes**: the tutorial's ``target_layers=[model.backbone]`` outputs an
  ordered dict of FPN levels; its ``fasterrcnn_reshape_transform`` resizes every level to the
  smallest one (``pool``) after taking absolute values and concatenates the channels.
  ``fpn_reshape`` is that function for any FPN dict (RetinaNet's and FCOS's levels end with
  ``p6``/``p7``, not ``pool``: the last level is the smallest), used by
  ``vizpipe.pipeline.gradcam.layers`` for a layer whose output is a dict of maps. The library
  records no gradient for a dict (its hook needs a tensor), so gradient methods need one tensor:
  a backbone block or one FPN level (``backbone.fpn.layer_blocks.<i>``);
* **a detector in train/eval mode**: torchvision detectors return losses in train mode (and need
  targets); the library puts the model in eval mode itself, vizpipe keeps it there for the probe,
  every stage and the CAM, and ``vizpipe.pipeline.hooks.preserved`` puts the caller's mode back;
* **embeddings** (the tutorial "Pixel Attribution for embeddings"): a feature extractor (a ResNet
  without its head, ``model=embedding``) returns (N, D); no wrapper, the target is the cosine
  similarity to a concept's features (``vizpipe.pipeline.gradcam.targets``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    import torch

__all__ = ["SegmentationOutput", "fpn_reshape", "model_for_cam"]


class SegmentationOutput(nn.Module):
    """The segmentation tutorial's ``SegmentationModelOutputWrapper``: ``model(x)["out"]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, K, H, W) class scores."""
        return self.model(x)["out"]


def model_for_cam(model: nn.Module, task: str) -> nn.Module:
    """The module the library's CAM object gets for ``task`` (the wrapper, or the model itself)."""
    from vizpipe.pipeline.tasks import SEGMENTATION

    return SegmentationOutput(model) if task == SEGMENTATION else model


def fpn_reshape(levels: Any) -> torch.Tensor:
    """An FPN's ordered dict of (N, C, h_i, w_i) maps -> (N, C * levels, h, w) at the last (smallest)
    level's size: grad-cam's ``fasterrcnn_reshape_transform`` (``abs``, bilinear resize, concatenate),
    which sizes by the ``pool`` level, the last one of torchvision's Faster R-CNN FPN."""
    import torch

    maps = list(levels.values())
    size = maps[-1].size()[-2:]
    return torch.cat(
        [torch.nn.functional.interpolate(torch.abs(m), size, mode="bilinear") for m in maps], dim=1
    )
