"""SS-Net's heads and the network that carries them (ssnet.md §2; ycwu1997/SS-Net @c0a8bf6, read not copied)."""

from __future__ import annotations

from typing import Dict, List, Union

from torch import Tensor, nn

__all__ = ["SSNetHeads", "SSNetNetwork"]


def _mlp(dim_in: int, dim_hidden: int, dim_out: int, activation: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim_in, dim_hidden), nn.BatchNorm1d(dim_hidden), activation, nn.Linear(dim_hidden, dim_out)
    )


class SSNetHeads(nn.Module):
    """Projection and prediction MLPs plus per-class selectors of the class-separation term.

    ``projection``: Linear(dim_in, feat) → BN → ReLU → Linear(feat, feat); ``prediction``: the same on ``feat``;
    ``selector[c]`` and ``memory_selector[c]``: Linear(feat, feat) → BN → LeakyReLU(0.2) → Linear(feat, 1).
    Created in that order (seeded-init parity with the official code, and its key order).
    """

    def __init__(self, n_classes: int, dim_in: int = 16, feat_dim: int = 32) -> None:
        super().__init__()
        self.n_classes = int(n_classes)
        self.projection = _mlp(dim_in, feat_dim, feat_dim, nn.ReLU())
        self.prediction = _mlp(feat_dim, feat_dim, feat_dim, nn.ReLU())
        self.selector = nn.ModuleList([_mlp(feat_dim, feat_dim, 1, nn.LeakyReLU(0.2)) for _ in range(n_classes)])
        self.memory_selector = nn.ModuleList([_mlp(feat_dim, feat_dim, 1, nn.LeakyReLU(0.2)) for _ in range(n_classes)])

    def forward(self, embedding: Tensor) -> Tensor:
        """Queries ``prediction(projection(e))`` of ``(N, dim_in)`` voxel embeddings."""
        return self.prediction(self.projection(embedding))


class SSNetNetwork(nn.Module):
    """``backbone`` plus :class:`SSNetHeads`; ``forward`` is the backbone's (logits, or features with ``features``).

    It is ``network_def`` of the SS-Net bundles, so ``models/model.pt`` holds backbone and heads, and it stays a
    plain segmenter for inferers, TorchScript and MONAI Label.
    """

    def __init__(self, backbone: nn.Module, n_classes: int, dim_in: int = 16, feat_dim: int = 32) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = SSNetHeads(n_classes, dim_in=dim_in, feat_dim=feat_dim)

    def forward(self, x: Tensor, features: bool = False) -> Union[Tensor, Dict[str, Union[Tensor, List[Tensor]]]]:
        return self.backbone(x, features)
