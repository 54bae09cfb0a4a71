"""Model factories named by ``model._target_`` (see conf/model/)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from vizpipe.pipeline.errors import ConfigError, unknown_choice

log = logging.getLogger(__name__)


def weights_enum(name: str, weights: str) -> Any:
    """Resolve ``weights`` ("DEFAULT", "IMAGENET1K_V1" or "ResNet18_Weights.IMAGENET1K_V1")."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"Model '{name}' has no pretrained weights in torchvision; use model.weights=null"
        ) from exc
    member = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    if member == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[member]
    except KeyError as exc:
        raise unknown_choice(
            "weights", weights, ["DEFAULT", *enum.__members__], context=f"for {name}"
        ) from exc


def torchvision_model(
    name: str,
    weights: str | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision model by registered name, random init (seeded by the caller) or pretrained.

    Pretrained weights are downloaded by torchvision into its cache (``$TORCH_HOME``) once.
    """
    import torchvision
    from vizpipe.pipeline.tasks.presets import torchvision_task

    classification = torchvision.models.list_models(module=torchvision.models)
    task = torchvision_task(name) if name not in classification else None
    if name not in classification and task is None:
        for kind in ("video", "optical_flow", "quantization"):
            module = getattr(torchvision.models, kind, None)
            if module is not None and name in torchvision.models.list_models(module=module):
                raise ConfigError(
                    f"model.name '{name}' is a torchvision {kind.replace('_', ' ')} model; vizpipe supports "
                    "image classifiers, segmentation and detection models and embeddings: pick one of "
                    "torchvision.models.list_models(torchvision.models) (or .segmentation, .detection)"
                )
        raise unknown_choice(
            "model",
            name,
            classification,
            hint="Set model.name (model=torchvision) to an image classifier, or pick a conf/model file",
        )
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if task is not None:  # backbone weights off unless asked: a random init needs no download
        kwargs.setdefault("weights_backbone", None)
    w = weights_enum(name, weights) if weights else None
    log.debug("Building torchvision model <%s> (weights=%s)", name, w if w is not None else "random init")
    try:
        return torchvision.models.get_model(name, weights=w, **kwargs)
    except (OSError, RuntimeError) as exc:
        if w is not None and (
            "download" in str(exc).lower() or "url" in str(exc).lower() or isinstance(exc, OSError)
        ):
            raise ConfigError(
                f"Could not download weights {w} for {name}: {exc}. Without internet, use "
                "model.weights=null (random init) or model.checkpoint=<local state_dict>"
            ) from exc
        raise ConfigError(f"Could not build model '{name}' with {kwargs}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Could not build model '{name}' with {kwargs}: {exc}") from exc


# --------------------------------------------------------------------------- embeddings

#: the ``model._target_`` of torchvision's models and of ``model=embedding``
TORCHVISION_TARGET = "vizpipe.pipeline.models.torchvision_model"
EMBEDDING_TARGET = "vizpipe.pipeline.models.torchvision_embedding"


def torchvision_embedding(
    name: str, weights: str | None = None, num_classes: int | None = None, **kwargs: Any
) -> nn.Module:
    """A torchvision classifier without its head: its (N, D) features (``model=embedding``).

    grad-cam's embeddings tutorial keeps a ResNet's layers up to the global pooling
    (``ResnetFeatureExtractor``); here the classifier's last ``Linear`` becomes an ``Identity``,
    which gives the same (N, D) numbers for ResNets (the pooled features) and works for any
    torchvision classifier (VGG: the 4096 features before its last layer).
    """
    if num_classes is not None:
        raise ConfigError(
            f"model.num_classes={num_classes} has no meaning for an embedding (its head is removed); use null"
        )
    model = torchvision_model(name, weights, **kwargs)
    heads = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise ConfigError(f"model=embedding: {name} has no Linear head to remove; use model.task=embedding")
    parent, _, child = heads[-1].rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    log.debug("Embedding: %s without its head %s", name, heads[-1])
    return model


# --------------------------------------------------------------------------- timm

#: the ``model._target_`` of ``model=timm``
TIMM_TARGET = "vizpipe.pipeline.models.timm_model"
TIMM_EXTRA = "pip install 'vizpipe[timm]' (or pip install timm)"


def _timm() -> Any:
    """The ``timm`` package, or one line saying how to install it (an optional extra)."""
    try:
        import timm
    except ImportError as exc:
        raise ConfigError(f"model=timm needs the timm package, which is not installed; {TIMM_EXTRA}") from exc
    return timm


def timm_model(
    name: str,
    weights: str | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Any timm model by name (``timm.create_model``): random init (seeded by the caller) or pretrained.

    ``weights``: null = random init; ``DEFAULT`` = timm's default pretrained tag for ``name``;
    another value = a pretrained tag (``a1_in1k`` for ``resnet50.a1_in1k``). Pretrained weights
    come from timm's hub (needs internet once, then its cache).
    """
    timm = _timm()
    base, _, tag = name.partition(".")
    known = timm.list_models()
    if base not in known:
        raise unknown_choice(
            "timm model", name, known, hint="Set model.name to one of timm.list_models() (model=timm)"
        )
    if weights and weights != "DEFAULT":
        tag = weights
    full = f"{base}.{tag}" if tag else base
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    log.debug("Building timm model <%s> (%s)", full, "pretrained" if weights else "random init")
    try:
        return timm.create_model(full, pretrained=bool(weights), **kwargs)
    except (OSError, RuntimeError) as exc:
        if weights:
            raise ConfigError(
                f"Could not get pretrained weights for timm model {full}: {exc}. Without internet, use "
                "model.weights=null (random init) or model.checkpoint=<local state_dict>"
            ) from exc
        raise ConfigError(f"Could not build timm model '{full}' with {kwargs}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Could not build timm model '{full}' with {kwargs}: {exc}") from exc


class TimmPreset:
    """A timm model's own data config (``timm.data.resolve_data_config``) as a preprocessing preset.

    Reads like torchvision's weights enum where vizpipe reads one: ``transforms()`` gives
    ``resize_size`` (the input size / ``crop_pct``, as timm's eval transform), ``crop_size``,
    ``mean``, ``std`` and ``interpolation``; ``meta["categories"]`` names ImageNet's classes when
    the model is pretrained on it.
    """

    def __init__(self, model: nn.Module, pretrained: bool, img_size: Any = None) -> None:
        import math
        from types import SimpleNamespace

        from torchvision.transforms import InterpolationMode

        timm = _timm()
        data = timm.data.resolve_data_config({}, model=model)
        _, h, w = data["input_size"]
        if img_size is not None:  # model.kwargs.img_size: the model was built for another size
            h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        crop_pct = float(data.get("crop_pct") or 0.875)
        modes = {m.value: m for m in InterpolationMode}
        interpolation = modes.get(str(data.get("interpolation")), InterpolationMode.BICUBIC)
        self.name = str(getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__)
        self._transforms = SimpleNamespace(
            resize_size=[math.floor(min(h, w) / crop_pct)],
            crop_size=[min(h, w)],
            mean=[float(v) for v in data["mean"]],
            std=[float(v) for v in data["std"]],
            interpolation=interpolation,
        )
        self.meta: dict[str, Any] = {"categories": _imagenet_names(timm, model) if pretrained else None}
        self.pretrained = pretrained

    def transforms(self) -> Any:
        """Resize, crop, mean, std and interpolation (the attributes vizpipe reads)."""
        return self._transforms

    def __str__(self) -> str:
        return f"timm:{self.name} ({'pretrained' if self.pretrained else 'random init'}, its data config)"


def _imagenet_names(timm: Any, model: nn.Module) -> list[str] | None:
    """ImageNet class names for a timm model pretrained on an ImageNet subset, else None."""
    try:
        subset = timm.data.infer_imagenet_subset(model)
        return list(timm.data.ImageNetInfo(subset).label_descriptions()) if subset else None
    except (AttributeError, AssertionError, OSError):
        return None


def preset(target: str, cfg: dict[str, Any], model: nn.Module) -> Any:
    """The preprocessing preset of a built model: torchvision's weights enum (when pretrained; a
    segmentation or detection model's ``TaskPreset``, always), a timm model's data config (always:
    ``model=timm``, or a timm model object given to
    ``vizpipe.inspect``), else None (ImageNet's 256/224 preset)."""
    import sys

    if target in (TORCHVISION_TARGET, EMBEDDING_TARGET):
        from vizpipe.pipeline.tasks.presets import TaskPreset, torchvision_task

        weights = weights_enum(cfg["name"], cfg["weights"]) if cfg.get("weights") else None
        task = torchvision_task(str(cfg["name"]))
        return TaskPreset(str(cfg["name"]), task, weights, model) if task is not None else weights
    lent = target == "vizpipe.pipeline.lent.lent_model"
    if target == TIMM_TARGET or (lent and "timm" in sys.modules and hasattr(model, "pretrained_cfg")):
        pretrained = bool(cfg.get("weights")) if not lent else False
        return TimmPreset(model, pretrained, (cfg.get("kwargs") or {}).get("img_size"))
    if lent and _is_torchvision_detector(model):  # a detector object normalises its pixels itself
        from vizpipe.pipeline.tasks.presets import TaskPreset

        return TaskPreset(type(model).__name__, "detection", None, model)
    return None


def _is_torchvision_detector(model: nn.Module) -> bool:
    """A torchvision detector: it resizes and normalises inside (``GeneralizedRCNNTransform``)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return isinstance(getattr(model, "transform", None), GeneralizedRCNNTransform)


# --------------------------------------------------------------------------- small CNNs


class SeedNet(nn.Module):
    """The seed chapter's CNN (§3.4): two convs, pooling, a two-layer head, one sigmoid output."""

    def __init__(
        self, name: str = "seed_net", weights: str | None = None, num_classes: int | None = 1, **_: Any
    ) -> None:
        super().__init__()
        if weights:
            raise ConfigError(f"seed_net has no pretrained weights (got model.weights={weights!r}); use null")
        out = 1 if num_classes is None else int(num_classes)
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=32, kernel_size=3)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(in_channels=32, out_channels=64, kernel_size=5)
        self.adaptive_pool = nn.AdaptiveMaxPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.linear1 = nn.Linear(64, 32)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(32, out)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) probabilities."""
        x = self.pool(self.conv1(x))
        x = self.pool(self.conv2(x))
        x = self.flatten(self.adaptive_pool(x))
        x = self.relu(self.linear1(x))
        return self.sigmoid(self.linear2(x))


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 convolution (same size), batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class ShapesNet(nn.Module):
    """The seed's CNN (§3.4) grown for ``input=shapes``: three conv blocks and logits per class.

    Like the seed's Net: conv, pool, conv, pool, a global max pool and a linear head; here each
    conv is a block (conv, batch norm, ReLU), a third block keeps an 8×8 map for CAMs, the input
    is first averaged down 2× (64 -> 32 px: four times less work, the shapes stay clear) and the
    head gives one logit per class (``model.output=logits``). Trains to >= 95% on shapes in a few
    epochs on a CPU (``python run.py experiment=shapes_demo``).
    """

    def __init__(
        self,
        name: str = "shapes_net",
        weights: str | None = None,
        num_classes: int | None = 6,
        width: int = 16,
    ) -> None:
        super().__init__()
        if weights:
            raise ConfigError(
                f"shapes_net has no pretrained weights (got model.weights={weights!r}); use null"
            )
        w = int(width)
        self.downsample = nn.AvgPool2d(kernel_size=2)
        self.conv1 = _conv_block(3, w)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = _conv_block(w, 2 * w)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv3 = _conv_block(2 * w, 4 * w)
        self.adaptive_pool = nn.AdaptiveMaxPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(4 * w, 6 if num_classes is None else int(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits."""
        x = self.conv1(self.downsample(x))  # (B, w, H/2, W/2)
        x = self.conv2(self.pool1(x))  # (B, 2w, H/4, W/4)
        x = self.conv3(self.pool2(x))  # (B, 4w, H/8, W/8)
        return self.linear(self.flatten(self.adaptive_pool(x)))
