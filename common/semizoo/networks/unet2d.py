"""``SSL4MISUNet``: the 2D U-Net of SSL4MIS (HiLab-git/SSL4MIS ``code/networks/unet.py`` @06df604).

The architecture used by SSL4MIS, SS-Net and ACTION for ACDC (ssnet.md §2): five encoder stages of
16-32-64-128-256 channels with dropout 0.05-0.5, a decoder of 1×1 conv + bilinear ×2 upsampling
(``align_corners=True``) + concatenation + conv block, and a 3×3 output convolution. Modules are
created in forward order with PyTorch's default init, so a seeded build matches the official one.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Union

import torch
from torch import Tensor, nn

__all__ = ["SSL4MISUNet", "UNetConvBlock", "UNetUpBlock"]


class UNetConvBlock(nn.Module):
    """Conv3×3 → BN → LeakyReLU(0.01) → Dropout(p) → Conv3×3 → BN → LeakyReLU(0.01)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.LeakyReLU(0.01)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.act2 = nn.LeakyReLU(0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(self.act1(self.norm1(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


class UNetDownBlock(nn.Module):
    """MaxPool 2 then :class:`UNetConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.block = UNetConvBlock(in_channels, out_channels, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.pool(x))


class UNetUpBlock(nn.Module):
    """Conv1×1 (deep → skip channels) → bilinear ×2 → concat ``[skip, up]`` → :class:`UNetConvBlock` (dropout 0)."""

    def __init__(self, deep_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(deep_channels, skip_channels, kernel_size=1)
        self.upsample = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True)
        self.block = UNetConvBlock(2 * skip_channels, skip_channels, 0.0)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        return self.block(torch.cat([skip, self.upsample(self.reduce(deep))], dim=1))


class SSL4MISUNet(nn.Module):
    """SSL4MIS 2D U-Net (ssnet.md §2); ``forward`` returns logits ``(B, out_channels, H, W)``.

    ``forward(x, features=True)`` (= :meth:`forward_features`) returns a dict: ``logits``; ``embedding``, the
    16-channel last decoder output fed to the head; ``latent``, the bottleneck ``x4``; ``pyramid``,
    ``[x4, u1, u2, u3, u4]`` (496 channels in all, used by ACTION). H and W must be divisible by 16.

    Args:
        in_channels: image channels.
        out_channels: classes (background included).
        features: channels of the five encoder stages.
        dropout: dropout probability of the five encoder stages.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    ) -> None:
        super().__init__()
        if len(features) != 5 or len(dropout) != 5:
            raise ValueError(f"features and dropout need 5 entries each, got {list(features)} and {list(dropout)}.")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        encoder: List[nn.Module] = [UNetConvBlock(in_channels, features[0], dropout[0])]
        encoder += [UNetDownBlock(features[k - 1], features[k], dropout[k]) for k in range(1, 5)]
        self.encoder = nn.ModuleList(encoder)
        self.decoder = nn.ModuleList([UNetUpBlock(features[k + 1], features[k]) for k in range(3, -1, -1)])
        self.head = nn.Conv2d(features[0], out_channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor, features: bool = False) -> Union[Tensor, Dict[str, Union[Tensor, List[Tensor]]]]:
        if x.dim() != 4 or x.shape[2] % 16 != 0 or x.shape[3] % 16 != 0:
            raise ValueError("SSL4MISUNet needs (B, C, H, W) with H and W divisible by 16, got " + str(list(x.shape)))
        skips: List[Tensor] = []
        for block in self.encoder:
            x = block(x if len(skips) == 0 else skips[-1])
            skips.append(x)
        latent = skips[4]
        pyramid: List[Tensor] = [latent]
        u = latent
        level = 3
        for up in self.decoder:
            u = up(u, skips[level])
            pyramid.append(u)
            level -= 1
        logits = self.head(u)
        if not features:
            return logits
        return {"logits": logits, "embedding": u, "latent": latent, "pyramid": pyramid}

    @torch.jit.unused
    def forward_features(self, x: Tensor) -> Dict[str, Union[Tensor, List[Tensor]]]:
        """The feature dict of ``forward(x, features=True)``; methods should call ``network(x, features=True)``."""
        return self.forward(x, features=True)  # type: ignore[return-value]
