"""The typed config: the core groups' dataclasses here, each stage's settings beside its code.

* the core groups (model, device, input, report): their dataclasses and enums;
* ``root_schema``: the root, made from the core keys plus one typed field per stage
  ``vizpipe.pipeline.registry`` discovers, with a defaults list choosing ``<stage>: default`` for
  every stage, so ``conf/config.yaml`` names no stage;
* ``settings_of``: a stage's or group's typed settings object from a composed config.

``vizpipe.pipeline.config_store`` stores these in Hydra's ConfigStore, so a typo'd key or a value
of the wrong type fails at composition time, before any work.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import Any, Dict, List

from omegaconf import OmegaConf
from vizpipe.pipeline import CONF_DIR

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
    # At most this many pictures per section (the rest stay in the run folder); 0 = no limit.
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
