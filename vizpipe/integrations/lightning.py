"""``VizpipeCallback``: ``vizpipe.Watch`` in a Lightning ``Trainer``, with no calls in your code.

::

    from vizpipe.integrations.lightning import VizpipeCallback

    trainer = Trainer(callbacks=[VizpipeCallback(val_images, cam="gradcam")])
    trainer.fit(module, train_loader, val_loader)   # the callback's .run: report and manifest

The callback makes a ``vizpipe.Watch`` on the ``LightningModule`` when fitting starts and tells
it every training step (the loss your ``training_step`` returns, the learning rate of the first
optimizer, the accuracy you log) and every epoch (the validation numbers you log), then closes it
when fitting ends: the train stage's TensorBoard layout, CAM over time, histograms, pointing game
(with ``boxes``) and report, in ``<trainer.log_dir>/vizpipe`` unless ``logdir`` says otherwise.
Which logged metrics are read is ``metrics`` (defaults: ``train_acc``, ``val_loss``, ``val_acc``;
Lightning's ``_step``/``_epoch`` suffixes are tried too). Only the global rank 0 process watches.

Lightning is an optional extra: ``pip install 'vizpipe[lightning]'`` (``lightning`` or
``pytorch_lightning``, whichever is installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    try:
        import pytorch_lightning as pl
    except ImportError as exc:
        raise ImportError(
            "vizpipe.integrations.lightning needs Lightning: pip install 'vizpipe[lightning]'"
        ) from exc

__all__ = ["DEFAULT_METRICS", "VizpipeCallback"]

#: what each number is called in ``trainer.callback_metrics`` (what your module logs)
DEFAULT_METRICS = {"accuracy": "train_acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}


class VizpipeCallback(pl.Callback):
    """Watch a Lightning fit with ``vizpipe.Watch`` (see the module docstring).

    ``val_images``, ``cam``, ``boxes``, ``labels``, ``categories`` and ``**watch`` are
    ``vizpipe.Watch``'s; ``every_n_steps`` defaults to the trainer's ``log_every_n_steps``.
    """

    def __init__(
        self,
        val_images: Any,
        logdir: str | Path | None = None,
        *,
        every_n_steps: int | None = None,
        metrics: dict[str, str] | None = None,
        **watch: Any,
    ) -> None:
        super().__init__()
        self.val_images, self.logdir, self.every_n_steps = val_images, logdir, every_n_steps
        self.metrics = {**DEFAULT_METRICS, **(metrics or {})}
        self.options = watch
        self.watch: Any = None
        self.run: Any = None  # the vizpipe.Run once fitting ended

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Start watching (epoch 0: weights, maps and, with boxes, the pointing game)."""
        from vizpipe.watch import Watch

        if not trainer.is_global_zero:
            return
        logdir = self.logdir or Path(trainer.log_dir or trainer.default_root_dir) / "vizpipe"
        every = self.every_n_steps or int(getattr(trainer, "log_every_n_steps", 50) or 1)
        self.watch = Watch(pl_module, self.val_images, logdir, every_n_steps=every, **self.options)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """One step: the returned loss, the logged accuracy, the first optimizer's lr."""
        if self.watch is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        lr = None
        if trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
        images = batch[0] if isinstance(batch, list | tuple) else None
        n = int(images.shape[0]) if hasattr(images, "shape") else 1
        first = images if self.watch.steps == 0 else None
        self.watch.step(loss, self._metric(trainer, "accuracy"), lr, images=first, n=n)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """An epoch: the logged validation numbers, histograms, CAM frames."""
        if self.watch is not None:
            self.watch.epoch(self._metric(trainer, "val_loss"), self._metric(trainer, "val_accuracy"))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """The pointing game after training and the report."""
        if self.watch is not None:
            self.run = self.watch.close()

    def _metric(self, trainer: Any, what: str) -> Any:
        name = self.metrics.get(what)
        found = trainer.callback_metrics
        for key in (name, f"{name}_step", f"{name}_epoch"):
            if key and key in found:
                return found[key]
        return None
