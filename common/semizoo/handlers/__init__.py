"""Training handlers: EMA teachers, LR schedules, NaN guard and resumable checkpoints."""

from .checkpoint import AtomicCheckpointSaver, ResumeHandler, RNGState, TrainingCheckpointer, latest_checkpoint
from .ema import EMATeacherHandler, ema_decay, ema_update_
from .filters import every
from .lr import constant_scheduler, poly_lr, poly_scheduler, step_lr, step_scheduler
from .nan_guard import NaNGuard, NonFiniteLossError

__all__ = [
    "every",
    "EMATeacherHandler",
    "ema_decay",
    "ema_update_",
    "poly_lr",
    "step_lr",
    "poly_scheduler",
    "step_scheduler",
    "constant_scheduler",
    "NaNGuard",
    "NonFiniteLossError",
    "RNGState",
    "latest_checkpoint",
    "ResumeHandler",
    "AtomicCheckpointSaver",
    "TrainingCheckpointer",
]
