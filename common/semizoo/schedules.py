"""Closed-form schedules of iteration counters: consistency ramp-ups and WSSDL's alpha.

All functions are pure (numbers in, float out) so handlers and methods can call them with
``method.iteration`` and tests can pin them to values.
"""

from __future__ import annotations

import math

__all__ = ["sigmoid_rampup", "stepped_sigmoid_rampup", "linear_rampup", "wssdl_alpha"]


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
