"""What a map explains for a segmentation, detection or embedding model, resolved from ``cam.*``.

A classifier's maps explain a class (``cam.target_class``, ``plan.py``). Other tasks
(``model.task``, ``vizpipe.pipeline.tasks``) explain what their output holds, with the same names,
indices and did-you-mean errors:

* **segmentation**: a class (``cam.target_class``: names, indices, a list: one map each; null:
  each image's most-predicted class other than 0, the background; with ``cam.mask=truth``, each
  true object's class, one map per object) summed over a mask
  (``cam.mask``): its predicted mask (null: the segmentation tutorial's target), the data set's
  true mask (``truth``: ``input=shapes input.objects=3``) or a mask file (``.png``/``.npy`` at the
  model input's size, nonzero = inside);
* **detection**: every detection scoring at least ``cam.score_threshold`` (``cam.box=null``: one
  map, the Faster R-CNN tutorial's ``FasterRCNNBoxScoreTarget`` over them; the best detection when
  none does, with a warning), one detection by index (``cam.box=0``: the best), a box you give
  (``cam.box=[x0,y0,x1,y1]``, labelled ``cam.target_class`` or as the detection overlapping it
  most), or every true object's box with its class (``cam.box=truth``: one map per object, scored
  with the pointing game against its box); ``cam.target_class`` keeps only the detections of those
  classes (one map per class);
* **embedding**: a concept (``cam.concept``: an image, a folder or glob whose images' features are
  averaged, or a list: one map each) and the cosine similarity to it (the embeddings tutorial).

``-m`` sweeps over these keys as over classes. ``check_settings`` holds the rules that need only
the config; ``resolve`` the rest, against the model (before any stage runs). ``tasks.py`` makes
each batch's library targets from the outputs and records the maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import ConfigError, unknown_choice
from vizpipe.pipeline.names import slug

if TYPE_CHECKING:
    import numpy as np
    import torch
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.gradcam.layers import CamLayer
    from vizpipe.pipeline.gradcam.methods import MethodSpec

__all__ = ["TargetSpec", "TaskPlan", "check_settings", "resolve"]

#: the keys of the tasks other than classification, and the task each is for
TASK_KEYS = {"box": "detection", "mask": "segmentation", "concept": "embedding"}


@dataclass
class TargetSpec:
    """One kind of map per image (one target set): what it explains."""

    key: str  # its part of the file names ("" for each image's own top class: named per image)
    category: int | None = None  # segmentation: the class (None: each image's top); detection: the label kept
    index: int | None = None  # detection: that detection (0 = the best)
    box: tuple[float, float, float, float] | None = None  # detection: the user's box
    concept: torch.Tensor | None = field(default=None, repr=False)  # embedding: (D,) features
    concept_name: str = ""
    concept_images: int = 0
    slot: int | None = None  # segmentation with cam.mask=truth: each image's slot-th true object's class


@dataclass
class TaskPlan:
    """Every target of a non-classifier's maps, resolved before any work."""

    task: str
    specs: list[TargetSpec]
    mask: str = "predicted"  # segmentation: predicted | truth | file
    mask_array: np.ndarray | None = field(default=None, repr=False)  # the file's (H, W) bool mask
    mask_file: str | None = None
    score_threshold: float = 0.5


def parse_target_class(
    value: Any, num_classes: int, categories: list[str] | None, model_name: str
) -> list[int] | None:
    """``cam.target_class`` -> None (top-1) or a list of class indices, each checked against the model."""
    if value is None:
        return None
    raw = list(value) if isinstance(value, list | tuple) else [value]
    valid = f"valid: null (each image's top-1), an integer 0..{num_classes - 1} or a list of them"
    out: list[int] = []
    for item in raw:
        if isinstance(item, str):
            text = item.strip()
            if text.lstrip("-").isdigit():
                item = int(text)
            elif categories:
                lower = [c.lower() for c in categories]
                hits = [i for i, c in enumerate(lower) if c == text.lower()]
                if not hits:
                    raise unknown_choice(
                        "class name for cam.target_class", text, categories, context=f"for {model_name}"
                    )
                if len(hits) > 1:
                    both = ", ".join(f"{i} ({categories[i]})" for i in hits)
                    raise ConfigError(
                        f"cam.target_class '{text}' names {len(hits)} classes of {model_name}: {both}; "
                        f"give one index, e.g. cam.target_class={hits[0]}"
                    )
                item = hits[0]
            else:
                raise ConfigError(
                    f"cam.target_class '{text}' is not a class index "
                    "(this model's weights carry no class names; "
                    f"set model.categories to use names); {valid}"
                )
        if not 0 <= item < num_classes:
            raise ConfigError(
                f"cam.target_class {item} is out of range for {model_name} ({num_classes} classes); {valid}"
            )
        out.append(int(item))
    return list(dict.fromkeys(out))


def check_settings(settings: Any) -> None:
    """The rules on ``cam.score_threshold``, ``cam.box``, ``cam.mask`` and ``cam.concept`` that need
    only the config."""
    if not 0.0 <= float(settings.score_threshold) <= 1.0:
        raise ConfigError(
            f"cam.score_threshold must be in [0, 1] (a detection score), got {settings.score_threshold}"
        )
    box = settings.box
    if box is not None and box != "truth":
        if isinstance(box, bool) or not isinstance(box, int | list | tuple):
            raise ConfigError(
                f"Invalid value '{box}' for cam.box: expected null (every detection above "
                "cam.score_threshold), a detection index (0 = the best), [x0,y0,x1,y1] or truth, "
                "e.g. cam.box=0"
            )
        if isinstance(box, int) and box < 0:
            raise ConfigError(f"cam.box must be a detection index >= 0 (0 = the best), got {box}")
        if isinstance(box, list | tuple):
            values = list(box)
            if len(values) != 4 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            ):
                raise ConfigError(
                    f"cam.box as a box needs four numbers [x0,y0,x1,y1] (input pixels), got {values}"
                )
            if not (values[2] > values[0] and values[3] > values[1]):
                raise ConfigError(f"cam.box {values} is empty: x1 must exceed x0 and y1 must exceed y0")
    if settings.mask is not None and (not isinstance(settings.mask, str) or not settings.mask.strip()):
        raise ConfigError(
            f"Invalid value '{settings.mask}' for cam.mask: expected null (the predicted mask), truth "
            "(the data set's true mask) or a mask file (.png/.npy)"
        )
    concept = settings.concept
    for item in concept if isinstance(concept, list | tuple) else [concept]:
        if concept is not None and (not isinstance(item, str) or not item.strip()):
            raise ConfigError(
                f"Invalid value '{item}' for cam.concept: expected an image file, a folder or glob of "
                "images (averaged), or a list of them"
            )


def resolve(ctx: RunContext, settings: Any, spec: MethodSpec, layers: list[CamLayer]) -> TaskPlan | None:
    """The targets of ``ctx.task`` (None for a classifier); ``ConfigError`` if any is bad."""
    task = ctx.task
    for key, owner in TASK_KEYS.items():
        if getattr(settings, key) is not None and owner != task:
            raise ConfigError(
                f"cam.{key} is for {owner} models, but {ctx.model_name} is a {task} model "
                f"(model.task={ctx.task_config}); leave cam.{key} unset or set model.task"
            )
    if task == "classification":
        return None
    _check_method(ctx, settings, spec, layers)
    plan = TaskPlan(task=task, specs=[], score_threshold=float(settings.score_threshold))
    if task == "segmentation":
        _segmentation(ctx, settings, plan)
    elif task == "detection":
        _detection(ctx, settings, plan)
    else:
        _embedding(ctx, settings, plan)
    return plan


def _check_method(ctx: RunContext, settings: Any, spec: MethodSpec, layers: list[CamLayer]) -> None:
    """What the library cannot do for this task: metrics, ``aug_smooth``, gradients of FPN dicts."""
    if list(settings.metrics or []):
        raise ConfigError(
            f"cam.metrics score a classifier's class probability; {ctx.model_name} is a {ctx.task} model "
            "(its maps are scored against true masks and boxes when the data set has them); "
            "set cam.metrics=[]"
        )
    if settings.aug_smooth and ctx.task in ("segmentation", "detection"):
        raise ConfigError(
            f"cam.aug_smooth=true flips the image, but a {ctx.task} target is a region of the unflipped "
            "image (a mask or boxes); set cam.aug_smooth=false"
        )
    levels = [x.name for x in layers if x.layout.kind == "levels"]
    if levels and not spec.meta and _uses_gradients(ctx, spec):
        raise ConfigError(
            f"cam.layer '{levels[0]}' returns a dict of FPN levels, for which grad-cam records no gradient; "
            f"{spec.name} needs gradients: use a gradient-free method (eigencam, ablationcam, scorecam) "
            "on it, "
            "or name one level or block (backbone.fpn.layer_blocks.0, cam.layer=auto)"
        )


def _uses_gradients(ctx: RunContext, spec: MethodSpec) -> bool:
    """Whether the method's objects use gradients (asked of a throwaway object with no layers)."""
    try:
        obj = spec.cls(ctx.model, [])
    except TypeError:
        return True
    try:
        return bool(getattr(obj, "uses_gradients", True))
    finally:
        obj.activations_and_grads.release()


def _classes(ctx: RunContext, settings: Any) -> list[int] | None:
    return parse_target_class(settings.target_class, ctx.num_classes, ctx.categories, ctx.model_name)


def class_key(category: int, name: str | None) -> str:
    """``<class>[_<name>]``, as a classifier's map files name their class."""
    return f"{category}_{slug(name, max_len=60)}" if name else str(category)


def _segmentation(ctx: RunContext, settings: Any, plan: TaskPlan) -> None:
    """Classes (or each image's top class) and the mask they are summed over."""
    classes = _classes(ctx, settings)
    plan.specs = (
        [TargetSpec("")]
        if classes is None
        else [TargetSpec(class_key(c, ctx.class_name(c)), c) for c in classes]
    )
    mask = settings.mask
    if mask is None or str(mask).strip() == "predicted":
        return
    if str(mask).strip() == "truth":
        first = ctx.inputs.first()
        if first.masks is None:
            raise ConfigError(
                f"cam.mask=truth needs a data set with true masks, but input={ctx.inputs.kind} has none; "
                "use input=shapes input.objects=3, a mask file, or cam.mask=null (the predicted mask)"
            )
        plan.mask = "truth"
        if classes is None and first.objects is not None:  # null: every true object's class, one map each
            slots = max((len(o) for o in first.objects), default=0)
            plan.specs = [TargetSpec("", slot=k) for k in range(slots)]
        return
    plan.mask, plan.mask_file = "file", str(mask)
    plan.mask_array = load_mask(str(mask), ctx.probe().input_hw)


def load_mask(path: str, size: tuple[int, int]) -> np.ndarray:
    """A mask file (.npy, or an image: nonzero = inside) as an (H, W) bool array of the input's size."""
    import numpy as np

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"cam.mask file '{path}' does not exist; give a .png/.npy mask, truth or null")
    try:
        if p.suffix.lower() == ".npy":
            array = np.load(p, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(p) as im:
                array = np.asarray(im.convert("L"))
    except Exception as exc:  # an unreadable file, whatever the reader raises
        raise ConfigError(f"cam.mask file '{path}' could not be read as a mask: {exc}") from exc
    array = np.asarray(array)
    if array.ndim == 3:
        array = array.any(axis=-1)
    if array.shape != tuple(size):
        raise ConfigError(
            f"cam.mask file '{path}' is {array.shape[1]}×{array.shape[0]} but the model's input is "
            f"{size[1]}×{size[0]}; give a mask of the input's size (after input.resize and input.crop)"
        )
    return array != 0


def _detection(ctx: RunContext, settings: Any, plan: TaskPlan) -> None:
    """Every detection above the threshold, one by index or the user's box; per class when given."""
    classes = _classes(ctx, settings)
    box = settings.box
    if box == "truth":
        first = ctx.inputs.first()
        if first.objects is None:
            raise ConfigError(
                f"cam.box=truth needs a data set with true boxes, but input={ctx.inputs.kind} has none; use "
                "input=shapes input.objects=3, a box [x0,y0,x1,y1], an index or null"
            )
        slots = max((len(o) for o in first.objects), default=0)
        plan.specs = [TargetSpec("", slot=k) for k in range(slots)]  # every true object's box, one map each
        return
    per_class = [(None, "")] if classes is None else [(c, class_key(c, ctx.class_name(c))) for c in classes]
    for category, name in per_class:
        suffix = f"_{name}" if name else ""
        if box is None:
            plan.specs.append(TargetSpec(f"all{suffix}", category=category))
        elif isinstance(box, int):
            plan.specs.append(TargetSpec(f"det{int(box)}", index=int(box)))
        else:
            values = tuple(float(v) for v in box)
            key = "box_" + "_".join(f"{v:g}" for v in values)
            plan.specs.append(TargetSpec(f"{slug(key)}{suffix}", category=category, box=values))  # type: ignore[arg-type]
        if isinstance(box, int):
            break  # an index names one detection whatever its class


def _embedding(ctx: RunContext, settings: Any, plan: TaskPlan) -> None:
    """Each concept's averaged features (the model's own, on the run's preprocessing)."""
    concept = settings.concept
    if concept is None:
        raise ConfigError(
            f"{ctx.model_name} is an embedding model: its maps explain the similarity to a concept; set "
            "cam.concept=<an image, or a folder of images (averaged)>"
        )
    items = [str(c) for c in (concept if isinstance(concept, list | tuple) else [concept])]
    if settings.target_class is not None:
        raise ConfigError(
            "cam.target_class has no meaning for an embedding model (its outputs are features, not "
            "classes); use cam.concept"
        )
    names = [slug(Path(c.rstrip("/")).stem or c, max_len=40) for c in items]
    for item, name in zip(items, _unique(names), strict=True):
        features, count = concept_features(ctx, item)
        plan.specs.append(
            TargetSpec(f"concept_{name}", concept=features, concept_name=name, concept_images=count)
        )


def _unique(names: list[str]) -> list[str]:
    from vizpipe.pipeline.names import unique_slugs

    return unique_slugs(names)


def concept_features(ctx: RunContext, path: str) -> tuple[torch.Tensor, int]:
    """The (D,) mean of the model's features over the concept's images (read like the run's images)."""
    import torch
    from vizpipe.pipeline.hooks import preserved
    from vizpipe.pipeline.inputs import build_like

    concept = build_like(ctx.inputs, kind="image", path=path, limit=None, shard=None)
    total, count = None, 0
    with preserved(ctx.model), torch.no_grad():
        ctx.model.eval()
        for batch in concept.batches(f"cam.concept {Path(path).name}"):
            out = ctx.model(batch.tensor).detach().float()  # (B, D)
            total = out.sum(dim=0) if total is None else total + out.sum(dim=0)
            count += len(batch)
    assert total is not None and count, f"concept {path}: no image"
    return (total / count).to(ctx.device), count


def warn_targets(ctx: RunContext, plan: TaskPlan, images: list[Any]) -> None:
    """One warning for the images whose maps explain a detection below ``cam.score_threshold``."""
    below = sorted(
        {img.name for img in images for m in img.maps if m.detail and "none scores >=" in m.detail}
    )
    if below:
        ctx.warn(
            f"CAM: no detection scores >= cam.score_threshold={plan.score_threshold:g} in {len(below)} "
            "image(s) "
            f"({', '.join(below[:3])}{', ...' if len(below) > 3 else ''}); their best detection is explained "
            "instead (lower cam.score_threshold to explain more)"
        )
