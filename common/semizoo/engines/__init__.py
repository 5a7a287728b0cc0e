"""Engines: the semi-supervised trainer and the papers' inferers."""

from .detection import DetectionEvaluator, pseudo_box_lists
from .inferers import SliceWiseInferer, StridedSlidingWindowInferer, slice_wise_inferer, strided_sliding_window_inferer
from .trainer import SemiSupervisedTrainer, to_device

__all__ = [
    "SemiSupervisedTrainer",
    "to_device",
    "StridedSlidingWindowInferer",
    "strided_sliding_window_inferer",
    "SliceWiseInferer",
    "slice_wise_inferer",
    "DetectionEvaluator",
    "pseudo_box_lists",
]
