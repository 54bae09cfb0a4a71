"""A model config's blocks before anything is built: its architecture on the meta device.

``sweep=cam_layers`` makes one job per block of the model (``cam.layer: ${vizpipe_blocks:}``).
The precheck and Hydra's sweeper list the jobs before any model is built, so the blocks must come
from the config: ``model.blocks`` when the model's YAML names them, else ``config_blocks`` finds
them as a run does (``vizpipe.pipeline.layers.default_blocks`` on one probing forward pass), on
the model's architecture built on PyTorch's meta device: shapes only, no weights downloaded or
loaded, no memory for parameters. ResNet-18 to ViT-B/16 take 0.1-0.9 s (``benchmarks/sweep.py``
measures the precheck); a factory that cannot build on the meta device (regnet computes widths
with tensors) is built on the CPU once, its random init drawn from a forked generator.

Only vizpipe's own factories (``targets.MODEL_MODULES``: torchvision and timm by name, the small
CNNs) are built here, before the precheck has vetted where a config came from; for another
``model._target_`` the sweep needs ``model.blocks``.

The probe's input is the size the run will feed: ``input.shape`` (random), ``input.size``
(shapes), the tensor file's own shape, else the preprocessing's crop (``input.crop``, the
weights' transforms, 224). The result is kept per model config and size, for the process.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from vizpipe.pipeline.errors import ConfigError, VizpipeError

log = logging.getLogger(__name__)

__all__ = ["config_blocks", "resolve_blocks"]

_FOUND: dict[str, str] = {}


def resolve_blocks(*, _root_: Any) -> str:
    """The ``vizpipe_blocks`` resolver: the blocks of the config's model, comma-separated."""
    return config_blocks(_root_.model, _root_.input)


def config_blocks(model_cfg: Any, input_cfg: Any) -> str:
    """``model.blocks`` when set, else the blocks found on the model's architecture (see above)."""
    if model_cfg.get("blocks"):
        return str(model_cfg.blocks)
    from omegaconf import OmegaConf

    missing = sorted(OmegaConf.missing_keys(model_cfg)) if OmegaConf.is_config(model_cfg) else []  # full keys
    if missing:  # as the run says it (runner.check_required_keys)
        raise ConfigError(f"{missing[0]} is required for this choice; set {missing[0]}=...")
    plain = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else model_cfg
    size = _input_size(input_cfg, plain)
    key = json.dumps([plain, size], sort_keys=True, default=str)
    if key not in _FOUND:
        _FOUND[key] = ",".join(_find(plain, size))
    return _FOUND[key]


def _find(model_cfg: dict[str, Any], size: tuple[int, int, int]) -> list[str]:
    import torch
    from vizpipe.pipeline.layers import default_blocks, probe_model

    name = model_cfg.get("name")
    try:
        model = _architecture(model_cfg)
        device = next((p.device for p in model.parameters()), torch.device("meta"))
        probe = probe_model(model, torch.zeros(1, *size, device=device))
        blocks = default_blocks(model, probe)
    except VizpipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own error, in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"The blocks of model '{name}' cannot be found before the run (a forward pass of its "
            f"architecture on a {'x'.join(map(str, size))} input failed: {type(exc).__name__}: {first}); "
            "name them: model.blocks='\"a,b,c\"' (summary/layers.txt lists the layers)"
        ) from exc
    if not blocks:
        raise ConfigError(
            f"Model '{name}' has no blocks with a spatial output to sweep; name the layers: "
            "model.blocks='\"a,b,c\"' (summary/layers.txt lists them)"
        )
    log.debug("Blocks of %s (architecture, %s input): %s", name, size, blocks)
    return blocks


def _architecture(model_cfg: dict[str, Any]) -> Any:
    """The model without weights or checkpoint: on the meta device, else on the CPU (forked RNG)."""
    import torch
    from vizpipe.pipeline.factory.model import factory_arguments
    from vizpipe.pipeline.factory.targets import MODEL_MODULES, instantiate, trusted

    cfg, kwargs, _ = factory_arguments(model_cfg)
    target = str(cfg.get("_target_"))
    if not trusted(target, MODEL_MODULES):  # a config is code: only vizpipe's own factories run here
        raise ConfigError(
            f"The blocks of model '{cfg.get('name')}' cannot be found before the run: model._target_="
            f"'{target}' is not one of vizpipe's factories, which are the only ones built before a sweep "
            "starts; name them: model.blocks='\"a,b,c\"' (summary/layers.txt lists the layers)"
        )
    if "weights" in cfg:
        cfg["weights"] = None  # the architecture only: nothing downloaded
    node = {**cfg, **kwargs}
    try:
        with torch.device("meta"):
            return instantiate(node, "model from _target_").eval()
    except Exception as exc:  # noqa: BLE001 - e.g. a factory computing with tensors: build it for real
        log.debug("Model %s cannot be built on the meta device (%s); building it on the CPU", cfg, exc)
    with torch.random.fork_rng(devices=[]):  # a bad config fails here with the factory's own line
        return instantiate(node, "model from _target_").eval()


def _input_size(input_cfg: Any, model_cfg: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) of the images the run will feed (see the module docstring)."""
    kind = str(getattr(input_cfg.kind, "value", input_cfg.kind))
    if kind == "random":
        return tuple(int(v) for v in input_cfg.shape[1:])  # type: ignore[return-value]
    if kind == "shapes":
        return (3, int(input_cfg.size), int(input_cfg.size))
    if kind == "tensor":
        shape = _tensor_shape(str(input_cfg.path))
        if shape is not None:
            return shape
    crop = input_cfg.get("crop") or input_cfg.get("resize")
    if crop is None and kind == "cifar10":
        crop = 32  # CIFAR-10 keeps its 32 pixels unless input.resize/crop says otherwise
    if crop is None:
        crop = _preset_crop(model_cfg)
    return (3, int(crop), int(crop))


def _preset_crop(model_cfg: dict[str, Any]) -> int:
    """The crop of torchvision's weights' transforms when the model is pretrained, else 224."""
    from vizpipe.pipeline.models import weights_enum

    if model_cfg.get("_target_") == "vizpipe.pipeline.models.torchvision_model" and model_cfg.get("weights"):
        try:
            weights = weights_enum(str(model_cfg["name"]), str(model_cfg["weights"]))
            return int(weights.transforms().crop_size[0])
        except Exception:  # noqa: BLE001 - the run reports a bad weights name
            return 224
    return 224


def _tensor_shape(path: str) -> tuple[int, int, int] | None:
    """(C, H, W) of an N×C×H×W tensor file, read without loading it (memory-mapped), or None."""
    from pathlib import Path

    p = Path(path).expanduser()
    try:
        if p.suffix.lower() == ".npy":
            import numpy as np

            shape = np.load(p, mmap_mode="r", allow_pickle=False).shape
        else:
            import torch

            shape = tuple(torch.load(p, map_location="cpu", weights_only=True, mmap=True).shape)
    except Exception:  # noqa: BLE001 - the run reports an unreadable file
        return None
    return tuple(int(v) for v in shape[-3:]) if len(shape) == 4 else None  # type: ignore[return-value]
