"""``TF1Adam``: Adam with TensorFlow 1's placement of epsilon (wssdl.md §4, the official WSSDL optimizer).

TensorFlow 1's ``AdamOptimizer`` updates ``θ -= lr·√(1−β2^t)/(1−β1^t) · m / (√v + ε)``: ε is added to the *uncorrected*
``√v``. torch's Adam adds ε after bias correction: ``θ -= lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε')``. Multiplying torch's
fraction by ``√(1−β2^t)`` shows both are equal when ``ε' = ε/√(1−β2^t)``. With WSSDL's ε = 0.1 this is 3.2 at the first
step, 0.32 at step 100 and 0.13 at step 1000: an implicit warm-up the official training depends on.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
from torch import nn

__all__ = ["TF1Adam", "decay_weights_only"]


class TF1Adam(torch.optim.Adam):
    """torch Adam with the per-step ε of TensorFlow 1 (``ε_t = ε/√(1−β2^t)``), for one group-wide step count.

    The step count ``t`` is kept per parameter group (``group["tf_step"]``, saved in the optimizer state dict); every
    parameter of a group must receive a gradient at every step (the methods' zero-gradient anchor ensures it).

    Args:
        params: parameters or parameter groups.
        lr, betas, weight_decay: as ``torch.optim.Adam`` (L2 added to the gradient, as TensorFlow's regulariser).
        eps: TensorFlow's ε (WSSDL: 0.1).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 0.1,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        for group in self.param_groups:
            group.setdefault("tf_eps", group["eps"])
            group.setdefault("tf_step", 0)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):  # type: ignore[override]
        for group in self.param_groups:
            group.setdefault("tf_eps", group["eps"])
            group["tf_step"] = int(group.get("tf_step", 0)) + 1
            group["eps"] = group["tf_eps"] / math.sqrt(1.0 - group["betas"][1] ** group["tf_step"])
        return super().step(closure)


def decay_weights_only(network: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: conv/linear weights with ``weight_decay``, everything else (biases) without.

    The official WSSDL code adds ``weight_decay·½‖w‖²`` of the weights to the loss, i.e. ``weight_decay·w`` to their
    gradients (torch Adam's ``weight_decay``); biases are not regularised. Frozen parameters are left out.
    """
    decayed, plain = [], []
    for module in network.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            is_weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            (decayed if is_weight else plain).append(parameter)
    return [{"params": decayed, "weight_decay": float(weight_decay)}, {"params": plain, "weight_decay": 0.0}]
