"""The shapes demo's figures in README.md, regenerated from a real run of the demo.

    python -m benchmarks.demo_figures                  # run the demo, print the README's block
    python -m benchmarks.demo_figures --write          # ... and replace the block in README.md
    python -m benchmarks.demo_figures --write --timed  # ... with the demo's wall time (idle machine!)
    python -m benchmarks.demo_figures train.epochs=1 input.train_count=128   # a reduced run (prints only)

Runs ``python run.py experiment=shapes_demo`` (plus any overrides) in a subprocess with
``OMP_NUM_THREADS=1`` (the demo is deterministic per machine and thread count: oneDNN's sums
depend on it) into a temporary folder, reads ``train/history.json`` (validation accuracy,
GradCAM's pointing game before and after training, chance level) and writes the block between
``BEGIN`` and ``END`` in README.md, dated and naming the machine. The wall time depends on the
machine's load: it is only written with ``--timed``, for a run on an idle machine; otherwise the
block says it is still to be measured. A reduced run (overrides given) is never written.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN = "<!-- demo-figures: python -m benchmarks.demo_figures --write -->"
END = "<!-- /demo-figures -->"
COMMAND = "python run.py experiment=shapes_demo"
THREADS = 1
#: the block's text; ``parse`` reads it back (tests/test_demo_figures.py pins the round trip)
TEMPLATE = (
    "On the demo (`{command}`, `OMP_NUM_THREADS={threads}`; {date}, {machine}): val accuracy {val:.1%} "
    "after {epochs} epochs; {method} pointing game {after:.3f} on {images} held-out images after training, "
    "{before:.3f} at random init (chance {chance:.2f}); wall time of the whole demo: {time}."
)
UNTIMED = "to be measured on an idle machine (`--timed`)"


@dataclass(frozen=True)
class Figures:
    """What the README says about the demo."""

    val: float  # validation accuracy after the last epoch
    epochs: int
    method: str  # the CAM method of the pointing game, e.g. GradCAM
    images: int  # the held-out images it is measured on
    before: float  # pointing game at random init
    after: float  # ... after training
    chance: float  # ... of a uniformly random point


def machine() -> str:
    """The CPU, its core count and torch's version (the figures depend on all three)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores, torch {torch.__version__}"


def run_demo(out: Path, overrides: list[str]) -> float:
    """Run the demo into ``out``; its wall time in seconds. Raises on a failed run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, str(ROOT / "run.py"), "experiment=shapes_demo", *overrides, f"hydra.run.dir={out}"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"benchmarks.demo_figures: the demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return seconds


def read(run: Path) -> Figures:
    """The figures from the run's ``train/history.json``."""
    doc = json.loads((run / "train" / "history.json").read_text(encoding="utf-8"))
    loc = doc.get("localisation") or {}
    if not doc.get("epochs") or not loc:
        raise SystemExit(f"benchmarks.demo_figures: {run} has no epochs or no pointing game in history.json")
    return Figures(
        val=float(doc["epochs"][-1]["val_accuracy"]),
        epochs=int(doc["epochs_done"]),
        method=str(loc["method"]),
        images=int(loc["images"]),
        before=float(loc["before"]["pointing_game"]),
        after=float(loc["after"]["pointing_game"]),
        chance=float(loc["chance"]),
    )


def render(fig: Figures, *, date: str, machine: str, seconds: float | None) -> str:
    """The README's block, markers included."""
    took = f"{seconds:.0f} s" if seconds is not None else UNTIMED
    text = TEMPLATE.format(
        command=COMMAND, threads=THREADS, date=date, machine=machine, time=took, **vars(fig)
    )
    return f"{BEGIN}\n{text}\n{END}"


def block_of(readme: str) -> str:
    """The block in ``readme`` (markers included); exactly one must be there."""
    found = re.findall(re.escape(BEGIN) + r"\n.*?\n" + re.escape(END), readme, flags=re.S)
    if len(found) != 1:
        raise ValueError(f"README.md holds {len(found)} demo-figures blocks; expected 1 ({BEGIN} ... {END})")
    return found[0]


def parse(block: str) -> tuple[Figures, str, str, float | None]:
    """(figures, date, machine, seconds or None) from a block ``render`` wrote."""
    pattern = re.escape(TEMPLATE)
    for name, group in (
        ("command", re.escape(COMMAND)),
        ("threads", str(THREADS)),
        ("date", r"(?P<date>\d{4}-\d\d-\d\d)"),
        ("machine", r"(?P<machine>.+?)"),
        ("val:.1%", r"(?P<val>\d+\.\d)%"),
        ("epochs", r"(?P<epochs>\d+)"),
        ("method", r"(?P<method>\w+)"),
        ("after:.3f", r"(?P<after>\d\.\d{3})"),
        ("images", r"(?P<images>\d+)"),
        ("before:.3f", r"(?P<before>\d\.\d{3})"),
        ("chance:.2f", r"(?P<chance>\d\.\d\d)"),
        ("time", r"(?:(?P<seconds>\d+) s|" + re.escape(UNTIMED) + ")"),
    ):
        pattern = pattern.replace(re.escape("{" + name + "}"), group)
    m = re.fullmatch(re.escape(BEGIN) + r"\n" + pattern + r"\n" + re.escape(END), block)
    if m is None:
        raise ValueError(f"not a demo-figures block:\n{block}")
    fig = Figures(
        val=float(m["val"]) / 100,
        epochs=int(m["epochs"]),
        method=m["method"],
        images=int(m["images"]),
        before=float(m["before"]),
        after=float(m["after"]),
        chance=float(m["chance"]),
    )
    return fig, m["date"], m["machine"], float(m["seconds"]) if m["seconds"] else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.demo_figures", description=__doc__.splitlines()[0]
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides: a reduced run, printed only")
    parser.add_argument("--write", action="store_true", help="replace the block in README.md")
    parser.add_argument("--timed", action="store_true", help="include the demo's wall time (an idle machine)")
    parser.add_argument("--keep", type=Path, default=None, help="run into this folder and keep it")
    args = parser.parse_args(argv)
    if args.write and args.overrides:
        parser.error("--write takes no overrides: the README quotes the demo as it ships")
    with tempfile.TemporaryDirectory(prefix="vizpipe-demo-") as tmp:
        run = args.keep or Path(tmp) / "run"
        seconds = run_demo(run, args.overrides)
        block = render(
            read(run),
            date=datetime.date.today().isoformat(),
            machine=machine(),
            seconds=seconds if args.timed else None,
        )
    print(block)
    print(f"(the demo took {seconds:.1f} s here)", file=sys.stderr)
    if args.write:
        text = README.read_text(encoding="utf-8")
        README.write_text(text.replace(block_of(text), block), encoding="utf-8")
        print(f"benchmarks.demo_figures: {README.relative_to(ROOT)} updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
