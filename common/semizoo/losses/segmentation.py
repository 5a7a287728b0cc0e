"""Supervised segmentation losses of the reference code, expressed as MONAI losses.

SSL4MIS/UA-MT train with ``0.5 · (CE + Dice)`` where Dice uses squared denominators, smooth 1e-5 and
pools the batch (SSL4MIS ``code/utils/losses.py`` ``DiceLoss._dice_loss``; UA-MT ``dice_loss``); MONAI's
``DiceCELoss`` with the flags below computes the same numbers (pinned in ``tests/losses``).
"""

from __future__ import annotations

from monai.losses import DiceCELoss

__all__ = ["dice_ce_loss"]


def dice_ce_loss(include_background: bool = True, smooth: float = 1e-5) -> DiceCELoss:
    """``0.5·CE + 0.5·Dice`` on logits ``(B, C, *spatial)`` and label maps ``(B, 1, *spatial)``.

    Args:
        include_background: average Dice over all classes (SSL4MIS, ACDC) or the foreground ones only
            (UA-MT, LA: class 1).
        smooth: numerator and denominator smoothing of Dice.
    """
    return DiceCELoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        squared_pred=True,
        smooth_nr=smooth,
        smooth_dr=smooth,
        batch=True,
        lambda_dice=0.5,
        lambda_ce=0.5,
    )
