"""Network helpers shared by methods, handlers and tools: DDP unwrapping, frozen copies and EMA updates.

They live here, below ``methods`` and ``handlers``, so both import them without a cycle. ``ema_update_`` is the
update of SSL4MIS/UA-MT ``update_ema_variables`` (Tarvainen & Valpola 2017, arXiv:1703.01780): parameters only
(buffers such as BatchNorm statistics are not averaged) with the warm-up decay ``min(1 - 1/(step + 1), decay)``,
so the teacher equals the student after the first step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["unwrap", "frozen_copy", "ema_decay", "ema_update_"]


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside DDP/DataParallel wrappers (``network.module``), else ``network``."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


def frozen_copy(network: nn.Module) -> nn.Module:
    """A deep copy of the unwrapped ``network`` whose parameters need no gradient (e.g. an EMA teacher)."""
    copied = copy.deepcopy(unwrap(network))
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    return copied


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
