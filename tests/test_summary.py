"""Summary stage: torchinfo on the real input, the layer catalog, print(model).

Summary stage on a tiny CNN: torchinfo options, exact totals and rows, the catalog, the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import RANDOM_INPUT, hand_context
from test_cam import Shared, TinyCNN
from torch import nn
from vizpipe.pipeline.errors import ConfigError, VizpipeError
from vizpipe.pipeline.runner import run_pipeline
from vizpipe.stages.summary import (
    Column,
    Row,
    SummaryConfig,
    SummaryMode,
    SummaryStage,
    catalog_text,
    collect,
    render,
)

# ---- Summary stage: torchinfo on the real input, the layer catalog, print(model).
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


# ---- Summary stage on a tiny CNN: torchinfo options, exact totals and rows, the catalog, the
# files.
@pytest.fixture
def ctx(tmp_path):
    return hand_context(TinyCNN(), tmp_path / "run", (2, 3, 8, 8))


def test_depth_check():
    """depth must be >= 0: -1 fails with one exact line, 0 passes."""
    with pytest.raises(ConfigError) as info:
        SummaryStage().check_settings(SummaryConfig(depth=-1), RANDOM_INPUT)
    assert str(info.value) == "summary.depth must be >= 0, got -1"
    SummaryStage().check_settings(SummaryConfig(depth=0), RANDOM_INPUT)


def test_collect_totals_rows_and_catalog(ctx):
    """Totals equal torchinfo's own; one row per module with params and depth; the probe's catalog."""
    from torchinfo import summary

    ctx.model.fc.bias.requires_grad_(False)
    data = collect(ctx, SummaryConfig())
    ref = summary(TinyCNN(), input_data=torch.zeros(2, 3, 8, 8), verbose=0)
    t = data["totals"]
    assert t == {
        "total_params": 355,
        "trainable_params": 352,
        "non_trainable_params": 3,
        "total_mult_adds": int(ref.total_mult_adds),
        "batch_size": 2,
        "mult_adds_per_image": 3 * 9 * 4 * 64 + 4 * 9 * 6 * 64 + 6 * 3,  # c1, c2 (8×8 outputs), fc: 20,754
        "mult_adds_per_batch": 2 * 20_754,
        "mult_adds_counted_by": "torch.utils.flop_counter: convolutions, matrix products and attention",
        "input_size_bytes": int(ref.total_input),
        "params_size_bytes": int(ref.total_param_bytes),
        "forward_backward_size_bytes": int(ref.total_output_bytes),
        "total_size_bytes": int(ref.total_input + ref.total_param_bytes + ref.total_output_bytes),
    }
    assert t["total_mult_adds"] == t["mult_adds_per_batch"] + 2 * (
        4 * 64 + 6 * 64 + 3
    )  # torchinfo adds biases
    assert data["model"] == "tiny" and data["input_shape"] == [2, 3, 8, 8]
    assert data["layers"] == [
        {
            "name": "",
            "type": "TinyCNN",
            "output_shape": [2, 3],
            "params": 355,
            "trainable_params": 352,
            "depth": 0,
        },
        {
            "name": "c1",
            "type": "Conv2d",
            "output_shape": [2, 4, 8, 8],
            "params": 112,
            "trainable_params": 112,
            "depth": 1,
        },
        {
            "name": "act",
            "type": "ReLU",
            "output_shape": [2, 4, 8, 8],
            "params": 0,
            "trainable_params": 0,
            "depth": 1,
        },
        {
            "name": "c2",
            "type": "Conv2d",
            "output_shape": [2, 6, 8, 8],
            "params": 222,
            "trainable_params": 222,
            "depth": 1,
        },
        {
            "name": "pool",
            "type": "AdaptiveAvgPool2d",
            "output_shape": [2, 6, 1, 1],
            "params": 0,
            "trainable_params": 0,
            "depth": 1,
        },
        {
            "name": "fc",
            "type": "Linear",
            "output_shape": [2, 3],
            "params": 21,
            "trainable_params": 18,
            "depth": 1,
        },
    ]
    assert [(r["name"], r["type"], r["output_shape"], r["calls"]) for r in data["catalog"]] == [
        ("c1", "Conv2d", [2, 4, 8, 8], 1),
        ("act", "ReLU", [2, 4, 8, 8], 1),
        ("c2", "Conv2d", [2, 6, 8, 8], 1),
        ("pool", "AdaptiveAvgPool2d", [2, 6, 1, 1], 1),
        ("fc", "Linear", [2, 3], 1),
    ]
    assert data["modules"] == str(ctx.model)
    assert "Total params: 355" in data["table"] and "Non-trainable params: 3" in data["table"]


def test_collect_options_reach_torchinfo(ctx):
    """depth, columns and row settings are passed on: the table shows exactly what was asked."""
    data = collect(
        ctx,
        SummaryConfig(
            depth=0, col_names=[Column.kernel_size, Column.num_params], row_settings=[Row.var_names]
        ),
    )
    assert data["table"].splitlines()[1].split() == [
        "Layer",
        "(type",
        "(var_name))",
        "Kernel",
        "Shape",
        "Param",
        "#",
    ]
    assert data["table"].splitlines()[3].split() == ["TinyCNN", "(TinyCNN)", "--", "355"]
    assert "Conv2d" not in data["table"]  # depth 0: only the model's row
    data = collect(ctx, SummaryConfig(depth=1, col_names=[Column.input_size], row_settings=[Row.ascii_only]))
    lines = data["table"].splitlines()
    assert lines[1].split() == ["Layer", "(type)", "Input", "Shape"]
    assert lines[4].split() == ["+", "Conv2d", "[2,", "3,", "8,", "8]"]


class BN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean(dim=(2, 3)))


class Seen(nn.Module):
    """Records the mode it was called in."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.fc(x.mean(dim=(2, 3)))


def test_mode_same_eval_train_and_restored(tmp_path):
    """same: the model's own mode; train/eval: forced for the pass; BN statistics restored."""
    model = Seen()
    ctx = hand_context(model, tmp_path / "r", (1, 3, 4, 4))
    ctx.probe()
    model.modes.clear()
    collect(ctx, SummaryConfig(mode=SummaryMode.same))
    assert model.modes == [False, False]  # torchinfo's pass, then the mult-adds count in the model's mode
    model.modes.clear()
    collect(ctx, SummaryConfig(mode=SummaryMode("train")))
    assert model.modes == [True, False] and model.training is False
    model.train()
    model.modes.clear()
    collect(ctx, SummaryConfig(mode=SummaryMode.same))
    assert model.modes == [True, True]
    model.modes.clear()
    collect(ctx, SummaryConfig(mode=SummaryMode("eval")))
    assert model.modes == [False, True] and model.training is True
    bn = BN()
    ctx = hand_context(bn, tmp_path / "b", (2, 3, 4, 4))
    before = bn.bn.running_mean.clone()
    collect(ctx, SummaryConfig(mode=SummaryMode("train")))
    assert torch.equal(bn.bn.running_mean, before) and bn.bn.num_batches_tracked.item() == 0


def test_model_error_is_one_line(tmp_path):
    """A model that fails under torchinfo: the root cause's first line, the mode and the batch shape."""
    model = TinyCNN()
    ctx = hand_context(model, tmp_path / "r", (2, 3, 8, 8))
    ctx.probe()
    model.forward = lambda x: (_ for _ in ()).throw(ValueError("boom happened\nsecond line"))
    with pytest.raises(VizpipeError) as info:
        collect(ctx, SummaryConfig(mode=SummaryMode("eval")))
    assert str(info.value) == (
        "torchinfo could not run tiny in eval mode on a batch of (2, 3, 8, 8): ValueError: boom happened"
    )


def test_catalog_text_exact():
    """Names padded to the longest + 2, types to 26, shapes joined by x, calls noted."""
    rows = [
        {"name": "", "type": "Net", "output_shape": [1, 3], "calls": 1},
        {"name": "block.conv", "type": "Conv2d", "output_shape": [1, 4, 2, 2], "calls": 2},
        {"name": "unused", "type": "Linear", "output_shape": None, "calls": 0},
    ]
    assert catalog_text(rows) == "\n".join(
        [
            "# name      " + "type".ljust(26) + "output shape (calls per forward)",
            "            " + "Net".ljust(26) + "1x3",
            "block.conv  " + "Conv2d".ljust(26) + "1x4x2x2 (2 calls)",
            "unused      " + "Linear".ljust(26) + "- (not called)",
        ]
    )
    assert catalog_text([]).splitlines() == [
        "# name".ljust(12) + "type".ljust(26) + "output shape (calls per forward)"
    ]


def test_render_files_rows_and_record(ctx):
    """The four files, the totals table, texts and scalars, exactly."""
    data = {
        "model": "tiny",
        "input_shape": [2, 3, 8, 8],
        "totals": {
            "total_params": 1234567,
            "trainable_params": 1234000,
            "non_trainable_params": 567,
            "total_mult_adds": 2_500_000_000,
            "batch_size": 2,
            "mult_adds_per_image": 1_500_000_000,
            "mult_adds_per_batch": 3_000_000_000,  # torchinfo's 2.5 G is below 90% of it: shown
            "mult_adds_counted_by": "COUNTER",
            "input_size_bytes": 1_500_000,
            "params_size_bytes": 4_940_000,
            "forward_backward_size_bytes": 12_345_678,
            "total_size_bytes": 18_785_678,
        },
        "layers": [{"name": "", "type": "T"}],
        "catalog": [{"name": "c1", "type": "Conv2d", "output_shape": [2, 4], "calls": 1}],
        "table": "TABLE",
        "modules": "MODULES",
    }
    res = render(ctx, data)
    out = ctx.output_dir / "summary"
    assert (out / "summary.txt").read_text() == "TABLE\n"
    assert (out / "modules.txt").read_text() == "MODULES\n"
    assert (out / "layers.txt").read_text() == catalog_text(data["catalog"]) + "\n"
    assert json.loads((out / "summary.json").read_text()) == {
        k: data[k] for k in ("model", "input_shape", "totals", "layers")
    }
    assert res.summary == "1,234,567 params, 1.50 G mult-adds per image (3.00 G per batch of 2)"
    table = res.tables[0]
    assert (table.title, table.columns, table.kv) == ("Totals", ["", ""], True)
    assert table.rows == [
        ["Input shape", "2×3×8×8"],
        ["Total params", "1,234,567"],
        ["Trainable params", "1,234,000"],
        ["Non-trainable params", "567"],
        ["Mult-adds per image", "1.500 G"],
        ["Mult-adds per batch of 2", "3.000 G"],
        ["Mult-adds counted by", "COUNTER"],
        [
            "torchinfo's count (summary.txt)",
            "2.500 G per batch of 2: layers with weights only (attention's matrix products not counted)",
        ],
        ["Input size", "1.50 MB"],
        ["Forward/backward pass size", "12.35 MB"],
        ["Params size", "4.94 MB"],
        ["Estimated total size", "18.79 MB"],
    ]
    assert [(t.title, t.body, t.tag) for t in res.texts] == [
        ("torchinfo table (summary/summary.txt)", "TABLE", "summary/torchinfo"),
        ("print(model) (summary/modules.txt)", "MODULES", None),
        ("Layer catalog: every addressable module (summary/layers.txt)", catalog_text(data["catalog"]), None),
    ]
    assert [(s.name, s.value, s.key) for s in res.scalars] == [
        ("summary/total_params", 1234567.0, True),
        ("summary/mult_adds_per_image", 1.5e9, True),
    ]
    assert res.files == [
        "summary/summary.txt",
        "summary/summary.json",
        "summary/layers.txt",
        "summary/modules.txt",
    ]
    assert res.data is data and res.stage == "summary"


def test_stage_run_on_a_shared_module(tmp_path):
    """The whole stage: layers.txt notes a module called twice."""
    ctx = hand_context(Shared(), tmp_path / "run", (1, 3, 8, 8))
    res = SummaryStage().run(ctx, SummaryConfig())
    text = (ctx.output_dir / "summary" / "layers.txt").read_text()
    assert "act     ReLU" + " " * 22 + "1x4x8x8 (2 calls)\n" in text
    assert text.endswith("unused  Conv2d" + " " * 20 + "- (not called)\n")
    assert res.summary == "367 params, 0.00 G mult-adds per image"  # 355 + the unused 1×1 conv's 12


def test_root_cause_follows_causes_and_unsuppressed_contexts():
    """The innermost exception: through __cause__ and __context__, not past a suppressed context."""
    from vizpipe.stages.summary import _root_cause

    root = ValueError("root")
    mid = RuntimeError("mid")
    mid.__cause__ = root
    top = TypeError("top")
    top.__context__ = mid
    assert _root_cause(top) is root
    assert _root_cause(root) is root
    hidden = KeyError("hidden")
    hidden.__context__ = mid
    hidden.__suppress_context__ = True
    assert _root_cause(hidden) is hidden
    both = OSError("both")
    both.__cause__ = root
    both.__context__ = mid
    assert _root_cause(both) is root


def test_collect_leaves_no_model_in_torchinfos_module_dict(ctx):
    """torchinfo keeps each summary's layers (holding the modules) in a module-level dict even with
    cache_forward_pass=False; the stage drops its own entry, so a sweep's models can be freed."""
    import gc
    import weakref

    from torchinfo import torchinfo

    other = torchinfo._cached_forward_pass.setdefault("SomeoneElses", [])
    collect(ctx, SummaryConfig())
    assert "TinyCNN" not in torchinfo._cached_forward_pass
    assert torchinfo._cached_forward_pass["SomeoneElses"] is other  # only its own entry
    del torchinfo._cached_forward_pass["SomeoneElses"]
    ref = weakref.ref(ctx.model)
    ctx.model = None
    gc.collect()
    assert ref() is None
