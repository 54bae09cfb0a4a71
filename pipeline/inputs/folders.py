"""``input=imagefolder``: your own labelled photos, one sub-folder per class (torchvision's ``ImageFolder``).

``input.root`` is either

* a folder of class folders (``root/cat/1.jpg``, ``root/dog/2.png``, ...): the splits are drawn
  from it, class by class (``input.test_fraction``, then ``input.val_fraction`` of each class's
  images; the rest is ``train``); or
* a folder with ``train/`` (and optionally ``val/`` and ``test/``), each holding the same class
  folders: a split without its folder is drawn from ``train/`` the same way.

The draw is fixed (it does not depend on ``seed``), so runs with different seeds hold out the
same images. torchvision finds the classes (``find_classes``: the sorted folder names); the files
of each class are found, read and preprocessed as for ``input=image`` (``scan.py``: any image
Pillow opens, each file once; ``images.py``: any mode to RGB, EXIF orientation applied, resize,
centre crop). Note: torchvision's ``ImageFolder`` with its default loader takes nine extensions
only and ignores EXIF orientation, so a model trained through it saw rotated photos as stored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.inputs import SPLITS, Reindexed, builder, select, split_name
from vizpipe.pipeline.inputs.images import ImageFiles, preprocessing
from vizpipe.pipeline.inputs.scan import Skipped, scan_folder
from vizpipe.pipeline.names import input_names

log = logging.getLogger(__name__)

Sample = tuple[str, int]  # (file path, class index), as ImageFolder lists them
DRAW_SEED = 0  # the fixed draw of held-out images (independent of the run's seed)


def scan(folder: Path) -> tuple[list[str], list[Sample], list[Skipped]]:
    """(classes, samples, skipped files) of one folder of class folders.

    torchvision finds the classes (``find_classes``: the sorted sub-folders); each class folder's
    files are found as for ``input=image`` (``vizpipe.pipeline.inputs.scan``): every image Pillow
    opens in any case of extension, links followed once, others skipped and said (torchvision's
    ``ImageFolder`` takes nine lower-case-insensitive extensions and follows a link loop ~40 deep).
    """
    from torchvision.datasets.folder import find_classes

    hint = "give a folder with one sub-folder of images per class, e.g. root/cat/1.jpg, root/dog/2.png"
    try:
        classes, to_index = find_classes(str(folder))
    except FileNotFoundError as exc:  # no class folder
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"input.root '{folder}' is not an image folder data set ({first}); {hint}") from exc
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    empty = []
    for name in classes:
        found = scan_folder(folder / name)
        samples += [(str(p), to_index[name]) for p in found.files]
        skipped += found.skipped
        if not found.files:
            empty.append(name)
    if empty:
        raise ConfigError(
            f"input.root '{folder}' is not an image folder data set (no image in the class folder(s) "
            f"{', '.join(empty)}); {hint}"
        )
    return list(classes), samples, skipped


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
) -> tuple[list[str], dict[str, list[Sample]], list[Skipped]]:
    """(classes, samples of each split, skipped files) of ``root`` (see the module docstring)."""
    fractions = {"test": test_fraction, "val": val_fraction}
    if not (root / "train").is_dir():
        classes, pool, skipped = scan(root)
        return classes, draw(pool, fractions), skipped
    classes, pool, skipped = scan(root / "train")
    given: dict[str, list[Sample]] = {}
    for split in ("val", "test"):
        if (root / split).is_dir():
            theirs, given[split], more = scan(root / split)
            skipped += more
            if theirs != classes:
                raise ConfigError(
                    f"input.root '{root}': {split}/ has classes {theirs} but train/ has {classes}; "
                    "every split folder needs the same class folders"
                )
    drawn = draw(pool, {s: f for s, f in fractions.items() if s not in given})
    return classes, {**drawn, **given}, skipped


@builder("imagefolder", splits=True)
def imagefolder(input_cfg: Any, *, weights: Any, seed: int, model: Any) -> dict[str, Any]:
    """The ``input.split`` split of the image folder data set in ``input.root``."""
    split = split_name(input_cfg)
    root = Path(str(input_cfg.root)).expanduser()
    classes, splits, skipped = split_samples(
        root, float(input_cfg.val_fraction), float(input_cfg.test_fraction)
    )
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
    names = input_names(
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
        "skipped": skipped,
    }
