"""EPL's evaluation protocol (epl.md §7): slice Dice over the foreground classes flattened together, per-patient
means, per-vendor mean ± sample std, and the average over vendors ± population std."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["epl_slice_dice", "vendor_summary", "vendor_average"]


def epl_slice_dice(pred: np.ndarray, ref: np.ndarray, smooth: float = 1e-4, slice_axis: int = 0) -> np.ndarray:
    """Dice of every slice, with all foreground classes' one-hot masks flattened into one vector (official).

    ``(2⟨x, y⟩ + smooth) / (Σx + Σy + smooth)`` where ``x``, ``y`` are the one-hot masks of classes ≥ 1: ``⟨x, y⟩``
    counts the pixels where both agree on a foreground class. A slice where both are empty scores 1.

    Args:
        pred, ref: label maps of the same shape, ``(Z, Y, X)`` (or ``(Y, X)``: one slice).
        smooth: the official 1e-4.
        slice_axis: the slice axis of 3-D maps.

    Returns:
        ``(n_slices,)`` float64.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred {pred.shape} and ref {ref.shape} differ.")
    if pred.ndim == 2:
        pred, ref = pred[None], ref[None]
        slice_axis = 0
    axes = tuple(a for a in range(pred.ndim) if a != slice_axis)
    overlap = ((pred == ref) & (ref > 0)).sum(axis=axes)
    total = (pred > 0).sum(axis=axes) + (ref > 0).sum(axis=axes)
    return (2.0 * overlap + smooth) / (total + smooth)


def vendor_summary(patient_scores: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float | int]]:
    """Per vendor: mean of its patients' scores ×100 and the sample std (ddof 1; 0 for one patient), and n."""
    out = {}
    for vendor, scores in sorted(patient_scores.items()):
        values = 100.0 * np.asarray(scores, dtype=float)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[vendor] = {"mean": float(values.mean()), "std": std, "n": int(len(values))}
    return out


def vendor_average(vendor_means: Mapping[str, float]) -> dict[str, float | int]:
    """The "Avg" column: mean of the per-vendor means and their population std (ddof 0), as the paper reports."""
    values = np.asarray(list(vendor_means.values()), dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=0)), "n": int(len(values))}
