"""Consistency losses between a student and a teacher prediction.

Used by Mean Teacher (``semizoo.methods.MeanTeacher``), as SSL4MIS ``code/utils/losses.py``
(``softmax_mse_loss``) and UA-MT compute it: the squared difference of the two softmax maps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["softmax_mse", "SoftmaxMSELoss"]

_REDUCTIONS = ("mean", "sum", "none")


def softmax_mse(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """``(softmax(s) - softmax(t))²`` over classes and voxels; only the student receives gradients.

    Args:
        student_logits: ``(B, C, *spatial)``.
        teacher_logits: same shape; detached here.
        mask: optional ``(B, 1, *spatial)`` weights (UA-MT's certainty mask); with ``"mean"`` the result is
            ``Σ mask·d / (C · Σ mask)``, the mean over the masked voxels and all classes.
        reduction: ``"mean"`` (over every element), ``"sum"`` or ``"none"`` (elementwise map).

    Raises:
        ValueError: for unequal shapes, a mask that does not broadcast, or an unknown reduction.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student and teacher logits differ in shape: "
            f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}."
        )
    distance = (torch.softmax(student_logits, dim=1) - torch.softmax(teacher_logits.detach(), dim=1)) ** 2
    if mask is None:
        if reduction == "mean":
            return distance.mean()
        return distance.sum() if reduction == "sum" else distance
    if mask.dim() != distance.dim() or mask.shape[1] != 1 or mask.shape[0] != distance.shape[0]:
        raise ValueError(f"mask must be (B, 1, *spatial) for logits {tuple(distance.shape)}, got {tuple(mask.shape)}.")
    weighted = distance * mask
    if reduction == "mean":
        return weighted.sum() / (distance.shape[1] * mask.sum()).clamp_min(1e-16)
    return weighted.sum() if reduction == "sum" else weighted


class SoftmaxMSELoss(nn.Module):
    """Module form of :func:`softmax_mse`."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
        self.reduction = reduction

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
        return softmax_mse(student_logits, teacher_logits, mask=mask, reduction=self.reduction)
