"""``vizpipe.Watch``: what the train stage writes, for a training loop you wrote yourself.

::

    watch = vizpipe.Watch(model, val_images, logdir="runs/exp1", every_n_steps=10, cam="gradcam")
    for epoch in range(epochs):
        for x, y in loader:
            ...  # forward, loss, backward, optimizer.step()
            watch.step(loss=loss, accuracy=acc, lr=optimizer.param_groups[0]["lr"])
        watch.epoch(val_loss=val_loss, val_accuracy=val_acc)
    run = watch.close()  # report.html and manifest.json in logdir; run.report_path

It is the train stage's own ``Watcher`` (``vizpipe.stages.train.watch``), so the TensorBoard
layout (``tensorboard/train`` and ``tensorboard/val``, one tag per number: ``loss``, ``accuracy``,
``lr``, ``weights/*`` and ``gradients/*`` histograms, ``cam_over_time/<image>``), the CAM strips,
the pointing game before and after (when ``boxes`` are given) and the report section are the
train stage's. ``val_images`` are read as ``vizpipe.inspect`` reads inputs (a tensor used as it
is, PIL images or paths preprocessed, a Dataset of ``(image, label)``).

Each call leaves the model as it found it (modes, grads, buffers, hooks) and the random
generators where they were, so watching does not change what the loop learns.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from vizpipe.runs import Run

__all__ = ["Watch"]

#: keys of ``cam=`` given as a dict
CAM_KEYS = ("method", "layer", "images")


class Watch:
    """Logs, draws and reports a training loop you wrote (see the module docstring).

    Args:
        model: the model being trained (left as found by every call).
        val_images: the images whose CAMs are drawn after every epoch (and, with ``boxes``,
            scored by the pointing game before and after training).
        logdir: a new folder for TensorBoard, the pictures and the report; None:
            ``outputs/<date>/<time>`` as ``vizpipe.inspect`` names it.
        every_n_steps: loss, accuracy and lr every this many ``step`` calls.
        cam: a CAM method name (``"gradcam"``), or ``{"method", "layer", "images"}``; None: no maps.
        boxes: per image ``(x0, y0, x1, y1)`` in the model input's pixels; enables the pointing game.
        labels: per image its class (the maps are drawn for it); None: each image's top-1 class.
        categories: class names (the strips' captions).
        preprocess: ``input.*`` preprocessing for PIL images and paths (as ``vizpipe.inspect``).
        histograms, graph, backend, image_weight: as ``train.*`` (conf/train/default.yaml).
    """

    def __init__(
        self,
        model: nn.Module,
        val_images: Any,
        logdir: str | Path | None = None,
        *,
        every_n_steps: int = 1,
        cam: str | dict[str, Any] | None = "gradcam",
        boxes: list[Any] | None = None,
        labels: list[int] | None = None,
        categories: list[str] | None = None,
        preprocess: dict[str, Any] | None = None,
        histograms: bool = True,
        graph: bool = True,
        backend: str = "tensorboardX",
        image_weight: float = 0.5,
    ) -> None:
        from vizpipe._guard import caller_state
        from vizpipe.api import _check_model, _new_folder

        _check_model(model)
        self.model = model
        self.settings = _settings(cam, every_n_steps, boxes, histograms, graph, backend, image_weight)
        self._claim = _new_folder(logdir)  # the folder is this watch's until close()
        self.logdir = self._claim.folder
        self.run: Run | None = None
        self._started = time.time()
        try:
            with caller_state(), _grad():
                ctx = _context(model, val_images, self.logdir, labels, boxes, preprocess)
                self._watcher = _watcher(ctx, self.settings, categories)
                self._watcher.__enter__()
                self._watcher.start()
        except BaseException:
            self._claim.release()
            raise

    @property
    def steps(self) -> int:
        """``step`` calls so far."""
        return self._watcher.steps

    def step(
        self,
        loss: Any = None,
        accuracy: Any = None,
        lr: float | None = None,
        *,
        images: Any = None,
        n: int = 1,
    ) -> int:
        """One optimizer step's numbers (tensors or floats); ``images``: the step's input batch,
        for the graph and the input grid at the first step. Returns the step number."""
        if images is not None and not self._watcher._graphed:
            self._first_batch(images)
        return self._watcher.step(_number(loss), _number(accuracy), _number(lr), n=n)

    def epoch(
        self,
        val_loss: Any = None,
        val_accuracy: Any = None,
        *,
        train_loss: Any = None,
        train_accuracy: Any = None,
    ) -> Any:
        """An epoch ended: val numbers, histograms, CAM frames and the epoch's record (returned).

        ``train_loss``/``train_accuracy`` default to the means of this epoch's ``step`` values.
        """
        from vizpipe._guard import caller_state

        if not self._watcher._graphed:
            self._first_batch(None)
        with caller_state(), _grad():
            return self._watcher.epoch(
                _number(val_loss),
                _number(val_accuracy),
                train_loss=_number(train_loss),
                train_accuracy=_number(train_accuracy),
                lr=self._watcher.last_lr,
            )

    def close(self) -> Run:
        """The pointing game after training, the strips and curves, ``manifest.json`` and the report."""
        from vizpipe._guard import caller_state

        if self.run is not None:
            return self.run
        try:
            with caller_state(), _grad():
                try:
                    record = self._watcher.finish()
                finally:
                    self._watcher.__exit__(None, None, None)
            self.run = _report(self.logdir, self._watcher, record, self._started)
        finally:
            self._claim.release()
        return self.run

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _first_batch(self, images: Any) -> None:
        """The graph (on ``images``, else on the watched images) and the grid of ``images``."""
        import torch

        from vizpipe._guard import caller_state

        with caller_state():
            ctx = self._watcher.ctx
            if isinstance(images, torch.Tensor):
                from vizpipe.pipeline.inputs.sources import drawable

                x = images.detach().to(ctx.device)
                rgb = drawable(x, ctx.inputs.mean, ctx.inputs.std, True)
                self._watcher.first_batch(x, rgb)
            else:
                self._watcher.first_batch(ctx.inputs.first().tensor, None)


def _number(value: Any) -> float | None:
    """A float from a float or a one-element tensor (None stays None)."""
    if value is None:
        return None
    return float(value.detach()) if hasattr(value, "detach") else float(value)


def _grad() -> Any:
    import torch

    return torch.enable_grad()  # CAMs need gradients even when a loop calls us under no_grad


def _settings(
    cam: str | dict[str, Any] | None,
    every_n_steps: int,
    boxes: list[Any] | None,
    histograms: bool,
    graph: bool,
    backend: str,
    image_weight: float,
) -> Any:
    """The ``TrainConfig`` the watcher reads, checked by the train stage's own rules."""
    from vizpipe.pipeline.errors import unknown_choice
    from vizpipe.pipeline.tensorboard_io import TBBackend
    from vizpipe.stages.train import TrainConfig
    from vizpipe.stages.train.plan import check_settings

    spec = {"method": cam} if isinstance(cam, str) else dict(cam or {})
    for key in spec:
        if key not in CAM_KEYS:
            raise unknown_choice("Watch cam key", key, CAM_KEYS)
    if backend not in [b.value for b in TBBackend]:
        raise unknown_choice("Watch backend", backend, [b.value for b in TBBackend])
    drawn = cam is not None
    settings = TrainConfig(
        log_every=int(every_n_steps),
        histograms=bool(histograms),
        graph=bool(graph),
        backend=TBBackend(backend),
        cam_method=str(spec.get("method", "gradcam")),
        cam_layer=spec.get("layer", "auto"),
        cam_images=int(spec.get("images", 8)) if drawn else 0,
        pointing_game=drawn and boxes is not None,
        image_weight=float(image_weight),
    )
    if int(every_n_steps) < 1:
        raise ConfigError(f"every_n_steps must be >= 1, got {every_n_steps}")
    check_settings(settings)
    return settings


def _context(
    model: nn.Module,
    given: Any,
    logdir: Path,
    labels: list[int] | None,
    boxes: list[Any] | None,
    preprocess: dict[str, Any] | None,
) -> Any:
    """A run context around the model and the watched images (read as ``vizpipe.inspect`` reads them)."""
    from vizpipe.api import _device_of, _model_name
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.inputs import build_inputs
    from vizpipe.pipeline.inputs.objects import annotate
    from vizpipe.pipeline.lent import LENT_TARGET, lend
    from vizpipe.pipeline.models import preset
    from vizpipe.pipeline.schema import InputConfig, InputKind

    if given is None:
        raise ConfigError("vizpipe.Watch needs val_images: the images whose maps it draws over time")
    from vizpipe.api import PREPROCESS_KEYS

    device = _device_of(model)
    input_cfg = InputConfig(kind=InputKind.objects, limit=None)
    for key, value in (preprocess or {}).items():
        if key not in PREPROCESS_KEYS:
            from vizpipe.pipeline.errors import unknown_choice

            raise unknown_choice("preprocess key", key, PREPROCESS_KEYS)
        setattr(input_cfg, key, value)
    with lend(model, given):
        inputs = build_inputs(input_cfg, preset(LENT_TARGET, {}, model), device, 0, model)
    inputs = annotate(inputs, labels, boxes)
    return RunContext(
        model=model, model_name=_model_name(model), inputs=inputs, device=device, output_dir=logdir
    )


def _watcher(ctx: Any, settings: Any, categories: list[str] | None) -> Any:
    """The train stage's watcher on ``ctx``: CAM layer resolved, history started."""
    import torch

    from vizpipe.stages.train.plan import TrainPlan, resolve_cam
    from vizpipe.stages.train.record import History
    from vizpipe.stages.train.watch import Watcher

    classes = list(categories or ctx.inputs.classes or [])
    ctx.categories = classes or None
    method, layers = resolve_cam(ctx, settings, key="Watch cam layer")
    plan = TrainPlan(classes=classes, method=method, layers=layers)
    history = History(
        model=ctx.model_name,
        seed=0,
        data=ctx.inputs.kind,
        classes=classes,
        train_images=0,
        val_images=len(ctx.inputs),
        settings={"every_n_steps": int(settings.log_every)},
        threads=torch.get_num_threads(),
    )
    return Watcher(ctx, settings, plan, ctx.inputs, history)


def _report(logdir: Path, watcher: Any, record: Any, started: float) -> Run:
    """``manifest.json`` with the train record, and the report, as a run folder has them."""
    from vizpipe.pipeline import manifest as mf
    from vizpipe.pipeline.report import write_run_report
    from vizpipe.pipeline.schema import ReportConfig
    from vizpipe.runs import Run

    ctx = watcher.ctx
    data = {
        "vizpipe": mf.versions().get("vizpipe"),
        "run_dir": str(logdir.resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "command": mf.command_line(),
        "model": ctx.model_name,
        "input": {"kind": "objects", "path": None},
        "device": str(ctx.device),
        "versions": mf.versions(),
        "config": {"train": {"log_every": int(watcher.settings.log_every)}},
        "warnings": list(ctx.warnings),
    }
    manifest = mf.Manifest(logdir, data, ["train"], {"train": "Training"})
    manifest.setup.status = "ok"
    rec = manifest.stages[0]
    rec.status, rec.result, rec.seconds = "ok", record.to_dict(), round(time.time() - started, 3)
    manifest.collect(rec, {})
    manifest.write()
    before = manifest.snapshot()
    path = write_run_report(logdir, ReportConfig())
    manifest.report.status = "ok"
    manifest.collect(manifest.report, before)
    manifest.write()
    return Run(logdir, manifest.status, logdir / mf.MANIFEST, path, {"train": record})
