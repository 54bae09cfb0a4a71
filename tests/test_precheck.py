"""The precheck in-process: argument splitting, search path, sweeps, run folder, the failure record."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import vizpipe.pipeline.config_store  # noqa: F401 - vizpipe's sweeper registered before Hydra's plugin scan
import vizpipe.pipeline.precheck as p
from vizpipe.pipeline import argv as words
from vizpipe.pipeline.argv import split_args
from vizpipe.pipeline.composer import Composer, JobChecker
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.sweeps import was_checked

QUOTE = "(commas, '=', spaces and brackets in a value need quotes)"


@pytest.fixture
def composer():
    """A Composer on conf/ (entered: Hydra's global state is set)."""
    with Composer(p.CONF_DIR, "config", [], []) as c:
        yield c


def jobs_of(composer, overrides, multirun=False):
    return p._jobs(composer, overrides, multirun)


# ------------------------------------------------------------------ split_args


def test_split_args_overrides_flags_and_multirun():
    """Overrides keep order; -m/--multirun set multirun; flags with values take the next word."""
    argv = ["a=1", "--config-name", "x", "-cp=y", "-m", "b=2"]
    assert split_args(argv) == (["a=1", "b=2"], {"--config-name": "x", "-cp": "y"}, True)
    assert split_args(["--multirun"]) == ([], {}, True)
    assert split_args([]) == ([], {}, False)
    assert split_args(["k=v"]) == (["k=v"], {}, False)


def test_split_args_flag_with_value_at_end_and_each_spelling():
    """A value flag as the last word gets ''; every short and long spelling takes the next word."""
    assert split_args(["-cn"]) == ([], {"-cn": ""}, False)
    for flag in sorted(words._FLAGS_WITH_VALUE):
        assert split_args([flag, "v", "k=1"]) == (["k=1"], {flag: "v"}, False)
    # a value flag takes the next word even if it looks like a flag
    assert split_args(["-cd", "-m"]) == ([], {"-cd": "-m"}, False)


def test_split_args_optional_value_flags():
    """--cfg/--info/-sc take the next word only when it is not a flag and exists."""
    for flag in sorted(words._OPTIONAL_VALUE):
        assert split_args([flag, "job"]) == ([], {flag: "job"}, False)
        assert split_args([flag]) == ([], {flag: ""}, False)
        assert split_args([flag, "-m"]) == ([], {flag: ""}, True)
    assert split_args(["--cfg=hydra", "x=1"]) == (["x=1"], {"--cfg": "hydra"}, False)
    # an unknown flag never takes a value
    assert split_args(["-x", "a=1"]) == (["a=1"], {"-x": ""}, False)
    assert split_args(["--resolve", "a=1"]) == (["a=1"], {"--resolve": ""}, False)


# ------------------------------------------------------------------ _search


def test_search_defaults():
    """No flags: conf/, 'config', no extra search path."""
    assert p._search({}) == (p.CONF_DIR, "config", [])


def test_search_config_path_relative_absolute_and_names(tmp_path, monkeypatch):
    """-cp relative resolves against the launch folder, conf/ stays on the search path; -cd leads it."""
    monkeypatch.chdir(tmp_path)
    primary, name, extra = p._search({"-cp": "conf", "-cn": "other"})
    assert (primary, name, extra) == ((tmp_path / "conf").resolve(), "other", [f"file://{p.CONF_DIR}"])
    primary, name, extra = p._search({"--config-path": str(tmp_path), "--config-name": "n", "-cp": "zz"})
    assert (primary, name, extra) == (tmp_path, "n", [f"file://{p.CONF_DIR}"])
    primary, name, extra = p._search({"-cd": str(tmp_path), "--config-name": "c"})
    assert (primary, name, extra) == (p.CONF_DIR, "c", [f"file://{tmp_path.resolve()}"])
    _, _, extra = p._search({"--config-dir": str(tmp_path), "-cp": str(tmp_path)})
    assert extra == [f"file://{tmp_path.resolve()}", f"file://{p.CONF_DIR}"]
    _, name, _ = p._search({"-cn": "short"})
    assert name == "short"


def test_search_expands_home(monkeypatch, tmp_path):
    """~ in -cp and -cd is the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    primary, _, extra = p._search({"-cp": "~/c", "-cd": "~/d"})
    assert primary == tmp_path / "c"
    assert extra[0] == f"file://{(tmp_path / 'd').resolve()}"


# ------------------------------------------------------------------ fail


def test_fail_prints_one_line_and_exits(capsys):
    """fail joins whitespace into one line after 'vizpipe: error: ' and exits 2 (or the code given)."""
    with pytest.raises(SystemExit) as info:
        p.fail("bad\n  value\there")
    assert info.value.code == 2
    assert capsys.readouterr().err == "vizpipe: error: bad value here\n"
    with pytest.raises(SystemExit) as info:
        p.fail("x", code=5)
    assert info.value.code == 5
    assert capsys.readouterr().err == "vizpipe: error: x\n"


# ------------------------------------------------------------------ shell completion


def test_shell_completion_query_rewrites_interpreter(monkeypatch):
    """-sc query=bash: COMP_LINE's interpreter (any path, any version) becomes 'python'."""
    monkeypatch.setenv("COMP_LINE", "  .venv/bin/python3.11 run.py mod")
    assert p.shell_completion({"-sc": "query=bash"}) is None
    assert os.environ["COMP_LINE"] == "python run.py mod"
    monkeypatch.setenv("COMP_LINE", "/usr/bin/python run.py")
    p.shell_completion({"--shell-completion": "query=bash"})
    assert os.environ["COMP_LINE"] == "python run.py"


def test_shell_completion_other_values_change_nothing(monkeypatch):
    """Without query=bash COMP_LINE stays; no -sc returns None."""
    monkeypatch.setenv("COMP_LINE", ".venv/bin/python run.py")
    assert p.shell_completion({}) is None
    assert p.shell_completion({"-sc": "query=zsh"}) is None
    assert os.environ["COMP_LINE"] == ".venv/bin/python run.py"


def test_shell_completion_query_without_comp_line(monkeypatch):
    """query=bash without COMP_LINE does nothing (and does not create it)."""
    monkeypatch.delenv("COMP_LINE", raising=False)
    assert p.shell_completion({"-sc": "query=bash"}) is None
    assert "COMP_LINE" not in os.environ


def test_shell_completion_install_prints_widened_script(capsys):
    """install=bash prints Hydra's script with the python test widened, plus complete lines; exit 0."""
    with pytest.raises(SystemExit) as info:
        p.shell_completion({"--shell-completion": "install=bash"})
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert 'if [[ "${words[0]##*/}" == python* ]]; then' in out
    assert 'if [ "${words[0]}" == "python" ]; then' not in out
    lines = out.splitlines()
    assert "complete -o nospace -o default -F hydra_bash_completion python3" in lines
    exe = os.path.basename(sys.executable)
    if exe != "python":
        assert f"complete -o nospace -o default -F hydra_bash_completion {exe}" in lines
    assert "complete -o nospace -o default -F hydra_bash_completion python" not in lines
    assert not out.endswith("\n\n")
    assert lines[0].startswith("export _HYDRA_OLD_COMP=")
    py3 = lines.index("complete -o nospace -o default -F hydra_bash_completion python3")
    assert lines[py3 - 1].startswith("COMP_WORDBREAKS=")  # no blank line: the script is stripped


# ------------------------------------------------------------------ _jobs


def test_jobs_single_run(composer):
    """A plain command line is one job with its overrides as typed."""
    assert jobs_of(composer, ["model=vgg11", "cam.target_class=3"]) == [["model=vgg11", "cam.target_class=3"]]
    assert jobs_of(composer, []) == [[]]


def test_jobs_sweep_needs_multirun(composer):
    """A comma sweep without -m is refused with the exact hint; with -m it is one job per value."""
    with pytest.raises(ConfigError) as info:
        jobs_of(composer, ["model=vgg11", "cam.target_class=1,2"])
    assert str(info.value) == (
        "'cam.target_class=1,2' is a sweep (several values); add -m to run one job per value, "
        "or wrap a list value in brackets: key=[a,b]"
    )
    assert jobs_of(composer, ["model=vgg11", "cam.target_class=1,2"], True) == [
        ["model=vgg11", "cam.target_class=1"],
        ["model=vgg11", "cam.target_class=2"],
    ]


def test_jobs_multirun_ignores_hydra_overrides(composer):
    """hydra.* overrides are not part of a job's overrides."""
    out = jobs_of(composer, ["cam.target_class=1,2", "hydra.sweep.dir=x", "+hydra.a=1"], True)
    assert out == [["cam.target_class=1"], ["cam.target_class=2"]]
    assert jobs_of(composer, ["a.b=1", "hydra.run.dir=x"], True) == [["a.b=1"]]


def test_jobs_declarative_sweep(composer):
    """sweep=... needs -m (exact message); with -m its params lead every job, one per value."""
    with pytest.raises(ConfigError) as info:
        jobs_of(composer, ["model=vgg11", "sweep=cam_classes"])
    assert str(info.value) == (
        "'sweep=cam_classes' is a declarative sweep: add -m to run its jobs "
        "(python run.py -m sweep=cam_classes)"
    )
    with pytest.raises(ConfigError, match=r"^'\+sweep=cam_classes' is a declarative sweep"):
        jobs_of(composer, ["+sweep=cam_classes"])
    out = jobs_of(composer, ["model=vgg11", "sweep=cam_classes"], True)
    assert out == [
        ["cam.target_class=207", "stages=[cam]", "model=vgg11", "sweep=cam_classes"],
        ["cam.target_class=281", "stages=[cam]", "model=vgg11", "sweep=cam_classes"],
        ["cam.target_class=282", "stages=[cam]", "model=vgg11", "sweep=cam_classes"],
    ]


def test_jobs_sweep_null_is_no_sweep(composer):
    """sweep=null (or empty) is a single run, allowed without -m."""
    assert jobs_of(composer, ["sweep=null"]) == [["sweep=null"]]


def test_jobs_declarative_sweep_combined_with_command_line_sweep(composer):
    """A command-line sweep value set on a sweep=... run: the first value chooses the base, all run."""
    out = jobs_of(composer, ["model=vgg11", "sweep=cam_classes", "cam.target_class=5,6"], True)
    assert [j[0] for j in out] == ["cam.target_class=5", "cam.target_class=6"]


def test_jobs_sweep_from_model_blocks(composer):
    """sweep=cam_layers reads model.blocks when the model's YAML names them: one job per block."""
    out = jobs_of(composer, ["model=resnet18", "sweep=cam_layers"], True)
    assert [j[0] for j in out] == [f"cam.layer=layer{i}" for i in range(1, 5)]
    assert all(j[1:] == ["stages=[cam]", "model=resnet18", "sweep=cam_layers"] for j in out)


def test_jobs_sweep_finds_the_blocks_of_any_model(composer):
    """sweep=cam_layers on a model whose YAML names no blocks (model=torchvision) finds them on its
    architecture (meta device), as the run finds them; it was refused ('model.blocks ... not set')."""
    out = jobs_of(composer, ["model=torchvision", "model.name=efficientnet_b0", "sweep=cam_layers"], True)
    assert [j[0] for j in out] == [f"cam.layer=features.{i}" for i in (1, 2, 3, 5, 8)]
    with pytest.raises(ConfigError) as info:
        jobs_of(composer, ["model=torchvision", "sweep=cam_layers"], True)
    assert str(info.value) == "sweep=cam_layers: model.name is required for this choice; set model.name=..."
    with pytest.raises(ConfigError, match=r"^sweep=cam_layers: Unknown model 'efficientnet_b9'; did you"):
        jobs_of(composer, ["model=torchvision", "model.name=efficientnet_b9", "sweep=cam_layers"], True)


def test_jobs_path_with_comma(composer, tmp_path):
    """A path key with a comma is read as a sweep: the error says to quote it."""
    with pytest.raises(ConfigError) as info:
        jobs_of(composer, ["input.path=a,b"], True)
    assert str(info.value) == (
        "'input.path=a,b' holds a comma, which makes it a sweep over ['a', 'b']; "
        f"for one path quote it: \"input.path='a,b'\" {QUOTE}"
    )
    # the joined name exists: it was meant as one path
    (tmp_path / "x,y").mkdir()
    with pytest.raises(ConfigError, match="holds a comma"):
        jobs_of(composer, [f"input.path={tmp_path}/x,{tmp_path}/y"], True)


def test_jobs_path_sweep_over_existing_paths(composer, tmp_path):
    """A comma list of paths that all exist (and whose join does not) is a real sweep."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = jobs_of(composer, [f"input.path={tmp_path}/a,{tmp_path}/b"], True)
    assert out == [[f"input.path={tmp_path}/a"], [f"input.path={tmp_path}/b"]]
    # a non-path key with a comma is a plain sweep
    assert jobs_of(composer, ["cam.layer=a,b"], True) == [["cam.layer=a"], ["cam.layer=b"]]


def test_jobs_unreadable_override(composer):
    """An override Hydra cannot parse: a path key gets the quote hint, others the parser's first line."""
    with pytest.raises(ConfigError) as info:
        jobs_of(composer, ["input.path=[a"])
    assert str(info.value) == (
        f"Cannot read the override 'input.path=[a': quote it: \"input.path='[a'\" {QUOTE}"
    )
    with pytest.raises(ConfigError) as info:
        jobs_of(composer, ["cam.layer=[a"])
    assert str(info.value) == (
        "Cannot read the override 'cam.layer=[a' (no viable alternative at input '[a'); "
        "check its quoting and brackets"
    )
    for key in ("model.checkpoint", "x.categories", "a.dir", "data.ROOT"):
        with pytest.raises(ConfigError, match=r"^Cannot read the override .*: quote it"):
            jobs_of(composer, [f"{key}=[a"])


def test_unreadable_path_override_with_equals(composer):
    """The key is what precedes the first '=' (a path value may hold '=')."""
    with pytest.raises(ConfigError) as info:
        jobs_of(composer, ["input.path=[a=b"])
    assert str(info.value) == (
        f"Cannot read the override 'input.path=[a=b': quote it: \"input.path='[a=b'\" {QUOTE}"
    )


def test_is_path_key():
    """Only the last part of a key, case-insensitively, decides."""
    assert p._is_path_key("input.path")
    assert p._is_path_key("Path")
    assert p._is_path_key("a.b.Root")
    assert not p._is_path_key("path.x")
    assert not p._is_path_key("paths")


# ------------------------------------------------------------------ run folder


def test_output_dir_from_overrides():
    """hydra.run.dir (single) / hydra.sweep.dir (-m) on the command line, with or without '+'."""
    ov = ["hydra.run.dir=r", "hydra.sweep.dir=s"]
    assert p._output_dir(ov, False) == Path("r")
    assert p._output_dir(ov, True) == Path("s")
    assert p._output_dir(["+hydra.run.dir=a/b=c"], False) == Path("a/b=c")
    assert p._output_dir(["Xhydra.run.dir=x", "hydra.run.dir=y"], False) == Path("y")
    assert p._output_dir(["hydra.run.dir=1", "hydra.run.dir=2"], False) == Path("1")


def test_output_dir_default_pattern():
    """Without an override: outputs/<date>/<time> (multirun: outputs/multirun/<date>/<time>)."""
    single = p._output_dir(["hydra.sweep.dir=s"], False)
    multi = p._output_dir(["hydra.run.dir=r"], True)
    assert re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", single.as_posix())
    assert re.fullmatch(r"outputs/multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", multi.as_posix())


def test_output_dir_fallback(monkeypatch):
    """When composing fails, the documented pattern is used."""
    monkeypatch.setattr(p, "CONF_DIR", Path("/nonexistent/conf"))
    single = p._output_dir([], False)
    multi = p._output_dir([], True)
    assert re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", single.as_posix())
    assert re.fullmatch(r"outputs/multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", multi.as_posix())


def test_check_writable(tmp_path):
    """A writable folder (existing or to be made) passes; one under a file fails with the hint."""
    p._check_writable(tmp_path)
    p._check_writable(tmp_path / "new" / "deeper")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError) as info:
        p._check_writable(tmp_path / "f" / "run")
    assert str(info.value) == (
        f"Run folder '{tmp_path / 'f' / 'run'}' cannot be written "
        f"('{tmp_path / 'f'}' is a file, not a folder); "
        "choose a writable place with hydra.run.dir=... (or hydra.sweep.dir=... with -m)"
    )


def test_check_writable_no_permission(tmp_path, monkeypatch):
    """An existing folder without write permission fails (os.access asked for W and X)."""
    seen = []

    def access(path, mode):
        seen.append((Path(path), mode))
        return False

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(ConfigError, match=r"cannot be written \(no write permission\)"):
        p._check_writable(tmp_path)
    assert seen == [(tmp_path, os.W_OK | os.X_OK)]
    # a folder still to be made is probed on its existing parent, not with os.access
    seen.clear()
    p._check_writable(tmp_path / "new")
    assert seen == []


# ------------------------------------------------------------------ record_failure


def test_record_failure_writes_manifest_and_log(tmp_path):
    """manifest.json: setup failed with the message, listed stages skipped; run.log gets one ERROR line."""
    run = tmp_path / "run"
    argv = [f"hydra.run.dir={run}", "stages=[summary, cam,]", "model=vgg11"]
    where = p.record_failure(argv, "the message")
    assert where == run / "manifest.json"
    data = json.loads(where.read_text())
    assert data["status"] == "failed"
    assert data["run_dir"] == str(run.resolve())
    assert data["overrides"] == argv
    assert data["config"] is None
    assert isinstance(data["command"], list)
    assert "torch" in data["versions"]
    assert data["setup"]["status"] == "failed"
    assert data["setup"]["error"] == "the message"
    assert data["setup"]["error_type"] == "ConfigError"
    assert [(s["name"], s["status"]) for s in data["stages"]] == [("summary", "skipped"), ("cam", "skipped")]
    assert data["report"]["status"] == "skipped"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", data["created"])
    log = (run / "run.log").read_text()
    assert re.fullmatch(
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]\[vizpipe.pipeline.cli\]\[ERROR\] - the message\n", log
    )


def test_record_failure_multirun_and_no_stage_list(tmp_path):
    """-m uses hydra.sweep.dir; stages not given as a list: no stage records."""
    argv = ["-m", f"hydra.sweep.dir={tmp_path / 's'}", f"hydra.run.dir={tmp_path / 'r'}", "stages=summary"]
    where = p.record_failure(argv, "m")
    assert where == tmp_path / "s" / "manifest.json"
    assert json.loads(where.read_text())["stages"] == []
    assert not (tmp_path / "r").exists()


def test_record_failure_keeps_other_runs(tmp_path):
    """A folder that already holds a manifest is left alone (None); the log is appended to otherwise."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.log").write_text("before\n")
    assert p.record_failure([f"hydra.run.dir={run}"], "first") == run / "manifest.json"
    assert (run / "run.log").read_text().startswith("before\n[")
    original = (run / "manifest.json").read_text()
    assert p.record_failure([f"hydra.run.dir={run}"], "second") is None
    assert (run / "manifest.json").read_text() == original


def test_record_failure_unwritable(tmp_path):
    """A run folder under a file: None, nothing raised."""
    (tmp_path / "f").write_text("x")
    assert p.record_failure([f"hydra.run.dir={tmp_path / 'f' / 'run'}"], "m") is None


# ------------------------------------------------------------------ precheck


def test_precheck_skips_help_and_info_flags(tmp_path):
    """--help, --cfg, --info ... return without composing (a bad override is not reported)."""
    for flag in ("--help", "-h", "--hydra-help", "--version", "--info", "-i", "--cfg", "-c", "--resolve"):
        argv = [flag, "model=nope", f"hydra.run.dir={tmp_path / 'x'}"]
        assert p.precheck([*argv, "resume=somewhere"]) == argv  # resume= is the command line's, never Hydra's
    assert not (tmp_path / "x").exists()


def test_precheck_good_command_marks_jobs(tmp_path):
    """A good command line marks its jobs as checked, claims the run folder (nothing else is
    written there) and returns the command line Hydra gets, that folder named."""
    from vizpipe.pipeline.ownership import OWNER, held

    run = tmp_path / "ok"
    argv = ["model=vgg11", "stages=[summary]", f"hydra.run.dir={run}"]
    try:
        assert p.precheck(argv) == ["model=vgg11", "stages=[summary]", f"hydra.run.dir='{run}'"]
        assert was_checked(["model=vgg11", "stages=[summary]"])
        assert held(run) is not None and [f.relative_to(run).as_posix() for f in run.rglob("*")] == [
            ".vizpipe",
            OWNER,
        ]
    finally:
        held(run).release()
    assert list(run.iterdir()) == []


def test_precheck_bad_value_fails_with_manifest(tmp_path, capsys):
    """A bad group option: exit 2, one line naming it and the manifest written in the run folder."""
    run = tmp_path / "bad"
    with pytest.raises(SystemExit) as info:
        p.precheck(["model=vgg1", f"hydra.run.dir={run}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("vizpipe: error: Unknown model option 'vgg1'; did you mean 'vgg1")
    assert err.endswith(f" (manifest: {run / 'manifest.json'})\n")
    assert err.count("\n") == 1
    setup = json.loads((run / "manifest.json").read_text())["setup"]
    assert setup["error"].startswith("Unknown model option")


def test_precheck_bad_value_without_manifest(tmp_path, capsys):
    """When the failure cannot be recorded the line has no manifest part."""
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit):
        p.precheck(["model=vgg1", f"hydra.run.dir={tmp_path / 'f' / 'r'}"])
    err = capsys.readouterr().err
    assert "manifest" not in err
    assert err.startswith("vizpipe: error: Unknown model option 'vgg1'")


def test_precheck_unwritable_run_folder(tmp_path, capsys):
    """A good config whose run folder is under a file fails in one line."""
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as info:
        p.precheck([f"hydra.run.dir={tmp_path / 'f' / 'r'}"])
    assert info.value.code == 2
    assert f"Run folder '{tmp_path / 'f' / 'r'}' cannot be written" in capsys.readouterr().err


def test_precheck_config_path_not_a_folder(tmp_path, capsys):
    """--config-path naming no folder: its resolved path in the message."""
    with pytest.raises(SystemExit):
        p.precheck(["--config-path", str(tmp_path / "none"), f"hydra.run.dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert err.startswith(f"vizpipe: error: --config-path '{tmp_path / 'none'}' is not a folder")


def test_precheck_sweep_checks_every_job(tmp_path, capsys):
    """With -m every job is checked: a bad value in the second job is reported."""
    argv = ["-m", "model=vgg11,nope", f"hydra.sweep.dir={tmp_path / 's'}"]
    with pytest.raises(SystemExit):
        p.precheck(argv)
    assert "Unknown model option 'nope'" in capsys.readouterr().err
    assert (tmp_path / "s" / "manifest.json").is_file()


def test_precheck_hydra_group_override_checked(tmp_path, capsys):
    """hydra/launcher=... is composed with the jobs: an unknown launcher names the cluster extra."""
    with pytest.raises(SystemExit):
        p.precheck(["hydra/launcher=nolauncher", f"hydra.run.dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert "Unknown hydra/launcher option 'nolauncher'" in err
    assert "pip install -e '.[cluster]'" in err


def test_composer_group_options_hide_private(composer):
    """group_options lists a group's options without _-private ones."""
    opts = composer.group_options("model")
    assert "vgg11" in opts
    assert not any(o.startswith("_") for o in opts)


def test_composer_hydra_overrides():
    """The search path override comes first, then the hydra/ group overrides."""
    c = Composer(p.CONF_DIR, "config", ["file:///a", "file:///b"], ["hydra/launcher=x"])
    assert c._hydra_overrides() == ["hydra.searchpath=[file:///a,file:///b]", "hydra/launcher=x"]
    assert Composer(p.CONF_DIR, "config", [])._hydra_overrides() == []


@pytest.fixture
def sweep_dir(tmp_path):
    """A --config-dir with two sweep configs of its own."""
    (tmp_path / "sweep").mkdir()
    head = "# @package _global_\nhydra:\n  sweeper:\n    params:\n"
    (tmp_path / "sweep" / "front_bad.yaml").write_text(head + "      cam.layer: ${oc.env:NOPE_FRONT_VAR}\n")
    (tmp_path / "sweep" / "front_num.yaml").write_text(head + "      seed: 1,2\n")
    (tmp_path / "sweep" / "front_unset.yaml").write_text(head + "      cam.layer: ${model.nothing_here}\n")
    return tmp_path


def test_sweeper_params_from_config_dir(sweep_dir, monkeypatch):
    """A sweep config found through --config-dir: its params, resolved, lead each job."""
    monkeypatch.delenv("NOPE_FRONT_VAR", raising=False)
    with Composer(p.CONF_DIR, "config", [f"file://{sweep_dir}"]) as c:
        assert p._jobs(c, ["sweep=front_num"], True) == [
            ["seed=1", "sweep=front_num"],
            ["seed=2", "sweep=front_num"],
        ]
        assert p._sweeper_params(c, ["sweep=front_num"]) == ["seed=1,2"]
        with pytest.raises(ConfigError) as info:
            p._jobs(c, ["sweep=front_bad"], True)
        msg = str(info.value)
        assert msg.startswith(
            "sweep=front_bad sets cam.layer from ${oc.env:NOPE_FRONT_VAR}, which cannot be resolved here: "
        )
        assert "NOPE_FRONT_VAR" in msg.partition("here: ")[2] and "\n" not in msg
        monkeypatch.setenv("NOPE_FRONT_VAR", "a,b")
        assert p._sweeper_params(c, ["sweep=front_bad"]) == ["cam.layer=a,b"]
        with pytest.raises(ConfigError) as info:
            p._jobs(c, ["sweep=front_unset"], True)
        assert str(info.value).startswith(
            "sweep=front_unset sweeps cam.layer over model.nothing_here, which is not set"
        )


def test_precheck_with_config_dir_and_writable_run(sweep_dir, tmp_path, capsys):
    """precheck with -cd: a good sweep passes and its jobs are marked checked."""
    argv = [
        "-m",
        "-cd",
        str(sweep_dir),
        "sweep=front_num",
        "stages=[summary]",
        f"hydra.sweep.dir={tmp_path / 's'}",
    ]
    from vizpipe.pipeline.ownership import held

    got = p.precheck(argv)
    held(tmp_path / "s").release()
    assert got == [*argv[:-1], f"hydra.sweep.dir='{tmp_path / 's'}'"]
    assert was_checked(["seed=2", "sweep=front_num", "stages=[summary]"])
    assert capsys.readouterr().err == ""


def test_precheck_shell_completion_query_is_skipped(tmp_path, monkeypatch):
    """-sc query=bash: the interpreter is rewritten, nothing is checked (bad overrides pass)."""
    monkeypatch.setenv("COMP_LINE", ".venv/bin/python run.py mo")
    argv = ["-sc", "query=bash", "model=nope", f"hydra.run.dir={tmp_path / 'r'}"]
    assert p.precheck(argv) == argv
    assert os.environ["COMP_LINE"] == "python run.py mo"
    assert not (tmp_path / "r").exists()


def test_relative_config_path_is_read_from_the_launch_folder(tmp_path, monkeypatch):
    """Hydra would read a relative -cp from vizpipe's own folder; the command line makes it absolute."""
    from vizpipe.pipeline.cli import command_line_args

    monkeypatch.chdir(tmp_path)
    argv = ["-cp", "runs/a/.hydra", "--config-path=b", "x=1", "--config-name", "config"]
    assert command_line_args(argv) == [
        "-cp",
        str(tmp_path / "runs/a/.hydra"),
        f"--config-path={tmp_path / 'b'}",
        "x=1",
        "hydra.job.name=run",
        "--config-name",
        "config",
    ]


# ------------------------------------------------------------------ issue 21: keys, sweeps, private options


@pytest.mark.parametrize("override", ["++cam.targt_class=207", "+cam.methd=scorecam", "+sed=5"])
def test_precheck_refuses_added_unknown_keys(tmp_path, capsys, override):
    """A typo with + or ++ no longer runs with the key ignored: exit 2, one line, the closest key."""
    with pytest.raises(SystemExit) as info:
        p.precheck([override, f"hydra.run.dir={tmp_path / 'r'}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    key = override.lstrip("+").partition("=")[0]
    assert err.startswith(f"vizpipe: error: Unknown config key '{key}'; did you mean")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("override", "group", "public"),
    [
        ("input=_base", "input", "photo"),
        ("model=_torchvision", "model", "torchvision"),
        ("+cam=_schema", "cam", "default"),
    ],
)
def test_precheck_refuses_internal_options(tmp_path, capsys, override, group, public):
    """An internal option (a base other options build on, a stored schema) is refused in one line
    with the public choices; it composed and ran before (input=_base ran the photo)."""
    with pytest.raises(SystemExit) as info:
        p.precheck([override, f"hydra.run.dir={tmp_path / 'r'}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    value = override.partition("=")[2]
    assert err.startswith(
        f"vizpipe: error: Unknown {group} option '{value}' (options starting with _ are internal"
    )
    choices = err.split("Valid choices (closest first): ")[1].split(". Set ")[0].split(", ")
    assert public in choices and not any(c.startswith("_") for c in choices)
    assert err.count("\n") == 1


def test_precheck_refuses_internal_options_in_a_sweep(tmp_path, capsys):
    """A sweep choosing an internal option in one job is refused before any job runs."""
    with pytest.raises(SystemExit):
        p.precheck(["-m", "model=resnet18,_torchvision", f"hydra.sweep.dir={tmp_path / 's'}"])
    assert "Unknown model option '_torchvision'" in capsys.readouterr().err


def test_precheck_sweep_names_every_bad_value(tmp_path, capsys):
    """Two bad values of a sweep: both named, one line each under a count, exit 2, nothing run."""
    run = tmp_path / "s"
    argv = [
        "-m",
        "cam.method=foo,gradcam,bar",
        "cam.layer=layer3,layer4",
        "stages=[cam]",
        f"hydra.sweep.dir={run}",
    ]
    with pytest.raises(SystemExit) as info:
        p.precheck(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        "vizpipe: error: 4 of 6 sweep jobs are invalid (2 problems, below); none ran "
        f"(manifest: {run / 'manifest.json'})"
    )
    assert lines[1].startswith("  sweep jobs 0, 1 (cam.method=foo): Unknown CAM method 'foo'")
    assert lines[2].startswith("  sweep jobs 4, 5 (cam.method=bar): Unknown CAM method 'bar'")
    assert len(lines) == 3
    error = json.loads((run / "manifest.json").read_text())["setup"]["error"]
    assert "'foo'" in error and "'bar'" in error
    assert not was_checked(["cam.method=gradcam", "cam.layer=layer3", "stages=[cam]"])


def test_precheck_one_bad_job_names_it(tmp_path, capsys):
    """One bad value among good ones: one line, prefixed with its job; a problem of every job: as a run."""
    with pytest.raises(SystemExit):
        p.precheck(["-m", "model=vgg11,nope", f"hydra.sweep.dir={tmp_path / 's'}"])
    err = capsys.readouterr().err
    assert err.startswith("vizpipe: error: sweep job 1 (model=nope): Unknown model option 'nope'")
    assert err.count("\n") == 1
    with pytest.raises(SystemExit):
        p.precheck(["-m", "seed=1,2", "cam.method=nope", f"hydra.sweep.dir={tmp_path / 't'}"])
    assert capsys.readouterr().err.startswith("vizpipe: error: Unknown CAM method 'nope'")


def test_job_checker_composes_a_failing_structure_once(composer):
    """Jobs sharing a structure that does not compose: composed once, every job named."""
    checker = JobChecker(composer)
    batch = [["model=nope", f"seed={i}"] for i in range(3)]
    with pytest.raises(ConfigError) as info:
        checker.check_all(batch)
    assert checker.compositions == 1
    assert str(info.value).startswith("Unknown model option 'nope'")  # every job: the run's own line


def test_fail_keeps_one_line_per_problem(capsys):
    """A message of several problems: the first after 'vizpipe: error: ', the others indented."""
    with pytest.raises(SystemExit):
        p.fail("head", details=["sweep job 0: a\n  b", "sweep job 2: c"])
    assert capsys.readouterr().err == "vizpipe: error: head\n  sweep job 0: a b\n  sweep job 2: c\n"


@pytest.mark.parametrize(
    ("group", "option", "args"), [("local", "default", []), ("experiment", "mine", ["experiment=mine"])]
)
def test_precheck_group_file_without_global_package(tmp_path, capsys, group, option, args):
    """conf/local/default.yaml (or an experiment) without '# @package _global_' puts its keys under
    'local': the line says what the file must start with (it said "Unknown config key 'local'")."""
    folder = tmp_path / "conf" / group
    folder.mkdir(parents=True)
    (folder / f"{option}.yaml").write_text("seed: 3\n")
    argv = ["--config-dir", str(tmp_path / "conf"), *args, f"hydra.run.dir={tmp_path / 'r'}"]
    with pytest.raises(SystemExit) as info:
        p.precheck(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(
        f"vizpipe: error: Config file {group}/{option}.yaml puts its keys under '{group}', which is not a "
        "config key; to set top-level keys (seed: 1, cam: {method: scorecam}) it must start with the line "
        "'# @package _global_'"
    )
    (folder / f"{option}.yaml").write_text("# @package _global_\nseed: 3\n")
    argv[-1] = f"hydra.run.dir={tmp_path / 'r2'}"  # the refused run's folder holds its manifest
    assert isinstance(p.precheck(argv), list)
