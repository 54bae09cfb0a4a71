"""Summary stage: torchinfo on the real input, the layer catalog, print(model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vizpipe.pipeline.runner import run_pipeline

GOLDEN = Path(__file__).parent / "golden"


def test_resnet18_matches_the_seed_line_for_line(compose, tmp_path):
    result = run_pipeline(compose(["stages=[summary]", "report.enabled=false"]), tmp_path)
    assert result.ok, result.error
    out = tmp_path / "summary"
    totals = json.loads((out / "summary.json").read_text())["totals"]
    assert totals["total_params"] == 11_689_512 == totals["trainable_params"]
    assert round(totals["total_mult_adds"] / 1e9, 2) == 1.81
    mine = [line.rstrip() for line in (out / "summary.txt").read_text().splitlines()]
    seed = [line.rstrip() for line in (GOLDEN / "resnet18_summary.txt").read_text().splitlines()]
    assert mine == seed
    # print(model), as the seed shows it (newer torch adds "bias=True" to BatchNorm's repr)
    modules = (out / "modules.txt").read_text().replace("affine=True, bias=True,", "affine=True,")
    assert modules == (GOLDEN / "resnet18_modules.txt").read_text()


def test_catalog_and_per_layer_rows(compose, tmp_path):
    cfg = compose(
        [
            "model=vgg11",
            "stages=[summary]",
            "input=random",
            "input.shape=[2,3,64,64]",
            "summary.depth=1",
            "report.enabled=false",
        ]
    )
    assert run_pipeline(cfg, tmp_path).ok
    catalog = (tmp_path / "summary" / "layers.txt").read_text().splitlines()
    rows = {line.split()[0]: line.split() for line in catalog[1:]}
    assert rows["features.3"][1:] == ["Conv2d", "2x128x32x32"]
    assert rows["classifier.6"][1:] == ["Linear", "2x1000"]
    doc = json.loads((tmp_path / "summary" / "summary.json").read_text())
    by_name = {r["name"]: r for r in doc["layers"]}
    assert doc["input_shape"] == [2, 3, 64, 64]
    assert by_name["features"]["type"] == "Sequential" and by_name["features"]["depth"] == 1
    assert by_name["features.3"]["depth"] == 2 and by_name["features.3"]["params"] == 64 * 128 * 9 + 128
    assert sum(r["params"] for r in doc["layers"] if r["depth"] == 1) == doc["totals"]["total_params"]


def test_summary_options_are_torchinfos_enums(compose):
    import pytest
    from vizpipe.pipeline.config_errors import translate
    from vizpipe.pipeline.errors import ConfigError

    overrides = ["summary.col_names=[output_size,num_parms]"]
    with pytest.raises(Exception) as info:
        compose(overrides)
    err = translate(info.value, overrides)
    assert isinstance(err, ConfigError)
    assert "num_parms" in str(err) and "did you mean 'num_params'" in str(err) and "kernel_size" in str(err)
    with pytest.raises(Exception) as info:
        compose(["summary.mode=tran"])
    assert "did you mean 'train'" in str(translate(info.value, ["summary.mode=tran"]))


def table_rows(text: str) -> list[tuple[str, int, str]]:
    """(type, depth, Param #) of every row of torchinfo's table below the root model's row."""
    import re

    lines = [line for line in text.splitlines() if line.strip()]
    rules = [i for i, line in enumerate(lines) if set(line) == {"="}]
    assert len(rules) >= 3, text
    rows = []
    for line in lines[rules[1] + 2 : rules[2]]:  # the root model's row comes first; then its modules
        m = re.match(r"^[│├└─ ]*(\w+): (\d+)-\d+\s.*?(\S+)$", line)
        assert m, line
        rows.append((m.group(1), int(m.group(2)), m.group(3)))
    return rows


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_table_rows_follow_summary_depth(compose, tmp_path, depth):
    """summary.txt shows exactly the modules of summary.json down to ``summary.depth``, and the
    rows at that depth count the parameters of everything below them."""
    cfg = compose(
        ["stages=[summary]", "input=random", "input.shape=[1,3,32,32]", f"summary.depth={depth}"]
        + ["report.enabled=false"]
    )
    assert run_pipeline(cfg, tmp_path).ok
    out = tmp_path / "summary"
    doc = json.loads((out / "summary.json").read_text())
    rows = table_rows((out / "summary.txt").read_text())
    shown = [r for r in doc["layers"] if 1 <= r["depth"] <= depth]
    assert [(t, d) for t, d, _ in rows] == [(r["type"], r["depth"]) for r in shown]
    assert max(d for _, d, _ in rows) == depth
    for (_, d, params), r in zip(rows, shown, strict=True):
        if d == depth:  # the deepest rows shown hold their whole sub-tree's parameters
            assert params == (f"{r['params']:,}" if r["params"] else "--"), r
    assert sum(r["params"] for r in shown if r["depth"] == 1) == doc["totals"]["total_params"]
