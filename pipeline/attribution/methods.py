"""Pixel attributions by name, beside grad-cam's CAMs: captum's methods and the baselines.

``cam.method`` names a CAM (any class pytorch-grad-cam exports, ``vizpipe.pipeline.gradcam.methods``)
or one of these (``resolve_cam_method`` looks in both, one error listing all):

================  ======================================  =========  =================================
name              computed by                             layer      paper
================  ======================================  =========  =================================
integrated_gradients  captum ``IntegratedGradients``      input      Sundararajan et al. 2017
saliency          captum ``Saliency`` (``abs=True``)       input      Simonyan et al. 2014
input_x_gradient  captum ``InputXGradient``                input      Shrikumar et al. 2016
guided_backprop   captum ``GuidedBackprop``                input      Springenberg et al. 2015
guided_gradcam    captum ``GuidedGradCam``                 cam.layer  Selvaraju et al. 2017
deeplift          captum ``DeepLift``                      input      Shrikumar et al. 2017
gradient_shap     captum ``GradientShap``                  input      Lundberg and Lee 2017
occlusion         captum ``Occlusion``                     input      Zeiler and Fergus 2014
noise_tunnel      captum ``NoiseTunnel`` around            input      Smilkov et al. 2017 (SmoothGrad)
                  ``base_method`` (default saliency)
sobel             grad-cam's ``sobel_cam`` (no model)      input      a baseline: the image's edges
================  ======================================  =========  =================================

grad-cam's ``RandomCAM`` (random channel weights) is the other baseline; it is a CAM class, so
``cam.method=randomcam`` runs it through the CAM path.

**Guided backprop: which one runs.** grad-cam also implements guided backpropagation
(``pytorch_grad_cam.GuidedBackpropReLUModel``), but it swaps every ``nn.ReLU`` of the model for its
own function and puts back *new* ``ReLU`` modules afterwards, so the model is no longer the one it
was given (vizpipe leaves a model exactly as found). vizpipe never called it; ``guided_backprop``
runs captum's ``GuidedBackprop``, which overrides the ReLUs' gradients with backward hooks it
removes again. The two give the same gradients on a ReLU network (``tests/test_attribution.py``).

Arguments: ``cam.kwargs`` holds the method's own arguments (its constructor's and its
``attribute``'s, by name; ``ARGS`` below lists them with vizpipe's defaults). ``baselines`` is
``zero`` (0 in the model's input, captum's default), ``black`` (pixel value 0 through the input's
normalisation) or ``blur`` (RISE's Gaussian blur of the image; not for ``gradient_shap``, whose
baselines are a distribution). ``occlusion``'s ``sliding_window_shapes``/``strides`` default to
an eighth of the image's side and half that; ``noise_tunnel``'s ``base_method`` is any other
captum method here and its own arguments go beside ``nt_type``, ``nt_samples``, ``stdevs``.

How a map is made from an attribution (B, C, H, W): ``|sum over channels|``, divided by the
image's maximum (a map in [0, 1], 0 where the attribution is 0): the ``.npy`` and every metric see
this. It is drawn as captum draws it (``visualize_image_attr``, ``sign="absolute_value"``,
``outlier_perc=2``: scaled by the value where the sorted map's cumulative sum reaches 98% of its
total, clipped at 1), so a few extreme pixels do not leave the picture black.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vizpipe.pipeline.errors import ConfigError, unknown_choice

__all__ = [
    "ARGS",
    "ATTRIBUTIONS",
    "AttributionSpec",
    "attribution_kwargs",
    "is_attribution",
    "resolve_cam_method",
]


@dataclass(frozen=True)
class AttributionSpec:
    """One pixel attribution method (the CAM stage runs it through ``AttributionRunner``)."""

    key: str  # canonical key (letters and digits), e.g. "integratedgradients"
    name: str  # its name in configs and records, e.g. "integrated_gradients"
    cls: str  # captum.attr's class, or "sobel_cam" (grad-cam's function)
    library: str  # captum | grad-cam
    uses_layer: bool  # guided_gradcam: cam.layer is its Grad-CAM layer; the others attribute to the input
    paper: str
    url: str
    meta: bool = False  # (the CAM path's field) no method here wraps a grad-cam base method
    perturbation: bool = False  # (the CAM path's field) no channel-by-channel forward passes
    family: str = "attribution"
    defaults: dict[str, Any] = field(default_factory=dict)

    def is_a(self, name: str) -> bool:
        """Never one of grad-cam's classes (the CAM path asks: ``FullGrad``, ``ScoreCAM``, ...)."""
        return False

    def accepts(self, option: str) -> bool:
        """No grad-cam call options (``aug_smooth``)."""
        return False


_Z = "zero"
#: name -> (captum class, library, uses layer, paper, url, vizpipe's defaults for its arguments)
_TABLE: dict[str, tuple[str, str, bool, str, str, dict[str, Any]]] = {
    "integrated_gradients": (
        "IntegratedGradients", "captum", False,
        "Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks", "https://arxiv.org/abs/1703.01365",
        {"baselines": _Z, "n_steps": 50, "method": "gausslegendre", "internal_batch_size": None,
         "multiply_by_inputs": True},
    ),
    "saliency": (
        "Saliency", "captum", False,
        "Simonyan et al. 2014, Deep Inside Convolutional Networks: Visualising Image Classification Models "
        "and Saliency Maps", "https://arxiv.org/abs/1312.6034", {"abs": True},
    ),
    "input_x_gradient": (
        "InputXGradient", "captum", False,
        "Shrikumar et al. 2016, Not Just a Black Box: Learning Important Features Through Propagating "
        "Activation Differences", "https://arxiv.org/abs/1605.01713", {},
    ),
    "guided_backprop": (
        "GuidedBackprop", "captum", False,
        "Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net",
        "https://arxiv.org/abs/1412.6806", {},
    ),
    "guided_gradcam": (
        "GuidedGradCam", "captum", True,
        "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based "
        "Localization", "https://arxiv.org/abs/1610.02391", {"interpolate_mode": "nearest"},
    ),
    "deeplift": (
        "DeepLift", "captum", False,
        "Shrikumar et al. 2017, Learning Important Features Through Propagating Activation Differences",
        "https://arxiv.org/abs/1704.02685", {"baselines": _Z, "multiply_by_inputs": True, "eps": 1e-10},
    ),
    "gradient_shap": (
        "GradientShap", "captum", False,
        "Lundberg and Lee 2017, A Unified Approach to Interpreting Model Predictions",
        "https://arxiv.org/abs/1705.07874",
        {"baselines": _Z, "n_samples": 5, "stdevs": 0.0, "multiply_by_inputs": True},
    ),
    "occlusion": (
        "Occlusion", "captum", False,
        "Zeiler and Fergus 2014, Visualizing and Understanding Convolutional Networks",
        "https://arxiv.org/abs/1311.2901",
        {"baselines": _Z, "sliding_window_shapes": None, "strides": None, "perturbations_per_eval": 16},
    ),
    "noise_tunnel": (
        "NoiseTunnel", "captum", False,
        "Smilkov et al. 2017, SmoothGrad: removing noise by adding noise", "https://arxiv.org/abs/1706.03825",
        {"base_method": "saliency", "nt_type": "smoothgrad", "nt_samples": 8, "stdevs": 0.15,
         "nt_samples_batch_size": None},
    ),
    "sobel": (
        "sobel_cam", "grad-cam", False,
        "A baseline: the image's Sobel edges, no model (pytorch-grad-cam's sobel_cam)",
        "https://github.com/jacobgil/pytorch-grad-cam/blob/master/pytorch_grad_cam/sobel_cam.py", {},
    ),
}  # fmt: skip


def normalize(name: str) -> str:
    """Lower-case ``name`` and keep only letters and digits (``Input-X-Gradient`` -> ``inputxgradient``)."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower().replace("++", "plusplus"))


#: canonical key -> spec, in the order the choices are listed
ATTRIBUTIONS: dict[str, AttributionSpec] = {
    normalize(name): AttributionSpec(normalize(name), name, cls, lib, layer, paper, url, defaults=dict(d))
    for name, (cls, lib, layer, paper, url, d) in _TABLE.items()
}
#: every argument a method takes (its defaults here; captum's other arguments are not exposed)
ARGS: dict[str, dict[str, Any]] = {spec.name: dict(spec.defaults) for spec in ATTRIBUTIONS.values()}
#: short names
ALIASES = {"ig": "integratedgradients", "smoothgrad": "noisetunnel", "gbp": "guidedbackprop"}
BASELINES = ("zero", "black", "blur")


def is_attribution(spec: Any) -> bool:
    """True for a pixel attribution method (``AttributionSpec``), False for a grad-cam CAM."""
    return isinstance(spec, AttributionSpec)


def resolve_cam_method(name: str) -> Any:
    """``cam.method``: a pixel attribution (``AttributionSpec``) or a grad-cam CAM (``MethodSpec``)."""
    from vizpipe.pipeline.gradcam.methods import SPELLED, available_methods, resolve_method

    key = ALIASES.get(normalize(name), normalize(name))
    if key in ATTRIBUTIONS:
        return ATTRIBUTIONS[key]
    try:
        return resolve_method(name)
    except ConfigError as exc:
        cams = [SPELLED.get(k, k) for k in available_methods()]
        raise unknown_choice(
            "CAM method",
            name,
            [*cams, *(s.name for s in ATTRIBUTIONS.values())],
            hint="Set cam.method=<one of these> (case-insensitive): a grad-cam CAM or a pixel attribution",
        ) from exc


def attribution_kwargs(spec: AttributionSpec, given: dict[str, Any]) -> dict[str, Any]:
    """``cam.kwargs`` for ``spec`` checked against its arguments; returns them with the defaults filled."""
    out = dict(spec.defaults)
    base = None
    if spec.name == "noise_tunnel":
        base = resolve_cam_method(str((given or {}).get("base_method", out["base_method"])))
        if not is_attribution(base) or base.name in ("noise_tunnel", "sobel") or base.uses_layer:
            raise ConfigError(
                f"cam.kwargs.base_method={given.get('base_method')} for noise_tunnel must be one of captum's "
                "input attributions: "
                + ", ".join(
                    s.name for s in ATTRIBUTIONS.values() if s.library == "captum" and not s.uses_layer
                )
            )
        out = {**base.defaults, **out, "base_method": base.name}
    for key, value in (given or {}).items():
        if key not in out:
            raise unknown_choice(
                f"cam.kwargs key for {spec.name}",
                key,
                list(out) or ["(none: this method takes no arguments)"],
                hint="vizpipe.pipeline.attribution.methods.ARGS lists each method's arguments and defaults",
            )
        out[key] = base.name if key == "base_method" and base is not None else value
    _check_values(spec, out)
    return out


def _check_values(spec: AttributionSpec, args: dict[str, Any]) -> None:
    """The values vizpipe interprets itself: baselines, counts, window shapes."""
    if "baselines" in args:
        value = args["baselines"]
        if value not in BASELINES:
            raise unknown_choice(f"cam.kwargs.baselines for {spec.name}", value, BASELINES)
        if spec.name == "gradient_shap" and value == "blur":
            raise ConfigError(
                "cam.kwargs.baselines=blur is a per-image baseline; gradient_shap draws its baselines from a "
                "distribution: use zero or black"
            )
    for key in ("n_steps", "n_samples", "nt_samples", "perturbations_per_eval"):
        if key in args and (isinstance(args[key], bool) or not isinstance(args[key], int) or args[key] < 1):
            raise ConfigError(f"cam.kwargs.{key} for {spec.name} must be an integer >= 1, got {args[key]!r}")
    for key in ("sliding_window_shapes", "strides"):
        value = args.get(key)
        if value is not None and (
            not isinstance(value, list | tuple) or not value or any(int(v) < 1 for v in value)
        ):
            raise ConfigError(
                f"cam.kwargs.{key} for {spec.name} must be null (an eighth of the image) or a list of "
                f"positive sizes (C, h, w), got {value!r}"
            )
    if "stdevs" in args and float(args["stdevs"]) < 0:
        raise ConfigError(f"cam.kwargs.stdevs for {spec.name} must be >= 0, got {args['stdevs']!r}")
