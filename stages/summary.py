"""Summary stage: torchinfo's table, totals and per-layer rows, the layer catalog, print(model).

Seed §1: ``print(model)`` and ``torchinfo.summary(model, (1, 3, 224, 224))``.
Writes ``summary/summary.txt`` (torchinfo's table exactly), ``summary/summary.json``,
``summary/layers.txt`` (every addressable module with its output shape) and
``summary/modules.txt`` (``print(model)``). torchinfo's forward pass runs on the first batch;
its "Total mult-adds" are for that whole batch and count only layers with weights, so the totals
give mult-adds per image and per batch, labelled, counted by ``torch.utils.flop_counter``
(attention included: ``count_mult_adds``);
in ``mode=train`` it updates BatchNorm statistics, which are put back afterwards
(``vizpipe.pipeline.hooks.preserved``), so later stages see the model as built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List

from torchinfo.enums import ColumnSettings, Mode, RowSettings
from vizpipe.pipeline.errors import ConfigError, VizpipeError
from vizpipe.pipeline.stage import Scalar, SharedConfig, Stage, StageResult, Table, Text

log = logging.getLogger(__name__)

# torchinfo's own enums, by value (OmegaConf matches enum members by name: output_size, not OUTPUT_SIZE)
Column = Enum("Column", {m.value: m.value for m in ColumnSettings}, type=str)
Row = Enum("Row", {m.value: m.value for m in RowSettings}, type=str)
SummaryMode = Enum("SummaryMode", {"same": "same", **{m.value: m.value for m in Mode}}, type=str)


@dataclass
class SummaryConfig:
    """``summary.*``: torchinfo options (https://github.com/TylerYep/torchinfo#documentation)."""

    # Depth of nested modules shown in the table (>= 0).
    depth: int = 3
    # Columns (torchinfo's ColumnSettings): input_size, output_size, num_params, params_percent,
    # kernel_size, mult_adds, trainable
    col_names: List[Column] = field(default_factory=lambda: [Column.output_size, Column.num_params])
    # Row settings (torchinfo's RowSettings): depth, var_names, ascii_only, hide_recursive_layers
    row_settings: List[Row] = field(default_factory=lambda: [Row.depth])
    # Model mode during torchinfo's forward pass: same | eval | train (torchinfo's Mode + same)
    mode: SummaryMode = SummaryMode.same


class SummaryStage(Stage):
    """torchinfo summary on the real input, plus the catalog later stages validate against."""

    name = "summary"
    title = "Summary"
    config = SummaryConfig
    order = 10
    default = True

    def check_settings(self, settings: SummaryConfig, shared: SharedConfig) -> None:
        """The depth must be >= 0 (columns, rows and mode are enums in the schema)."""
        if settings.depth < 0:
            raise ConfigError(f"summary.depth must be >= 0, got {settings.depth}")

    def run(self, ctx: Any, settings: SummaryConfig) -> StageResult:
        """Collect torchinfo statistics and the layer catalog, then write the four files."""
        return render(ctx, collect(ctx, settings))


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def _explain(ctx: Any, exc: Exception) -> None:
    """Raise the probe's own message when a plain forward pass fails too (e.g. an input too small
    for the model: the layer, what reached it and the size that works, ``pipeline/layers.py``)."""
    try:
        ctx.probe()
    except VizpipeError as why:
        raise why from exc
    except Exception:  # noqa: BLE001 - the probe fails differently: torchinfo's message is the one shown
        return


#: how ``mult_adds_per_image`` is counted (``count_mult_adds``), and the fallback
COUNTER = "torch.utils.flop_counter: convolutions, matrix products and attention"
TORCHINFO = "torchinfo: layers with weights only (attention's matrix products not counted)"


def _cpu_attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *_: Any, **__: Any) -> int:
    """FLOPs of softmax(Q Kᵀ) V on the CPU's fused kernel: (L×E)(E×S) and (L×S)(S×Ev) per batch and
    head (torch's counter knows the CUDA kernels, not ``_scaled_dot_product_flash_attention_for_cpu``)."""
    b, h, length, e = query_shape
    return 2 * b * h * length * key_shape[-2] * (e + value_shape[-1])


def count_mult_adds(model: Any, x: Any) -> int | None:
    """Mult-adds (FLOPs / 2) of one forward pass on ``x``: every convolution, matrix product and
    attention, wherever it runs (torchinfo counts only layers with weights: a ViT's attention and
    Swin's functional layers are missing there). None when the counter cannot run the model.

    ``x`` tracks a gradient during the count so that attention takes its unfused path (the
    inference fast path of ``nn.MultiheadAttention`` is one op the counter does not know); the
    model is left as found (``preserved``).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from vizpipe.pipeline.hooks import preserved

    extra = {}
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_attention is not None:
        extra[cpu_attention] = _cpu_attention_flops
    x = x.detach().clone().requires_grad_(True)
    try:
        with preserved(model), torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=extra) as c:
            model(x)
    except Exception as exc:  # noqa: BLE001 - an op the counter cannot run: torchinfo's count is used
        log.debug("torch.utils.flop_counter could not count %s: %s", type(model).__name__, exc)
        return None
    return int(c.get_total_flops()) // 2


def collect(ctx: Any, settings: SummaryConfig) -> dict[str, Any]:
    """Run torchinfo on the first batch; return the table text, totals, rows and the catalog."""
    from torchinfo import summary, torchinfo
    from vizpipe.pipeline.hooks import preserved

    model = ctx.model
    x = ctx.inputs.first().tensor
    names = {id(m): n for n, m in model.named_modules()}
    mode = settings.mode.value
    with preserved(model):  # torchinfo sets one mode for all modules; train mode moves BN statistics
        try:
            stats = summary(
                model,
                input_data=x,
                depth=settings.depth,
                col_names=[c.value for c in settings.col_names],
                row_settings=[r.value for r in settings.row_settings],
                mode=("train" if model.training else "eval") if mode == "same" else mode,
                device=ctx.device,
                verbose=0,
                cache_forward_pass=False,
            )
        except Exception as exc:  # torchinfo wraps the model's error as "See above stack traces"
            _explain(ctx, exc)
            root = _root_cause(exc)
            first = (str(root).strip().splitlines() or [""])[0]
            raise VizpipeError(
                f"torchinfo could not run {ctx.model_name} in {mode} mode on a batch of "
                f"{tuple(x.shape)}: {type(root).__name__}: {first}"
            ) from exc
    cache = getattr(torchinfo, "_cached_forward_pass", {})  # torchinfo keeps every summary's layers (and
    if cache.get(type(model).__name__) is stats.summary_list:  # so the model) whatever cache_forward_pass
        del cache[type(model).__name__]  # says: a sweep's models would stay alive; ours is dropped
    layers = [
        {
            "name": names.get(id(info.module), info.var_name),
            "type": info.class_name,
            "output_shape": list(info.output_size) if info.output_size else None,
            "params": int(info.num_params),
            "trainable_params": int(info.trainable_params),
            "depth": int(info.depth),
        }
        for info in stats.summary_list
    ]
    totals = _totals(stats, model, x)
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
        "input_shape": list(x.shape),
        "totals": totals,
        "layers": layers,
        "catalog": catalog,
        "table": str(stats),
        "modules": str(model),
    }


def _totals(stats: Any, model: Any, x: Any) -> dict[str, Any]:
    """The summary's totals: torchinfo's counts and sizes, mult-adds per image and per batch."""
    batch = int(x.shape[0])
    per_image, counted_by = count_mult_adds(model, x[:1]), COUNTER
    if per_image is None:  # the counter could not run the model: torchinfo's, shared out
        per_image, counted_by = int(stats.total_mult_adds) // max(batch, 1), TORCHINFO
    return {
        "total_params": int(stats.total_params),
        "trainable_params": int(stats.trainable_params),
        "non_trainable_params": int(stats.total_params - stats.trainable_params),
        "total_mult_adds": int(stats.total_mult_adds),  # torchinfo's, for the whole first batch
        "batch_size": batch,
        "mult_adds_per_image": per_image,
        "mult_adds_per_batch": per_image * batch,
        "mult_adds_counted_by": counted_by,
        "input_size_bytes": int(stats.total_input),
        "params_size_bytes": int(stats.total_param_bytes),
        "forward_backward_size_bytes": int(stats.total_output_bytes),
        "total_size_bytes": int(stats.total_input + stats.total_param_bytes + stats.total_output_bytes),
    }


def catalog_text(catalog: list[dict[str, Any]]) -> str:
    """``layers.txt``: every module's name, type and output shape (calls per forward)."""
    width = max((len(r["name"]) for r in catalog), default=10) + 2
    lines = ["# name".ljust(width) + "type".ljust(26) + "output shape (calls per forward)"]
    for r in catalog:
        shape = "x".join(str(v) for v in r["output_shape"]) if r["output_shape"] else "-"
        calls = f" ({r['calls']} calls)" if r["calls"] > 1 else ("" if r["calls"] else " (not called)")
        lines.append(r["name"].ljust(width) + r["type"].ljust(26) + shape + calls)
    return "\n".join(lines)


def render(ctx: Any, data: dict[str, Any]) -> StageResult:
    """Write summary.txt, summary.json, layers.txt and modules.txt; return the record."""
    from vizpipe.pipeline.files import write_atomic, write_json

    layers = catalog_text(data["catalog"])
    write_atomic(ctx.claim("summary/summary.txt"), data["table"] + "\n")
    write_atomic(ctx.claim("summary/modules.txt"), data["modules"] + "\n")
    write_json(
        ctx.claim("summary/summary.json"), {k: data[k] for k in ("model", "input_shape", "totals", "layers")}
    )
    write_atomic(ctx.claim("summary/layers.txt"), layers + "\n")
    t = data["totals"]
    mb = 1e6
    per_batch = f"Mult-adds per batch of {t['batch_size']}"
    rows = [
        ["Input shape", "×".join(map(str, data["input_shape"]))],
        ["Total params", f"{t['total_params']:,}"],
        ["Trainable params", f"{t['trainable_params']:,}"],
        ["Non-trainable params", f"{t['non_trainable_params']:,}"],
        ["Mult-adds per image", f"{t['mult_adds_per_image'] / 1e9:.3f} G"],
        [per_batch, f"{t['mult_adds_per_batch'] / 1e9:.3f} G"],
        ["Mult-adds counted by", t["mult_adds_counted_by"]],
    ]
    if (
        t["total_mult_adds"] < 0.9 * t["mult_adds_per_batch"]
    ):  # torchinfo missed layers (it adds biases: more)
        why = TORCHINFO.split(": ", 1)[1]
        rows.append(
            [
                "torchinfo's count (summary.txt)",
                f"{t['total_mult_adds'] / 1e9:.3f} G per batch of {t['batch_size']}: {why}",
            ]
        )
    rows += [
        ["Input size", f"{t['input_size_bytes'] / mb:.2f} MB"],
        ["Forward/backward pass size", f"{t['forward_backward_size_bytes'] / mb:.2f} MB"],
        ["Params size", f"{t['params_size_bytes'] / mb:.2f} MB"],
        ["Estimated total size", f"{t['total_size_bytes'] / mb:.2f} MB"],
    ]
    line = f"{t['total_params']:,} params, {t['mult_adds_per_image'] / 1e9:.2f} G mult-adds per image"
    if t["batch_size"] > 1:
        line += f" ({t['mult_adds_per_batch'] / 1e9:.2f} G per batch of {t['batch_size']})"
    log.debug("Summary: %s", line)
    return StageResult(
        stage="summary",
        summary=line,
        tables=[Table("Totals", ["", ""], rows, kv=True)],
        texts=[
            Text("torchinfo table (summary/summary.txt)", data["table"], tag="summary/torchinfo"),
            Text("print(model) (summary/modules.txt)", data["modules"]),
            Text("Layer catalog: every addressable module (summary/layers.txt)", layers),
        ],
        scalars=[
            Scalar("summary/total_params", float(t["total_params"]), key=True),
            Scalar("summary/mult_adds_per_image", float(t["mult_adds_per_image"]), key=True),
        ],
        files=[f"summary/{n}" for n in ("summary.txt", "summary.json", "layers.txt", "modules.txt")],
        data=data,
    )
