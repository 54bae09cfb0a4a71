"""Build what a run needs once: device, model, inputs. All ``instantiate`` calls live here."""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pipeline.context import Inputs
from pipeline.errors import ConfigError, VizpipeError, unknown_choice
from pipeline.layers import safe_name

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "nearest_exact", "box", "hamming", "lanczos")
INPUT_KINDS = ("photo", "image", "tensor", "random")


# ----------------------------------------------------------------------------- device


def build_device(kind: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a usable ``torch.device``."""
    kind = str(kind).strip().lower()
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda" or kind.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device '{kind}' was requested but no CUDA GPU is available "
                "(torch.cuda.is_available() is False); valid choices here: auto, cpu"
            )
        dev = torch.device(kind)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device '{kind}' does not exist: {torch.cuda.device_count()} GPU(s) visible; "
                f"valid choices: auto, cpu, "
                + ", ".join(f"cuda:{i}" for i in range(torch.cuda.device_count()))
            )
        return dev
    if kind == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(
                "device 'mps' was requested but MPS is not available; valid choices here: auto, cpu"
            )
        return torch.device("mps")
    raise unknown_choice("device", kind, ["auto", "cpu", "cuda", "cuda:0", "mps"])


# ----------------------------------------------------------------------------- model


def build_model(model_cfg: DictConfig | dict) -> tuple[nn.Module, Any]:
    """Instantiate the model from its config, load ``checkpoint`` if set, put it in eval mode.

    Returns ``(model, weights_enum_or_None)``; the weights carry preprocessing and category names.
    """
    from hydra.utils import instantiate

    from pipeline.models import weights_enum

    cfg = (
        OmegaConf.to_container(model_cfg, resolve=True)
        if isinstance(model_cfg, DictConfig)
        else dict(model_cfg)
    )
    checkpoint = cfg.pop("checkpoint", None)
    cfg.pop("blocks", None)
    cfg.pop("categories", None)
    kwargs = cfg.pop("kwargs", None) or {}
    target = cfg.get("_target_")
    try:
        model = instantiate({**cfg, **kwargs}, _convert_="all")
    except VizpipeError:
        raise
    except Exception as exc:  # instantiate wraps import and call errors
        cause = exc.__cause__ if isinstance(exc.__cause__, VizpipeError) else None
        if cause is not None:
            raise cause from exc
        raise ConfigError(f"Could not build model from _target_ '{target}': {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model._target_ '{target}' returned {type(model).__name__}, not a torch.nn.Module")
    weights = None
    if cfg.get("weights") and target == "pipeline.models.torchvision_model":
        weights = weights_enum(cfg["name"], cfg["weights"])
    if checkpoint:
        load_checkpoint(model, checkpoint)
    model.eval()
    return model, weights


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a local state_dict strictly and safely (``weights_only=True``: no code runs)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"Checkpoint '{path}' does not exist (model.checkpoint); give the path of a saved state_dict"
        )
    log.info("Loading checkpoint <%s>", p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"Refused to load checkpoint '{path}': it is not a plain tensor state_dict "
            f"(torch.load(weights_only=True) rejected it: {first}). Save it with "
            "torch.save(model.state_dict(), path)"
        ) from exc
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ConfigError(f"Checkpoint '{path}' holds a {type(obj).__name__}, not a state_dict")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in obj]
    unexpected = [k for k in obj if k not in own]
    if missing or unexpected:

        def show(keys: list[str]) -> str:
            return (
                ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
                if keys
                else "none"
            )

        raise ConfigError(
            f"Checkpoint '{path}' does not match the model: missing keys: {show(missing)}; "
            f"unexpected keys: {show(unexpected)}"
        )
    bad = [
        f"{k} {tuple(obj[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if tuple(obj[k].shape) != tuple(own[k].shape)
    ]
    if bad:
        raise ConfigError(
            f"Checkpoint '{path}' has tensors of the wrong shape (checkpoint vs model): {'; '.join(bad[:5])}"
        )
    model.load_state_dict(obj, strict=True)


def load_categories(value: Any) -> list[str] | None:
    """``model.categories``: a list of names, or a text file with one name per line."""
    if value is None:
        return None
    if isinstance(value, str):
        p = Path(value).expanduser()
        if not p.is_file():
            raise ConfigError(
                f"model.categories file '{value}' does not exist; "
                "give a text file with one class name per line, or a list"
            )
        return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(v) for v in value]


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of parameters and buffers that contain NaN or infinity."""
    bad = []
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad.append(name)
    return bad


# ----------------------------------------------------------------------------- inputs


def preprocessing(input_cfg: Any, weights: Any) -> dict[str, Any]:
    """Resolve resize/crop/mean/std/interpolation: config value, else the weights', else ImageNet's."""
    base: dict[str, Any] = {
        "resize": 256,
        "crop": 224,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "interpolation": "bilinear",
    }
    if weights is not None:
        t = weights.transforms()
        base.update(
            resize=int(t.resize_size[0]),
            crop=int(t.crop_size[0]),
            mean=[float(v) for v in t.mean],
            std=[float(v) for v in t.std],
            interpolation=t.interpolation.value,
        )
    for key in ("resize", "crop", "mean", "std", "interpolation"):
        value = getattr(input_cfg, key, None) if not isinstance(input_cfg, dict) else input_cfg.get(key)
        if value is not None:
            base[key] = list(value) if key in ("mean", "std") else value
    if str(base["interpolation"]).lower() not in INTERPOLATIONS:
        raise unknown_choice("input.interpolation", base["interpolation"], INTERPOLATIONS)
    for key in ("mean", "std"):
        if len(base[key]) not in (1, 3):
            raise ConfigError(f"input.{key} must have 1 or 3 values, got {base[key]}")
    if min(base["std"]) <= 0:
        raise ConfigError(f"input.std must be positive, got {base['std']}")
    if int(base["resize"]) <= 0 or int(base["crop"]) <= 0:
        raise ConfigError(
            f"input.resize and input.crop must be positive, got {base['resize']} and {base['crop']}"
        )
    return base


def bundled_photo() -> Path:
    """matplotlib's bundled ``sample_data/grace_hopper.jpg``."""
    import matplotlib

    path = Path(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if not path.is_file():
        raise VizpipeError(
            f"The bundled photo {path} is missing from this matplotlib install; "
            "use input=image input.path=..."
        )
    return path


def find_images(spec: str, max_images: int) -> list[Path]:
    """Image files named by a file, a folder or a glob, sorted, at most ``max_images``."""
    p = Path(spec).expanduser()
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
        if not files:
            raise ConfigError(
                f"input.path glob '{spec}' matched no file; check the pattern (quote it in the shell)"
            )
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ConfigError(
                f"input.path folder '{spec}' holds no image; "
                f"supported extensions: {', '.join(IMAGE_EXTENSIONS)}"
            )
    elif p.is_file():
        files = [p]
    else:
        parent = p.parent if str(p.parent) else Path(".")
        near = []
        if parent.is_dir():
            from pipeline.errors import closest_first

            near = closest_first(
                p.name, [f.name for f in parent.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS]
            )[:3]
        hint = f"; did you mean {', '.join(repr(str(parent / n)) for n in near)}?" if near else ""
        raise ConfigError(
            f"input.path '{spec}' does not exist{hint} Give an image file, a folder of images or a glob"
        )
    if len(files) > max_images:
        log.warning("Using the first %d of %d images (input.max_images)", max_images, len(files))
        files = files[:max_images]
    return files


def load_rgb(path: Path) -> np.ndarray:
    """Read any image as (H, W, 3) uint8 RGB: grayscale, RGBA, palette and 16-bit converted."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F") or im.mode.startswith("I;16"):
                arr = np.asarray(im, dtype=np.float64)
                hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
                arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr[..., :3]
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        raise ConfigError(
            f"input file '{path}' is not an image PIL can read (corrupt, or not an image despite its name)"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(
            f"input file '{path}' could not be decoded ({exc}); it may be truncated or corrupt"
        ) from exc


def preprocess(rgb_u8: np.ndarray, prep: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize (shorter side), centre-crop, scale to [0, 1]: returns (normalised CHW, rgb CHW).

    Same order as torchvision's ``ImageClassification`` preset: resize and crop the uint8 image,
    convert to float, normalise.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    t = torch.from_numpy(rgb_u8).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
    t = F.resize(
        t,
        [int(prep["resize"])],
        interpolation=InterpolationMode(str(prep["interpolation"]).lower()),
        antialias=True,
    )
    t = F.center_crop(t, [int(prep["crop"])])
    rgb = t.float() / 255.0
    mean = torch.tensor(prep["mean"]).view(-1, 1, 1)
    std = torch.tensor(prep["std"]).view(-1, 1, 1)
    return (rgb - mean) / std, rgb


def unique_names(stems: list[str]) -> list[str]:
    """File-name-safe, unique names (``a``, ``a_1``, ...)."""
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        base = safe_name(s)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(base if n == 0 else f"{base}_{n}")
    return out


def first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the first conv (or patch embedding) layer, if any."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return None


def _denormalize(x: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """(N, C, H, W) normalised -> (N, H, W, 3) float32 in [0, 1] for drawing."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x = x.detach().float().cpu()
    c = x.shape[1]
    if m.shape[1] not in (1, c):
        m, s = m[:, :1], s[:, :1]
    rgb = (x * s + m).clamp(0, 1)
    if c == 1:
        rgb = rgb.repeat(1, 3, 1, 1)
    elif c != 3:
        rgb = rgb[:, :3] if c > 3 else rgb[:, :1].repeat(1, 3, 1, 1)
    return rgb.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def build_inputs(
    input_cfg: Any, weights: Any, device: torch.device, seed: int, model: nn.Module | None = None
) -> Inputs:
    """Build the batch named by ``input.*``: real images, a saved tensor, or a seeded random batch."""
    kind = str(input_cfg.kind)
    if kind not in INPUT_KINDS:
        raise unknown_choice("input.kind", kind, INPUT_KINDS)
    expected_c = first_conv_channels(model) if model is not None else None
    if kind in ("photo", "image"):
        prep = preprocessing(input_cfg, weights)
        if kind == "photo":
            files = [bundled_photo()]
        else:
            if not input_cfg.path:
                raise ConfigError("input=image needs input.path (an image file, a folder or a glob)")
            files = find_images(str(input_cfg.path), int(input_cfg.max_images))
        tensors, rgbs = [], []
        for f in files:
            x, rgb = preprocess(load_rgb(f), prep)
            tensors.append(x)
            rgbs.append(rgb)
        log.info("Loaded %d image(s): %s", len(files), ", ".join(str(f) for f in files[:5]))
        x = torch.stack(tensors)
        rgb = torch.stack(rgbs).permute(0, 2, 3, 1).numpy().astype(np.float32)
        return Inputs(
            tensor=x.to(device),
            rgb=rgb,
            names=unique_names([f.stem for f in files]),
            sources=[str(f) for f in files],
            mean=list(prep["mean"]),
            std=list(prep["std"]),
            files=list(files),
        )
    mean = list(input_cfg.mean) if input_cfg.mean is not None else IMAGENET_MEAN
    std = list(input_cfg.std) if input_cfg.std is not None else IMAGENET_STD
    if kind == "tensor":
        if not input_cfg.path:
            raise ConfigError("input=tensor needs input.path (a .pt or .npy file holding an N×C×H×W tensor)")
        p = Path(str(input_cfg.path)).expanduser()
        if not p.is_file():
            raise ConfigError(f"input.path '{input_cfg.path}' does not exist; give a .pt or .npy file")
        try:
            if p.suffix.lower() == ".npy":
                x = torch.from_numpy(np.load(p, allow_pickle=False))
            else:
                x = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(
                f"input.path '{p}' could not be read as a tensor file "
                f"(.pt via weights_only torch.load, or .npy): {exc}"
            ) from exc
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"input.path '{p}' holds a {type(x).__name__}, not a tensor")
        if x.ndim != 4:
            raise ConfigError(
                f"input tensor '{p}' has shape {tuple(x.shape)} (rank {x.ndim}); expected rank 4: N×C×H×W"
            )
        if not x.is_floating_point():
            x = x.float()
        x = x.float()
        files = [p]
        names = (
            [f"{safe_name(p.stem)}_{i}" for i in range(x.shape[0])] if x.shape[0] > 1 else [safe_name(p.stem)]
        )
        sources = [f"{p}[{i}]" for i in range(x.shape[0])]
    else:
        shape = [int(v) for v in input_cfg.shape]
        if len(shape) != 4 or min(shape) <= 0:
            raise ConfigError(f"input.shape must be 4 positive ints N,C,H,W; got {shape}")
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.randn(*shape, generator=gen)
        files, names, sources = (
            [],
            [f"random_{i}" for i in range(shape[0])],
            [f"randn(seed={seed})[{i}]" for i in range(shape[0])],
        )
    if expected_c is not None and x.shape[1] != expected_c:
        where = f" '{input_cfg.path}'" if kind == "tensor" else ""
        raise ConfigError(
            f"input tensor{where} has {x.shape[1]} channels (shape {tuple(x.shape)}) "
            "but the model's first conv "
            f"expects {expected_c}; give an N×{expected_c}×H×W tensor"
        )
    for key, values in (("mean", mean), ("std", std)):
        if getattr(input_cfg, key, None) is None:
            continue  # ImageNet defaults; only used for drawing
        if len(values) not in (1, x.shape[1]):
            raise ConfigError(
                f"input.{key} has {len(values)} values {values} but the input has {x.shape[1]} channels; "
                f"give 1 or {x.shape[1]} values"
            )
    if min(std) <= 0:
        raise ConfigError(f"input.std must be positive, got {std}")
    return Inputs(
        tensor=x.to(device),
        rgb=_denormalize(x, mean, std),
        names=names,
        sources=sources,
        mean=mean,
        std=std,
        files=files,
    )
