"""``UAMTVNet``: the 3D V-Net of UA-MT (yulequan/UA-MT ``code/networks/vnet.py`` @88ed29a).

The LA network of UA-MT, SS-Net and ACTION (ssnet.md §2): stages of 1-2-3-3-3 conv layers at
16-32-64-128-256 channels, stride-2 conv downsampling, transposed-conv upsampling with additive
skips, Dropout3d(0.5) on the bottleneck and before the 1×1×1 head. Modules are created in forward
order with PyTorch's default init.
"""

from __future__ import annotations

from typing import Dict, List, Union

import torch
from torch import Tensor, nn

__all__ = ["UAMTVNet", "NORMALIZATIONS"]

NORMALIZATIONS = ("batchnorm", "groupnorm", "instancenorm", "none")


def _norm(kind: str, channels: int) -> List[nn.Module]:
    if kind == "batchnorm":
        return [nn.BatchNorm3d(channels)]
    if kind == "groupnorm":
        return [nn.GroupNorm(num_groups=16, num_channels=channels)]
    if kind == "instancenorm":
        return [nn.InstanceNorm3d(channels)]
    return []


class VNetStage(nn.Sequential):
    """``n`` × [Conv3d 3³ (pad 1) → norm → ReLU]."""

    def __init__(self, n_convs: int, in_channels: int, out_channels: int, normalization: str) -> None:
        layers: List[nn.Module] = []
        for i in range(n_convs):
            layers.append(nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, padding=1))
            layers += _norm(normalization, out_channels)
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class VNetResample(nn.Sequential):
    """Stride-2 Conv3d (down) or ConvTranspose3d (up), kernel 2, then norm → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, normalization: str, up: bool) -> None:
        conv = nn.ConvTranspose3d if up else nn.Conv3d
        layers: List[nn.Module] = [conv(in_channels, out_channels, kernel_size=2, stride=2)]
        layers += _norm(normalization, out_channels)
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UAMTVNet(nn.Module):
    """UA-MT V-Net (ssnet.md §2); ``forward`` returns logits ``(B, out_channels, H, W, D)``.

    ``forward(x, features=True)`` returns a dict: ``logits``; ``embedding``, the 16-channel tensor fed to the
    head (after dropout, as SS-Net uses it); ``latent``, ``u5``; ``pyramid``, ``[u5, u6, u7, u8, x9]`` (x9 before
    dropout, 256 channels in all). Every spatial dimension must be divisible by 16.

    Args:
        in_channels, out_channels: image channels and classes (background included).
        n_filters: channels of the first stage (doubled at each down step).
        normalization: one of ``NORMALIZATIONS``.
        has_dropout: apply Dropout3d(0.5) to the bottleneck and before the head.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        normalization: str = "batchnorm",
        has_dropout: bool = True,
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")
        self.in_channels, self.out_channels, self.has_dropout = int(in_channels), int(out_channels), bool(has_dropout)
        f, norm = int(n_filters), normalization
        self.stage1 = VNetStage(1, in_channels, f, norm)
        self.down1 = VNetResample(f, 2 * f, norm, up=False)
        self.stage2 = VNetStage(2, 2 * f, 2 * f, norm)
        self.down2 = VNetResample(2 * f, 4 * f, norm, up=False)
        self.stage3 = VNetStage(3, 4 * f, 4 * f, norm)
        self.down3 = VNetResample(4 * f, 8 * f, norm, up=False)
        self.stage4 = VNetStage(3, 8 * f, 8 * f, norm)
        self.down4 = VNetResample(8 * f, 16 * f, norm, up=False)
        self.stage5 = VNetStage(3, 16 * f, 16 * f, norm)
        self.up5 = VNetResample(16 * f, 8 * f, norm, up=True)
        self.stage6 = VNetStage(3, 8 * f, 8 * f, norm)
        self.up6 = VNetResample(8 * f, 4 * f, norm, up=True)
        self.stage7 = VNetStage(3, 4 * f, 4 * f, norm)
        self.up7 = VNetResample(4 * f, 2 * f, norm, up=True)
        self.stage8 = VNetStage(2, 2 * f, 2 * f, norm)
        self.up8 = VNetResample(2 * f, f, norm, up=True)
        self.stage9 = VNetStage(1, f, f, norm)
        self.head = nn.Conv3d(f, out_channels, kernel_size=1)
        self.dropout = nn.Dropout3d(p=0.5)

    def forward(self, x: Tensor, features: bool = False) -> Union[Tensor, Dict[str, Union[Tensor, List[Tensor]]]]:
        if x.dim() != 5 or x.shape[2] % 16 != 0 or x.shape[3] % 16 != 0 or x.shape[4] % 16 != 0:
            raise ValueError(
                "UAMTVNet needs (B, C, H, W, D) with every spatial size divisible by 16, got " + str(list(x.shape))
            )
        x1 = self.stage1(x)
        x2 = self.stage2(self.down1(x1))
        x3 = self.stage3(self.down2(x2))
        x4 = self.stage4(self.down3(x3))
        x5 = self.stage5(self.down4(x4))
        if self.has_dropout:
            x5 = self.dropout(x5)
        u5 = self.up5(x5) + x4
        u6 = self.up6(self.stage6(u5)) + x3
        u7 = self.up7(self.stage7(u6)) + x2
        u8 = self.up8(self.stage8(u7)) + x1
        x9 = self.stage9(u8)
        embedding = self.dropout(x9) if self.has_dropout else x9
        logits = self.head(embedding)
        if not features:
            return logits
        return {"logits": logits, "embedding": embedding, "latent": u5, "pyramid": [u5, u6, u7, u8, x9]}

    @torch.jit.unused
    def forward_features(self, x: Tensor) -> Dict[str, Union[Tensor, List[Tensor]]]:
        """The feature dict of ``forward(x, features=True)``; methods should call ``network(x, features=True)``."""
        return self.forward(x, features=True)  # type: ignore[return-value]
