"""The run context handed to every stage: runtime objects built once per run."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.layers import Probe, top_classes

if TYPE_CHECKING:
    import torch
    from torch import nn
    from vizpipe.pipeline.inputs import Inputs
    from vizpipe.pipeline.progress import Progress
    from vizpipe.pipeline.writer import Writer

log = logging.getLogger(__name__)

__all__ = ["RunContext"]

#: final modules whose output is already a probability (``model.output=auto``)
PROBABILITY_MODULES = ("Sigmoid", "Softmax")


def _progress_off() -> Progress:
    from vizpipe.pipeline.progress import Progress

    return Progress.off()


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
    categories: list[str] | None = None  # class names: model.categories, the weights' or the data set's
    weights: str | None = None  # weights name (e.g. "ResNet18_Weights.IMAGENET1K_V1") or None
    blocks_config: str | None = None  # model.blocks as configured (None: found from the model)
    output_kind: str = "auto"  # model.output: auto | logits | probabilities
    task_config: str = "auto"  # model.task as configured (auto: inferred by the probe; see ``task``)
    nonfinite_params: list[str] = field(default_factory=list)  # parameters with NaN/inf
    writers: int | None = None  # background writer threads (``writers``; None = auto): ``writer()``
    results: dict[str, Any] = field(default_factory=dict)  # stage name -> its StageResult
    warnings: list[str] = field(default_factory=list)  # shown in the manifest and report
    # the values each key of this job's sweep takes, e.g. {"cam.layer": ["layer1", "layer2"]}
    # (vizpipe's sweeper; empty outside a sweep): lets a stage compute its siblings' work in one go
    sweep: dict[str, list[str]] = field(default_factory=dict)
    # results a stage computed on this very build (model and inputs), kept with it by the build
    # cache for later jobs of this process (``vizpipe.pipeline.cache``); keys start with the stage's name
    shared: dict[Any, Any] = field(default_factory=dict, repr=False)
    # other versions of the model this run made, by name, for the stages after (the train stage's
    # "random_labels": the same network trained on random labels, the CAM stage's data
    # randomisation check); never cached with the build
    variants: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    # the running stage's progress record (``vizpipe.pipeline.progress``; the runner sets it per
    # stage): a streamed stage records each finished batch there, and skips the finished ones
    # of an interrupted run it resumes
    progress: Progress = field(default_factory=lambda: _progress_off(), repr=False)
    _probe: Probe | None = field(default=None, repr=False)
    _blocks: list[str] | None = field(default=None, repr=False)
    _claimed: set[str] = field(default_factory=set, repr=False)

    def stage_dir(self, name: str) -> Path:
        """The folder a stage writes into (created on first use)."""
        path = self.output_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def claim(self, rel: str) -> Path:
        """The absolute path of run-relative artifact ``rel``; writing one path twice in a run is a bug
        (two outputs would overwrite each other), so a second claim raises."""
        if rel in self._claimed:
            raise RuntimeError(f"Two outputs of this run would be written to {rel}; refusing to overwrite it")
        self._claimed.add(rel)
        path = self.output_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def writer(self, limit: int = 256) -> Writer:
        """A background writer for a streamed stage's files (``vizpipe.pipeline.writer``): ``writers``
        threads, at most ``limit`` files pending; use it as a context manager."""
        from vizpipe.pipeline.writer import Writer

        return Writer(self.writers, limit=limit, root=self.output_dir)

    def warn(self, message: str) -> None:
        """Log a warning and keep it for the manifest and report."""
        log.warning(message)
        self.warnings.append(message)

    def probe(self) -> Probe:
        """One no-grad forward pass over the first batch, cached: outputs and every module's shape."""
        if self._probe is None:
            from vizpipe.pipeline.hooks import preserved
            from vizpipe.pipeline.layers import probe_model

            with preserved(self.model):
                self._probe = probe_model(self.model, self.inputs.first().tensor, self.task_config)
        return self._probe

    @property
    def task(self) -> str:
        """What the model does: classification | segmentation | detection | embedding
        (``model.task``, or inferred from its output by the probe: ``vizpipe.pipeline.tasks``)."""
        return self.probe().task

    def refresh(self) -> None:
        """Forget what was measured on the model (the probe's outputs): call after changing its
        weights, e.g. after training, so later stages see the new predictions."""
        self._probe = None

    def blocks(self) -> list[str]:
        """The model's blocks: ``model.blocks`` when set, else found (``vizpipe.pipeline.layers``)."""
        if self._blocks is None:
            from vizpipe.pipeline.layers import model_blocks

            self._blocks = model_blocks(self.model, self.probe(), self.blocks_config)
        return self._blocks

    @property
    def num_classes(self) -> int:
        """Number of model outputs per image (K of the (N, K) outputs)."""
        return int(self.probe().logits.shape[1])

    def class_name(self, index: int) -> str | None:
        """Category name of class ``index`` when the weights carry names, else None."""
        if self.categories and 0 <= index < len(self.categories):
            return self.categories[index]
        return None

    @property
    def outputs_are_probabilities(self) -> bool:
        """``model.output``: probabilities declared, or auto and the last module is a Sigmoid/Softmax."""
        if self.output_kind == "probabilities" or self.task in ("segmentation", "detection"):
            return True  # a segmentation's pixel shares and a detector's scores (``vizpipe.pipeline.tasks``)
        if self.output_kind == "logits":
            return False
        last = self.probe().last
        return last is not None and self.probe().types.get(last) in PROBABILITY_MODULES

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """(N, K) model outputs -> probabilities: as they are when the model outputs probabilities,
        else softmax over the K outputs (sigmoid when K is 1)."""
        import torch

        outputs = outputs.detach().float()
        if self.outputs_are_probabilities:
            return outputs
        return torch.sigmoid(outputs) if outputs.shape[1] == 1 else torch.softmax(outputs, dim=1)

    def top_k(self, k: int = 5, outputs: torch.Tensor | None = None) -> list[list[dict[str, Any]]]:
        """Per image, the top-k predictions ``{"class", "name", "prob", "logit"}`` (``outputs``
        default: the probe's, i.e. the first batch); ``prob`` is None for an invalid output."""
        from vizpipe.pipeline.files import finite

        logits = self.probe().logits if outputs is None else outputs.detach().float().cpu()
        if self.task == "embedding":  # features, not classes: nothing to rank
            return [[] for _ in range(logits.shape[0])]
        probs = self.probabilities(logits)
        ranked = top_classes(logits, k)  # ties: the lowest class index first, as every top-1
        return [
            [
                {
                    "class": c,
                    "name": self.class_name(c),
                    "prob": finite(probs[i, c]),
                    "logit": finite(logits[i, c]),
                }
                for c in ranked[i].tolist()
            ]
            for i in range(logits.shape[0])
        ]
