"""Mutation testing of ``pipeline/`` and ``stages/`` against the quick suite (mutmut 3; not in CI).

    .venv/bin/python -m benchmarks.mutation run [--children 2] [MODULE ...]
    .venv/bin/python -m benchmarks.mutation rerun [--children 2] [MODULE ...]
    .venv/bin/python -m benchmarks.mutation score [--survivors] [--markdown] [MODULE ...]

MODULE is a dotted module (``pipeline.manifest``, ``stages.cam.render``, ``pipeline.report``: a
package with everything below it); none means every module.

- ``run``: ``mutmut run`` on those modules' mutants. The configuration is ``[tool.mutmut]`` in
  pyproject.toml: mutmut copies the project into ``mutants/`` (git-ignored), runs the quick suite
  once to learn which tests call which function, and then, per mutant, only the tests that call
  the mutated function (``-x``, fastest first) in a process forked from a server that has
  imported the tests but run nothing (``process_isolation = "forkserver"``: torch is not
  fork-safe after it has run). Results are kept in ``mutants/``: a second ``run`` tests only
  what is not yet tested (new or changed functions); a run stopped half-way resumes.
- ``rerun``: test again the mutants that survived (after adding tests), by name.
- ``score``: per module, the mutants, how many were tested and killed, and the score
  killed / tested (a timeout counts as killed, as in mutmut's own badge; a mutant no test
  reaches counts as survived). ``--survivors`` lists the survivors (``mutmut show NAME`` prints
  one's diff).

Every mutmut process gets ``OMP_NUM_THREADS=1`` (one torch thread per worker: two workers with two
threads each slow each other down on a 2-core machine) and ``MPLBACKEND=Agg``.

Tests that start ``run.py`` (or ``python -m pipeline...``) in a subprocess are ``slow``-marked and
not in the quick suite; mutmut could not map them to functions anyway (their calls happen in
another process). The few quick tests that start a subprocess run as usual.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
SOURCES = ("pipeline", "stages")
#: mutmut's exit codes -> a verdict (mutmut.stats.status_by_exit_code, folded into five)
VERDICT = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}
VERDICT.update({c: "timeout" for c in (-24, 24, 152, 255, 36)})


def module_of(key: str) -> str:
    """``pipeline.manifest.xǁManifestǁstage__mutmut_1`` -> ``pipeline.manifest``."""
    parts = key.partition("__mutmut_")[0].split(".")
    return ".".join(p for p in parts if not (p.startswith("x_") or p.startswith("xǁ")))


def results() -> dict[str, int | None]:
    """Every generated mutant and its exit code (None: not tested yet), from mutmut's meta files."""
    out: dict[str, int | None] = {}
    for meta in sorted(MUTANTS.glob("**/*.py.meta")):
        out.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    return out


def selected(key: str, modules: list[str]) -> bool:
    """Whether mutant ``key`` belongs to one of ``modules`` (a package includes its modules)."""
    mod = module_of(key)
    return not modules or any(mod == m or mod.startswith(m + ".") for m in modules)


def verdict(code: int | None) -> str:
    if code is None:
        return "not tested"
    return VERDICT.get(code, "suspicious")


def mutmut(args: list[str]) -> int:
    """Run the venv's ``mutmut`` with the project's environment; its exit status."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)  # mutmut puts mutants/ first; the project itself must not be importable
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(exe), *args], cwd=ROOT, env=env).returncode


def globs(modules: list[str]) -> list[str]:
    """mutmut's name patterns for ``modules`` (every mutant when none)."""
    return [g for m in modules for g in (f"{m}.x*", f"{m}.*.x*")]


def table(modules: list[str], survivors: bool, markdown: bool) -> str:
    """Per-module counts and scores, the total, and (``survivors``) the surviving mutants."""
    res = {k: v for k, v in results().items() if selected(k, modules)}
    if not res:
        return "no mutants: run `python -m benchmarks.mutation run` first"
    per: dict[str, Counter[str]] = {}
    for key, code in res.items():
        per.setdefault(module_of(key), Counter())[verdict(code)] += 1
    head = ["module", "mutants", "tested", "killed", "timeout", "survived", "no tests", "score"]
    rows = []
    total: Counter[str] = Counter()
    for mod in sorted(per):
        c = per[mod]
        total.update(c)
        rows.append([mod, *_counts(c)])
    rows.append(["total", *_counts(total)])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    else:
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        lines = [
            "  ".join(
                str(v).ljust(w) if i == 0 else str(v).rjust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in [head, *rows]
        ]
    if survivors:
        lost = sorted(k for k, v in res.items() if verdict(v) in ("survived", "no tests", "suspicious"))
        lines += ["", f"{len(lost)} surviving mutants (mutmut show NAME):", *lost]
    return "\n".join(lines)


def _counts(c: Counter[str]) -> list[object]:
    n = sum(c.values())
    tested = n - c["not tested"] - c["skipped"]
    caught = c["killed"] + c["timeout"]
    lost = c["survived"] + c["suspicious"]
    score = f"{100 * caught / tested:.1f}%" if tested else "-"
    return [n, tested, c["killed"], c["timeout"], lost, c["no tests"], score]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mutation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["run", "rerun", "score"])
    parser.add_argument("modules", nargs="*", help="dotted modules or packages (default: all)")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--survivors", action="store_true", help="score: list the surviving mutants")
    parser.add_argument("--markdown", action="store_true", help="score: a markdown table")
    args = parser.parse_intermixed_args(argv)
    modules = [m.removesuffix(".py").replace("/", ".") for m in args.modules]
    if args.command == "score":
        print(table(modules, args.survivors, args.markdown))
        return 0
    names = globs(modules)
    if args.command == "rerun":
        names = sorted(k for k, v in results().items() if selected(k, modules) and verdict(v) == "survived")
        if not names:
            print("no surviving mutants to test again")
            return 0
    rc = mutmut(["run", "--max-children", str(args.children), *names])
    print(table(modules, survivors=False, markdown=False))
    return rc


if __name__ == "__main__":
    sys.exit(main())
