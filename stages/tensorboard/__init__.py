"""TensorBoard stage: one event file per run that stock TensorBoard reads (seed §3).

Seed §3: ``SummaryWriter``, ``add_graph``, ``add_image(s)`` with ``make_grid``, ``add_scalar``,
``add_histogram``. Everything goes through ONE writer into ``<run>/tensorboard/`` (closed in
``finally``), so ``tensorboard --logdir <sweep>`` shows each job as one run named by its folder.
The backend (``tensorboardX`` or ``torch.utils.tensorboard``) changes nothing in the tags.

What is logged (``collect.py``; every earlier stage is read through its ``StageResult`` only):

========================================  ==========  ===========================================
tag                                       kind        from
========================================  ==========  ===========================================
(graph)                                   graph       the GraphDef traced on the first batch
``input/batch``, ``input/grid``           images      ``add_images``; one ``make_grid``
each earlier picture's ``tag``            images      e.g. ``kernels/<layer>``,
                                                      ``features/<layer>/<image>``, ``cam/...``
each earlier scalar's / histogram's name  scalars,    e.g. ``activations/<layer>/mean``; when no
                                          histograms  stage recorded activations: the blocks'
``weights/<module>``, ``biases/<module>`` histograms  parameters (else ``params/<name>``)
each earlier text's ``tag``,              text        e.g. ``summary/torchinfo``; the top-5 of the
``predictions/top5``, ``config/resolved``             first batch; ``manifest.json``'s config
``hparams/*``                             scalars     one HParams row: model + the stages'
                                                      ``params`` -> their key numbers
========================================  ==========  ===========================================

Tag parts are made safe (``vizpipe.pipeline.names``) and unique. Everything is at the step each record
says (0 for a look at one model). ``add_hparams`` opens a timestamped sub-run in both libraries,
so the hparams summaries are written through the run's own writer; two tensorboardX writers
opened in the same second in one folder share a file name, so there is one writer and its file
name carries the ``.vizpipe`` suffix.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.stage import SharedConfig, Stage, StageResult
from vizpipe.pipeline.tensorboard_io import PACKAGES, TBBackend, backend_value

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext


@dataclass
class TensorboardConfig:
    """``tensorboard.*``: event files under <run>/tensorboard (seed §3)."""

    # tensorboardX | torch (torch.utils.tensorboard); the same tags either way.
    backend: TBBackend = TBBackend.tensorboardX
    # add_graph on the real input (a model that cannot be traced only warns).
    graph: bool = True
    # add_images of the input batch and one make_grid image.
    images: bool = True
    # The pictures earlier stages of this run made (kernel grids, feature grids, CAM overlays).
    pictures: bool = True
    # Weight and bias histograms of every layer with parameters.
    histograms: bool = True
    # Earlier stages' scalars and histograms (activation statistics); without any, the blocks'.
    activations: bool = True
    # Top-5 predictions, earlier stages' texts (torchinfo table) and the resolved config.
    text: bool = True
    # One HParams row (model and the stages' settings -> their key numbers).
    hparams: bool = True


class TensorBoardStage(Stage):
    """Event files for stock TensorBoard: graph, images, histograms, scalars, text, hparams."""

    name = "tensorboard"
    title = "TensorBoard"
    config = TensorboardConfig
    order = 90  # last in the default list
    default = True
    reads_records = True  # it logs the records of the stages before it: every list puts it last

    def check_settings(self, settings: TensorboardConfig, shared: SharedConfig) -> None:
        """The packages the backend (and the graph tracer) need are installed."""
        backend = backend_name(settings)
        packages = [PACKAGES[backend]] + (["tensorboard"] if settings.graph else [])
        for package in dict.fromkeys(packages):
            if importlib.util.find_spec(package) is None:
                raise ConfigError(
                    f"tensorboard.backend={backend} needs the '{package}' package, which is not "
                    f"installed; pip install {package} (or: pip install -e .)"
                )

    def run(self, ctx: RunContext, settings: TensorboardConfig) -> StageResult:
        """Collect what to log from the context and earlier stages' records, then write one file."""
        from vizpipe.stages.tensorboard.collect import collect
        from vizpipe.stages.tensorboard.write import render

        return render(ctx, settings, collect(ctx, settings))


def backend_name(settings: TensorboardConfig) -> str:
    """The backend as a plain string (the schema gives an Enum, hand-made settings a str)."""
    return backend_value(settings.backend)
