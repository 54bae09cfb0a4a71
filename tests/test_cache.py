"""pipeline/cache.py: jobs in one process share a build, and every job gets the model as freshly built."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
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
