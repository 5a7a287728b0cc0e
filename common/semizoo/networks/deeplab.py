"""DeepLabv3+ with a dilated ResNet-50 "v1c" backbone, output stride 16: EPL's network (epl.md §2).

Backbone: deep stem (three 3×3 convs: in→64 stride 2, 64→64, 64→128, each BN + ReLU) and a 3×3/2 max pool, then
torchvision bottlenecks ([3, 4, 6, 3] blocks, stride on the 3×3 conv); stages 2 and 3 stride 2, stage 4 stride 1
with its three blocks dilated 2/4/8 (multi-grid), so the deepest map is at stride 16. Head (Chen et al., ECCV 2018):
ASPP (1×1 and 3×3 dilated 6/12/18 branches, concatenated, BN, LeakyReLU, 1×1; plus an added image-pool branch), a
decoder that fuses the upsampled ASPP output with the stride-4 stage-1 features reduced to 48 channels, and a 1×1
classifier upsampled to the input size. The module names of the backbone follow the common "resnet50_v1c"
ImageNet checkpoints (``conv1.{0,1,3,4,6}``, ``bn1``, ``layer1..4``), so :meth:`DeepLabV3Plus.load_backbone` can copy
their shape-matching tensors.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.resnet import Bottleneck

from .utils import read_state_dict

__all__ = ["ResNet50V1c", "DeepLabV3Plus"]

logger = logging.getLogger(__name__)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class ResNet50V1c(nn.Module):
    """Dilated ResNet-50 v1c (deep stem), output stride 16; ``forward`` returns (stage-1 features, stage-4 features).

    Args:
        in_channels: image channels.
        width: base width (64: ResNet-50; smaller values scale every layer for CPU budgets, ``width / 64``).
    """

    def __init__(self, in_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        stem = _conv_bn_relu(in_channels, width, stride=2) + _conv_bn_relu(width, width)
        stem.append(nn.Conv2d(width, 2 * width, 3, padding=1, bias=False))
        self.conv1 = nn.Sequential(*stem)
        self.bn1, self.relu = nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = 2 * width
        self.layer1 = self._stage(width, 3, stride=1, dilations=(1, 1, 1))
        self.layer2 = self._stage(2 * width, 4, stride=2, dilations=(1,) * 4)
        self.layer3 = self._stage(4 * width, 6, stride=2, dilations=(1,) * 6)
        self.layer4 = self._stage(8 * width, 3, stride=1, dilations=(2, 4, 8))
        self.out_channels = 32 * width

    def _stage(self, planes: int, blocks: int, stride: int, dilations: tuple[int, ...]) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = []
        for index, dilation in enumerate(dilations):
            first = index == 0
            layers.append(
                Bottleneck(
                    self.inplanes,
                    planes,
                    stride=stride if first else 1,
                    downsample=downsample if first else None,
                    dilation=dilation,
                )
            )
            self.inplanes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        return low, self.layer4(self.layer3(self.layer2(low)))


class _ASPP(nn.Module):
    """ASPP of epl.md §2: four bias-free branches concatenated, BN, LeakyReLU, 1×1; plus the image-pool branch."""

    def __init__(self, in_channels: int = 2048, channels: int = 256, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        branches = [nn.Conv2d(in_channels, channels, 1, bias=False)]
        branches += [nn.Conv2d(in_channels, channels, 3, padding=r, dilation=r, bias=False) for r in rates]
        self.branches = nn.ModuleList(branches)
        self.merge = nn.Sequential(
            nn.BatchNorm2d(channels * len(branches)),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(channels * len(branches), channels, 1, bias=False),
        )
        self.pool = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.out = nn.Sequential(nn.BatchNorm2d(channels), nn.LeakyReLU(0.01, inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        main = self.merge(torch.cat([branch(x) for branch in self.branches], dim=1))
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True))
        return self.out(main + pooled)


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ (ResNet-50 v1c, OS 16) returning logits ``(B, num_classes, H, W)`` (epl.md §2).

    Args:
        in_channels: image channels (1 for M&Ms and BUSI).
        num_classes: output classes (M&Ms 4, BUSI 2). semizoo puts background in channel 0 (MONAI's convention); the
            official code puts it last, a permutation of the classifier's rows with no other effect.
        pretrained: optional path of an ImageNet ResNet-50-v1c checkpoint; its shape-matching backbone tensors are
            copied (:meth:`load_backbone`). ``None`` trains from scratch.
        width: base width; 64 (default) is EPL's network. Smaller widths scale every layer (backbone widths
            ``width·(1, 2, 4, 8)·4``, head ``4·width``) for CPU budgets; ImageNet weights fit only width 64.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 4, pretrained: Optional[str] = None, width: int = 64
    ) -> None:
        super().__init__()
        if width < 4:
            raise ValueError(f"width must be >= 4, got {width}.")
        self.backbone = ResNet50V1c(in_channels, width)
        head, low = 4 * width, max(8, 3 * width // 4)  # 256 and 48 at width 64
        self.aspp = _ASPP(self.backbone.out_channels, head)
        self.reduce = nn.Sequential(nn.Conv2d(head, low, 1, bias=False), nn.BatchNorm2d(low), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(*_conv_bn_relu(head + low, head), nn.Dropout2d(0.1), *_conv_bn_relu(head, head))
        self.classifier = nn.Conv2d(head, num_classes, 1, bias=True)
        for module in (self.aspp, self.reduce, self.fuse, self.classifier):
            _init_head(module)
        if pretrained is not None:
            self.load_backbone(pretrained)

    def load_backbone(self, path: str | os.PathLike) -> list[str]:
        """Copy the backbone tensors of the checkpoint at ``path`` whose name and shape match; returns their names.

        The checkpoint may be a plain state dict or hold one under ``"state_dict"``/``"model"``; a ``"backbone."``
        or ``"module."`` prefix is stripped. Loaded with ``weights_only=True``.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: no tensor matched (the wrong file, most likely).
        """
        state = read_state_dict(path, "pretrained backbone")
        own = self.backbone.state_dict()
        matched = {}
        for name, tensor in state.items():
            name = name[len("backbone.") :] if name.startswith("backbone.") else name
            if name in own and tuple(own[name].shape) == tuple(tensor.shape):
                matched[name] = tensor
        if not matched:
            raise ValueError(f"{path}: no tensor matches the ResNet-50 v1c backbone by name and shape.")
        self.backbone.load_state_dict(matched, strict=False)
        logger.info("backbone: %d of %d tensors from %s", len(matched), len(own), path)
        return sorted(matched)

    def forward(self, x: Tensor) -> Tensor:
        low, high = self.backbone(x)
        high = self.aspp(high)
        high = F.interpolate(high, size=low.shape[2:], mode="bilinear", align_corners=True)
        out = self.classifier(self.fuse(torch.cat([self.reduce(low), high], dim=1)))
        return F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=True)


def _init_head(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
