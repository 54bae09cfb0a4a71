"""The model a run inspects: built from ``model.*``, a checkpoint loaded, class names found."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from vizpipe.pipeline.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["build_model", "factory_arguments", "load_categories", "load_checkpoint", "nonfinite_parameters"]


def build_model(model_cfg: DictConfig | dict) -> tuple[nn.Module, Any]:
    """Instantiate the model from its config, load ``checkpoint`` if set, put it in eval mode.

    Returns ``(model, preset)``: torchvision's weights enum, a timm model's data config, or None
    (``vizpipe.pipeline.models.preset``); a preset carries preprocessing and category names.
    """
    from vizpipe.pipeline.factory.targets import instantiate
    from vizpipe.pipeline.models import preset

    cfg, kwargs, checkpoint = factory_arguments(model_cfg)
    target = cfg.get("_target_")
    model = instantiate({**cfg, **kwargs}, "model from _target_")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model._target_ '{target}' returned {type(model).__name__}, not a torch.nn.Module")
    if checkpoint:
        from vizpipe.pipeline.lent import LENT_TARGET

        if target == LENT_TARGET:
            raise ConfigError(
                "model.checkpoint cannot be loaded into a model object handed to vizpipe.inspect (it "
                "would change your model); load it yourself (model.load_state_dict) first"
            )
        load_checkpoint(model, checkpoint)
    weights = preset(str(target), {**cfg, "kwargs": kwargs}, model)
    model.eval()
    return model, weights


def factory_arguments(model_cfg: DictConfig | dict) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """``model.*`` split into the factory's node (``_target_``, name, weights, num_classes), its
    ``kwargs`` and the checkpoint; vizpipe's own keys (blocks, categories, output) left out."""
    cfg = (
        OmegaConf.to_container(model_cfg, resolve=True)
        if isinstance(model_cfg, DictConfig)
        else dict(model_cfg)
    )
    checkpoint = cfg.pop("checkpoint", None)
    for key in ("blocks", "categories", "output", "task"):  # vizpipe's keys, not the factory's
        cfg.pop(key, None)
    kwargs = cfg.pop("kwargs", None) or {}
    return cfg, kwargs, checkpoint


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a local state_dict strictly and safely (``weights_only=True``: no code runs)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"Checkpoint '{path}' does not exist (model.checkpoint); give the path of a saved state_dict"
        )
    log.debug("Loading checkpoint <%s>", p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, KeyError, ...
        raise ConfigError(
            f"Checkpoint '{path}' is {describe_file(p)}; model.checkpoint takes a state_dict saved "
            "with torch.save(model.state_dict(), path), read without running any code in the file"
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


#: leading bytes of files people mistake for a checkpoint, and what they are
MAGIC = (
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (e.g. a Keras model)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x08", "a protobuf or ONNX file"),
)


def describe_file(path: Path) -> str:
    """What a file that ``torch.load(weights_only=True)`` refused is, read without running it.

    A PyTorch zip or a pickle is inspected with ``pickletools`` (opcodes only, nothing executed)
    for the classes it would build; else the first bytes tell text, an image, NumPy, HDF5, ...
    """
    import zipfile

    head = path.read_bytes()[:4096] if path.stat().st_size else b""
    if not head:
        return "an empty file"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if pkl is None:
                    return "a zip archive, not one torch.save wrote"
                return _pickled(z.read(pkl), "a PyTorch file")
        except (zipfile.BadZipFile, OSError):
            return "a damaged zip archive (a truncated PyTorch file?)"
    if head.startswith(b"PK\x03\x04"):
        return "a damaged zip archive (a PyTorch file cut short?)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # PROTO 2-5
        return _pickled(path.read_bytes(), "a pickle")
    for magic, what in MAGIC:
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a PyTorch file (binary data starting {head[:8].hex(' ')})"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"a text file (it starts with '{first[:60]}'), not a PyTorch file"


def _pickled(data: bytes, kind: str) -> str:
    """``kind`` and the classes its pickle would build (what weights_only refused), opcodes only."""
    import pickletools

    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(str(arg))
            elif op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001 - truncated or not a pickle: what was read is enough
        if not names:
            return f"{kind} that cannot be read (truncated or damaged)"
    plain = ("torch._utils.", "torch._tensor.", "collections.OrderedDict", "builtins.", "__builtin__.")

    def rebuilds_tensors(n: str) -> bool:  # what a state_dict's pickle names (torch.FloatStorage, ...)
        return n.startswith(plain) or (n.startswith("torch.") and n.count(".") == 1)

    odd = [n for n in dict.fromkeys(names) if not rebuilds_tensors(n)]
    if odd:
        shown = ", ".join(odd[:3]) + (", ..." if len(odd) > 3 else "")
        return f"{kind} holding pickled Python objects ({shown}), not a state_dict of tensors"
    return f"{kind} that torch.load(weights_only=True) cannot read"


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
        data = p.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = ""
            why = f"byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8"
        else:
            why = "it holds a NUL byte" if "\0" in text else ""
        if why:
            raise ConfigError(
                f"model.categories file '{value}' is not a text file ({why}); give a UTF-8 text file "
                "with one class name per line, or a list"
            )
        return [line.strip() for line in text.splitlines() if line.strip()]
    return [str(v) for v in value]


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of parameters and buffers that contain NaN or infinity."""
    bad = []
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            # a finite sum proves every value finite (one pass, no mask); else look closely (overflow)
            if t.is_floating_point() and not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
                bad.append(name)
    return bad
