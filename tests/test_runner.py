"""Runner tests: order, subsets, failures, interrupts and the manifest.

run_pipeline and its helpers in-process: exact messages, records, on_error modes, the report step."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import helper_stages
import pytest
from omegaconf import OmegaConf
from vizpipe.pipeline import registry
from vizpipe.pipeline import runner as r
from vizpipe.pipeline.errors import ConfigError, VizpipeError
from vizpipe.pipeline.manifest import StageRecord
from vizpipe.pipeline.runner import run_pipeline
from vizpipe.pipeline.stage import Stage, StageResult

# ---- Runner tests: order, subsets, failures, interrupts and the manifest.
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


# ---- run_pipeline and its helpers in-process: exact messages, records, on_error modes, the
# report step.
RAN: list[str] = []


class FrontOk(Stage):
    """Writes one file."""

    name = "front_ok"
    title = "Front OK"

    def run(self, ctx, settings):
        RAN.append(self.name)
        (ctx.stage_dir(self.name) / "a.txt").write_text("abc")
        return StageResult(self.name, summary="fine")


class FrontBadModel(Stage):
    """Refuses the model in check_model."""

    name = "front_badval"

    def check_model(self, ctx, settings):
        raise ConfigError("front_badval cannot run on this model\nsecond line")

    def run(self, ctx, settings):
        RAN.append(self.name)
        return StageResult(self.name)


class FrontWrongResult(Stage):
    """Returns something that is not a StageResult."""

    name = "front_wrong"

    def run(self, ctx, settings):
        RAN.append(self.name)
        return {"not": "a result"}


class FrontBoom(Stage):
    """Fails with a plain exception."""

    name = "front_boom"

    def run(self, ctx, settings):
        RAN.append(self.name)
        raise ValueError("kaput")


class FrontWarn(Stage):
    """Warns in check_model and in run."""

    name = "front_warn"

    def check_model(self, ctx, settings):
        ctx.warn("front check_model warning")

    def run(self, ctx, settings):
        RAN.append(self.name)
        ctx.warn("front run warning")
        return StageResult(self.name, summary="warned", warnings=["front listed warning"])


class FrontInterruptCheck(Stage):
    """Ctrl-C while checking the model."""

    name = "front_intval"

    def check_model(self, ctx, settings):
        raise KeyboardInterrupt

    def run(self, ctx, settings):
        RAN.append(self.name)
        return StageResult(self.name)


STAGES = (FrontOk, FrontBadModel, FrontWrongResult, FrontBoom, FrontWarn, FrontInterruptCheck)


@pytest.fixture
def extra():
    RAN.clear()
    for cls in STAGES:
        registry.register(cls)
    yield RAN
    for cls in STAGES:
        registry.unregister(cls.name)


# ------------------------------------------------------------------ check_stage_list, check_required_keys


def test_check_stage_list_messages(compose):
    """Stage list rules: a string, empty, unknown, duplicates; each message exact."""
    known = ", ".join(registry.stage_classes())
    with pytest.raises(ConfigError) as info:
        r.check_stage_list(OmegaConf.create({"stages": "summary"}))
    assert str(info.value) == "stages must be a list, got the string 'summary'; write 'stages=[summary]'"
    with pytest.raises(ConfigError) as info:
        r.check_stage_list(OmegaConf.create({"stages": []}))
    assert str(info.value) == f"stages is empty; choose from: {known}"
    with pytest.raises(ConfigError) as info:
        r.check_stage_list(OmegaConf.create({"stages": ["summary", "nope"]}))
    assert str(info.value).startswith("Unknown stage 'nope'")
    assert str(info.value).endswith(". Set e.g. 'stages=[summary,cam]'")
    with pytest.raises(ConfigError) as info:
        r.check_stage_list(OmegaConf.create({"stages": ["summary", "cam", "summary", "cam", "kernels"]}))
    assert str(info.value) == (
        "stages lists cam, summary more than once: ['summary', 'cam', 'summary', 'cam', 'kernels']"
    )
    assert r.check_stage_list(OmegaConf.create({"stages": ["cam", "summary"]})) == ["cam", "summary"]


def test_a_stage_reading_records_must_come_after_the_others():
    """TensorBoard logs the records of the stages before it: a list putting one after it is refused
    with the list that works (the default list is already in that order)."""
    with pytest.raises(ConfigError) as info:
        r.check_stage_list(OmegaConf.create({"stages": ["summary", "tensorboard", "cam", "kernels"]}))
    assert str(info.value) == (
        "stages lists cam, kernels after tensorboard, which reads the records of the stages before it; "
        "write 'stages=[summary,cam,kernels,tensorboard]'"
    )
    assert (
        r.check_stage_list(OmegaConf.create({"stages": ["cam", "summary", "tensorboard"]}))[-1]
        == "tensorboard"
    )
    assert r.check_stage_list(OmegaConf.create({"stages": ["tensorboard"]})) == ["tensorboard"]
    assert registry.default_stages()[-1] == "tensorboard"


def test_check_required_keys():
    """The first missing key (sorted) is named; input.path gets the file/folder/glob hint."""
    cfg = OmegaConf.create({"stages": ["summary"], "input": {"path": "???"}, "a": "???"})
    with pytest.raises(ConfigError) as info:
        r.check_required_keys(cfg)
    assert str(info.value) == "a is required for this choice; set a=..."
    cfg = OmegaConf.create({"stages": ["summary"], "input": {"path": "???"}, "z": "???"})
    with pytest.raises(ConfigError) as info:
        r.check_required_keys(cfg)
    assert str(info.value) == (
        "input.path is required for this choice (an image file, a folder or a glob); set input.path=..."
    )


def test_check_config_runs_input_and_stage_checks(compose):
    """check_config returns the stage names; an input rule or a stage's check fails with ConfigError."""
    assert r.check_config(compose([*TINY, "stages=[summary]"])) == ["summary"]
    with pytest.raises(ConfigError):
        r.check_config(compose(["input=tensor", "stages=[summary]"]))


# ------------------------------------------------------------------ ensure_typed


def test_ensure_typed(compose):
    """A typed config is returned as is; an untyped one is merged onto the schema; bad keys fail."""
    cfg = compose(TINY)
    assert r.ensure_typed(cfg) is cfg
    plain = OmegaConf.create(OmegaConf.to_container(cfg))
    typed = r.ensure_typed(plain)
    assert OmegaConf.get_type(typed).__name__ == "Config"
    assert typed.model.name == cfg.model.name
    plain.bogus_key = 1
    with pytest.raises(ConfigError) as info:
        r.ensure_typed(plain)
    assert str(info.value).startswith("Unknown config key 'bogus_key'")  # translated: the closest keys
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ small helpers


def test_stale(tmp_path):
    """Files of another run, sorted; the allowed names (Hydra's own .hydra/ and run.log for the
    runner) and vizpipe's .vizpipe/ do not count; no folder: []."""
    from vizpipe.pipeline.ownership import stale_files

    assert stale_files(tmp_path / "none", r.HYDRA_FILES) == []
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".vizpipe").mkdir()
    (tmp_path / "run.log").write_text("")
    assert stale_files(tmp_path, r.HYDRA_FILES) == []
    assert stale_files(tmp_path) == [".hydra", "run.log"]
    (tmp_path / "b").write_text("")
    (tmp_path / "a").mkdir()
    assert stale_files(tmp_path, r.HYDRA_FILES) == ["a", "b"]
    (tmp_path / "f").write_text("")
    assert stale_files(tmp_path / "f") == []


def test_fail_records_one_line():
    """_fail: a VizpipeError's first line as is; others prefixed with their type; empty: the type."""
    rec = StageRecord("x")
    assert r._fail(rec, VizpipeError("one\ntwo")) == "one"
    assert (rec.status, rec.error, rec.error_type) == ("failed", "one", "VizpipeError")
    rec = StageRecord("y")
    assert r._fail(rec, ValueError("  bad\nmore")) == "ValueError: bad"
    assert (rec.error, rec.error_type) == ("ValueError: bad", "ValueError")
    assert r._fail(StageRecord("z"), RuntimeError("")) == "RuntimeError: RuntimeError"
    assert r._fail(StageRecord("z"), ConfigError(" ")) == "ConfigError"


def test_run_result_ok(tmp_path):
    """ok only for status 'ok'."""
    assert r.RunResult(tmp_path, "ok", tmp_path / "m").ok
    assert not r.RunResult(tmp_path, "failed", tmp_path / "m").ok
    res = r.RunResult(tmp_path, "interrupted", tmp_path / "m")
    assert not res.ok and res.report_path is None and res.error is None


def test_provenance(tmp_path):
    """sha256 and size of every input file and of the checkpoint (None without one)."""
    f = tmp_path / "img.png"
    f.write_bytes(b"12345")
    ck = tmp_path / "w.pt"
    ck.write_bytes(b"xy")
    ctx = SimpleNamespace(inputs=SimpleNamespace(files=[f]))
    got = r._provenance(ctx, OmegaConf.create({"model": {"checkpoint": str(ck)}}))
    assert got == {
        "inputs": [{"path": str(f), "sha256": hashlib.sha256(b"12345").hexdigest(), "bytes": 5}],
        "checkpoint": {"path": str(ck), "sha256": hashlib.sha256(b"xy").hexdigest(), "bytes": 2},
    }
    got = r._provenance(
        SimpleNamespace(inputs=SimpleNamespace(files=[])), OmegaConf.create({"model": {"checkpoint": None}})
    )
    assert got == {"inputs": [], "checkpoint": None}
    skipped = [SimpleNamespace(path="a.txt", why="not an image Pillow can open")]
    got = r._provenance(
        SimpleNamespace(inputs=SimpleNamespace(files=[], skipped=skipped)),
        OmegaConf.create({"model": {"checkpoint": None}}),
    )
    assert got["skipped"] == [{"path": "a.txt", "why": "not an image Pillow can open"}]


# ------------------------------------------------------------------ run_pipeline


def test_refuses_folder_of_another_run(compose, tmp_path, extra):
    """A folder with another run's files: failed, exact message naming up to 4 files, nothing written."""
    for name in ("e", "d", "c", "b", "a"):
        (tmp_path / name).write_text("")
    result = r.run_pipeline(compose([*TINY, "stages=[front_ok]"]), tmp_path)
    assert result.status == "failed"
    assert result.error == (
        f"Run folder {tmp_path} already holds another run's files (a, b, c, d); vizpipe never mixes "
        "two runs in one folder: choose a new one (hydra.run.dir=...) or delete it"
    )
    assert result.manifest_path == tmp_path / "manifest.json"
    assert result.report_path is None
    assert not (tmp_path / "manifest.json").exists()
    assert extra == []


def test_ok_run_manifest_fields(compose, tmp_path, extra):
    """A good run: result fields, manifest facts (overrides, model, input, titles, result record)."""
    out = tmp_path / "run"
    result = r.run_pipeline(compose([*TINY, "stages=[front_ok]"]), out, overrides=["a=1"])
    assert (result.status, result.error, result.report_path) == ("ok", None, None)
    assert result.output_dir == out and result.manifest_path == out / "manifest.json"
    m = manifest(out)
    assert m["overrides"] == ["a=1"]
    assert m["model"] == "seed_net"
    assert m["input"] == {"kind": "random", "path": None}
    assert m["run_dir"] == str(out.resolve())
    assert m["device"] == "cpu"
    assert m["provenance"] == {"inputs": [], "checkpoint": None}
    assert m["config"]["stages"] == ["front_ok"]
    assert m["setup"]["status"] == "ok"
    assert m["report"]["status"] == "skipped"
    (st,) = m["stages"]
    assert (st["name"], st["title"], st["status"], st["error"]) == ("front_ok", "Front OK", "ok", None)
    assert st["result"]["summary"] == "fine"
    assert [a["path"] for a in st["artifacts"]] == ["front_ok/a.txt"]
    assert isinstance(st["seconds"], float)
    assert extra == ["front_ok"]


def test_overrides_default_empty(compose, tmp_path, extra):
    """Without overrides the manifest lists none."""
    r.run_pipeline(compose([*TINY, "stages=[front_ok]"]), tmp_path / "r")
    assert manifest(tmp_path / "r")["overrides"] == []


def test_model_check_failure_stops_by_default(compose, tmp_path, extra):
    """A stage refusing in check_model (on_error=stop): setup fails, every stage skipped, none runs."""
    result = r.run_pipeline(compose([*TINY, "stages=[front_ok,front_badval]"]), tmp_path)
    assert result.status == "failed"
    assert result.error == "front_badval cannot run on this model"
    m = manifest(tmp_path)
    assert m["setup"]["status"] == "failed"
    assert m["setup"]["error_type"] == "ConfigError"
    assert [s["status"] for s in m["stages"]] == ["skipped", "skipped"]
    assert extra == []


def test_model_check_failure_with_continue(compose, tmp_path, extra):
    """on_error=continue: the refusing stage is failed, the others still run; error names the stage."""
    cfg = compose([*TINY, "stages=[front_badval,front_ok]", "on_error=continue"])
    result = r.run_pipeline(cfg, tmp_path)
    assert result.status == "failed"
    assert result.error == "stage front_badval failed: front_badval cannot run on this model"
    m = manifest(tmp_path)
    assert m["setup"]["status"] == "ok"
    assert [(s["status"], s["error"]) for s in m["stages"]] == [
        ("failed", "front_badval cannot run on this model"),
        ("ok", None),
    ]
    assert extra == ["front_ok"]


def test_wrong_result_type_is_a_failure(compose, tmp_path, extra):
    """A stage returning no StageResult fails with a TypeError naming what it returned."""
    result = r.run_pipeline(compose([*TINY, "stages=[front_wrong,front_ok]"]), tmp_path)
    assert (
        result.error
        == "stage front_wrong failed: TypeError: stage front_wrong returned dict, not a StageResult"
    )
    m = manifest(tmp_path)
    assert [s["status"] for s in m["stages"]] == ["failed", "skipped"]
    assert m["stages"][0]["error_type"] == "TypeError"
    assert m["stages"][0]["result"] is None
    assert extra == ["front_wrong"]


def test_stop_skips_every_later_stage(compose, tmp_path, extra):
    """on_error=stop: after a failure every later stage (not just the next) is recorded skipped."""
    result = r.run_pipeline(compose([*TINY, "stages=[front_boom,front_wrong,front_ok]"]), tmp_path)
    assert result.error == "stage front_boom failed: ValueError: kaput"
    assert [s["status"] for s in manifest(tmp_path)["stages"]] == ["failed", "skipped", "skipped"]
    assert extra == ["front_boom"]


def test_continue_names_every_failed_stage(compose, tmp_path, extra):
    """on_error=continue with two failures: every stage runs, and the error names both, in order."""
    cfg = compose([*TINY, "stages=[front_boom,front_wrong,front_ok]", "on_error=continue"])
    result = r.run_pipeline(cfg, tmp_path)
    assert result.error == (
        "stage front_boom failed: ValueError: kaput; "
        "stage front_wrong failed: TypeError: stage front_wrong returned dict, not a StageResult"
    )
    assert [s["status"] for s in manifest(tmp_path)["stages"]] == ["failed", "failed", "ok"]
    assert extra == ["front_boom", "front_wrong", "front_ok"]


def test_config_error_records_listed_stages(compose, tmp_path, extra):
    """A config error before setup: stages of the list recorded as skipped, setup failed with it."""
    cfg = compose([*TINY, "stages=[front_ok,front_ok]"])
    result = r.run_pipeline(cfg, tmp_path)
    assert result.error == "stages lists front_ok more than once: ['front_ok', 'front_ok']"
    m = manifest(tmp_path)
    assert [(s["name"], s["status"]) for s in m["stages"]] == [
        ("front_ok", "skipped"),
        ("front_ok", "skipped"),
    ]
    assert m["setup"]["error"] == result.error


def test_report_written_and_report_failure(compose, tmp_path, extra, monkeypatch):
    """report.enabled: its path is returned and recorded ok; a failing report is recorded, not fatal."""
    cfg = compose([*TINY[:-1], "report.enabled=true", "stages=[front_ok]"])
    result = r.run_pipeline(cfg, tmp_path / "a")
    assert result.ok and result.report_path is not None and result.report_path.is_file()
    assert manifest(tmp_path / "a")["report"]["status"] == "ok"
    import vizpipe.pipeline.report as report

    def broken(out, settings):
        raise OSError("disk full")

    monkeypatch.setattr(report, "write_run_report", broken)
    result = r.run_pipeline(cfg, tmp_path / "b")
    assert result.status == "ok" and result.report_path is None
    rep = manifest(tmp_path / "b")["report"]
    assert (rep["status"], rep["error"]) == ("failed", "OSError: disk full")


def test_warnings_reach_the_manifest(compose, tmp_path, extra):
    """Warnings from check_model and run are in the manifest, in order, and in the stage's record
    (with the one it listed itself); a stage that warns nothing has none."""
    result = r.run_pipeline(compose([*TINY, "stages=[front_warn,front_ok]"]), tmp_path)
    assert result.ok
    m = manifest(tmp_path)
    warned = ["front check_model warning", "front run warning", "front listed warning"]
    assert m["warnings"] == warned
    assert [s["result"]["warnings"] for s in m["stages"]] == [warned, []]
    assert isinstance(m["setup"]["seconds"], float)
    assert m["seed"] == 0 and m["weights"] is None
    assert m["vizpipe"] == m["versions"]["vizpipe"]
    assert m["git"] is None or len(m["git"]["commit"]) == 40


def test_interrupt_during_setup(compose, tmp_path, extra):
    """Ctrl-C in check_model: setup recorded as interrupted, stages skipped, the interrupt re-raised."""
    with pytest.raises(KeyboardInterrupt):
        r.run_pipeline(compose([*TINY, "stages=[front_intval,front_ok]"]), tmp_path)
    m = manifest(tmp_path)
    assert m["setup"]["status"] == "interrupted"
    assert m["status"] == "interrupted"
    assert [s["status"] for s in m["stages"]] == ["skipped", "skipped"]
    assert extra == []


def test_console_lines(compose, tmp_path, extra, caplog):
    """One INFO line per stage that ran ok (name, seconds, folder, summary); one ERROR line per failure."""
    import logging
    import re

    caplog.set_level(logging.INFO, logger="vizpipe.pipeline.runner")
    r.run_pipeline(compose([*TINY, "stages=[front_ok,front_boom]", "on_error=continue"]), tmp_path)
    lines = [
        (rec.levelname, rec.getMessage()) for rec in caplog.records if rec.name == "vizpipe.pipeline.runner"
    ]
    assert any(
        lvl == "INFO" and re.fullmatch(r"front_ok    ok +\d+\.\d\d s  front_ok/ \(1 files\) +fine", msg)
        for lvl, msg in lines
    ), lines
    assert any(
        lvl == "ERROR" and re.fullmatch(r"front_boom  failed \d+\.\d\d s: ValueError: kaput", msg)
        for lvl, msg in lines
    ), lines


def test_verbose_and_release(compose, tmp_path, extra):
    """verbose=true turns console details on; the build goes back to the cache after the run."""
    from vizpipe.pipeline import logs
    from vizpipe.pipeline.cache import get_cache

    get_cache().clear()
    try:
        r.run_pipeline(compose([*TINY, "stages=[front_ok]", "verbose=true"]), tmp_path / "a")
        assert logs._verbose is True
        entries = list(get_cache()._entries.values())
        assert len(entries) == 1 and entries[0].lent is False
        r.run_pipeline(compose([*TINY, "stages=[front_ok]"]), tmp_path / "b")
        assert logs._verbose is False
    finally:
        logs.set_verbose(False)
        get_cache().clear()


def test_setup_failure_releases_and_skips(compose, tmp_path, extra, monkeypatch):
    """An error while building: setup failed with the type-prefixed message, stages skipped."""
    import vizpipe.pipeline.factory as b

    def broken(cfg, out):
        raise RuntimeError("no device today")

    monkeypatch.setattr(b, "build_context", broken)
    result = r.run_pipeline(compose([*TINY, "stages=[front_ok]"]), tmp_path)
    assert result.error == "RuntimeError: no device today"
    m = manifest(tmp_path)
    assert (m["setup"]["status"], m["setup"]["error_type"]) == ("failed", "RuntimeError")
    assert [s["status"] for s in m["stages"]] == ["skipped"]
    assert m["device"] is None and m["warnings"] == []
