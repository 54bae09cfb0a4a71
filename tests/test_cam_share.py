"""vizpipe.stages.cam.share: a sweep over cam.layer computes its layers' maps in one pass, byte for byte."""

from __future__ import annotations

import json

import numpy as np
import pytest
from vizpipe.pipeline.cache import get_cache
from vizpipe.pipeline.runner import run_pipeline
from vizpipe.stages.cam import share

BASE = ["model=resnet18", "input=random", "input.shape=[2,3,64,64]", "report.enabled=false", "device=cpu"]
SWEEP = {"cam.layer": ["layer2", "layer3", "layer4"], "cam.target_class": ["1", "207"]}


@pytest.fixture(autouse=True)
def clean_cache():
    get_cache().clear()
    yield
    get_cache().clear()


def maps(out):
    """{(layer, target): the .npy bytes} of a run's cam stage."""
    doc = json.loads((out / "cam" / "cam.json").read_text())
    return {
        (m["layer"], m["target"], img["name"]): (out / m["npy"]).read_bytes()
        for img in doc["images"]
        for m in img["maps"]
    }


def run(compose, out, layer, target, sweep=None):
    cfg = compose([*BASE, "stages=[cam]", f"cam.layer={layer}", f"cam.target_class={target}"])
    result = run_pipeline(cfg, out, sweep=sweep)
    assert result.ok, result.error
    return maps(out)


def kept(ctx_shared):
    return sorted((k[1], k[2]) for k in ctx_shared if isinstance(k, tuple) and len(k) == 3)


@pytest.mark.slow  # three real runs (~3 s)
def test_layer_sweep_shares_one_pass_and_equals_separate_runs(compose, tmp_path, caplog):
    """6 jobs (3 layers x 2 classes) on one build: 2 passes; every map byte-identical to a lone run."""
    import logging

    caplog.set_level(logging.DEBUG, logger="vizpipe.stages.cam.compute")
    shared, said = {}, {}
    for i, target in enumerate(("1", "207")):
        for j, layer in enumerate(SWEEP["cam.layer"]):
            caplog.clear()
            got = run(compose, tmp_path / f"s{i}{j}", layer, target, SWEEP)
            said[(i, j)] = [r.getMessage() for r in caplog.records if "earlier job" in r.getMessage()]
            shared[(layer, target)] = got
            entry = next(iter(get_cache()._entries.values()))
            if j == 0:  # the class's first job kept its siblings' maps
                assert kept(entry.shared) == [("layer3", (0, 1)), ("layer4", (0, 1))]
    assert kept(next(iter(get_cache()._entries.values())).shared) == []  # each taken once
    assert said[(0, 1)] == ["CAM: layer3 maps of 2 image(s) from an earlier job"]
    assert said[(0, 0)] == said[(1, 0)] == [] and said[(1, 2)] != []
    for (layer, target), got in shared.items():
        get_cache().clear()
        alone = run(compose, tmp_path / f"a{layer}{target}", layer, target)
        assert got == alone, (layer, target)
        assert len(got) == 2


def test_sweep_in_reverse_layer_order_keeps_each_layers_own_map(compose, tmp_path):
    """layer4 first: the library records activations in forward order; maps still go to their layer."""
    sweep = {"cam.layer": ["layer4", "layer3"]}
    got = {layer: run(compose, tmp_path / layer, layer, "1", sweep) for layer in sweep["cam.layer"]}
    for layer, maps_ in got.items():
        get_cache().clear()
        assert maps_ == run(compose, tmp_path / f"alone{layer}", layer, "1"), layer


def test_per_layer_maps_follow_the_given_order(compose, tmp_path):
    """cam.layer=[layer4,layer3] cam.per_layer=true: each per-layer map is that layer's (a lone run's)."""
    cfg = compose(
        [*BASE, "stages=[cam]", "cam.layer=[layer4,layer3]", "cam.per_layer=true", "cam.target_class=1"]
    )
    assert run_pipeline(cfg, tmp_path / "both").ok
    both = maps(tmp_path / "both")
    for layer in ("layer3", "layer4"):
        alone = run(compose, tmp_path / layer, layer, "1")
        for (name, target, image), data in alone.items():
            assert both[(name, target, image)] == data, layer
    assert {k[0] for k in both} == {"layer4+layer3", "layer3", "layer4"}


def test_no_sharing_outside_a_layer_sweep_or_for_other_methods(compose, tmp_path):
    """No sweep values, a perturbation method or metrics: each job computes alone, keeps nothing."""
    run(compose, tmp_path / "a", "layer3", "1")
    run(compose, tmp_path / "b", "layer3", "1", {"cam.target_class": ["1", "2"]})
    cfg = compose([*BASE, "stages=[cam]", "cam.layer=layer3", "cam.method=ablationcam", "cam.batch_size=64"])
    assert run_pipeline(cfg, tmp_path / "c", sweep=SWEEP).ok
    cfg = compose([*BASE, "stages=[cam]", "cam.layer=layer3", "cam.metrics=[road_most_relevant_first]"])
    assert run_pipeline(cfg, tmp_path / "d", sweep=SWEEP).ok
    assert kept(next(iter(get_cache()._entries.values())).shared) == []


def test_siblings_rules(compose, tmp_path, monkeypatch):
    """Other values that are not one plain layer are skipped; too many bytes: no sharing."""
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.schema import settings_of
    from vizpipe.stages.cam.plan import make_plan

    cfg = compose([*BASE, "stages=[cam]", "cam.layer=layer3"])
    ctx = build_context(cfg, tmp_path / "x")
    settings = settings_of(cfg, "cam")
    plan = make_plan(ctx, settings)
    ctx.sweep = {"cam.layer": ["layer3", "layer4", "layer*", "nope", "[layer1,layer2]", "layer4"]}
    assert [x.name for x in share.siblings(ctx, settings, plan)] == ["layer4"]
    ctx.sweep = {"cam.layer": ["layer3"]}
    assert share.siblings(ctx, settings, plan) == []
    ctx.sweep = {"cam.layer": ["layer3", "layer4"]}
    monkeypatch.setattr(share, "MAX_BYTES", 2 * 64 * 64 * 4 - 1)  # 2 images, 1 class set, 1 layer
    assert share.siblings(ctx, settings, plan) == []
    monkeypatch.setattr(share, "MAX_BYTES", 2 * 64 * 64 * 4)
    assert [x.name for x in share.siblings(ctx, settings, plan)] == ["layer4"]
    key = share.share_key(ctx, settings, plan)
    assert "layer3" not in key and '"target_class"' in key and "GradCAM" in key


def test_kept_arrays_are_this_jobs_own_first():
    """keep: the own layer's maps returned, the others stored under their names; bad results refused."""

    class Ctx:
        shared: dict = {}

    class L:
        def __init__(self, name):
            self.name = name

    ctx = Ctx()
    a, b = np.zeros((1, 2, 2), np.float32), np.ones((1, 2, 2), np.float32)
    own = share.keep(ctx, "k", [L("x"), L("y")], [0], "logits", [[3]], [(None, [a, b])])
    assert own[0][0] is a and ctx.shared[("k", "y", (0,))] == ("logits", [[3]], [(b, None)])
    assert share.take(ctx, "k", "y", [0])[2][0][0] is b and share.take(ctx, "k", "y", [0]) is None
    with pytest.raises(RuntimeError):
        share.keep(ctx, "k", [L("x"), L("y")], [0], "logits", [[3]], [(None, [a])])
