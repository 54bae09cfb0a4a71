"""``input=imagefolder``: your own labelled photos, one sub-folder per class (torchvision's ``ImageFolder``).

``input.root`` is either

* a folder of class folders (``root/cat/1.jpg``, ``root/dog/2.png``, ...): the splits are drawn
  from it, class by class (``input.test_fraction``, then ``input.val_fraction`` of each class's
  images; the rest is ``train``); or
* a folder with ``train/`` (and optionally ``val/`` and ``test/``), each holding the same class
  folders: a split without its folder is drawn from ``train/`` the same way.

The draw is fixed (it does not depend on ``seed``), so runs with different seeds hold out the
same images. torchvision's ``ImageFolder`` finds the classes (sorted folder names) and the files;
vizpipe reads and preprocesses them like ``input=image`` (any mode to RGB, resize, centre crop).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.inputs import SPLITS, Reindexed, builder, select, split_name
from vizpipe.pipeline.inputs.images import ImageFiles, preprocessing
from vizpipe.pipeline.names import unique_slugs

log = logging.getLogger(__name__)

Sample = tuple[str, int]  # (file path, class index), as ImageFolder lists them
DRAW_SEED = 0  # the fixed draw of held-out images (independent of the run's seed)


def scan(folder: Path) -> tuple[list[str], list[Sample]]:
    """(classes, samples) of one folder of class folders, through torchvision's ``ImageFolder``."""
    from torchvision.datasets import ImageFolder

    try:
        found = ImageFolder(str(folder))
    except FileNotFoundError as exc:  # no class folder, or no image in any of them
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"input.root '{folder}' is not an image folder data set ({first}); give a folder with one "
            "sub-folder of images per class, e.g. root/cat/1.jpg, root/dog/2.png"
        ) from exc
    return list(found.classes), [(str(p), int(c)) for p, c in found.samples]


def draw(samples: list[Sample], fractions: dict[str, float]) -> dict[str, list[Sample]]:
    """Split ``samples`` class by class: each key gets its fraction of every class, ``train`` the rest.

    The draw uses a fixed generator (``DRAW_SEED``); each split keeps the samples' order.
    """
    rng = np.random.default_rng(DRAW_SEED)
    by_class: dict[int, list[int]] = {}
    for i, (_, c) in enumerate(samples):
        by_class.setdefault(c, []).append(i)
    owner = ["train"] * len(samples)
    for c in sorted(by_class):
        members = [by_class[c][k] for k in rng.permutation(len(by_class[c]))]
        start = 0
        for split, fraction in fractions.items():
            take = round(len(members) * fraction)
            for i in members[start : start + take]:
                owner[i] = split
            start += take
    out: dict[str, list[Sample]] = {"train": [], **{s: [] for s in fractions}}
    for i, s in enumerate(samples):
        out[owner[i]].append(s)
    return out


def split_samples(
    root: Path, val_fraction: float, test_fraction: float
) -> tuple[list[str], dict[str, list[Sample]]]:
    """(classes, samples of each split) of ``root`` (see the module docstring)."""
    fractions = {"test": test_fraction, "val": val_fraction}
    if not (root / "train").is_dir():
        classes, pool = scan(root)
        return classes, draw(pool, fractions)
    classes, pool = scan(root / "train")
    given: dict[str, list[Sample]] = {}
    for split in ("val", "test"):
        if (root / split).is_dir():
            theirs, given[split] = scan(root / split)
            if theirs != classes:
                raise ConfigError(
                    f"input.root '{root}': {split}/ has classes {theirs} but train/ has {classes}; "
                    "every split folder needs the same class folders"
                )
    drawn = draw(pool, {s: f for s, f in fractions.items() if s not in given})
    return classes, {**drawn, **given}


@builder("imagefolder", splits=True)
def imagefolder(input_cfg: Any, *, weights: Any, seed: int, model: Any) -> dict[str, Any]:
    """The ``input.split`` split of the image folder data set in ``input.root``."""
    split = split_name(input_cfg)
    root = Path(str(input_cfg.root)).expanduser()
    classes, splits = split_samples(root, float(input_cfg.val_fraction), float(input_cfg.test_fraction))
    samples = splits[split]
    if not samples:
        sizes = ", ".join(f"{s} {len(splits[s])}" for s in SPLITS)
        fix = (
            "lower input.val_fraction and input.test_fraction"
            if split == "train"
            else f"add a {split}/ folder, or raise input.{split}_fraction"
        )
        raise ConfigError(
            f"input=imagefolder: the {split} split of '{root}' is empty ({sizes} images); "
            f"add images, or {fix}"
        )
    prep = preprocessing(input_cfg, weights)
    files = [Path(p) for p, _ in samples]
    labels = [c for _, c in samples]
    names = unique_slugs(
        [f"{classes[c]}_{f.stem}" for f, c in zip(files, labels, strict=True)], ids=[str(f) for f in files]
    )
    positions = select(len(files), input_cfg, f"{split} images")
    return {
        "dataset": Reindexed(ImageFiles(files, prep, labels), positions),
        "names": [names[i] for i in positions],
        "sources": [str(files[i]) for i in positions],
        "mean": list(prep["mean"]),
        "std": list(prep["std"]),
        "files": [files[i] for i in positions],
        "classes": classes,
    }
