"""Segmentation (medpy's conventions) and detection (wssdl.md §5) metrics, bootstrap CIs, a MONAI cumulative metric."""

from .bootstrap import bootstrap_ci, bootstrap_ci_diff
from .confusion import confusion_counts, confusion_summary
from .cumulative import SegmentationMetric
from .detection import corloc, corloc_difference, false_positives_per_image, image_classification
from .epl import epl_slice_dice, vendor_average, vendor_summary
from .segmentation import METRIC_NAMES, binary_metrics, multiclass_metrics, surface_distances

__all__ = [
    "METRIC_NAMES",
    "binary_metrics",
    "multiclass_metrics",
    "surface_distances",
    "bootstrap_ci",
    "bootstrap_ci_diff",
    "confusion_counts",
    "confusion_summary",
    "SegmentationMetric",
    "epl_slice_dice",
    "vendor_summary",
    "vendor_average",
    "corloc",
    "corloc_difference",
    "false_positives_per_image",
    "image_classification",
]
