"""Percentile-bootstrap confidence intervals of a mean (wssdl.md §5, evaluation.md).

The algorithm is fixed so that published intervals can be reproduced exactly: numpy's
``default_rng(seed)`` draws an ``(n_resamples, n)`` index matrix, the resampled means' percentiles
(linear interpolation) give the interval. The paired version reuses the same indices for both vectors.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_ci", "bootstrap_ci_diff"]


def _as_vector(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}.")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains nan; drop or count undefined cases before bootstrapping.")
    return array


def _indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}.")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _interval(means: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    low, high = np.percentile(means, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(low), float(high)


def bootstrap_ci(values, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the sample mean and its percentile-bootstrap interval at ``level``."""
    array = _as_vector(values, "values")
    means = array[_indices(array.size, n_resamples, seed)].mean(axis=1)
    return (float(array.mean()), *_interval(means, level))


def bootstrap_ci_diff(a, b, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap of ``mean(a) - mean(b)`` over the same cases: ``(difference, low, high)``."""
    first, second = _as_vector(a, "a"), _as_vector(b, "b")
    if first.shape != second.shape:
        raise ValueError(f"paired vectors must have the same length, got {first.size} and {second.size}.")
    idx = _indices(first.size, n_resamples, seed)
    means = first[idx].mean(axis=1) - second[idx].mean(axis=1)
    return (float(first.mean() - second.mean()), *_interval(means, level))
