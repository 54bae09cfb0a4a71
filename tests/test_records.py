"""Records and shared helpers in-process: StageResult <-> JSON, manifest, hooks, context, tensorboard_io."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from conftest import RANDOM_INPUT, hand_context
from torch import nn
from vizpipe.pipeline import hooks, tensorboard_io
from vizpipe.pipeline import manifest as mf
from vizpipe.pipeline.stage import (
    Histogram,
    Merge,
    Picture,
    Scalar,
    Stage,
    StageResult,
    Table,
    Text,
    from_dict,
)

# ------------------------------------------------------------------ StageResult / from_dict


def full_result():
    return StageResult(
        stage="s",
        summary="sum",
        params={"a": "1"},
        pictures=[Picture("s/p.png", caption="c", tag="t", wide=True, step=2)],
        tables=[Table("T", ["x"], [[1]], merge=Merge(keys=[0], weight=1, count=[1], means=[2]))],
        texts=[Text("t", "body", tag=None, pre=False, open=True)],
        scalars=[Scalar("a/b", 1.5, key=True, better="higher"), Scalar("c", None)],
        histograms=[Histogram("h", [1.0, 2.0], step=1)],
        files=["s/a.npy"],
        warnings=["w"],
        data={"not": "stored"},
    )


def test_to_dict_roundtrip_without_data():
    """to_dict drops data; from_dict rebuilds an equal record (data None)."""
    r = full_result()
    doc = r.to_dict()
    assert "data" not in doc
    assert doc["pictures"][0] == {
        "path": "s/p.png",
        "caption": "c",
        "group": "",
        "tag": "t",
        "wide": True,
        "preview": False,
        "badge": None,
        "step": 2,
        "stack": None,
    }
    back = StageResult.from_dict(json.loads(json.dumps(doc)))
    r.data = None
    assert back == r
    assert r.key_scalars() == [Scalar("a/b", 1.5, key=True, better="higher")]
    assert full_result().data == {"not": "stored"}


def test_from_dict_errors_exact():
    """Unknown and missing keys, wrong types: messages name the path and the problem."""
    with pytest.raises(ValueError) as info:
        from_dict(StageResult, {"stage": "s", "zz": 1, "aa": 2})
    assert str(info.value) == "StageResult: unknown key(s) ['aa', 'zz'] for StageResult"
    with pytest.raises(ValueError) as info:
        from_dict(StageResult, {"summary": "x"})
    assert str(info.value) == "StageResult: missing key(s) ['stage'] for StageResult"
    with pytest.raises(TypeError) as info:
        from_dict(StageResult, [])
    assert str(info.value) == "StageResult: expected an object for StageResult, got list"
    with pytest.raises(TypeError) as info:
        from_dict(StageResult, {"stage": 3})
    assert str(info.value) == "StageResult.stage: expected str, got int 3"
    with pytest.raises(TypeError) as info:
        from_dict(StageResult, {"stage": "s", "files": "a"})
    assert str(info.value) == "StageResult.files: expected a list, got str"
    with pytest.raises(TypeError) as info:
        from_dict(StageResult, {"stage": "s", "params": []})
    assert str(info.value) == "StageResult.params: expected an object, got list"
    with pytest.raises(TypeError) as info:
        from_dict(StageResult, {"stage": "s", "pictures": [{"path": "p", "tag": 3}]})
    assert str(info.value).startswith("StageResult.pictures[0].tag: 3 fits none of ")
    assert "expected str, got int 3" in str(info.value)
    with pytest.raises(TypeError, match=r"^StageResult.params.k: expected str, got int 1$"):
        from_dict(StageResult, {"stage": "s", "params": {"k": 1}})


@dataclass
class Doc:
    x: float
    items: list = field(default_factory=list)
    any_: Any = None
    pair: tuple[int, ...] = ()
    opt: int | None = None
    named: dict = field(default_factory=dict)


def test_from_dict_conversions():
    """int -> float; bare list/dict/Any pass; tuples from lists; None for optionals; bools stay."""
    d = from_dict(
        Doc, {"x": 2, "items": [1, "a"], "any_": {"k": 1}, "pair": [1, 2], "opt": None, "named": {"a": 1}}
    )
    assert d == Doc(x=2.0, items=[1, "a"], any_={"k": 1}, pair=[1, 2], opt=None, named={"a": 1})
    assert isinstance(d.x, float)
    with pytest.raises(TypeError):
        from_dict(Doc, {"x": True})
    assert from_dict(Doc, {"x": 1.5, "opt": 3}).opt == 3
    with pytest.raises(ValueError, match=r"missing key\(s\) \['x'\]"):
        from_dict(Doc, {})


def test_stage_defaults():
    """Stage class defaults: no title, no config, order 100, opted out of the default list, reads no
    records, no template; the two checks are no-ops."""

    class S(Stage):
        name = "s"

        def run(self, ctx, settings):
            return StageResult("s")

    s = S()
    assert (S.title, S.config, S.order, S.default, S.reads_records, S.template) == (
        "",
        None,
        100,
        False,
        False,
        None,
    )
    assert s.check_settings(None, RANDOM_INPUT) is None and s.check_model(None, None) is None


@pytest.mark.parametrize(("old", "new"), [("check", "check_settings"), ("validate", "check_model")])
def test_a_stage_with_a_renamed_hook_fails_at_import(old, new):
    """A stage written for the old contract names is refused, naming the new hook (never silently
    skipped: its rules would not run)."""
    with pytest.raises(TypeError) as info:
        type("Old", (Stage,), {"name": "old", old: lambda self, a, b: None, "run": lambda self, c, s: None})
    assert str(info.value).startswith(
        f"Stage Old defines {old}(), which vizpipe no longer calls; rename it {new}("
    )


# ------------------------------------------------------------------ manifest


def test_manifest_status_and_stage_lookup(tmp_path):
    """status: interrupted > failed > running > ok; stage() finds setup, stages, report; KeyError else."""
    m = mf.Manifest(tmp_path, {"a": 1}, ["x", "y"], titles={"x": "X"})
    assert [s.title for s in m.stages] == ["X", ""]
    assert m.status == "ok"
    assert m.stage("setup") is m.setup and m.stage("y") is m.stages[1] and m.stage("report") is m.report
    with pytest.raises(KeyError):
        m.stage("nope")
    m.report.status = "running"
    assert m.status == "running"
    m.report.status = "failed"  # a failed report does not fail the run
    assert m.status == "ok"
    m.report.status = "ok"
    assert m.status == "ok"
    m.stages[0].status = "failed"
    assert m.status == "failed"
    m.setup.status = "running"
    assert m.status == "failed"
    m.report.status = "interrupted"
    assert m.status == "interrupted"


def test_manifest_write_and_load(tmp_path):
    """write: atomic JSON with the data, status, seconds and the records; load reads it back."""
    m = mf.Manifest(tmp_path, {"a": 1, "p": tmp_path}, ["x"])
    path = m.write()
    assert path == tmp_path / mf.MANIFEST
    assert path.read_text().endswith("}\n")
    doc = mf.load(tmp_path)
    assert doc["a"] == 1 and doc["p"] == str(tmp_path)
    assert doc["status"] == "ok" and isinstance(doc["seconds"], float)
    assert doc["setup"]["name"] == "setup" and doc["report"]["name"] == "report"
    assert doc["stages"] == [
        {
            "name": "x",
            "status": "pending",
            "seconds": None,
            "error": None,
            "error_type": None,
            "artifacts": [],
            "title": "",
            "result": None,
        }
    ]
    # .vizpipe: the disk reserve the manifest holds back for its own write
    assert sorted(p.name for p in tmp_path.iterdir()) == [".vizpipe", mf.MANIFEST]


def test_manifest_snapshot_and_collect(tmp_path):
    """snapshot skips the manifest, run.log, .hydra/ and dot files; collect takes new/changed files once."""
    m = mf.Manifest(tmp_path, {}, ["a", "b"])
    (tmp_path / "run.log").write_text("x")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("x")
    (tmp_path / ".hidden").write_text("x")
    m.write()
    assert m.snapshot() == {}
    before = m.snapshot()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("abc")
    m.collect(m.stages[0], before)
    art = m.stages[0].artifacts
    assert [(x.path, x.bytes) for x in art] == [("a/f.txt", 3)]
    assert art[0].sha256 == __import__("hashlib").sha256(b"abc").hexdigest()
    before = m.snapshot()
    (tmp_path / "a" / "g.txt").write_text("z")
    m.collect(m.stages[1], {})  # everything looks new, but a/f.txt is stage a's
    assert [x.path for x in m.stages[1].artifacts] == ["a/g.txt"]


def test_versions_and_command_line():
    """versions names python and the libraries; command_line starts with the interpreter's name."""
    v = mf.versions()
    assert v["python"] and v["torch"]
    assert set(mf.PACKAGES) <= set(v)
    assert "vizpipe" in v
    import sys

    assert mf.command_line()[0] == __import__("pathlib").Path(sys.executable).name
    assert mf.command_line()[1:] == sys.argv


def test_git_commit_outside_checkout(tmp_path):
    """Outside a git checkout: None."""
    assert mf.git_commit(tmp_path) is None


# ------------------------------------------------------------------ hooks


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.r = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(self.r(self.a(x)))


def test_first_tensor():
    """The first tensor in nested tuples, lists and dicts; None when there is none."""
    t = torch.zeros(1)
    assert hooks.first_tensor(t) is t
    assert hooks.first_tensor((None, [1, {"k": t}])) is t
    assert hooks.first_tensor({"a": None, "b": (t,)}) is t
    assert hooks.first_tensor([1, "x"]) is None
    assert hooks.first_tensor({}) is None


def test_capture_copies_before_inplace_ops():
    """copy=True hands a float32 CPU copy taken inside the hook (a later in-place ReLU cannot change it)."""
    m = Two().eval()
    got = {}
    x = -torch.ones(1, 1, 2, 2)
    with torch.no_grad():
        m.a.weight.fill_(1.0)
        m.a.bias.zero_()
    with hooks.capture(m, ["a"], lambda n, t, kind: got.setdefault(n, t)):
        m(x)
    assert float(got["a"].min()) == -1.0
    assert hooks.hook_count(m) == 0
    got.clear()
    with hooks.capture(m, ["a"], lambda n, t, kind: got.setdefault(n, t), copy=False), torch.no_grad():
        m(x)
    assert float(got["a"].min()) == 0.0  # the live tensor, changed by the in-place ReLU


def test_capture_modes_and_calls():
    """what=input/both, every_call, the root module by '', bad 'what' refused; hooks removed after errors."""
    m = Two().eval()
    calls = []
    with hooks.capture(m, ["a", ""], lambda n, t, kind: calls.append((n, kind)), what="both"):
        m(torch.zeros(1, 1, 2, 2))
        m(torch.zeros(1, 1, 2, 2))
    assert calls == [("a", "input"), ("a", "output"), ("", "input"), ("", "output")]
    calls.clear()

    def shapes(n: str, t: torch.Tensor, kind: str) -> None:
        calls.append((tuple(t.shape), kind))

    with hooks.capture(m, ["a"], shapes, what="input", every_call=True):
        m(torch.zeros(1, 1, 2, 2))
        m(torch.zeros(1, 1, 3, 3))
    assert calls == [((1, 1, 2, 2), "input"), ((1, 1, 3, 3), "input")]  # the kind, also for one kind
    calls.clear()
    with hooks.capture(m, ["a"], lambda n, t, kind: calls.append(kind)):
        m(torch.zeros(1, 1, 2, 2))
    assert calls == ["output"]
    with pytest.raises(ValueError) as info, hooks.capture(m, ["a"], print, what="grad"):
        pass
    assert str(info.value) == "capture: what must be output, input or both, got 'grad'"
    with pytest.raises(RuntimeError), hooks.capture(m, ["a", "bn"], print):
        raise RuntimeError
    assert hooks.hook_count(m) == 0


def test_preserved_restores_everything():
    """preserved puts back modes, requires_grad, grads, buffers, hooks and swapped children."""
    m = Two().eval()
    with torch.no_grad():  # positive outputs: a train-mode pass moves the running mean
        m.a.weight.fill_(1.0)
        m.a.bias.fill_(0.5)
    a = m.a
    m.a.weight.grad = torch.ones_like(m.a.weight)
    mean = m.bn.running_mean.clone()
    with hooks.preserved(m) as snap:
        m.train()
        m.a.weight.requires_grad_(False)
        m.a.weight.grad = None
        m(torch.ones(2, 1, 3, 3))
        m.a.register_forward_hook(lambda *a: None)
        m.bn.register_forward_pre_hook(lambda *a: None)
        m.a = nn.Identity()
    assert isinstance(snap, hooks._Snapshot)
    assert not m.training and not m.bn.training
    assert m.a is a and m.a.weight.requires_grad
    assert torch.equal(m.a.weight.grad, torch.ones_like(m.a.weight))
    assert torch.equal(m.bn.running_mean, mean)
    assert hooks.hook_count(m) == 0
    with hooks.preserved(m, buffers=False) as snap:
        m.train()
        m(torch.ones(2, 1, 3, 3))
        m.a.register_forward_hook(lambda *a: None)
        m.a.register_forward_hook(lambda *a: None)
    assert snap.buffers == []
    assert not torch.equal(m.bn.running_mean, mean)
    assert hooks.hook_count(m) == 0
    assert snap.restore() == 0


def test_versions_change_in_place():
    """versions: one (id, version) per parameter and buffer; an in-place change bumps it."""
    m = Two()
    v = hooks.versions(m)
    assert len(v) == 2 + 2 + 3
    with torch.no_grad():
        m.a.weight.add_(1)
    assert hooks.versions(m) != v
    assert hooks.hook_count(m) == 0
    m.a.register_forward_hook(lambda *a: None)
    m.register_forward_pre_hook(lambda *a: None)
    assert hooks.hook_count(m) == 2


# ------------------------------------------------------------------ context


def ctx_of(model, tmp_path, shape=(2, 3, 4, 4), **kw):
    ctx = hand_context(model, tmp_path / "run", shape)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


class Lin(nn.Module):
    def __init__(self, k, last=None):
        super().__init__()
        self.f = nn.Flatten()
        self.l = nn.Linear(48, k)
        self.last = last

    def forward(self, x):
        y = self.l(self.f(x))
        return self.last(y) if self.last is not None else y


def test_context_dirs_claims_and_warnings(tmp_path):
    """stage_dir creates the folder; a second claim of one path raises; warn keeps the message."""
    ctx = ctx_of(Lin(3), tmp_path)
    assert ctx.stage_dir("x") == tmp_path / "run" / "x" and (tmp_path / "run" / "x").is_dir()
    p = ctx.claim("y/z.png")
    assert p == tmp_path / "run" / "y" / "z.png" and p.parent.is_dir()
    with pytest.raises(RuntimeError) as info:
        ctx.claim("y/z.png")
    assert str(info.value) == "Two outputs of this run would be written to y/z.png; refusing to overwrite it"
    ctx.warn("careful")
    assert ctx.warnings == ["careful"]


def test_context_probabilities_and_top_k(tmp_path):
    """logits -> softmax (sigmoid for one output); declared/auto probabilities pass; top_k exact."""
    ctx = ctx_of(Lin(3), tmp_path)
    assert ctx.num_classes == 3
    assert not ctx.outputs_are_probabilities
    out = torch.tensor([[0.0, 1.0, 2.0]])
    assert torch.allclose(ctx.probabilities(out), torch.softmax(out, 1))
    one = ctx_of(Lin(1), tmp_path / "b")
    assert torch.allclose(one.probabilities(torch.tensor([[0.5]])), torch.sigmoid(torch.tensor([[0.5]])))
    sig = ctx_of(Lin(2, nn.Sigmoid()), tmp_path / "c")
    assert sig.outputs_are_probabilities
    assert torch.equal(sig.probabilities(torch.tensor([[0.2, 0.9]])), torch.tensor([[0.2, 0.9]]))
    assert ctx_of(Lin(2), tmp_path / "d", output_kind="probabilities").outputs_are_probabilities
    assert not ctx_of(Lin(2, nn.Sigmoid()), tmp_path / "e", output_kind="logits").outputs_are_probabilities
    ctx.categories = ["a", "b", "c"]
    top = ctx.top_k(2, outputs=torch.tensor([[0.0, 2.0, 1.0], [math.nan, 0.0, 0.0]]))
    assert [[d["class"] for d in row] for row in top] == [[1, 2], [1, 2]]  # NaN last, ties: lowest first
    assert [d["prob"] for d in top[1]] == [None, None]  # an invalid output has no probability
    assert (
        top[1][0]["logit"] == 0.0
        and ctx.top_k(3, outputs=torch.tensor([[math.nan, 0.0]]))[0][1]["logit"] is None
    )
    assert top[0][0]["name"] == "b" and top[0][0]["logit"] == 2.0
    assert top[0][0]["prob"] == pytest.approx(float(torch.softmax(torch.tensor([0.0, 2.0, 1.0]), 0)[1]))
    assert len(ctx.top_k(10)[0]) == 3
    assert len(ctx.top_k()) == 2


def test_context_class_name_bounds(tmp_path):
    """class_name: the name for 0..K-1, None outside or without names."""
    ctx = ctx_of(Lin(2), tmp_path, categories=["a", "b"])
    assert ctx.class_name(0) == "a" and ctx.class_name(1) == "b"
    assert ctx.class_name(2) is None and ctx.class_name(-1) is None
    ctx.categories = None
    assert ctx.class_name(0) is None


def test_context_probe_cached_and_refresh(tmp_path):
    """probe is computed once (model left as found) until refresh()."""
    ctx = ctx_of(Lin(2), tmp_path)
    p = ctx.probe()
    assert ctx.probe() is p
    assert hooks.hook_count(ctx.model) == 0 and not ctx.model.training
    ctx.refresh()
    assert ctx.probe() is not p


# ------------------------------------------------------------------ events


def test_backend_value_and_packages():
    """backend_value: an enum's value or the string; each backend's package."""
    assert tensorboard_io.backend_value(tensorboard_io.TBBackend.torch) == "torch"
    assert tensorboard_io.backend_value("tensorboardX") == "tensorboardX"
    assert tensorboard_io.PACKAGES == {"tensorboardX": "tensorboardX", "torch": "tensorboard"}
    assert tensorboard_io.HIST_BINS == 64


def test_histogram_raw_exact():
    """Buckets between min and max, exact sums, an empty leading bucket; non-finite values dropped."""
    h = tensorboard_io.histogram_raw(torch.tensor([0.0, 1.0, 2.0, 3.0]), bins=3)
    assert h["min"] == 0.0 and h["max"] == 3.0 and h["num"] == 4
    assert h["sum"] == 6.0 and h["sum_squares"] == pytest.approx(14.0)
    assert h["bucket_limits"] == [0.0, 1.0, 2.0, 3.0]
    assert h["bucket_counts"] == [0.0, 1.0, 1.0, 2.0]
    h = tensorboard_io.histogram_raw(torch.tensor([1.0, math.nan, math.inf, 3.0]), bins=2)
    assert (h["min"], h["max"], h["num"], h["sum"]) == (1.0, 3.0, 2, 4.0)
    assert tensorboard_io.histogram_raw(torch.tensor([])) is None
    assert tensorboard_io.histogram_raw(torch.tensor([math.nan])) is None
    h = tensorboard_io.histogram_raw(torch.tensor([2.0, 2.0]))
    assert h["bucket_counts"] == [0.0, 2.0]
    assert h["bucket_limits"] == pytest.approx([2.0 - 2e-3, 2.0 + 2e-3])
    h = tensorboard_io.histogram_raw(torch.zeros(3))
    assert h["bucket_limits"] == [-1e-6, 1e-6]
    h = tensorboard_io.histogram_raw([1, 2], bins=4)
    assert h["num"] == 2 and len(h["bucket_counts"]) == 5 and len(h["bucket_limits"]) == 5


def test_open_writer_backends(tmp_path):
    """open_writer: both backends write an event file whose name ends with the suffix."""
    for backend in ("tensorboardX", "torch"):
        w = tensorboard_io.open_writer(backend, tmp_path / backend, suffix=".front")
        w.add_scalar("a", 1.0, 0)
        w.close()
        names = [p.name for p in (tmp_path / backend).iterdir()]
        assert len(names) == 1 and names[0].endswith(".front") and "tfevents" in names[0]


def test_preserved_removes_kwargs_and_always_called_hooks():
    """Hooks registered with with_kwargs/always_call are removed from their extra tables too."""
    m = Two()
    with hooks.preserved(m) as snap:
        m.a.register_forward_hook(lambda mod, args, kwargs, out: None, with_kwargs=True, always_call=True)
        m.a.register_forward_pre_hook(lambda mod, args, kwargs: None, with_kwargs=True)
    assert hooks.hook_count(m) == 0
    assert len(m.a._forward_hooks_with_kwargs) == 0
    assert len(m.a._forward_hooks_always_called) == 0
    assert len(m.a._forward_pre_hooks_with_kwargs) == 0
    assert hooks.HOOK_DICTS == (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
    )
    assert snap.restore() == 0
    with hooks.preserved(m) as snap:
        m.a.register_forward_hook(lambda *a: None)
        m.register_full_backward_hook(lambda *a: None)
        assert snap.restore() == 2


def test_context_blocks_from_config(tmp_path):
    """blocks(): model.blocks as configured, kept once found."""
    ctx = ctx_of(Lin(2), tmp_path, blocks_config="l")
    assert ctx.blocks() == ["l"]
    assert ctx.blocks() is ctx.blocks()


def test_cache_input_tensors_include_first_batch(tmp_path):
    """Once the first batch is read, its tensor is among the tensors the cache watches."""
    from vizpipe.pipeline.cache import _input_tensors

    ctx = ctx_of(Lin(2), tmp_path)
    first = ctx.inputs.first().tensor
    assert any(t is first for t in _input_tensors(ctx.inputs))


def test_git_commit_in_checkout():
    """In the project's checkout: the commit's 40 hex digits and whether the tree is dirty."""
    import subprocess

    from vizpipe.pipeline.runner import PROJECT_ROOT

    got = mf.git_commit(PROJECT_ROOT)
    if not (PROJECT_ROOT / ".git").exists() and got is None:
        pytest.skip("not a git checkout")
    want = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout
    assert got is not None and got["commit"] == want.strip() and len(got["commit"]) == 40
    assert isinstance(got["dirty"], bool)
