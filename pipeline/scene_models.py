"""The small segmentation and detection models the shapes scene demos train (``input.objects=3``).

``ShapesSegNet`` (``model=shapes_seg_net``, ``experiment=shapes_seg_demo``) returns a dict with
``out`` like torchvision's segmentation models; ``shapes_det_net`` (``model=shapes_det_net``,
``experiment=shapes_det_demo``) is torchvision's FCOS on a small backbone. Both train from scratch
on a CPU in minutes; vizpipe infers their task from what they return (``vizpipe.pipeline.tasks``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from vizpipe.pipeline.errors import ConfigError
from vizpipe.pipeline.models import _conv_block

__all__ = ["ShapesSegNet", "shapes_det_net"]


class ShapesSegNet(nn.Module):
    """A small segmentation net for ``input=shapes input.objects=3``: ShapesNet's blocks and a head
    that scores every pixel, returned as torchvision's segmentation models return it (``{"out"}``).

    The input is averaged down 2x (64 -> 32 px), conv1 and conv2 (pooled between: 16 px) and conv3
    (16 px, dilated for context) feed a 3x3 head and a 1x1 classifier whose scores are upsampled
    (bilinear) to the input's size: one score per class and pixel (0 = background). Trains to
    ~90% pixel accuracy in a few epochs on a CPU (``python run.py experiment=shapes_seg_demo``).
    """

    def __init__(
        self,
        name: str = "shapes_seg_net",
        weights: str | None = None,
        num_classes: int | None = 7,
        width: int = 16,
    ) -> None:
        super().__init__()
        if weights:
            raise ConfigError(
                f"shapes_seg_net has no pretrained weights (got model.weights={weights!r}); use null"
            )
        w = int(width)
        self.downsample = nn.AvgPool2d(kernel_size=2)
        self.conv1 = _conv_block(3, w)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = _conv_block(w, 2 * w)
        self.conv3 = nn.Sequential(
            nn.Conv2d(2 * w, 4 * w, kernel_size=3, padding=2, dilation=2), nn.BatchNorm2d(4 * w), nn.ReLU()
        )
        self.head = _conv_block(4 * w, 4 * w)
        self.classifier = nn.Conv2d(4 * w, 7 if num_classes is None else int(num_classes), kernel_size=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"out": (B, num_classes, H, W) scores}."""
        size = x.shape[-2:]
        f = self.conv1(self.downsample(x))  # (B, w, H/2, W/2)
        f = self.conv3(self.conv2(self.pool1(f)))  # (B, 4w, H/4, W/4)
        scores = self.classifier(self.head(f))
        return {"out": nn.functional.interpolate(scores, size=size, mode="bilinear", align_corners=False)}


class _DetBackbone(nn.Module):
    """ShapesDetNet's backbone: a stride-4 stem, then three levels at 1/4, 1/8 and 1/16 (a dict)."""

    def __init__(self, width: int) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1)
            return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU())

        w = int(width)
        self.stem = nn.Sequential(block(3, w, 2), block(w, w, 2))
        self.c3, self.c4, self.c5 = block(w, w, 1), block(w, w, 2), block(w, w, 2)
        self.out_channels = w  # what torchvision's detection heads read

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"0": (B, w, H/4, W/4), "1": H/8, "2": H/16}."""
        a = self.c3(self.stem(x))
        b = self.c4(a)
        return {"0": a, "1": b, "2": self.c5(b)}


def shapes_det_net(
    name: str = "shapes_det_net",
    weights: str | None = None,
    num_classes: int | None = 7,
    width: int = 32,
    **kwargs: Any,
) -> nn.Module:
    """A small detector for ``input=shapes input.objects=3``: torchvision's FCOS (anchor-free) on a
    three-level conv backbone (``_DetBackbone``), 64 px in, no resizing inside.

    vizpipe's input normalisation is the only one (the detector's own is set to the identity),
    so the CAM stage and training feed it the same tensors. Trains from scratch on a CPU in
    about a minute and a half to find nearly every shape (``experiment=shapes_det_demo``).
    """
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if weights:
        raise ConfigError(
            f"shapes_det_net has no pretrained weights (got model.weights={weights!r}); use null"
        )
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,)), aspect_ratios=((1.0,),) * 3)
    settings = {"min_size": 64, "max_size": 64, "score_thresh": 0.05, "detections_per_img": 20, **kwargs}
    return FCOS(
        _DetBackbone(width),
        num_classes=7 if num_classes is None else int(num_classes),
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        anchor_generator=anchors,
        **settings,
    )
