"""The run context handed to every stage: runtime objects built once per run."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """One batch, as the model sees it and as a person sees it."""

    tensor: torch.Tensor  # (N, C, H, W) model input, on the run's device
    rgb: np.ndarray  # (N, H, W, 3) float32 in [0, 1], un-normalised, same H×W as tensor
    names: list[str]  # per-image names, unique and file-name safe (e.g. "grace_hopper")
    sources: list[str]  # where each image came from (a path or a description)
    mean: list[float]  # normalisation used (for un-normalising)
    std: list[float]
    files: list[Path] = field(default_factory=list)  # input files read (hashed in the manifest)


@dataclass
class Probe:
    """What one forward pass over the real input tells about the model."""

    logits: torch.Tensor  # (N, K) on CPU, float32
    shapes: dict[str, tuple[int, ...]]  # module name -> output shape (first call)
    types: dict[str, str]  # module name -> class name
    calls: dict[str, int]  # module name -> number of calls in one forward


@dataclass
class RunContext:
    """Runtime objects shared by the stages of one run.

    Stages read from it and write files only under ``stage_dir(<their name>)``. Nothing here reads
    ``HydraConfig``, so tests build contexts with the Compose API or by hand.
    """

    model: nn.Module  # in eval mode, on ``device``
    model_name: str
    inputs: Inputs
    device: torch.device
    output_dir: Path
    seed: int = 0
    categories: list[str] | None = None  # class names from the weights' meta, if any
    weights: str | None = None  # weights name (e.g. "ResNet18_Weights.IMAGENET1K_V1") or None
    nonfinite_params: list[str] = field(default_factory=list)  # parameters with NaN/inf
    results: dict[str, Any] = field(default_factory=dict)  # stage name -> data it returned
    warnings: list[str] = field(default_factory=list)  # shown in the manifest and report
    _probe: Probe | None = field(default=None, repr=False)

    def stage_dir(self, name: str) -> Path:
        """The folder a stage writes into (created on first use)."""
        path = self.output_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def warn(self, message: str) -> None:
        """Log a warning and keep it for the manifest and report."""
        log.warning(message)
        self.warnings.append(message)

    def probe(self) -> Probe:
        """One no-grad forward pass over the inputs, cached: logits and every module's output shape."""
        if self._probe is None:
            from pipeline.layers import probe_model

            self._probe = probe_model(self.model, self.inputs.tensor)
        return self._probe

    @property
    def num_classes(self) -> int:
        """Number of model outputs per image (K of the (N, K) logits)."""
        return int(self.probe().logits.shape[1])

    def class_name(self, index: int) -> str | None:
        """Category name of class ``index`` when the weights carry names, else None."""
        if self.categories and 0 <= index < len(self.categories):
            return self.categories[index]
        return None

    def top_k(self, k: int = 5) -> list[list[dict[str, Any]]]:
        """Per image, the top-k predictions: ``[{"class", "name", "prob", "logit"}, ...]``.

        Probabilities are softmax over the outputs (sigmoid for a single-output model).
        """
        import torch

        logits = self.probe().logits
        if logits.shape[1] == 1:
            probs = torch.sigmoid(logits)
        else:
            probs = torch.softmax(logits, dim=1)
        k = min(k, logits.shape[1])
        top = torch.topk(probs, k, dim=1)
        out: list[list[dict[str, Any]]] = []
        for i in range(logits.shape[0]):
            row = []
            for p, c in zip(top.values[i].tolist(), top.indices[i].tolist(), strict=True):
                row.append({"class": c, "name": self.class_name(c), "prob": p, "logit": float(logits[i, c])})
            out.append(row)
        return out
