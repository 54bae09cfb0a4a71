"""Seed subplot code vs vizpipe's grid renderer, side by side in one process.

    .venv/bin/python -m benchmarks.render [--repeats 3] [--keep DIR]

Cases (vgg11, random init seeded with 0 - no weights are downloaded; the photo is matplotlib's
bundled grace_hopper.jpg, preprocessed like ``input=photo``):

(a) the 64 kernels of output channel 0 of ``features.3`` (seed §2.1's loop, verbatim: a 20x17 inch
    figure, one ``plt.subplot(9, 9, k)`` + ``imshow(cmap='bwr')`` per kernel) vs
    ``vizpipe.stages.kernels.kernel_grid`` (one row of 64 tiles, layer scale, 24 px tiles);
(b) 100 channels of ``features.3`` on the photo (seed §2.2's drawing loop, verbatim: one
    ``plt.subplot(10, 10, k)`` + ``imshow`` per channel) vs ``vizpipe.stages.features.feature_grid``.

Both sides draw the same arrays (the layer's own output, captured once by the features stage's
hook) and end with a PNG file on disk: the seed with ``plt.savefig`` (Agg, the figure's 100 dpi,
what a notebook shows), vizpipe with ``vizpipe.pipeline.render.save_png`` (PIL, ``compress_level=1``).
A third column shows vizpipe with PIL's default level 6, for reference. Timings are the median of
``--repeats`` runs after one warm-up run of each; they vary with the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def seed_kernels(model, path: Path) -> None:
    """Seed §2.1, verbatim (``print`` silenced by the caller), then the PNG a notebook shows."""
    import matplotlib.pyplot as plt

    conv1 = dict(model.features.named_children())["3"]
    # 得到第3层的卷积层参数
    kernel_set = conv1.weight.detach()
    num = len(conv1.weight.detach())  # noqa: F841 - seed line
    print(kernel_set.shape)
    # 该代码仅可视化其中一个维度的卷积核，第3层的卷积核有128*64个
    # for i in range(0, num):
    for i in range(0, 1):
        i_kernel = kernel_set[i]
        plt.figure(figsize=(20, 17))
        if (len(i_kernel)) > 1:
            for idx, filer in enumerate(i_kernel):
                plt.subplot(9, 9, idx + 1)
                plt.axis("off")
                plt.imshow(filer[:, :].detach(), cmap="bwr")
    plt.savefig(path, format="png")
    plt.close("all")


def seed_features(out1, path: Path) -> None:
    """Seed §2.2's drawing part of ``plot_feature``, verbatim, then the PNG a notebook shows."""
    import matplotlib.pyplot as plt

    total_ft = out1.shape[1]
    first_item = out1[0].cpu().clone()

    plt.figure(figsize=(20, 17))

    for ftidx in range(total_ft):
        if ftidx > 99:
            break
        ft = first_item[ftidx]
        plt.subplot(10, 10, ftidx + 1)

        plt.axis("off")
        # plt.imshow(ft[ :, :].detach(),cmap='gray')
        plt.imshow(ft[:, :].detach())
    plt.savefig(path, format="png")
    plt.close("all")


def vizpipe_kernels(model, path: Path, level: int = 1) -> None:
    """What the kernels stage does for one layer: weights -> grid -> PNG (output channel 0)."""
    from vizpipe.pipeline.render import colormap_levels, colormap_lut, save_png
    from vizpipe.stages.kernels import kernel_grid, layer_weight

    w = layer_weight(model.get_submodule("features.3"))  # (128, 64, 3, 3)
    vmax = float(abs(w).max())
    grid = kernel_grid(w[:1, :64], colormap_levels("bwr"), scale="layer", vmax=vmax, tile_px=24)
    save_png(path, grid, colormap_lut("bwr"), compress_level=level)


def vizpipe_features(out1, path: Path, level: int = 1) -> None:
    """What the features stage does per image: 100 maps -> normalise -> colour -> grid -> PNG."""
    from vizpipe.pipeline.render import colormap_levels, colormap_lut, save_png
    from vizpipe.stages.features.draw import feature_grid

    maps = out1.numpy()[0, :100]  # (100, H, W)
    levels = colormap_levels("viridis")
    grid = feature_grid(maps, levels, normalize="channel", tile_px=56)
    save_png(path, grid, colormap_lut("viridis"), compress_level=level)


def timed(fn: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs, after one warm-up run."""
    with contextlib.redirect_stdout(io.StringIO()):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Build vgg11 and the photo batch, time both renderers for both cases, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the PNGs in")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import torch
    import torchvision
    from vizpipe.pipeline.hooks import capture
    from vizpipe.pipeline.inputs.images import bundled_photo, load_rgb, preprocess, preprocessing

    torch.manual_seed(0)
    model = torchvision.models.vgg11().eval()
    x, _ = preprocess(load_rgb(bundled_photo()), preprocessing({}, None))
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str, t: torch.Tensor, kind: str) -> None:
        captured[name] = t  # the layer's own output

    with torch.no_grad(), capture(model, ["features.3"], keep):
        model(x[None])
    out1 = captured["features.3"]  # (1, 128, 112, 112): the conv's own output

    folder_ctx = contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()
    with folder_ctx as folder:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        cases = [
            (
                "(a) features.3 kernels of output 0 (64 tiles)",
                lambda: seed_kernels(model, out / "seed_kernels.png"),
                lambda: vizpipe_kernels(model, out / "vizpipe_kernels.png"),
                lambda: vizpipe_kernels(model, out / "vizpipe_kernels_l6.png", level=6),
            ),
            (
                "(b) features.3 maps on the photo (100 tiles)",
                lambda: seed_features(out1, out / "seed_features.png"),
                lambda: vizpipe_features(out1, out / "vizpipe_features.png"),
                lambda: vizpipe_features(out1, out / "vizpipe_features_l6.png", level=6),
            ),
        ]
        print(
            f"vgg11 (random init), torch {torch.__version__}, {torch.get_num_threads()} "
            f"threads, matplotlib {matplotlib.__version__}; median of {args.repeats} after 1 "
            "warm-up"
        )
        print(f"{'case':48s} {'seed s':>8s} {'vizpipe s':>10s} {'ratio':>8s} {'vizpipe l6 s':>13s}")
        ratios = []
        for label, seed_fn, viz_fn, viz6_fn in cases:
            t_seed = timed(seed_fn, args.repeats)
            t_viz = timed(viz_fn, args.repeats)
            t_viz6 = timed(viz6_fn, args.repeats)
            ratios.append(t_seed / t_viz)
            print(f"{label:48s} {t_seed:8.3f} {t_viz:10.4f} {t_seed / t_viz:7.1f}x {t_viz6:13.4f}")
        sizes = {p.name: p.stat().st_size for p in sorted(out.glob("*.png"))}
        from PIL import Image

        for name, size in sizes.items():
            with Image.open(out / name) as im:
                print(f"  {name:26s} {im.size[0]}x{im.size[1]} px, {size / 1024:.0f} KiB")
    target = 20.0
    verdict = "meets" if min(ratios) >= target else "misses"
    print(f"slowest ratio {min(ratios):.1f}x {verdict} the {target:.0f}x target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
