"""Loss functions: pure functional cores plus thin ``nn.Module`` wrappers, one module per family."""

from .consistency import SoftmaxMSELoss, softmax_mse
from .segmentation import dice_ce_loss

__all__ = ["SoftmaxMSELoss", "softmax_mse", "dice_ce_loss"]
