"""torchvision's segmentation and detection models: which names they are, and their preprocessing.

A classifier's weights carry an ``ImageClassification`` preset (resize, crop, mean, std) that
vizpipe reads for its inputs (``vizpipe.pipeline.inputs.images.preprocessing``). Segmentation
weights carry ``SemanticSegmentation`` (resize to 520, ImageNet's mean and std, no crop) and
detection weights ``ObjectDetection`` (nothing: the detector resizes and normalises inside, in its
``GeneralizedRCNNTransform``). ``TaskPreset`` reads like a classifier's weights (the attributes
vizpipe reads) for both, with the pretrained weights or without (random init: the same numbers,
from the weights' metadata, which needs no download):

* segmentation: the shorter side resized to the preset's size, then centre-cropped square (so a
  folder of images of any size batches; torchvision's preset does not crop), ImageNet's mean/std;
* detection: resized and cropped to the detector's own ``transform.min_size`` (320 for the
  ``_320_`` models, 800 for the others), pixels in [0, 1] (mean 0, std 1): the detector normalises.

Category names come only with pretrained weights (as for classifiers). A torchvision detector
object handed to ``vizpipe.inspect`` gets the detection preset too (it normalises inside).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

__all__ = ["TaskPreset", "torchvision_task"]

#: torchvision's model modules per task (their ``list_models`` name the models)
TASK_MODULES = {"segmentation": "segmentation", "detection": "detection"}


def torchvision_task(name: str) -> str | None:
    """``segmentation`` or ``detection`` when torchvision registers ``name`` there, else None."""
    import torchvision

    for task, module in TASK_MODULES.items():
        if name in torchvision.models.list_models(module=getattr(torchvision.models, module)):
            return task
    return None


class TaskPreset:
    """A segmentation or detection model's preprocessing, read like a classifier's weights enum."""

    def __init__(self, name: str, task: str, weights: Any, model: Any) -> None:
        import torchvision
        from torchvision.transforms import InterpolationMode

        self.name, self.task, self.weights = name, task, weights
        meta = dict(getattr(weights, "meta", {}) or {})
        self.meta: dict[str, Any] = {"categories": meta.get("categories") if weights is not None else None}
        if task == "detection":
            side = int(_min_size(model) or 800)
            mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
            interpolation = InterpolationMode.BILINEAR
        else:
            t = (weights or torchvision.models.get_model_weights(name).DEFAULT).transforms()
            side = int(t.resize_size[0] if isinstance(t.resize_size, list | tuple) else t.resize_size)
            mean, std = [float(v) for v in t.mean], [float(v) for v in t.std]
            interpolation = t.interpolation
        self._transforms = SimpleNamespace(
            resize_size=[side], crop_size=[side], mean=mean, std=std, interpolation=interpolation
        )

    def transforms(self) -> Any:
        """Resize, crop, mean, std and interpolation (the attributes vizpipe reads)."""
        return self._transforms

    def __str__(self) -> str:
        return (
            str(self.weights)
            if self.weights is not None
            else f"{self.name} (random init, {self.task} preset)"
        )


def _min_size(model: Any) -> int | None:
    """A torchvision detector's ``transform.min_size`` (its input's shorter side), if it has one."""
    size = getattr(getattr(model, "transform", None), "min_size", None)
    if isinstance(size, list | tuple):
        return int(size[0]) if size else None
    return int(size) if size else None
