"""``cam/cam.json``: the CAM stage's typed document, written and read through these dataclasses.

``CamDoc.load(path)`` reads a ``cam.json`` back (unknown or missing keys are an error), so tests
and tools check it through the same types the stage writes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vizpipe.pipeline.stage import from_dict

__all__ = ["CamDoc", "CamImage", "CamMap", "ClassSummary", "Detection", "Prediction"]


@dataclass
class Prediction:
    """One of an image's top-5 predictions."""

    class_index: int
    name: str | None
    prob: float | None  # None: the model's output is not a finite number


@dataclass
class CamMap:
    """One map: an image × layer (group) × target class."""

    layer: str  # the layer, or "a+b" for a map averaged over several layers
    target: int
    target_name: str | None
    score: float | None  # the model's probability of ``target``; None: the model or input is not finite
    logit: float | None  # its raw output
    overlay: str  # run-relative paths of the files written for this map
    heatmap: str
    npy: str
    metrics: dict[str, float | None] = field(default_factory=dict)  # cam.metrics + localisation
    valid: bool = True  # False: see invalid_reason; left out of the metrics and every mean
    invalid_reason: str | None = None  # non-finite model, input or map, or a flat (constant) map
    # segmentation, detection, embedding (``targets.py``; left out of cam.json for a classifier):
    key: str | None = None  # the target's part of the file names (``<layer>__<key>``)
    detail: str | None = None  # what the target is: its mask, its detections, its concept


@dataclass
class Detection:
    """One detection of a detector (``model.task=detection``)."""

    index: int  # its rank in the model's output (by score, 0 = the best)
    label: int
    name: str | None
    score: float
    box: list[float]  # x0, y0, x1, y1 in input pixels


@dataclass
class CamImage:
    """One input image with its predictions and maps."""

    name: str  # the unique output name (folder cam/<name>/)
    source: str  # where it came from (a path, or a description)
    top5: list[Prediction]
    maps: list[CamMap]
    label: int | None = None  # the known class (data sets with labels), else None
    box: list[float] | None = None  # the object's box x0, y0, x1, y1 in input pixels, if known
    valid: bool = True  # False: the input holds NaN/inf
    # segmentation and detection (left out of cam.json for a classifier): the picture of what the
    # model predicts (its mask, or its boxes with labels and scores), and a detector's detections
    prediction: str | None = None
    detections: list[Detection] | None = None
    # the model's probability of ``label`` (left out of cam.json when None: no label, or not finite)
    label_score: float | None = None


@dataclass
class ClassSummary:
    """Aggregates over the images of one class (the label when known, else the top-1 class)."""

    class_index: int
    name: str | None
    count: int
    top1_accuracy: float | None  # None when labels are unknown
    mean_score: float | None  # mean probability of the class each valid map explains (``CamMap.score``)
    metrics: dict[str, float | None] = field(default_factory=dict)  # means of each map metric
    # mean probability of the images' own label (left out of cam.json when None: no labels)
    mean_label_score: float | None = None


@dataclass
class CamDoc:
    """Everything the CAM stage computed (``cam/cam.json``)."""

    method: str  # the library's class name, e.g. GradCAM
    method_key: str  # vizpipe's canonical key, e.g. gradcam
    layers: list[str]
    targets: Any  # cam.target_class as configured (null = each image's top-1)
    reshape: dict[str, str]  # layer -> how its output became maps
    metric_targets: dict[str, str]  # metric -> what it scores (softmax probability / raw output)
    images: list[CamImage]
    classes: list[ClassSummary] = field(default_factory=list)
    means: dict[str, float | None] = field(default_factory=dict)  # over every valid map
    grouped_by: str = "top-1 class"  # what ``classes`` groups by: "label" or "top-1 class"
    forward_passes: int = 0  # perturbation passes (ScoreCAM/AblationCAM), counted
    task: str | None = None  # the model's task when it is not a classifier (``model.task``)

    def to_json(self) -> str:
        """The JSON text written to ``cam.json`` (NaN/inf are refused: the stage writes None).

        The task fields and the label's probability (``OPTIONAL``) are left out while None: an
        unlabelled classifier's ``cam.json`` is as it was before vizpipe knew other tasks or labels.
        """
        return json.dumps(_drop_unset(dataclasses.asdict(self)), indent=2, allow_nan=False) + "\n"

    @classmethod
    def load(cls, path: Path | str) -> CamDoc:
        """Read a ``cam.json`` into the record (unknown or missing keys raise)."""
        return from_dict(cls, json.loads(Path(path).read_text(encoding="utf-8")))


#: fields written only when set (the task fields of ``CamMap``, ``CamImage`` and ``CamDoc``; the
#: label's probability of ``CamImage`` and ``ClassSummary``, known only for a labelled data set)
OPTIONAL = {"key", "detail", "prediction", "detections", "task", "label_score", "mean_label_score"}


def _drop_unset(doc: Any) -> Any:
    """``doc`` without the ``OPTIONAL`` keys whose value is None, at any depth."""
    if isinstance(doc, dict):
        return {k: _drop_unset(v) for k, v in doc.items() if not (k in OPTIONAL and v is None)}
    if isinstance(doc, list):
        return [_drop_unset(v) for v in doc]
    return doc
