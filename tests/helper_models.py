"""Tiny models for the bad-input tests (importable via PYTHONPATH=tests)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


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
