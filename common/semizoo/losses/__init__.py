"""Loss functions: pure functional cores plus thin ``nn.Module`` wrappers, one module per family."""

from .action import (
    ReCoLoss,
    SoftLabelKLLoss,
    WeightedPseudoLabelCE,
    queue_logits,
    reco_loss,
    soft_label_kl,
    weighted_pseudo_label_ce,
)
from .consistency import SoftmaxMSELoss, softmax_mse
from .epl import confidence_aware_cps_loss, cps_pseudo_labels, dual_level_kl, kl_variance
from .segmentation import dice_ce_loss
from .ssnet import ForegroundDiceLoss, binary_dice_loss, class_separation_loss, soft_dice_loss, vat_lds_loss
from .tsc import load_or_create_centres, regular_simplex_centres, tsc_loss, uniform_hypersphere_centres
from .wssdl import (
    class_weights_from_labels,
    mil_weak_loss,
    official_rcnn_box_loss,
    official_rpn_box_loss,
    select_mass_of_interest,
)

__all__ = [
    "SoftmaxMSELoss",
    "softmax_mse",
    "dice_ce_loss",
    "binary_dice_loss",
    "soft_dice_loss",
    "ForegroundDiceLoss",
    "vat_lds_loss",
    "class_separation_loss",
    "queue_logits",
    "soft_label_kl",
    "weighted_pseudo_label_ce",
    "reco_loss",
    "SoftLabelKLLoss",
    "WeightedPseudoLabelCE",
    "ReCoLoss",
    "tsc_loss",
    "uniform_hypersphere_centres",
    "regular_simplex_centres",
    "load_or_create_centres",
    "kl_variance",
    "confidence_aware_cps_loss",
    "dual_level_kl",
    "cps_pseudo_labels",
    "select_mass_of_interest",
    "mil_weak_loss",
    "official_rpn_box_loss",
    "official_rcnn_box_loss",
    "class_weights_from_labels",
]
