"""Runner tests: order, subsets, failures, interrupts and the manifest."""

from __future__ import annotations

import json

import helper_stages
import pytest
from vizpipe.pipeline import registry
from vizpipe.pipeline.runner import run_pipeline

TINY = ["model=seed_net", "input=random", "input.shape=[1,3,32,32]", "report.enabled=false"]


@pytest.fixture
def extra_stages():
    helper_stages.ORDER.clear()
    for cls in helper_stages.HELPERS:
        registry.register(cls)
    yield helper_stages.ORDER
    for cls in helper_stages.HELPERS:
        registry.unregister(cls.name)


def manifest(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())


def test_runs_exactly_the_named_stages_in_order(compose, tmp_path, extra_stages):
    result = run_pipeline(compose([*TINY, "stages=[record,summary]"]), tmp_path)
    assert result.ok, result.error
    m = manifest(tmp_path)
    assert [s["name"] for s in m["stages"]] == ["record", "summary"]
    assert [s["status"] for s in m["stages"]] == ["ok", "ok"]
    assert extra_stages == ["record"]
    assert not (tmp_path / "kernels").exists() and not (tmp_path / "cam").exists()
    art = {a["path"]: a for s in m["stages"] for a in s["artifacts"]}
    assert "record/ran.txt" in art and art["record/ran.txt"]["bytes"] == 6
    assert len(art["summary/summary.json"]["sha256"]) == 64
    for key in ("seed", "device", "command", "overrides", "versions", "config", "git", "created"):
        assert key in m
    for pkg in ("python", "torch", "torchvision", "hydra-core", "torchinfo", "grad-cam"):
        assert m["versions"][pkg], pkg
    assert m["device"] == "cpu" and m["seed"] == 0 and m["status"] == "ok"


def test_failure_stops_and_keeps_artifacts(compose, tmp_path, extra_stages):
    result = run_pipeline(compose([*TINY, "stages=[record,boom,summary]"]), tmp_path)
    assert not result.ok and result.status == "failed"
    assert "deliberate failure in boom" in result.error
    m = manifest(tmp_path)
    status = {s["name"]: s for s in m["stages"]}
    assert status["record"]["status"] == "ok"
    assert status["boom"]["status"] == "failed" and "deliberate failure" in status["boom"]["error"]
    assert [a["path"] for a in status["boom"]["artifacts"]] == ["boom/partial.txt"]
    assert status["summary"]["status"] == "skipped"
    assert (tmp_path / "record" / "ran.txt").exists() and (tmp_path / "boom" / "partial.txt").exists()
    assert extra_stages == ["record", "boom"]


def test_on_error_continue_runs_the_rest(compose, tmp_path, extra_stages):
    result = run_pipeline(compose([*TINY, "stages=[boom,record]", "on_error=continue"]), tmp_path)
    assert result.status == "failed"
    assert [s["status"] for s in manifest(tmp_path)["stages"]] == ["failed", "ok"]
    assert extra_stages == ["boom", "record"]


def test_unknown_stage_fails_before_anything_runs(compose, tmp_path, extra_stages):
    result = run_pipeline(compose([*TINY, "stages=[record,nope]"]), tmp_path)
    assert result.status == "failed"
    assert "Unknown stage 'nope'" in result.error and "summary" in result.error
    m = manifest(tmp_path)
    assert m["setup"]["status"] == "failed"
    assert [s["status"] for s in m["stages"]] == ["skipped", "skipped"]
    assert extra_stages == []


def test_interrupt_is_recorded_and_reraised(compose, tmp_path, extra_stages):
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(compose([*TINY, "stages=[record,interrupt,summary]"]), tmp_path)
    m = manifest(tmp_path)
    assert m["status"] == "interrupted"
    assert [s["status"] for s in m["stages"]] == ["ok", "interrupted", "skipped"]
    assert m["stages"][1]["artifacts"][0]["path"] == "interrupt/partial.txt"


def test_model_mode_and_hooks_untouched(make_ctx):
    from vizpipe.pipeline.registry import get_stage

    ctx = make_ctx(TINY)
    before = [(len(m._forward_hooks), len(m._forward_pre_hooks), m.training) for m in ctx.model.modules()]
    stage = get_stage("summary")
    settings = compose_settings("summary")
    stage.check_model(ctx, settings)
    stage.run(ctx, settings)
    after = [(len(m._forward_hooks), len(m._forward_pre_hooks), m.training) for m in ctx.model.modules()]
    assert before == after


def compose_settings(name):
    from conftest import compose_config
    from omegaconf import OmegaConf

    return OmegaConf.to_object(compose_config()[name])
