"""Mult-adds that mean what their label says (issue 21): per image and per batch, attention counted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from torch import nn
from vizpipe.pipeline.runner import run_pipeline
from vizpipe.stages.summary import count_mult_adds


def test_one_attention_block_is_counted_as_by_hand() -> None:
    """torchvision's ViT encoder block, eval mode, no gradients (the inference fast path)."""
    from torchvision.models.vision_transformer import EncoderBlock

    heads, width, mlp, tokens = 4, 64, 128, 10
    block = EncoderBlock(heads, width, mlp, 0.0, 0.0).eval()
    hand = (
        3 * tokens * width * width  # q, k, v projections
        + tokens * tokens * width  # Q Kᵀ over all heads
        + tokens * tokens * width  # softmax(Q Kᵀ) V
        + tokens * width * width  # output projection
        + 2 * tokens * width * mlp  # the MLP's two linear layers
    )
    with torch.no_grad():
        assert count_mult_adds(block, torch.randn(1, tokens, width)) == hand == 340_480
    assert all(p.grad is None and p.requires_grad for p in block.parameters())  # left as found
    mha = nn.MultiheadAttention(width, heads, batch_first=True).eval()
    assert count_mult_adds(mha.forward, torch.randn(1, tokens, width)) is None  # not a module: no count
    assert count_mult_adds(nn.Sequential(nn.Flatten()), torch.randn(1, 3)) == 0


def test_summary_reports_per_image_and_per_batch_labelled(
    compose: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Before: "11,689,512 params, 7.26 G mult-adds" for a batch of 4 (torchinfo's, for the batch)."""
    cfg = compose(
        [
            "stages=[summary]",
            "input=random",
            "input.shape=[4,3,224,224]",
            "input.batch_size=4",
            "report.enabled=false",
        ]
    )
    result = run_pipeline(cfg, tmp_path / "r18")
    assert result.ok, result.error
    manifest = json.loads((tmp_path / "r18" / "manifest.json").read_text())
    record = manifest["stages"][0]["result"]
    assert record["summary"] == "11,689,512 params, 1.81 G mult-adds per image (7.26 G per batch of 4)"
    totals = json.loads((tmp_path / "r18" / "summary" / "summary.json").read_text())["totals"]
    assert totals["batch_size"] == 4 and totals["mult_adds_per_batch"] == 4 * totals["mult_adds_per_image"]
    assert 0 <= totals["total_mult_adds"] - totals["mult_adds_per_batch"] < 1e-4 * totals["total_mult_adds"]
    rows = dict(map(tuple, record["tables"][0]["rows"]))
    assert rows["Mult-adds per image"] == "1.814 G" and rows["Mult-adds per batch of 4"] == "7.256 G"
    assert "torchinfo's count (summary.txt)" not in rows  # it agrees (and adds the biases)


@pytest.mark.slow
def test_attention_models_are_counted_and_torchinfo_s_undercount_is_labelled(
    compose: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Before: vit_b_16 0.17 G (torchinfo counts layers with weights only). torchvision documents
    17.56 GFLOPS (multiply-adds) for vit_b_16 at 224 px."""
    cfg = compose(["model=vit_b_16", "stages=[summary]", "input=random", "report.enabled=false"])
    result = run_pipeline(cfg, tmp_path / "vit")
    assert result.ok, result.error
    totals = json.loads((tmp_path / "vit" / "summary" / "summary.json").read_text())["totals"]
    assert round(totals["mult_adds_per_image"] / 1e9, 2) == 17.56
    assert totals["total_mult_adds"] < 0.2e9
    record = json.loads((tmp_path / "vit" / "manifest.json").read_text())["stages"][0]["result"]
    rows = dict(map(tuple, record["tables"][0]["rows"]))
    assert rows["torchinfo's count (summary.txt)"].startswith(
        "0.173 G per batch of 1: layers with weights only"
    )
