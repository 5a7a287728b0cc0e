"""Loss functions: pure functional cores plus thin ``nn.Module`` wrappers, one module per family."""

from .consistency import SoftmaxMSELoss, softmax_mse
from .segmentation import dice_ce_loss
from .ssnet import ForegroundDiceLoss, binary_dice_loss, class_separation_loss, soft_dice_loss, vat_lds_loss

__all__ = [
    "SoftmaxMSELoss",
    "softmax_mse",
    "dice_ce_loss",
    "binary_dice_loss",
    "soft_dice_loss",
    "ForegroundDiceLoss",
    "vat_lds_loss",
    "class_separation_loss",
]
