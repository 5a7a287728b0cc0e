"""``NetworkPair``: two segmenters trained side by side (cross pseudo supervision, EPL; epl.md §2, §4, §7).

One module holds both networks, so the trainer, checkpoints, DDP and ``ckpt_export`` see one network:

- ``forward(x, branch="left")`` / ``forward(x, branch="right")``: that network's logits; methods call these through
  the (possibly DDP-wrapped) pair, as :class:`semizoo.methods.Method` requires;
- ``forward(x)``: the test-time ensemble as log-probabilities, ``log((softmax(l(x)) + softmax(r(x))) / 2)``.
  ``softmax`` of it is EPL's averaged probability map and its argmax the averaged prediction, so inferers,
  TorchScript and MONAI Label use the pair like any segmenter.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["NetworkPair"]


class NetworkPair(nn.Module):
    """Two networks with the same output classes; plain ``forward`` is their probability-averaged ensemble.

    Args:
        left, right: the two networks (logits ``(B, K, *S)``). Their parameters must be distinct objects.

    Raises:
        ValueError: ``left`` and ``right`` share parameters (the same module passed twice).
    """

    def __init__(self, left: nn.Module, right: nn.Module) -> None:
        super().__init__()
        if left is right or {id(p) for p in left.parameters()} & {id(p) for p in right.parameters()}:
            raise ValueError("NetworkPair needs two independent networks; left and right share parameters.")
        self.left, self.right = left, right

    def forward(self, x: Tensor, branch: Optional[str] = None) -> Tensor:
        if branch is None:
            log_p = torch.logaddexp(torch.log_softmax(self.left(x), dim=1), torch.log_softmax(self.right(x), dim=1))
            return log_p - math.log(2.0)
        if branch == "left":
            return self.left(x)
        if branch == "right":
            return self.right(x)
        raise ValueError("branch must be None, 'left' or 'right', got " + branch + ".")
