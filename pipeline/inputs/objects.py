"""``input.kind=objects``: the inputs handed to ``vizpipe.inspect`` as Python objects.

What ``vizpipe.inspect(model, inputs)`` accepts besides a path (a file, folder or glob is
``input=image``, read exactly as on the command line):

* a tensor, (N, C, H, W) or one (C, H, W) image: the model gets it as it is, like ``input=tensor``
  (``input.normalized``, ``input.mean``/``std`` for drawing); items ``input_0``, ``input_1``, ...
  (a file ``input.pt`` given to ``input=tensor`` names them the same);
* a list of PIL images and/or image paths: read (any mode to RGB) and preprocessed like
  ``input=image`` (resize, centre crop, normalise: the model's preset or ``input.*``);
* a ``Dataset`` (or a ``DataLoader``: its data set, in order) whose items are ``(image, label)``
  or an image: PIL images and uint8 arrays are preprocessed as above, tensors used as they
  are; labels become the items' labels and a ``classes`` attribute the class names. A
  ``DataLoader`` over an iterable data set is read batch by batch up to ``input.limit`` items.

PIL images and tensors are copied when the run starts, so changing them afterwards changes
nothing in the run. The objects come from ``vizpipe.pipeline.lent`` (lent for one call).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.inputs import Reindexed, builder, select
from vizpipe.pipeline.inputs.images import load_rgb, preprocess, preprocessing, rgb_array
from vizpipe.pipeline.inputs.sources import _check_channels, _tensor_fields, drawable, pixel_stats, pixels
from vizpipe.pipeline.names import input_names

__all__ = ["ACCEPTED", "annotate", "objects"]

#: what ``vizpipe.inspect``'s ``inputs`` may be, for messages
ACCEPTED = (
    "a tensor (N×C×H×W or C×H×W), a list of PIL images or image paths, an image file, folder or glob, "
    "or a Dataset/DataLoader yielding (image, label)"
)
#: the stem of a tensor's item names (``input_0``, ...), as a file ``input.pt`` would give them
TENSOR_STEM = "input"


@builder("objects")
def objects(input_cfg: Any, *, weights: Any, seed: int, model: Any) -> dict[str, Any]:
    """The ``Inputs`` fields of the objects lent to this run (see the module docstring)."""
    from vizpipe.pipeline.lent import lent

    given = lent("input").inputs
    if given is None:
        raise ConfigError(f"input=objects needs inputs: give vizpipe.inspect {ACCEPTED}")
    if isinstance(given, np.ndarray) and given.ndim == 4:
        given = torch.from_numpy(given)
    if isinstance(given, torch.Tensor):
        return _tensor(given, input_cfg, model, weights=weights)
    if isinstance(given, str | Path):
        from vizpipe.pipeline.inputs.images import find_images

        given = find_images(str(given))  # a file, a folder or a glob, as input=image finds them
    if _is_image(given):
        given = [given]
    if isinstance(given, list | tuple):
        return _image_list(list(given), input_cfg, weights)
    loader_data = getattr(given, "dataset", None)
    if loader_data is not None and hasattr(given, "batch_size"):  # a DataLoader
        if hasattr(loader_data, "__getitem__") and hasattr(loader_data, "__len__"):
            return _dataset(loader_data, input_cfg, weights)
        return _iterated(given, input_cfg, model)
    if hasattr(given, "__getitem__") and hasattr(given, "__len__"):
        return _dataset(given, input_cfg, weights)
    raise ConfigError(f"vizpipe.inspect cannot read inputs of type {type(given).__name__}; give {ACCEPTED}")


def _is_image(value: Any) -> bool:
    return hasattr(value, "mode") and hasattr(value, "size") and hasattr(value, "convert")  # a PIL image


def _tensor(
    x: torch.Tensor, input_cfg: Any, model: Any, labels: list[int] | None = None, weights: Any = None
) -> dict[str, Any]:
    """An in-memory tensor, exactly as ``input=tensor`` reads a tensor file (integer pixels too)."""
    x = x.detach().cpu()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ConfigError(f"input tensor has shape {tuple(x.shape)} (rank {x.ndim}); give N×C×H×W or C×H×W")
    normalized, stats = bool(input_cfg.normalized), None
    if not (x.is_floating_point() or x.is_complex()):
        stats = pixel_stats(input_cfg, weights, int(x.shape[1]))
        x, normalized = pixels(x, "input tensor", *stats), True
    x = x.float()
    _check_channels(x, input_cfg, model, "")
    n = int(x.shape[0])
    names = input_names([f"{TENSOR_STEM}_{i}" for i in range(n)] if n > 1 else [TENSOR_STEM])
    sources = [f"tensor[{i}]" for i in range(n)]
    return _tensor_fields(x, names, sources, input_cfg, normalized, labels, stats=stats)


class ImageItems:
    """Decoded images (uint8 RGB arrays, copied) and image files, preprocessed on access."""

    def __init__(self, items: list[np.ndarray | Path], prep: dict[str, Any]) -> None:
        self.items, self.prep = items, prep

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        x, rgb = preprocess(load_rgb(item) if isinstance(item, Path) else item, self.prep)
        return {"x": x, "rgb": rgb, "index": i, "label": -1}


def _image_list(given: list[Any], input_cfg: Any, weights: Any) -> dict[str, Any]:
    """PIL images and image paths, read and preprocessed like ``input=image``."""
    if not given:
        raise ConfigError(f"vizpipe.inspect got an empty list of inputs; give {ACCEPTED}")
    items: list[np.ndarray | Path] = []
    stems, sources, files = [], [], []
    for i, value in enumerate(given):
        if isinstance(value, str | Path):
            p = Path(value).expanduser()
            if not p.is_file():
                raise ConfigError(f"input {i} '{value}' is not a file; give image files or PIL images")
            items.append(p)
            stems.append(p.stem)
            sources.append(str(p))
            files.append(p)
        elif _is_image(value):
            items.append(rgb_array(value))  # a copy: later edits of the image do not reach the run
            name = str(getattr(value, "filename", "") or "")
            stems.append(Path(name).stem if name else f"image_{i}")
            sources.append(name or f"PIL image [{i}]")
        else:
            raise ConfigError(
                f"input {i} is a {type(value).__name__}; a list of inputs holds PIL images or image paths"
            )
    prep = preprocessing(input_cfg, weights)
    names = input_names(stems, ids=sources)
    positions = select(len(items), input_cfg)
    return {
        "dataset": Reindexed(ImageItems(items, prep), positions),
        "names": [names[i] for i in positions],
        "sources": [sources[i] for i in positions],
        "mean": list(prep["mean"]),
        "std": list(prep["std"]),
        "files": [p for p in (items[i] for i in positions) if isinstance(p, Path)],
    }


class DatasetItems:
    """A user's data set of ``(image, label)`` (or image) items as vizpipe's item dicts."""

    def __init__(self, dataset: Any, prep: dict[str, Any], normalized: bool) -> None:
        self.dataset, self.prep, self.normalized = dataset, prep, normalized

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.dataset[i]
        image, label = (item[0], item[1]) if isinstance(item, tuple | list) and len(item) >= 2 else (item, -1)
        if isinstance(image, torch.Tensor):
            x = image.detach().cpu()
            if x.ndim != 3:
                raise ConfigError(
                    f"data set item {i} holds a tensor of shape {tuple(x.shape)}; expected C×H×W"
                )
            normalized = self.normalized
            if not (x.is_floating_point() or x.is_complex()):  # integer pixels, as input=tensor reads them
                x, normalized = pixels(x, f"data set item {i}", self.prep["mean"], self.prep["std"]), True
            x = x.float()
            rgb = drawable(x[None], self.prep["mean"], self.prep["std"], normalized)[0]
        else:
            decoded = rgb_array(image) if _is_image(image) else np.asarray(image, dtype=np.uint8)
            x, rgb = preprocess(decoded, self.prep)
        return {"x": x, "rgb": rgb, "index": i, "label": _label(label)}


def _label(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _dataset(dataset: Any, input_cfg: Any, weights: Any) -> dict[str, Any]:
    """A map-style data set, read in order (``input.limit``, ``input.shard`` as for files)."""
    count = len(dataset)
    if count < 1:
        raise ConfigError(f"the data set given to vizpipe.inspect ({type(dataset).__name__}) is empty")
    prep = preprocessing(input_cfg, weights)
    positions = select(count, input_cfg, "data set items")
    what = type(dataset).__name__
    classes = getattr(dataset, "classes", None)
    return {
        "dataset": Reindexed(DatasetItems(dataset, prep, bool(input_cfg.normalized)), positions),
        "names": [f"item_{i:05d}" for i in positions],
        "sources": [f"{what}[{i}]" for i in positions],
        "mean": list(prep["mean"]),
        "std": list(prep["std"]),
        "classes": [str(c) for c in classes] if isinstance(classes, list | tuple) and classes else None,
    }


def _iterated(loader: Any, input_cfg: Any, model: Any) -> dict[str, Any]:
    """A DataLoader without random access: its batches of (images, labels) tensors, up to the limit."""
    limit = None if input_cfg.limit is None else int(input_cfg.limit)
    xs: list[torch.Tensor] = []
    labels: list[int] = []
    for batch in loader:
        images, targets = (batch[0], batch[1]) if isinstance(batch, tuple | list) else (batch, None)
        if not isinstance(images, torch.Tensor):
            raise ConfigError(
                "a DataLoader given to vizpipe.inspect must yield image tensors (or (images, labels))"
            )
        xs.append(images.detach().cpu())
        n = int(images.shape[0])
        labels += [_label(v) for v in targets] if targets is not None else [-1] * n
        if limit is not None and sum(int(t.shape[0]) for t in xs) >= limit:
            break
    if not xs:
        raise ConfigError("the DataLoader given to vizpipe.inspect yielded no batch")
    return _tensor(torch.cat(xs), input_cfg, model, labels)


class Annotated:
    """A data set's items with known labels and object boxes added (``vizpipe.Watch``)."""

    def __init__(self, dataset: Any, labels: list[int] | None, boxes: list[Any] | None) -> None:
        self.dataset, self.labels, self.boxes = dataset, labels, boxes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        if self.labels is not None:
            item["label"] = int(self.labels[i])
        if self.boxes is not None:
            box = self.boxes[i]
            item["box"] = torch.tensor([float("nan")] * 4 if box is None else [float(v) for v in box])
        return item


def annotate(inputs: Any, labels: list[int] | None, boxes: list[Any] | None) -> Any:
    """``inputs`` with per-item ``labels`` and ``boxes`` ((x0, y0, x1, y1) in input pixels, or None)."""
    from dataclasses import replace

    if labels is None and boxes is None:
        return inputs
    for what, values in (("labels", labels), ("boxes", boxes)):
        if values is not None and len(values) != len(inputs):
            raise ConfigError(
                f"{what} has {len(values)} entries for {len(inputs)} images; give one per image"
            )
    for i, box in enumerate(boxes or []):
        if box is not None and len(box) != 4:
            raise ConfigError(f"boxes[{i}] is {box!r}; give (x0, y0, x1, y1) in input pixels, or None")
    return replace(inputs, dataset=Annotated(inputs.dataset, labels, boxes), _first=None)
