"""What a CAM run will compute, resolved before any work: method, layers, classes, metrics.

``check_settings`` holds the rules that need only the config (the precheck runs it before Hydra
starts); ``make_plan`` resolves the rest against the model. ``cam.method`` is a grad-cam CAM
(``vizpipe.pipeline.gradcam.methods``) or a pixel attribution (``vizpipe.pipeline.attribution``);
the metrics are ``vizpipe.pipeline.metrics``'.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.attribution.methods import attribution_kwargs, is_attribution, resolve_cam_method
from vizpipe.pipeline.errors import ConfigError, unknown_choice
from vizpipe.pipeline.gradcam.layers import CamLayer, LayoutReshape, resolve_cam_layers
from vizpipe.pipeline.gradcam.methods import MethodSpec, resolve_method
from vizpipe.pipeline.metrics.registry import METRICS, check_metric_args, resolve_metrics
from vizpipe.stages.cam.targets import check_settings as check_task_settings
from vizpipe.stages.cam.targets import parse_target_class, resolve

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext

#: constructor parameters vizpipe sets itself (not allowed in cam.kwargs)
RESERVED = ("self", "model", "target_layers", "reshape_transform")
#: the sanity checks cam.sanity names (Adebayo et al. 2018; vizpipe.pipeline.metrics.sanity)
SANITY = ("parameters", "data")
#: the layer label of a map attributed to the input pixels
INPUT = "input"


@dataclass
class CamPlan:
    """Everything ``check_model`` resolved: what ``run`` computes."""

    method: Any  # MethodSpec (a grad-cam CAM) or AttributionSpec (a pixel attribution)
    layers: list[CamLayer]  # resolved target layers, in the order given (none: attributed to the input)
    classes: list[int] | None  # None = each image's top-1 prediction
    metrics: list[str]  # canonical metric names
    kwargs: dict[str, Any] = field(default_factory=dict)  # the method's own constructor arguments
    # one entry per map kind: (layer label, layers); the averaged group first, then per-layer ones
    groups: list[tuple[str, list[CamLayer]]] = field(default_factory=list)
    task: str = "classification"  # the model's task (``model.task``)
    targets: Any = None  # other tasks: what the maps explain (``targets.TaskPlan``)
    metric_args: dict[str, dict[str, Any]] = field(default_factory=dict)  # each metric's arguments
    sanity: list[str] = field(default_factory=list)  # cam.sanity: parameters | data

    @property
    def label(self) -> str:
        """The averaged map's layer label: ``layer4`` or ``layer3+layer4`` (``input`` for pixel maps)."""
        if self.attribution and not self.method.uses_layer:
            return INPUT
        return "+".join(layer.name for layer in self.layers)

    @property
    def attribution(self) -> bool:
        """True for a pixel attribution method (captum's or a baseline), False for a grad-cam CAM."""
        return is_attribution(self.method)


def method_kwargs(spec: MethodSpec, given: dict[str, Any]) -> dict[str, Any]:
    """``cam.kwargs`` checked against the method's constructor; ``base_method`` names resolved."""
    params = inspect.signature(spec.cls.__init__).parameters
    allowed = [p for p in params if p not in RESERVED and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    out: dict[str, Any] = {}
    for key, value in (given or {}).items():
        if key not in allowed:
            raise unknown_choice(
                f"cam.kwargs key for {spec.name}",
                key,
                allowed or ["(none: this method takes no extra arguments)"],
                hint="cam.kwargs are passed to the method's constructor",
            )
        if key == "base_method" and isinstance(value, str):
            value = resolve_method(value).cls
        out[key] = value
    return out


def check_settings(settings: Any) -> tuple[Any, list[str], dict[str, Any]]:
    """The rules needing only the config: method, metrics, kwargs, numbers, target_class types."""
    spec = resolve_cam_method(settings.method)
    if int(settings.batch_size) < 1:
        raise ConfigError(f"cam.batch_size must be >= 1, got {settings.batch_size}")
    if not 0.0 <= float(settings.image_weight) <= 1.0:
        raise ConfigError(
            f"cam.image_weight must be in [0, 1] (show_cam_on_image), got {settings.image_weight}"
        )
    if not 0 <= int(settings.png_compress_level) <= 9:
        raise ConfigError(
            "cam.png_compress_level must be 0 (none, fastest) .. 9 (smallest), "
            f"got {settings.png_compress_level}"
        )
    if not 0.0 <= float(settings.pointing_tolerance) < 0.5:
        raise ConfigError(f"cam.pointing_tolerance must be in [0, 0.5), got {settings.pointing_tolerance}")
    if settings.aug_smooth and not spec.accepts("aug_smooth"):
        raise ConfigError(
            f"cam.aug_smooth=true is not supported by {spec.name} (it takes no aug_smooth); "
            "set cam.aug_smooth=false"
        )
    metrics = resolve_metrics(list(settings.metrics or []))
    check_metric_args(_plain(settings.metric_args), metrics)
    if is_attribution(spec):
        kwargs = attribution_kwargs(spec, dict(settings.kwargs or {}))
        needs_cam = [m for m in metrics if METRICS[m].how in ("base_method", "init_base_method")]
        if needs_cam:
            raise ConfigError(
                f"cam.metrics {', '.join(needs_cam)} recompute the map with a grad-cam CAM object; "
                f"{spec.name} is a pixel attribution: drop them (e.g. use deletion_auc, road_combined)"
            )
    else:
        kwargs = method_kwargs(spec, dict(settings.kwargs or {}))
    check_task_settings(settings)  # the keys of segmentation, detection and embedding targets
    _check_sanity(settings)
    layer = settings.layer
    for v in layer if isinstance(layer, list | tuple) else [layer]:
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(
                f"Invalid value '{v}' for cam.layer: expected auto, a dotted layer name or a list of names, "
                "e.g. cam.layer=layer4 or 'cam.layer=[layer3,layer4]'"
            )
    target = settings.target_class
    items = list(target) if isinstance(target, list | tuple) else [target]
    if isinstance(target, list | tuple) and not items:
        raise ConfigError(
            "cam.target_class is an empty list; use null (each image's top-1), an index or a list of indices"
        )
    for item in items if target is not None else []:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ConfigError(
                f"Invalid value '{item}' for cam.target_class: expected null (top-1), a class index, a class "
                "name or a list of them, e.g. cam.target_class=207 or 'cam.target_class=[1,207]'"
            )
    return spec, metrics, kwargs


def _plain(node: Any) -> Any:
    """A config node as plain Python containers (a mapping stays a mapping, other values as they are)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _check_sanity(settings: Any) -> None:
    """``cam.sanity``, ``cam.sanity_images`` and ``cam.sanity_threshold``."""
    for check in settings.sanity or []:
        if check not in SANITY:
            raise unknown_choice(
                "cam.sanity check", check, SANITY, hint="cam.sanity=[parameters] or [parameters,data]"
            )
    if int(settings.sanity_images) < 1:
        raise ConfigError(f"cam.sanity_images must be >= 1, got {settings.sanity_images}")
    if not -1.0 <= float(settings.sanity_threshold) <= 1.0:
        raise ConfigError(
            f"cam.sanity_threshold must be in [-1, 1] (a Spearman correlation), got "
            f"{settings.sanity_threshold}"
        )


def make_plan(ctx: RunContext, settings: Any) -> CamPlan:
    """Resolve method, layers, classes and metrics against the model; ``ConfigError`` if any is bad."""
    spec, metrics, kwargs = check_settings(settings)
    probe = ctx.probe()
    task = ctx.task
    if is_attribution(spec) and task != "classification":
        raise ConfigError(
            f"cam.method={spec.name} (a captum attribution) explains a classifier's class scores here; "
            f"{ctx.model_name} is a {task} model (model.task): use a grad-cam CAM method, e.g. "
            "cam.method=gradcam"
        )
    classes = (
        parse_target_class(settings.target_class, ctx.num_classes, ctx.categories, ctx.model_name)
        if task == "classification"
        else None  # other tasks' targets: ``targets.resolve``
    )
    metric_args = check_metric_args(_plain(settings.metric_args), metrics)
    sanity = list(dict.fromkeys(settings.sanity or []))
    if is_attribution(spec) and not spec.uses_layer:
        plan = CamPlan(
            spec, [], classes, metrics, kwargs, [(INPUT, [])], metric_args=metric_args, sanity=sanity
        )
        return _ground_truth(ctx, plan)
    specs = settings.layer if isinstance(settings.layer, list | tuple) else [settings.layer]
    blocks = ctx.blocks() if {"auto", "blocks"} & {str(s).strip() for s in specs} else []
    layers = resolve_cam_layers(ctx.model, probe, settings.layer, blocks, ctx.model_name)
    LayoutReshape(layers)  # same-shape layers with different layouts fail here, before any work
    for layer in layers:
        if layer.layout.h * layer.layout.w == 1:
            ctx.warn(
                f"CAM layer '{layer.name}' has a 1×1 output for this input: its map is constant; "
                "use an earlier layer or a larger input"
            )
    if spec.is_a("FullGrad"):
        ctx.warn("FullGrad ignores cam.layer: it uses the gradients of every conv/batch-norm bias")
        layers = layers[:1]
    if is_attribution(spec):
        layers = layers[-1:]  # guided_gradcam: one Grad-CAM layer (the last one given)
        if layers[0].layout.needs_reshape:
            raise ConfigError(
                f"cam.method={spec.name} needs a layer with an (N, C, H, W) output; {layers[0].name} is "
                f"{layers[0].layout.describe()}: choose a convolutional layer (summary/layers.txt)"
            )
    targets = None if is_attribution(spec) else resolve(ctx, settings, spec, layers)
    plan = CamPlan(
        spec,
        layers,
        classes,
        metrics,
        kwargs,
        task=task,
        targets=targets,
        metric_args=metric_args,
        sanity=sanity,
    )
    label = "bias_layers" if spec.is_a("FullGrad") else plan.label
    plan.groups = [(label, layers)]
    if settings.per_layer and len(layers) > 1 and not is_attribution(spec):
        plan.groups += [(layer.name, [layer]) for layer in layers]
    return _ground_truth(ctx, plan)


def _ground_truth(ctx: RunContext, plan: CamPlan) -> CamPlan:
    """Warn about metrics that need what this input does not know (an object's box or mask)."""
    needs = {m: METRICS[m].target for m in plan.metrics if METRICS[m].target in ("box", "mask")}
    if needs:
        first = ctx.inputs.first()
        known = {
            "box": any(b is not None for b in first.boxes),
            "mask": first.object_masks is not None or first.masks is not None,
        }
        missing = [m for m, what in needs.items() if not known[what]]
        if missing:
            ctx.warn(
                f"cam.metrics {', '.join(missing)} need the object's box or mask, which "
                f"input={ctx.inputs.kind} does not know (input=shapes does): they are not recorded"
            )
            plan.metrics = [m for m in plan.metrics if m not in missing]
    return plan
