"""Schedules of the iteration counter: consistency ramp-ups, WSSDL's alpha and learning rates.

The closed forms are pure (numbers in, float out) so methods can call them with ``method.iteration`` and tests
can pin them to values. The learning-rate schedules of the reference code also come as torch schedulers:
attach one with MONAI's ``LrScheduleHandler(lr_scheduler, epoch_level=False)``, which steps it after every
iteration, so iteration ``i`` (0-based) trains with the closed-form value ``lr(i)``:

- poly (SSL4MIS): ``lr(i) = base · (1 - i / max_iterations)^power`` = ``torch.optim.lr_scheduler.PolynomialLR``;
- step (UA-MT, SS-Net LA): ``lr(i) = base · gamma^(i // step_size)`` = ``torch.optim.lr_scheduler.StepLR``.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, LRScheduler, PolynomialLR, StepLR

__all__ = [
    "sigmoid_rampup",
    "stepped_sigmoid_rampup",
    "linear_rampup",
    "wssdl_alpha",
    "poly_lr",
    "step_lr",
    "poly_scheduler",
    "step_scheduler",
    "constant_scheduler",
    "cosine_temperature",
]


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Sigmoid-shaped ramp-up ``exp(-5 (1 - clip(current, 0, L) / L)^2)`` of Laine & Aila 2017 (arXiv:1610.02242).

    Returns 1.0 when ``rampup_length == 0`` (no ramp-up), as UA-MT/SSL4MIS ``ramps.sigmoid_rampup`` do.

    Raises:
        ValueError: when ``rampup_length`` is negative.
    """
    if rampup_length < 0:
        raise ValueError(f"rampup_length must be >= 0, got {rampup_length}.")
    if rampup_length == 0:
        return 1.0
    phase = 1.0 - min(max(float(current), 0.0), float(rampup_length)) / float(rampup_length)
    return float(math.exp(-5.0 * phase * phase))


def stepped_sigmoid_rampup(
    iteration: int, max_weight: float, rampup_length: float, period: int = 150, offset: int = 0
) -> float:
    """Consistency weight updated every ``period`` iterations, as SSL4MIS/UA-MT/SS-Net compute it.

    ``max_weight * sigmoid_rampup((iteration + offset) // period, rampup_length)``; ``iteration`` is 0-based.
    SS-Net's LA script counts from 1 (``offset=1``), its ACDC script from 0 (ssnet.md §5).
    """
    if period <= 0:
        raise ValueError(f"period must be a positive number of iterations, got {period}.")
    return float(max_weight) * sigmoid_rampup((int(iteration) + int(offset)) // int(period), rampup_length)


def linear_rampup(current: float, rampup_length: float) -> float:
    """Linear ramp-up ``clip(current / L, 0, 1)``; 1.0 when ``rampup_length == 0``."""
    if rampup_length < 0:
        raise ValueError(f"rampup_length must be >= 0, got {rampup_length}.")
    if rampup_length == 0:
        return 1.0
    return float(min(max(float(current) / float(rampup_length), 0.0), 1.0))


def wssdl_alpha(step: int) -> float:
    """WSSDL weak-loss scale ``1 - 0.99 * 0.9 ** (step // 2000)`` (official staircase, wssdl.md §5)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}.")
    return float(1.0 - 0.99 * 0.9 ** (int(step) // 2000))


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


def cosine_temperature(e: float, E: float, t_low: float, t_high: float = 1.0, period_frac: float = 1.0) -> float:
    """ACTION++ cosine temperature ``t_low + (t_high - t_low) · (1 + cos(2πe / (period_frac · E))) / 2``.

    The adaptive temperature of ACTION++ (You et al., MICCAI 2023; action.md §4-§5), as ``get_current_t`` in
    charlesyou999648/ACTION @ 77730a7 (``code/train_2D_action++.py``): ``t_high`` at ``e = 0``, ``t_low`` half a
    period later, period ``period_frac · E`` epochs. Epochs count iterations: ``e = iteration // iters_per_epoch``,
    ``E = max_iterations // iters_per_epoch + 1`` (30000 iterations per stage), with ``iters_per_epoch`` =
    ``⌊N_labelled / labelled_bs⌋`` in pre-training stage 2 and ``⌊n_unlabelled / B⌋`` in fine-tuning.
    Used for the pre-training ``Ts``/``Tt``, the ReCo τ ("ATS") and the TSC temperature.

    Raises:
        ValueError: when ``E`` or ``period_frac`` is not positive.
    """
    if E <= 0 or period_frac <= 0:
        raise ValueError(f"E and period_frac must be positive, got E={E} and period_frac={period_frac}.")
    phase = 2.0 * math.pi * float(e) / (float(period_frac) * float(E))
    return float(t_low) + (float(t_high) - float(t_low)) * (1.0 + math.cos(phase)) / 2.0
