"""Layer names: lookup, resolution of user specs, and one probing forward pass.

Specs accepted wherever a config takes layers: an exact dotted name (``layer4``,
``features.3``), a glob (``features.*``), ``type:Conv2d``, ``all`` and ``blocks``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError, unknown_choice

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pipeline.context import Probe

__all__ = [
    "default_blocks",
    "get_module",
    "layer_names",
    "probe_model",
    "resolve_layers",
    "safe_name",
]

_UNSAFE_FILE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: object, max_len: int = 100) -> str:
    """A file-name-safe version of ``text`` (no path separators, no leading dots, bounded length)."""
    out = _UNSAFE_FILE.sub("_", str(text)).strip("._") or "_"
    return out[:max_len]


def layer_names(model: nn.Module) -> list[str]:
    """Every addressable (dotted) module name, in definition order, without the root."""
    return [name for name, _ in model.named_modules() if name]


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name raises a ``ConfigError`` with suggestions."""
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise unknown_choice("layer", name, layer_names(model)) from exc


def default_blocks(model: nn.Module) -> list[str]:
    """The model's top-level blocks: what ``blocks`` means in ``features.layers``.

    ResNet-like: ``layer1..layerN``; VGG/AlexNet: every pooling layer in ``features``;
    DenseNet: the dense blocks; other ``features`` stacks (MobileNet, EfficientNet, Swin): their
    children; ViT: the encoder layers; otherwise the top-level children.
    """
    from torch import nn

    top = dict(model.named_children())
    resnet = [n for n in top if re.fullmatch(r"layer\d+", n)]
    if resnet:
        return resnet
    if isinstance(top.get("features"), nn.Module):
        feats = dict(top["features"].named_children())
        pools = [
            f"features.{n}"
            for n, m in feats.items()
            if isinstance(m, nn.MaxPool2d | nn.AvgPool2d | nn.AdaptiveAvgPool2d)
        ]
        if pools:
            return pools
        dense = [f"features.{n}" for n in feats if "block" in n]
        if dense:
            return dense
        return [f"features.{n}" for n in feats]
    encoder = top.get("encoder")
    if encoder is not None and hasattr(encoder, "layers"):
        return [f"encoder.layers.{n}" for n, _ in encoder.layers.named_children()]
    return list(top)


def resolve_layers(
    model: nn.Module,
    specs: str | Iterable[str],
    *,
    qualifies: Callable[[str, nn.Module], bool] | None = None,
    rule: str = "",
    what: str = "layer",
    model_name: str = "",
) -> list[str]:
    """Turn user layer specs into an ordered list of unique module names.

    ``qualifies`` filters what a stage can use (e.g. "has conv weights"); an exact name that does
    not qualify is an error naming ``rule`` and the names that do qualify, while globs, ``type:``
    and ``all`` keep only the qualifying modules. Everything fails before any work.
    """
    if isinstance(specs, str):
        specs = [specs]
    modules = dict(model.named_modules())
    modules.pop("", None)
    names = list(modules)
    ok = [n for n in names if qualifies is None or qualifies(n, modules[n])]
    ctx = f"for {model_name}" if model_name else ""
    out: list[str] = []
    for spec in specs:
        spec = str(spec).strip()
        if spec == "all":
            found = ok if qualifies is not None else [n for n in names if not any(modules[n].children())]
        elif spec == "blocks":
            found = default_blocks(model)
        elif spec.lower().startswith("type:"):
            typ = spec.split(":", 1)[1].strip().lower()
            types = sorted({type(m).__name__ for m in modules.values()})
            found = [n for n in ok if type(modules[n]).__name__.lower() == typ]
            if typ not in {t.lower() for t in types}:
                raise unknown_choice("module type", spec.split(":", 1)[1], types, context=ctx)
        elif any(ch in spec for ch in "*?["):
            found = [n for n in ok if fnmatch.fnmatchcase(n, spec)]
            if not found:
                raise unknown_choice(
                    f"{what} pattern",
                    spec,
                    ok or names,
                    context=ctx,
                    hint="the pattern matched no usable layer",
                )
        else:
            if spec not in modules:
                raise unknown_choice(what, spec, names, context=ctx)
            if qualifies is not None and not qualifies(spec, modules[spec]):
                kind = type(modules[spec]).__name__
                shown = ", ".join(ok[:30]) + (f", ... ({len(ok) - 30} more)" if len(ok) > 30 else "")
                raise ConfigError(
                    f"Layer '{spec}' ({kind}) cannot be used: {rule or 'it does not qualify'}. "
                    f"Layers that qualify: {shown or '(none)'}"
                )
            found = [spec]
        if not found:
            raise ConfigError(
                f"{what.capitalize()} spec '{spec}' selects nothing {ctx}: {rule or 'no match'}. "
                f"Layers that qualify: {', '.join(ok[:30]) or '(none)'}"
            )
        out.extend(found)
    return list(dict.fromkeys(out))


def probe_model(model: nn.Module, x: torch.Tensor) -> Probe:
    """One no-grad forward pass recording the logits and every module's output shape.

    Hooks are removed and the model's mode is untouched (it is not changed at all).
    """
    import torch

    from pipeline.context import Probe

    shapes: dict[str, tuple[int, ...]] = {}
    types: dict[str, str] = {}
    calls: dict[str, int] = {}
    handles = []

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, args: object, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if name not in shapes:
                t = first_tensor(output)
                if t is not None:
                    shapes[name] = tuple(t.shape)

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                types[name] = type(module).__name__
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    logits = model_output(out).detach().float().cpu()
    if logits.ndim == 1:
        logits = logits[:, None]
    return Probe(logits=logits.reshape(logits.shape[0], -1), shapes=shapes, types=types, calls=calls)


def first_tensor(value: object) -> torch.Tensor | None:
    """The first tensor in a module output (tensor, tuple/list, dict), or None."""
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list | tuple):
        for v in value:
            t = first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        for v in value.values():
            t = first_tensor(v)
            if t is not None:
                return t
    return None


def model_output(out: object) -> torch.Tensor:
    """The logits tensor of a model output (tensor, ``.logits``, ``["out"]`` or first element)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, dict) and "out" in out:
        return out["out"]
    t = first_tensor(out)
    if t is None:
        raise TypeError(f"model returned {type(out).__name__}, which holds no tensor")
    return t
