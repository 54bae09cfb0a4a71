"""``manifest.json``: the run's true record, rewritten after every stage."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from vizpipe.pipeline.files import sha256_file, write_atomic

MANIFEST = "manifest.json"
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
    ) -> None:
        self.run_dir = Path(run_dir)
        self.data = data
        self.setup = StageRecord("setup")
        self.stages = [StageRecord(n, title=(titles or {}).get(n, "")) for n in stage_names]
        self.report = StageRecord("report")
        self.started = time.time()

    def stage(self, name: str) -> StageRecord:
        """The record of stage ``name``."""
        for rec in (self.setup, *self.stages, self.report):
            if rec.name == name:
                return rec
        raise KeyError(name)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every file of the run folder (but the manifest, the log and ``.hydra/``): size and mtime."""
        out: dict[str, tuple[int, int]] = {}
        for p in self.run_dir.rglob("*"):
            rel = p.relative_to(self.run_dir).as_posix()
            if rel in UNOWNED or rel.startswith(".hydra/") or p.name.startswith(".") or not p.is_file():
                continue
            st = p.stat()
            out[rel] = (st.st_size, st.st_mtime_ns)
        return out

    def collect(self, rec: StageRecord, before: dict[str, tuple[int, int]]) -> None:
        """Record as the step's artifacts every file it wrote: what is new or changed since the
        ``before`` snapshot, wherever it is (a stage's folder, ``tensorboard/train/``, ...), also
        after a failure or Ctrl-C. Files an earlier step lists stay that step's: every artifact
        belongs to exactly one step."""
        taken = {a.path for o in (self.setup, *self.stages, self.report) if o is not rec for a in o.artifacts}
        now = self.snapshot()
        rels = sorted(rel for rel, stat in now.items() if before.get(rel) != stat and rel not in taken)
        rec.artifacts = [Artifact(rel, now[rel][0], sha256_file(self.run_dir / rel)) for rel in rels]

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
        """The JSON document."""
        return {
            **self.data,
            "status": self.status,
            "seconds": round(time.time() - self.started, 3),
            "setup": asdict(self.setup),
            "stages": [asdict(s) for s in self.stages],
            "report": asdict(self.report),
        }

    def write(self) -> Path:
        """Write atomically (temp file + rename), so a crash never leaves half a manifest."""
        return write_atomic(self.run_dir / MANIFEST, json.dumps(self.to_dict(), indent=2, default=str) + "\n")


def load(run_dir: Path) -> dict[str, Any]:
    """Read ``<run_dir>/manifest.json``."""
    return json.loads((Path(run_dir) / MANIFEST).read_text(encoding="utf-8"))


def command_line() -> list[str]:
    """The command that started this process."""
    return [Path(sys.executable).name, *sys.argv]
