"""What surviving a kill costs: resuming a CAM run killed at 60%, and the atomic writes themselves.

    .venv/bin/python -m benchmarks.resume [--images 300] [--size 128] [--batch 20] [--repeats 3] [--at 0.6]

Work: the CAM stage (``stages=[cam]``, GradCAM on resnet18's ``layer4``, random init seeded with
0, on the CPU, ``torch.set_num_threads(1)``) over a folder of ``--images`` seeded-noise PNG files
of ``--size`` pixels (``input=image``, no resize or crop), ``run_pipeline`` in this process, the
build cache cleared before every run so each run builds its model and inputs as a new process
would. Three ways, alternating, the median of ``--repeats`` runs after one warm-up of each:

- **direct**: what the stage did before issue 20: every ``.npy`` and PNG written straight to its
  final name (``np.save(path)``, ``Image.save(path)``), no per-batch progress record, the manifest
  hashing every file by reading it back;
- **atomic**: the stage as it is: each file written to a temporary name and renamed, its sha256
  taken from the bytes in memory, each batch recorded in ``.vizpipe/progress/cam.jsonl``;
- **resume**: a run interrupted (SIGTERM's ``Interrupted``, raised in process) once ``--at`` of
  its batches are recorded, then ``run_pipeline(..., resume=True)``: only the resumed call is
  timed (it reads and verifies the finished batches' files, then does the rest).

Ratios: atomic / direct (the issue's bound: <= 1.05) and resume / atomic (<= 0.45 at 60%). The
``.npy`` files of every way are compared byte for byte, so no speed is bought with results.

A resumed run pays what every run pays before its first batch (the model built, the first batch
read, the probe's forward pass: a few seconds on a CPU) and reads back the finished batches' files
to check their hashes; the rest is the 40% of batches left. So the ratio falls towards 0.40 as the
run grows, and a small run (``--size 64``, where that fixed part is near a tenth of the run) stays
above 0.45: the default size is 128 px.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def images(folder: Path, count: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i:04d}.png")
    return folder


def config(folder: Path, batch: int):
    from benchmarks.process import compose

    return compose(
        [
            "model=resnet18",
            "device=cpu",
            "input=image",
            f"input.path={folder}",
            "input.limit=null",
            f"input.batch_size={batch}",
            "input.resize=null",
            "input.crop=null",
            "stages=[cam]",
            "report.enabled=false",
        ]
    )


class Direct:
    """Patch the writers back to plain writes and the progress record off (the stage before issue 20)."""

    def __enter__(self) -> Direct:
        import numpy as np
        from vizpipe.pipeline import files
        from vizpipe.pipeline.progress import Progress

        self.saved = (files.save_npy, files.save_image, Progress.record)

        def save_npy(path, array):
            np.save(path, array)
            return Path(path)

        def save_image(path, image, **options):
            image.save(path, **options)
            return Path(path)

        files.save_npy, files.save_image = save_npy, save_image
        Progress.record = lambda self, key, written, data=None: None  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        from vizpipe.pipeline import files
        from vizpipe.pipeline.progress import Progress

        files.save_npy, files.save_image, Progress.record = self.saved  # type: ignore[method-assign]


def one_run(cfg, out: Path, *, resume: bool = False) -> float:
    from vizpipe.pipeline.cache import get_cache
    from vizpipe.pipeline.runner import run_pipeline

    get_cache().clear()
    t = time.perf_counter()
    result = run_pipeline(cfg, out, resume=resume)
    seconds = time.perf_counter() - t
    if not result.ok:
        raise SystemExit(f"run failed: {result.error}")
    return seconds


def interrupted(cfg, out: Path, batches: int) -> None:
    """A run stopped (as SIGTERM stops it) once ``batches`` batches are recorded."""
    from vizpipe.pipeline.cache import get_cache
    from vizpipe.pipeline.errors import Interrupted
    from vizpipe.pipeline.progress import Progress
    from vizpipe.pipeline.runner import run_pipeline

    real = Progress.record
    count = {"n": 0}

    def record(self, key, written, data=None):
        real(self, key, written, data)
        count["n"] += 1
        if count["n"] >= batches:
            raise Interrupted("SIGTERM", 143)

    Progress.record = record  # type: ignore[method-assign]
    get_cache().clear()
    try:
        run_pipeline(cfg, out)
    except KeyboardInterrupt:
        pass
    finally:
        Progress.record = real  # type: ignore[method-assign]


def npys(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.npy"))}


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--at", type=float, default=0.6, help="the share of batches done when killed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batches = -(-args.images // args.batch)
    cut = max(1, round(args.at * batches))
    with tempfile.TemporaryDirectory(prefix="vz-resume-") as tmp:
        work = Path(tmp)
        cfg = config(images(work / "imgs", args.images, args.size), args.batch)
        times: dict[str, list[float]] = {"direct": [], "atomic": [], "resume": []}
        outputs: dict[str, dict[str, bytes]] = {}
        for n in range(args.repeats + 1):  # the first round warms up
            for way in times:
                out = work / f"{way}{n}"
                if way == "direct":
                    with Direct():
                        seconds = one_run(cfg, out)
                elif way == "atomic":
                    seconds = one_run(cfg, out)
                else:
                    interrupted(cfg, out, cut)
                    seconds = one_run(cfg, out, resume=True)
                if n:
                    times[way].append(seconds)
                outputs[way] = npys(out)
                shutil.rmtree(out)
        same = outputs["direct"] == outputs["atomic"] == outputs["resume"]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"CAM stage, resnet18 layer4, {args.images} PNG images of {args.size} px, batches of {args.batch}, "
        f"1 thread; median of {args.repeats}"
    )
    print(f"{'way':<8}{'seconds':>10}  ratio")
    print(f"{'direct':<8}{med['direct']:>10.2f}  1.00 (the stage before issue 20)")
    print(f"{'atomic':<8}{med['atomic']:>10.2f}  {med['atomic'] / med['direct']:.3f} x direct (bound 1.05)")
    print(
        f"{'resume':<8}{med['resume']:>10.2f}  {med['resume'] / med['atomic']:.3f} x atomic, killed after "
        f"{cut} of {batches} batches (bound 0.45 at 60%)"
    )
    print(f".npy files of the three ways byte for byte equal: {same}")


if __name__ == "__main__":
    main()
