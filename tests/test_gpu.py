"""GPU checks: the same maps and arrays on CUDA as on the CPU. Skipped cleanly without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.runner import run_pipeline

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
    ),
]
ARGS = [
    "model=vgg11",
    "input=random",
    "input.shape=[2,3,96,96]",
    "stages=[features,cam]",
    "report.enabled=false",
    "features.layers=[features.18]",
    "cam.layer=features.18",
    "cam.target_class=[1,207]",
]


def test_cuda_run_matches_cpu(compose, tmp_path):
    """vgg's in-place ReLU after the hooked conv must not make GPU maps differ from CPU maps."""
    runs = {}
    for device in ("cpu", "cuda"):
        result = run_pipeline(compose([*ARGS, f"device={device}"]), tmp_path / device)
        assert result.ok, result.error
        runs[device] = tmp_path / device
    cpu_files = sorted(p.relative_to(runs["cpu"]) for p in runs["cpu"].rglob("*.npy"))
    assert cpu_files and cpu_files == sorted(p.relative_to(runs["cuda"]) for p in runs["cuda"].rglob("*.npy"))
    for rel in cpu_files:
        a, b = np.load(runs["cpu"] / rel), np.load(runs["cuda"] / rel)
        scale = max(float(np.abs(a).max()), 1e-6)
        assert np.abs(a - b).max() <= 1e-3 * scale, rel
