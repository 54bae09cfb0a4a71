"""Summary stage: torchinfo's table, totals and per-layer rows, the layer catalog, print(model).

Seed §1: ``print(model)`` and ``torchinfo.summary(model, (1, 3, 224, 224))``.
Writes ``summary/summary.txt`` (torchinfo's table exactly), ``summary/summary.json``,
``summary/layers.txt`` (every addressable module with its output shape) and
``summary/modules.txt`` (``print(model)``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.context import RunContext
from pipeline.errors import ConfigError, unknown_choice
from pipeline.schema import SummaryConfig
from stages import Stage

log = logging.getLogger(__name__)

COLUMNS = (
    "input_size",
    "output_size",
    "num_params",
    "params_percent",
    "kernel_size",
    "mult_adds",
    "trainable",
)
ROWS = ("depth", "var_names", "ascii_only")
MODES = ("same", "eval", "train")


class SummaryStage(Stage):
    """torchinfo summary on the real input, plus the catalog later stages validate against."""

    name = "summary"

    def validate(self, ctx: RunContext, settings: SummaryConfig) -> None:
        """Check columns, row settings, mode and depth before any work."""
        for c in settings.col_names:
            if c not in COLUMNS:
                raise unknown_choice("summary.col_names entry", c, COLUMNS)
        for r in settings.row_settings:
            if r not in ROWS:
                raise unknown_choice("summary.row_settings entry", r, ROWS)
        if settings.mode not in MODES:
            raise unknown_choice("summary.mode", settings.mode, MODES)
        if settings.depth < 0:
            raise ConfigError(f"summary.depth must be >= 0, got {settings.depth}")

    def run(self, ctx: RunContext, settings: SummaryConfig) -> dict[str, Any]:
        """Collect torchinfo statistics and the layer catalog, then write the four files."""
        data = collect(ctx, settings)
        return render(ctx, data)


def collect(ctx: RunContext, settings: SummaryConfig) -> dict[str, Any]:
    """Run torchinfo on the real input; return the table text, totals and per-layer rows."""
    from torchinfo import summary

    model = ctx.model
    names = {id(m): n for n, m in model.named_modules()}
    was_training = model.training
    modes = [(m, m.training) for m in model.modules()]  # torchinfo sets one mode for all modules
    try:
        stats = summary(
            model,
            input_data=ctx.inputs.tensor,
            depth=settings.depth,
            col_names=list(settings.col_names),
            row_settings=list(settings.row_settings),
            mode=("train" if was_training else "eval") if settings.mode == "same" else settings.mode,
            device=ctx.device,
            verbose=0,
            cache_forward_pass=False,
        )
    finally:
        for m, mode in modes:
            m.training = mode
    table = str(stats)
    layers = []
    for info in stats.summary_list:
        name = names.get(id(info.module), info.var_name)
        layers.append(
            {
                "name": name,
                "type": info.class_name,
                "output_shape": list(info.output_size) if info.output_size else None,
                "params": int(info.num_params),
                "trainable_params": int(info.trainable_params),
                "depth": int(info.depth),
            }
        )
    totals = {
        "total_params": int(stats.total_params),
        "trainable_params": int(stats.trainable_params),
        "non_trainable_params": int(stats.total_params - stats.trainable_params),
        "total_mult_adds": int(stats.total_mult_adds),
        "input_size_bytes": int(stats.total_input),
        "params_size_bytes": int(stats.total_param_bytes),
        "forward_backward_size_bytes": int(stats.total_output_bytes),
        "total_size_bytes": int(stats.total_input + stats.total_param_bytes + stats.total_output_bytes),
    }
    probe = ctx.probe()
    catalog = [
        {
            "name": n,
            "type": probe.types[n],
            "output_shape": list(probe.shapes[n]) if n in probe.shapes else None,
            "calls": probe.calls.get(n, 0),
        }
        for n in probe.types
    ]
    return {
        "model": ctx.model_name,
        "input_shape": list(ctx.inputs.tensor.shape),
        "totals": totals,
        "layers": layers,
        "catalog": catalog,
        "table": table,
        "modules": str(model),
    }


def render(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """Write summary.txt, summary.json, layers.txt and modules.txt; return what later stages use."""
    out = ctx.stage_dir("summary")
    (out / "summary.txt").write_text(data["table"] + "\n", encoding="utf-8")
    (out / "modules.txt").write_text(data["modules"] + "\n", encoding="utf-8")
    doc = {k: data[k] for k in ("model", "input_shape", "totals", "layers")}
    (out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    width = max((len(r["name"]) for r in data["catalog"]), default=10) + 2
    lines = ["# name".ljust(width) + "type".ljust(26) + "output shape (calls per forward)"]
    for r in data["catalog"]:
        shape = "x".join(str(v) for v in r["output_shape"]) if r["output_shape"] else "-"
        calls = f" ({r['calls']} calls)" if r["calls"] > 1 else ("" if r["calls"] else " (not called)")
        lines.append(r["name"].ljust(width) + r["type"].ljust(26) + shape + calls)
    (out / "layers.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    t = data["totals"]
    log.info("Summary: %s params, %.2f G mult-adds", f"{t['total_params']:,}", t["total_mult_adds"] / 1e9)
    return {
        "totals": t,
        "table": data["table"],
        "files": [f"summary/{n}" for n in ("summary.txt", "summary.json", "layers.txt", "modules.txt")],
    }
