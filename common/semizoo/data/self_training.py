"""WSSDL self-training selection (wssdl.md §4 "Self-training"; WSSDL paper Sec. II-C, Table IV).

:func:`select_pseudo_boxes` moves the weak images whose top detection agrees with the image class, most confident
first, to the strong set with that detection as their box. It is pure: the caller runs the model in test mode.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["select_pseudo_boxes"]

# fraction * N is computed in floating point (0.57 * 100 = 56.99999999999999); this tolerance keeps floor exact.
_FLOOR_TOLERANCE = 1e-9


def _numpy(value: Any, dtype) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _top_detection(detection: Mapping, index: int) -> tuple[list[float], int, float] | None:
    """(box, label, score) of the highest-scoring detection (first on ties), or None without detections."""
    if not isinstance(detection, Mapping) or not all(key in detection for key in ("boxes", "scores", "labels")):
        raise ValueError(f"detections[{index}] must be a dict with 'boxes', 'scores' and 'labels'.")
    scores = _numpy(detection["scores"], np.float64).reshape(-1)
    if scores.size == 0:
        return None
    boxes = _numpy(detection["boxes"], np.float64)
    labels = _numpy(detection["labels"], np.int64).reshape(-1)
    if boxes.shape != (scores.size, 4) or labels.shape != (scores.size,):
        raise ValueError(
            f"detections[{index}]: boxes must be ({scores.size}, 4) and labels ({scores.size},) to match the scores, "
            f"got {boxes.shape} and {labels.shape}."
        )
    top = int(np.argmax(scores))
    return [float(v) for v in boxes[top]], int(labels[top]), float(scores[top])


def select_pseudo_boxes(
    weak_entries: Sequence[Mapping],
    detections: Sequence[Mapping],
    fraction: float,
    label_key: str = "image_class",
) -> tuple[list[dict], list[dict]]:
    """Split the weak set into (moved, remaining) for self-training (wssdl.md §4).

    For each weak entry, its top-scoring detection (first on ties) is a candidate when it exists and its label
    equals ``entry[label_key]``. The ``floor(fraction · len(weak_entries))`` candidates with the highest score are
    moved (all candidates if fewer; ties by list order). Moved entries are copies with ``box`` [[x1, y1, x2, y2]],
    ``label`` [class] and ``pseudo_score`` added, in the original order; the remaining entries keep their order.
    Raises ``ValueError`` for ``fraction`` outside (0, 1], a length mismatch or a malformed entry/detection.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    if len(weak_entries) != len(detections):
        raise ValueError(f"got {len(weak_entries)} weak entries but {len(detections)} detection results.")
    candidates: list[tuple[float, int, list[float], int]] = []
    for index, (entry, detection) in enumerate(zip(weak_entries, detections)):
        if not isinstance(entry, Mapping) or label_key not in entry:
            raise ValueError(f"weak entry {index} must be a dict with the image class under {label_key!r}.")
        image_class = int(entry[label_key])
        top = _top_detection(detection, index)
        if top is not None and top[1] == image_class:
            candidates.append((top[2], index, top[0], image_class))
    count = math.floor(float(fraction) * len(weak_entries) + _FLOOR_TOLERANCE)
    chosen = sorted(sorted(candidates, key=lambda c: (-c[0], c[1]))[:count], key=lambda c: c[1])
    moved_indices = {c[1] for c in chosen}
    moved = [
        {**weak_entries[index], "box": [box], "label": [image_class], "pseudo_score": score}
        for score, index, box, image_class in chosen
    ]
    remaining = [dict(entry) for index, entry in enumerate(weak_entries) if index not in moved_indices]
    return moved, remaining
