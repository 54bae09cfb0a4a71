"""grad-cam targets for every task, made the way the library's tutorials make them.

A target turns one image's model output into the number a CAM explains:

* classification: ``ClassifierOutputTarget(class)`` (``adapter.targets_for``);
* segmentation: the library's ``SemanticSegmentationTarget(category, mask)``: the class's scores
  summed over a mask (the segmentation tutorial: the pixels predicted as that class);
* detection: the library's ``FasterRCNNBoxScoreTarget(labels, bounding_boxes)``: for each given
  box, the IoU plus score of the output box that overlaps it most with the same label (0 when
  none overlaps by ``iou_threshold``). The boxes are the tutorial's: the detections' boxes cast to
  ``np.int32`` (it draws and targets the same integer boxes);
* embedding: ``SimilarityToConceptTarget(features)``, the embeddings tutorial's class (the library
  ships none): the cosine similarity of the image's features to a concept's.

``anchored`` keeps a target differentiable when it finds nothing (a detection target whose box no
output box matches returns a constant 0, and the library's backward pass would fail): zero times
the output is added, so the map is flat (and reported invalid), never an exception.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "SimilarityToConceptTarget",
    "anchored",
    "box_target",
    "int_boxes",
    "segmentation_target",
]


class SimilarityToConceptTarget:
    """The embeddings tutorial's target: cosine similarity of an image's (D,) features to a concept's."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        """(D,) features -> their cosine similarity to the concept (a 0-d tensor)."""
        import torch

        cos = torch.nn.CosineSimilarity(dim=0)
        return cos(model_output, self.features.to(model_output.device))


class Anchored:
    """A target that stays attached to the graph: ``target(out)``, plus ``0 * out`` when it is not."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __call__(self, model_output: Any) -> torch.Tensor:
        """The target's value; a constant one gets a zero term that depends on the output."""
        value = self.target(model_output)
        if getattr(value, "requires_grad", True):
            return value
        ref = model_output["scores"] if isinstance(model_output, dict) else model_output
        return value + 0.0 * ref.sum()


def anchored(targets: list[Any]) -> list[Any]:
    """``Anchored`` around each target (see the module docstring)."""
    return [Anchored(t) for t in targets]


def segmentation_target(category: int, mask: np.ndarray) -> Any:
    """The library's ``SemanticSegmentationTarget`` for ``category`` over the (H, W) ``mask`` (0/1)."""
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    return SemanticSegmentationTarget(int(category), np.asarray(mask, dtype=np.float32))


def int_boxes(boxes: Any) -> np.ndarray:
    """(D, 4) boxes as the detection tutorial targets and draws them: ``np.int32`` (truncated)."""
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4).astype(np.int32)


def box_target(labels: list[int], boxes: Any, iou_threshold: float = 0.5) -> Any:
    """The library's ``FasterRCNNBoxScoreTarget`` for these labels and (D, 4) boxes (``int_boxes``)."""
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    return FasterRCNNBoxScoreTarget(
        labels=[int(v) for v in labels], bounding_boxes=int_boxes(boxes), iou_threshold=iou_threshold
    )
