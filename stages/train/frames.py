"""CAMs during training: a few validation images' maps every epoch, and the pointing game.

``CamFrames`` keeps the first ``train.cam_images`` images of the val split and draws the maps of
``train.cam_method`` for each image's true class before training (epoch 0) and after every
epoch: logged to TensorBoard with step = epoch, and put side by side in one strip per image
(``train/cam_over_time/<image>.png``, epoch 0 on the left) for the report.

``measure`` scores the visualised images (``ctx.inputs``, the split the CAM stage sees) with the
same method for each image's top-1 class, as the CAM stage does by default: top-1 accuracy and,
when the data set knows the object boxes, the pointing game and energy in box
(``vizpipe.pipeline.gradcam.localisation``). The train stage measures before and after training.

Both run the model in eval mode inside ``vizpipe.pipeline.hooks.preserved``: training mode, gradients,
``requires_grad`` and buffers are as they were afterwards, so drawing never changes training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from vizpipe.pipeline.names import unique_slugs

if TYPE_CHECKING:
    import torch
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.inputs import Inputs
    from vizpipe.stages.train.plan import TrainPlan

STRIP_FACTOR = 2  # strips are drawn at twice the input's size (nearest neighbour)


@dataclass
class CamSettings:
    """The options ``CamRunner`` reads (the CAM stage's defaults)."""

    batch_size: int = 32  # perturbation methods' batch
    freeze_params: bool = True
    eigen_smooth: bool = False
    aug_smooth: bool = False


def cam_maps(
    ctx: RunContext, plan: TrainPlan, x: torch.Tensor, classes: list[int] | None
) -> tuple[Any, np.ndarray]:
    """(logits (B, K), maps (B, H, W)) of ``x`` for ``classes`` (None: each top-1), in eval mode."""
    import torch
    from vizpipe.pipeline.gradcam.adapter import CamRunner
    from vizpipe.pipeline.hooks import preserved
    from vizpipe.pipeline.layers import model_output

    assert plan.method is not None, "cam_maps needs a CAM method"
    model = ctx.model
    with preserved(model):
        model.eval()
        with CamRunner(model, CamSettings(), plan.method, plan.layers) as runner:
            logits = None
            if not runner.one_forward:
                with torch.no_grad():
                    logits = model_output(model(x)).detach().float().cpu()
            sets = None if classes is None else [list(classes)]
            logits, results = runner.maps(x, sets, logits)
    return logits, results[0][0]


class CamFrames:
    """The maps of a few fixed validation images, before training and after every epoch."""

    def __init__(
        self, ctx: RunContext, plan: TrainPlan, val: Inputs, count: int, image_weight: float
    ) -> None:
        self.ctx, self.plan, self.image_weight = ctx, plan, float(image_weight)
        self.batch = None
        if count > 0 and plan.method is not None and len(val) > 0:
            from dataclasses import replace

            val = replace(val, batch_size=min(count, len(val)), _first=None)
            self.batch = val.first()
        names = self.batch.names if self.batch is not None else []
        self.names = unique_slugs(names) if names else []
        self.frames: dict[str, list[np.ndarray]] = {n: [] for n in self.names}
        self.epochs: list[int] = []

    def capture(self, epoch: int) -> dict[str, np.ndarray]:
        """Draw every image's map for its true class now; returns name -> (H, W, 3) uint8 overlay."""
        if self.batch is None:
            return {}
        from pytorch_grad_cam.utils.image import show_cam_on_image

        labels = [int(v) if v is not None else 0 for v in self.batch.labels]
        _, maps = cam_maps(self.ctx, self.plan, self.batch.tensor, labels)
        out = {}
        for i, name in enumerate(self.names):
            mask = np.clip(np.nan_to_num(maps[i], nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
            rgb = np.asarray(self.batch.rgb[i], dtype=np.float32)  # (H, W, 3) in [0, 1]
            overlay = show_cam_on_image(rgb, mask, use_rgb=True, image_weight=self.image_weight)
            self.frames[name].append(overlay)
            out[name] = overlay
        self.epochs.append(epoch)
        return out

    def strips(self) -> list[tuple[str, str, np.ndarray]]:
        """Per image: (name, caption, strip (H, W, 3) uint8), epoch 0 on the left."""
        from vizpipe.pipeline.render import tile_grid

        if self.batch is None or not self.epochs:
            return []
        out = []
        layer = "+".join(x.name for x in self.plan.layers)
        span = (
            f"epochs {self.epochs[0]}..{self.epochs[-1]}"
            if len(self.epochs) > 1
            else f"epoch {self.epochs[0]}"
        )
        for i, name in enumerate(self.names):
            label = self.batch.labels[i]
            cls = (
                self.plan.classes[label] if label is not None and 0 <= label < len(self.plan.classes) else "?"
            )
            tiles = np.stack(self.frames[name])  # (E, H, W, 3)
            strip = tile_grid(tiles, len(tiles), factor=STRIP_FACTOR)
            caption = (
                f"{name}: {self.plan.method.name if self.plan.method else ''} on {layer} for its class "
                f"{label} {cls}, {span} left to right (0 = before training)"
            )
            out.append((name, caption, strip))
        return out


def measure(ctx: RunContext, plan: TrainPlan, tolerance: float) -> dict[str, float | None]:
    """On ``ctx.inputs``: top-1 accuracy and, with boxes, the pointing game, energy in box and
    ``chance`` (the pointing game of a uniformly random point: the mean share of the image the
    grown box covers)."""
    from vizpipe.pipeline.gradcam.localisation import localisation

    hits: list[float] = []
    energy: list[float] = []
    shares: list[float] = []
    correct: list[bool] = []
    for batch in ctx.inputs.batches("train: pointing game"):
        logits, maps = cam_maps(ctx, plan, batch.tensor, None)
        top1 = logits.argmax(dim=1).tolist()
        h, w = maps.shape[1:]
        for i, label in enumerate(batch.labels):
            if label is not None:
                correct.append(top1[i] == label)
            box = batch.boxes[i]
            if box is None:
                continue
            scores = localisation(maps[i], box, tolerance)
            if scores["pointing_game"] is not None:
                hits.append(scores["pointing_game"])
            if scores["energy_in_box"] is not None:
                energy.append(scores["energy_in_box"])
            pad = tolerance * max(h, w)
            bw = min(w, box[2] + pad) - max(0.0, box[0] - pad)
            bh = min(h, box[3] + pad) - max(0.0, box[1] - pad)
            shares.append(max(0.0, bw) * max(0.0, bh) / (h * w))

    def mean(values: list[Any]) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "top1_accuracy": mean(correct),
        "pointing_game": mean(hits),
        "energy_in_box": mean(energy),
        "chance": mean(shares),
    }
