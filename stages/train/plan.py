"""What a training run will do, resolved before any work: numbers, targets, CAM method and layer.

``check_settings`` holds the rules that need only the config (the precheck runs it before Hydra
starts); ``make_plan`` resolves the rest against the model, and builds the optimizer and
scheduler once on the real parameters (then drops them), so a wrong ``_target_`` or argument
fails before any stage runs. Optimizer and scheduler are built only through
``vizpipe.pipeline.factory.targets.instantiate``.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from vizpipe.pipeline.context import RunContext
    from vizpipe.pipeline.gradcam.layers import CamLayer
    from vizpipe.pipeline.gradcam.methods import MethodSpec

#: optimizer arguments the stage sets itself
OPTIMIZER_OWN = ("params", "lr")
#: scheduler arguments the stage fills in when the scheduler takes them and the config leaves them out
SCHEDULER_FILLS = ("total_steps", "T_max", "max_lr")


@dataclass
class TrainPlan:
    """Everything ``check_model`` resolved."""

    classes: list[str]  # the data set's class names (one model output each)
    method: MethodSpec | None  # the CAM method (None: no maps, no pointing game)
    layers: list[CamLayer]  # its layer(s)


def _positive(settings: Any, key: str, minimum: float, what: str) -> None:
    value = getattr(settings, key)
    if value is not None and float(value) < minimum:
        raise ConfigError(f"train.{key} must be {what}, got {value}")


def _target_node(node: Any, key: str, own: tuple[str, ...]) -> dict[str, Any]:
    """A ``_target_`` node as a plain dict; arguments the stage sets itself are refused."""
    from collections.abc import Mapping

    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if node is not None and not isinstance(node, Mapping):
        example = (
            "torch.optim.SGD,momentum:0.9"
            if key == "optimizer"
            else "torch.optim.lr_scheduler.StepLR,step_size:2"
        )
        raise ConfigError(
            f"train.{key} must be a mapping with a _target_, got {node!r}; "
            f"e.g. 'train.{key}={{_target_:{example}}}'"
        )
    node = dict(node or {})
    if not isinstance(node.get("_target_"), str) or not node["_target_"].strip():
        raise ConfigError(
            f"train.{key} needs a _target_ naming a class, e.g. train.{key}._target_="
            + ("torch.optim.SGD" if key == "optimizer" else "torch.optim.lr_scheduler.StepLR")
        )
    for name in own:
        if name in node:
            hint = "set the learning rate with train.lr" if name == "lr" else "the stage passes it"
            raise ConfigError(f"train.{key}.{name} is set by the train stage; remove it ({hint})")
    return node


def check_settings(settings: Any, input_kind: str | None = None) -> None:
    """The rules needing only the config: numbers, ``_target_`` nodes, CAM method, input kind."""
    from vizpipe.pipeline.gradcam.methods import resolve_method
    from vizpipe.pipeline.tensorboard_io import PACKAGES, backend_value

    _positive(settings, "epochs", 1, ">= 1")
    _positive(settings, "max_steps", 1, ">= 1 or null (no cap)")
    _positive(settings, "batch_size", 1, ">= 1")
    _positive(settings, "workers", 0, ">= 0")
    _positive(settings, "log_every", 1, ">= 1")
    _positive(settings, "cam_images", 0, ">= 0 (0 = no maps over time)")
    if not float(settings.lr) > 0:
        raise ConfigError(f"train.lr must be > 0, got {settings.lr}")
    if settings.grad_clip is not None and not float(settings.grad_clip) > 0:
        raise ConfigError(f"train.grad_clip must be > 0 or null (no clipping), got {settings.grad_clip}")
    if not 0.0 <= float(settings.pointing_tolerance) < 0.5:
        raise ConfigError(f"train.pointing_tolerance must be in [0, 0.5), got {settings.pointing_tolerance}")
    if not 0.0 <= float(settings.image_weight) <= 1.0:
        raise ConfigError(f"train.image_weight must be in [0, 1], got {settings.image_weight}")
    _target_node(settings.optimizer, "optimizer", OPTIMIZER_OWN)
    if settings.scheduler is not None:
        _target_node(settings.scheduler, "scheduler", ("optimizer",))
    if uses_cam(settings):
        spec = resolve_method(settings.cam_method)
        if spec.meta:
            raise ConfigError(
                f"train.cam_method={settings.cam_method} wraps a base method ({spec.name}); "
                "choose a plain CAM method, e.g. train.cam_method=gradcam"
            )
    package = PACKAGES[backend_value(settings.backend)]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"train.backend={backend_value(settings.backend)} needs the '{package}' package, which is not "
            f"installed; pip install {package}"
        )
    if input_kind is not None:
        _check_input_kind(input_kind)


def _check_input_kind(kind: str) -> None:
    from vizpipe.pipeline.inputs import split_kinds

    if kind not in split_kinds():
        raise ConfigError(
            f"The train stage needs a labelled data set with train and val splits, but input={kind} has "
            f"none; use {' | '.join(f'input={k}' for k in split_kinds())} (e.g. experiment=shapes_demo)"
        )


def uses_cam(settings: Any) -> bool:
    """Whether the stage draws maps (CAM over time or the pointing game)."""
    return int(settings.cam_images) > 0 or bool(settings.pointing_game)


def make_plan(ctx: RunContext, settings: Any) -> TrainPlan:
    """Resolve against the model and data: classes vs outputs, logits, CAM layer, optimizer."""
    check_settings(settings)
    _check_input_kind(ctx.inputs.kind)
    classes = list(ctx.inputs.classes or [])
    if ctx.num_classes != len(classes):
        raise ConfigError(
            f"{ctx.model_name} has {ctx.num_classes} outputs but input={ctx.inputs.kind} has "
            f"{len(classes)} classes ({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''}); the "
            f"train stage needs one output per class: set model.num_classes={len(classes)}"
        )
    task = ctx.task
    if task == "embedding":
        raise ConfigError(
            f"The train stage trains classifiers, segmentation models and detectors; {ctx.model_name} is an "
            "embedding model (model.task): train it elsewhere and load it with model.checkpoint"
        )
    first = ctx.inputs.first()
    if (
        task in ("segmentation", "detection")
        and (first.masks if task == "segmentation" else first.objects) is None
    ):
        what = "true masks" if task == "segmentation" else "true boxes"
        raise ConfigError(
            f"Training the {task} model {ctx.model_name} needs {what}, but input={ctx.inputs.kind} has none; "
            f"use input=shapes input.objects=3 (experiment=shapes_{task[:3]}_demo)"
        )
    if task == "classification" and ctx.outputs_are_probabilities:
        raise ConfigError(
            f"{ctx.model_name}'s outputs are probabilities (model.output={ctx.output_kind}); the train stage "
            "needs logits (cross-entropy): drop the final Softmax/Sigmoid or set model.output=logits"
        )
    spec, layers = resolve_cam(ctx, settings)
    optimizer = make_optimizer(ctx.model, settings)
    make_scheduler(optimizer, settings, total_steps=1)  # built once to check it, then dropped
    return TrainPlan(classes=classes, method=spec, layers=layers)


def resolve_cam(ctx: RunContext, settings: Any, key: str = "train.cam_layer") -> tuple[Any, list[Any]]:
    """``train.cam_method`` and its layers on this model (``(None, [])`` when no maps are drawn)."""
    from vizpipe.pipeline.gradcam.layers import resolve_cam_layers
    from vizpipe.pipeline.gradcam.methods import resolve_method

    if not uses_cam(settings):
        return None, []
    spec = resolve_method(settings.cam_method)
    layers = resolve_cam_layers(ctx.model, ctx.probe(), settings.cam_layer, ctx.blocks(), ctx.model_name, key)
    return spec, layers


def make_optimizer(model: nn.Module, settings: Any) -> torch.optim.Optimizer:
    """``train.optimizer`` on the model's trainable parameters with ``lr=train.lr``."""
    from vizpipe.pipeline.factory.targets import instantiate

    node = _target_node(settings.optimizer, "optimizer", OPTIMIZER_OWN)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(
            "The model has no trainable parameters (every requires_grad is False); nothing to train"
        )
    return instantiate(node, "train.optimizer", params, lr=float(settings.lr))


def make_scheduler(optimizer: torch.optim.Optimizer, settings: Any, total_steps: int) -> Any:
    """``train.scheduler`` on ``optimizer`` (None when unset).

    Arguments the stage knows are filled in when the scheduler takes them and the config leaves
    them out: ``total_steps`` (OneCycleLR) and ``T_max`` (CosineAnnealingLR) = the steps the run
    will take, ``max_lr`` (OneCycleLR, CyclicLR) = ``train.lr``.
    """
    from vizpipe.pipeline.factory.targets import instantiate

    if settings.scheduler is None:
        return None
    node = _target_node(settings.scheduler, "scheduler", ("optimizer",))
    known = {"total_steps": int(total_steps), "T_max": int(total_steps), "max_lr": float(settings.lr)}
    if "epochs" in node:  # OneCycleLR given epochs and steps_per_epoch counts its own steps
        known.pop("total_steps")
    fills = {k: v for k, v in known.items() if k not in node and k in _parameters(node["_target_"])}
    return instantiate(node, "train.scheduler", optimizer, **fills)


def _parameters(target: str) -> set[str]:
    """The constructor parameters of the class ``target`` names (empty when it cannot be found)."""
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return set(inspect.signature(cls).parameters)
    except (ImportError, AttributeError, ValueError, TypeError):
        return set()  # instantiate reports it
