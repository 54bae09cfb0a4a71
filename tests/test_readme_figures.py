"""The README's shapes-demo figures come from ``python -m benchmarks.demo_figures`` (issue 26).

The block between the markers in README.md must be exactly what the script writes (so it was
written by it, not typed), and the script must run: here on a reduced demo, which it prints but
never writes into the README.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from benchmarks import demo_figures as d

ROOT = d.ROOT


def test_readme_holds_one_block_in_the_script_format():
    block = d.block_of(d.README.read_text(encoding="utf-8"))
    fig, date, machine, seconds = d.parse(block)
    assert d.render(fig, date=date, machine=machine, seconds=seconds) == block
    assert 0.0 <= fig.chance < fig.before < fig.after <= 1.0 and 0.5 < fig.val <= 1.0
    assert fig.method == "GradCAM" and fig.images >= 100


def test_render_and_parse_round_trip_both_time_forms():
    fig = d.Figures(
        val=0.978, epochs=5, method="GradCAM", images=128, before=0.4609, after=0.9453, chance=0.171
    )
    untimed = d.render(fig, date="2026-12-07", machine="Some CPU, 2 cores, torch 2.1", seconds=None)
    assert "val accuracy 97.8% after 5 epochs; GradCAM pointing game 0.945 on 128 held-out images" in untimed
    assert "0.461 at random init (chance 0.17)" in untimed and d.UNTIMED in untimed
    back, date, machine, seconds = d.parse(untimed)
    assert (date, machine, seconds) == ("2026-12-07", "Some CPU, 2 cores, torch 2.1", None)
    assert (back.val, back.after, back.before, back.chance) == (0.978, 0.945, 0.461, 0.17)
    timed = d.render(fig, date="2026-12-07", machine="x", seconds=21.4)
    assert "wall time of the whole demo: 21 s." in timed and d.parse(timed)[3] == 21.0


def test_block_of_wants_exactly_one_block():
    block = d.render(
        d.Figures(1.0, 1, "GradCAM", 128, 0.5, 0.9, 0.1), date="2026-01-01", machine="m", seconds=None
    )
    assert d.block_of(f"a\n{block}\nb") == block
    with pytest.raises(ValueError, match="holds 0 demo-figures blocks"):
        d.block_of("no block")
    with pytest.raises(ValueError, match="holds 2 demo-figures blocks"):
        d.block_of(f"{block}\n{block}")


def test_write_refuses_a_reduced_run(capsys):
    with pytest.raises(SystemExit):
        d.main(["--write", "train.epochs=1"])
    assert "--write takes no overrides" in capsys.readouterr().err


@pytest.mark.slow
def test_script_runs_on_a_reduced_demo():
    """One epoch on 128 images: the script runs the real demo and prints a block of the format."""
    reduced = ["train.epochs=1", "input.train_count=128", "input.val_count=32", "input.limit=100"]
    before = d.README.read_text(encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.demo_figures", *reduced],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    fig, _, _, seconds = d.parse(out.stdout.strip())
    assert fig.epochs == 1 and fig.images == 100 and seconds is None
    assert d.README.read_text(encoding="utf-8") == before


# --------------------------------------------------------------------------- every figure's source

#: a measured figure: a ratio (not a size such as 1×1, not a target such as ≤ 1.0×), a percentage,
#: a time or a memory size, a pointing game
FIGURE = re.compile(
    r"(?<![≤≥] )(?<![\d.≤≥])\d+(?:\.\d+)?×(?!\d)|\d%|\b\d+(?:\.\d+)? (?:s|ms|MiB|GiB)\b|pointing game \d"
)
DATE = re.compile(r"\d{4}-\d\d-\d\d")
#: what produced it: a benchmark, a test, RESULTS.md, or the demo experiment run that printed it
SOURCE = re.compile(r"benchmarks|tests/|RESULTS\.md|python run\.py experiment=")


def readme_units(text: str) -> list[str]:
    """README's prose outside code blocks, one unit per paragraph, list item or table row; a table
    row carries the paragraph just above its table (the table's caption) with it."""
    units: list[str] = []
    current: list[str] = []
    caption = ""
    fence = False

    def close() -> None:
        if current:
            units.append(" ".join(current))
            current.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            close()
        elif fence:
            continue
        elif not line.strip():
            if current:
                caption = " ".join(current)
            close()
        elif line.startswith("|"):
            if current:
                caption = " ".join(current)
            close()
            units.append(f"{line} {caption}".rstrip())
        else:
            if line.lstrip().startswith("- "):
                close()
            current.append(line.strip())
    close()
    return units


def test_every_figure_names_its_benchmark_or_test_and_date():
    """A paragraph, list item or table row quoting a measured figure names where it comes from
    (a benchmark, a test or benchmarks/RESULTS.md) and the date it was measured."""
    bare = [
        u[:160]
        for u in readme_units(d.README.read_text(encoding="utf-8"))
        if FIGURE.search(u) and not (DATE.search(u) and SOURCE.search(u))
    ]
    assert not bare, "figures without their benchmark/test and date:\n" + "\n".join(bare)


def test_the_figure_check_finds_an_unsourced_figure():
    units = readme_units(
        "Fast:\nit runs 9.1× faster.\n\n```\nx 2.0×\n```\n| a | 3× | 2026-01-01 `benchmarks.x` |\n"
        "\na 1×1 convolution, 3×3 kernels: sizes, not figures; target ≤ 1.0×, ≥10×: targets\n"
    )
    flagged = [u for u in units if FIGURE.search(u) and not (DATE.search(u) and SOURCE.search(u))]
    assert flagged == ["Fast: it runs 9.1× faster."]
