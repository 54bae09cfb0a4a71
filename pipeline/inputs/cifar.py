"""``input=cifar10``: CIFAR-10 through torchvision's ``CIFAR10``, the seed's data set (§3.5).

``input.root`` holds ``cifar-10-batches-py`` (torchvision's layout: five training batches, the
test batch and ``batches.meta``, each checked against its md5 by torchvision);
``input.download=true`` fetches it there first (170 MB, needs internet). Splits: ``train`` is the
first ``1 - input.val_fraction`` of the 50,000 training images, ``val`` the rest, ``test`` the
10,000 test images. Images keep their 32 pixels unless ``input.resize``/``input.crop`` (or
pretrained weights) say otherwise, and are normalised with 0.5 (pixels to [-1, 1]) unless
``input.mean``/``input.std`` (or the weights) say otherwise.

Offline, a missing or damaged data set is one ``ConfigError`` naming the folder and
``input.download=true``: the download is never attempted unless asked for, and an attempt that
cannot reach the server fails within ``DOWNLOAD_TIMEOUT_S``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.inputs import Reindexed, builder, select, split_name
from vizpipe.pipeline.inputs.images import preprocess, preprocessing

log = logging.getLogger(__name__)

FOLDER = "cifar-10-batches-py"  # torchvision's folder name under the root
DOWNLOAD_TIMEOUT_S = 60  # a socket that hears nothing for this long fails the download
#: CIFAR-10's own size and the seed's normalisation (to [-1, 1]) unless config or weights say otherwise
BASE_PREP: dict[str, Any] = {
    "resize": None,
    "crop": None,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bilinear",
}


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A default socket timeout for the download (urllib waits forever without one)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def check_present(root: Path, download: bool) -> None:
    """Without ``input.download``, the data set's folder must exist (a cheap check: the precheck
    runs it before Hydra starts, so a missing data set is one line and no model is built)."""
    folder = root / FOLDER
    if not download and not folder.is_dir():
        raise ConfigError(
            f"CIFAR-10 is not in {folder} (input.root={root}); set input.download=true to download it "
            f"there (170 MB, needs internet), or set input.root to the folder that holds {FOLDER}"
        )


def open_cifar10(root: Path, train: bool, download: bool) -> Any:
    """torchvision's ``CIFAR10`` on ``root`` (its md5 checks included); failures are one line."""
    from torchvision.datasets import CIFAR10

    folder = root / FOLDER
    check_present(root, download)
    said = io.StringIO()
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S), contextlib.redirect_stdout(said):
            return CIFAR10(str(root), train=train, download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"CIFAR-10 in {folder} is incomplete or damaged ({first}); set input.download=true to "
            "download it again (needs internet), or replace the folder with a complete copy"
        ) from exc
    except OSError as exc:  # URLError, a timeout, a full disk
        raise ConfigError(
            f"Could not download CIFAR-10 into {root} ({exc}); without internet, copy {FOLDER} "
            f"into {root} and set input.download=false"
        ) from exc
    finally:
        if said.getvalue().strip():
            log.debug("torchvision: %s", said.getvalue().strip())


class CifarItems:
    """CIFAR-10 images (an (N, 32, 32, 3) uint8 array) preprocessed on access."""

    def __init__(self, data: np.ndarray, targets: list[int], prep: dict[str, Any]) -> None:
        self.data, self.targets, self.prep = data, targets, prep

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        x, rgb = preprocess(self.data[i], self.prep)
        return {"x": x, "rgb": rgb, "index": int(i), "label": int(self.targets[i])}


def split_positions(split: str, train_count: int, test_count: int, val_fraction: float) -> range:
    """Positions of ``split`` in torchvision's training set (train, val) or test set (test)."""
    if split == "test":
        return range(test_count)
    n_val = max(1, round(train_count * val_fraction))
    return range(train_count - n_val) if split == "train" else range(train_count - n_val, train_count)


@builder("cifar10", splits=True)
def cifar10(input_cfg: Any, *, weights: Any, seed: int, model: Any) -> dict[str, Any]:
    """The ``input.split`` split of CIFAR-10 in ``input.root``."""
    split = split_name(input_cfg)
    root = Path(str(input_cfg.root)).expanduser()
    train = split != "test"
    ds = open_cifar10(root, train=train, download=bool(input_cfg.download))
    data = np.asarray(ds.data)  # (N, 32, 32, 3) uint8
    targets = [int(t) for t in ds.targets]
    if train:
        span = split_positions(split, len(targets), 0, float(input_cfg.val_fraction))
    else:
        span = split_positions(split, 0, len(targets), float(input_cfg.val_fraction))
    prep = preprocessing(input_cfg, weights, BASE_PREP)
    chosen = [span[i] for i in select(len(span), input_cfg, f"CIFAR-10 {split} images")]
    classes = [str(c) for c in ds.classes]
    batches = ds.train_list if train else ds.test_list
    return {
        "dataset": Reindexed(CifarItems(data, targets, prep), chosen),
        "names": [f"{split}_{p:05d}_{classes[targets[p]]}" for p in chosen],
        "sources": [f"{root / FOLDER} {'training' if train else 'test'} image {p}" for p in chosen],
        "mean": list(prep["mean"]),
        "std": list(prep["std"]),
        "files": [root / FOLDER / name for name, _md5 in batches],
        "classes": classes,
    }
