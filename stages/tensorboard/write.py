"""Write what ``collect`` gathered through one SummaryWriter (closed in ``finally``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.stage import StageResult, Table, Text
from vizpipe.pipeline.tensorboard_io import backend_value, histogram_raw, open_writer

if TYPE_CHECKING:
    from vizpipe.pipeline.context import RunContext
    from vizpipe.stages.tensorboard import TensorboardConfig
    from vizpipe.stages.tensorboard.collect import Collected

log = logging.getLogger(__name__)

LOGDIR = "tensorboard"
#: event-file name suffix: keeps this writer's file apart from any other writer's in the folder
SUFFIX = ".vizpipe"
TEXT_SUFFIX = "/text_summary"  # both libraries append it to add_text tags


def _add_graph_def(backend: str, writer: Any, graph_def: bytes) -> None:
    """The graph event, as ``add_graph`` writes it, without the per-library placeholder profile."""
    if backend == "torch":
        from tensorboard.compat.proto.event_pb2 import Event
    else:
        from tensorboardX.proto.event_pb2 import Event

    writer.file_writer.add_event(Event(graph_def=graph_def))


def _add_hparams(backend: str, writer: Any, hp: dict[str, str], metrics: dict[str, float]) -> None:
    """The three hparams summaries through ``writer`` itself: no timestamped sub-run."""
    if backend == "torch":
        from torch.utils.tensorboard.summary import hparams
    else:
        from tensorboardX.summary import hparams

    for summary in hparams(hp, metrics):  # experiment, session start, session end
        writer.file_writer.add_summary(summary, 0)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, 0)


def render(ctx: RunContext, settings: TensorboardConfig, data: Collected) -> StageResult:
    """Write everything through one writer (closed in ``finally``); return the record."""
    backend = backend_value(settings.backend)
    out = ctx.stage_dir(LOGDIR)
    for stale in sorted(out.glob(f"events.out.tfevents.*{SUFFIX}")):
        log.info("TensorBoard: removing %s from an earlier attempt in this folder", stale.name)
        stale.unlink()
    tags: dict[str, list[str]] = {"images": [], "histograms": [], "scalars": [], "text": []}
    writer = open_writer(backend, out, SUFFIX)
    try:
        if data.graph is not None:
            _add_graph_def(backend, writer, data.graph)
        for tag, array, fmt, step in data.images:
            if fmt.startswith("N"):
                writer.add_images(tag, array, step, dataformats=fmt)
            else:
                writer.add_image(tag, array, step, dataformats=fmt)
            tags["images"].append(tag)
        for tag, values, step in data.histograms:
            hist = histogram_raw(values)
            if hist is None:
                ctx.warn(f"TensorBoard: histogram {tag} has no finite values; not logged")
                continue
            writer.add_histogram_raw(tag, global_step=step, **hist)
            tags["histograms"].append(tag)
        for tag, value, step in data.scalars:
            writer.add_scalar(tag, value, step)
            tags["scalars"].append(tag)
        for tag, text in data.texts:
            writer.add_text(tag, text, 0)
            tags["text"].append(tag + TEXT_SUFFIX)
        if data.hparams is not None:
            _add_hparams(backend, writer, *data.hparams)
            tags["scalars"].extend(data.hparams[1])
    finally:
        writer.close()
    files = sorted(p.relative_to(ctx.output_dir).as_posix() for p in out.glob(f"*tfevents*{SUFFIX}"))
    log.debug(
        "TensorBoard (%s): graph %s, %d images, %d histograms, %d scalars, %d texts -> %s",
        backend,
        "yes" if data.graph is not None else "no",
        len(tags["images"]),
        len(tags["histograms"]),
        len(tags["scalars"]),
        len(tags["text"]),
        out,
    )
    view = f"tensorboard --logdir {ctx.output_dir}"
    rows = [[k, len(v), ", ".join(v[:12]) + (", …" if len(v) > 12 else "")] for k, v in tags.items() if v]
    if data.graph is not None:
        rows.insert(0, ["graph", 1, "(the model graph)"])
    sizes = [[f, (ctx.output_dir / f).stat().st_size] for f in files]
    return StageResult(
        stage="tensorboard",
        summary=(
            f"{backend}: graph {'yes' if data.graph is not None else 'no'}, {len(tags['images'])} images, "
            f"{len(tags['histograms'])} histograms, {len(tags['scalars'])} scalars, "
            f"{len(tags['text'])} texts; "
            f"view: {view}"
        ),
        tables=[
            Table("Event files", ["Event file", "Bytes"], sizes, code=[0]),
            Table("Tags", ["Kind", "Tags", "Names"], rows),
        ],
        texts=[Text("Open it", f"{view}\n# then browse to http://localhost:6006", open=True)],
        files=files,
        data={
            "backend": backend,
            "graph_error": data.graph_error,
            "tags": tags,
            "skipped": data.skipped,
            "activations_from": data.activations_from,
        },
    )
