"""Per-iteration learning-rate schedules of the reference code, as torch schedulers plus closed forms.

Attach the scheduler with MONAI's ``LrScheduleHandler(lr_scheduler, epoch_level=False)``, which steps it
after every iteration; iteration ``i`` (0-based) then trains with the closed-form value ``lr(i)``.

- poly (SSL4MIS): ``lr(i) = base · (1 - i / max_iterations)^power`` = ``torch.optim.lr_scheduler.PolynomialLR``.
- step (UA-MT, SS-Net LA): ``lr(i) = base · gamma^(i // step_size)`` = ``torch.optim.lr_scheduler.StepLR``.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, LRScheduler, PolynomialLR, StepLR

__all__ = ["poly_lr", "step_lr", "poly_scheduler", "step_scheduler", "constant_scheduler"]


def poly_lr(iteration: int, base_lr: float, max_iterations: int, power: float = 0.9) -> float:
    """``base_lr · (1 - iteration / max_iterations)^power`` (0 from ``max_iterations`` on)."""
    if max_iterations <= 0:
        raise ValueError(f"max_iterations must be positive, got {max_iterations}.")
    return float(base_lr) * max(0.0, 1.0 - min(int(iteration), int(max_iterations)) / int(max_iterations)) ** power


def step_lr(iteration: int, base_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """``base_lr · gamma^(iteration // step_size)``."""
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}.")
    return float(base_lr) * gamma ** (int(iteration) // int(step_size))


def poly_scheduler(optimizer: Optimizer, max_iterations: int, power: float = 0.9) -> LRScheduler:
    """torch ``PolynomialLR`` stepped per iteration (values of :func:`poly_lr`)."""
    if max_iterations <= 0:
        raise ValueError(f"max_iterations must be positive, got {max_iterations}.")
    return PolynomialLR(optimizer, total_iters=int(max_iterations), power=float(power))


def step_scheduler(optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> LRScheduler:
    """torch ``StepLR`` stepped per iteration (values of :func:`step_lr`)."""
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}.")
    return StepLR(optimizer, step_size=int(step_size), gamma=float(gamma))


def constant_scheduler(optimizer: Optimizer) -> LRScheduler:
    """A scheduler that keeps the base LR (SS-Net ACDC), so every config can attach one."""
    return ConstantLR(optimizer, factor=1.0, total_iters=0)
