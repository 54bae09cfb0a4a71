"""CAMs during training: a few validation images' maps every epoch, and the pointing game.

``CamFrames`` keeps the first ``train.cam_images`` images of the val split and draws the maps of
``train.cam_method`` for each image's true class before training (epoch 0) and after every
epoch: logged to TensorBoard with step = epoch, and put side by side in one strip per image
(``train/cam_over_time/<image>.png``, epoch 0 on the left) for the report.

``measure`` scores the visualised images (``ctx.inputs``, the split the CAM stage sees) with the
same method for each image's top-1 class, as the CAM stage does by default: top-1 accuracy and,
when the data set knows the object boxes, the pointing game and energy in box
(``vizpipe.pipeline.metrics.localisation``). The train stage measures before and after training.

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


def truth_targets(batch: Any, slot: int, task: str) -> tuple[list[int], list[Any]]:
    """Per image of a scene batch, the class of its ``slot``-th true object (0 when it has none) and
    where it is: for a segmentation model its true mask (the target's region), for a detector its
    box (None when there is no such object)."""
    classes, where = [], []
    for i, objects in enumerate(batch.objects or [[] for _ in batch.index]):
        c = int(objects[slot][0]) if slot < len(objects) else 0
        classes.append(c)
        if task == "segmentation":
            mask = np.asarray(batch.masks[i])
            where.append(mask == c if c > 0 else np.zeros(mask.shape, dtype=bool))
        else:
            where.append(objects[slot][1] if slot < len(objects) else None)
    return classes, where


def truth_maps(ctx: RunContext, plan: TrainPlan, batch: Any, slots: int) -> tuple[Any, list[np.ndarray]]:
    """The model's outputs and, per object slot, the (B, H, W) maps of each image's true object: a
    segmentation model's class summed over its true mask, a detector's class in its true box
    (``FasterRCNNBoxScoreTarget`` on the true box: the output box matching it), in eval mode."""
    from vizpipe.pipeline.gradcam.adapter import CamRunner
    from vizpipe.pipeline.gradcam.targets import anchored, box_target, segmentation_target
    from vizpipe.pipeline.hooks import preserved
    from vizpipe.pipeline.tasks.wrappers import model_for_cam

    assert plan.method is not None, "truth_maps needs a CAM method"

    def target(c: int, where: Any) -> Any:
        if ctx.task == "segmentation":
            return segmentation_target(c, where)
        return box_target([c], [where] if where is not None else [])

    def make_sets(outputs: Any) -> list[list[Any]]:
        sets = []
        for slot in range(slots):
            classes, where = truth_targets(batch, slot, ctx.task)
            sets.append(anchored([target(c, w) for c, w in zip(classes, where, strict=True)]))
        return sets

    model = ctx.model
    with preserved(model):
        model.eval()
        wrapped = model_for_cam(model, ctx.task)
        with CamRunner(model, CamSettings(), plan.method, plan.layers, cam_model=wrapped) as runner:
            outputs, results = runner.task_maps(batch.tensor, make_sets)
    return outputs, [maps for maps, _ in results]


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

        if self.ctx.task in ("segmentation", "detection"):  # the first true object (its mask or box)
            _, (maps,) = truth_maps(self.ctx, self.plan, self.batch, 1)
        else:
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

    def state(self) -> dict[str, Any]:
        """The frames drawn so far (a resumed run goes on from them: ``restore``)."""
        import torch

        return {
            "epochs": list(self.epochs),
            "frames": {n: torch.from_numpy(np.stack(f)) for n, f in self.frames.items() if f},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Put back the frames ``state`` holds."""
        self.epochs = [int(e) for e in state["epochs"]]
        for name, stack in state["frames"].items():
            if name in self.frames:
                self.frames[name] = list(stack.numpy())

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
            if label is None and self.batch.objects:  # a scene: its first object's class
                label = self.batch.objects[i][0][0] if self.batch.objects[i] else None
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
    grown box covers). A segmentation model: ``measure_segmentation``."""
    from vizpipe.pipeline.metrics.localisation import localisation

    if ctx.task == "segmentation":
        return measure_segmentation(ctx, plan)
    if ctx.task == "detection":
        return measure_detection(ctx, plan, tolerance)

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


def measure_segmentation(ctx: RunContext, plan: TrainPlan) -> dict[str, float | None]:
    """On ``ctx.inputs`` (scenes with true masks): pixel accuracy and, per true object, the CAM of its
    class over its true mask scored against that mask: ``mask_iou``, ``energy_in_mask`` and the
    centred-blob baseline ``centre_mask_iou`` (``vizpipe.stages.cam``'s ``task_rows``), overall and per
    class (``mask_iou/<class>``, ...); ``chance`` is the baseline's mean."""
    from vizpipe.pipeline.metrics.localisation import centre_blob, mask_scores

    per: dict[str, list[float]] = {}
    hits = pixels = 0
    names = list(ctx.inputs.classes or [])
    for batch in ctx.inputs.batches("train: mask IoU"):
        slots = max((len(o) for o in batch.objects or []), default=0)
        outputs, maps = truth_maps(ctx, plan, batch, slots)
        truth = np.asarray(batch.masks)
        hits += int((outputs.argmax(dim=1).cpu().numpy() == truth).sum())
        pixels += truth.size
        blob = centre_blob(*truth.shape[1:])
        for slot in range(slots):
            classes, regions = truth_targets(batch, slot, ctx.task)
            for i, (c, region) in enumerate(zip(classes, regions, strict=True)):
                if c == 0 or not region.any():
                    continue
                name = names[c] if c < len(names) else str(c)
                scores = {
                    **mask_scores(maps[slot][i], region),
                    "centre_mask_iou": mask_scores(blob, region)["mask_iou"],
                }
                for key, value in scores.items():
                    if value is not None:
                        per.setdefault(key, []).append(value)
                        per.setdefault(f"{key}/{name}", []).append(value)

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    out: dict[str, float | None] = {"pixel_accuracy": hits / pixels if pixels else None}
    out.update({k: mean(v) for k, v in sorted(per.items(), key=lambda kv: ("/" in kv[0], kv[0]))})
    out["chance"] = out.get("centre_mask_iou")
    return out


def recall(outputs: Any, objects: list[Any], threshold: float = 0.5) -> tuple[int, int]:
    """(true boxes found, true boxes): found = a detection scoring >= ``threshold`` of the same class
    overlapping it with IoU >= 0.5."""
    import torch
    from torchvision.ops import box_iou
    from vizpipe.pipeline.tasks import detections

    found = total = 0
    for d, truth in zip(detections(outputs), objects, strict=True):
        keep = d.scores >= threshold
        boxes, labels = d.boxes[keep], d.labels[keep]
        for c, box in truth:
            total += 1
            if len(boxes):
                ious = box_iou(torch.tensor([list(box)], dtype=torch.float32), boxes)[0]
                found += bool(((ious >= 0.5) & (labels == int(c))).any())
    return found, total


def measure_detection(ctx: RunContext, plan: TrainPlan, tolerance: float) -> dict[str, float | None]:
    """On ``ctx.inputs`` (scenes with true boxes): the detector's ``recall`` (``recall``) and, per
    true box, the CAM of its class in that box (the target scores the output box matching it)
    against the box: the pointing game and energy in box, overall and per class, and ``chance``
    (a random point's pointing game: the mean share of the image the grown box covers)."""
    from vizpipe.pipeline.metrics.localisation import localisation

    per: dict[str, list[float]] = {}
    found = total = 0
    names = list(ctx.inputs.classes or [])
    for batch in ctx.inputs.batches("train: pointing game per true box"):
        slots = max((len(o) for o in batch.objects or []), default=0)
        outputs, maps = truth_maps(ctx, plan, batch, slots)
        hit, boxes = recall(outputs, batch.objects or [])
        found, total = found + hit, total + boxes
        h, w = batch.tensor.shape[-2:]
        for slot in range(slots):
            classes, where = truth_targets(batch, slot, ctx.task)
            for i, (c, box) in enumerate(zip(classes, where, strict=True)):
                if box is None:
                    continue
                name = names[c] if c < len(names) else str(c)
                pad = tolerance * max(h, w)
                share = (
                    max(0.0, min(w, box[2] + pad) - max(0.0, box[0] - pad))
                    * max(0.0, min(h, box[3] + pad) - max(0.0, box[1] - pad))
                    / (h * w)
                )
                scores = {**localisation(maps[slot][i], box, tolerance), "chance": share}
                for key, value in scores.items():
                    if value is not None:
                        per.setdefault(key, []).append(value)
                        per.setdefault(f"{key}/{name}", []).append(value)

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    out: dict[str, float | None] = {"recall": found / total if total else None}
    out.update({k: mean(v) for k, v in sorted(per.items()) if not k.startswith("chance/")})
    return out
