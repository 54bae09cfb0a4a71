"""Cold start: ``run.py 'stages=[summary]'`` vs a bare script printing the same summary.

    .venv/bin/python -m benchmarks.coldstart [--repeats 7] [--threads 1]

- **vizpipe**: ``python run.py 'stages=[summary]' hydra.run.dir=<tmp>`` (resnet18, random init, the
  bundled photo): Hydra, the config checks, the model, torchinfo's table, the layer catalog,
  ``print(model)``, manifest and report;
- **bare**: a script that imports torch, torchvision and torchinfo, builds resnet18 and prints
  ``print(model)`` and ``torchinfo.summary(model, (1, 3, 224, 224))`` (``BARE``);
- **Hydra floor**: the bare script as the task of a ``@hydra.main`` app on vizpipe's config
  (``HYDRA_FLOOR``): what Hydra itself costs (its import, the two compositions ``hydra.main``
  does, the run folder, logging) before vizpipe does anything.

Fresh processes timed from outside (``time.perf_counter`` around ``subprocess.run``), the two
alternating; the ratio is the median of the pairs' ratios (target <= 1.1x). The project's modules
are byte-compiled first, as the venv's libraries are.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.process import ROOT, precompile, timed

BARE = """
import torch, torchinfo, torchvision
torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
print(model)
print(torchinfo.summary(model, (1, 3, 224, 224), depth=3, col_names=("output_size", "num_params"), verbose=0))
"""

HYDRA_FLOOR = """
import hydra
import vizpipe.pipeline.config_store  # vizpipe's config schema, as run.py registers it

@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def main(cfg):
    exec(BARE)

main()
"""


def main(argv: list[str] | None = None) -> int:
    """Time both sides in turn and print the medians and the paired ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="pairs timed (median)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both sides")
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    precompile()
    times: dict[str, list[float]] = {"vizpipe": [], "bare": [], "hydra": []}
    with tempfile.TemporaryDirectory(prefix="vizpipe-cold-") as tmp:
        floor = Path(tmp, "hydra_floor.py")
        floor.write_text(f"CONF = {str(ROOT / 'conf')!r}\nBARE = {BARE!r}\n{HYDRA_FLOOR}")
        bare = [sys.executable, "-c", BARE]
        timed(bare, env)  # warm the page cache of every side
        timed([sys.executable, "run.py", "stages=[summary]", f"hydra.run.dir={tmp}/warm"], env)
        for r in range(args.repeats):
            times["bare"].append(timed(bare, env))
            times["vizpipe"].append(
                timed([sys.executable, "run.py", "stages=[summary]", f"hydra.run.dir={tmp}/r{r}"], env)
            )
            times["hydra"].append(timed([sys.executable, str(floor), f"hydra.run.dir={tmp}/h{r}"], env))
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    print(f"cold start (resnet18 summary, OMP_NUM_THREADS={args.threads}, {args.repeats} rounds, medians):")
    print(f"  bare script              {med['bare']:6.2f} s")
    print(
        f"  run.py 'stages=[summary]' {med['vizpipe']:5.2f} s   "
        f"{paired('vizpipe', 'bare'):.2f}x the bare script (paired median; target <= 1.1x)"
    )
    print(
        f"  the bare script in Hydra {med['hydra']:6.2f} s   {paired('hydra', 'bare'):.2f}x the bare script: "
        f"Hydra's own floor; run.py is {paired('vizpipe', 'hydra'):.2f}x that"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
