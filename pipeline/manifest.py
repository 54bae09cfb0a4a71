"""``manifest.json``: the run's true record, rewritten after every stage.

It records who ran it (``owner``: process id, host, start time, and a ``heartbeat`` refreshed
with every write), so a folder left by a killed process reads ``interrupted``, not ``running``:
every reader (the report, the sweep index, compare, reproduce, ``vizpipe.Run``) reads a manifest
through ``settled``, which asks ``vizpipe.pipeline.ownership.alive`` whether a run still marked
running has an owner that still runs.
"""

from __future__ import annotations

import functools
import json
import logging
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from vizpipe.pipeline.files import Reserve, forget, sha256_file, write_atomic, written
from vizpipe.pipeline.ownership import MANIFEST

log = logging.getLogger(__name__)

PACKAGES = (
    "torch",
    "torchvision",
    "hydra-core",
    "omegaconf",
    "torchinfo",
    "grad-cam",
    "tensorboardX",
    "tensorboard",
    "numpy",
    "matplotlib",
    "pillow",
)
#: Artifacts whose bytes legitimately change between identical runs (they hold timestamps):
#: TensorBoard event files (whoever writes them), the reports, the log and the manifest itself.
VOLATILE_PATTERNS = ("*tfevents*", "report.*", "run.log", MANIFEST)
#: files of the run folder that no step owns
UNOWNED = (MANIFEST, "run.log")
#: resolvers that read the process's environment: the values they give are hidden in the manifest
#: (and so in the reports) unless ``report.show_env=true``
ENV_RESOLVERS = ("oc.env", "env")
#: what a hidden config value reads as (the interpolation it came from)
HIDDEN = "<hidden: {}>"
#: a hidden value this long or longer is also hidden where the manifest repeats it (paths, messages)
HIDE_REPEATS = 6
_ENV = re.compile(r"\$\{\s*(?:" + "|".join(re.escape(r) for r in ENV_RESOLVERS) + r")\s*:")
_REF = re.compile(r"\$\{\s*(?:oc\.select\s*:\s*)?(\.*[\w\[\]\-][\w.\[\]\-]*)\s*[,}]")
#: folders of the run folder that hold bookkeeping, not artifacts (Hydra's, and vizpipe's claim
#: and progress records: ``vizpipe.pipeline.ownership.HIDDEN``)
HIDDEN_DIRS = (".hydra/", ".vizpipe/")
#: the space held back for the manifest's last write on a full disk: twice its size and this
RESERVE = ".vizpipe/reserve"
RESERVE_MARGIN = 64 * 1024


@functools.cache
def versions() -> dict[str, str | None]:
    """Versions of python, vizpipe and the libraries that shape the results."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("vizpipe", *PACKAGES):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


@functools.cache
def git_commit(root: Path) -> dict[str, Any] | None:
    """The project's git commit (and whether the tree was dirty), or None outside a checkout.

    Read once per process: a sweep's jobs share it (the code does not change during a sweep).
    """
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


Path_ = tuple[str | int, ...]  # a key in a config document: dict keys and list indices


def _leaves(node: Any, path: Path_ = ()) -> Any:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    else:
        yield path, node


def _reference(leaf: Path_, ref: str) -> Path_:
    """The key ``${ref}`` names, seen from ``leaf`` (``.x``: a sibling, ``..x``: the parent's)."""
    dots = len(ref) - len(ref.lstrip("."))
    base = leaf[: len(leaf) - dots] if dots else ()
    parts = re.findall(r"[^.\[\]]+", ref.lstrip("."))
    return (*base, *(int(p) if p.isdigit() else p for p in parts))


def env_keys(raw: dict[str, Any]) -> list[Path_]:
    """The keys of an unresolved config document whose values come from the environment: an
    ``ENV_RESOLVERS`` interpolation, or a reference (``${a.b}``, ``oc.select``) to such a key."""
    texts = {p: v for p, v in _leaves(raw) if isinstance(v, str) and "${" in v}
    found = {p for p, v in texts.items() if _ENV.search(v)}
    grew = True
    while grew:  # references to references
        grew = False
        for p, v in texts.items():
            if p in found:
                continue
            for ref in _REF.findall(v):
                target = _reference(p, ref)
                if any(d[: len(target)] == target or target[: len(d)] == d for d in found):
                    found.add(p)
                    grew = True
                    break
    return sorted(found, key=lambda p: [str(x) for x in p])


def config_record(cfg: Any, show_env: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The resolved config for ``manifest.json`` and the values hidden in it.

    Values read from the environment (``${oc.env:TOKEN}``, see ``env_keys``) read
    ``<hidden: ${oc.env:TOKEN}>`` unless ``show_env``; the returned strings are those values, to
    be hidden where the manifest repeats them (``Manifest(hidden=...)``). The run's
    ``.hydra/config.yaml`` is Hydra's unresolved file: it holds ``${oc.env:TOKEN}``, not the value.
    """
    from omegaconf import OmegaConf

    doc = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    if show_env:
        return doc, []
    raw = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    hidden: list[str] = []
    for key in env_keys(raw):
        node, rawnode = doc, raw
        for part in key[:-1]:
            node, rawnode = node[part], rawnode[part]
        hidden += [str(v) for _, v in _leaves(node[key[-1]]) if v is not None]
        node[key[-1]] = HIDDEN.format(rawnode[key[-1]])
    return doc, sorted({h for h in hidden if len(h) >= HIDE_REPEATS}, key=len, reverse=True)


def scrub(node: Any, hidden: list[str], skip: tuple[str, ...] = ("config", "artifacts")) -> Any:
    """``node`` with every ``hidden`` string replaced by ``<hidden>`` (the keys in ``skip`` kept)."""
    if isinstance(node, dict):
        return {k: v if k in skip else scrub(v, hidden, skip) for k, v in node.items()}
    if isinstance(node, list):
        return [scrub(v, hidden, skip) for v in node]
    if isinstance(node, str):
        for h in hidden:
            node = node.replace(h, "<hidden>")
    return node


@dataclass
class Artifact:
    """One file written by a stage."""

    path: str  # relative to the run folder, with forward slashes
    bytes: int
    sha256: str


@dataclass
class StageRecord:
    """A stage's status in the manifest."""

    name: str
    status: str = "pending"  # pending | running | ok | failed | skipped | interrupted
    seconds: float | None = None
    error: str | None = None
    error_type: str | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    title: str = ""  # the report's section title (stages only)
    result: dict[str, Any] | None = None  # the stage's StageResult record (stages only)


class Manifest:
    """Collects the run's facts and writes them atomically to ``<run>/manifest.json``."""

    def __init__(
        self,
        run_dir: Path,
        data: dict[str, Any],
        stage_names: list[str],
        titles: dict[str, str] | None = None,
        hidden: list[str] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.data = data
        self.hidden = list(hidden or [])  # values read from the environment (config_record)
        self.setup = StageRecord("setup")
        self.stages = [StageRecord(n, title=(titles or {}).get(n, "")) for n in stage_names]
        self.report = StageRecord("report")
        self.started = time.time()
        # space held back for the last write when the disk fills up (``write``); removed by ``close``
        self.reserve = Reserve(self.run_dir / RESERVE)

    def stage(self, name: str) -> StageRecord:
        """The record of stage ``name``."""
        for rec in (self.setup, *self.stages, self.report):
            if rec.name == name:
                return rec
        raise KeyError(name)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every file of the run folder (but the manifest, the log, ``.hydra/``, ``.vizpipe/`` and
        hidden temporary files): size and mtime."""
        out: dict[str, tuple[int, int]] = {}
        for p in self.run_dir.rglob("*"):
            rel = p.relative_to(self.run_dir).as_posix()
            if rel in UNOWNED or rel.startswith(HIDDEN_DIRS) or p.name.startswith(".") or not p.is_file():
                continue
            st = p.stat()
            out[rel] = (st.st_size, st.st_mtime_ns)
        return out

    def collect(self, rec: StageRecord, before: dict[str, tuple[int, int]]) -> None:
        """Record as the step's artifacts every file it wrote: what is new or changed since the
        ``before`` snapshot, wherever it is (a stage's folder, ``tensorboard/train/``, ...), also
        after a failure or Ctrl-C. Files an earlier step lists stay that step's: every artifact
        belongs to exactly one step. A file's hash is the one its writer computed when it is still
        exactly what was written (``vizpipe.pipeline.files.written``), else read from disk."""
        taken = {a.path for o in (self.setup, *self.stages, self.report) if o is not rec for a in o.artifacts}
        now = self.snapshot()
        rels = sorted(rel for rel, stat in now.items() if before.get(rel) != stat and rel not in taken)
        rec.artifacts = [Artifact(rel, now[rel][0], self._sha256(rel)) for rel in rels]

    def _sha256(self, rel: str) -> str:
        path = self.run_dir / rel
        known = written(path)
        forget(path)
        return known.sha256 if known is not None else sha256_file(path)

    @property
    def status(self) -> str:
        """ok | failed | interrupted | running, from the stage records."""
        recs = [self.setup, *self.stages, self.report]
        if any(r.status == "interrupted" for r in recs):
            return "interrupted"
        if any(r.status == "failed" for r in (self.setup, *self.stages)):
            return "failed"
        if any(r.status == "running" for r in recs):
            return "running"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (values read from the environment hidden, see ``config_record``; the
        owner's heartbeat is now)."""
        if isinstance(self.data.get("owner"), dict):
            self.data["owner"]["heartbeat"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        doc = {
            **self.data,
            "status": self.status,
            "seconds": round(time.time() - self.started, 3),
            "setup": asdict(self.setup),
            "stages": [asdict(s) for s in self.stages],
            "report": asdict(self.report),
        }
        return scrub(doc, self.hidden) if self.hidden else doc

    def write(self) -> Path:
        """Write atomically (temp file + rename), so a crash never leaves half a manifest.

        Twice its size is held back on disk (``.vizpipe/reserve``): when the disk fills up, that
        space is given back for this write, so the manifest still records what failed. A write
        that fails all the same is logged once, in one line, and never raises: the previous
        manifest stays, and the next write tries again.
        """
        path = self.run_dir / MANIFEST
        text = json.dumps(self.to_dict(), indent=2, default=str) + "\n"
        for attempt in (1, 2):
            try:
                write_atomic(path, text)
                self._failed = False
                self.reserve.ensure(2 * len(text) + RESERVE_MARGIN)
                break
            except OSError as exc:
                if attempt == 1 and self.reserve.give_back():
                    continue  # the disk is full: the held-back space is for this write
                if not getattr(self, "_failed", False):
                    log.error("%s", exc)
                self._failed = True
        return path

    def close(self) -> None:
        """The run ended: the held-back space goes."""
        self.reserve.give_back()

    def interrupted(self, signal_name: str) -> None:
        """Ctrl-C or SIGTERM: the steps cut short say so, the manifest says how to resume; written."""
        for rec in (self.setup, *self.stages, self.report):
            if rec.status in ("pending", "running"):
                rec.status = "skipped" if rec.status == "pending" else "interrupted"
        self.data["interrupted"] = {
            "signal": signal_name,
            "why": f"{signal_name} received",
            "resume": resume_hint(self.data, self.run_dir),
        }
        self.write()
        log.debug("Interrupted (%s); the manifest and every file written so far are kept", signal_name)


def load(run_dir: Path) -> dict[str, Any]:
    """Read ``<run_dir>/manifest.json``, ``settled``."""
    return settled(json.loads((Path(run_dir) / MANIFEST).read_text(encoding="utf-8")), run_dir)


def settled(doc: Any, run_dir: Path | str) -> Any:
    """The manifest as it stands now: a run still marked ``running`` whose owner has gone (a
    killed process: ``vizpipe.pipeline.ownership.alive``) reads ``interrupted``, with its running
    steps, and ``interrupted`` says why and how to finish it. Anything else is returned as it is."""
    from vizpipe.pipeline import ownership

    if not isinstance(doc, dict) or doc.get("status") != "running" or not isinstance(doc.get("owner"), dict):
        return doc
    if ownership.alive(doc["owner"], Path(run_dir) / ownership.OWNER):
        return doc
    out = dict(doc)
    out["status"] = "interrupted"
    for key in ("setup", "report"):
        if isinstance(out.get(key), dict) and out[key].get("status") == "running":
            out[key] = {**out[key], "status": "interrupted"}
    out["stages"] = [
        {**s, "status": "interrupted"} if isinstance(s, dict) and s.get("status") == "running" else s
        for s in out.get("stages") or []
    ]
    out.setdefault(
        "interrupted",
        {
            "signal": None,
            "why": f"the process that ran it ({ownership.describe(doc['owner'])}) ended without finishing it",
            "resume": resume_hint(doc, run_dir),
        },
    )
    return out


def resume_hint(doc: dict[str, Any], run_dir: Path | str) -> str:
    """How to finish this run: its command with ``resume=<run folder>`` added."""
    import shlex

    overrides = [str(o) for o in doc.get("overrides") or []]
    return shlex.join(["python", "run.py", *overrides, f"resume={Path(run_dir)}"])


#: the command line's words as the user typed them (``record_typed``: the command line sets it before
#: the precheck rewrites ``sys.argv`` with the claimed folder and ``hydra.job.name`` for Hydra)
_typed: list[str] | None = None


def record_typed(argv: list[str]) -> None:
    """Remember the words the user typed, for ``command_line``."""
    global _typed
    _typed = list(argv)


def command_line() -> list[str]:
    """The command that started this process, as typed."""
    args = sys.argv[1:] if _typed is None else _typed
    return [Path(sys.executable).name, *sys.argv[:1], *args]
