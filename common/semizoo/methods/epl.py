"""``EPL``: Yao, Hu & Li, "Enhancing pseudo label quality for semi-supervised domain-generalized medical image
segmentation", AAAI 2022 (epl.md §4), as the official ``mms_train.py`` runs it.

The network is a :class:`semizoo.networks.NetworkPair` (``l`` = ``"left"``, ``r`` = ``"right"``). One step::

    M = CutMix box mask;  um = u0 (1 - M) + u1 M;  fm = f0 (1 - M) + f1 M          (f = Fourier twin of u)
    no grad, train mode, per network k in (l, r): a0 = k(u0), a1 = k(u1), b0 = k(f0), b1 = k(f1)
        Y_k = argmax_c(e0 (1 - M) + e1 M),  e = (a + b) / 2                         (cps_pseudo_labels)
    with grad, per network: s_k = k(um), g_k = k(fm)
    L_cps = confidence_aware_cps_loss(s_l, g_l, s_r, g_r, Y_l, Y_r)  [+ γ dual_level_kl(s_l, g_l, s_r, g_r)]
    L_sup = sup_loss(l(x), y) + sup_loss(r(x), y)
    loss = L_sup + β L_cps

The calls run in exactly this order, every one in train mode and through the pair's forward: batch-norm running
statistics depend on it (epl.md §4). Each network has its own optimizer in the bundles (AdamW), stepped together by
the trainer. With ``cutmix=False`` the mask is 0, the unlabeled batch is u0 alone (u1 is never read) and
``um = u0``. Without an unlabeled batch the step is ``L_sup`` only.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from monai.losses import DiceLoss
from torch import Tensor, nn

from ..losses.epl import confidence_aware_cps_loss, cps_pseudo_labels, dual_level_kl
from ..schedules import sigmoid_rampup
from ..transforms.fourier import cutmix_box_mask
from .base import Method, register, zero_like

__all__ = ["EPL", "dice_sum_loss"]

BRANCHES = ("left", "right")


def dice_sum_loss(include_background: bool = True) -> DiceLoss:
    """EPL's supervised loss: ``Σ_c [1 - (2 ΣPT + 0.1) / (ΣP + ΣT + 0.1)]`` over the batch and pixels of softmax
    probabilities and one-hot labels (official ``DiceLoss`` with smooth 0.1, summed over channels).

    ``include_background=False`` drops channel 0 (BUSI: the lesion channel only, as the official binary setup).
    """
    return DiceLoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        smooth_nr=0.1,
        smooth_dr=0.1,
        reduction="sum",
    )


@register("epl")
class EPL(Method):
    """EPL method plugin: confidence-aware cross pseudo supervision with Fourier twins and CutMix.

    Args:
        network: a :class:`semizoo.networks.NetworkPair` (possibly DDP-wrapped).
        beta: weight β of the CPS term (3).
        cutmix: mix the two unlabeled halves with CutMix boxes (official); ``False`` uses the whole unlabeled batch
            as u0 and no mask.
        dual_level: add ``gamma · dual_level_kl`` (the BUSI reproduction's dual-level variant).
        gamma: weight of the dual-level term (1).
        per_pixel: the paper's per-pixel e^{-V} weighting instead of the code's batch mean.
        ce_on: ``"original"`` (code) or ``"ensemble"`` (paper) for the CPS cross-entropy.
        pseudo_from: ``"logits"`` (code) or ``"probs"`` (paper) view averaging for the pseudo labels.
        n_boxes, area_range: CutMix boxes per mask (3) and their area range ((0.25, 0.5)).
        beta_rampup: iterations of a sigmoid ramp-up of β (Laine & Aila's ``sigmoid_rampup``); 0 (default, official
            code and paper): β from the first step. Not part of EPL; an option for runs that start from random
            weights, where the two networks otherwise agree on their initial over-segmentation.
        sup_loss: loss of logits and label maps per network; default :func:`dice_sum_loss` (all channels).
        image_key, label_key: batch keys; fourier_key: the key of the unlabeled images' Fourier twins.
    """

    supervised_fallback = True

    def __init__(
        self,
        network: nn.Module,
        beta: float = 3.0,
        cutmix: bool = True,
        dual_level: bool = False,
        gamma: float = 1.0,
        per_pixel: bool = False,
        ce_on: str = "original",
        pseudo_from: str = "logits",
        n_boxes: int = 3,
        area_range: tuple[float, float] = (0.25, 0.5),
        sup_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        image_key: str = "image",
        label_key: str = "label",
        fourier_key: str = "image_fourier",
        beta_rampup: float = 0.0,
    ) -> None:
        super().__init__(network, image_key=image_key, label_key=label_key)
        if ce_on not in ("original", "ensemble"):
            raise ValueError(f"ce_on must be 'original' or 'ensemble', got {ce_on!r}.")
        if pseudo_from not in ("logits", "probs"):
            raise ValueError(f"pseudo_from must be 'logits' or 'probs', got {pseudo_from!r}.")
        if beta < 0 or gamma < 0 or beta_rampup < 0:
            raise ValueError(f"beta, gamma and beta_rampup must be >= 0, got {beta}, {gamma} and {beta_rampup}.")
        self.beta_rampup = float(beta_rampup)
        self.beta, self.gamma = float(beta), float(gamma)
        self.cutmix, self.dual_level, self.per_pixel = bool(cutmix), bool(dual_level), bool(per_pixel)
        self.ce_on, self.pseudo_from = ce_on, pseudo_from
        self.n_boxes, self.area_range = int(n_boxes), (float(area_range[0]), float(area_range[1]))
        self.sup_loss = dice_sum_loss() if sup_loss is None else sup_loss
        self.fourier_key = fourier_key

    def unlabeled_streams(self, unlabeled: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(u0, f0, u1, f1)`` from the unlabeled batch: its two halves with CutMix, else all of it and ``None``."""
        images = self.batch_item(unlabeled, self.image_key, "unlabeled")
        twins = self.batch_item(unlabeled, self.fourier_key, "unlabeled")
        if twins.shape != images.shape:
            raise ValueError(f"{self.fourier_key!r} {tuple(twins.shape)} must match the images {tuple(images.shape)}.")
        if not self.cutmix:
            return images, twins, None, None
        if images.shape[0] % 2:
            raise ValueError(
                f"with cutmix the unlabeled batch holds u0 and u1 (two halves): its size must be even, got "
                f"{images.shape[0]}."
            )
        half = images.shape[0] // 2
        return images[:half], twins[:half], images[half:], twins[half:]

    def pseudo_labels(self, u0: Tensor, f0: Tensor, u1: Tensor | None, f1: Tensor | None, mask: Tensor) -> list[Tensor]:
        """Each network's hard labels on the mixed batch, from no-grad train-mode passes in the official order."""
        labels = []
        with torch.no_grad():
            for branch in BRANCHES:
                if u1 is None:
                    a0 = self.network(u0, branch=branch)
                    b0 = self.network(f0, branch=branch)
                    a1, b1 = a0, b0
                else:
                    a0 = self.network(u0, branch=branch)
                    a1 = self.network(u1, branch=branch)
                    b0 = self.network(f0, branch=branch)
                    b1 = self.network(f1, branch=branch)
                labels.append(cps_pseudo_labels(a0, b0, a1, b1, mask, self.pseudo_from))
        return labels

    def train_step(self, labeled: Mapping[str, Tensor], unlabeled: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        images_l = self.batch_item(labeled, self.image_key, "labeled")
        labels = self.batch_item(labeled, self.label_key, "labeled")
        terms: dict[str, Tensor] = {}
        loss_cps = None
        if unlabeled is not None:
            u0, f0, u1, f1 = self.unlabeled_streams(unlabeled)
            if u1 is None:
                mask = torch.zeros((u0.shape[0], 1, *u0.shape[2:]), device=u0.device, dtype=u0.dtype)
                mixed, mixed_twin = u0, f0
            else:
                mask = cutmix_box_mask(u0.shape[0], tuple(u0.shape[2:]), self.n_boxes, self.area_range)
                mask = mask.to(device=u0.device, dtype=u0.dtype)
                mixed, mixed_twin = u0 * (1 - mask) + u1 * mask, f0 * (1 - mask) + f1 * mask
            pseudo_l, pseudo_r = self.pseudo_labels(u0, f0, u1, f1, mask)
            s_l, g_l = self.network(mixed, branch="left"), self.network(mixed_twin, branch="left")
            s_r, g_r = self.network(mixed, branch="right"), self.network(mixed_twin, branch="right")
            loss_cps = confidence_aware_cps_loss(
                s_l, g_l, s_r, g_r, pseudo_l, pseudo_r, per_pixel=self.per_pixel, ce_on=self.ce_on
            )
            if self.dual_level:
                terms["loss_dual"] = dual_level_kl(s_l, g_l, s_r, g_r)
                loss_cps = loss_cps + self.gamma * terms["loss_dual"]
        loss_sup_l = self.sup_loss(self.network(images_l, branch="left"), labels)
        loss_sup_r = self.sup_loss(self.network(images_l, branch="right"), labels)
        loss_sup = loss_sup_l + loss_sup_r
        if loss_cps is None:
            loss_cps = zero_like(loss_sup)
        weight = self.cps_weight(self.iteration)
        terms.update(
            {
                "loss": loss_sup + weight * loss_cps,
                "loss_sup": loss_sup,
                "loss_sup_left": loss_sup_l,
                "loss_sup_right": loss_sup_r,
                "loss_cps": loss_cps,
            }
        )
        if self.dual_level and "loss_dual" not in terms:
            terms["loss_dual"] = zero_like(loss_sup)
        return terms

    def cps_weight(self, iteration: int) -> float:
        """β at ``iteration``: constant (official), or ``β · sigmoid_rampup(iteration, beta_rampup)``."""
        return self.beta * sigmoid_rampup(iteration, self.beta_rampup)

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, cutmix={self.cutmix}, dual_level={self.dual_level}, gamma={self.gamma}, "
            f"per_pixel={self.per_pixel}, ce_on={self.ce_on!r}, pseudo_from={self.pseudo_from!r}"
        )
