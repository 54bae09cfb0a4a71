"""The grad-cam adapter: one library CAM object per layer group, used through its public surface.

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
  ``BaseCAM.forward``, ``CamRunner.maps`` runs one forward, then per class set the rest of that
  method's steps (``vizpipe.pipeline.gradcam.extended``: a subclass, nothing patched); with
  several layers (or FullGrad) the input requires grad for that pass, as in the library. Other
  methods (meta methods, second-order ShapleyCAM, ``aug_smooth``) are called once per class set.
- **The library's own progress bars** (ScoreCAM/AblationCAM: one tqdm bar per image and class,
  left on the console) are not shown: ``hidden_bars`` points ``sys.stderr`` at a buffer for the
  library's call only (``contextlib.redirect_stderr``; tqdm's bars write to ``sys.stderr`` as it
  is when each bar starts) and shows the Python warnings raised meanwhile once it is put back.
  tqdm's documented ``TQDM_DISABLE`` cannot do it per call: tqdm reads its ``TQDM_*`` variables
  once, when ``tqdm`` is imported; nothing of the library or of tqdm is patched. vizpipe states
  the passes to run up front, counts them, and its own bar (``cam``) shows the batches.
- **The model is left as found** (``vizpipe.pipeline.hooks.preserved`` around the stage): hooks (the
  library's and ours) removed, every module's mode, ``requires_grad`` and ``.grad`` restored,
  modules the library swaps (AblationCAM's ablation layer) put back.

Every hook vizpipe adds is registered through ``vizpipe.pipeline.hooks.Hooks``; the library's
own (its ``ActivationsAndGradients``) are removed with its ``release()``.
``tests/test_cam.py`` and ``tests/test_gradcam.py`` prove the maps identical to the library's own.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.gradcam.layers import CamLayer, LayoutReshape
from vizpipe.pipeline.gradcam.methods import MethodSpec
from vizpipe.pipeline.hooks import Hooks

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import torch
    from torch import nn

__all__ = ["CamRunner", "hidden_bars", "inner_cams", "targets_for"]

#: per class set: the (B, H, W) maps and, when capturing, each layer's (B, H, W) maps
Maps = tuple["np.ndarray", "list[np.ndarray] | None"]


@contextlib.contextmanager
def hidden_bars(active: bool = True) -> Iterator[None]:
    """Inside: what the library writes to ``sys.stderr`` (its tqdm bars) is dropped; the Python
    warnings raised meanwhile are shown when ``sys.stderr`` is back (see the module docstring)."""
    if not active:
        yield
        return
    import io
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


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


def detached(value: Any) -> Any:
    """A model output with every tensor detached (tensors, dicts, lists and tuples of them)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {k: detached(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(detached(v) for v in value)
    return value


def top1(logits: torch.Tensor) -> list[int]:
    """Each image's top-1 class (``vizpipe.pipeline.layers.top_classes``: ties to the lowest index)."""
    from vizpipe.pipeline.layers import top_classes

    return top_classes(logits, 1)[:, 0].tolist()


def _guard_hook(cut: bool, levels: bool = False) -> Any:
    """A first forward hook: refuse non-tensor outputs (``levels``: a dict of FPN maps is expected);
    with ``cut``, start the graph here."""

    def hook(module: nn.Module, args: object, output: Any) -> Any:
        import torch

        if levels and isinstance(output, dict):
            return None
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
        cam_model: nn.Module | None = None,
    ) -> None:
        self.model, self.settings, self.spec, self.layers = model, settings, spec, layers
        # the module the library calls: ``model``, or a task's wrapper around it (``vizpipe.pipeline.tasks``)
        self.cam_model = model if cam_model is None else cam_model
        # the library pairs its i-th target layer with the i-th activation its hooks recorded, which
        # come in the order the modules finish a forward pass (``order``: ``Probe.shapes``); the
        # layers are handed to it in that order and each layer's map is put back in ``layers`` order
        rank = {name: i for i, name in enumerate(order or [])}
        self.ranked = sorted(range(len(layers)), key=lambda i: (rank.get(layers[i].name, len(rank)), i))
        self.kwargs = dict(kwargs or {})
        self.capture = capture and len(layers) > 1  # keep each layer's map from the averaged call
        self.obj: Any = None
        self.hooks = Hooks()
        self.cut = False
        self.captures = False  # each layer's map is kept from the averaged call (``Extensions``)
        self.forwards = 0  # forward passes run by ``maps`` (perturbation passes are counted apart)

    def __enter__(self) -> CamRunner:
        """Build the library object and register vizpipe's hooks."""
        # FullGrad picks its own layers (every conv/batch-norm bias) and prints a warning if given any
        modules = (
            []
            if self.spec.is_a("FullGrad")
            else [self.model.get_submodule(self.layers[i].name) for i in self.ranked]
        )
        self.obj = self._build(modules)
        try:
            self._hook(modules)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _build(self, modules: list[nn.Module]) -> Any:
        """The library object: ``BaseCAM`` methods through ``extended``, meta methods as they are."""
        from vizpipe.pipeline.gradcam.extended import extended

        needs_reshape = any(layer.layout.needs_reshape for layer in self.layers)
        reshape = LayoutReshape(self.layers) if needs_reshape else None
        kwargs: dict[str, Any] = {}
        params = set(inspect.signature(self.spec.cls.__init__).parameters)
        if self.spec.is_a("AblationCAM"):
            from pytorch_grad_cam import AblationLayer, AblationLayerVit
            from pytorch_grad_cam.ablation_layer import AblationLayerFasterRCNN

            # a fresh ablation layer: the library's default argument is one instance shared by all calls;
            # FPN levels: the detection tutorial's AblationLayerFasterRCNN
            levels = any(layer.layout.kind == "levels" for layer in self.layers)
            kwargs["ablation_layer"] = (
                AblationLayerFasterRCNN()
                if levels
                else AblationLayerVit()
                if needs_reshape
                else AblationLayer()
            )
        if "batch_size" in params:
            kwargs["batch_size"] = int(self.settings.batch_size)
        kwargs.update(self.kwargs)
        cls = self.spec.cls if self.spec.meta else extended(self.spec.cls)
        return cls(self.cam_model, modules, reshape_transform=reshape, **kwargs)

    def _hook(self, modules: list[nn.Module]) -> None:
        cams = inner_cams(self.obj)
        for cam in cams:
            if hasattr(cam, "batch_size") or self.spec.perturbation:
                cam.batch_size = int(self.settings.batch_size)  # the library's README: ``cam.batch_size =``
        # second-order methods (ShapleyCAM: detach=False) differentiate the gradients themselves,
        # which needs the parameters in the graph: those run unfrozen
        if bool(self.settings.freeze_params) and all(c.detach for c in cams):
            self._freeze(cams)
        targets = list(dict.fromkeys(m for c in cams for m in c.target_layers))  # FullGrad: its bias layers
        levels = {id(self.model.get_submodule(x.name)) for x in self.layers if x.layout.kind == "levels"}
        for module in targets:
            cut_here = self.cut and module is modules[0]
            dicts = id(module) in levels
            self.hooks.forward(module, _guard_hook(cut_here, dicts), prepend=True)  # before the library's
            if not dicts:
                self.hooks.forward(module, _clone_hook)  # after the library's
        self.captures = bool(
            self.capture and cams == [self.obj] and self.obj.averages_layers and not self.settings.aug_smooth
        )
        if self.captures:
            self.obj.keep_layer_maps = True

    def _freeze(self, cams: list[Any]) -> None:
        """No parameter gradients: cut the graph at the one target layer, else ask for the input's."""
        from pytorch_grad_cam.base_cam import BaseCAM

        self.model.requires_grad_(False)
        cam = cams[0] if len(cams) == 1 and cams[0] is self.obj else None
        self.cut = bool(
            cam is not None
            and len(cam.target_layers) == 1
            and all(layer.layout.kind != "levels" for layer in self.layers)
            and cam.uses_gradients
            and cam.detach
            and not cam.compute_input_gradient
            and type(cam).compute_cam_per_layer is BaseCAM.compute_cam_per_layer
        )
        if self.cut:
            return
        for c in cams:  # BaseCAM's constructor argument ``compute_input_gradient``, set after construction
            if c.uses_gradients:
                c.compute_input_gradient = True
        if getattr(self.obj, "uses_gradients", False) and hasattr(self.obj, "compute_input_gradient"):
            self.obj.compute_input_gradient = True  # FinerCAM reads its own copy

    @property
    def one_forward(self) -> bool:
        """True when ``maps`` computes every class set from one forward pass (see the module doc)."""
        return bool(getattr(self.obj, "one_forward", False)) and not self.settings.aug_smooth

    def maps(
        self, x: torch.Tensor, class_sets: list[list[int]] | None, logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[Maps]]:
        """Maps of the batch ``x`` for each class set (one class per image; None: each top-1).

        Returns the model's outputs (B, K) on CPU and, per class set, the (B, H, W) float32 maps
        and the per-layer maps (when capturing). ``logits`` (the batch's outputs) must be given for
        methods that are called once per class set; the one-forward path computes them.
        """
        if self.one_forward:
            return self._one_forward(x, class_sets)
        if logits is None:
            raise ValueError(
                "CamRunner.maps: this method is called once per class set and needs the batch's logits"
            )
        import torch

        kwargs: dict[str, Any] = {"eigen_smooth": bool(self.settings.eigen_smooth)}
        if self.settings.aug_smooth:
            kwargs["aug_smooth"] = True
        out = []
        for classes in class_sets or [top1(logits)]:
            with torch.enable_grad(), hidden_bars(self.spec.perturbation):
                batch = self.obj(x, targets_for(classes, logits, self.spec), **kwargs)
            self.forwards += 1
            out.append(self._result(batch))
        return logits, out

    def _one_forward(
        self, x: torch.Tensor, class_sets: list[list[int]] | None
    ) -> tuple[torch.Tensor, list[Maps]]:
        """One forward pass, then the maps of every class set from it (``Extensions``)."""
        import torch

        cam = self.obj
        eigen = bool(self.settings.eigen_smooth)
        with torch.enable_grad(), hidden_bars(self.spec.perturbation):
            x, outputs = cam.forward_once(x)  # (B, K): the one forward pass
            self.forwards += 1
            logits = outputs.detach().float().cpu()
            out = [
                self._result(cam.cams_for(x, outputs, targets_for(classes, logits, self.spec), eigen))
                for classes in class_sets or [top1(logits)]
            ]
        cam.activations_and_grads.clear()  # the library's: drops the activations and gradients
        return logits, out

    def task_maps(self, x: torch.Tensor, make_sets: Any) -> tuple[Any, list[Maps]]:
        """Maps of the batch ``x`` for target sets made from the model's outputs (any task).

        ``make_sets(outputs)`` gets the outputs of ``cam_model`` (a tensor, or a detector's list of
        dicts) and returns, per target set, one library target per image. Returns the outputs,
        detached, and per set the maps (as ``maps``). One forward pass serves every set when the
        method allows (``one_forward``); otherwise a no-grad forward makes the sets and the library
        runs its own per set.
        """
        import torch

        if self.one_forward:
            cam = self.obj
            eigen = bool(self.settings.eigen_smooth)
            with torch.enable_grad():
                x, outputs = cam.forward_once(x)
                self.forwards += 1
                sets = make_sets(outputs)
                out = [self._result(cam.cams_for(x, outputs, targets, eigen)) for targets in sets]
            cam.activations_and_grads.clear()
            return detached(outputs), out
        with torch.no_grad():
            outputs = self.cam_model(x)
        kwargs: dict[str, Any] = {"eigen_smooth": bool(self.settings.eigen_smooth)}
        if self.settings.aug_smooth:
            kwargs["aug_smooth"] = True
        out = []
        for targets in make_sets(outputs):
            with torch.enable_grad():
                batch = self.obj(x, targets, **kwargs)
            self.forwards += 1
            out.append(self._result(batch))
        return detached(outputs), out

    def _result(self, batch: np.ndarray) -> Maps:
        """(maps, per-layer maps in ``layers`` order when capturing) of one library call."""
        import numpy as np

        found = self.obj.layer_maps if self.captures else None
        per_layer: list[Any] | None = None
        if found is not None:
            per_layer = [None] * len(found)
            for k, i in enumerate(self.ranked):  # the library's k-th layer is ``layers[i]``
                per_layer[i] = found[k]
        return np.asarray(batch, dtype=np.float32), per_layer

    def __exit__(self, *exc: object) -> None:
        """Remove vizpipe's hooks and the library's (``release()``); drop the library object."""
        self.hooks.release()
        if self.obj is not None:
            for cam in inner_cams(self.obj):
                cam.activations_and_grads.release()
        self.obj = None
