"""Train stage: train (or fine-tune) the model on the input's train split and watch it learn (seed §3).

``stages=[train, ...]`` trains ``ctx.model`` in place on the train split of the configured data
set (``input=shapes``, ``imagefolder``, ``cifar10``), validates on its val split after every
epoch, and hands the trained model, back in eval mode, to the stages after it
(``ctx.refresh()``: they see the new predictions). The split the visualisation stages see
(``input.split``, default ``test``) is never trained on.

What it writes (``loop.py`` trains, ``board.py`` logs, ``frames.py`` draws, ``record.py`` records):

* ``tensorboard/train`` and ``tensorboard/val``: two writers, one tag (the seed's §3.6 trick):
  ``loss`` and ``accuracy`` per step (train) and per epoch (val) in one chart each; ``lr``;
  ``weights/<param>`` and ``gradients/<param>`` histograms per epoch; a ``make_grid`` of a
  training batch; the graph once; ``cam_over_time/<image>`` (step = epoch: the slider shows
  attention emerging);
* ``train/checkpoint.pt``: the state_dict after the last good epoch (``model.checkpoint=`` loads
  it, ``weights_only=True``); ``train/history.json``: per-epoch numbers, no timings (same seed,
  same file); ``train/cam_over_time/<image>.png``: one strip per image, epoch 0 (before training)
  on the left;
* the record: key numbers (final train/val accuracy and loss, epochs done, and, for data sets with
  object boxes, the pointing game of ``train.cam_method`` on the visualised images before and
  after training, with chance level beside them).

Within one process (a sweep's jobs under Hydra's basic launcher) an identical training runs once:
later jobs get its weights and files (``reuse.py``). ``train.random_labels`` also trains a copy on
random labels for the CAM stage's data randomisation check (``random_labels.py``).

A non-finite loss stops training with one message; the model gets back the last good weights and
every file stays. Ctrl-C writes ``history.json`` (status ``interrupted``) before it goes on.
``resume=`` goes on from the last epoch's state (``resume.py``: weights, optimizer, scheduler,
step, random generators) and ends with the weights an uninterrupted run ends with (CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict

from vizpipe.pipeline.stage import SharedConfig, Stage, StageResult
from vizpipe.pipeline.tensorboard_io import TBBackend

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.stages.train.plan import TrainPlan


@dataclass
class TrainConfig:
    """``train.*``: train or fine-tune the model on the input's train split (conf/train/default.yaml)."""

    # Passes over the train split (>= 1).
    epochs: int = 5
    # Stop after this many optimizer steps in all (the epoch it falls in is the last); null = no cap.
    max_steps: int | None = None
    # Images per optimizer step (>= 1).
    batch_size: int = 32
    # DataLoader worker processes reading the train and val splits (0 = in this process).
    workers: int = 0
    # Learning rate: the optimizer's lr (and a scheduler's max_lr when it takes one and none is set).
    lr: float = 0.001
    # A torch.optim optimizer: _target_ and its keyword arguments; the stage adds params and lr.
    optimizer: Dict[str, Any] = field(default_factory=lambda: {"_target_": "torch.optim.Adam"})
    # A torch.optim.lr_scheduler {_target_: ..., its arguments}, stepped after every optimizer step;
    # null = constant lr. (Typed Any: an Optional dict cannot be set from the command line.)
    scheduler: Any = None
    # Clip the gradients' total norm to this before each step; null = no clipping.
    grad_clip: float | None = None
    # TensorBoard: loss, accuracy and lr every this many steps (>= 1).
    log_every: int = 1
    # TensorBoard: weight and gradient histograms after every epoch.
    histograms: bool = True
    # TensorBoard: the model graph, once.
    graph: bool = True
    # tensorboardX | torch (torch.utils.tensorboard): the same tags either way.
    backend: TBBackend = TBBackend.tensorboardX
    # CAM over time and the pointing game: any pytorch_grad_cam method (gradient methods are fast).
    cam_method: str = "gradcam"
    # Its layer: auto (the last spatial block) | a dotted layer name.
    cam_layer: Any = "auto"
    # Validation images whose maps are drawn before training and after every epoch; 0 = none.
    cam_images: int = 8
    # Data sets with boxes: the pointing game on the visualised images before and after training.
    pointing_game: bool = True
    # The pointing game's tolerance: the box grows by this fraction of the image side (0..0.5).
    pointing_tolerance: float = 0.03
    # Weight of the image in the CAM overlays, 0..1.
    image_weight: float = 0.5
    # Also train a copy of the untrained model on random labels (RunContext.variants["random_labels"]):
    # the CAM stage's data randomisation check (cam.sanity=[...,data]); twice the training time.
    random_labels: bool = False


class TrainStage(Stage):
    """Train the model on the train split, validate on val, log everything to TensorBoard."""

    name = "train"
    title = "Training"
    config = TrainConfig
    order = 5  # before every stage that looks at the model
    default = False  # only when asked: stages=[train, ...]
    # built from their _target_ (vizpipe.pipeline.factory.targets); torch's own classes are trusted
    targets = {"optimizer": ("torch.optim",), "scheduler": ("torch.optim.lr_scheduler",)}

    def __init__(self) -> None:
        self.plan: TrainPlan | None = None

    def check_settings(self, settings: TrainConfig, shared: SharedConfig) -> None:
        """Numbers, optimizer/scheduler nodes, the CAM method, and an input with splits."""
        from vizpipe.stages.train.plan import check_settings

        check_settings(settings, shared.input_kind)

    def check_model(self, ctx: RunContext, settings: TrainConfig) -> None:
        """Classes vs outputs, the CAM layer, and a dry build of the optimizer and scheduler."""
        from vizpipe.stages.train.plan import make_plan

        self.plan = make_plan(ctx, settings)

    def run(self, ctx: RunContext, settings: TrainConfig) -> StageResult:
        """Train, log, draw and record (see the module docstring)."""
        from vizpipe.stages.train.loop import train
        from vizpipe.stages.train.plan import make_plan

        return train(ctx, settings, self.plan or make_plan(ctx, settings))

    def restore(self, ctx: RunContext, settings: TrainConfig, result: StageResult) -> None:
        """``resume=`` after training finished: the trained weights (its checkpoint) back in the model,
        and the random-label copy (``train.random_labels``) back in ``ctx.variants``."""
        from vizpipe.stages.train import random_labels
        from vizpipe.stages.train.loop import hand_back
        from vizpipe.stages.train.record import CHECKPOINT, load_state

        load_state(ctx.output_dir / CHECKPOINT, ctx.model)
        hand_back(ctx)
        random_labels.restore(ctx, result)
