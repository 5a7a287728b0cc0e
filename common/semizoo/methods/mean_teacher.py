"""``MeanTeacher``: Tarvainen & Valpola, NeurIPS 2017 (arXiv:1703.01780), as the field's reference code runs it.

ACDC as SSL4MIS ``code/train_mean_teacher_2D.py`` @06df604, LA as UA-MT
``code/train_LA_meanteacher_certainty_unlabel.py`` @88ed29a without the uncertainty mask (meanteacher.md):

    student logits s = f([x_l; x_u]);  teacher logits t = f_ema(x_u + clamp(N(0, σ²), -c, c))   (no grad)
    loss = L_sup(s_l, y) + w(t) · mean((softmax(s_u) - softmax(t))²)
    w(t) = consistency · sigmoid_rampup((iteration + offset) // period, R), 0 before ``consistency_start``
    after the optimizer step: θ_ema ← α θ_ema + (1 - α) θ,  α = min(1 - 1/(iteration + 1), ema_decay)

The teacher stays in train mode (dropout on, BatchNorm on batch statistics) as in the reference code; only
its parameters are averaged. The maths lives in :mod:`semizoo.losses.consistency` and
:func:`semizoo.networks.ema_update_`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from ..losses.consistency import softmax_mse
from ..losses.segmentation import dice_ce_loss
from ..networks.utils import ema_decay, ema_update_
from ..schedules import stepped_sigmoid_rampup
from .base import Method, register, zero_like

__all__ = ["MeanTeacher"]


@register("mean_teacher")
class MeanTeacher(Method):
    """Mean Teacher method plugin.

    Args:
        network: the student network.
        consistency: maximum consistency weight (SSL4MIS and UA-MT: 0.1).
        consistency_rampup: ramp-up length R in ``period`` units (SSL4MIS 200.0, UA-MT 40.0).
        rampup_period: iterations per ramp-up step (150 in both reference scripts).
        rampup_offset: added to the iteration before ``// period``.
        consistency_start: iterations before which the consistency weight is 0 (SSL4MIS 1000, UA-MT 0).
        ema_decay: maximum EMA decay α (0.99).
        noise_std, noise_clip: Gaussian noise on the teacher input, clipped (0.1, 0.2).
        sup_loss: loss of logits and label maps; default ``dice_ce_loss(include_background=True)`` (SSL4MIS);
            UA-MT's LA loss is ``dice_ce_loss(include_background=False)``.
        image_key, label_key: batch keys.
    """

    def __init__(
        self,
        network: nn.Module,
        consistency: float = 0.1,
        consistency_rampup: float = 200.0,
        rampup_period: int = 150,
        rampup_offset: int = 0,
        consistency_start: int = 1000,
        ema_decay: float = 0.99,
        noise_std: float = 0.1,
        noise_clip: float = 0.2,
        sup_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__(network, image_key=image_key, label_key=label_key)
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay}.")
        if noise_std < 0 or noise_clip < 0:
            raise ValueError(f"noise_std and noise_clip must be >= 0, got {noise_std} and {noise_clip}.")
        self.consistency, self.consistency_rampup = float(consistency), float(consistency_rampup)
        self.rampup_period, self.rampup_offset = int(rampup_period), int(rampup_offset)
        self.consistency_start, self.ema_decay = int(consistency_start), float(ema_decay)
        self.noise_std, self.noise_clip = float(noise_std), float(noise_clip)
        self.sup_loss = dice_ce_loss() if sup_loss is None else sup_loss
        self.teacher = self.copy_network()

    def consistency_weight(self, iteration: int) -> float:
        """w(iteration): 0 before ``consistency_start``, then the stepped sigmoid ramp-up."""
        if iteration < self.consistency_start:
            return 0.0
        return stepped_sigmoid_rampup(
            iteration, self.consistency, self.consistency_rampup, self.rampup_period, self.rampup_offset
        )

    def teacher_noise(self, images: Tensor) -> Tensor:
        """``clamp(N(0, noise_std²), -noise_clip, noise_clip)`` of the images' shape."""
        return torch.clamp(torch.randn_like(images) * self.noise_std, -self.noise_clip, self.noise_clip)

    def train_step(self, labeled: Mapping[str, Tensor], unlabeled: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        images_l = self.batch_item(labeled, self.image_key, "labeled")
        labels = self.batch_item(labeled, self.label_key, "labeled")
        if unlabeled is None:
            loss_sup = self.sup_loss(self.network(images_l), labels)
            zero = zero_like(loss_sup)
            return {"loss": loss_sup, "loss_sup": loss_sup, "loss_cons": zero, "cons_weight": zero.clone()}
        images_u = self.batch_item(unlabeled, self.image_key, "unlabeled")
        n_labeled = images_l.shape[0]
        logits = self.network(torch.cat([images_l, images_u], dim=0))
        with torch.no_grad():
            teacher_logits = self.teacher(images_u + self.teacher_noise(images_u))
        loss_sup = self.sup_loss(logits[:n_labeled], labels)
        loss_cons = softmax_mse(logits[n_labeled:], teacher_logits)
        weight = self.consistency_weight(self.iteration)
        return {
            "loss": loss_sup + weight * loss_cons,
            "loss_sup": loss_sup,
            "loss_cons": loss_cons,
            "cons_weight": torch.tensor(weight, device=loss_sup.device),
        }

    def update_teacher(self, step: int) -> None:
        """EMA update after optimizer step ``step`` (0-based) with the warm-up decay."""
        ema_update_(self.teacher, self.network, ema_decay(step, self.ema_decay))

    def after_optimizer_step(self) -> None:
        self.update_teacher(self.iteration)
