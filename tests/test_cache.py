"""pipeline/cache.py: jobs in one process share a build, and every job gets the model as freshly built;
its parts in-process (fingerprints, differences in words, size, LRU, lending, keys)."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
import torch
from conftest import hand_context
from torch import nn
from vizpipe.pipeline import cache as c
from vizpipe.pipeline.cache import BuildCache, Fingerprint, cache_key, get_cache
from vizpipe.pipeline.factory import _build, seed_everything
from vizpipe.pipeline.hooks import hook_count
from vizpipe.pipeline.registry import register, unregister
from vizpipe.pipeline.runner import run_pipeline
from vizpipe.pipeline.stage import Scalar, Stage, StageResult

BASE = ["model=resnet18", "input=random", "input.shape=[1,3,64,64]", "report.enabled=false", "device=cpu"]


class NudgeStage(Stage):
    """Changes a weight in place, as a train stage would."""

    name = "nudge"

    def run(self, ctx: Any, settings: Any) -> StageResult:
        with torch.no_grad():
            next(ctx.model.parameters()).add_(1.0)
        return StageResult("nudge")


class LeakStage(Stage):
    """Leaves a forward hook and a gradient behind, and the model in train mode."""

    name = "leak"

    def run(self, ctx: Any, settings: Any) -> StageResult:
        ctx.model.fc.register_forward_hook(lambda *a: None)
        ctx.model.fc.weight.grad = torch.zeros_like(ctx.model.fc.weight)
        ctx.model.layer1.train()
        return StageResult("leak")


class RandomStage(Stage):
    """Records the first random numbers a stage draws (they must not depend on the cache)."""

    name = "draw"

    def run(self, ctx: Any, settings: Any) -> StageResult:
        values = torch.rand(3).tolist() + [float(np.random.rand())]
        return StageResult("draw", scalars=[Scalar(f"r{i}", v) for i, v in enumerate(values)])


class BoomStage(Stage):
    """Fails after using the model (a failed job)."""

    name = "boom"

    def run(self, ctx: Any, settings: Any) -> StageResult:
        with torch.no_grad():
            ctx.model(ctx.inputs.first().tensor)
        raise RuntimeError("deliberate failure")


@pytest.fixture(autouse=True)
def clean_cache():
    get_cache().clear()
    for cls in (NudgeStage, LeakStage, RandomStage, BoomStage):
        register(cls)
    yield
    for cls in (NudgeStage, LeakStage, RandomStage, BoomStage):
        unregister(cls.name)
    get_cache().clear()


def job(compose, out, *overrides: str):
    return run_pipeline(compose([*BASE, *overrides]), out)


def fresh(compose, tmp_path):
    """The model exactly as a fresh build makes it."""
    cfg = compose(BASE)
    seed_everything(int(cfg.seed))
    return _build(cfg, tmp_path / "fresh").model


def assert_as_built(model, reference):
    """Parameters, buffers, modes, hooks, requires_grad and grads equal a fresh build's."""
    a, b = model.state_dict(keep_vars=True), reference.state_dict(keep_vars=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].detach(), b[k].detach()), k
    assert [m.training for m in model.modules()] == [m.training for m in reference.modules()]
    assert not any(m.training for m in model.modules())
    assert hook_count(model) == hook_count(reference) == 0
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in reference.parameters()]
    assert all(p.grad is None for p in model.parameters())


def the_entry():
    (entry,) = get_cache()._entries.values()
    return entry


@pytest.mark.slow
def test_jobs_share_one_build_equal_to_a_fresh_one(compose, tmp_path):
    """CAM jobs (one failing) reuse one build; afterwards it still equals a fresh build."""
    assert job(compose, tmp_path / "j0", "stages=[cam]", "cam.layer=layer3").ok
    model = the_entry().model
    assert job(compose, tmp_path / "j1", "stages=[cam]", "cam.layer=layer4", "cam.target_class=[1,7]").ok
    failed = job(compose, tmp_path / "j2", "stages=[cam,boom]")
    assert not failed.ok and "deliberate failure" in failed.error
    bad_layer = job(compose, tmp_path / "j3", "stages=[cam]", "cam.layer=layer9")
    assert not bad_layer.ok and "layer9" in bad_layer.error
    assert job(compose, tmp_path / "j4", "stages=[summary,cam]", "cam.method=gradcam++").ok
    entry = the_entry()
    assert entry.model is model and entry.hits == 4 and not entry.lent
    assert entry.probe is not None  # measured once, by the first job, and reused
    assert_as_built(model, fresh(compose, tmp_path))


def test_outputs_and_random_numbers_equal_a_fresh_build(compose, tmp_path):
    """A job on a cached build writes the same maps and draws the same random numbers as on a fresh one."""
    args = ("stages=[draw,cam]", "cam.target_class=[1,207]")
    first = job(compose, tmp_path / "a", *args)
    second = job(compose, tmp_path / "b", *args)
    assert first.ok and second.ok and the_entry().hits == 1
    get_cache().clear()
    third = job(compose, tmp_path / "c", *args)  # fresh build again
    assert third.ok

    def npys(name: str) -> list:
        return sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*.npy"))

    for name in ("a", "b"):
        files = npys(name)
        assert files and files == npys("c")
        for rel in files:
            assert np.array_equal(np.load(tmp_path / name / rel), np.load(tmp_path / "c" / rel)), rel
    draws = []
    for name in ("a", "b", "c"):
        m = json.loads((tmp_path / name / "manifest.json").read_text())
        draws.append([s["value"] for s in m["stages"][0]["result"]["scalars"]])
    assert draws[0] == draws[1] == draws[2]


def test_a_changed_model_is_built_afresh(compose, tmp_path):
    """A stage that changes weights (a train stage) or leaves hooks, grads or modes drops the build."""
    assert job(compose, tmp_path / "a", "stages=[nudge]").ok
    assert len(get_cache()) == 0  # dropped when the job ended
    assert job(compose, tmp_path / "b", "stages=[summary]").ok
    model = the_entry().model
    assert_as_built(model, fresh(compose, tmp_path))  # built afresh: not nudged
    assert job(compose, tmp_path / "c", "stages=[leak]").ok
    assert len(get_cache()) == 0
    assert job(compose, tmp_path / "d", "stages=[summary]").ok
    assert the_entry().model is not model
    assert_as_built(the_entry().model, fresh(compose, tmp_path))


def test_fingerprint_sees_every_kind_of_change(compose, tmp_path):
    """Weights, buffers, modes, hooks, requires_grad, grads and replaced modules all count."""
    changes = {
        "parameters or buffers changed": lambda m: m.bn1.running_mean.add_(1),
        "a module's train/eval mode changed": lambda m: m.layer2.train(),
        "hooks: 1 instead of 0": lambda m: m.fc.register_forward_pre_hook(lambda *a: None),
        "requires_grad changed": lambda m: m.fc.bias.requires_grad_(False),
        "parameters hold gradients": lambda m: setattr(m.fc.bias, "grad", torch.ones_like(m.fc.bias)),
        "modules were replaced": lambda m: setattr(m, "avgpool", torch.nn.AdaptiveAvgPool2d(1)),
        "the inputs' tensors changed": lambda m: None,
    }
    model = fresh(compose, tmp_path)
    x = torch.zeros(1, 3, 8, 8)
    for what, change in changes.items():
        before = Fingerprint.of(model, [x])
        with torch.no_grad():
            change(model)
            if what.startswith("the inputs"):
                x.add_(1)
        assert before.differences(Fingerprint.of(model, [x])) == [what]
        model = fresh(compose, tmp_path)
    assert Fingerprint.of(model, [x]).differences(Fingerprint.of(model, [x, torch.ones(1)])) == []


def test_key_names_everything_that_defines_the_build(compose, tmp_path):
    """Model, input, device, seed and the checkpoint file's state change the key; stage settings do not."""
    base = cache_key(compose(BASE))
    assert cache_key(compose([*BASE, "cam.layer=layer2", "stages=[cam]"])) == base
    for other in ("seed=1", "input.shape=[2,3,64,64]", "model=vgg11", "deterministic=true"):
        assert cache_key(compose([*BASE, other])) != base, other
    ckpt = tmp_path / "w.pt"
    torch.save({}, ckpt)
    with_ckpt = cache_key(compose([*BASE, f"model.checkpoint={ckpt}"]))
    torch.save({"a": torch.zeros(1)}, ckpt)
    assert cache_key(compose([*BASE, f"model.checkpoint={ckpt}"])) != with_ckpt


def test_size_bound_and_switch_off(compose, tmp_path, monkeypatch):
    """At most VIZPIPE_CACHE builds (LRU); 0 keeps none."""
    cache = BuildCache(size=1)
    monkeypatch.setattr("vizpipe.pipeline.cache._CACHE", cache)
    assert job(compose, tmp_path / "a", "stages=[summary]").ok
    assert job(compose, tmp_path / "b", "stages=[summary]", "seed=1").ok
    assert len(cache) == 1  # the seed-0 build was evicted
    monkeypatch.setenv("VIZPIPE_CACHE", "0")
    monkeypatch.setattr("vizpipe.pipeline.cache._CACHE", BuildCache())
    assert job(compose, tmp_path / "c", "stages=[summary]").ok
    assert len(get_cache()) == 0


def test_the_train_stage_drops_the_build(compose, tmp_path):
    """A job that trains changes the weights: the next job (e.g. the next sweep job) builds afresh."""
    tiny = ["model=shapes_net", "input=shapes", "input.size=32", "input.train_count=32", "input.val_count=16"]
    tiny += ["input.test_count=4", "input.limit=4", "train.epochs=1", "train.batch_size=16"]
    tiny += ["train.cam_images=1"]
    tiny += ["train.histograms=false", "train.graph=false", "report.enabled=false", "device=cpu"]
    cfg = compose([*tiny, "stages=[cam]"])
    assert run_pipeline(cfg, tmp_path / "cam").ok
    built = the_entry().model
    trained = run_pipeline(compose([*tiny, "stages=[train,cam]"]), tmp_path / "train")
    assert trained.ok, trained.error
    assert len(get_cache()) == 0  # the trained model is not handed to another job
    assert run_pipeline(cfg, tmp_path / "cam2").ok
    rebuilt = the_entry().model
    assert rebuilt is not built  # built was lent to the train job, which trained it in place
    seed_everything(0)
    reference = _build(cfg, tmp_path / "fresh").model
    assert_as_built(rebuilt, reference)  # as built from the seed, not as trained
    assert not all(torch.equal(a, b) for a, b in zip(built.parameters(), reference.parameters(), strict=True))
    maps = sorted((tmp_path / "cam").rglob("*.npy"))
    assert maps and all(
        np.array_equal(np.load(p), np.load(tmp_path / "cam2" / p.relative_to(tmp_path / "cam"))) for p in maps
    )


def test_an_input_file_edited_between_two_jobs_is_read_again(compose, tmp_path):
    """Same config twice in one process, the image edited in between: the second job sees the new
    pixels (its features follow the file), and the key names every input file's size and mtime."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    image = folder / "a.png"
    Image.new("RGB", (40, 40), (10, 200, 30)).save(image)
    args = ["input=image", f"input.path={folder}", "stages=[features]", "features.layers=[conv1]"]
    args += ["model=seed_net", "input.resize=32", "input.crop=32"]
    before = json.loads(cache_key(compose([*BASE, *args])))["input_files"]
    assert [row[:2] for row in before] == [[str(image), image.stat().st_size]]
    first = job(compose, tmp_path / "a", *args)
    assert first.ok and len(get_cache()) == 1
    Image.new("RGB", (40, 40), (250, 20, 90)).save(image)  # new pixels, same size and name
    assert json.loads(cache_key(compose([*BASE, *args])))["input_files"] != before
    second = job(compose, tmp_path / "b", *args)
    assert second.ok
    old = np.load(tmp_path / "a" / "features" / "conv1.npy")
    new = np.load(tmp_path / "b" / "features" / "conv1.npy")
    get_cache().clear()
    fresh_run = job(compose, tmp_path / "c", *args)  # a fresh build of the edited file
    assert fresh_run.ok
    assert not np.array_equal(old, new)
    assert np.array_equal(new, np.load(tmp_path / "c" / "features" / "conv1.npy"))


# ------------------------------------------------------------------ the parts, in-process


def fp(**kw):
    base = {
        "tensors": ((1, 0, 10, "torch.float32", "cpu"),),
        "modules": (("", 5, False), ("a", 6, False)),
        "hooks": 0,
        "requires_grad": (True,),
        "grads": False,
        "inputs": ((7, 0),),
    }
    base.update(kw)
    return c.Fingerprint(**base)


def test_differences_each_kind_in_words():
    """Each change is named in words, in a fixed order; nothing changed: []."""
    a = fp()
    assert a.differences(fp()) == []
    assert a.differences(fp(tensors=((1, 1, 10, "torch.float32", "cpu"),))) == [
        "parameters or buffers changed"
    ]
    assert a.differences(fp(modules=(("", 5, False), ("a", 9, False)))) == ["modules were replaced"]
    assert a.differences(fp(modules=(("", 5, False), ("b", 6, False)))) == ["modules were replaced"]
    assert a.differences(fp(modules=(("", 5, True), ("a", 6, False)))) == [
        "a module's train/eval mode changed"
    ]
    assert a.differences(fp(hooks=2)) == ["hooks: 2 instead of 0"]
    assert a.differences(fp(requires_grad=(False,))) == ["requires_grad changed"]
    assert a.differences(fp(grads=True)) == ["parameters hold gradients"]
    assert fp(grads=True).differences(fp()) == []  # gradients gone is no change to worry about
    assert a.differences(fp(inputs=((7, 1),))) == ["the inputs' tensors changed"]
    assert a.differences(fp(inputs=())) == ["the inputs' tensors changed"]
    assert a.differences(fp(inputs=((7, 0), (8, 3)))) == []  # a new tensor is not a change
    every = a.differences(
        fp(
            tensors=(),
            modules=(("", 5, False),),
            hooks=1,
            requires_grad=(),
            grads=True,
            inputs=((7, 2),),
        )
    )
    assert every == [
        "parameters or buffers changed",
        "modules were replaced",
        "hooks: 1 instead of 0",
        "requires_grad changed",
        "parameters hold gradients",
        "the inputs' tensors changed",
    ]


def test_fingerprint_of_model():
    """Fingerprint.of: one entry per parameter and buffer, modules with names and modes, grads."""
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
    x = torch.zeros(1)
    f = c.Fingerprint.of(m, [x])
    assert len(f.tensors) == 2 + 2 + 3  # conv w,b; bn w,b; bn running mean, var, count
    assert [n for n, _, _ in f.modules] == ["", "0", "1"]
    assert all(not t for _, _, t in f.modules)
    assert f.hooks == 0 and f.grads is False
    assert f.requires_grad == (True, True, True, True)
    assert f.inputs == ((id(x), 0),)
    assert f.tensors[0][3:] == ("torch.float32", "cpu")
    m[0].weight.grad = torch.zeros_like(m[0].weight)
    assert c.Fingerprint.of(m, []).grads is True
    m[1].train()
    assert f.differences(c.Fingerprint.of(m, [x])) == [
        "a module's train/eval mode changed",
        "parameters hold gradients",
    ]
    x.add_(1)
    assert "the inputs' tensors changed" in f.differences(c.Fingerprint.of(m, [x]))


def test_size_from_environment(monkeypatch):
    """VIZPIPE_CACHE: a number (negative is 0), empty or unset = 2, not a number = 2; explicit size wins."""
    monkeypatch.delenv(c.SIZE_ENV, raising=False)
    assert c.BuildCache().size == 2 == c.DEFAULT_SIZE
    for text, size in (("5", 5), (" 0 ", 0), ("-3", 0), ("", 2), ("x", 2), ("1", 1)):
        monkeypatch.setenv(c.SIZE_ENV, text)
        assert c.BuildCache().size == size, text
    assert c.BuildCache(size=7).size == 7
    assert c.BuildCache(size=0).size == 0


def test_file_stat(tmp_path):
    """(size, mtime_ns) of an existing file; None for folders, missing files, empty or non-strings."""
    f = tmp_path / "w.pt"
    f.write_bytes(b"abc")
    st = f.stat()
    assert c._file_stat(str(f)) == [3, st.st_mtime_ns]
    assert c._file_stat(str(tmp_path)) is None
    assert c._file_stat(str(tmp_path / "none")) is None
    assert c._file_stat("") is None
    assert c._file_stat(None) is None
    assert c._file_stat(3) is None


def test_cache_key_fields(compose, tmp_path):
    """The key: model, files' stats, input, device type, seed, deterministic; changes with each."""
    base = ["model=seed_net", "input=random"]
    doc = json.loads(c.cache_key(compose(base)))
    assert sorted(doc) == [
        "categories_file",
        "checkpoint_file",
        "deterministic",
        "device",
        "input",
        "input_files",
        "model",
        "seed",
    ]
    assert doc["model"]["name"] == "seed_net"
    assert doc["checkpoint_file"] is None and doc["categories_file"] is None
    assert doc["seed"] == 0 and doc["deterministic"] is False
    assert doc["input"]["kind"] == "random" and doc["input_files"] == []
    key = c.cache_key(compose(base))
    for extra in ("seed=1", "deterministic=true", "device=cuda", "input.shape=[1,3,8,8]"):
        assert c.cache_key(compose([*base, extra])) != key, extra
    assert c.cache_key(compose([*base, "cam.layer=x"])) == key
    ck = tmp_path / "c.pt"
    ck.write_bytes(b"12")
    doc = json.loads(c.cache_key(compose([*base, f"model.checkpoint={ck}"])))
    assert doc["checkpoint_file"] == [2, ck.stat().st_mtime_ns]


def tiny_ctx(tmp_path, name="run"):
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
    return hand_context(model, tmp_path / name, (1, 3, 8, 8))


def test_store_checkout_release_cycle(tmp_path):
    """store lends the entry; checkout refuses while lent; after release it hands a new context."""
    cache = c.BuildCache(size=2)
    ctx = tiny_ctx(tmp_path)
    ctx.warnings.append("w1")
    cache.store("k", ctx)
    assert len(cache) == 1
    assert cache.checkout("k", tmp_path / "b") is None  # lent
    assert cache.checkout("other", tmp_path / "b") is None
    assert cache.release(ctx) is True
    again = cache.checkout("k", tmp_path / "b")
    assert again is not None and again is not ctx
    assert again.model is ctx.model and again.inputs is ctx.inputs
    assert again.output_dir == tmp_path / "b"
    assert again.model_name == "tiny" and again.warnings == ["w1"]
    assert cache._entries["k"].hits == 1
    assert cache.checkout("k", tmp_path / "c") is None  # lent again
    assert cache.release(None) is False
    assert cache.release(tiny_ctx(tmp_path, "x")) is False  # not from this cache
    cache.clear()
    assert len(cache) == 0


def test_checkout_restores_random_state(tmp_path):
    """A checkout puts python's, numpy's and torch's generators where the build left them."""
    import numpy as np

    cache = c.BuildCache(size=1)
    ctx = tiny_ctx(tmp_path)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    cache.store("k", ctx)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    cache.release(ctx)
    cache.checkout("k", tmp_path / "b")
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_release_drops_a_changed_model(tmp_path):
    """A model changed during the run is dropped at release (False) and not handed out again."""
    cache = c.BuildCache(size=2)
    ctx = tiny_ctx(tmp_path)
    cache.store("k", ctx)
    ctx.model.train()
    assert cache.release(ctx) is False
    assert len(cache) == 0
    assert cache.checkout("k", tmp_path / "b") is None


def test_checkout_drops_a_model_changed_after_release(tmp_path):
    """A model changed between release and checkout is dropped at checkout."""
    cache = c.BuildCache(size=2)
    ctx = tiny_ctx(tmp_path)
    cache.store("k", ctx)
    cache.release(ctx)
    with torch.no_grad():
        ctx.model[0].weight.add_(1)
    assert cache.checkout("k", tmp_path / "b") is None
    assert len(cache) == 0


def test_release_keeps_probe_and_blocks(tmp_path):
    """What the run measured (blocks) is kept for the next job; an earlier value is not replaced."""
    cache = c.BuildCache(size=2)
    ctx = tiny_ctx(tmp_path)
    cache.store("k", ctx)
    ctx._blocks = ["0"]
    assert cache.release(ctx)
    assert cache._entries["k"].blocks == ["0"]
    nxt = cache.checkout("k", tmp_path / "b")
    assert nxt._blocks == ["0"]
    nxt._blocks = ["other"]
    cache.release(nxt)
    assert cache._entries["k"].blocks == ["0"]


def test_lru_eviction_and_size_zero(tmp_path):
    """At most size entries, least recently used dropped; size 0 stores nothing."""
    cache = c.BuildCache(size=2)
    ctxs = [tiny_ctx(tmp_path, f"r{i}") for i in range(3)]
    cache.store("a", ctxs[0])
    cache.store("b", ctxs[1])
    cache.release(ctxs[0])
    assert cache.checkout("a", tmp_path / "x") is not None  # a is now the most recent
    cache.store("c", ctxs[2])
    assert list(cache._entries) == ["a", "c"]
    off = c.BuildCache(size=0)
    off.store("a", ctxs[0])
    assert len(off) == 0
    assert off.checkout("a", tmp_path / "y") is None


def test_store_replaces_same_key(tmp_path):
    """Storing a key again replaces the entry (one entry per key)."""
    cache = c.BuildCache(size=2)
    a, b = tiny_ctx(tmp_path, "a"), tiny_ctx(tmp_path, "b")
    cache.store("k", a)
    cache.store("k", b)
    assert len(cache) == 1
    assert cache._entries["k"].model is b.model
    assert cache._entries["k"].lent is True
    fields = cache._entries["k"].fields
    assert fields["model_name"] == "tiny" and fields["seed"] == 0 and fields["output_kind"] == "auto"


def test_input_tensors(tmp_path):
    """The tensors a stage could change: the probe's logits, the first batch, in-memory items."""
    ctx = tiny_ctx(tmp_path)
    found = c._input_tensors(ctx.inputs)
    assert any(t is ctx.inputs.dataset.x for t in found)
    probe = type("P", (), {"logits": torch.zeros(2)})()
    assert c._input_tensors(ctx.inputs, probe)[0] is probe.logits


def test_get_cache_is_one_per_process():
    """get_cache returns the same object every time."""
    assert c.get_cache() is c.get_cache()
    assert isinstance(c.get_cache(), c.BuildCache)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(c.SIZE_ENV, raising=False)
