"""SS-Net's heads and the network that carries them (ssnet.md §2; ycwu1997/SS-Net @c0a8bf6, read not copied)."""

from typing import Dict, List, Optional, Union

import torch
from torch import Tensor, nn

from ..losses.ssnet import class_separation_loss

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
    """``backbone`` plus :class:`SSNetHeads`, with every trainable use of the heads behind ``forward`` (DDP rule).

    - ``forward(x)``: the backbone's logits -- a plain segmenter for inferers, TorchScript and MONAI Label;
    - ``forward(x, features=True)``: the backbone's feature dict (``logits``, ``embedding``, ...);
    - ``forward(embedding, class_sep_labels=labels, memory=rows)``: SS-Net's class-separation term of ``(V, dim_in)``
      voxel embeddings with their classes against the per-class memory rows
      (:func:`semizoo.losses.class_separation_loss` on ``heads(embedding)``), so that under DDP the heads'
      gradients are synchronised like the backbone's. Not scriptable (training only).

    It is ``network_def`` of the SS-Net bundles, so ``models/model.pt`` holds backbone and heads.
    """

    def __init__(self, backbone: nn.Module, n_classes: int, dim_in: int = 16, feat_dim: int = 32) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = SSNetHeads(n_classes, dim_in=dim_in, feat_dim=feat_dim)

    def forward(
        self,
        x: Tensor,
        features: bool = False,
        class_sep_labels: Optional[Tensor] = None,
        memory: Optional[List[Tensor]] = None,
    ) -> Union[Tensor, Dict[str, Union[Tensor, List[Tensor]]]]:
        if class_sep_labels is not None:
            return self.class_separation(x, class_sep_labels, memory)
        return self.backbone(x, features)

    @torch.jit.unused
    def class_separation(self, embedding: Tensor, labels: Tensor, memory: Optional[List[Tensor]]) -> Tensor:
        """SS-Net's class-separation term of ``(V, dim_in)`` embeddings labelled ``(V,)`` (ssnet.md §5)."""
        heads = self.heads
        rows: List[Tensor] = [] if memory is None else memory
        return class_separation_loss(
            heads(embedding), labels, rows, heads.selector, heads.memory_selector, heads.n_classes
        )
