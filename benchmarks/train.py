"""The train stage with all its logging vs a hand-written loop doing the same epochs without any.

    .venv/bin/python -m benchmarks.train [--repeats 3] [--threads 2] [--epochs 5] [--train 3000] [--val 500]

Work: ``experiment=shapes_demo``'s training (shapes_net from seed 0 on ``input=shapes``: 3000
training and 500 validation images of 64 px drawn on demand, batches of 32, Adam with a
one-cycle schedule peaking at 0.005, 5 epochs, validation after each), on the CPU with
``torch.set_num_threads(--threads)``.

- **stage**: ``TrainStage.check_model`` + ``run`` as a run calls them: TensorBoard (loss, accuracy
  and lr every step on two writers, weight and gradient histograms and CAM-over-time images of 8
  validation images every epoch, the graph, an input grid), the pointing game on the 128
  visualised images before and after training, a checkpoint and ``history.json`` every epoch, the
  curves and strips for the report;
- **stage, no CAM**: the same with ``train.cam_images=0 train.pointing_game=false``;
- **hand loop**: the same model, data, DataLoader shuffling, optimizer, scheduler and epochs
  (train, then validate), written out by hand, logging nothing;
- **hand + Watch**: that loop telling ``vizpipe.Watch`` every step and epoch (the train stage's
  logging, CAM frames and pointing game, from a loop the user wrote; target: <= 1.10x).

Both sides run in one process with the allocator set as ``run.py`` sets it
(``vizpipe.pipeline.process.keep_freed_memory``: freed memory is reused, not faulted in again; the hand
loop gains from it as much as the stage). ``--system-malloc`` leaves glibc's own thresholds: then
each side's page faults depend on what ran before it in the process (a model-graph trace between
two steps doubled them), and the ratio swings with them.

Ratio = side / hand loop (the overhead of everything the stage adds). Timings are the median of
``--repeats`` runs after one warm-up run of each, sides alternating; they vary with the load.
The final weights of the stage and the hand loop are compared (max |difference|): the stage's
logging must not change what is learned.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def compose(overrides: list[str]) -> Any:
    """The composed config of ``python run.py experiment=shapes_demo <overrides>``."""
    from benchmarks.process import compose as compose_run

    return compose_run(["experiment=shapes_demo", "device=cpu", *overrides])


def stage_side(cfg: Any, out: Path) -> tuple[float, Any]:
    """Seconds for the train stage's check_model + run, and the trained model."""
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.registry import get_stage
    from vizpipe.pipeline.schema import settings_of
    from vizpipe.stages.train import reuse

    reuse.forget()  # every repeat trains (a kept training of this process would be copied instead)
    ctx = build_context(cfg, out)
    stage, settings = get_stage("train"), settings_of(cfg, "train")
    t = time.perf_counter()
    stage.check_model(ctx, settings)
    stage.run(ctx, settings)
    return time.perf_counter() - t, ctx.model


def hand_side(cfg: Any, out: Path, watched: bool = False) -> tuple[float, Any]:
    """Seconds for the same epochs written by hand (no logging; ``watched``: the same loop told to
    ``vizpipe.Watch`` every step and epoch, as a user would), and the trained model."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from vizpipe.pipeline.factory import build_context
    from vizpipe.pipeline.inputs import build_split

    ctx = build_context(cfg, out)
    model, tc = ctx.model, cfg.train
    t = time.perf_counter()
    watch = make_watch(model, ctx, out) if watched else None
    train, val = build_split(ctx.inputs, "train"), build_split(ctx.inputs, "val")
    loader = DataLoader(
        train.dataset,
        batch_size=int(tc.batch_size),
        shuffle=True,
        generator=torch.Generator().manual_seed(int(cfg.seed)),
    )
    val_loader = DataLoader(val.dataset, batch_size=2 * int(tc.batch_size))
    steps = int(tc.epochs) * len(loader)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=float(tc.lr))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=float(tc.lr), total_steps=steps)
    for _ in range(int(tc.epochs)):
        model.train()
        for batch in loader:
            logits = model(batch["x"])
            loss = F.cross_entropy(logits, batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if watch is not None:
                hits = (logits.detach().argmax(1) == batch["label"]).float().mean()
                watch.step(loss, hits, optimizer.param_groups[0]["lr"], images=batch["x"], n=len(batch["x"]))
        model.eval()
        loss_sum, hits, seen = 0.0, 0, 0
        with torch.no_grad():
            for batch in val_loader:
                logits = model(batch["x"])
                loss_sum += float(F.cross_entropy(logits, batch["label"], reduction="sum"))
                hits, seen = hits + int((logits.argmax(1) == batch["label"]).sum()), seen + len(logits)
        if watch is not None:
            watch.epoch(val_loss=loss_sum / seen, val_accuracy=hits / seen)
    if watch is not None:
        watch.close()
    return time.perf_counter() - t, model


def make_watch(model: Any, ctx: Any, out: Path) -> Any:
    """``vizpipe.Watch`` as the train stage watches: 8 val images' CAMs, the pointing game on the
    128 visualised images (their boxes), every step logged, histograms and the graph."""
    import torch
    from vizpipe.pipeline.inputs import build_split

    import vizpipe

    val = build_split(ctx.inputs, "val").dataset
    items = [val[i] for i in range(8)] + [ctx.inputs.dataset[i] for i in range(len(ctx.inputs))]
    x = torch.stack([item["x"] for item in items])
    return vizpipe.Watch(
        model,
        x,
        out / "watch",
        cam={"method": "gradcam", "images": 8},
        labels=[int(item["label"]) for item in items],
        boxes=[item["box"].tolist() for item in items],
    )


def watch_side(cfg: Any, out: Path) -> tuple[float, Any]:
    """The hand loop with ``vizpipe.Watch``."""
    return hand_side(cfg, out, watched=True)


def minor_faults() -> int:
    """This process's minor page faults so far (first touches of fresh memory pages)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def max_difference(a: Any, b: Any) -> float:
    """Largest |difference| between two models' parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].is_floating_point())


def main(argv: list[str] | None = None) -> None:
    """Run the sides, print the table and the ratios."""
    import logging

    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train", type=int, default=3000, help="training images")
    parser.add_argument("--val", type=int, default=500, help="validation images")
    parser.add_argument("--system-malloc", action="store_true", help="keep glibc's malloc thresholds")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.system_malloc:
        from vizpipe.pipeline.process import keep_freed_memory

        keep_freed_memory()
    logging.disable(logging.WARNING)  # the per-epoch lines and the input.limit note
    base = [f"train.epochs={args.epochs}", f"input.train_count={args.train}", f"input.val_count={args.val}"]
    sides = {
        "stage": (stage_side, base),
        "stage, no CAM": (stage_side, [*base, "train.cam_images=0", "train.pointing_game=false"]),
        "hand loop": (hand_side, base),
        "hand + Watch": (watch_side, base),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    faults: dict[str, list[int]] = {name: [] for name in sides}
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats + 1):  # run 0 warms up
            for name, (fn, overrides) in sides.items():
                cfg, before = compose(overrides), minor_faults()
                seconds, models[name] = fn(cfg, Path(tmp, f"{r}_{len(times[name])}_{name}"))
                if r:
                    times[name].append(seconds)
                    faults[name].append(minor_faults() - before)
    hand = statistics.median(times["hand loop"])
    print(
        f"train stage vs hand-written loop: {args.epochs} epochs x {args.train} shapes images "
        f"(+{args.val} val), torch threads {torch.get_num_threads()}, median of {args.repeats}, "
        f"malloc: {'system' if args.system_malloc else 'keep_freed_memory'}"
    )
    print(f"{'side':<16}{'seconds':>9}{'ratio':>8}{'page faults':>13}")  # ratio: side / hand loop
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<16}{median:>9.2f}{median / hand:>8.3f}{statistics.median(faults[name]):>13,.0f}")
    diff = max_difference(models["stage"], models["hand loop"])
    print(f"max |weights(stage) - weights(hand loop)| = {diff:.3g}")


if __name__ == "__main__":
    main()
