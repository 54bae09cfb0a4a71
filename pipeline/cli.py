"""The command line (``python run.py``, ``vizpipe``, ``python -m vizpipe``): one entry for all three.

``command_line`` checks the command line, runs Hydra's ``main`` and ends the process (through
``vizpipe.pipeline.process``, which owns the process-wide settings).
``precheck`` (``vizpipe.pipeline.precheck``) turns a bad command line into one line and exit 2,
and claims the run folder before Hydra writes in it; ``finish`` prints where a run went and
exits 1 on failure; in a sweep, failed jobs are counted and ``sweep_exit`` ends the process with
1 after the others ran. SIGINT (Ctrl-C) and SIGTERM end a run the same way: one line
(``interrupted``: the signal, the folder and the command that resumes it) and exit 130 / 143.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import vizpipe.pipeline.config_store  # noqa: F401 - registers the config schema and resolvers
from hydra.errors import CompactHydraException
from omegaconf import DictConfig
from vizpipe.pipeline import CONF_DIR, sweeps
from vizpipe.pipeline.argv import after_overrides
from vizpipe.pipeline.errors import Interrupted, VizpipeError
from vizpipe.pipeline.manifest import record_typed
from vizpipe.pipeline.precheck import fail, precheck
from vizpipe.pipeline.process import (
    freeze_imports,
    freeze_startup,
    keep_freed_memory,
    reproducible_math,
    run_then_exit,
    stop_on_signals,
)
from vizpipe.pipeline.trust import TRUST_FLAG


class PipelineFailed(CompactHydraException):
    """Raised inside a multirun job of a launcher's worker process so the launcher marks it failed.

    A ``CompactHydraException``: when Hydra ends the sweep with it, it prints the one line, no traceback.
    """


# =========================================================================== the exit

#: Failed multirun jobs of this process, for the exit code after the sweep (basic launcher: the
#: jobs run here, one after another). Deliberately process-wide; read once by ``sweep_exit``.
_FAILED_JOBS: list[str] = []
#: the ``hydra/launcher`` choice that runs every job in the process that started the sweep
BASIC_LAUNCHER = "basic"


def jobs_run_here() -> bool:
    """True when this multirun's jobs run in the process that started it (Hydra's basic launcher).

    Other launchers (joblib, submitit, ray) run jobs in worker processes, which need not be
    children of this one (submitit, ray): the launcher's config says which, not the process tree.
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get("hydra/launcher") == BASIC_LAUNCHER
    except ValueError:  # HydraConfig is not set: called outside a Hydra job
        import multiprocessing

        return multiprocessing.parent_process() is None


def finish(result: Any, *, multirun: bool) -> None:
    """Print the run folder (and report); on failure exit non-zero, or inside a sweep remember it.

    A failed sweep job does not raise (Hydra would print a traceback and skip the sweep's end
    callbacks): the other jobs go on, and ``sweep_exit`` ends the process with status 1. In a
    launcher's worker process (``jobs_run_here`` is False) the job raises ``PipelineFailed`` so
    that launcher sees the failure; Hydra then exits 1 once the batch of jobs has finished.
    """
    print(f"vizpipe: run folder {result.output_dir}")
    if result.report_path is not None:
        print(f"vizpipe: report {result.report_path}")
    if result.ok:
        return
    details = f"details: {result.output_dir / 'run.log'}, manifest: {result.manifest_path}"
    message = f"{result.error or result.status} ({details})"
    if multirun:
        if not jobs_run_here():
            raise PipelineFailed(f"vizpipe: error: job {result.output_dir.name} failed: {message}")
        print(f"vizpipe: error: job {result.output_dir.name} failed: {message}", file=sys.stderr)
        _FAILED_JOBS.append(f"{result.output_dir.name}: {result.error or result.status}")
        return
    print(f"vizpipe: error: {message}", file=sys.stderr)
    sys.exit(1)


def sweep_exit() -> None:
    """After ``-m``: exit 1 with one summary line when any job of this process failed."""
    if _FAILED_JOBS:
        first = _FAILED_JOBS[0]
        more = f" (and {len(_FAILED_JOBS) - 1} more)" if len(_FAILED_JOBS) > 1 else ""
        print(f"vizpipe: error: {len(_FAILED_JOBS)} sweep job(s) failed: {first}{more}", file=sys.stderr)
        sys.exit(1)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    """Run the pipeline into Hydra's run (or job) folder."""
    from hydra.core.hydra_config import HydraConfig
    from vizpipe.pipeline.run_folder import resuming
    from vizpipe.pipeline.runner import run_pipeline

    hc = HydraConfig.get()
    multirun = str(hc.mode) == "RunMode.MULTIRUN"
    keep_freed_memory()  # this process is the command line's: steps reuse freed memory (process.py)
    try:
        with stop_on_signals():  # also in a launcher's worker, for the job's duration
            result = run_pipeline(
                cfg,
                hc.runtime.output_dir,
                overrides=list(hc.overrides.task),
                sweep=sweeps.values_of(hc.job.env_set),
                # a sweep's job may finish what an earlier try of it left in its folder (a launcher's
                # retry: Ray's max_retries, submitit's requeue): the sweep folder was empty when claimed
                resume=multirun or resuming(hc.job.env_set),
            )
    except KeyboardInterrupt as exc:
        if multirun and not jobs_run_here():  # a worker: the job ends, the worker and the others go on
            name = getattr(exc, "signal_name", "SIGINT")
            raise PipelineFailed(
                f"vizpipe: error: job {Path(hc.runtime.output_dir).name} interrupted by {name}; "
                "finish it with resume=<sweep folder>"
            ) from None
        raise
    finish(result, multirun=multirun)


#: Hydra's job name, hence ``<run>/run.log``, however vizpipe was started (run.py, vizpipe, -m vizpipe)
JOB_NAME = "run"


def command_line_args(argv: list[str]) -> list[str]:
    """The command line as Hydra gets it: ``--config-path``/``-cp`` made absolute from the launch
    folder (Hydra reads a relative one from the folder of the file declaring ``main``, inside
    vizpipe) and the job named ``run`` (Hydra names it after that file), so the log is ``run.log``."""
    out = list(argv)
    for i, arg in enumerate(out):
        for flag in ("--config-path", "-cp"):
            if arg == flag and i + 1 < len(out):
                out[i + 1] = str(Path(out[i + 1]).expanduser().resolve())
            elif arg.startswith(flag + "="):
                out[i] = f"{flag}={Path(arg.split('=', 1)[1]).expanduser().resolve()}"
    if not any(a.lstrip("+~").startswith("hydra.job.name=") for a in out):
        out.insert(after_overrides(out), f"hydra.job.name={JOB_NAME}")
    return out


def cli() -> None:
    """Check Hydra's version and the command line, run it through Hydra, end a sweep with its status."""
    from vizpipe.pipeline.ownership import release_all

    try:
        import vizpipe.pipeline.hydra.private  # noqa: F401 - fails on a Hydra version vizpipe was not tested with
    except VizpipeError as exc:
        fail(str(exc))
    freeze_imports()  # later garbage collections skip what the imports made (process.py)
    typed = [a for a in sys.argv[1:] if a != TRUST_FLAG]  # as typed (for the resume hint)
    record_typed(sys.argv[1:])  # the manifest's and report's command: what the user typed
    hydra_args: list[str] | None = None  # the command line Hydra gets, once the folder is claimed
    with stop_on_signals():
        try:
            argv = precheck(command_line_args(sys.argv[1:]))
            hydra_args = [a for a in argv if a != TRUST_FLAG]  # the command line's own, not Hydra's
            sys.argv[1:] = hydra_args
            freeze_startup()  # the precheck's garbage collected, the rest frozen, gc on (process.py)
            main()
            sweep_exit()
        except KeyboardInterrupt as exc:
            interrupted(exc, typed, hydra_args)
        finally:
            release_all()


def interrupted(exc: KeyboardInterrupt, typed: list[str], hydra_args: list[str] | None) -> None:
    """One line for a run stopped by SIGINT or SIGTERM (what was kept, how to resume); exit 130/143."""
    name = getattr(exc, "signal_name", "SIGINT")
    code = getattr(exc, "code", 130) if isinstance(exc, Interrupted) else 130
    folder = _claimed_folder(hydra_args) if hydra_args is not None else None
    message = f"vizpipe: interrupted by {name}"
    if folder is not None and folder.exists():
        import shlex

        again = [
            a
            for a in typed
            if not a.lstrip("+~").startswith(("resume=", "hydra.run.dir=", "hydra.sweep.dir="))
        ]
        command = shlex.join(["python", "run.py", *again, f"resume={folder}"])
        message += f"; every finished file is kept in {folder}; finish the run with: {command}"
    print(message, file=sys.stderr)
    sys.exit(code)


def _claimed_folder(argv: list[str]) -> Path | None:
    """The run (or sweep) folder the precheck named for Hydra (None before it did)."""
    from vizpipe.pipeline.sweeps import parse

    key = "hydra.sweep.dir" if any(a in ("-m", "--multirun") for a in argv) else "hydra.run.dir"
    for arg in reversed(argv):
        if arg.partition("=")[0] == key:
            try:
                return Path(str(parse([arg])[0].value()))
            except Exception:  # noqa: BLE001 - not a readable override: nothing to name
                return None
    return None


def command_line() -> None:
    """The console entry: ``cli`` and then the process's end without Python's slow teardown."""
    reproducible_math()  # before any math: MKL reads it at its first call (process.py)
    run_then_exit(cli)


__all__ = [
    "PipelineFailed",
    "command_line_args",
    "cli",
    "command_line",
    "finish",
    "interrupted",
    "jobs_run_here",
    "main",
    "precheck",
    "sweep_exit",
]
