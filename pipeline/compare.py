"""Compare two run folders by their manifests: ``python -m vizpipe.compare <run_a> <run_b>``.

Every artifact a stage wrote is listed in ``manifest.json`` with its sha256. Two runs are equal
when they ran the same steps with the same outcome and every non-volatile artifact has the same
path and hash. Volatile artifacts (``manifest.VOLATILE_PATTERNS``: TensorBoard event files and
reports, which hold timestamps) are compared too, but only reported, unless ``--strict``.

Exit status: 0 equal, 1 different, 2 a folder is not a run (no manifest, or one that is not JSON).
Piped into a program that stops reading (``| head``) it ends quietly, with the same status.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vizpipe.pipeline.files import sha256_file
from vizpipe.pipeline.manifest import MANIFEST, VOLATILE_PATTERNS, settled


@dataclass
class Difference:
    """One artifact (or step) that is not the same in both runs."""

    path: str  # artifact path relative to the run folder, or "step <name>"
    kind: str  # changed | only_a | only_b | status | hash_on_disk
    a: str | None = None  # sha256 (or status) in run A
    b: str | None = None  # sha256 (or status) in run B

    def describe(self) -> str:
        """One line for people."""
        if self.kind == "changed":
            return f"{self.path}: sha256 {_short(self.a)} != {_short(self.b)}"
        if self.kind == "only_a":
            return f"{self.path}: only in A"
        if self.kind == "only_b":
            return f"{self.path}: only in B"
        if self.kind == "hash_on_disk":
            return f"{self.path}: the file on disk no longer matches its manifest hash ({self.a})"
        return f"{self.path}: status {self.a or 'absent'} != {self.b or 'absent'}"


@dataclass
class Comparison:
    """The result of comparing run A with run B."""

    a: str
    b: str
    equal: bool
    identical: int  # non-volatile artifacts with the same hash
    differences: list[Difference] = field(default_factory=list)  # in A's artifact order
    volatile: list[Difference] = field(default_factory=list)  # differing volatile artifacts
    volatile_same: int = 0
    config_changes: list[str] = field(default_factory=list)  # dotted keys whose values differ

    @property
    def first(self) -> Difference | None:
        """The first differing artifact (in run order), or None."""
        return self.differences[0] if self.differences else None


def _short(sha: str | None) -> str:
    return (sha or "-")[:12]


def is_volatile(path: str) -> bool:
    """True for artifacts whose bytes legitimately change between identical runs."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, pattern) for pattern in VOLATILE_PATTERNS)


def load_manifest(run: Path) -> dict[str, Any]:
    """Read ``<run>/manifest.json``; a clear error when the folder is not a run."""
    path = Path(run) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a run folder: no {MANIFEST}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # a truncated or overwritten file
        raise ValueError(f"{path} is not a vizpipe manifest (not valid JSON: {exc}; truncated?)") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a vizpipe manifest (a JSON {type(doc).__name__}, not an object)")
    return settled(doc, run)  # a killed run reads interrupted


@contextlib.contextmanager
def quiet_pipe() -> Iterator[None]:
    """Output into a pipe whose reader stopped (``| head``) ends quietly, as Unix tools do: no
    ``BrokenPipeError`` traceback, now or when Python flushes stdout at exit."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def records(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """setup, each stage, report: the manifest's step records in run order."""
    out = [manifest.get("setup") or {}]
    out += list(manifest.get("stages") or [])
    out.append(manifest.get("report") or {})
    return [r for r in out if r]


def artifacts(manifest: dict[str, Any]) -> dict[str, str]:
    """Artifact path -> sha256, in run order."""
    out: dict[str, str] = {}
    for rec in records(manifest):
        for art in rec.get("artifacts") or []:
            out[str(art["path"])] = str(art["sha256"])
    return out


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): node}


def compare_runs(
    run_a: Path | str, run_b: Path | str, *, strict: bool = False, verify: bool = True
) -> Comparison:
    """Compare two runs' manifests (steps, statuses, artifact hashes); see the module docstring.

    ``strict`` counts volatile artifacts as differences; ``verify`` (default) also re-hashes every file on
    disk and reports files changed since their manifest was written.
    """
    a, b = Path(run_a), Path(run_b)
    ma, mb = load_manifest(a), load_manifest(b)
    diffs: list[Difference] = []
    volatile: list[Difference] = []
    steps_a = {str(r.get("name")): str(r.get("status")) for r in records(ma)}
    steps_b = {str(r.get("name")): str(r.get("status")) for r in records(mb)}
    for name in dict.fromkeys([*steps_a, *steps_b]):
        if name == "report":
            continue  # the report is volatile; its status says nothing about the numbers
        if steps_a.get(name) != steps_b.get(name):
            diffs.append(Difference(f"step {name}", "status", steps_a.get(name), steps_b.get(name)))
    arts_a, arts_b = artifacts(ma), artifacts(mb)
    identical = volatile_same = 0
    for path in dict.fromkeys([*arts_a, *arts_b]):
        ha, hb = arts_a.get(path), arts_b.get(path)
        if ha == hb:
            if is_volatile(path):
                volatile_same += 1
            else:
                identical += 1
            continue
        kind = "changed" if ha and hb else ("only_a" if ha else "only_b")
        d = Difference(path, kind, ha, hb)
        (diffs if strict or not is_volatile(path) else volatile).append(d)
    if verify:
        for run, arts, label in ((a, arts_a, "A"), (b, arts_b, "B")):
            for path, sha in arts.items():
                f = run / path
                if is_volatile(path) and not strict:
                    continue
                if not f.is_file():
                    diffs.append(Difference(f"{path} ({label})", "hash_on_disk", "file missing"))
                elif sha256_file(f) != sha:
                    diffs.append(Difference(f"{path} ({label})", "hash_on_disk", "changed on disk"))
    ca, cb = _flatten(ma.get("config") or {}), _flatten(mb.get("config") or {})
    changes = [k for k in dict.fromkeys([*ca, *cb]) if ca.get(k) != cb.get(k)]
    return Comparison(str(a), str(b), not diffs, identical, diffs, volatile, volatile_same, changes)


def format_comparison(c: Comparison, limit: int = 20) -> str:
    """The report printed by the command."""
    lines = [f"A: {c.a}", f"B: {c.b}"]
    n_vol = len(c.volatile) + c.volatile_same
    if c.equal:
        lines.append(
            f"equal: {c.identical} artifacts identical"
            + (
                f"; {len(c.volatile)} of {n_vol} volatile artifacts differ (timestamps; ignored)"
                if n_vol
                else ""
            )
        )
    else:
        first = c.differences[0]
        what = "difference" if first.kind == "status" else "differing artifact"
        lines.append(f"different: first {what}: {first.describe()}")
        lines.append(f"{len(c.differences)} difference(s), {c.identical} artifacts identical:")
        lines += [f"  {d.describe()}" for d in c.differences[:limit]]
        if len(c.differences) > limit:
            lines.append(f"  ... and {len(c.differences) - limit} more (--limit 0 shows all)")
        if n_vol:
            lines.append(f"{len(c.volatile)} of {n_vol} volatile artifacts differ (timestamps; not counted)")
    if c.config_changes:
        shown = ", ".join(c.config_changes[:10]) + (" ..." if len(c.config_changes) > 10 else "")
        lines.append(f"config differs in: {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m vizpipe.compare A B``: 0 when equal, 1 when different, 2 on a bad folder."""
    parser = argparse.ArgumentParser(prog="python -m vizpipe.compare", description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="volatile artifacts (TensorBoard, reports) must match too",
    )
    parser.add_argument(
        "--trust-manifest",
        action="store_true",
        help="compare the manifests' hashes only (fast); by default every file on disk is re-hashed too, "
        "so a file edited after its run never compares equal",
    )
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--limit", type=int, default=20, help="differences listed (0 = all)")
    args = parser.parse_args(argv)
    try:
        c = compare_runs(args.run_a, args.run_b, strict=args.strict, verify=not args.trust_manifest)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"vizpipe: error: {exc}", file=sys.stderr)
        return 2
    with quiet_pipe():
        if args.json:
            doc = {**asdict(c), "first": asdict(c.first) if c.first else None}
            print(json.dumps(doc, indent=2))
        else:
            print(format_comparison(c, args.limit if args.limit > 0 else 1 << 30))
    return 0 if c.equal else 1


if __name__ == "__main__":
    sys.exit(main())
