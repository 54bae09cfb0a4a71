"""The grad-cam adapter: one library CAM object per layer group, with vizpipe's patches.

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
- **Several classes from one forward pass.** For methods that use the library's own
  ``BaseCAM.forward``, ``CamRunner.maps`` runs that method's steps itself: one forward, then per
  class set ``backward(retain_graph=True)``, ``compute_cam_per_layer`` and
  ``aggregate_multi_layers`` (the library's functions, in its order); with several layers (or
  FullGrad) the input requires grad for that pass, as in the library. Other methods (meta
  methods, second-order ShapleyCAM, ``aug_smooth``) are called once per class set.
- **The model is left as found** (``vizpipe.pipeline.hooks.preserved`` around the stage): hooks (the
  library's and ours) removed, every module's mode, ``requires_grad`` and ``.grad`` restored,
  modules the library swaps (AblationCAM's ablation layer) put back.
``tests/test_cam.py`` proves the maps identical to the library's own.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.gradcam.layers import CamLayer, LayoutReshape
from vizpipe.pipeline.gradcam.methods import MethodSpec

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

__all__ = ["CamRunner", "inner_cams", "quiet_library_bars", "targets_for"]


def inner_cams(method_obj: Any) -> list[Any]:
    """The ``BaseCAM`` objects inside a method object (itself, or a meta-method's base CAMs)."""
    from pytorch_grad_cam.base_cam import BaseCAM

    if isinstance(method_obj, BaseCAM):
        return [method_obj]
    found: list[Any] = []
    for value in vars(method_obj).values():
        items = value if isinstance(value, list | tuple) else [value]
        found.extend(v for v in items if isinstance(v, BaseCAM))
    return found


def release(method_obj: Any) -> None:
    """Remove the library's hooks and drop the graph it keeps (``cam.outputs``)."""
    for cam in inner_cams(method_obj):
        cam.activations_and_grads.release()
        cam.outputs = None


@contextlib.contextmanager
def quiet_library_bars() -> Iterator[None]:
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


def targets_for(classes: list[int], logits: torch.Tensor, spec: MethodSpec) -> list[Any]:
    """One library target per image (FinerCAM: its weighted target against the closest classes)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if not spec.is_a("FinerCAM"):
        return [ClassifierOutputTarget(int(c)) for c in classes]
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

    out = []
    for i, c in enumerate(classes):
        diff = (logits[i] - logits[i, c]).abs()
        similar = [int(k) for k in diff.argsort().tolist() if int(k) != c][:3]  # the library's default
        out.append(FinerWeightedTarget(int(c), similar, 1.0))
    return out


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


class CamRunner:
    """One library CAM object for one layer group, with vizpipe's hooks; a context manager.

    ``__enter__`` builds it (the library registers its hooks), adds the clone hooks and, when
    freezing parameters, the graph cut; ``__exit__`` releases everything it added. The caller
    wraps the whole use in ``vizpipe.pipeline.hooks.preserved`` (modes, ``requires_grad``, grads).
    """

    def __init__(
        self,
        model: nn.Module,
        settings: Any,
        spec: MethodSpec,
        layers: list[CamLayer],
        *,
        kwargs: dict[str, Any] | None = None,
        capture: bool = False,
        order: list[str] | None = None,
    ) -> None:
        self.model, self.settings, self.spec, self.layers = model, settings, spec, layers
        # the library pairs its i-th target layer with the i-th activation its hooks recorded, which
        # come in the order the modules finish a forward pass (``order``: ``Probe.shapes``); the
        # layers are handed to it in that order and each layer's map is put back in ``layers`` order
        rank = {name: i for i, name in enumerate(order or [])}
        self.ranked = sorted(range(len(layers)), key=lambda i: (rank.get(layers[i].name, len(rank)), i))
        self.kwargs = dict(kwargs or {})
        self.capture = capture and len(layers) > 1  # keep each layer's map from the averaged call
        self.obj: Any = None
        self.handles: list[Any] = []
        self.cut = False
        self.per_layer: list[np.ndarray] | None = None
        self.captures = False  # each layer's map is kept from the averaged call (``_capture_per_layer``)
        self.forwards = 0  # forward passes run by ``maps`` (perturbation passes are counted apart)

    def __enter__(self) -> CamRunner:
        """Build the library object and register vizpipe's hooks."""
        # FullGrad picks its own layers (every conv/batch-norm bias) and prints a warning if given any
        modules = (
            []
            if self.spec.is_a("FullGrad")
            else [self.model.get_submodule(self.layers[i].name) for i in self.ranked]
        )
        needs_reshape = any(layer.layout.needs_reshape for layer in self.layers)
        reshape = LayoutReshape(self.layers) if needs_reshape else None
        kwargs: dict[str, Any] = {}
        params = set(inspect.signature(self.spec.cls.__init__).parameters)
        if self.spec.is_a("AblationCAM"):
            from pytorch_grad_cam import AblationLayer, AblationLayerVit

            # a fresh ablation layer: the library's default argument is one instance shared by all calls
            kwargs["ablation_layer"] = AblationLayerVit() if needs_reshape else AblationLayer()
        if "batch_size" in params:
            kwargs["batch_size"] = int(self.settings.batch_size)
        kwargs.update(self.kwargs)
        self.obj = self.spec.cls(self.model, modules, reshape_transform=reshape, **kwargs)
        try:
            self._hook(modules)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _hook(self, modules: list[nn.Module]) -> None:
        cams = inner_cams(self.obj)
        for cam in cams:
            if hasattr(cam, "batch_size") or self.spec.perturbation:
                cam.batch_size = int(self.settings.batch_size)  # ScoreCAM reads an attribute
        # second-order methods (ShapleyCAM: detach=False) differentiate the gradients themselves,
        # which needs the parameters in the graph: those run unfrozen
        freeze = bool(self.settings.freeze_params) and all(c.detach for c in cams)
        if freeze:
            from pytorch_grad_cam.base_cam import BaseCAM

            self.model.requires_grad_(False)
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

            found = [scale_cam_image(np.maximum(c, 0).mean(axis=1)) for c in cam_per_layer]
            per_layer: list[Any] = [None] * len(found)
            for k, i in enumerate(self.ranked):  # the library's k-th layer is ``layers[i]``
                per_layer[i] = found[k]
            self.per_layer = per_layer
            return original(cam_per_layer)

        cam.aggregate_multi_layers = aggregate
        self.captures = True

    @property
    def one_forward(self) -> bool:
        """True when ``maps`` computes every class set from one forward pass (see the module doc)."""
        from pytorch_grad_cam.base_cam import BaseCAM

        cam = self.obj
        return (
            isinstance(cam, BaseCAM)
            and type(cam).forward is BaseCAM.forward
            and type(cam).compute_cam_per_layer is BaseCAM.compute_cam_per_layer  # not FullGrad's
            and cam.detach
            and not self.settings.aug_smooth
        )

    def maps(
        self, x: torch.Tensor, class_sets: list[list[int]] | None, logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[tuple[np.ndarray, list[np.ndarray] | None]]]:
        """Maps of the batch ``x`` for each class set (one class per image; None: each top-1).

        Returns the model's outputs (B, K) on CPU and, per class set, the (B, H, W) float32 maps
        and the per-layer maps (when capturing). ``logits`` (the batch's outputs) must be given for
        methods that are called once per class set; the one-forward path computes them.
        """
        import numpy as np
        import torch

        eigen = bool(self.settings.eigen_smooth)
        out: list[tuple[np.ndarray, list[np.ndarray] | None]] = []
        if self.one_forward:
            cam = self.obj
            if cam.compute_input_gradient:  # as the library does: the graph reaches the frozen layers
                x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                if cam.compute_input_gradient:  # as the library: keeps the graph connected (frozen params)
                    x = x.detach().requires_grad_(True)
                outputs = cam.activations_and_grads(x)  # (B, K): the one forward pass
                self.forwards += 1
                logits = outputs.detach().float().cpu()
                sets = class_sets or [logits.argmax(dim=1).tolist()]
                for classes in sets:
                    targets = targets_for(classes, logits, self.spec)
                    if cam.uses_gradients:
                        self.model.zero_grad()
                        x.grad = None  # FullGrad reads the input's gradient: one class set's only
                        cam.activations_and_grads.gradients = []
                        loss = sum(t(o) for t, o in zip(targets, outputs, strict=True))
                        loss.backward(retain_graph=True)
                    self.per_layer = None
                    batch = cam.aggregate_multi_layers(cam.compute_cam_per_layer(x, targets, eigen))
                    out.append((np.asarray(batch, dtype=np.float32), self.per_layer))
            cam.activations_and_grads.clear()
            return logits, out
        if logits is None:
            raise ValueError(
                "CamRunner.maps: this method is called once per class set and needs the batch's logits"
            )
        kwargs: dict[str, Any] = {"eigen_smooth": eigen}
        if self.settings.aug_smooth:
            kwargs["aug_smooth"] = True
        for classes in class_sets or [logits.argmax(dim=1).tolist()]:
            self.per_layer = None
            with torch.enable_grad():
                batch = self.obj(x, targets_for(classes, logits, self.spec), **kwargs)
            self.forwards += 1
            out.append((np.asarray(batch, dtype=np.float32), self.per_layer))
        return logits, out

    def __exit__(self, *exc: object) -> None:
        """Release the library's hooks and vizpipe's."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        if self.obj is not None:
            release(self.obj)
