"""CAM methods by name, from what the installed ``pytorch_grad_cam`` exports.

Methods are discovered, not listed: every class the package exports that subclasses ``BaseCAM``
(GradCAM, HiResCAM, ScoreCAM, ...) or wraps a base method (``FinerCAM``, ``SESS``,
``RefineCAM``: their constructor takes ``model``, ``target_layers`` and ``base_method``), plus
vizpipe's own ``BaseCAM`` subclasses (``own_methods``: ``EigenCAMTorch``, EigenCAM on the device). A name
is matched case-insensitively after dropping everything but letters, digits and ``++``
(``Grad-CAM++`` -> ``gradcamplusplus``); ``gradcam++``, ``gradcampp`` and the name without its
``cam`` suffix (``score``, ``ablation``, ...) are aliases.

The metrics (grad-cam's and the others) live in ``vizpipe.pipeline.metrics``; the pixel
attributions that ``cam.method`` also names in ``vizpipe.pipeline.attribution``.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

from vizpipe.pipeline.errors import unknown_choice

__all__ = ["MethodSpec", "available_methods", "normalize", "resolve_method"]

#: How a canonical key is spelled in messages (the canonical key drops "+" and "_").
SPELLED = {"gradcamplusplus": "gradcam++", "eigencamtorch": "eigencam_torch"}
#: Methods that run one forward pass per channel batch (a progress bar and a pass count).
PERTURBATION_METHODS = ("ScoreCAM", "AblationCAM")


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
