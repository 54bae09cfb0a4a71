"""The run's input: a data set streamed through the model in batches (``input.*``).

``build_inputs`` turns ``input.*`` into an ``Inputs``: the names, sources and labels of every
item up front (cheap), and the items themselves only when a stage iterates ``batches()``: a
torch ``DataLoader`` reads and preprocesses ``input.batch_size`` images at a time (with
``input.workers`` processes), so a folder of any size never sits in memory. ``first()`` is the
first batch, kept (summary, TensorBoard's graph and the layer probe use it); an input that fits
in one batch is read once.

An item is a dict: ``x`` (C, H, W) model input, ``rgb`` (3, H, W) in [0, 1] for drawing,
``index`` (position in the data set), ``label`` (-1 when unknown) and optionally ``box``
(x0, y0, x1, y1 in input pixels: where the object is, for CAM localisation metrics) and
``object_mask`` ((H, W) bool: the object's own pixels).

Labelled data sets have splits (``shapes.py``, ``folders.py``: imagefolder, ``cifar.py``):
``input.split`` (train | val | test, default the held-out test) is what the visualisation stages
see, and ``build_split`` gives another split of the same data set (the train stage reads train and
val). Their class names are ``Inputs.classes``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vizpipe.pipeline.errors import ConfigError, VizpipeError

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

__all__ = [
    "SPLITS",
    "Batch",
    "Inputs",
    "auto_workers",
    "build_inputs",
    "build_like",
    "build_split",
    "builder",
    "check_input",
    "file_identity",
    "input_files",
    "objects_of",
    "parse_shard",
    "split_kinds",
    "split_name",
]


@dataclass
class Batch:
    """Consecutive items of the data set, as the model sees them and as a person sees them."""

    tensor: torch.Tensor  # (B, C, H, W) model input, on the run's device
    rgb: np.ndarray  # (B, H, W, 3) float32 in [0, 1], same H×W as tensor
    index: list[int]  # positions in the data set (after limit and shard)
    names: list[str]  # unique, file-name-safe names
    sources: list[str]  # where each item came from (a path or a description)
    labels: list[int | None]  # known class of each item, else None
    boxes: list[tuple[float, float, float, float] | None]  # object box (x0, y0, x1, y1), else None
    # data sets that know every object (input=shapes input.objects>1): the (B, H, W) int64 true
    # class of every pixel (0 background), and per image its objects' (class, box); else None
    masks: np.ndarray | None = None
    objects: list[list[tuple[int, tuple[float, float, float, float]]]] | None = None
    # data sets with one object per image that know its pixels (input=shapes): (H, W) bool each
    object_masks: list[np.ndarray | None] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def object_mask(self, i: int, cls: int) -> np.ndarray | None:
        """Item ``i``'s object pixels (H, W) bool for a map of class ``cls``: the one object's (data
        sets with one object per image), the pixels of class ``cls`` (scenes), None when unknown."""
        if self.object_masks is not None:
            return self.object_masks[i]
        if self.masks is not None:
            return np.asarray(self.masks[i]) == int(cls)
        return None


@dataclass
class Inputs:
    """The data set of a run: what every item is called, and batches on demand."""

    dataset: Any  # torch-style: __len__ and __getitem__ -> item dict (see the module docstring)
    names: list[str]  # per item, unique and file-name safe
    sources: list[str]
    mean: list[float]  # normalisation used (for drawing)
    std: list[float]
    device: torch.device
    batch_size: int = 32
    workers: int = 0
    files: list[Path] = field(default_factory=list)  # input files read (hashed in the manifest)
    kind: str = ""
    classes: list[str] | None = None  # label names of the data set (ImageFolder folders, ...)
    invalid: dict[int, str] = field(default_factory=dict)  # index -> why the item is not finite
    skipped: list[Any] = field(default_factory=list)  # files found but not used (``scan.Skipped``)
    split: str | None = None  # train | val | test for data sets with splits, else None
    _first: Batch | None = field(default=None, repr=False)
    # how it was built: (input config, weights, seed, model), for ``build_split``
    _recipe: tuple[Any, Any, int, Any] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def tensor(self) -> torch.Tensor:
        """The first batch's model input (B, C, H, W)."""
        return self.first().tensor

    def identity(self) -> str:
        """What defines this data set's items (a cache key): the resolved ``input`` config it was
        built from and the identity of every file it reads (``file_identity``)."""
        import json

        from omegaconf import OmegaConf

        cfg = self._recipe[0] if self._recipe is not None else None
        plain = (
            OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) if OmegaConf.is_config(cfg) else cfg
        )
        files = file_identity(input_files(cfg)) if cfg is not None else []
        doc = {"input": plain, "files": files, "kind": self.kind, "split": self.split, "items": len(self)}
        return json.dumps(doc, sort_keys=True, default=str)

    def first(self) -> Batch:
        """The first batch (read once, kept; in this process: one batch has nothing to overlap with)."""
        if self._first is None:
            self._first = next(self._stream(0, min(len(self), self.batch_size), workers=0))
        return self._first

    def batches(self, desc: str | None = None, skip: Collection[int] = ()) -> Iterator[Batch]:
        """Every batch in order; a bar (``desc``) on a terminal when there is more than one.

        ``skip``: numbers (0-based) of batches to leave out, unread (a resumed run's finished
        ones, ``vizpipe.pipeline.progress``); the others are the same batches as without it.
        """
        if len(self) <= self.batch_size:
            if 0 not in skip:
                yield self.first()
            return
        from tqdm import tqdm

        size, n = self.batch_size, len(self)
        todo = [b for b in range(-(-n // size)) if b not in skip] if skip else None
        done = n - sum(min(size, n - b * size) for b in todo) if todo is not None else 0
        with tqdm(
            total=n, initial=done, desc=desc, unit="img", leave=False, disable=None if desc else True
        ) as bar:
            for batch in self._stream(0, n, todo):
                yield batch
                bar.update(len(batch))

    def _stream(
        self, start: int, stop: int, todo: list[int] | None = None, workers: int | None = None
    ) -> Iterator[Batch]:
        import numpy as np
        import torch
        from torch.utils.data import DataLoader, Subset

        n = self.workers if workers is None else workers  # DataLoader worker processes
        # its own generator: reading data never draws from the global random numbers a stage may use
        generator = torch.Generator().manual_seed(0)
        if todo is not None:  # only these batches (numbered from 0), read as the full pass reads them
            size = self.batch_size
            groups = [list(range(b * size, min((b + 1) * size, stop))) for b in todo]
            loader = DataLoader(self.dataset, batch_sampler=groups, num_workers=n, generator=generator)
        else:
            loader = DataLoader(
                Subset(self.dataset, range(start, stop)),
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=n,
                generator=generator,
            )
        for items in loader:
            index = [int(i) for i in items["index"]]
            labels = [int(v) if int(v) >= 0 else None for v in items.get("label", [-1] * len(index))]
            boxes: list[Any] = [None] * len(index)
            if "box" in items:
                boxes = [
                    tuple(float(v) for v in b) if bool(torch.isfinite(b).all()) else None
                    for b in items["box"]
                ]
            rgb = items["rgb"].permute(0, 2, 3, 1).numpy().astype(np.float32)  # (B, H, W, 3)
            yield Batch(
                tensor=items["x"].to(self.device),
                rgb=rgb,
                index=index,
                names=[self.names[i] for i in index],
                sources=[self.sources[i] for i in index],
                labels=labels,
                boxes=boxes,
                masks=items["mask"].numpy() if "mask" in items else None,
                objects=objects_of(items) if "obj_labels" in items else None,
                object_masks=[m.numpy().astype(bool) for m in items["object_mask"]]
                if "object_mask" in items
                else None,
            )


def objects_of(items: dict[str, Any]) -> list[list[tuple[int, tuple[float, float, float, float]]]]:
    """Per image, its objects' (class, box) from the padded ``obj_labels``/``obj_boxes`` (label -1: none)."""
    out = []
    for labels, boxes in zip(items["obj_labels"].tolist(), items["obj_boxes"].tolist(), strict=True):
        out.append(
            [(int(c), tuple(float(v) for v in b)) for c, b in zip(labels, boxes, strict=True) if c >= 0]
        )
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> (I, N) with 0 <= I < N; None for no sharding."""
    if text is None or str(text).strip() == "":
        return None
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError as exc:
        raise ConfigError(
            f"input.shard '{text}' is not I/N (e.g. input.shard=0/4: the first of 4 slices)"
        ) from exc
    if not 0 <= i < n:
        raise ConfigError(
            f"input.shard '{text}': I must be in 0..N-1 (e.g. 0/{max(n, 1)} .. {max(n, 1) - 1}/{max(n, 1)})"
        )
    return i, n


def check_input(input_cfg: Any) -> None:
    """The config-only rules of ``input.*`` (run by the precheck and the runner)."""
    kind = str(getattr(input_cfg.kind, "value", input_cfg.kind))
    if kind in ("image", "tensor") and not input_cfg.path:
        what = (
            "an image file, a folder or a glob"
            if kind == "image"
            else "a .pt or .npy file holding an N×C×H×W tensor"
        )
        raise ConfigError(f"input={kind} needs input.path ({what})")
    for key in ("batch_size",):
        if int(getattr(input_cfg, key)) < 1:
            raise ConfigError(f"input.{key} must be >= 1, got {getattr(input_cfg, key)}")
    if input_cfg.workers is not None and int(input_cfg.workers) < 0:
        raise ConfigError(f"input.workers must be >= 0 or null (auto), got {input_cfg.workers}")
    if input_cfg.limit is not None and int(input_cfg.limit) < 1:
        raise ConfigError(f"input.limit must be >= 1 or null (all), got {input_cfg.limit}")
    for key in ("resize", "crop"):
        value = getattr(input_cfg, key)
        if value is not None and int(value) <= 0:
            raise ConfigError(f"input.{key} must be positive, got {value}")
    for key in ("mean", "std"):
        value = getattr(input_cfg, key)
        if value is not None and len(value) not in (1, 3) and kind in RGB_KINDS:
            raise ConfigError(f"input.{key} must have 1 or 3 values, got {list(value)}")
    if input_cfg.std is not None and min(float(v) for v in input_cfg.std) <= 0:
        raise ConfigError(f"input.std must be positive, got {list(input_cfg.std)}")
    if kind == "random":
        shape = [int(v) for v in input_cfg.shape]
        if len(shape) != 4 or min(shape) <= 0:
            raise ConfigError(f"input.shape must be 4 positive ints N,C,H,W; got {shape}")
    parse_shard(input_cfg.shard)
    _check_splits(kind, input_cfg)


#: kinds whose items are already in memory, prepared (``input.workers`` auto: none)
IN_MEMORY_KINDS = ("photo", "tensor", "random", "objects")
#: DataLoader workers at most for ``input.workers`` auto
MAX_AUTO_WORKERS = 8


def auto_workers(count: int, batch_size: int, kind: str) -> int:
    """``input.workers: null``: worker processes for a data set of ``count`` items of ``kind``.

    None when there is little to overlap: one or two batches (starting the processes costs more
    than they save), or items already in memory (``IN_MEMORY_KINDS``; a ``vizpipe.inspect``
    caller's objects are never handed to forked processes); else half the usable cores, 1 to
    ``MAX_AUTO_WORKERS``: decoding and preprocessing then run beside the model (and the writer).
    """
    import os

    if kind in IN_MEMORY_KINDS or count <= 2 * batch_size:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_AUTO_WORKERS, cores // 2))


#: kinds whose items are RGB images (input.mean/std have 1 or 3 values)
RGB_KINDS = ("photo", "image", "shapes", "imagefolder", "cifar10")


def _check_splits(kind: str, input_cfg: Any) -> None:
    """The rules of the data sets with splits (shapes, imagefolder, cifar10)."""
    split = split_name(input_cfg)
    if split not in SPLITS:
        from vizpipe.pipeline.errors import unknown_choice

        raise unknown_choice("input.split", split, SPLITS)
    if kind == "shapes":
        size = int(getattr(input_cfg, "size", 64))
        if size < 32:
            raise ConfigError(
                f"input.size must be >= 32 pixels for input=shapes (room for a shape), got {size}"
            )
        objects = int(getattr(input_cfg, "objects", 1) or 1)
        if not 1 <= objects <= 6:
            raise ConfigError(
                "input.objects must be 1 (one shape, labelled) or 2..6 (a scene of different shapes), "
                f"got {objects}"
            )
        for key in ("train_count", "val_count", "test_count"):
            if int(getattr(input_cfg, key, 1)) < 1:
                raise ConfigError(
                    f"input.{key} must be >= 1 (images in that split), got {getattr(input_cfg, key)}"
                )
    if kind in ("imagefolder", "cifar10"):
        if not getattr(input_cfg, "root", None):
            what = (
                "a folder with one sub-folder of images per class"
                if kind == "imagefolder"
                else ("the folder that holds (or will hold) cifar-10-batches-py")
            )
            raise ConfigError(f"input={kind} needs input.root ({what}); set input.root=...")
        fractions = {"val_fraction": float(getattr(input_cfg, "val_fraction", 0.1))}
        if kind == "imagefolder":
            fractions["test_fraction"] = float(getattr(input_cfg, "test_fraction", 0.1))
        root = Path(str(input_cfg.root)).expanduser()
        if kind == "cifar10":
            from vizpipe.pipeline.inputs.cifar import check_present

            check_present(root, bool(getattr(input_cfg, "download", False)))
        elif not root.is_dir():
            raise ConfigError(
                f"input.root '{input_cfg.root}' is not a folder; input=imagefolder needs a folder with one "
                "sub-folder of images per class (or train/ val/ test/ folders of them)"
            )
        for key, value in fractions.items():
            if not 0.0 < value < 1.0:
                raise ConfigError(
                    f"input.{key} must be in (0, 1) (a fraction of the training images), got {value}"
                )
        if sum(fractions.values()) >= 1.0:
            raise ConfigError(
                f"input.val_fraction + input.test_fraction must be < 1 (the rest is the train split), "
                f"got {' + '.join(str(v) for v in fractions.values())}"
            )


def select(count: int, input_cfg: Any, what: str = "images") -> list[int]:
    """The positions used: the first ``input.limit`` (said once when it cuts), then the shard."""
    positions = list(range(count))
    limit = input_cfg.limit
    if limit is not None and count > int(limit):
        log.warning(
            "Using the first %d of %d %s (input.limit=%d; set input.limit=null for all of them)",
            int(limit),
            count,
            what,
            int(limit),
        )
        positions = positions[: int(limit)]
    shard = parse_shard(input_cfg.shard)
    if shard is not None:
        i, n = shard
        m = len(positions)
        positions = positions[(i * m) // n : ((i + 1) * m) // n]
        if not positions:
            raise ConfigError(f"input.shard={i}/{n} is empty: the data set has only {m} item(s)")
    return positions


class Reindexed:
    """``dataset`` restricted to ``positions``, items renumbered 0..len-1 (``index``)."""

    def __init__(self, dataset: Any, positions: Sequence[int]) -> None:
        self.dataset = dataset
        self.positions = list(positions)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[self.positions[i]])
        item["index"] = i
        return item


#: input kind -> builder(input_cfg, weights, seed, expected_channels) -> Inputs fields
BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {}
#: input kinds that have train, val and test splits (``input.split``, ``build_split``)
SPLIT_KINDS: set[str] = set()
#: the splits of a data set that has them, in order
SPLITS = ("train", "val", "test")


def builder(
    kind: str, *, splits: bool = False
) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Register the function that builds ``input.kind=<kind>``; ``splits``: it reads ``input.split``."""

    def wrap(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        BUILDERS[kind] = fn
        if splits:
            SPLIT_KINDS.add(kind)
        return fn

    return wrap


def split_name(input_cfg: Any) -> str:
    """``input.split`` as a plain string (the schema gives an Enum, hand-made configs a str)."""
    split = getattr(input_cfg, "split", None) or "test"
    return str(getattr(split, "value", split))


def split_kinds() -> list[str]:
    """The input kinds that have train/val/test splits (registered builders with ``splits=True``)."""
    from vizpipe.pipeline.inputs import cifar, folders, objects, shapes, sources  # noqa: F401 - registers

    return sorted(SPLIT_KINDS)


def input_files(input_cfg: Any) -> list[Path]:
    """Every file the input named by ``input.*`` may read (before ``input.limit``), sorted; [] for
    inputs made in memory (shapes, random, objects). A folder is listed as the build lists it, so a
    file added, removed or renamed changes the list. What does not exist yet is left out (the build
    reports it)."""
    kind = str(getattr(input_cfg.kind, "value", input_cfg.kind))
    from vizpipe.pipeline.inputs.images import bundled_photo, find_images

    try:
        if kind == "photo":
            return [bundled_photo()]
        if kind == "image":
            return find_images(str(input_cfg.path))
        if kind == "tensor":
            return [Path(str(input_cfg.path)).expanduser()]
        if kind in ("imagefolder", "cifar10"):
            root = Path(str(input_cfg.root)).expanduser()
            return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    except VizpipeError:
        return []
    return []


def file_identity(files: Sequence[Path]) -> list[list[Any]]:
    """(path, size, mtime_ns, inode) of each file: changes when a file is edited, replaced or touched."""
    out: list[list[Any]] = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append([str(f), st.st_size, st.st_mtime_ns, st.st_ino])
    return out


def build_inputs(input_cfg: Any, weights: Any, device: torch.device, seed: int, model: Any = None) -> Inputs:
    """Build the data set named by ``input.*`` (nothing is read yet but names and small files)."""
    from vizpipe.pipeline.errors import unknown_choice

    split_kinds()  # registers the builders
    check_input(input_cfg)
    kind = str(getattr(input_cfg.kind, "value", input_cfg.kind))
    if kind not in BUILDERS:
        raise unknown_choice("input.kind", kind, BUILDERS)
    fields = BUILDERS[kind](input_cfg, weights=weights, seed=seed, model=model)
    inputs = Inputs(
        device=device,
        batch_size=int(input_cfg.batch_size),
        kind=kind,
        split=split_name(input_cfg) if kind in SPLIT_KINDS else None,
        **fields,
    )
    workers = input_cfg.workers
    inputs.workers = auto_workers(len(inputs), inputs.batch_size, kind) if workers is None else int(workers)
    inputs._recipe = (input_cfg, weights, int(seed), model)
    log.debug(
        "Input: %s, %d item(s), batches of %d, %d worker process(es)%s",
        kind,
        len(inputs),
        inputs.batch_size,
        inputs.workers,
        " (auto)" if workers is None else "",
    )
    return inputs


def build_split(inputs: Inputs, split: str) -> Inputs:
    """Another split (train | val | test) of the data set ``inputs`` came from, every item of it.

    Same kind, root, seed and preprocessing; ``input.limit`` and ``input.shard`` (which choose
    the images the visualisation stages see) do not apply. For data sets without splits
    (photo, image, tensor, random) a ``ConfigError`` names the kinds that have them.
    """
    if split not in SPLITS:
        from vizpipe.pipeline.errors import unknown_choice

        raise unknown_choice("split", split, SPLITS)
    if inputs._recipe is None or inputs.kind not in SPLIT_KINDS:
        raise ConfigError(
            f"input={inputs.kind or '?'} has no {split} split; data sets with train/val/test splits: "
            f"{', '.join(f'input={k}' for k in split_kinds())}"
        )
    input_cfg, weights, seed, model = inputs._recipe
    return build_inputs(
        _replaced(input_cfg, split=split, limit=None, shard=None), weights, inputs.device, seed, model
    )


def build_like(inputs: Inputs, **changes: Any) -> Inputs:
    """Another input made with ``inputs``' recipe (settings, weights' preprocessing, seed, device) and
    ``changes`` to ``input.*``, e.g. ``kind="image", path=...`` (the CAM stage's concept images)."""
    if inputs._recipe is None:
        raise ConfigError("this input was not built from a config; it has no recipe to build another like it")
    input_cfg, weights, seed, model = inputs._recipe
    return build_inputs(_replaced(input_cfg, **changes), weights, inputs.device, seed, model)


def _replaced(input_cfg: Any, **changes: Any) -> Any:
    """A copy of ``input_cfg`` (an OmegaConf node, a dataclass or a plain object) with ``changes``."""
    import copy
    import dataclasses

    from omegaconf import OmegaConf

    if OmegaConf.is_config(input_cfg):
        out = copy.deepcopy(input_cfg)
        for key, value in changes.items():
            setattr(out, key, value)
        return out
    if dataclasses.is_dataclass(input_cfg) and not isinstance(input_cfg, type):
        return dataclasses.replace(input_cfg, **changes)
    out = copy.copy(input_cfg)
    for key, value in changes.items():
        setattr(out, key, value)
    return out
