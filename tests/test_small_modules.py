"""Small modules pinned exactly: names, files, logs, errors, cli's exit paths, stage discovery."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from vizpipe.pipeline import cli, files, logs, names, registry
from vizpipe.pipeline.errors import ConfigError, VizpipeError, closest_first, unknown_choice

# ------------------------------------------------------------------ names


def test_slug_exact():
    """slug: kept characters, runs replaced by one '_', stripped ends, '_' for empty, custom keep."""
    assert names.slug("a  b//c") == "a_b_c"
    assert names.slug("._a.b_.") == "a.b"
    assert names.slug(" x ") == "x"
    assert names.slug("a=b,c", keep="=") == "a=b_c"
    assert names.slug("A-z_0.9") == "A-z_0.9"
    assert names.slug(12) == "12"
    assert names.FILE_CHARS == "._-" and names.JOB_CHARS == "._=,+@-"


def test_slug_long_names_get_a_hash():
    """A slug longer than max_len: cut to max_len-9, then '_' and 8 hex of the whole text."""
    text = "a" * 30
    out = names.slug(text, max_len=20)
    assert out == "a" * 11 + "_" + hashlib.sha1(text.encode()).hexdigest()[:8]
    assert len(out) == 20
    assert names.slug("a" * 20, max_len=20) == "a" * 20
    # the cut part loses trailing dots/underscores before the hash
    out = names.slug("abcdefghij._" + "z" * 20, max_len=21)
    assert out.startswith("abcdefghij_") and len(out) == 19


def test_unique_slugs_hash_and_case():
    """Clashing slugs (also by case) get '_' + 6 hex of their id; others are unchanged."""
    out = names.unique_slugs(["A", "a", "b"], ids=["x/A", "y/a", "b"])
    assert out == [f"A_{names._digest('x/A', 6)}", f"a_{names._digest('y/a', 6)}", "b"]
    assert names.unique_slugs(["a", "a"], ids=["same", "same"]) == ["a", "a"]
    assert names.unique_slugs([]) == []
    out = names.unique_slugs(["a" * 20, "a" * 20], ids=["1", "2"], max_len=10)
    base = names.slug("a" * 20, max_len=10)
    assert len(base) == 10
    assert out == [f"{base[:3]}_{names._digest('1', 6)}", f"{base[:3]}_{names._digest('2', 6)}"]
    assert names._digest("x") == hashlib.sha1(b"x").hexdigest()[:8]


# ------------------------------------------------------------------ files


def test_write_atomic_text_bytes_and_cleanup(tmp_path, monkeypatch):
    """write_atomic writes text (utf-8) or bytes, returns the path, leaves no temp file; on error too."""
    p = tmp_path / "a.txt"
    assert files.write_atomic(p, "é") == p
    assert p.read_bytes() == "é".encode()
    assert files.write_atomic(str(p), b"\x00\x01") == p
    assert p.read_bytes() == b"\x00\x01"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]

    def boom(src, dst):
        raise OSError("no")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        files.write_atomic(p, "new")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]
    assert p.read_bytes() == b"\x00\x01"


def test_write_json_and_finite(tmp_path):
    """write_json: indent 2 and a final newline; NaN refused; finite maps NaN/inf/None to None."""
    p = files.write_json(tmp_path / "d.json", {"a": [1]})
    assert p.read_text() == '{\n  "a": [\n    1\n  ]\n}\n'
    with pytest.raises(ValueError):
        files.write_json(tmp_path / "n.json", {"a": math.nan})
    assert files.finite(None) is None
    assert (
        files.finite(math.inf) is None and files.finite(-math.inf) is None and files.finite(math.nan) is None
    )
    assert files.finite(2) == 2.0 and isinstance(files.finite(2), float)
    assert files.finite("1.5") == 1.5


def test_sha256_file_chunks(tmp_path):
    """sha256_file equals hashlib's digest whatever the chunk size."""
    p = tmp_path / "b"
    data = bytes(range(256)) * 10
    p.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert files.sha256_file(p) == want
    assert files.sha256_file(str(p), chunk=7) == want
    (tmp_path / "e").write_bytes(b"")
    assert files.sha256_file(tmp_path / "e") == hashlib.sha256(b"").hexdigest()


# ------------------------------------------------------------------ logs


def record(level, msg="m %s", args=("x",), name="vizpipe.pipeline.x", exc_info=None):
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def test_console_formatter_levels():
    """vizpipe: prefix; error/warning words; DEBUG names the logger; a traceback follows."""
    f = logs.ConsoleFormatter()
    assert f.format(record(logging.INFO)) == "vizpipe: m x"
    assert f.format(record(logging.WARNING)) == "vizpipe: warning: m x"
    assert f.format(record(logging.ERROR)) == "vizpipe: error: m x"
    assert f.format(record(logging.CRITICAL)) == "vizpipe: error: m x"
    assert f.format(record(logging.DEBUG)) == "vizpipe: [vizpipe.pipeline.x] m x"
    try:
        raise ValueError("inner")
    except ValueError:
        text = f.format(record(logging.ERROR, exc_info=sys.exc_info()))
    assert text.startswith("vizpipe: error: m x\nTraceback")
    assert text.endswith("ValueError: inner")


def test_console_filter(monkeypatch):
    """INFO and up pass; DEBUG only in verbose mode or with a DEBUG root logger."""
    filt = logs.ConsoleFilter()
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.WARNING)
    logs.set_verbose(False)
    try:
        assert filt.filter(record(logging.INFO))
        assert filt.filter(record(logging.WARNING))
        assert not filt.filter(record(logging.DEBUG))
        logs.set_verbose(1)
        assert logs._verbose is True
        assert filt.filter(record(logging.DEBUG))
        logs.set_verbose(False)
        monkeypatch.setattr(root, "level", logging.DEBUG)
        assert filt.filter(record(logging.DEBUG))
        monkeypatch.setattr(root, "level", logging.INFO)
        assert not filt.filter(record(logging.DEBUG))
    finally:
        logs.set_verbose(False)


# ------------------------------------------------------------------ errors


def test_closest_first_order():
    """closest_first: most similar first, prefix bonus, ties keep order, duplicates dropped."""
    assert closest_first("lay", ["x", "layer1", "layer2", "layer1"]) == ["layer1", "layer2", "x"]
    assert closest_first("B", ["a", "b"]) == ["b", "a"]
    assert closest_first("", []) == []
    assert issubclass(ConfigError, VizpipeError) and issubclass(VizpipeError, Exception)


def test_unknown_choice_exact():
    """The standard message: context, suggestion, list, limit with '(N more)', hint."""
    msg = str(unknown_choice("layer", "layr4", ["layer4", "fc"], context="for m", hint="Set it"))
    assert msg == (
        "Unknown layer 'layr4' for m; did you mean 'layer4'? Valid choices (closest first): layer4, fc. "
        "Set it"
    )
    msg = str(unknown_choice("x", "zzz", ["a", "b"]))
    assert msg == "Unknown x 'zzz'. Valid choices (closest first): a, b"
    msg = str(unknown_choice("x", "q", [f"c{i}" for i in range(5)], limit=2))
    assert msg.endswith(", ... (3 more)")
    assert msg.count(",") == 2
    msg = str(unknown_choice("x", "q", ["c1", "c2"], limit=2))
    assert "more" not in msg
    # no close match by ratio, but a substring match: suggested
    msg = str(unknown_choice("stage", "CAM", ["summary", "camera_things"]))
    assert "did you mean 'camera_things'?" in msg
    assert isinstance(unknown_choice("x", "y", []), ConfigError)
    assert str(unknown_choice("x", "y", [])) == "Unknown x 'y': there is no x to choose from"


# ------------------------------------------------------------------ cli


def result(tmp_path, ok=True, status="ok", error=None, report=None):
    return SimpleNamespace(
        output_dir=tmp_path / "job7",
        report_path=report,
        ok=ok,
        status=status,
        error=error,
        manifest_path=tmp_path / "job7" / "manifest.json",
    )


def test_finish_ok_prints_folder_and_report(tmp_path, capsys):
    """A good run prints its folder and report and returns."""
    assert cli.finish(result(tmp_path, report=tmp_path / "r.html"), multirun=False) is None
    assert (
        capsys.readouterr().out
        == f"vizpipe: run folder {tmp_path / 'job7'}\nvizpipe: report {tmp_path / 'r.html'}\n"
    )
    cli.finish(result(tmp_path), multirun=True)
    assert capsys.readouterr().out == f"vizpipe: run folder {tmp_path / 'job7'}\n"


def test_finish_failed_single_run_exits_1(tmp_path, capsys):
    """A failed run: one error line naming run.log and the manifest, exit 1."""
    with pytest.raises(SystemExit) as info:
        cli.finish(result(tmp_path, ok=False, status="failed", error="stage x failed: y"), multirun=False)
    assert info.value.code == 1
    d = tmp_path / "job7"
    assert capsys.readouterr().err == (
        f"vizpipe: error: stage x failed: y (details: {d / 'run.log'}, manifest: {d / 'manifest.json'})\n"
    )
    with pytest.raises(SystemExit):
        cli.finish(result(tmp_path, ok=False, status="interrupted"), multirun=False)
    assert capsys.readouterr().err.startswith("vizpipe: error: interrupted (details: ")


def test_finish_failed_sweep_job_here_and_exit(tmp_path, capsys, monkeypatch):
    """In a sweep run here: the failure is printed and counted; sweep_exit sums them up and exits 1."""
    monkeypatch.setattr(cli, "_FAILED_JOBS", [])
    monkeypatch.setattr(cli, "jobs_run_here", lambda: True)
    cli.sweep_exit()  # nothing failed: returns
    cli.finish(result(tmp_path, ok=False, status="failed", error="bad"), multirun=True)
    err = capsys.readouterr().err
    assert err.startswith("vizpipe: error: job job7 failed: bad (details: ")
    assert cli._FAILED_JOBS == ["job7: bad"]
    with pytest.raises(SystemExit) as info:
        cli.sweep_exit()
    assert info.value.code == 1
    assert capsys.readouterr().err == "vizpipe: error: 1 sweep job(s) failed: job7: bad\n"
    cli.finish(result(tmp_path, ok=False, status="failed"), multirun=True)
    cli.finish(result(tmp_path, ok=False, status="failed", error="e3"), multirun=True)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.sweep_exit()
    assert capsys.readouterr().err == "vizpipe: error: 3 sweep job(s) failed: job7: bad (and 2 more)\n"


def test_finish_failed_job_in_worker_raises(tmp_path, monkeypatch):
    """In a launcher's worker a failed job raises PipelineFailed with the one line."""
    monkeypatch.setattr(cli, "jobs_run_here", lambda: False)
    with pytest.raises(cli.PipelineFailed) as info:
        cli.finish(result(tmp_path, ok=False, status="failed", error="bad"), multirun=True)
    assert str(info.value).startswith("vizpipe: error: job job7 failed: bad (details: ")


def test_jobs_run_here_outside_hydra():
    """Outside a Hydra job: True in the main process."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    assert cli.jobs_run_here() is True
    assert cli.BASIC_LAUNCHER == "basic"  # the hydra/launcher choice (public), not the class


# ------------------------------------------------------------------ registry


PLUGIN = """
from vizpipe.pipeline.stage import Stage, StageResult
from vizpipe.pipeline.stage import Stage as Imported


class {cls}(Stage):
    name = "{name}"
    order = 5

    def run(self, ctx, settings):
        return StageResult(self.name)


class Nameless(Stage):
    name = None

    def run(self, ctx, settings):
        return StageResult("x")
"""


@pytest.fixture
def fresh_registry(monkeypatch):
    """Discovery from scratch; the process's registry is restored afterwards."""
    monkeypatch.setattr(registry, "_found", None)
    monkeypatch.setattr(registry, "_yaml", {})
    before = set(sys.modules)
    yield
    for mod in set(sys.modules) - before:
        if mod.startswith(registry.PLUGIN_PACKAGE + "."):
            del sys.modules[mod]


def test_plugin_dirs(tmp_path, monkeypatch):
    """VIZPIPE_PLUGINS: folders split on os.pathsep, blanks skipped, a missing one an error."""
    monkeypatch.setenv(registry.PLUGINS_ENV, f"{tmp_path}{os.pathsep} {os.pathsep}")
    assert registry.plugin_dirs() == [tmp_path.resolve()]
    monkeypatch.setenv(registry.PLUGINS_ENV, "")
    assert registry.plugin_dirs() == []
    monkeypatch.setenv(registry.PLUGINS_ENV, str(tmp_path / "none"))
    with pytest.raises(ConfigError) as info:
        registry.plugin_dirs()
    assert (
        str(info.value)
        == f"VIZPIPE_PLUGINS names '{tmp_path / 'none'}', which is not a folder; fix or unset it"
    )


def test_plugin_stages_found_with_yaml(tmp_path, monkeypatch, fresh_registry):
    """A plugin module's own named Stage classes are found, in order, with their YAML beside them."""
    (tmp_path / "front_plug.py").write_text(PLUGIN.format(cls="FrontPlug", name="front_plug"))
    (tmp_path / "front_plug.yaml").write_text("a: 1\n")
    pkg = tmp_path / "front_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        PLUGIN.format(cls="FrontPkg", name="front_pkg") + "from .helper import VALUE\n"
    )
    (pkg / "helper.py").write_text("VALUE = 42\n")
    (tmp_path / "_private.py").write_text("raise RuntimeError('never imported')\n")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty_dir").mkdir()
    monkeypatch.setenv(registry.PLUGINS_ENV, str(tmp_path))
    found = registry.stage_classes()
    assert "front_plug" in found and "front_pkg" in found
    assert "Nameless" not in {c.__name__ for c in found.values()}
    assert found["front_plug"].__module__ == "vizpipe_plugins.front_plug"
    assert registry.plugin_yaml("front_plug") == tmp_path / "front_plug.yaml"
    assert registry.plugin_yaml("front_pkg") is None
    assert sys.modules["vizpipe_plugins.front_pkg"].VALUE == 42  # a package's own submodules import
    assert registry.plugin_yaml("summary") is None
    order = list(found)
    assert order == sorted(order, key=lambda n: (found[n].order, n))
    assert registry.stage_classes() is found  # discovered once


def test_plugin_import_failure_message(tmp_path, monkeypatch, fresh_registry):
    """A plugin that fails to import: its path and the exception in one line; not left imported."""
    (tmp_path / "front_broken.py").write_text("raise ValueError('bad plugin')\n")
    monkeypatch.setenv(registry.PLUGINS_ENV, str(tmp_path))
    with pytest.raises(ConfigError) as info:
        registry.stage_classes()
    assert str(info.value) == (
        f"Plugin stage {tmp_path.resolve() / 'front_broken.py'} failed to import: ValueError: bad plugin"
    )
    assert "vizpipe_plugins.front_broken" not in sys.modules


def test_two_stages_with_one_name(tmp_path, monkeypatch, fresh_registry):
    """Two stages named alike: both places named, 'rename one'."""
    (tmp_path / "front_dup.py").write_text(PLUGIN.format(cls="Summary2", name="summary"))
    monkeypatch.setenv(registry.PLUGINS_ENV, str(tmp_path))
    with pytest.raises(ConfigError) as info:
        registry.stage_classes()
    assert str(info.value) == (
        "Two stages are named 'summary': vizpipe.stages.summary and "
        f"{tmp_path.resolve() / 'front_dup.py'}; rename one"
    )


def test_import_plugin_cached(tmp_path, fresh_registry):
    """_import_plugin imports once per name under vizpipe_plugins."""
    f = tmp_path / "front_once.py"
    f.write_text("X = 1\n")
    m1 = registry._import_plugin(f, "front_once")
    assert m1.__name__ == "vizpipe_plugins.front_once" and m1.X == 1
    f.write_text("X = 2\n")
    assert registry._import_plugin(f, "front_once") is m1
    assert sys.modules["vizpipe_plugins"].__path__ == []


def test_get_stage_register_and_defaults():
    """get_stage makes a new instance; unknown names list stages with the hint; register/unregister."""
    s1, s2 = registry.get_stage("summary"), registry.get_stage("summary")
    assert s1 is not s2 and type(s1) is type(s2)
    with pytest.raises(ConfigError) as info:
        registry.get_stage("sumary")
    msg = str(info.value)
    assert msg.startswith("Unknown stage 'sumary'; did you mean 'summary'?")
    assert msg.endswith(". Set e.g. 'stages=[summary,cam]'")
    defaults = registry.default_stages()
    assert defaults == [n for n, cls in registry.stage_classes().items() if cls.default]
    assert "summary" in defaults

    class FrontTmp(registry.Stage):
        name = "front_tmp"

        def run(self, ctx, settings):
            return None

    registry.register(FrontTmp)
    try:
        assert isinstance(registry.get_stage("front_tmp"), FrontTmp)
    finally:
        registry.unregister("front_tmp")
    registry.unregister("front_tmp")  # twice: no error
    assert "front_tmp" not in registry.stage_classes()


def test_stage_classes_in_module_filters(tmp_path, fresh_registry):
    """Only the module's own, concrete, named Stage subclasses count."""
    f = tmp_path / "front_mod.py"
    f.write_text(
        PLUGIN.format(cls="Mine", name="mine")
        + "\nimport abc\nclass Abstract(Stage):\n    name = 'abs'\n    @abc.abstractmethod\n"
        "    def other(self): ...\n"
    )
    module = registry._import_plugin(f, "front_mod")
    assert [c.__name__ for c in registry._stage_classes_in(module)] == ["Mine"]


def test_manifest_json_roundtrip_helpers(tmp_path):
    """(sanity) a written JSON file reads back as written."""
    files.write_json(tmp_path / "m.json", {"k": "v"})
    assert json.loads(Path(tmp_path / "m.json").read_text()) == {"k": "v"}


def test_closest_first_prefix_bonus():
    """A choice the value starts with (or that starts with the value) gets a bonus over a closer ratio."""
    assert closest_first("res", ["ores", "resnet"]) == ["resnet", "ores"]
    assert closest_first("abcdef", ["bcdefg", "abc"]) == ["abc", "bcdefg"]
    assert closest_first("RES", ["ores", "Resnet"]) == ["Resnet", "ores"]


def test_unknown_choice_default_limit():
    """25 choices are shown by default, then how many more."""
    msg = str(unknown_choice("x", "q", [f"c{i:02d}" for i in range(30)]))
    assert msg.endswith(", ... (5 more)")
    assert str(unknown_choice("x", "q", [f"c{i:02d}" for i in range(25)])).count(",") == 24
