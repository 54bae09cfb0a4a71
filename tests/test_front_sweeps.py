"""Sweeps in-process: the deriving config loader, vizpipe's sweeper, JobChecker, callbacks, job folders."""

from __future__ import annotations

import os

import pytest
import vizpipe.pipeline.hydra  # noqa: F401 - registers hydra/sweeper=vizpipe
import vizpipe.pipeline.schema as schema
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict
from vizpipe.pipeline import callbacks, sweeps
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.precheck import CONF_DIR, Composer
from vizpipe.pipeline.sweeper import DerivingConfigLoader, VizpipeSweeper, VizpipeSweeperConf, _same


@pytest.fixture(scope="module")
def inner():
    return ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))


@pytest.fixture(scope="module")
def master(inner):
    return inner.load_configuration("config", overrides=["cam.target_class=1,2"], run_mode=RunMode.MULTIRUN)


def parse(lines):
    return OverridesParser.create().parse_overrides(lines)


# ------------------------------------------------------------------ DerivingConfigLoader


def test_value_jobs_proven_then_derived(inner, master):
    """First job of a key set is composed and proven; later ones are derived, equal to Hydra's."""
    d = DerivingConfigLoader(inner)
    d.swept = ["cam.target_class", "x"]
    a = d.load_sweep_config(master, ["cam.target_class=1"])
    assert (d.composed, d.derived) == (1, 0)
    assert d.kinds == {("cam.target_class",): "proven"}
    assert a.cam.target_class == 1
    assert a.hydra.job.env_set[schema.SWEPT_ENV] == "cam.target_class,x"
    b = d.load_sweep_config(master, ["cam.target_class=2"])
    assert (d.composed, d.derived) == (1, 1)
    assert b.cam.target_class == 2
    assert list(b.hydra.overrides.task) == ["cam.target_class=2"]
    assert b.hydra.job.override_dirname == "cam.target_class=2"
    assert b.hydra.job.env_set[schema.SWEPT_ENV] == "cam.target_class,x"
    assert _same(b, d._mark(inner.load_sweep_config(master, ["cam.target_class=2"])))
    assert master.cam.target_class != 2 or "cam.target_class=2" not in master.hydra.overrides.task


def test_structural_jobs_always_composed(inner, master):
    """Group, +, ~ and hydra.* overrides are composed by Hydra, never derived or proven."""
    d = DerivingConfigLoader(inner)
    for job in (["model=vgg11"], ["model=vgg11"], ["+cam.zz=1"], ["hydra.job.chdir=true"]):
        try:
            d.load_sweep_config(master, job)
        except Exception:  # noqa: BLE001 - composition errors are Hydra's to report
            pass
    assert d.derived == 0
    assert d.kinds == {}
    assert d.composed == 4
    assert d.groups == {"model": True}


def test_group_lookup_cached(inner):
    """_structural asks Hydra once per key whether it is a group."""
    d = DerivingConfigLoader(inner)
    (o,) = parse(["cam.layer=x"])
    assert d._structural(o) is False
    assert d.groups == {"cam.layer": False}
    (o,) = parse(["~cam.layer"])
    assert d._structural(o) is True
    (o,) = parse(["cam={a:1}"])
    assert d._structural(o) is True
    (o,) = parse(["++cam.layer=1"])
    assert d._structural(o) is True
    (o,) = parse(["cam@x=default"])
    assert d._structural(o) is True


def test_a_repeated_group_choice_is_derived(inner):
    """``run.py -m model=seed_net cam.target_class=1,2``: every job repeats ``model=seed_net``, the
    sweep's own choice; the jobs are proven and derived, equal to Hydra's; another choice is composed."""
    master = inner.load_configuration(
        "config", overrides=["model=seed_net", "cam.target_class=1,2"], run_mode=RunMode.MULTIRUN
    )
    d = DerivingConfigLoader(inner)
    a = d.load_sweep_config(master, ["model=seed_net", "cam.target_class=1"])
    assert d.kinds == {("model", "cam.target_class"): "proven"}
    b = d.load_sweep_config(master, ["model=seed_net", "cam.target_class=2"])
    assert (d.composed, d.derived) == (1, 1)
    assert (a.cam.target_class, b.cam.target_class) == (1, 2)
    assert b.model == master.model and b.hydra.runtime.choices.model == "seed_net"
    assert list(b.hydra.overrides.task) == ["model=seed_net", "cam.target_class=2"]
    assert _same(b, d._mark(inner.load_sweep_config(master, ["model=seed_net", "cam.target_class=2"])))
    c = d.load_sweep_config(master, ["model=vgg11", "cam.target_class=2"])
    assert (d.composed, d.derived) == (2, 1)
    assert c.hydra.runtime.choices.model == "vgg11"
    (o,) = parse(["+model=seed_net"])
    assert d._same_choice(master, o) is False


def test_refused_kind_stays_composed(inner):
    """When the derived config differs from Hydra's, the key set is refused and jobs stay composed."""
    master = inner.load_configuration("config", overrides=["model=seed_net"], run_mode=RunMode.MULTIRUN)
    d = DerivingConfigLoader(inner)
    d.load_sweep_config(master, ["cam.target_class=1"])
    assert d.kinds == {("cam.target_class",): "refused"}
    b = d.load_sweep_config(master, ["cam.target_class=2"])
    assert (d.composed, d.derived) == (2, 0)
    assert b.cam.target_class == 2
    assert "VIZPIPE_SWEPT" not in b.hydra.job.env_set


def test_unparsable_job_is_composed(inner, master):
    """An override the parser rejects goes to Hydra (which reports it)."""
    d = DerivingConfigLoader(inner)
    with pytest.raises(Exception):  # noqa: B017 - Hydra's own error
        d.load_sweep_config(master, ["cam.layer=[a"])
    assert d.composed == 1


def test_delegation(inner):
    """The loader's other methods are Hydra's."""
    d = DerivingConfigLoader(inner)
    assert d.get_search_path() is inner.get_search_path()
    assert d.get_group_options("model") == inner.get_group_options("model")
    assert d.list_groups("") == inner.list_groups("")
    assert d.get_sources() == inner.get_sources()
    cfg = d.load_configuration("config", overrides=["model=vgg11"], run_mode=RunMode.RUN)
    assert cfg.model.name == "vgg11"
    dl = d.compute_defaults_list("config", [], RunMode.RUN)
    assert dl is not None


def test_same_compares_content_and_flags():
    """_same: equal YAML and flags; a value or a struct flag differing makes them different."""
    a = OmegaConf.create({"x": 1, "hydra": {"y": 2}})
    b = OmegaConf.create({"x": 1, "hydra": {"y": 2}})
    assert _same(a, b)
    b.x = 3
    assert not _same(a, b)
    b.x = 1
    OmegaConf.set_struct(b, True)
    assert not _same(a, b)
    OmegaConf.set_struct(b, False)
    OmegaConf.set_readonly(b.hydra, True)
    assert not _same(a, b)
    c = OmegaConf.create({"x": 1, "hydra": {"y": 2}})
    OmegaConf.set_readonly(c, True)
    assert not _same(a, c)


# ------------------------------------------------------------------ VizpipeSweeper


def test_sweeper_conf_defaults():
    """hydra/sweeper=vizpipe's settings mirror the basic sweeper's."""
    conf = VizpipeSweeperConf()
    assert conf._target_ == "hydra_plugins.vizpipe_sweeper.VizpipeSweeper"
    assert conf.max_batch_size is None and conf.params is None


def test_split_arguments_keeps_swept_keys(inner):
    """split_arguments: the basic sweeper's batches; keys with several values go to the loader."""
    s = VizpipeSweeper.__new__(VizpipeSweeper)  # (Hydra's plugin scan may reload BasicSweeper's module)
    s.loader = DerivingConfigLoader(inner)
    batches = s.split_arguments(parse(["model=vgg11", "+cam.layer=a,b", "cam.target_class=1,2"]), None)
    assert [list(j) for j in batches[0]] == [
        ["model=vgg11", "+cam.layer=a", "cam.target_class=1"],
        ["model=vgg11", "+cam.layer=a", "cam.target_class=2"],
        ["model=vgg11", "+cam.layer=b", "cam.target_class=1"],
        ["model=vgg11", "+cam.layer=b", "cam.target_class=2"],
    ]
    assert s.loader.swept == ["cam.layer", "cam.target_class"]
    batches = s.split_arguments(parse(["a=1,2,3"]), 2)
    assert [len(b) for b in batches] == [2, 1]
    assert s.loader.swept == ["a"]


def test_validate_batch_skips_checked_jobs(monkeypatch):
    """Only jobs this process has not checked are handed to Hydra's check."""
    seen = []
    monkeypatch.setattr(BasicSweeper, "validate_batch_is_legal", lambda self, batch: seen.append(batch))
    s = VizpipeSweeper.__new__(VizpipeSweeper)
    sweeps.mark_checked([["front.a=1"]])
    s.validate_batch_is_legal([["front.a=1"]])
    assert seen == []
    s.validate_batch_is_legal([["front.a=1"], ["front.a=2"]])
    assert seen == [[["front.a=2"]]]


# ------------------------------------------------------------------ vizpipe.pipeline.sweeps


def test_jobs_product_order():
    """jobs: the basic sweeper's cartesian product, params first, then the command line."""
    assert sweeps.jobs(["a=1,2"], ["b=x,y"]) == [
        ["a=1", "b=x"],
        ["a=1", "b=y"],
        ["a=2", "b=x"],
        ["a=2", "b=y"],
    ]
    assert sweeps.jobs([], ["c=3"]) == [["c=3"]]


def test_mark_and_was_checked_ignore_order():
    """was_checked: a job marked in any order; others are not."""
    sweeps.mark_checked([["front.p=1", "front.q=2"]])
    assert sweeps.was_checked(["front.q=2", "front.p=1"])
    assert not sweeps.was_checked(["front.q=2"])
    assert not sweeps.was_checked(["front.q=3", "front.p=1"])


def test_job_checker_composes_once_per_structure():
    """Value-only jobs share one composition; a group override composes again; bad values fail."""
    with Composer(CONF_DIR, "config", []) as c:
        checker = sweeps.JobChecker(c)
        for t in (1, 2, 3):
            checker.check(["model=seed_net", "input=random", "stages=[summary]", f"cam.target_class={t}"])
        assert checker.compositions == 1
        assert checker.groups == {"model": True, "input": True, "stages": False, "cam.target_class": False}
        checker.check(["model=vgg11", "input=random", "stages=[summary]"])
        assert checker.compositions == 2
        with pytest.raises(ConfigError) as info:
            checker.check(["model=seed_net", "input=random", "stages=[summary]", "seed=abc"])
        assert (
            str(info.value) == "Invalid value 'abc' for seed: expected an integer (see the comments in conf/)"
        )
        with pytest.raises(ConfigError, match=r"^Unknown config key 'cam.nope'"):
            checker.check(["model=seed_net", "input=random", "stages=[summary]", "cam.nope=1"])
        with pytest.raises(ConfigError, match=r"^Unknown stage 'zz'"):
            checker.check(["model=seed_net", "input=random", "stages=[zz]"])
        assert checker.compositions == 2


def test_job_checker_structural_kinds():
    """+, ~, hydra keys, dict values and packages are structural; plain values are not."""
    with Composer(CONF_DIR, "config", []) as c:
        checker = sweeps.JobChecker(c)
        lines = ["+a.b=1", "++a.b=1", "~a.b", "hydra.job.chdir=true", "hydra/launcher=basic", "cam={a:1}"]
        for line in lines:
            (o,) = checker.parser.parse_overrides([line])
            assert checker._structural(o) is True, line
        (o,) = checker.parser.parse_overrides(["cam.layer=x"])
        assert checker._structural(o) is False
        (o,) = checker.parser.parse_overrides(["hydrax=1"])
        assert checker._structural(o) is False


# ------------------------------------------------------------------ callbacks


def sweep_cfg(path):
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(path)}}})


def test_multirun_end_writes_index(tmp_path):
    """on_multirun_end writes <sweep>/index.html and clears the pending atexit job."""
    cb = callbacks.SweepReportCallback()
    cb._pending = tmp_path
    cb.on_multirun_end(sweep_cfg(tmp_path))
    assert (tmp_path / "index.html").is_file()
    assert cb._pending is None


def test_multirun_end_failure_is_a_warning(tmp_path, monkeypatch, caplog):
    """A failing index never raises: a warning names the error."""
    import vizpipe.pipeline.report as report

    def broken(sweep):
        raise OSError("no room")

    monkeypatch.setattr(report, "write_sweep_index", broken)
    callbacks.SweepReportCallback().on_multirun_end(sweep_cfg(tmp_path))
    assert "Sweep index not written: no room" in caplog.text


def test_multirun_start_and_at_exit(tmp_path, monkeypatch, capsys):
    """on_multirun_start registers the atexit writer, which writes the index once and prints it."""
    registered = []
    monkeypatch.setattr(callbacks.atexit, "register", registered.append)
    cb = callbacks.SweepReportCallback()
    cb.on_multirun_start(sweep_cfg(tmp_path))
    assert cb._pending == tmp_path
    assert registered == [cb._at_exit]
    cb._at_exit()
    assert capsys.readouterr().out == f"vizpipe: sweep index {tmp_path / 'index.html'}\n"
    assert cb._pending is None
    cb._at_exit()  # nothing pending: nothing printed
    assert capsys.readouterr().out == ""


def test_at_exit_missing_folder_and_failure(tmp_path, monkeypatch, capsys):
    """No sweep folder: nothing; a failing index: one warning line."""
    cb = callbacks.SweepReportCallback()
    cb._pending = tmp_path / "none"
    cb._at_exit()
    assert capsys.readouterr().out == ""
    import vizpipe.pipeline.report as report

    def broken(sweep):
        raise OSError("boom")

    monkeypatch.setattr(report, "write_sweep_index", broken)
    cb._pending = tmp_path
    cb._at_exit()
    assert capsys.readouterr().out == "vizpipe: warning: sweep index not written: boom\n"


def test_job_end_only_after_failure(tmp_path, monkeypatch):
    """on_job_end rebuilds nothing for a job that did not fail."""
    from types import SimpleNamespace

    from hydra.core.utils import JobStatus

    calls = []
    monkeypatch.setattr(callbacks.SweepReportCallback, "_rebuild", staticmethod(calls.append))
    cb = callbacks.SweepReportCallback()
    cb.on_job_end(sweep_cfg(tmp_path), SimpleNamespace(status=JobStatus.COMPLETED))
    cb.on_job_end(sweep_cfg(tmp_path), None)
    assert calls == []
    # failed, but no Hydra job running: a warning, no exception
    cb.on_job_end(sweep_cfg(tmp_path), SimpleNamespace(status=JobStatus.FAILED))
    assert calls == []


def test_cores(monkeypatch):
    """cores: the affinity set's size; without it cpu_count, or 1."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert callbacks.cores() == 3

    def missing(pid):
        raise OSError

    monkeypatch.setattr(os, "sched_getaffinity", missing, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert callbacks.cores() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert callbacks.cores() == 1


def test_joblib_threads_boundaries():
    """joblib_threads: cores split between workers, at least 1; -1 all cores, -2 all but one."""
    assert callbacks.joblib_threads(3, 12) == 4
    assert callbacks.joblib_threads(5, 12) == 2
    assert callbacks.joblib_threads(-1, 12) == 1
    assert callbacks.joblib_threads(-3, 12) == 1
    assert callbacks.joblib_threads(-12, 12) == 12
    assert callbacks.joblib_threads(-11, 12) == 6
    assert callbacks.joblib_threads(-20, 4) == 4
    assert callbacks.joblib_threads(1, 1) == 1


def test_torch_threads_outside_hydra_and_other_launchers(inner, monkeypatch):
    """No Hydra job: nothing; a non-joblib launcher: threads untouched; joblib: cores // n_jobs."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    before = torch.get_num_threads()
    HydraConfig.instance().cfg = None
    callbacks.TorchThreadsCallback().on_job_start(OmegaConf.create({}))
    assert torch.get_num_threads() == before
    cfg = inner.load_configuration("config", overrides=[], run_mode=RunMode.RUN)
    OmegaConf.set_readonly(cfg, False)
    monkeypatch.setattr(callbacks, "cores", lambda: 4)
    try:
        HydraConfig.instance().set_config(cfg)
        callbacks.TorchThreadsCallback().on_job_start(cfg)
        assert torch.get_num_threads() == before
        OmegaConf.set_readonly(cfg.hydra, False)
        with open_dict(cfg.hydra):
            cfg.hydra.launcher = {
                "_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher",
                "n_jobs": 2,
            }
        HydraConfig.instance().set_config(cfg)
        callbacks.TorchThreadsCallback().on_job_start(cfg)
        assert torch.get_num_threads() == 2
        OmegaConf.set_readonly(cfg.hydra, False)
        cfg.hydra.launcher.n_jobs = None
        HydraConfig.instance().set_config(cfg)
        callbacks.TorchThreadsCallback().on_job_start(cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        HydraConfig.instance().cfg = None


# ------------------------------------------------------------------ job folder names


def job_root(task, swept=None, exclude=()):
    env = {schema.SWEPT_ENV: swept} if swept is not None else {}
    return OmegaConf.create(
        {
            "hydra": {
                "overrides": {"task": task},
                "job": {"env_set": env, "config": {"override_dirname": {"exclude_keys": list(exclude)}}},
                "sweeper": {"params": None},
            }
        }
    )


def test_job_dirname_from_swept_keys(monkeypatch):
    """The folder name holds the swept keys, sorted; without them all overrides; excluded keys never."""
    monkeypatch.setattr("sys.argv", ["run.py"])
    root = job_root(
        ["model=vgg11", "+cam.layer=l4", "cam.target_class=7"], swept="cam.target_class,cam.layer"
    )
    assert schema.job_dirname(_root_=root) == "cam.layer=l4,cam.target_class=7"
    root = job_root(["model=vgg11", "cam.layer=l4"], swept="")
    assert schema.job_dirname(_root_=root) == "cam.layer=l4,model=vgg11"
    root = job_root(["model=vgg11", "cam.layer=l4", "seed=1"], swept="", exclude=["seed"])
    assert schema.job_dirname(_root_=root) == "cam.layer=l4,model=vgg11"


def test_swept_keys_from_params_and_argv(monkeypatch):
    """Without the sweeper's mark: sweeps among hydra.sweeper.params and the command line."""
    monkeypatch.setattr("sys.argv", ["run.py", "-m", "a.b=1,2", "c=3", "bad=[x", "d=4,5"])
    root = OmegaConf.create(
        {"hydra": {"job": {"env_set": {}}, "sweeper": {"params": {"e": "1,2", "f": "3"}}}}
    )
    assert schema._swept_keys(root) == {"a.b", "d", "e"}
    root = OmegaConf.create({"hydra": {"job": {"env_set": {schema.SWEPT_ENV: "x,,y"}}}})
    assert schema._swept_keys(root) == {"x", "y"}
    monkeypatch.setattr("sys.argv", ["run.py", "+g=1,2"])
    assert schema._swept_keys(OmegaConf.create({"hydra": {}})) == {"g"}


def with_mode(inner, sweep_dir, mode):
    """A composed config whose hydra.mode is ``mode`` (Hydra sets it when it starts the job)."""
    cfg = inner.load_configuration("config", overrides=[f"hydra.sweep.dir={sweep_dir}"], run_mode=mode)
    cfg.hydra.mode = mode
    return cfg


def test_job_end_after_failure_in_multirun(inner, tmp_path, monkeypatch):
    """A failed job of a multirun: the index of the sweep folder is rebuilt; in a single run it is not."""
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobStatus

    calls = []
    monkeypatch.setattr(callbacks.SweepReportCallback, "_rebuild", staticmethod(calls.append))
    failed = SimpleNamespace(status=JobStatus.FAILED)
    try:
        cfg = with_mode(inner, tmp_path, RunMode.MULTIRUN)
        HydraConfig.instance().set_config(cfg)
        callbacks.SweepReportCallback().on_job_end(cfg, failed)
        assert calls == [tmp_path]
        cfg = with_mode(inner, tmp_path, RunMode.RUN)
        HydraConfig.instance().set_config(cfg)
        callbacks.SweepReportCallback().on_job_end(cfg, failed)
        assert calls == [tmp_path]
    finally:
        HydraConfig.instance().cfg = None


def test_job_end_rebuild_failure_is_a_warning(inner, tmp_path, monkeypatch, caplog):
    """A failing rebuild after a failed job logs a warning, never raises."""
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobStatus

    def broken(sweep):
        raise OSError("full")

    monkeypatch.setattr(callbacks.SweepReportCallback, "_rebuild", staticmethod(broken))
    try:
        cfg = with_mode(inner, tmp_path, RunMode.MULTIRUN)
        HydraConfig.instance().set_config(cfg)
        callbacks.SweepReportCallback().on_job_end(cfg, SimpleNamespace(status=JobStatus.FAILED))
    finally:
        HydraConfig.instance().cfg = None
    assert "Sweep index not updated: full" in caplog.text


def test_rebuild_returns_index_path(tmp_path):
    """_rebuild writes the index and returns its path."""
    assert callbacks.SweepReportCallback._rebuild(tmp_path) == tmp_path / "index.html"
    assert (tmp_path / "index.html").is_file()


def test_jobs_run_here_from_launcher(inner):
    """Inside a Hydra job: True for the basic launcher, False for another one."""
    from hydra.core.hydra_config import HydraConfig
    from vizpipe.pipeline import cli

    try:
        cfg = inner.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
        HydraConfig.instance().set_config(cfg)
        assert cli.jobs_run_here() is True
        cfg = inner.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
        with open_dict(cfg.hydra):
            cfg.hydra.launcher = {"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher"}
        HydraConfig.instance().set_config(cfg)
        assert cli.jobs_run_here() is False
    finally:
        HydraConfig.instance().cfg = None
