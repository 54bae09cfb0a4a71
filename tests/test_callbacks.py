"""Hydra callbacks in-process: the sweep index once per sweep, torch threads per joblib worker;
whether a multirun's jobs run in this process."""

from __future__ import annotations

import os

import pytest
import vizpipe.pipeline.config_store  # noqa: F401 - registers the schema and hydra/sweeper=vizpipe
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict
from vizpipe.pipeline import CONF_DIR, callbacks


@pytest.fixture(scope="module")
def inner():
    """Hydra's config loader on conf/ (public API: the one ``initialize_config_dir`` sets up)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
    GlobalHydra.instance().clear()
    return loader


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
    """Inside a Hydra job: True for the basic launcher, False for another one (Hydra's choice)."""
    from hydra.core.hydra_config import HydraConfig
    from vizpipe.pipeline import cli

    try:
        cfg = inner.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
        assert cfg.hydra.runtime.choices["hydra/launcher"] == "basic"
        HydraConfig.instance().set_config(cfg)
        assert cli.jobs_run_here() is True
        cfg = inner.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
        with open_dict(cfg.hydra):
            cfg.hydra.runtime.choices["hydra/launcher"] = "joblib"
        HydraConfig.instance().set_config(cfg)
        assert cli.jobs_run_here() is False
    finally:
        HydraConfig.instance().cfg = None
