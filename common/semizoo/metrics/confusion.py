"""Voxel confusion matrix of label maps, pooled over cases: which class the errors go to.

Dice says how much a class is wrong; the confusion matrix says how: a class predicted too small (predicted/reference
volume < 1, its missed voxels in the background column) or swallowed by a neighbour. It is what shows, for example,
that Mean Teacher at one labelled phantom patient shrinks the right ventricle while it grows the left ventricle.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["confusion_counts", "confusion_summary"]


def confusion_counts(pred, ref, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` voxel counts, rows = reference label, columns = predicted label.

    Raises:
        ValueError: shapes differ, or a label is outside ``0 .. num_classes - 1``.
    """
    pred, ref = (np.asarray(a.detach().cpu() if hasattr(a, "detach") else a) for a in (pred, ref))
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}.")
    for name, labels in (("prediction", pred), ("reference", ref)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{name} has labels {sorted(np.unique(labels).tolist())}, outside 0..{num_classes - 1}; "
                "pass label maps (argmax), not probabilities, and the number of classes including background."
            )
    flat = ref.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def confusion_summary(counts: np.ndarray, class_names: Mapping[int, str]) -> dict:
    """Counts plus, per named class, pooled recall, precision and predicted/reference volume ratio.

    ``rates`` is the row-normalised matrix (fraction of each reference class predicted as each label). Ratios of
    classes absent from the reference (or never predicted, for precision) are ``None``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    reference, predicted = counts.sum(1), counts.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(reference[:, None] > 0, counts / np.maximum(reference[:, None], 1), np.nan)

    def ratio(numerator: int, denominator: int) -> float | None:
        return float(numerator / denominator) if denominator > 0 else None

    per_class = {
        name: {
            "recall": ratio(counts[c, c], reference[c]),
            "precision": ratio(counts[c, c], predicted[c]),
            "volume_ratio": ratio(predicted[c], reference[c]),
        }
        for c, name in class_names.items()
    }
    return {
        "rows": "reference label",
        "columns": "predicted label",
        "counts": counts.tolist(),
        "rates": [[None if np.isnan(v) else float(v) for v in row] for row in rates],
        "per_class": per_class,
    }
