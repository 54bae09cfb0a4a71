"""The build cache's parts in-process: fingerprints, differences in words, size, LRU, lending, keys."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import hand_context
from torch import nn
from vizpipe.pipeline import cache as c


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
