"""The README's explanations pictures, from a finished ``sweep=explanations`` folder.

    python run.py -m experiment=shapes_demo sweep=explanations hydra.sweep.dir=outputs/explanations
    python scripts/explanations_docs.py outputs/explanations

Writes ``docs/explanations_leaderboard.png`` (the index's leaderboard, screenshot in headless
Chromium with ``scripts/screenshot.py``) and ``docs/randomisation_check.png`` (the rows of the
index's randomisation figure for one layer per method: every job's ``cam/sanity/row.png`` with
``cam.layer=--layer`` or that computed its maps at the input, stacked as the index stacks them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rows_for(sweep: Path, layer: str) -> list[Path]:
    """Every job's randomisation row at ``layer`` or at the input, in job order."""
    rows = []
    jobs = sorted(
        (p for p in sweep.iterdir() if p.is_dir() and p.name[:1].isdigit()),
        key=lambda p: int(p.name.split("_")[0]),
    )
    for job in jobs:
        row = job / "cam" / "sanity" / "row.png"
        if not row.is_file():
            continue
        doc = json.loads((job / "cam" / "sanity" / "sanity.json").read_text())
        if doc["layer"] in (layer, "input"):
            rows.append(row)
    return rows


def stack(rows: list[Path], out: Path) -> None:
    """The rows one under the other, padded on the right to the widest."""
    import numpy as np
    from PIL import Image

    images = []
    for path in rows:
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB")))
    width = max(i.shape[1] for i in images)
    padded = [np.pad(i, ((0, 0), (0, width - i.shape[1]), (0, 0)), constant_values=255) for i in images]
    # 256 colours are plenty for heat maps and titles: a third of the bytes in the repository
    Image.fromarray(np.concatenate(padded)).quantize(256).save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a finished sweep=explanations folder")
    parser.add_argument("--layer", default="conv3", help="the CAMs' layer shown in the figure")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--height", type=int, default=1500, help="pixels of the leaderboard shown")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from vizpipe.pipeline.report import write_sweep_index

    from scripts.screenshot import main as screenshot

    write_sweep_index(args.sweep)  # with this checkout's index code
    rows = rows_for(args.sweep, args.layer)
    if not rows:
        print(f"vizpipe: error: no randomisation rows at {args.layer} in {args.sweep}", file=sys.stderr)
        return 1
    stack(rows, args.docs / "randomisation_check.png")
    out = args.docs / "explanations_leaderboard.png"
    code = screenshot(
        [
            "--run",
            str(args.sweep),
            "--out",
            str(out),
            "--section",
            "leaderboard",
            "--height",
            str(args.height),
            "--width",
            "1600",
        ]
    )
    print(f"vizpipe: {args.docs / 'randomisation_check.png'} ({len(rows)} rows), {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
