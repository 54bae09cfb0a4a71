"""Mutation testing of ``pipeline/`` and ``stages/`` against the quick suite (mutmut 3; not in CI).

    .venv/bin/python -m benchmarks.mutation run [--children 2] [MODULE ...]
    .venv/bin/python -m benchmarks.mutation rerun [--children 2] [MODULE ...]
    .venv/bin/python -m benchmarks.mutation sample [-n 600] [--seed 0] [--children 2] [MODULE ...]
    .venv/bin/python -m benchmarks.mutation score [--sample] [--survivors] [--markdown] [MODULE ...]

MODULE is a dotted module (``vizpipe.pipeline.manifest``, ``vizpipe.stages.cam.render``,
``vizpipe.pipeline.report``: a
package with everything below it); none means every module.

- ``run``: ``mutmut run`` on those modules' mutants. The configuration is ``[tool.mutmut]`` in
  pyproject.toml: mutmut copies the project into ``mutants/`` (git-ignored), runs the quick suite
  once to learn which tests call which function, and then, per mutant, only the tests that call
  the mutated function (``-x``, fastest first) in a process forked from a server that has
  imported the tests but run nothing (``process_isolation = "forkserver"``: torch is not
  fork-safe after it has run). Results are kept in ``mutants/``: a second ``run`` tests only
  what is not yet tested (new or changed functions); a run stopped half-way resumes.
- ``sample``: test a seeded random sample of ``-n`` mutants (drawn uniformly from every generated
  mutant of those modules; the names are kept in ``mutants/sample.txt``). All 16,000-odd mutants
  take hours on two cores; a sample of 600 gives the score to about +-3 points (95%), and
  ``score --sample`` prints it with its Wilson interval. Mutants are generated first if needed.
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
SAMPLE = MUTANTS / "sample.txt"


def module_of(key: str) -> str:
    """``vizpipe.pipeline.manifest.xǁManifestǁstage__mutmut_1`` -> ``vizpipe.pipeline.manifest``."""
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


def generate() -> dict[str, int | None]:
    """Every mutant (generated now by mutmut if ``mutants/`` has none yet)."""
    if not results():
        # mutmut generates mutants (and learns which tests reach which function) at the start of
        # ``run``; a name that matches no mutant makes it stop right after that.
        mutmut(["run", "--max-children", "1", "no-such-mutant-just-generate"])
    found = results()
    if not found:
        raise SystemExit("benchmarks.mutation: mutmut generated no mutants (see its output above)")
    return found


def draw(n: int, seed: int, modules: list[str]) -> list[str]:
    """A seeded uniform sample of ``n`` mutant names of ``modules``, saved in ``mutants/sample.txt``."""
    import random

    keys = sorted(k for k in generate() if selected(k, modules))
    names = sorted(random.Random(seed).sample(keys, min(n, len(keys))))
    SAMPLE.write_text("\n".join(names) + "\n", encoding="utf-8")
    print(f"sample: {len(names)} of {len(keys)} mutants (seed {seed}) -> {SAMPLE.relative_to(ROOT)}")
    return names


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``k``/``n``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return (max(0.0, mid - half), min(1.0, mid + half))


def table(modules: list[str], survivors: bool, markdown: bool, sample: bool = False) -> str:
    """Per-module counts and scores, the total, and (``survivors``) the surviving mutants."""
    res = {k: v for k, v in results().items() if selected(k, modules)}
    if sample:
        if not SAMPLE.is_file():
            return "no sample: run `python -m benchmarks.mutation sample` first"
        drawn = set(SAMPLE.read_text(encoding="utf-8").split())
        res = {k: v for k, v in res.items() if k in drawn}
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
    tested = total["killed"] + total["timeout"] + total["survived"] + total["suspicious"] + total["no tests"]
    if tested:
        lo, hi = wilson(total["killed"] + total["timeout"], tested)
        lines += [
            "",
            f"score {100 * (total['killed'] + total['timeout']) / tested:.1f}%, "
            f"95% interval {100 * lo:.1f}-{100 * hi:.1f}% over {tested} tested mutants",
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
    parser.add_argument("command", choices=["run", "rerun", "sample", "score"])
    parser.add_argument("modules", nargs="*", help="dotted modules or packages (default: all)")
    parser.add_argument("-n", "--size", type=int, default=600, help="sample: mutants to draw")
    parser.add_argument("--seed", type=int, default=0, help="sample: the random seed")
    parser.add_argument("--sample", action="store_true", help="score: only the sampled mutants")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--survivors", action="store_true", help="score: list the surviving mutants")
    parser.add_argument("--markdown", action="store_true", help="score: a markdown table")
    args = parser.parse_intermixed_args(argv)
    modules = [m.removesuffix(".py").replace("/", ".") for m in args.modules]
    if args.command == "score":
        print(table(modules, args.survivors, args.markdown, args.sample))
        return 0
    names = globs(modules)
    if args.command == "sample":
        names = draw(args.size, args.seed, modules)
    if args.command == "rerun":
        names = sorted(k for k, v in results().items() if selected(k, modules) and verdict(v) == "survived")
        if not names:
            print("no surviving mutants to test again")
            return 0
    rc = mutmut(["run", "--max-children", str(args.children), *names])
    print(table(modules, survivors=False, markdown=False, sample=args.command == "sample"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
