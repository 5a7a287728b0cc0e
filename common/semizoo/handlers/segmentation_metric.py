"""``SegmentationMetricHandler``: :class:`semizoo.metrics.SegmentationMetric` as an ignite metric for evaluators."""

from __future__ import annotations

from typing import Callable, Sequence

from monai.handlers import IgniteMetricHandler

from ..metrics.cumulative import SegmentationMetric

__all__ = ["SegmentationMetricHandler"]


class SegmentationMetricHandler(IgniteMetricHandler):
    """Ignite metric for MONAI evaluators computing :class:`SegmentationMetric` (e.g. ``val_mean_dice``).

    Args:
        metric_name, classes, empty, use_spacing: as :class:`SegmentationMetric`.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: keep per-case values in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        metric_name: str = "dice",
        classes: int | Sequence[int] = 2,
        empty: str = "explicit",
        use_spacing: bool = False,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = SegmentationMetric(metric_name, classes, empty=empty, use_spacing=use_spacing)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
