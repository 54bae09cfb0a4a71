"""Sweeps survive their workers: a launcher that loses a worker process does not lose the sweep.

Hydra's launchers give up at the first job whose worker process dies: joblib's pool breaks and
stops every other worker with it (``TerminatedWorkerError``), submitit raises for the first job
without a result, Ray for the first crashed task; the jobs after it are never run, or never
recorded, and a job stays ``running`` forever. ``SurvivingLauncher`` wraps the sweep's launcher
(vizpipe's sweeper, ``vizpipe.pipeline.sweeper``). When ``launch`` raises, it

1. waits until no job of the batch still runs (submitit's and Ray's other jobs go on);
2. reads every job's folder: a job that ended (ok, failed, interrupted) is done; a job whose
   process was killed is marked ``failed``, with the signal when it is known and how to resume
   it (``mark_killed``); a job that never started, or one joblib stopped only because another
   of its workers died, runs again;
3. launches those again, each in its own folder (``DerivingConfigLoader.places``), resumed from
   its progress record, and so on until every job has ended or was killed (a round in which
   nothing ends gives up with the launcher's error).

The sweep then ends as a sweep with a failed job does: every job in the index with its state,
exit 1, and ``resume=<sweep folder>`` runs the jobs that did not finish.

Which worker was killed, and by which signal: ``DeathWatch`` holds a Linux pidfd on every job
process on this host and notes the order in which they exit and the signal that ended each
(read from ``/proc`` while the process is a zombie, or ``waitid`` for a child of this process;
else the launcher's message, e.g. joblib's ``SIGKILL(-9)``). When one of joblib's workers dies
its pool kills the others: a job whose process died after the first was stopped by the pool and
runs again. Launchers whose jobs do not take each other down (submitit, Ray): every job whose
process died was killed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["DeathWatch", "SurvivingLauncher", "mark_killed"]

POLL_S = 1.0  # how often the wait for a batch's running jobs looks again


def _exit_signal(pid: int) -> str | None:
    """The signal that ended ``pid``, read while it is a zombie (``/proc/<pid>/stat`` field 52)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = int(fields[49]) if fields[0] == "Z" else None
    except (OSError, IndexError, ValueError):
        return None
    if status is None or not status & 0x7F:
        return None
    try:
        return signal.Signals(status & 0x7F).name
    except ValueError:
        return f"signal {status & 0x7F}"


class DeathWatch:
    """Which job processes on this host exited, in order, and by which signal (Linux pidfds)."""

    def __init__(self, folders: Any) -> None:
        self.folders = folders  # () -> the job folders to look in for their owners' process ids
        self.events: list[tuple[set[int], dict[int, str]]] = []  # (pids seen exited at once, pid -> signal)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vizpipe-deathwatch", daemon=True)
        self.enabled = hasattr(os, "pidfd_open") and hasattr(os, "P_PIDFD")

    def __enter__(self) -> DeathWatch:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        from vizpipe.pipeline.ownership import read_owner

        poller = select.poll()
        fds: dict[int, int] = {}  # fd -> pid
        seen: set[int] = set()
        last_scan = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() - last_scan > 0.5:
                    last_scan = time.monotonic()
                    for folder in self.folders():
                        owner = read_owner(folder)
                        if owner is None or owner.pid in seen or owner.host != socket.gethostname():
                            continue
                        seen.add(owner.pid)
                        try:
                            fd = os.pidfd_open(owner.pid)
                        except OSError:
                            continue
                        fds[fd] = owner.pid
                        poller.register(fd, select.POLLIN)
                ready = poller.poll(50)
                if ready:
                    self._note([fd for fd, _ in ready], fds, poller)
        finally:
            for fd in fds:
                os.close(fd)

    def _note(self, ready: list[int], fds: dict[int, int], poller: Any) -> None:
        pids, signals = set(), {}
        for fd in ready:
            pid = fds[fd]
            pids.add(pid)
            name = _exit_signal(pid)  # a zombie, not yet reaped by its parent
            if name is None:
                try:  # a child of this process: ask without reaping it
                    info = os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOWAIT | os.WNOHANG)
                    if info is not None and info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
                        name = signal.Signals(info.si_status).name
                except (OSError, ValueError):
                    pass  # reaped already: the launcher's message may name the signal
            if name is not None:
                signals[pid] = name
            poller.unregister(fd)
        self.events.append((pids, signals))

    def first_killed(self, candidates: set[int]) -> tuple[set[int], dict[int, str]] | None:
        """Of ``candidates`` (processes of jobs left running), those that exited first, with signals."""
        for pids, signals in self.events:
            hit = pids & candidates
            if hit:
                return hit, signals
        return None


def _signal_in(exc: BaseException) -> str | None:
    found = re.search(r"\b(SIG[A-Z]+[0-9]*)\b", str(exc))
    return found.group(1) if found else None


def mark_killed(folder: Path, signal_name: str | None, resume: str) -> None:
    """Record in ``folder``'s manifest that its job's process was killed (status failed)."""
    from vizpipe.pipeline.files import write_atomic
    from vizpipe.pipeline.manifest import MANIFEST, settled
    from vizpipe.pipeline.ownership import claim

    how = f"killed by {signal_name}" if signal_name else "killed (the launcher reported no signal)"
    message = f"the worker process running this job was {how}"
    held = claim(folder, resume=True)
    try:
        try:
            doc = settled(json.loads((folder / MANIFEST).read_text(encoding="utf-8")), folder)
        except (OSError, ValueError):
            doc = {
                "run_dir": str(folder.resolve()),
                "stages": [],
                "setup": {"name": "setup", "status": "interrupted"},
            }
        doc["status"] = "failed"
        for rec in [doc.get("setup"), *(doc.get("stages") or []), doc.get("report")]:
            if isinstance(rec, dict) and rec.get("status") in ("interrupted", "running"):
                rec.update(status="failed", error=message, error_type="WorkerKilled")
        doc["interrupted"] = {"signal": signal_name, "why": message, "resume": resume}
        write_atomic(folder / MANIFEST, json.dumps(doc, indent=2, default=str) + "\n")
    finally:
        held.release()


class SurvivingLauncher:
    """A Hydra launcher that finishes its batch when a worker dies (see the module docstring)."""

    def __init__(self, inner: Any, sweeper: Any) -> None:
        self.inner = inner
        self.sweeper = sweeper

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def _sweep_dir(self) -> Path:
        return Path(str(self.sweeper.config.hydra.sweep.dir))

    def _pool_stops_others(self) -> bool:
        """joblib's pool stops all its workers when one dies (submitit's and Ray's jobs go on)."""
        return "joblib" in type(self.inner).__module__.lower()

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        """Hydra's ``launch``, until every job ended or was killed; one ``JobReturn`` per job."""
        batch = [list(job) for job in job_overrides]
        results: dict[int, Any] = {}
        todo = list(range(len(batch)))
        while todo:
            jobs = [batch[i] for i in todo]
            watch = DeathWatch(self._job_dirs)
            try:
                with watch:
                    got = self.inner.launch(jobs, initial_job_idx=initial_job_idx)
                results.update(zip(todo, got, strict=True))
                todo = []
            except Exception as exc:  # noqa: BLE001 - a lost worker: recover, or give up with it
                ended, again = self._recover(jobs, exc, watch, initial_job_idx, todo)
                if not ended:
                    raise
                results.update({todo[k]: r for k, r in ended.items()})
                todo = [todo[k] for k in again]
        return [results[i] for i in range(len(batch))]

    def _job_dirs(self) -> list[Path]:
        folder = self._sweep_dir
        return (
            [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
            if folder.is_dir()
            else []
        )

    def _folders(self, jobs: list[list[str]]) -> dict[frozenset[str], Path]:
        from vizpipe.pipeline import sweeps

        wanted = {frozenset(job) for job in jobs}
        return {k: v for k, v in sweeps.job_folders(self._sweep_dir).items() if k in wanted}

    def _wait(self, jobs: list[list[str]]) -> dict[frozenset[str], Path]:
        """The jobs' folders once none of them has a live owner."""
        from vizpipe.pipeline.ownership import OWNER, alive, read_owner

        while True:
            folders = self._folders(jobs)
            running = [
                f for f in folders.values() if (o := read_owner(f)) is not None and alive(o, f / OWNER)
            ]
            if not running:
                return folders
            log.info("A worker was lost; waiting for %d job(s) still running", len(running))
            time.sleep(POLL_S)

    def _recover(
        self, jobs: list[list[str]], exc: Exception, watch: DeathWatch, first_idx: int, todo: list[int]
    ) -> tuple[dict[int, Any], list[int]]:
        """(position -> JobReturn of the jobs that ended or were killed, positions to launch again)."""
        from vizpipe.pipeline.manifest import MANIFEST, settled
        from vizpipe.pipeline.ownership import read_owner

        log.warning("The launcher lost a worker (%s); finishing the sweep", " ".join(str(exc).split())[:300])
        folders = self._wait(jobs)
        docs: dict[int, Any] = {}
        dead: dict[int, int] = {}  # position -> pid of a job left running
        for k, job in enumerate(jobs):
            folder = folders.get(frozenset(job))
            if folder is None:
                continue
            try:
                docs[k] = settled(json.loads((folder / MANIFEST).read_text(encoding="utf-8")), folder)
            except (OSError, ValueError):
                docs[k] = None
            owner = read_owner(folder)
            running = (
                docs[k] is None
                or docs[k].get("status") in ("running", "interrupted")
                and not docs[k].get("interrupted", {}).get("signal")
            )
            if owner is not None and running:
                dead[k] = owner.pid
        killed, signals = self._killed(dead, watch)
        ended: dict[int, Any] = {}
        again: list[int] = []
        fallback = _signal_in(exc)
        for k, job in enumerate(jobs):
            folder = folders.get(frozenset(job))
            if k in killed:
                assert folder is not None
                mark_killed(folder, signals.get(dead[k]) or fallback, self._resume_hint())
                ended[k] = self._job_return(job, folder)
            elif k in dead or docs.get(k) is None:
                again.append(k)
            else:
                ended[k] = self._job_return(job, folder)
        self._place(jobs, again, first_idx, todo, folders)
        return ended, again

    def _killed(self, dead: dict[int, int], watch: DeathWatch) -> tuple[set[int], dict[int, str]]:
        """The positions of the jobs whose process was killed (not stopped by the pool after it)."""
        if not dead:
            return set(), {}
        signals = {pid: name for _, found in watch.events for pid, name in found.items()}
        first = watch.first_killed(set(dead.values())) if self._pool_stops_others() else None
        if first is None:
            return set(dead), signals
        pids, _ = first
        return {k for k, pid in dead.items() if pid in pids}, signals

    def _place(
        self,
        jobs: list[list[str]],
        again: list[int],
        first_idx: int,
        todo: list[int],
        folders: dict[Any, Path],
    ) -> None:
        """Jobs launched again keep their folder (or the one their number gives them)."""
        from omegaconf import OmegaConf

        raw = str(OmegaConf.to_container(self.sweeper.config.hydra.sweep, resolve=False).get("subdir"))
        for k in again:
            folder = folders.get(frozenset(jobs[k]))
            number = str(first_idx + todo[k])
            name = folder.name if folder is not None else raw.replace("${hydra.job.num}", number)
            self.sweeper.loader.places[frozenset(jobs[k])] = name

    def _resume_hint(self) -> str:
        import shlex
        import sys

        args = [
            a
            for a in sys.argv[1:]
            if not a.lstrip("+").startswith(("hydra.sweep.dir=", "hydra.job.env_set."))
        ]
        return shlex.join(["python", "run.py", *args, f"resume={self._sweep_dir}"])

    @staticmethod
    def _job_return(job: list[str], folder: Path | None) -> Any:
        """A ``JobReturn`` for a job from its manifest (failed: raising ``PipelineFailed``)."""
        from hydra.core.utils import JobReturn, JobStatus
        from vizpipe.pipeline.cli import PipelineFailed
        from vizpipe.pipeline.manifest import MANIFEST, settled

        ret = JobReturn(overrides=list(job), working_dir=str(folder) if folder else None, task_name="run")
        doc = None
        if folder is not None:
            try:
                doc = settled(json.loads((folder / MANIFEST).read_text(encoding="utf-8")), folder)
            except (OSError, ValueError):
                doc = None
        if doc is not None and doc.get("status") == "ok":
            ret.status = JobStatus.COMPLETED
            ret._return_value = None
            return ret
        why = (doc or {}).get("interrupted", {}).get("why") or (doc or {}).get("status") or "no manifest"
        name = folder.name if folder is not None else ",".join(job)
        ret.status = JobStatus.FAILED
        ret._return_value = PipelineFailed(f"vizpipe: error: job {name} failed: {why}")
        return ret
