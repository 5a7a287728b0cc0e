"""Detection metrics of WSSDL-BUS (wssdl.md §5, §7; evaluation.md "Detection metrics").

- :func:`corloc`: correct localisation, ``"any"`` (the official evaluation: per (class, image) unit, any detection
  of that class with score ≥ 0.5 overlapping a ground truth of that class) or ``"top1"`` (the paper's wording: the
  top detection of each image with ground truth overlaps a box of its own class). IoU is continuous and a hit needs
  IoU strictly above the threshold.
- :func:`corloc_difference`: CorLoc of model A minus model B on the same images, with the paired bootstrap CI.
- :func:`false_positives_per_image`: mean number of detections with score ≥ threshold (for normal images).
- :func:`image_classification`: benign vs malignant accuracy from the top detection's class and the ROC AUC of the
  maximum malignant score (Mann-Whitney, ties 1/2), with the per-image vectors for bootstrapping.

Inputs are per-image lists in one order: detections are dicts ``boxes`` (D, 4) xyxy, ``scores`` (D,), ``labels``
(D,); ground truths dicts ``boxes`` (G, 4), ``labels`` (G,); torch tensors or numpy arrays.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from .bootstrap import bootstrap_ci_diff

__all__ = ["corloc", "corloc_difference", "false_positives_per_image", "image_classification"]

_CLASSES = (1, 2)
_MODES = ("any", "top1")


def _array(value: Any, dtype) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _field(item: Mapping, key: str, index: int, kind: str) -> Any:
    if not isinstance(item, Mapping) or key not in item:
        raise ValueError(f"{kind} of image {index} must be a dict with key {key!r}.")
    return item[key]


def _boxes(item: Mapping, index: int, kind: str) -> np.ndarray:
    boxes = _array(_field(item, "boxes", index, kind), np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{kind} boxes of image {index} must be (N, 4) xyxy, got shape {boxes.shape}.")
    return boxes


def _vector(item: Mapping, key: str, length: int, index: int, kind: str, dtype) -> np.ndarray:
    values = _array(_field(item, key, index, kind), dtype)
    if values.size == 0 and length == 0:
        return values.reshape(0)
    if values.shape != (length,):
        raise ValueError(f"{kind} {key} of image {index} must have shape ({length},), got {values.shape}.")
    return values


def _detection(item: Mapping, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = _boxes(item, index, "detections")
    scores = _vector(item, "scores", boxes.shape[0], index, "detections", np.float64)
    labels = _vector(item, "labels", boxes.shape[0], index, "detections", np.int64)
    return boxes, scores, labels


def _ground_truth(item: Mapping, index: int) -> tuple[np.ndarray, np.ndarray]:
    boxes = _boxes(item, index, "ground truth")
    return boxes, _vector(item, "labels", boxes.shape[0], index, "ground truth", np.int64)


def _iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(N, M) continuous IoU via ``torchvision.ops.box_iou`` in float64."""
    if first.shape[0] == 0 or second.shape[0] == 0:
        return np.zeros((first.shape[0], second.shape[0]))
    return box_iou(torch.from_numpy(first), torch.from_numpy(second)).numpy()


def _rate(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else float("nan")


def corloc(
    detections: Sequence[Mapping],
    ground_truths: Sequence[Mapping],
    iou_threshold: float = 0.5,
    mode: str = "any",
    score_threshold: float = 0.5,
    require_class: bool = True,
) -> dict:
    """CorLoc of per-image detections against ground truth (wssdl.md §5).

    ``"any"``: units are (class c, image) pairs with a ground truth of class c, class-major (c = 1 then 2, images in
    input order); a hit is a detection of label c with score ≥ ``score_threshold`` and IoU > ``iou_threshold`` with
    a ground truth of class c. ``"top1"``: units are the images with ground truth, in order; the highest-scoring
    detection (first on ties, no score threshold) must have IoU > ``iou_threshold`` with a ground truth of its own
    label (any ground truth if ``require_class=False``); no detection is a miss. Images without ground truth make no
    unit. ``per_class[c]`` is the hit rate over the units of class c (in ``"top1"``: the images with a ground truth
    of class c). Returns ``{"corloc": float (nan without units), "hits": bool (U,), "per_class": {1: .., 2: ..}}``.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be 'any' or 'top1', got {mode!r}.")
    if len(detections) != len(ground_truths):
        raise ValueError(f"got detections for {len(detections)} images but ground truth for {len(ground_truths)}.")
    images = [(_detection(d, i), _ground_truth(g, i)) for i, (d, g) in enumerate(zip(detections, ground_truths))]
    hits: list[bool] = []
    unit_classes: list[set[int]] = []
    if mode == "any":
        for cls in _CLASSES:
            for (boxes, scores, labels), (gt_boxes, gt_labels) in images:
                if not (gt_labels == cls).any():
                    continue
                keep = (labels == cls) & (scores >= score_threshold)
                overlap = _iou(boxes[keep], gt_boxes[gt_labels == cls])
                hits.append(bool((overlap > iou_threshold).any()))
                unit_classes.append({cls})
    else:
        for (boxes, scores, labels), (gt_boxes, gt_labels) in images:
            if gt_labels.size == 0:
                continue
            unit_classes.append({int(c) for c in gt_labels})
            if scores.size == 0:
                hits.append(False)
                continue
            top = int(np.argmax(scores))
            targets = gt_boxes if not require_class else gt_boxes[gt_labels == labels[top]]
            hits.append(bool((_iou(boxes[top : top + 1], targets) > iou_threshold).any()))
    hit_array = np.asarray(hits, dtype=bool)
    per_class = {
        cls: _rate(np.asarray([hit for hit, classes in zip(hits, unit_classes) if cls in classes], dtype=bool))
        for cls in _CLASSES
    }
    return {"corloc": _rate(hit_array), "hits": hit_array, "per_class": per_class}


def false_positives_per_image(detections: Sequence[Mapping], score_threshold: float = 0.5) -> float:
    """Mean number of detections with score ≥ ``score_threshold`` per image (wssdl.md §7: on normal test images).

    Every such detection counts as a false positive, so pass images without lesions. nan for no image.
    """
    counts = [int((_detection(d, i)[1] >= score_threshold).sum()) for i, d in enumerate(detections)]
    return float(np.mean(counts)) if counts else float("nan")


def _mann_whitney_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + ½ P(equal); nan when one class is absent."""
    pos, neg = scores[positive], scores[~positive]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    equal = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * equal) / (pos.size * neg.size))


def image_classification(detections: Sequence[Mapping], image_classes) -> dict:
    """Benign (1) vs malignant (2) image classification from detections (wssdl.md §7).

    Only images whose class is 1 or 2 count. Predicted class = label of the top-scoring detection (first on ties;
    no detection = wrong). Score = the maximum score of the malignant (label 2) detections, 0 if none; ``roc_auc``
    is its Mann-Whitney statistic (ties ½; nan if a class is absent). Returns ``accuracy``, ``roc_auc`` and, per
    kept image, ``indices`` (into the input), ``targets`` (1|2), ``correct`` (bool) and ``scores`` for bootstrapping.
    """
    classes = _array(image_classes, np.int64).reshape(-1)
    if classes.size != len(detections):
        raise ValueError(f"got detections for {len(detections)} images but {classes.size} image classes.")
    indices, correct, scores = [], [], []
    for i, (item, cls) in enumerate(zip(detections, classes)):
        _, det_scores, det_labels = _detection(item, i)
        if cls not in _CLASSES:
            continue
        indices.append(i)
        correct.append(bool(det_scores.size and det_labels[int(np.argmax(det_scores))] == cls))
        malignant = det_scores[det_labels == 2]
        scores.append(float(malignant.max()) if malignant.size else 0.0)
    targets = classes[indices] if indices else np.zeros(0, dtype=np.int64)
    correct_array, score_array = np.asarray(correct, dtype=bool), np.asarray(scores, dtype=np.float64)
    return {
        "accuracy": _rate(correct_array),
        "roc_auc": _mann_whitney_auc(score_array, targets == 2),
        "indices": np.asarray(indices, dtype=np.int64),
        "targets": targets,
        "correct": correct_array,
        "scores": score_array,
    }


def corloc_difference(
    detections_a: Sequence[Mapping],
    detections_b: Sequence[Mapping],
    ground_truths: Sequence[Mapping],
    mode: str = "any",
    n_resamples: int = 1000,
    seed: int = 0,
    **kwargs: Any,
) -> dict:
    """CorLoc(A) − CorLoc(B) over the same test images: ``{"difference", "ci_low", "ci_high", "a", "b", "units"}``.

    Both models' hit vectors come from :func:`corloc` (same units, same order); the interval is
    :func:`semizoo.metrics.bootstrap_ci_diff` (the same resampled units for both, wssdl.md §5). ``kwargs`` go to
    :func:`corloc` (``iou_threshold``, ``score_threshold``, ``require_class``).
    """
    if len(detections_a) != len(detections_b):
        raise ValueError(f"model A has {len(detections_a)} images but model B {len(detections_b)}.")
    hits_a = corloc(detections_a, ground_truths, mode=mode, **kwargs)["hits"].astype(float)
    hits_b = corloc(detections_b, ground_truths, mode=mode, **kwargs)["hits"].astype(float)
    difference, low, high = bootstrap_ci_diff(hits_a, hits_b, n_resamples=n_resamples, seed=seed)
    return {
        "difference": difference,
        "ci_low": low,
        "ci_high": high,
        "a": float(hits_a.mean()),
        "b": float(hits_b.mean()),
        "units": int(hits_a.size),
    }
