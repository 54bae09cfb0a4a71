"""CAM methods and CAM metrics, by name, from what the installed ``pytorch_grad_cam`` exports.

Methods are discovered, not listed: every class the package exports that subclasses ``BaseCAM``
(GradCAM, HiResCAM, ScoreCAM, ...) or wraps a base method (``FinerCAM``, ``SESS``,
``RefineCAM``: their constructor takes ``model``, ``target_layers`` and ``base_method``), plus
vizpipe's own ``BaseCAM`` subclasses (``own_methods``: ``EigenCAMTorch``, EigenCAM on the device). A name
is matched case-insensitively after dropping everything but letters, digits and ``++``
(``Grad-CAM++`` -> ``gradcamplusplus``); ``gradcam++``, ``gradcampp`` and the name without its
``cam`` suffix (``score``, ``ablation``, ...) are aliases.

Metrics are grad-cam's CAM metrics (``pytorch_grad_cam.metrics``), by snake-case name or class
name; the table below says how each one is called.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from vizpipe.pipeline.errors import ConfigError, unknown_choice

__all__ = [
    "METRICS",
    "MetricSpec",
    "MethodSpec",
    "available_methods",
    "available_metrics",
    "normalize",
    "resolve_method",
    "resolve_metrics",
]

#: How a canonical key is spelled in messages (the canonical key drops "+" and "_").
SPELLED = {"gradcamplusplus": "gradcam++", "eigencamtorch": "eigencam_torch"}
#: Methods that run one forward pass per channel batch (a progress bar and a pass count).
PERTURBATION_METHODS = ("ScoreCAM", "AblationCAM")


@dataclass(frozen=True)
class MetricSpec:
    """How vizpipe calls one of grad-cam's CAM metrics (``pytorch_grad_cam.metrics``)."""

    module: str  # module under pytorch_grad_cam.metrics
    cls: str  # class name there
    # perturb: metric(input, cams, targets, model); cams: metric(cams);
    # base_method: metric(input, cams, targets, model, base_method=cam) (Coherency);
    # init_base_method: metric(base_method=cam)(input, cams, targets, model) (ARCC)
    how: str
    # what the targets score, following the library's docs and tests: "softmax" (the class's
    # probability, ClassifierOutputSoftmaxTarget: the perturbation metrics) or "raw" (the raw
    # output, ClassifierOutputTarget, the CAM's own target: Coherency and ARCC recompute the CAM)
    target: str
    better: str  # higher | lower: which way a better map moves the number
    forwards: int  # forward passes per map batch (ROAD: one per percentile, after imputation)


#: metric name -> how it is called
METRICS: dict[str, MetricSpec] = {
    "confidence_change": MetricSpec(
        "cam_mult_image", "CamMultImageConfidenceChange", "perturb", "softmax", "higher", 1
    ),
    "drop_in_confidence": MetricSpec("cam_mult_image", "DropInConfidence", "perturb", "softmax", "lower", 1),
    "increase_in_confidence": MetricSpec(
        "cam_mult_image", "IncreaseInConfidence", "perturb", "softmax", "higher", 1
    ),
    "road_most_relevant_first": MetricSpec("road", "ROADMostRelevantFirst", "perturb", "softmax", "lower", 1),
    "road_least_relevant_first": MetricSpec(
        "road", "ROADLeastRelevantFirst", "perturb", "softmax", "higher", 1
    ),
    "road_most_relevant_first_average": MetricSpec(
        "road", "ROADMostRelevantFirstAverage", "perturb", "softmax", "lower", 4
    ),
    "road_least_relevant_first_average": MetricSpec(
        "road", "ROADLeastRelevantFirstAverage", "perturb", "softmax", "higher", 4
    ),
    "road_combined": MetricSpec("road", "ROADCombined", "perturb", "softmax", "higher", 8),
    "complexity": MetricSpec("arcc", "Complexity", "cams", "none", "lower", 0),
    "coherency": MetricSpec("arcc", "Coherency", "base_method", "raw", "higher", 1),
    "arcc": MetricSpec("arcc", "ARCC", "init_base_method", "raw", "higher", 9),
}


def normalize(name: str) -> str:
    """Lower-case ``name``, spell ``++`` as ``plusplus`` and drop all but letters and digits."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower().replace("++", "plusplus"))


@dataclass(frozen=True)
class MethodSpec:
    """One CAM method the installed library provides."""

    key: str  # canonical lower-case key, e.g. "gradcam", "gradcamplusplus"
    name: str  # the library's class name, e.g. "GradCAM"
    cls: type
    meta: bool  # wraps a base method (FinerCAM, SESS, RefineCAM) instead of subclassing BaseCAM

    def is_a(self, name: str) -> bool:
        """True when the method is the library's class ``name`` or a subclass of it."""
        return any(c.__name__ == name for c in self.cls.__mro__)

    @property
    def perturbation(self) -> bool:
        """True for ScoreCAM/AblationCAM (and subclasses): one forward pass per channel batch."""
        return any(c.__name__ in PERTURBATION_METHODS for c in self.cls.__mro__)

    def accepts(self, option: str) -> bool:
        """Whether calling the method object accepts keyword ``option`` (e.g. ``aug_smooth``)."""
        for fn in (self.cls.__call__, getattr(self.cls, "forward", None)):
            if fn is not None and option in inspect.signature(fn).parameters:
                return True
        return False


def available_methods() -> dict[str, MethodSpec]:
    """Canonical key -> ``MethodSpec`` for every CAM class ``pytorch_grad_cam`` exports."""
    import pytorch_grad_cam
    from pytorch_grad_cam.base_cam import BaseCAM

    out: dict[str, MethodSpec] = {}
    for attr in sorted(dir(pytorch_grad_cam)):
        obj = getattr(pytorch_grad_cam, attr)
        if not inspect.isclass(obj):
            continue
        if issubclass(obj, BaseCAM):
            meta = False
        else:
            try:
                params = set(inspect.signature(obj.__init__).parameters)
            except (TypeError, ValueError):
                continue
            if not {"model", "target_layers", "base_method"} <= params:
                continue
            meta = True
        key = normalize(obj.__name__)
        out[key] = MethodSpec(key=key, name=obj.__name__, cls=obj, meta=meta)
    for obj in own_methods():
        key = normalize(obj.__name__)
        out[key] = MethodSpec(key=key, name=obj.__name__, cls=obj, meta=False)
    # most used first: that is the order the choices are listed in
    first = [
        "gradcam",
        "gradcamplusplus",
        "hirescam",
        "xgradcam",
        "layercam",
        "eigencam",
        "eigencamtorch",
        "eigengradcam",
        "scorecam",
        "ablationcam",
    ]
    return {k: out[k] for k in [*[f for f in first if f in out], *sorted(k for k in out if k not in first)]}


def own_methods() -> list[type]:
    """vizpipe's own ``BaseCAM`` subclasses, listed beside the library's (``eigencam_torch``)."""
    from vizpipe.pipeline.gradcam.eigencam import EigenCAMTorch

    return [EigenCAMTorch]


def _aliases(methods: dict[str, MethodSpec]) -> dict[str, str]:
    """Alias -> canonical key (``gradcampp`` and the keys without their ``cam`` suffix)."""
    aliases = {"gradcampp": "gradcamplusplus", "gcpp": "gradcamplusplus"}
    for key in methods:
        if key.endswith("cam") and len(key) > 3 and key[:-3] not in methods:
            aliases.setdefault(key[:-3], key)
    return {a: k for a, k in aliases.items() if k in methods and a not in methods}


def resolve_method(name: str) -> MethodSpec:
    """The method called ``name`` (case-insensitive, aliases allowed); unknown -> ``ConfigError``."""
    methods = available_methods()
    key = normalize(name)
    key = _aliases(methods).get(key, key)
    if key not in methods:
        shown = [SPELLED.get(k, k) for k in methods]
        raise unknown_choice(
            "CAM method", name, shown, hint="Set cam.method=<one of these> (case-insensitive)"
        )
    return methods[key]


# ----------------------------------------------------------------------------- metrics


def available_metrics() -> dict[str, MetricSpec]:
    """The subset of ``METRICS`` the installed library provides."""
    import importlib

    out = {}
    for name, spec in METRICS.items():
        try:
            mod = importlib.import_module(f"pytorch_grad_cam.metrics.{spec.module}")
        except ImportError:
            continue
        if hasattr(mod, spec.cls):
            out[name] = spec
    return out


def resolve_metrics(names: list[str]) -> list[str]:
    """Canonical metric names for ``names`` (snake-case or class names, case-insensitive)."""
    table = available_metrics()
    lookup = {normalize(n): n for n in table}
    lookup.update({normalize(spec.cls): n for n, spec in table.items()})
    out: list[str] = []
    for name in names:
        key = lookup.get(normalize(name))
        if key is None:
            raise unknown_choice(
                "CAM metric",
                name,
                list(table),
                hint="Set cam.metrics=[<names>] (grad-cam's pytorch_grad_cam.metrics)",
            )
        out.append(key)
    return list(dict.fromkeys(out))


def compute_metric(name: str, input_tensor: Any, cams: Any, targets: list[Any], model: Any, cam: Any) -> Any:
    """Run metric ``name`` on a batch of maps ``cams`` (N, H, W): one float per image (numpy)."""
    import importlib

    import numpy as np

    spec = METRICS[name]
    how = spec.how
    cls = getattr(importlib.import_module(f"pytorch_grad_cam.metrics.{spec.module}"), spec.cls)
    if how == "cams":
        result = cls()(cams)
    elif how == "perturb":
        result = cls()(input_tensor, cams, targets, model)
    elif how == "base_method":
        result = cls()(input_tensor, cams, targets, model, cam)
    elif how == "init_base_method":
        result = cls(base_method=cam)(input_tensor, cams, targets, model)
    else:  # pragma: no cover - the table above is the only source
        raise ConfigError(f"CAM metric '{name}' has an unknown calling convention '{how}'")
    return np.asarray(result, dtype=np.float64).reshape(len(cams), -1)[:, 0]
