"""vizpipe's stages: one module per stage, one base class, registered by name.

A stage is looked up by name in ``STAGES`` and imported lazily, so ``stages=[summary]`` never
imports grad-cam or TensorBoard.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pipeline.context import RunContext

#: stage name -> "module:Class". Order is the default pipeline order.
STAGES: dict[str, str] = {
    "summary": "stages.summary:SummaryStage",
    "kernels": "stages.kernels:KernelsStage",
    "features": "stages.features:FeaturesStage",
    "cam": "stages.cam:CamStage",
    "tensorboard": "stages.tensorboard:TensorBoardStage",
}


class Stage(ABC):
    """Base class of every stage.

    The runner makes one instance per run, calls ``validate`` for every requested stage before
    any stage runs (so a bad layer name fails before any work), then ``run`` in order.
    """

    #: the name used in ``stages=[...]``, the config key and the output folder
    name: ClassVar[str]

    def validate(self, ctx: RunContext, settings: Any) -> None:  # noqa: B027 - optional hook
        """Resolve names (layers, classes, methods) against the model; raise ``VizpipeError``.

        May keep what it resolved on ``self`` for ``run``. Must not do heavy work.
        """

    @abstractmethod
    def run(self, ctx: RunContext, settings: Any) -> dict[str, Any]:
        """Collect data, render it under ``ctx.stage_dir(self.name)`` and return the data.

        The returned dict (JSON-able numbers, names, paths relative to the run folder) is kept in
        ``ctx.results[self.name]`` for later stages in the same run.
        """


def get_stage(name: str) -> Stage:
    """Instantiate the stage registered as ``name`` (imports its module lazily)."""
    from pipeline.errors import unknown_choice

    if name not in STAGES:
        raise unknown_choice("stage", name, STAGES, hint="Set e.g. 'stages=[summary,cam]'")
    module_name, cls_name = STAGES[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls()
