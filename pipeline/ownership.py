"""One owner per run folder: a run (or a sweep) claims its folder before anything is written in it.

The claim is ``<folder>/.vizpipe/owner.json``, written whole and then hard-linked into place
(``O_CREAT | O_EXCL`` where there are no hard links): of two
processes that claim one folder at once, exactly one creates it and the other is refused
(``FolderTaken``, one line). The command line claims the run (or sweep) folder in its precheck,
before Hydra writes ``.hydra/`` or ``run.log`` there, and hands Hydra that folder; a job of a
sweep, ``vizpipe.inspect`` and a direct ``run_pipeline`` call claim theirs through the same
``claim``. A folder that already holds another run's files is refused before anything is
written in it (the earlier run's files stay byte for byte as they were).

The claim records the owner: process id, host, start time and the process's start tick
(``/proc/<pid>/stat``, which tells a reused process id apart). While a run holds its claim a
daemon thread touches the file every ``HEARTBEAT_S`` seconds. ``alive(owner)`` says whether an
owner still runs: on its own host by its process (a zombie counts as gone), elsewhere (a
shared file system) by the heartbeat, older than ``STALE_S`` meaning gone. A run that ends,
however it ends short of a ``kill -9``, releases its claim (the manifest then says how it
ended); a claim whose owner is gone marks a run that was killed, which ``resume=`` takes over.

``claim_new(base)`` picks a new timestamped folder: ``base``, else ``base_1``, ``base_2``, ...,
claimed atomically, so two runs started in the same second get two folders.

``.vizpipe/`` is the run folder's own bookkeeping, never an artifact: the claim and the stages'
progress records (``vizpipe.pipeline.progress``).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vizpipe.pipeline.errors import ConfigError

__all__ = [
    "HIDDEN",
    "OWNER",
    "Claim",
    "FolderTaken",
    "Owner",
    "alive",
    "claim",
    "claim_new",
    "describe",
    "held",
    "read_owner",
    "release_all",
]

HIDDEN = ".vizpipe"  # the run folder's own bookkeeping: the claim, the progress records
OWNER = f"{HIDDEN}/owner.json"
MANIFEST = "manifest.json"  # the run's record (vizpipe.pipeline.manifest writes it; its status read here)
HEARTBEAT_S = 10.0  # the claim file's mtime is touched this often while its run goes on
STALE_S = 120.0  # an owner on another host whose heartbeat is older than this has gone
MAX_SUFFIX = 1000  # claim_new tries base, base_1 .. base_999

#: the claims this process holds: absolute folder -> Claim
_HELD: dict[str, Claim] = {}
_LOCK = threading.Lock()


class FolderTaken(ConfigError):
    """The folder belongs to another run (running, interrupted, or finished): one line, with a fix."""


@dataclass
class Owner:
    """Who holds a claim."""

    pid: int
    host: str
    started: str  # ISO 8601, local time with offset
    pid_start: int | None  # the process's start tick (Linux), or None
    token: str  # unique per claim
    kind: str = "run"  # run | sweep

    @classmethod
    def me(cls, kind: str = "run") -> Owner:
        """This process, now."""
        pid = os.getpid()
        return cls(
            pid,
            socket.gethostname(),
            time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            _start_tick(pid),
            uuid.uuid4().hex,
            kind,
        )

    @classmethod
    def from_dict(cls, doc: Any) -> Owner | None:
        """An owner record read back (None when it is not one)."""
        try:
            return cls(
                int(doc["pid"]),
                str(doc["host"]),
                str(doc.get("started", "")),
                None if doc.get("pid_start") is None else int(doc["pid_start"]),
                str(doc.get("token", "")),
                str(doc.get("kind", "run")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def _start_tick(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks since boot), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _state(pid: int) -> str | None:
    """The process's state letter (``R``, ``S``, ``Z`` ...) from ``/proc``, or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(owner: Owner | dict[str, Any], beat: Path | None = None) -> bool:
    """Whether ``owner`` still runs: its process (this host) or its heartbeat file ``beat`` (another host)."""
    if isinstance(owner, dict):
        found = Owner.from_dict(owner)
        if found is None:
            return False
        owner = found
    if owner.host == socket.gethostname():
        if sys.platform.startswith("linux") and Path("/proc/self/stat").exists():
            state = _state(owner.pid)
            if state is None or state in ("Z", "X"):
                return False
            return owner.pid_start is None or _start_tick(owner.pid) == owner.pid_start
        try:
            os.kill(owner.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        age = time.time() - beat.stat().st_mtime if beat is not None else None
    except OSError:
        return False
    return age is not None and age < STALE_S


def describe(owner: Owner | dict[str, Any] | None) -> str:
    """``pid 123 on vm, started 2024-01-31T12:00:00+0000``."""
    if isinstance(owner, dict):
        owner = Owner.from_dict(owner)
    if owner is None:
        return "owner unknown"
    return f"pid {owner.pid} on {owner.host}, started {owner.started}"


def read_owner(folder: Path | str) -> Owner | None:
    """The owner recorded in ``folder``'s claim, if there is a readable one."""
    try:
        return Owner.from_dict(json.loads((Path(folder) / OWNER).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


class Claim:
    """This process's claim on a folder; ``release`` removes it. Keeps a heartbeat while held."""

    def __init__(self, folder: Path, owner: Owner) -> None:
        self.folder = folder
        self.owner = owner
        self.path = folder / OWNER
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="vizpipe-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        """Give the folder up: the claim file goes (and ``.vizpipe/`` when nothing else is in it)."""
        self._stop.set()
        with _LOCK:
            _HELD.pop(_key(self.folder), None)
        current = read_owner(self.folder)
        if current is not None and current.token == self.owner.token:
            try:
                self.path.unlink()
                self.path.parent.rmdir()
            except OSError:
                pass
        if self._beat is not threading.current_thread():
            self._beat.join(timeout=1.0)


def _key(folder: Path) -> str:
    return str(Path(folder).absolute())


def held(folder: Path | str) -> Claim | None:
    """This process's claim on ``folder``, if it holds one."""
    with _LOCK:
        return _HELD.get(_key(Path(folder)))


def release_all() -> None:
    """Release every claim this process still holds (the command line, when it ends)."""
    with _LOCK:
        claims = list(_HELD.values())
    for c in claims:
        c.release()


def _create(path: Path, owner: Owner) -> bool:
    """Create the claim file, whole, or return False when it exists.

    The owner is written to a private file first and hard-linked to the claim's name (``link``
    fails when the name exists), so a process that loses the race never reads a claim still being
    written (an empty file read as "owner unknown, interrupted"). Where the file system has no
    hard links, ``O_EXCL`` creates it instead.
    """
    text = json.dumps(asdict(owner), indent=2) + "\n"
    tmp = path.with_name(f".owner.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def _take_over(path: Path, dead: Owner, me: Owner) -> bool:
    """Replace the claim of ``dead`` (gone) with ``me``; False when another process got there first.

    The rename succeeds for one process only; a claim renamed by mistake (a newer one, made
    between reading and renaming) is linked back.
    """
    grave = path.with_name(f"owner.{me.token}.gone")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return False
    try:
        moved = Owner.from_dict(json.loads(grave.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        moved = None
    if moved is not None and moved.token != dead.token:
        try:
            os.link(grave, path)
        except OSError:
            pass
        grave.unlink(missing_ok=True)
        return False
    grave.unlink(missing_ok=True)
    return _create(path, me)


def stale_files(folder: Path, allow: Collection[str] = ()) -> list[str]:
    """What another run left in ``folder`` (names; ``.vizpipe/`` and ``allow`` excepted)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != HIDDEN and p.name not in allow)


def _used(folder: Path, stale: list[str], hint: str) -> FolderTaken:
    resume = ""
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("status") not in ("ok", None):
            resume = f"; to finish the {doc.get('status')} run there, add resume={folder}"
    except (OSError, ValueError):
        pass
    return FolderTaken(
        f"Run folder {folder} already holds another run's files ({', '.join(stale[:4])}); vizpipe never "
        f"mixes two runs in one folder: choose a new one ({hint}) or delete it{resume}"
    )


def claim(
    folder: Path | str,
    *,
    kind: str = "run",
    allow: Collection[str] = (),
    resume: bool = False,
    hint: str = "hydra.run.dir=...",
) -> Claim:
    """Claim ``folder`` for this process (created if needed); ``FolderTaken`` when it is not free.

    Free means: no live owner and nothing in it but ``allow`` (names, e.g. Hydra's ``.hydra``
    and ``run.log`` for a job folder Hydra made). ``resume``: the folder's earlier run may be
    there, and a claim whose owner is gone is taken over. A folder this process holds is returned
    as it is. ``hint`` names how to choose another folder in the refusal.
    """
    folder = Path(folder)
    mine = held(folder)
    if mine is not None:
        return mine
    if not resume:
        stale = stale_files(folder, allow)
        current = read_owner(folder)
        if stale and current is None:
            raise _used(folder, stale, hint)
    path = folder / OWNER
    me = Owner.me(kind)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        got = _create(path, me)
    except OSError as exc:
        raise ConfigError(
            f"Run folder {folder} cannot be written ({exc}); choose a writable place ({hint})"
        ) from exc
    if not got:
        current = read_owner(folder)
        if current is not None and alive(current, path):
            raise FolderTaken(
                f"Run folder {folder} is in use by another vizpipe {current.kind} ({describe(current)}); "
                "vizpipe "
                f"never mixes two runs in one folder: choose a new one ({hint})"
            )
        if not resume:
            raise FolderTaken(
                f"Run folder {folder} holds a {current.kind if current else 'run'} that was interrupted "
                f"({describe(current)}, no longer running); finish it with resume={folder}, or choose a new "
                f"folder ({hint})"
            )
        if current is None or not _take_over(path, current, me):
            raise FolderTaken(f"Run folder {folder} was just claimed by another process; try again")
    result = Claim(folder, me)
    if not resume:
        stale = stale_files(folder, allow)
        if stale:  # another run wrote there between the first look and the claim
            result.release()
            raise _used(folder, stale, hint)
    with _LOCK:
        _HELD[_key(folder)] = result
    return result


def claim_new(base: Path | str, *, kind: str = "run", hint: str = "hydra.run.dir=...") -> Claim:
    """Claim ``base`` or, when it is taken, the first free ``base_1``, ``base_2``, ... beside it."""
    base = Path(base)
    last: FolderTaken | None = None
    for n in range(MAX_SUFFIX):
        folder = base if n == 0 else base.with_name(f"{base.name}_{n}")
        if folder.exists() and (stale_files(folder) or (folder / OWNER).exists()):
            continue
        try:
            return claim(folder, kind=kind, hint=hint)
        except FolderTaken as exc:
            last = exc
    raise ConfigError(f"No free run folder next to {base} (tried {MAX_SUFFIX}); {hint}") from last
