"""Exponential-moving-average teachers (Tarvainen & Valpola 2017, arXiv:1703.01780).

``ema_update_`` is the update of SSL4MIS/UA-MT ``update_ema_variables``: parameters only (buffers such as
BatchNorm statistics are not averaged) with the warm-up decay ``min(1 - 1/(step + 1), decay)``, so the
teacher equals the student after the first step. ``EMATeacherHandler`` applies it after every iteration
for teachers that live outside a method plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from monai.utils import optional_import
from torch import nn

from ..methods.base import unwrap

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["ema_decay", "ema_update_", "EMATeacherHandler"]


def ema_decay(step: int, decay: float) -> float:
    """Warm-up decay ``min(1 - 1/(step + 1), decay)`` for the 0-based ``step`` just taken."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}.")
    return float(min(1.0 - 1.0 / (int(step) + 1), decay))


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """In place: ``θ_teacher ← α θ_teacher + (1 - α) θ_student`` for every parameter (not buffers).

    Raises:
        ValueError: when the two networks' parameter names differ.
    """
    student = unwrap(student)
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    if teacher_params.keys() != student_params.keys():
        diff = sorted(set(teacher_params) ^ set(student_params))
        raise ValueError(f"teacher and student parameters differ: {diff[:10]}.")
    for name, teacher_param in teacher_params.items():
        teacher_param.mul_(alpha).add_(student_params[name].detach(), alpha=1.0 - alpha)


class EMATeacherHandler:
    """Update ``teacher`` from ``student`` after every iteration with :func:`ema_decay` and :func:`ema_update_`.

    Args:
        teacher: the EMA copy (never optimized).
        student: the trained network (DDP wrappers are unwrapped).
        decay: the maximum decay α.
        warmup: use the warm-up ``min(1 - 1/(step + 1), decay)``; else always ``decay``.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, decay: float = 0.99, warmup: bool = True) -> None:
        ema_decay(0, decay)  # validates decay
        self.teacher, self.student, self.decay, self.warmup = teacher, student, float(decay), bool(warmup)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        step = engine.state.iteration - 1
        ema_update_(self.teacher, self.student, ema_decay(step, self.decay) if self.warmup else self.decay)
