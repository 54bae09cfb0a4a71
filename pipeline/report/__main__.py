"""``python -m vizpipe.report <run_or_sweep_dir> [--jobs]``: rebuild a run report or a sweep index.

Exit codes: 0 written, 1 failure while writing, 2 not a run or sweep folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vizpipe.pipeline.manifest import MANIFEST
from vizpipe.pipeline.report import is_job_dir, is_run_dir, is_sweep_dir, write_run_report, write_sweep_index


def main(argv: list[str] | None = None) -> int:
    """Rebuild the report of a run folder, or the index of a sweep folder (``--jobs``: and its jobs')."""
    parser = argparse.ArgumentParser(prog="python -m vizpipe.report", description=main.__doc__)
    parser.add_argument(
        "folder", type=Path, help="a run folder (has manifest.json) or a sweep folder (has job folders)"
    )
    parser.add_argument(
        "--jobs", action="store_true", help="for a sweep: also rebuild every job's report.html first"
    )
    args = parser.parse_args(argv)
    folder: Path = args.folder
    if not folder.is_dir():
        print(f"vizpipe: error: {folder} is not a folder", file=sys.stderr)
        return 2
    try:
        if is_run_dir(folder):
            path = write_run_report(folder)
        elif is_sweep_dir(folder):
            if args.jobs:
                for job in sorted(p for p in folder.iterdir() if is_job_dir(p) and (p / MANIFEST).is_file()):
                    print(f"vizpipe: report {write_run_report(job)}")
            path = write_sweep_index(folder)
        else:
            print(
                f"vizpipe: error: {folder} is neither a run folder (no {MANIFEST}) "
                "nor a sweep folder (no job folders)",
                file=sys.stderr,
            )
            return 2
    except Exception as exc:  # noqa: BLE001 - one readable line for the console, exit code 1
        print(
            f"vizpipe: error: could not write the report for {folder}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"vizpipe: report {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
