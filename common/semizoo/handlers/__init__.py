"""Every handler semizoo adds to MONAI's: NaN guard, resumable checkpoints, validation schedule, evaluation report,
the segmentation metric for evaluators, progress bar, training figures and handler selections (``every``,
``main_process_handlers``)."""

from .checkpoint import (
    AtomicCheckpointSaver,
    ResumeHandler,
    RNGState,
    StageLoader,
    StopOnSignal,
    TrainingCheckpointer,
    TrainingInterrupted,
    latest_checkpoint,
)
from .detection_report import CorLocMetric, DetectionReport, DetectionWriter
from .filters import WRITING_HANDLERS, every, main_process_handlers
from .nan_guard import NaNGuard, NonFiniteLossError
from .progress import ProgressBar
from .report import SegmentationReport, summarise
from .segmentation_metric import SegmentationMetricHandler
from .training_figures import TrainingFigures
from .validation import ScheduledValidationHandler
from .vendor_report import VendorDiceReport

__all__ = [
    "every",
    "main_process_handlers",
    "WRITING_HANDLERS",
    "NaNGuard",
    "NonFiniteLossError",
    "RNGState",
    "latest_checkpoint",
    "ResumeHandler",
    "AtomicCheckpointSaver",
    "TrainingCheckpointer",
    "TrainingInterrupted",
    "StopOnSignal",
    "StageLoader",
    "SegmentationReport",
    "VendorDiceReport",
    "summarise",
    "SegmentationMetricHandler",
    "ScheduledValidationHandler",
    "CorLocMetric",
    "DetectionReport",
    "DetectionWriter",
    "ProgressBar",
    "TrainingFigures",
]
