"""Selections for handlers configured from JSON: event filters and the handlers a DDP rank > 0 keeps.

A lambda in a config cannot see other config IDs, and a slice such as ``@train#handlers[:4]`` breaks silently when
a handler is added; these helpers select by what a handler does instead.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch.distributed as dist
from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler

from .progress import ProgressBar
from .training_figures import TrainingFigures

__all__ = ["every", "main_process_handlers", "WRITING_HANDLERS"]

# handlers that write files or logs: under DDP only rank 0 runs them (TrainingCheckpointer is not one of them:
# every rank must load a resumed checkpoint, and ignite's saver writes on rank 0 only)
WRITING_HANDLERS: tuple[type, ...] = (
    StatsHandler,
    TensorBoardStatsHandler,
    CheckpointSaver,
    ProgressBar,
    TrainingFigures,
)


def every(interval: int) -> Callable[[Any, int], bool]:
    """A ``filter(engine, event) -> bool`` true every ``interval`` events (e.g. ``StatsHandler.iteration_log``)."""
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}.")

    def _filter(engine: Any, event: int) -> bool:
        return event % interval == 0

    return _filter


def main_process_handlers(handlers: Sequence[Any] | None) -> list[Any]:
    """``handlers`` on rank 0 (or without ``torch.distributed``); on other ranks those that write nothing.

    A rank > 0 keeps the handlers every rank needs (NaN guard, LR schedule, validation, resumable checkpoints) and
    drops :data:`WRITING_HANDLERS` (MONAI's stats, TensorBoard and checkpoint savers and their subclasses, the
    progress bar and the training figures).
    """
    handlers = list(handlers or [])
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        return handlers
    return [handler for handler in handlers if not isinstance(handler, WRITING_HANDLERS)]
