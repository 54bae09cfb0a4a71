"""CAM stage: class activation maps with pytorch-grad-cam (seed §2.3), any method, layer and class.

Seed::

    cam = GradCAM(model=model, target_layers=[model.features[-1]])
    grayscale_cam = cam(input_tensor=img_tensor, targets=[ClassifierOutputTarget(200)])
    cam_img = show_cam_on_image(rgb_img, grayscale_cam[0], use_rgb=True)

Here: ``cam.method`` names any CAM class the installed library exports, ``cam.layer`` is
``auto``, a name or a list (ViT/Swin reshapes inferred), ``cam.target_class`` is null (each
image's top-1), an int or a list. One batched library call per (layer group, class) covers all
N images. Writes, per image × layer × class, ``cam/<image>/<layer>__<class>[_<name>]`` +
``_overlay.png`` (``show_cam_on_image`` on the un-normalised image), ``_heatmap.png`` and
``.npy`` (float32 H×W, the library's output), and ``cam/cam.json`` (top-5, targets, scores,
metrics; the data contract the TensorBoard and report stages read).

How vizpipe differs from calling the library the usual way (and why the maps are the same):

- **The hooked layer's own output.** A forward hook registered after the library's returns a
  clone of the layer's output, so a following in-place op (vgg's ``ReLU(inplace=True)``,
  ResNet's ``out += identity``, DenseNet's ``F.relu(..., inplace=True)``) changes the clone, not
  the tensor the library stored. Without it, on CPU the library keeps the post-ReLU activation
  (GradCAM on vgg11 ``features.18`` comes out all zero); on GPU ``.cpu()`` copies first.
- **Frozen parameters** (``cam.freeze_params``, default on). Maps need gradients with respect to
  activations only. Parameters are set to ``requires_grad=False`` for the call; with one target
  layer and a gradient method, the graph starts at that layer (its output enters the rest of
  the network as a fresh leaf that requires grad), so backward runs only through the layers
  above it; otherwise the library's ``compute_input_gradient=True`` keeps the graph connected.
  ``tests/test_cam.py`` proves the maps identical to the library's own.
- **The model is left as found**: hooks (the library's and ours) removed, every module's mode,
  every parameter's ``requires_grad`` and ``.grad`` restored, modules the library swaps
  (AblationCAM's ablation layer) put back, all in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.context import RunContext
from pipeline.errors import ConfigError, unknown_choice
from pipeline.layers import safe_name
from pipeline.schema import CamConfig
from stages import Stage
from stages.cam_layers import CamLayer, LayoutReshape, resolve_cam_layers
from stages.cam_methods import MethodSpec, compute_metric, resolve_method, resolve_metrics

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

log = logging.getLogger(__name__)

#: ScoreCAM builds an (N, C, 3, H, W) tensor of masked inputs; images are split to stay below this.
SCORECAM_MAX_BYTES = 1 << 30
#: the hook dictionaries checked (and cleaned) on every module
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


# ----------------------------------------------------------------------------- plan


@dataclass
class CamPlan:
    """Everything ``validate`` resolved: what ``run`` computes."""

    method: MethodSpec
    layers: list[CamLayer]  # resolved target layers, in the order given
    classes: list[int] | None  # None = each image's top-1 prediction
    metrics: list[str]  # canonical metric names
    # one entry per map kind: (layer label, layers); the averaged group first, then per-layer ones
    groups: list[tuple[str, list[CamLayer]]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The averaged map's layer label: ``layer4`` or ``layer3+layer4``."""
        return "+".join(layer.name for layer in self.layers)


def parse_target_class(
    value: Any, num_classes: int, categories: list[str] | None, model_name: str
) -> list[int] | None:
    """``cam.target_class`` -> None (top-1) or a list of class indices, each checked against the model."""
    if value is None:
        return None
    raw = list(value) if isinstance(value, list | tuple) else [value]
    if not raw:
        raise ConfigError(
            "cam.target_class is an empty list; use null (each image's top-1), an index or a list of indices"
        )
    out: list[int] = []
    valid = f"valid: null (each image's top-1), an integer 0..{num_classes - 1} or a list of them"
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ConfigError(f"cam.target_class entry {item!r} is not a class index; {valid}")
        if isinstance(item, str):
            text = item.strip()
            if text.lstrip("-").isdigit():
                item = int(text)
            elif categories:
                lower = [c.lower() for c in categories]
                if text.lower() not in lower:
                    raise unknown_choice(
                        "class name for cam.target_class",
                        text,
                        categories,
                        context=f"for {model_name}",
                    )
                item = lower.index(text.lower())
            else:
                raise ConfigError(
                    f"cam.target_class '{text}' is not a class index (this model's weights carry "
                    f"no class names); {valid}"
                )
        if not 0 <= item < num_classes:
            raise ConfigError(
                f"cam.target_class {item} is out of range for {model_name} ({num_classes} classes); {valid}"
            )
        out.append(int(item))
    return list(dict.fromkeys(out))


def make_plan(ctx: RunContext, settings: CamConfig) -> CamPlan:
    """Resolve method, layers, classes and metrics against the model; ``ConfigError`` if any is bad."""
    spec = resolve_method(settings.method)
    if int(settings.batch_size) < 1:
        raise ConfigError(f"cam.batch_size must be >= 1, got {settings.batch_size}")
    if not 0.0 <= float(settings.image_weight) <= 1.0:
        raise ConfigError(
            f"cam.image_weight must be in [0, 1] (show_cam_on_image), got {settings.image_weight}"
        )
    if settings.aug_smooth and not spec.accepts("aug_smooth"):
        raise ConfigError(
            f"cam.aug_smooth=true is not supported by {spec.name} (it takes no aug_smooth); "
            "set cam.aug_smooth=false"
        )
    metrics = resolve_metrics(list(settings.metrics or []))
    probe = ctx.probe()
    x = ctx.inputs.tensor
    input_hw = (int(x.shape[-2]), int(x.shape[-1]))
    classes = parse_target_class(settings.target_class, ctx.num_classes, ctx.categories, ctx.model_name)
    layers = resolve_cam_layers(ctx.model, probe, settings.layer, input_hw, ctx.model_name)
    LayoutReshape(layers)  # same-shape layers with different layouts fail here, before any work
    for layer in layers:
        if layer.layout.h * layer.layout.w == 1:
            ctx.warn(
                f"CAM layer '{layer.name}' has a 1×1 output for this input: its map is constant; "
                "use an earlier layer or a larger input"
            )
    if _is(spec, "FullGrad"):
        ctx.warn("FullGrad ignores cam.layer: it uses the gradients of every conv/batch-norm bias")
        layers = layers[:1]
    plan = CamPlan(spec, layers, classes, metrics)
    label = "bias_layers" if _is(spec, "FullGrad") else plan.label
    plan.groups = [(label, layers)]
    if settings.per_layer and len(layers) > 1:
        plan.groups += [(layer.name, [layer]) for layer in layers]
    return plan


class CamStage(Stage):
    """Class activation maps for the configured method, layers and classes."""

    name = "cam"

    def __init__(self) -> None:
        self.plan: CamPlan | None = None

    def validate(self, ctx: RunContext, settings: CamConfig) -> None:
        """Resolve the method, layers, classes and metrics before any stage runs."""
        self.plan = make_plan(ctx, settings)

    def run(self, ctx: RunContext, settings: CamConfig) -> dict[str, Any]:
        """Compute every map (batched), then write overlays, heatmaps, arrays and cam.json."""
        plan = self.plan or make_plan(ctx, settings)
        data = collect(ctx, settings, plan)
        return render(ctx, settings, data)


# ----------------------------------------------------------------------------- model state


class ModelState:
    """What a CAM call may change on a model, saved so ``restore`` puts it back exactly."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        mods = list(model.modules())
        self.training = [(m, m.training) for m in mods]
        self.params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
        self.children = [(m, name, child) for m in mods for name, child in m._modules.items()]
        self.hooks = [(m, {d: set(getattr(m, d, {})) for d in HOOK_DICTS}) for m in mods]

    def restore(self) -> int:
        """Put children, hooks, modes, ``requires_grad`` and grads back; return the hooks removed."""
        for parent, name, child in self.children:
            if parent._modules.get(name) is not child:
                parent._modules[name] = child
        removed = 0
        for m, before in self.hooks:
            for d, keys in before.items():
                hooks = getattr(m, d, None)
                if hooks is None:
                    continue
                for key in [k for k in hooks if k not in keys]:
                    hooks.pop(key, None)
                    for extra in (
                        "_forward_hooks_with_kwargs",
                        "_forward_hooks_always_called",
                        "_forward_pre_hooks_with_kwargs",
                    ):
                        getattr(m, extra, {}).pop(key, None)
                    removed += 1
        for p, requires_grad, grad in self.params:
            p.grad = grad
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
        for m, training in self.training:
            m.training = training
        return removed


def _inner_cams(method_obj: Any) -> list[Any]:
    """The ``BaseCAM`` objects inside a method object (itself, or a meta-method's base CAMs)."""
    from pytorch_grad_cam.base_cam import BaseCAM

    if isinstance(method_obj, BaseCAM):
        return [method_obj]
    found: list[Any] = []
    for value in vars(method_obj).values():
        items = value if isinstance(value, list | tuple) else [value]
        found.extend(v for v in items if isinstance(v, BaseCAM))
    return found


def _release(method_obj: Any) -> None:
    """Remove the library's hooks and drop the graph it keeps (``cam.outputs``)."""
    for cam in _inner_cams(method_obj):
        cam.activations_and_grads.release()
        cam.outputs = None


@contextlib.contextmanager
def _quiet_library_bars() -> Iterator[None]:
    """Silence ScoreCAM/AblationCAM's per-image tqdm bars (vizpipe shows one bar for the call)."""
    import types

    from pytorch_grad_cam import ablation_cam, score_cam

    saved = [(mod, mod.tqdm) for mod in (score_cam, ablation_cam)]
    shim = types.SimpleNamespace(tqdm=lambda iterable, *a, **k: iterable)
    try:
        for mod, _ in saved:
            mod.tqdm = shim
        yield
    finally:
        for mod, original in saved:
            mod.tqdm = original


# ----------------------------------------------------------------------------- one CAM object


class CamRunner:
    """One library CAM object for one layer group, with vizpipe's hooks; a context manager.

    ``__enter__`` builds it (the library registers its hooks), adds the clone hooks and, when
    freezing parameters, the graph cut; ``__exit__`` releases everything.
    """

    def __init__(
        self,
        ctx: RunContext,
        settings: CamConfig,
        spec: MethodSpec,
        layers: list[CamLayer],
        *,
        capture: bool = False,
    ) -> None:
        self.ctx, self.settings, self.spec, self.layers = ctx, settings, spec, layers
        self.capture = capture and len(layers) > 1  # keep each layer's map from the averaged call
        self.obj: Any = None
        self.handles: list[Any] = []
        self.cut = False
        self.per_layer: list[np.ndarray] | None = None

    def __enter__(self) -> CamRunner:
        """Build the library object and register vizpipe's hooks."""
        model = self.ctx.model
        # FullGrad picks its own layers (every conv/batch-norm bias) and prints a warning if given any
        modules = (
            [] if _is(self.spec, "FullGrad") else [model.get_submodule(layer.name) for layer in self.layers]
        )
        needs_reshape = any(layer.layout.needs_reshape for layer in self.layers)
        reshape = LayoutReshape(self.layers) if needs_reshape else None
        kwargs: dict[str, Any] = {}
        if _is(self.spec, "AblationCAM"):
            from pytorch_grad_cam import AblationLayer, AblationLayerVit

            # a fresh ablation layer: the library's default argument is one instance shared by all calls
            kwargs["ablation_layer"] = AblationLayerVit() if needs_reshape else AblationLayer()
            kwargs["batch_size"] = int(self.settings.batch_size)
        elif self.spec.meta and "batch_size" in _init_params(self.spec.cls):
            kwargs["batch_size"] = int(self.settings.batch_size)
        self.obj = self.spec.cls(model, modules, reshape_transform=reshape, **kwargs)
        try:
            self._hook(modules)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _hook(self, modules: list[nn.Module]) -> None:
        cams = _inner_cams(self.obj)
        for cam in cams:
            if hasattr(cam, "batch_size") or self.spec.perturbation:
                cam.batch_size = int(self.settings.batch_size)  # ScoreCAM reads an attribute
        # second-order methods (ShapleyCAM: detach=False) differentiate the gradients themselves,
        # which needs the parameters in the graph: those run unfrozen
        freeze = bool(self.settings.freeze_params) and all(c.detach for c in cams)
        if freeze:
            from pytorch_grad_cam.base_cam import BaseCAM

            self.ctx.model.requires_grad_(False)
            cam = cams[0] if len(cams) == 1 and cams[0] is self.obj else None
            self.cut = bool(
                cam is not None
                and len(cam.target_layers) == 1
                and cam.uses_gradients
                and cam.detach
                and not cam.compute_input_gradient
                and type(cam).compute_cam_per_layer is BaseCAM.compute_cam_per_layer
            )
            if not self.cut:
                for c in cams:
                    if c.uses_gradients:
                        c.compute_input_gradient = True
                if getattr(self.obj, "uses_gradients", False) and hasattr(self.obj, "compute_input_gradient"):
                    self.obj.compute_input_gradient = True  # FinerCAM reads its own copy
        targets = list(dict.fromkeys(m for c in cams for m in c.target_layers))  # FullGrad: its bias layers
        for module in targets:
            cut_here = self.cut and module is modules[0]
            self.handles.append(module.register_forward_hook(_guard_hook(cut_here), prepend=True))
            self.handles.append(module.register_forward_hook(_clone_hook))
        if self.capture and cams == [self.obj]:
            self._capture_per_layer()

    def _capture_per_layer(self) -> None:
        """Keep each layer's map from the averaged call (the same numbers a one-layer call gives)."""
        from pytorch_grad_cam.base_cam import BaseCAM
        from pytorch_grad_cam.utils.image import scale_cam_image

        cam = self.obj
        if type(cam).aggregate_multi_layers is not BaseCAM.aggregate_multi_layers:
            return
        original = cam.aggregate_multi_layers

        def aggregate(cam_per_layer: list[np.ndarray]) -> np.ndarray:
            import numpy as np

            self.per_layer = [scale_cam_image(np.maximum(c, 0).mean(axis=1)) for c in cam_per_layer]
            return original(cam_per_layer)

        cam.aggregate_multi_layers = aggregate

    def __call__(self, x: torch.Tensor, targets: list[Any]) -> np.ndarray:
        """One batched call: (N, H, W) float32 maps for the N images and their N targets."""
        import numpy as np
        import torch

        kwargs: dict[str, Any] = {"eigen_smooth": bool(self.settings.eigen_smooth)}
        if self.settings.aug_smooth:
            kwargs["aug_smooth"] = True
        self.per_layer = None
        with torch.enable_grad():
            out = self.obj(x, targets, **kwargs)
        return np.asarray(out, dtype=np.float32)

    def __exit__(self, *exc: object) -> None:
        """Release the library's hooks and vizpipe's."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        if self.obj is not None:
            _release(self.obj)


def _init_params(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


def _guard_hook(cut: bool) -> Any:
    """A first forward hook: refuse non-tensor outputs; with ``cut``, start the graph here."""

    def hook(module: nn.Module, args: object, output: Any) -> Any:
        import torch

        if not isinstance(output, torch.Tensor):
            raise ConfigError(
                f"CAM layer {type(module).__name__} returns a {type(output).__name__}, not a tensor; "
                "choose a layer that returns one tensor (summary/layers.txt)"
            )
        if cut:
            return output.detach().requires_grad_(True)  # a leaf: backward stops here
        return None

    return hook


def _clone_hook(module: nn.Module, args: object, output: Any) -> Any:
    """A last forward hook: the rest of the model gets a clone, so in-place ops spare the original."""
    return output.clone()


# ----------------------------------------------------------------------------- collect


def _targets(classes: list[int], logits: torch.Tensor, spec: MethodSpec) -> list[Any]:
    """One library target per image (FinerCAM: its weighted target against the closest classes)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if not _is(spec, "FinerCAM"):
        return [ClassifierOutputTarget(int(c)) for c in classes]
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

    out = []
    for i, c in enumerate(classes):
        diff = (logits[i] - logits[i, c]).abs()
        similar = [int(k) for k in diff.argsort().tolist() if int(k) != c][:3]  # the library's default
        out.append(FinerWeightedTarget(int(c), similar, 1.0))
    return out


def _metric_targets(classes: list[int], num_classes: int) -> list[Any]:
    """Targets for the metrics: the class's softmax probability (its raw output for one output)."""
    from pytorch_grad_cam.utils.model_targets import (
        ClassifierOutputSoftmaxTarget,
        ClassifierOutputTarget,
    )

    cls = ClassifierOutputTarget if num_classes == 1 else ClassifierOutputSoftmaxTarget
    return [cls(int(c)) for c in classes]


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the outputs (sigmoid for a single output), as ``RunContext.top_k``."""
    import torch

    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def collect(ctx: RunContext, settings: CamConfig, plan: CamPlan) -> dict[str, Any]:
    """Compute every map: one batched library call per (layer group, class), kept in memory."""
    import numpy as np

    x = ctx.inputs.tensor
    n = int(x.shape[0])
    logits = ctx.probe().logits  # (N, K) on CPU
    probs = _probabilities(logits)
    top1 = logits.argmax(dim=1).tolist()
    class_sets = [top1] if plan.classes is None else [[c] * n for c in plan.classes]
    spec = plan.method
    log.info(
        "CAM <%s> on %s, layer(s) %s, %s, %d image(s)",
        spec.name,
        ctx.model_name,
        plan.label,
        "top-1 class of each image" if plan.classes is None else f"class(es) {plan.classes}",
        n,
    )
    # per-layer maps come from the averaged call when the library allows (same numbers)
    capture = len(plan.groups) > 1 and not spec.meta and not settings.aug_smooth and not plan.metrics
    computed: dict[tuple[str, int], tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    state = ModelState(ctx.model)
    t0 = time.perf_counter()
    passes = 0
    try:
        for label, layers in plan.groups:
            todo = [k for k in range(len(class_sets)) if (label, k) not in computed]
            if not todo:
                continue
            with CamRunner(ctx, settings, spec, layers, capture=capture) as runner:
                with _progress(ctx, runner, label, len(todo)) as counter:
                    for k in todo:
                        batch = _run_batches(runner, x, class_sets[k], logits)
                        computed[(label, k)] = (
                            batch,
                            _metrics(plan, runner, x, batch, class_sets[k], ctx),
                        )
                        for layer, m in zip(layers, runner.per_layer or [], strict=False):
                            computed[(layer.name, k)] = (m, {})
                    passes += counter()
    finally:
        removed = state.restore()
        if removed:
            log.debug("CAM: removed %d hook(s) left on the model", removed)
    seconds = time.perf_counter() - t0
    invalid_model = bool(ctx.nonfinite_params)
    maps: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    for label, _ in plan.groups:
        for k, classes in enumerate(class_sets):
            batch, scores = computed[(label, k)]
            for i in range(n):
                c = int(classes[i])
                maps[i].append(
                    {
                        "layer": label,
                        "target": c,
                        "target_name": ctx.class_name(c),
                        "score": _finite(probs[i, c]),
                        "logit": _finite(logits[i, c]),
                        "metrics": {name: _finite(v[i]) for name, v in scores.items()},
                        "valid": bool(not invalid_model and np.isfinite(batch[i]).all()),
                        "array": batch[i],
                    }
                )
    total = sum(len(row) for row in maps)
    bad = sum(not m["valid"] for row in maps for m in row)
    if bad:
        why = (
            f"the model has non-finite parameters ({', '.join(ctx.nonfinite_params[:3])})"
            if invalid_model
            else "non-finite values in the map"
        )
        ctx.warn(f"CAM: {bad} of {total} map(s) are invalid ({why}); they are marked valid=false")
    log.info(
        "CAM <%s>: %d map(s) in %.2fs%s",
        spec.name,
        total,
        seconds,
        f", {passes} forward passes" if passes else "",
    )
    top5 = ctx.top_k(5)
    return {
        "method": spec.name,
        "method_key": spec.key,
        "layers": ["bias_layers"] if _is(spec, "FullGrad") else [layer.name for layer in plan.layers],
        "targets": settings.target_class,
        "images": [
            {
                "name": ctx.inputs.names[i],
                "source": ctx.inputs.sources[i],
                "top5": [
                    {"class": r["class"], "name": r["name"], "prob": _finite(r["prob"])} for r in top5[i]
                ],
                "maps": maps[i],
            }
            for i in range(n)
        ],
        "seconds": seconds,
        "forward_passes": passes,
    }


def _is(spec: MethodSpec, name: str) -> bool:
    """True when the method is the library's class ``name`` or a subclass of it."""
    return any(c.__name__ == name for c in spec.cls.__mro__)


def _chunk(spec: MethodSpec, layers: list[CamLayer], x: torch.Tensor) -> int:
    """Images per library call: all N, except ScoreCAM when its N×C×3×H×W tensor would be huge."""
    n = int(x.shape[0])
    if not _is(spec, "ScoreCAM"):
        return n
    per_image = max(layer.layout.channels for layer in layers) * x[0].numel() * x.element_size()
    return max(1, min(n, SCORECAM_MAX_BYTES // max(per_image, 1)))


def _run_batches(runner: CamRunner, x: torch.Tensor, classes: list[int], logits: torch.Tensor) -> np.ndarray:
    """The library call for the N images (ScoreCAM: split only to bound its memory)."""
    import numpy as np

    n = int(x.shape[0])
    step = _chunk(runner.spec, runner.layers, x)
    if step < n:
        log.info(
            "ScoreCAM: %d image(s) per call to keep its masked-input tensor under %d MiB",
            step,
            SCORECAM_MAX_BYTES >> 20,
        )
    targets = _targets(classes, logits, runner.spec)
    parts = []
    per_layer: list[list[np.ndarray]] = []
    for s in range(0, n, step):
        parts.append(runner(x[s : s + step], targets[s : s + step]))
        per_layer.append(runner.per_layer or [])
    if runner.per_layer is not None:
        runner.per_layer = [np.concatenate([p[j] for p in per_layer]) for j in range(len(per_layer[0]))]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _metrics(
    plan: CamPlan,
    runner: CamRunner,
    x: torch.Tensor,
    maps: np.ndarray,
    classes: list[int],
    ctx: RunContext,
) -> dict[str, np.ndarray]:
    """Each configured metric on a batch of maps (while the CAM exists: Coherency/ARCC rerun it)."""
    import numpy as np

    if not plan.metrics:
        return {}
    targets = _metric_targets(classes, ctx.num_classes)
    safe = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    return {name: compute_metric(name, x, safe, targets, ctx.model, runner.obj) for name in plan.metrics}


@contextlib.contextmanager
def _progress(ctx: RunContext, runner: CamRunner, label: str, calls: int) -> Iterator[Any]:
    """ScoreCAM/AblationCAM: log the forward-pass count, show one bar, count the real passes.

    Yields a function returning the passes counted so far (0 for other methods).
    """
    spec, layers, settings = runner.spec, runner.layers, runner.settings
    if not spec.perturbation:
        yield lambda: 0
        return
    from tqdm import tqdm

    n = int(ctx.inputs.tensor.shape[0])
    bs = int(settings.batch_size)
    tta = len(list(runner.obj.tta_transforms)) if settings.aug_smooth else 1
    chunks = math.ceil(n / _chunk(spec, layers, ctx.inputs.tensor))
    ablation = 1 if _is(spec, "AblationCAM") else 0  # its own forward per layer, to cache activations
    per_call = chunks + sum(ablation + n * math.ceil(layer.layout.channels / bs) for layer in layers)
    expected = per_call * tta * calls
    channels = ", ".join(f"{layer.name}: {layer.layout.channels}" for layer in layers)
    log.info(
        "%s on %s: %d forward passes to run (%d class call(s) x [%d + %d image(s) x ceil(channels / "
        "batch_size %d)%s]%s; channels %s)",
        spec.name,
        label,
        expected,
        calls,
        chunks,
        n,
        bs,
        " + 1 per layer" if ablation else "",
        f" x {tta} augmentations" if tta > 1 else "",
        channels,
    )
    bar = tqdm(total=expected, desc=f"{spec.name} {label}", unit="pass", leave=False)
    count = [0]

    def on_forward(module: nn.Module, args: object, output: object) -> None:
        count[0] += 1
        bar.update(1)

    handle = ctx.model.register_forward_hook(on_forward)
    try:
        with _quiet_library_bars():
            yield lambda: count[0]
    finally:
        handle.remove()
        bar.close()
        log.info("%s on %s: %d forward passes done", spec.name, label, count[0])


def _finite(value: Any) -> float | None:
    """A JSON-safe float (None for NaN/inf)."""
    v = float(value)
    return v if math.isfinite(v) else None


# ----------------------------------------------------------------------------- render


def file_stem(label: str, target: int, target_name: str | None) -> str:
    """``<layer>__<class>[_<class name>]``, every part through ``safe_name``."""
    stem = f"{safe_name(label)}__{int(target)}"
    return f"{stem}_{safe_name(target_name, 60)}" if target_name else stem


def render(ctx: RunContext, settings: CamConfig, data: dict[str, Any]) -> dict[str, Any]:
    """Write overlay/heatmap PNGs and the raw .npy per map, then cam.json; return the JSON data."""
    import cv2
    import numpy as np
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from pipeline.render import save_png

    out = ctx.stage_dir("cam")
    images = []
    for i, image in enumerate(data["images"]):
        folder_name = safe_name(image["name"])
        folder = out / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        rgb = np.asarray(ctx.inputs.rgb[i], dtype=np.float32)  # (H, W, 3) in [0, 1]
        rows = []
        for m in image["maps"]:
            arr = m["array"]
            stem = file_stem(m["layer"], m["target"], m["target_name"])
            np.save(folder / f"{stem}.npy", arr.astype(np.float32))
            mask = np.clip(np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
            overlay = show_cam_on_image(rgb, mask, use_rgb=True, image_weight=float(settings.image_weight))
            heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * mask), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
            save_png(folder / f"{stem}_overlay.png", overlay)
            save_png(folder / f"{stem}_heatmap.png", heat)
            rel = f"cam/{folder_name}/{stem}"
            row = {k: v for k, v in m.items() if k != "array"}
            row.update(overlay=f"{rel}_overlay.png", heatmap=f"{rel}_heatmap.png", npy=f"{rel}.npy")
            rows.append(
                {
                    k: row[k]
                    for k in (
                        "layer",
                        "target",
                        "target_name",
                        "score",
                        "logit",
                        "overlay",
                        "heatmap",
                        "npy",
                        "metrics",
                        "valid",
                    )
                }
            )
        images.append({**{k: image[k] for k in ("name", "source", "top5")}, "maps": rows})
    doc = {k: data[k] for k in ("method", "method_key", "layers", "targets")}
    doc["images"] = images
    (out / "cam.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return doc
