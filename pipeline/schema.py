"""Typed config schema (Hydra ConfigStore dataclasses).

Every YAML file under ``conf/`` is merged onto these dataclasses, so a typo'd key or a value of
the wrong type fails at composition time, before any work. Each field carries its meaning, unit
and allowed values; the YAML files repeat them as comments for people who read ``conf/`` first.

Importing this module registers the schema (``vizpipe_schema``) and the ``vizpipe_safe``
resolver; it imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

# --------------------------------------------------------------------------- enums


# What the runner does after a stage fails: stop (skip the remaining stages) | continue (run them).
# Functional form because ``continue`` is a Python keyword (OmegaConf matches members by name).
OnError = Enum("OnError", {"stop": "stop", "continue": "continue"}, type=str)


class KernelScale(str, Enum):
    """Colour scale of kernel grids."""

    layer = "layer"  # one symmetric scale per layer: white is exactly zero
    tile = "tile"  # each kernel scaled on its own (the seed's behaviour)


class ChannelSelect(str, Enum):
    """Which feature-map channels are drawn."""

    first = "first"  # channels 0..max_channels-1
    top = "top"  # the most active channels (highest mean activation)


class FeatureNorm(str, Enum):
    """How feature maps are normalised to [0, 1] before the colormap."""

    channel = "channel"  # each channel min..max on its own
    layer = "layer"  # one min..max over the whole layer (per image)


class NpyDtype(str, Enum):
    """dtype of saved activation arrays."""

    float32 = "float32"
    float16 = "float16"


class TBBackend(str, Enum):
    """Which SummaryWriter implementation writes the event files."""

    tensorboardX = "tensorboardX"
    torch = "torch"  # torch.utils.tensorboard


# --------------------------------------------------------------------------- groups


@dataclass
class ModelConfig:
    """``model/``: which network to inspect and which weights to put in it."""

    # Factory called with name/weights/num_classes/kwargs (pipeline/build.py instantiates it).
    _target_: str = "pipeline.models.torchvision_model"
    # torchvision registered name (torchvision.models.list_models()) or a custom model's name.
    name: str = "resnet18"
    # null = random init (seeded); "DEFAULT" or an enum member name (e.g. IMAGENET1K_V1)
    # = torchvision's pretrained weights, downloaded once into torchvision's cache.
    weights: str | None = None
    # Path to a local state_dict file (loaded with weights_only=True, strict). null = none.
    checkpoint: str | None = None
    # Number of output classes; null = the architecture's default (1000 for ImageNet models).
    num_classes: int | None = None
    # Class names for a custom head or checkpoint: a list, or a text file with one name per line;
    # null = the pretrained weights' meta["categories"] (none for random init).
    categories: Any | None = None
    # Comma-separated top-level blocks (used by conf/sweep/cam_layers.yaml); null = unknown.
    blocks: str | None = None
    # Extra keyword arguments for the factory (e.g. {dropout: 0.0}).
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DeviceConfig:
    """``device/``: where the model runs."""

    # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    type: str = "auto"


@dataclass
class InputConfig:
    """``input/``: what the model looks at."""

    # photo (bundled grace_hopper.jpg) | image (input.path: file, folder or glob)
    # | tensor (input.path: .pt/.npy N×C×H×W, used as is) | random (input.shape, seeded)
    kind: str = "photo"
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
    # Resize interpolation: bilinear | bicubic | nearest; null = from the weights, else bilinear.
    interpolation: str | None = None
    # At most this many images are read from a folder or glob (sorted by name).
    max_images: int = 32


@dataclass
class SummaryConfig:
    """``summary.*``: torchinfo options (https://github.com/TylerYep/torchinfo#documentation)."""

    # Depth of nested modules shown in the table.
    depth: int = 3
    # Columns: input_size, output_size, num_params, params_percent, kernel_size, mult_adds, trainable
    col_names: List[str] = field(default_factory=lambda: ["output_size", "num_params"])
    # Row settings: depth, var_names, ascii_only
    row_settings: List[str] = field(default_factory=lambda: ["depth"])
    # Model mode during the summary's forward pass: same | eval | train
    mode: str = "same"


@dataclass
class KernelsConfig:
    """``kernels.*``: convolution kernel grids (seed §2.1)."""

    # Layer names (dotted), globs (features.*), type:Conv2d, or all (every conv layer).
    layers: List[str] = field(default_factory=lambda: ["all"])
    # Rows: at most this many output channels per layer.
    max_out: int = 16
    # Columns: at most this many input channels per output channel.
    max_in: int = 64
    # layer = one symmetric colour scale per layer: w drawn at 0.5 + w / (2 max|w|), white = 0;
    # tile = each kernel min..max on its own (the seed's imshow; white is then not zero).
    scale: KernelScale = KernelScale.layer
    # Diverging matplotlib colormap name (drawn with min(cmap.N, 254) levels).
    cmap: str = "bwr"
    # Minimum edge of one drawn kernel tile, in pixels (kernels are upscaled with nearest).
    tile_px: int = 24
    # Also draw a layer with 3 input channels (the first conv) as RGB filters (up to max_out).
    rgb_first: bool = True
    # An output channel whose max |weight| is below this is reported as dead.
    dead_eps: float = 1e-8


@dataclass
class FeaturesConfig:
    """``features.*``: feature maps captured with forward hooks (seed §2.2)."""

    # Layer names, globs, type:Conv2d, all, or blocks (the model's top-level blocks).
    layers: List[str] = field(default_factory=lambda: ["blocks"])
    # Channels drawn per grid (the seed draws 100).
    max_channels: int = 100
    # first | top (highest mean activation over the batch, most active first)
    select: ChannelSelect = ChannelSelect.first
    # Matplotlib colormap name (drawn with min(cmap.N, 254) levels).
    cmap: str = "viridis"
    # channel = each channel min..max on its own | layer = one min..max over all channels
    # (both per image).
    normalize: FeatureNorm = FeatureNorm.channel
    # dtype of features/<layer>.npy: float32 | float16
    dtype: NpyDtype = NpyDtype.float32
    # Write raw activations as .npy beside the pictures.
    save_npy: bool = True
    # Minimum edge of one drawn channel tile, in pixels (small maps are upscaled, nearest).
    tile_px: int = 56


@dataclass
class CamConfig:
    """``cam.*``: class activation maps via pytorch-grad-cam (seed §2.3)."""

    # CAM method, case-insensitive, with aliases: gradcam, gradcam++, scorecam, eigencam, ...
    method: str = "gradcam"
    # auto | a dotted layer name (or a glob, type:X, blocks) | a list of names (one averaged map).
    layer: Any = "auto"
    # null (each image's top-1 prediction) | an int | a list of ints (one map each) | a class name.
    target_class: Any = None
    # With several layers, also write one map per layer.
    per_layer: bool = False
    # Test-time augmentation smoothing (library option; 6× slower).
    aug_smooth: bool = False
    # First principal component smoothing (library option).
    eigen_smooth: bool = False
    # Batch size of the perturbation passes of ScoreCAM / AblationCAM.
    batch_size: int = 32
    # CAM metrics recorded per map, e.g. [confidence_change, road_most_relevant_first].
    metrics: List[str] = field(default_factory=list)
    # Weight of the image in the overlay (show_cam_on_image's image_weight), 0..1.
    image_weight: float = 0.5
    # Freeze parameter gradients during CAM (faster, identical maps; see stages/cam.py).
    freeze_params: bool = True


@dataclass
class TensorboardConfig:
    """``tensorboard.*``: event files under <run>/tensorboard (seed §3)."""

    # tensorboardX | torch (torch.utils.tensorboard); the same tags either way.
    backend: TBBackend = TBBackend.tensorboardX
    # add_graph on the real input (a model that cannot be traced only warns).
    graph: bool = True
    # add_images of the input batch and one make_grid image.
    images: bool = True
    # Kernel / feature / CAM pictures made earlier in this run.
    kernels: bool = True
    features: bool = True
    cam: bool = True
    # Weight and bias histograms of every layer with parameters.
    histograms: bool = True
    # Activation statistics of captured layers as scalars.
    activations: bool = True
    # Top-5 predictions, torchinfo table and resolved config as text.
    text: bool = True
    # One HParams row (model, layer, class, method -> target score, metrics).
    hparams: bool = True


@dataclass
class ReportConfig:
    """``report.*``: the run's self-contained report (pipeline/report.py).

    Rebuild it from the run folder at any time: ``python -m pipeline.report <run>``.
    """

    # Write the report after the stages (also after a failed stage).
    enabled: bool = True
    # report.html: one file, pictures embedded as data URIs (opens offline, survives copying).
    html: bool = True
    # report.md: pictures linked relatively (for viewing on a forge).
    markdown: bool = True
    # At most this many pictures per section (the rest stay in the run folder); 0 = no limit.
    max_images: int = 64


@dataclass
class Config:
    """The whole vizpipe config: what ``run.py`` receives."""

    # Ordered stage names; the runner runs exactly these, in this order.
    stages: List[str] = field(
        default_factory=lambda: ["summary", "kernels", "features", "cam", "tensorboard"]
    )
    # Seed for python, numpy and torch (random init, random input).
    seed: int = 0
    # stop | continue: whether later stages run after one fails.
    on_error: OnError = OnError.stop
    # torch.use_deterministic_algorithms(True) (slower; same bytes across runs).
    deterministic: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    input: InputConfig = field(default_factory=InputConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    kernels: KernelsConfig = field(default_factory=KernelsConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    tensorboard: TensorboardConfig = field(default_factory=TensorboardConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # Free-form notes (e.g. from experiment configs); shown in the report.
    notes: str | None = None


# --------------------------------------------------------------------------- resolver

_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@-]+")


def safe_dirname(text: str, max_len: int = 120) -> str:
    """Make ``text`` a file-system-safe folder name (Windows, macOS, Linux).

    Runs of other characters become ``_``; leading dots are removed; long names are cut and
    suffixed with a short hash so different overrides never collide.
    """
    out = _UNSAFE.sub("_", str(text)).strip("._ ") or "job"
    if len(out) > max_len:
        digest = hashlib.sha1(str(text).encode()).hexdigest()[:8]
        out = out[: max_len - 9] + "_" + digest
    return out


def _swept_keys(root: Any) -> set[str]:
    """Keys swept in this multirun: sweep overrides on the command line + ``hydra.sweeper.params``."""
    import sys

    keys: set[str] = set()
    try:
        params = root.hydra.sweeper.get("params") or {}
        keys.update(str(k) for k in params)
    except Exception:  # noqa: BLE001 - no sweeper params
        pass
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        args = [a for a in sys.argv[1:] if not a.startswith("-") and "=" in a]
        for o in OverridesParser.create().parse_overrides(args):
            if o.is_sweep_override():
                keys.add(o.get_key_element())
    except Exception:  # noqa: BLE001 - other launchers' workers: fall back to all overrides
        pass
    return keys


def job_dirname(*, _root_: Any) -> str:
    """A multirun job's folder name from the overrides that were swept (all of them as fallback).

    ``-m model=resnet18 cam.layer=layer3,layer4 cam.target_class=1,207`` gives
    ``cam.layer=layer4,cam.target_class=207``; made file-system safe by ``safe_dirname``.
    """
    task = [str(o) for o in _root_.hydra.overrides.task]
    exclude = set(_root_.hydra.job.config.override_dirname.exclude_keys or [])
    pairs = [o.split("=", 1) for o in task if "=" in o]
    pairs = [(k, v) for k, v in pairs if k.lstrip("+~") not in exclude]
    swept = _swept_keys(_root_)
    chosen = [(k, v) for k, v in pairs if k.lstrip("+~") in swept] or pairs
    return safe_dirname(",".join(f"{k}={v}" for k, v in sorted(chosen)))


def register() -> None:
    """Register the schema and resolvers (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="vizpipe_schema", node=Config)
    if not OmegaConf.has_resolver("vizpipe_safe"):
        OmegaConf.register_new_resolver("vizpipe_safe", safe_dirname)
    if not OmegaConf.has_resolver("vizpipe_jobdir"):
        OmegaConf.register_new_resolver("vizpipe_jobdir", job_dirname)


register()
