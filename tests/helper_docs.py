"""The commands and Python examples in README.md and docs/*.md, found and run (tests/test_docs_commands.py).

``blocks`` finds the fenced code blocks of a Markdown file; ``shell_commands`` splits a shell block
into commands as a user would copy them (``\\`` continuations joined, comments and ``$ `` prompts
removed). ``Workspace`` is a temporary copy of the checkout that the commands run in, as written,
from its root: the same relative paths (``run.py``, ``scripts/``, ``.venv/bin/python``, ``outputs/``),
offline, with the example data and run folders the docs name written by the test first.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the documents whose code blocks are run
DOCS = ("README.md", "docs/*.md")
#: fenced blocks in these languages hold shell commands; ``python`` blocks are run as scripts
SHELL = {"bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
#: an example run or sweep folder named in a command (``outputs/2026-11-26/15-04-12``)
EXAMPLE_RUN = re.compile(r"outputs/(?:multirun/)?\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d")
#: what the copy leaves out: the checkout's outputs, environment and machine-local config (top
#: level, by path) and caches (anywhere)
SKIP_TOP = {
    ".git",
    ".venv",
    "outputs",
    "multirun",
    "mutants",
    "build",
    "conf/local",
    "benchmarks/gpu-results.txt",
}
SKIP_ANY = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache")


def _ignore(folder: str, names: list[str]) -> set[str]:
    rel = Path(folder).resolve().relative_to(ROOT)
    top = {n for n in names if (rel / n).as_posix() in SKIP_TOP}
    return top | set(SKIP_ANY(folder, names))


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it starts (1-based line of its first content line) and its text."""

    doc: str
    line: int
    lang: str
    text: str


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    out: list[Block] = []
    fence, lang, start, body = "", "", 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(line)
        if not fence and m:
            fence, lang, start, body = m.group(1), m.group(2).lower(), number + 1, []
        elif fence and line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            out.append(Block(str(path.relative_to(ROOT)), start, lang, "\n".join(body)))
            fence = ""
        elif fence:
            body.append(line)
    return out


def strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (``#`` after a blank, outside quotes)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_commands(block: Block) -> list[tuple[int, str]]:
    """(line, command) for each command of a shell block, as a user would copy it."""
    out: list[tuple[int, str]] = []
    pending, first = "", 0
    for offset, raw in enumerate(block.text.splitlines()):
        line = raw.strip()
        if block.lang == "console":
            if not line.startswith("$ ") and not pending:
                continue  # output lines
            line = line.removeprefix("$ ")
        if not pending:
            first = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        command = strip_comment(pending + line)
        pending = ""
        if command:
            out.append((first, command))
    return out


def doc_files() -> list[Path]:
    return [p for pattern in DOCS for p in sorted(ROOT.glob(pattern))]


@dataclass
class Command:
    """A command as the docs write it, and every place that writes it."""

    text: str
    where: list[str]

    @property
    def id(self) -> str:
        return f"{self.where[0]} {' '.join(self.text.split())[:70]}"


def all_commands() -> list[Command]:
    """Every shell command of the docs, once each (the first place first)."""
    found: dict[str, Command] = {}
    for path in doc_files():
        for block in blocks(path):
            if block.lang in SHELL:
                for line, text in shell_commands(block):
                    found.setdefault(text, Command(text, [])).where.append(f"{block.doc}:{line}")
    return list(found.values())


def python_blocks() -> list[Block]:
    return [b for path in doc_files() for b in blocks(path) if b.lang in ("python", "py", "python3")]


# =========================================================================== the workspace


class Workspace:
    """A copy of the checkout that the docs' commands run in, from its root, offline.

    ``.venv`` links to the environment running the tests (so ``.venv/bin/python`` and
    ``source .venv/bin/activate`` work as written), ``PYTHONPATH`` makes the copy's ``vizpipe`` the
    one imported, ``HOME`` is a folder of the copy (``$HOME/pets``), ``TORCH_HOME`` a cache of its own.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(ROOT, root, ignore=_ignore, symlinks=True)
        self.venv = Path(sys.prefix) if sys.prefix != sys.base_prefix else None
        if self.venv is not None:
            (root / ".venv").symlink_to(self.venv, target_is_directory=True)
        self.home = root / "home"
        self.home.mkdir()
        real_home = Path.home()
        self.base_env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "VIRTUAL_ENV")}
        self.base_env.update(
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            HOME=str(self.home),
            XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME", str(real_home / ".cache")),
            XDG_CONFIG_HOME=os.environ.get("XDG_CONFIG_HOME", str(real_home / ".config")),
            TORCH_HOME=str(root / ".torch"),
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            MPLBACKEND="Agg",
        )

    def env(self, site: Path | None = None, **extra: str) -> dict[str, str]:
        """The commands' environment (``site``: a folder put before the copy on ``PYTHONPATH``)."""
        env = dict(self.base_env, **extra)
        env["PYTHONPATH"] = os.pathsep.join([*([str(site)] if site else []), str(self.root)])
        return env

    def shell(
        self, text: str, *, timeout: float, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run ``text`` with bash in the copy's root; stdout and stderr captured."""
        return subprocess.run(
            ["bash", "-c", "set -o pipefail\n" + text],
            cwd=self.root,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


SERVING = re.compile(r"TensorBoard \S+ at (http://\S+?)/? ")


def serve_and_ask(
    ws: Workspace, text: str, path: str, *, env: dict[str, str], timeout: float = 120
) -> tuple[str, bytes]:
    """Start the server ``text`` (as written), wait for its address, GET ``path``, stop it.

    Returns (address, body). The server runs in its own process group, stopped with it.
    """
    log = ws.root / f".serve-{time.monotonic_ns()}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {text}"], cwd=ws.root, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = SERVING.search(log.read_text(errors="replace"))
            if m:
                base = m.group(1).replace("://localhost", "://127.0.0.1")
                try:
                    with opener.open(base + path, timeout=10) as resp:
                        return base, resp.read()
                except OSError:
                    pass
            if proc.poll() is not None:
                raise AssertionError(
                    f"{text!r} exited {proc.returncode}: {log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.5)
        raise AssertionError(f"{text!r} did not serve {path} within {timeout} s: {log.read_text()[-3000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
