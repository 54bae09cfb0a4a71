"""The device a run uses: ``device.type`` -> a usable ``torch.device`` (or one clear error)."""

from __future__ import annotations

import torch
from vizpipe.pipeline.errors import ConfigError, unknown_choice

__all__ = ["build_device"]


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
