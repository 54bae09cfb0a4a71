"""Tiny models for tests, named by `model._target_=helper_models.<Class>` (PYTHONPATH=tests)."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn
from vizpipe.pipeline.models import ShapesNet


class PathyNet(nn.Module):
    """A small CNN whose module names contain path characters ('/', ':')."""

    def __init__(
        self, name: str = "pathy", weights: Any = None, num_classes: int | None = 3, **_: Any
    ) -> None:
        super().__init__()
        self.add_module("a/b:c", nn.Conv2d(3, 4, 3, padding=1))
        self.add_module("b\\up", nn.Conv2d(4, 4, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, num_classes or 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, classes)."""
        x = torch.relu(getattr(self, "a/b:c")(x))
        x = torch.relu(getattr(self, "b\\up")(x))
        return self.fc(self.pool(x).flatten(1))


class FaultyNet(ShapesNet):
    """ShapesNet whose ``fault_at``-th training forward pass goes wrong (``fault``: nan | interrupt)."""

    def __init__(self, fault: str = "nan", fault_at: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fault, self.fault_at = fault, int(fault_at)
        self.calls = itertools.count(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.training and next(self.calls) == self.fault_at:
            if self.fault == "interrupt":
                raise KeyboardInterrupt
            return out * float("nan")
        return out


class FlatNet(nn.Module):
    """A CNN without submodules: parameters only, every layer computed in ``forward`` (no layer to name)."""

    def __init__(
        self, name: str = "flat", weights: Any = None, num_classes: int | None = 3, **_: Any
    ) -> None:
        super().__init__()
        self.conv = nn.Parameter(torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0)))
        self.head = nn.Parameter(torch.randn(num_classes or 3, 4, generator=torch.Generator().manual_seed(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, classes)."""
        return torch.relu(nn.functional.conv2d(x, self.conv, padding=1)).mean((2, 3)) @ self.head.t()
