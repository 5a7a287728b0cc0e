"""``SegmentationMetric``: :func:`semizoo.metrics.binary_metrics` per case and class as a MONAI cumulative metric.

A ``CumulativeIterationMetric``: every iteration it scores each case of the batch per class (medpy conventions,
optionally in mm from the label's ``pixdim``), computing only its one metric (Dice for model selection extracts no
surfaces), and buffers a ``(B, n_classes)`` tensor; ``aggregate`` returns the mean over cases and classes, ignoring
undefined (nan) values. :class:`semizoo.handlers.SegmentationMetricHandler` attaches it to an evaluator.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import MetricReduction

from .segmentation import EMPTY_RULES, METRIC_NAMES, _foreground_classes, binary_metrics

__all__ = ["SegmentationMetric"]


def _label_map(tensor: torch.Tensor) -> np.ndarray:
    """``(C, *spatial)`` one-hot/probabilities -> argmax; ``(1, *spatial)`` labels -> squeezed integers."""
    array = tensor.detach().cpu()
    array = array.argmax(0) if array.shape[0] > 1 else array[0]
    return array.numpy().astype(np.int64)


def _spacing_of(tensor: torch.Tensor) -> tuple[float, ...] | None:
    pixdim = getattr(tensor, "pixdim", None)
    if pixdim is None:
        return None
    return tuple(float(s) for s in torch.as_tensor(pixdim).flatten().tolist())


class SegmentationMetric(CumulativeIterationMetric):
    """Per-case, per-class ``metric_name`` of :func:`binary_metrics`.

    Args:
        metric_name: one of ``dice, jaccard, hd95, asd, assd``.
        classes: class count including background, or the labels to score.
        empty: empty-mask rule of :func:`binary_metrics`.
        use_spacing: read the voxel size from ``y.pixdim`` (MONAI ``MetaTensor``) and report mm.
        reduction: MONAI reduction of ``aggregate`` (``mean``: nan-ignoring mean over cases and classes).
    """

    def __init__(
        self,
        metric_name: str = "dice",
        classes: int | Sequence[int] = 2,
        empty: str = "explicit",
        use_spacing: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
    ) -> None:
        super().__init__()
        if metric_name not in METRIC_NAMES:
            raise ValueError(f"metric_name must be one of {METRIC_NAMES}, got {metric_name!r}.")
        if empty not in EMPTY_RULES:
            raise ValueError(f"empty must be one of {EMPTY_RULES}, got {empty!r}.")
        self.metric_name, self.labels = metric_name, _foreground_classes(classes)
        self.empty, self.use_spacing, self.reduction = empty, bool(use_spacing), reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if y is None:
            raise ValueError("SegmentationMetric needs the reference y.")
        if y_pred.shape[0] != y.shape[0] or y_pred.shape[2:] != y.shape[2:]:
            raise ValueError(f"y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)} differ in batch or spatial size.")
        rows = []
        for index in range(y_pred.shape[0]):
            pred, ref = _label_map(y_pred[index]), _label_map(y[index])
            spacing = _spacing_of(y[index]) if self.use_spacing else None
            if spacing is not None:
                spacing = spacing[: pred.ndim]
            rows.append(
                [
                    binary_metrics(pred == c, ref == c, spacing=spacing, empty=self.empty, metrics=(self.metric_name,))[
                        self.metric_name
                    ]
                    for c in self.labels
                ]
            )
        return torch.tensor(rows, dtype=torch.float64)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("SegmentationMetric has no buffered results to aggregate.")
        if (reduction or self.reduction) in (MetricReduction.NONE, "none"):
            return data
        return torch.as_tensor(np.nanmean(data.numpy()) if data.numel() else float("nan"))
