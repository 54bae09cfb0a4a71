"""Summary stage: torchinfo on the real input, the layer catalog, print(model)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.runner import run_pipeline

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

    from pipeline.config_errors import translate
    from pipeline.errors import ConfigError

    overrides = ["summary.col_names=[output_size,num_parms]"]
    with pytest.raises(Exception) as info:
        compose(overrides)
    err = translate(info.value, overrides)
    assert isinstance(err, ConfigError)
    assert "num_parms" in str(err) and "did you mean 'num_params'" in str(err) and "kernel_size" in str(err)
    with pytest.raises(Exception) as info:
        compose(["summary.mode=tran"])
    assert "did you mean 'train'" in str(translate(info.value, ["summary.mode=tran"]))
