"""The typed config: the core groups' dataclasses here, each stage's settings beside its code.

* the core groups (model, device, input, report): their dataclasses and enums;
* ``root_schema``: the root, made from the core keys plus one typed field per stage
  ``vizpipe.pipeline.registry`` discovers, with a defaults list choosing ``<stage>: default`` for
  every stage, so ``conf/config.yaml`` names no stage;
* ``settings_of``: a stage's or group's typed settings object from a composed config;
* ``check_known_keys``: every key of a composed config is one the schema knows (``+``/``++``
  overrides get past composition: Hydra's force-add lifts struct mode for them).

``vizpipe.pipeline.config_store`` stores these in Hydra's ConfigStore, so a typo'd key or a value
of the wrong type fails at composition time, before any work. Free-form keys (``free_form_keys``:
``model.kwargs``, ``cam.kwargs``, ``train.optimizer``) are the schema's ``Dict`` fields: they
take any sub-key, handed to the library they configure; ``Any`` fields (``model.categories``,
``cam.layer``, ``train.scheduler``, ...) take any value, which the stage reading them checks.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import Any, Dict, List

from omegaconf import OmegaConf
from vizpipe.pipeline import CONF_DIR
from vizpipe.pipeline.errors import ConfigError

# --------------------------------------------------------------------------- enums


# What the runner does after a stage fails: stop (skip the remaining stages) | continue (run them).
# Functional form because ``continue`` is a Python keyword (OmegaConf matches members by name).
OnError = Enum("OnError", {"stop": "stop", "continue": "continue"}, type=str)


class InputKind(str, Enum):
    """What ``input.*`` describes."""

    photo = "photo"  # the bundled grace_hopper.jpg
    image = "image"  # input.path: an image file, a folder or a glob
    tensor = "tensor"  # input.path: a .pt/.npy N×C×H×W tensor
    random = "random"  # a seeded standard-normal batch of input.shape
    shapes = "shapes"  # synthetic shapes on textured noise, drawn from the seed (labels, boxes, splits)
    imagefolder = "imagefolder"  # input.root: one sub-folder of images per class (labels, splits)
    cifar10 = "cifar10"  # CIFAR-10 in input.root (torchvision's CIFAR10; input.download=true fetches it)
    objects = "objects"  # a tensor, PIL images, paths or a Dataset/DataLoader given to vizpipe.inspect


class OnBadImage(str, Enum):
    """What ``input=image`` does with a file that cannot be read as an image."""

    stop = "stop"  # the stage reading it stops, naming the file
    skip = "skip"  # left out before any work (its header is read), each one warned


class Split(str, Enum):
    """Which part of a data set with splits (shapes, imagefolder, cifar10) ``input.*`` names."""

    train = "train"  # what the train stage learns from
    val = "val"  # what it validates on after every epoch
    test = "test"  # held out: never seen by the train stage


class ModelOutput(str, Enum):
    """What the model's outputs are, for the probabilities vizpipe reports."""

    auto = "auto"  # probabilities when the last module is a Sigmoid/Softmax, else logits
    logits = "logits"  # softmax over the outputs (sigmoid for one output)
    probabilities = "probabilities"  # used as they are


class ModelTask(str, Enum):
    """What the model does (pipeline/tasks): what its outputs are and which CAM targets it takes."""

    auto = "auto"  # inferred from the output: a dict with 'out', a list of detection dicts, (N, D) features
    classification = "classification"  # (N, K) class scores
    segmentation = "segmentation"  # {"out": (N, K, H, W)} (torchvision's FCN, DeepLabV3, LRASPP)
    detection = "detection"  # [{boxes, labels, scores}] per image (Faster/Mask R-CNN, RetinaNet, FCOS)
    embedding = "embedding"  # (N, D) features compared by cosine similarity (a model without its head)


class Interpolation(str, Enum):
    """Resize interpolation (torchvision's InterpolationMode values)."""

    bilinear = "bilinear"
    bicubic = "bicubic"
    nearest = "nearest"
    nearest_exact = "nearest_exact"
    box = "box"
    hamming = "hamming"
    lanczos = "lanczos"


# --------------------------------------------------------------------------- core groups


@dataclass
class ModelConfig:
    """``model/``: which network to inspect and which weights to put in it."""

    # Factory called with name/weights/num_classes/kwargs (pipeline/factory/model.py instantiates it).
    _target_: str = "vizpipe.pipeline.models.torchvision_model"
    # torchvision registered name (torchvision.models.list_models()) or a custom model's name.
    name: str = "???"
    # null = random init (seeded); "DEFAULT" or an enum member name (e.g. IMAGENET1K_V1)
    # = torchvision's pretrained weights, downloaded once into torchvision's cache.
    weights: str | None = None
    # Path to a local state_dict file (loaded with weights_only=True, strict). null = none.
    checkpoint: str | None = None
    # Number of output classes; null = the architecture's default (1000 for ImageNet models).
    num_classes: int | None = None
    # Class names for a custom head or checkpoint: a list, or a text file with one name per line;
    # null = the pretrained weights' meta["categories"] (none for random init).
    categories: Any = None
    # Comma-separated blocks (features.layers=[blocks], cam.layer=auto's last spatial one,
    # sweep=cam_layers); null = found from the model (pipeline/layers.py default_blocks).
    blocks: str | None = None
    # auto | logits | probabilities: what the outputs are (auto: a final Sigmoid/Softmax = probs).
    output: ModelOutput = ModelOutput.auto
    # auto | classification | segmentation | detection | embedding (pipeline/tasks: auto = inferred).
    task: ModelTask = ModelTask.auto
    # Extra keyword arguments for the factory (e.g. {dropout: 0.0}).
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DeviceConfig:
    """``device/``: where the model runs."""

    # auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps
    type: str = "auto"


@dataclass
class InputConfig:
    """``input/``: what the model looks at, streamed in batches."""

    # photo | image | tensor | random | shapes | imagefolder | cifar10 (conf/input/*.yaml);
    # objects: what vizpipe.inspect was given (set by it, pipeline/inputs/objects.py)
    kind: InputKind = InputKind.photo
    # Image file, folder or glob (kind=image); tensor file (kind=tensor); null otherwise.
    path: str | None = None
    # N, C, H, W of the random batch (kind=random).
    shape: List[int] = field(default_factory=lambda: [1, 3, 224, 224])
    # Shorter-side resize in pixels; null = from the weights' transforms(), else 256.
    resize: int | None = None
    # Centre-crop size in pixels; null = from the weights' transforms(), else 224.
    crop: int | None = None
    # Per-channel normalisation mean/std; null = from the weights, else ImageNet's.
    mean: List[float] | None = None
    std: List[float] | None = None
    # Resize interpolation; null = from the weights, else bilinear.
    interpolation: Interpolation | None = None
    # kind=tensor: true = the tensor is normalised (un-normalised with mean/std for drawing);
    # false = raw [0, 1] pixels (drawn as they are). The model gets the tensor as it is.
    normalized: bool = True
    # At most this many images (sorted by path) are used; null = all of them.
    limit: int | None = 32
    # Images per forward pass (a torch DataLoader streams the data set in batches).
    batch_size: int = 32
    # DataLoader worker processes reading and preprocessing images (0 = in this process).
    workers: int = 0
    # "I/N": only the I-th of N equal slices of the (limited) data set (0-based), e.g. 0/4.
    shard: str | None = None
    # kind=image: an image file that cannot be read (not an image, a decompression bomb):
    # stop (the run stops there, naming it) | skip (left out before any work, each one warned).
    on_bad_image: OnBadImage = OnBadImage.stop
    # Data sets with splits (shapes, imagefolder, cifar10): the split the visualisation stages
    # see: train | val | test (held out, never trained on). The train stage reads train and val.
    split: Split = Split.test
    # Folder of the data set: imagefolder's class sub-folders (or its train/ val/ test/ folders),
    # the folder holding cifar-10-batches-py for cifar10. Relative paths: from the launch folder.
    root: str | None = None
    # cifar10: download the data set into input.root when it is not there (needs internet).
    download: bool = False
    # shapes: image side in pixels (square RGB images, >= 32).
    size: int = 64
    # shapes: objects per image: 1 = one shape, its class the label; 2..6 = a scene of that many
    # different shapes with the true mask and boxes (segmentation, detection; no single label).
    objects: int = 1
    # shapes: images in each split (drawn on demand from seed, split and index; nothing stored).
    train_count: int = 3000
    val_count: int = 500
    test_count: int = 500
    # Fraction of the training images held out as the val split: cifar10 (the last ones of its
    # training batches) and imagefolder without a val/ folder (a fixed draw from each class).
    val_fraction: float = 0.1
    # imagefolder without a test/ folder: fraction of each class held out as the test split.
    test_fraction: float = 0.1


@dataclass
class ReportConfig:
    """``report.*``: the run's self-contained report (pipeline/report).

    Rebuild it from the run folder at any time: ``python -m vizpipe.report <run>``.
    """

    # Write the report after the stages (also after a failed stage).
    enabled: bool = True
    # report.html: one file, pictures embedded as data URIs (opens offline, survives copying).
    html: bool = True
    # report.md: pictures linked relatively (for viewing on a forge).
    markdown: bool = True
    # At most this many pictures per section (the rest stay in the run folder); 0 = no limit. The
    # only limit on what the report shows (TensorBoard and the sweep index sample CAM's first 32 images).
    max_images: int = 64
    # Show config values read from the environment (${oc.env:NAME}) in manifest.json and the
    # reports; false = they read <hidden: ${oc.env:NAME}> (a token in a config is not copied).
    show_env: bool = False


#: the root keys every run has (stage settings are added by ``root_schema``)
CORE_FIELDS: list[tuple[str, Any, Any]] = [
    # Seed for python, numpy and torch (random init, random input).
    ("seed", int, 0),
    # stop | continue: whether later stages run after one fails.
    ("on_error", OnError, OnError.stop),
    # torch.use_deterministic_algorithms(True) (slower; same bytes across runs).
    ("deterministic", bool, False),
    # true = per-layer details on the console too (they always go to run.log).
    ("verbose", bool, False),
    ("model", ModelConfig, field(default_factory=ModelConfig)),
    ("device", DeviceConfig, field(default_factory=DeviceConfig)),
    ("input", InputConfig, field(default_factory=InputConfig)),
    ("report", ReportConfig, field(default_factory=ReportConfig)),
    # Free-form notes (e.g. from experiment configs); shown in the report.
    ("notes", str | None, None),
]
#: core groups with a schema of their own (their YAML options start with ``defaults: [_schema]``)
CORE_GROUPS: dict[str, type] = {
    "model": ModelConfig,
    "device": DeviceConfig,
    "input": InputConfig,
    "report": ReportConfig,
}


@functools.cache
def root_schema(with_defaults: bool = True) -> type:
    """The root dataclass: core keys, ``stages``, one field per discovered stage, and (for Hydra)
    its defaults list; ``with_defaults=False`` for merging a saved config onto the schema."""
    from vizpipe.pipeline.registry import default_stages, stage_classes

    classes = stage_classes()
    defaults: list[Any] = ["_self_"]
    stage_fields: list[tuple[str, Any, Any]] = []
    for name, cls in classes.items():
        if cls.config is None:
            continue
        choice = "default" if _has_default_option(name) else "_schema"
        defaults.append({name: choice})
        stage_fields.append((name, cls.config, field(default_factory=cls.config)))
    first = default_stages()
    head = [("defaults", List[Any], field(default_factory=lambda: list(defaults)))] if with_defaults else []
    return make_dataclass(
        "Config",
        [
            *head,
            # Ordered stage names; the runner runs exactly these, in this order.
            ("stages", List[str], field(default_factory=lambda: list(first))),
            *CORE_FIELDS,
            *stage_fields,
        ],
    )


def _has_default_option(name: str) -> bool:
    from vizpipe.pipeline.registry import plugin_yaml

    return (CONF_DIR / name / "default.yaml").is_file() or plugin_yaml(name) is not None


def settings_of(cfg: Any, name: str) -> Any:
    """The typed settings object of stage or group ``name`` (its dataclass), or None."""
    node = cfg.get(name) if hasattr(cfg, "get") else None
    if node is None:
        return None
    return OmegaConf.to_object(node) if OmegaConf.is_config(node) else node


# --------------------------------------------------------------------------- known keys


def _fields(typ: Any) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(typ) if f.name != "defaults"]  # Hydra's defaults list, dropped


def _is_mapping(annotation: Any) -> bool:
    """A ``Dict`` field (or an optional one): a mapping whose keys the schema does not name."""
    import typing

    origin = typing.get_origin(annotation)
    if annotation in (dict, Dict) or origin is dict:
        return True
    return origin is not None and any(_is_mapping(a) for a in typing.get_args(annotation))


def free_form_keys(typ: Any | None = None, prefix: str = "") -> list[str]:
    """The dotted keys that take any sub-key (the schema's ``Dict`` fields): ``model.kwargs`` (the
    model factory's keyword arguments), ``cam.kwargs``, ``train.optimizer``. (``Any`` fields, such as
    ``model.categories`` or ``train.scheduler``, take any value; the stage reading them checks it.)"""
    import typing

    typ = typ or root_schema(with_defaults=False)
    hints = typing.get_type_hints(typ)  # the real types (stage modules use postponed annotations)
    out: list[str] = []
    for f in _fields(typ):
        annotation = hints.get(f.name, Any)
        if dataclasses.is_dataclass(annotation):
            out += free_form_keys(annotation, f"{prefix}{f.name}.")
        elif _is_mapping(annotation):
            out.append(f"{prefix}{f.name}")
    return out


def check_known_keys(cfg: Any) -> None:
    """Every key of ``cfg``'s typed nodes is a field of their dataclass, and every field is there.

    Hydra adds ``+key=value`` and ``++key=value`` with its force-add, which lifts struct mode (and
    a structured node's own check) for that one key, so ``+cam.methd=scorecam`` or ``+sed=5`` used
    to compose and be ignored; ``~seed`` removed a key every run reads. Free-form nodes (``Dict``
    and ``Any`` fields: ``free_form_keys``) are not looked into. Raises ``ConfigError`` naming the
    closest known key.
    """
    from omegaconf import DictConfig, ListConfig

    def walk(node: Any, path: str) -> None:
        if isinstance(node, ListConfig):  # a list of dataclasses (none today): each one checked
            if dataclasses.is_dataclass(node._metadata.element_type) and not node._is_none():
                for i in range(len(node)):
                    walk(node._get_node(i), f"{path}[{i}]")
            return
        typ = node._metadata.object_type
        if not dataclasses.is_dataclass(typ) or node._is_none() or node._is_missing():
            return  # a free-form mapping (a Dict or Any field): its keys belong to whoever reads it
        names = [f.name for f in _fields(typ)]
        keys = [str(k) for k in node.keys()]
        where = f"{path}." if path else ""
        for key in keys:
            if key not in names:
                raise _unknown_key(f"{where}{key}", [f"{where}{n}" for n in names], typ)
        for name in names:
            if name not in keys:
                raise ConfigError(
                    f"Config key '{where}{name}' is missing (removed with ~{where}{name}?): every "
                    f"setting vizpipe reads must stay; set it instead: {where}{name}=..."
                )
        for key in keys:
            child = node._get_node(key)
            if isinstance(child, DictConfig | ListConfig):
                walk(child, f"{where}{key}")

    walk(cfg, "")


def _unknown_key(key: str, choices: list[str], typ: Any) -> ConfigError:
    from vizpipe.pipeline.errors import unknown_choice

    prefix = key.rpartition(".")[0]
    free = [k for k in free_form_keys(typ, f"{prefix}." if prefix else "") if "." not in k[len(prefix) + 1 :]]
    hint = "Keys are listed in conf/ with comments; python run.py --cfg job shows them all"
    if free:
        hint += f". Free-form (any sub-key, e.g. +{free[0]}.NAME=...): {', '.join(free)}"
    return unknown_choice("config key", key, choices, hint=hint)
