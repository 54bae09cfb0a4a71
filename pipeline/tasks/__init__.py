"""What a model does (``model.task``), inferred from its output, and what vizpipe reads of that output.

Four tasks, ``model.task`` = ``auto`` (inferred) or one of them:

* ``classification``: one score per class, an (N, K) tensor (or ``.logits``): every model before
  this module, unchanged;
* ``segmentation``: a dict with ``out`` (N, K, H, W), as torchvision's FCN, DeepLabV3 and LRASPP
  return it (``aux`` is ignored);
* ``detection``: a list of one dict per image with ``boxes`` (D, 4), ``labels`` (D,) and
  ``scores`` (D,), as torchvision's Faster/Mask R-CNN, RetinaNet, FCOS and SSD return it in eval mode;
* ``embedding``: a 2-D (N, D) feature vector that is not a classifier's scores: the last module to
  run is no head (``Identity``, ``Flatten``, a pooling or a normalisation, as in grad-cam's
  embeddings tutorial, a ResNet without its ``fc``). A 2-D output from a ``Linear``, ``Conv``,
  ``Sigmoid`` or ``Softmax`` stays a classifier; set ``model.task=embedding`` to say otherwise.

``scores(output, task)`` turns any of them into the (N, K) numbers the stages already understand
(``Probe.logits``, the CAM stage's top-5), so nothing downstream needs to know the shape of a
dict or a list: a segmentation image's class score is the share of its pixels predicted as that
class, a detection image's the best score of a detection of that class (0 when none), an
embedding's its D features. ``detections(output)`` keeps each image's boxes, labels and scores on
the CPU; ``segmentation_logits(output)`` the (N, K, H, W) map. ``wrappers.py`` holds the model
wrappers grad-cam's tutorials write by hand, inferred here instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "TASKS",
    "Detections",
    "detections",
    "infer_task",
    "num_outputs",
    "scores",
    "segmentation_logits",
]

CLASSIFICATION, SEGMENTATION, DETECTION, EMBEDDING = (
    "classification",
    "segmentation",
    "detection",
    "embedding",
)
#: the values of ``model.task`` besides ``auto``
TASKS = (CLASSIFICATION, SEGMENTATION, DETECTION, EMBEDDING)
#: keys every detection dict holds
DETECTION_KEYS = ("boxes", "labels", "scores")
#: the last module of a model whose 2-D output is a feature vector, not class scores
FEATURE_ENDS = (
    "Identity",
    "Flatten",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool2d",
    "LayerNorm",
    "BatchNorm1d",
    "SelectAdaptivePool2d",  # timm's head pooling (num_classes=0)
)


@dataclass
class Detections:
    """One image's detections, on the CPU, highest score first (as torchvision returns them)."""

    boxes: torch.Tensor  # (D, 4) x0, y0, x1, y1 in input pixels
    labels: torch.Tensor  # (D,) int64 class indices
    scores: torch.Tensor  # (D,) float in [0, 1]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def is_detection_output(out: object) -> bool:
    """A list/tuple of dicts, each with boxes, labels and scores."""
    return (
        isinstance(out, list | tuple)
        and len(out) > 0
        and all(isinstance(d, dict) and all(k in d for k in DETECTION_KEYS) for d in out)
    )


def infer_task(out: object, last_type: str | None) -> str:
    """The task a model output shows (see the module docstring); ``last_type``: the class name of
    the last module to finish the forward pass."""
    import torch

    if (
        isinstance(out, dict)
        and "out" in out
        and isinstance(out["out"], torch.Tensor)
        and out["out"].ndim == 4
    ):
        return SEGMENTATION
    if is_detection_output(out):
        return DETECTION
    if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] > 1 and last_type in FEATURE_ENDS:
        return EMBEDDING
    return CLASSIFICATION


def check_task(task: str, out: object, model_name: str) -> None:
    """A ``model.task`` set by hand must fit the output the model gives."""
    import torch

    fits = {
        SEGMENTATION: isinstance(out, dict)
        and isinstance(out.get("out"), torch.Tensor)
        and out["out"].ndim == 4,
        DETECTION: is_detection_output(out),
        EMBEDDING: isinstance(out, torch.Tensor) and out.ndim == 2,
    }
    if task in fits and not fits[task]:
        shown = type(out).__name__ + (f" {tuple(out.shape)}" if isinstance(out, torch.Tensor) else "")
        needs = {
            SEGMENTATION: "a dict with 'out' (N, K, H, W)",
            DETECTION: "a list of dicts with boxes, labels and scores (eval mode)",
            EMBEDDING: "an (N, D) tensor",
        }[task]
        raise ConfigError(
            f"model.task={task} needs {needs}, but {model_name} returns {shown}; "
            f"set model.task=auto (inferred: {infer_task(out, None)}) or another task"
        )


def segmentation_logits(out: Any) -> torch.Tensor:
    """The (N, K, H, W) class scores of a segmentation output (``out["out"]``, or the tensor itself)."""
    return out["out"] if isinstance(out, dict) else out


def detections(out: Any) -> list[Detections]:
    """Each image's detections of a detection output, detached, on the CPU."""
    return [
        Detections(
            boxes=d["boxes"].detach().float().cpu(),
            labels=d["labels"].detach().long().cpu(),
            scores=d["scores"].detach().float().cpu(),
        )
        for d in out
    ]


def num_outputs(model: nn.Module, task: str, dets: list[Detections] | None = None) -> int:
    """Classes of a detector: its head's ``num_classes`` (torchvision's box predictor, RetinaNet's and
    FCOS's classification head), else one more than the largest label it returned."""
    for path in ("roi_heads.box_predictor.cls_score", "head.classification_head"):
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        found = getattr(module, "out_features", None) or getattr(module, "num_classes", None)
        if found:
            return int(found)
    labels = [int(d.labels.max()) for d in dets or [] if len(d)]
    return max(labels, default=0) + 1


def model_output(out: object) -> torch.Tensor:
    """The logits tensor of a model output (tensor, ``.logits``, ``["out"]`` or first element)."""
    import torch
    from vizpipe.pipeline.hooks import first_tensor

    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, dict) and "out" in out:
        return out["out"]
    t = first_tensor(out)
    if t is None:
        raise TypeError(f"model returned {type(out).__name__}, which holds no tensor")
    return t


def scores(out: Any, task: str, model: nn.Module | None = None) -> torch.Tensor:
    """The (N, K) per-image class numbers of any task's output, float32 on the CPU (module docstring)."""
    import torch

    if task == SEGMENTATION:
        logits = segmentation_logits(out).detach()
        k = int(logits.shape[1])
        predicted = logits.argmax(dim=1).flatten(1)  # (N, H*W)
        counts = torch.zeros(predicted.shape[0], k, dtype=torch.float32, device=predicted.device)
        counts.scatter_add_(1, predicted, torch.ones_like(predicted, dtype=torch.float32))
        return (counts / max(predicted.shape[1], 1)).cpu()
    if task == DETECTION:
        found = detections(out)
        k = (
            num_outputs(model, task, found)
            if model is not None
            else 1 + max((int(d.labels.max()) for d in found if len(d)), default=0)
        )
        best = torch.zeros(len(found), k, dtype=torch.float32)
        for i, d in enumerate(found):
            for label, score in zip(d.labels.tolist(), d.scores.tolist(), strict=True):
                if 0 <= label < k:
                    best[i, label] = max(float(best[i, label]), float(score))
        return best
    return model_output(out).detach().float().cpu()
