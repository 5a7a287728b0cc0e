"""Overlap and surface-distance metrics with medpy's conventions (evaluation.md).

medpy (``medpy.metric.binary``) is what the SS-Net, ACTION and UA-MT test scripts call, so its
conventions are kept exactly: surfaces are the voxels removed by one binary erosion with the
face-connected structuring element, distances come from the Euclidean distance transform scaled
by ``spacing``, HD95 is the 95th percentile of the *pooled* distances of both directions, ASD is
one-directional (``pred`` to ``ref``) and ASSD is the mean of the pooled distances of both directions (medpy 0.5).

MONAI's ``compute_hausdorff_distance(percentile=95)`` takes the percentile of each direction and
then the maximum, which gives different numbers; it is a documented alternative, not used here.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["METRIC_NAMES", "EMPTY_RULES", "binary_metrics", "multiclass_metrics", "surface_distances"]

METRIC_NAMES = ("dice", "jaccard", "hd95", "asd", "assd")
EMPTY_RULES = ("explicit", "paper")


def _as_bool(array, name: str) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D or 3D mask, got shape {array.shape}.")
    return array.astype(bool)


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    spacing = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(spacing) == 1:
        spacing = spacing * ndim
    if len(spacing) != ndim:
        raise ValueError(f"spacing {spacing} does not match a {ndim}D mask.")
    if any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive, got {spacing}.")
    return spacing


def surface_distances(source: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Distances from each surface voxel of ``source`` to the surface of ``target`` (medpy ``__surface_distances``).

    Both masks must be non-empty boolean arrays of the same shape.
    """
    footprint = ndimage.generate_binary_structure(source.ndim, 1)
    source_border = source ^ ndimage.binary_erosion(source, structure=footprint, iterations=1)
    target_border = target ^ ndimage.binary_erosion(target, structure=footprint, iterations=1)
    distance_to_target = ndimage.distance_transform_edt(~target_border, sampling=spacing)
    return distance_to_target[source_border]


def _union_box(first: np.ndarray, second: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every foreground voxel of either mask (both non-empty).

    Surface distances computed inside it equal those of the whole arrays: erosion treats voxels outside
    the array as background, which is what the cropped-away voxels are, and every surface voxel, hence
    every nearest surface voxel, lies inside the box.
    """
    union = first | second
    box = []
    for axis in range(union.ndim):
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def binary_metrics(
    pred,
    ref,
    spacing: Sequence[float] | None = None,
    empty: str = "explicit",
    metrics: Sequence[str] = METRIC_NAMES,
) -> dict[str, float]:
    """Dice, Jaccard, HD95, ASD (``pred`` to ``ref``) and ASSD of two binary masks.

    Args:
        pred: predicted mask (2D or 3D, anything non-zero is foreground), numpy or torch.
        ref: reference mask of the same shape.
        spacing: voxel size per axis (mm); ``None`` gives distances in voxels.
        empty: ``"explicit"``: both empty -> dice = jaccard = 1 and distances 0; exactly one empty ->
            dice = jaccard = 0 and distances ``nan``. ``"paper"``: an empty ``pred`` scores all metrics 0
            (SS-Net/ACTION test scripts), a non-empty ``pred`` on an empty ``ref`` scores dice = jaccard = 1,
            distances 0 (ACTION's test script).
        metrics: the metrics to compute (default all); without ``hd95``, ``asd`` and ``assd`` no surface is
            extracted, which is what model selection on Dice needs.

    Returns:
        dict with the requested keys of ``dice, jaccard, hd95, asd, assd`` (floats).

    Raises:
        ValueError: on shape mismatch, wrong dimensionality, bad spacing, an unknown ``empty`` rule or metric name.
    """
    if empty not in EMPTY_RULES:
        raise ValueError(f"empty must be one of {EMPTY_RULES}, got {empty!r}.")
    unknown = sorted(set(metrics) - set(METRIC_NAMES))
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRIC_NAMES}, got {list(metrics)}.")
    pred_b, ref_b = _as_bool(pred, "pred"), _as_bool(ref, "ref")
    if pred_b.shape != ref_b.shape:
        raise ValueError(f"pred and ref shapes differ: {pred_b.shape} vs {ref_b.shape}.")
    spacing_t = _check_spacing(spacing, pred_b.ndim)

    pred_empty, ref_empty = not pred_b.any(), not ref_b.any()
    if pred_empty or ref_empty:
        values = _empty_case(pred_empty, ref_empty, empty)
        return {name: values[name] for name in metrics}

    intersection = float(np.count_nonzero(pred_b & ref_b))
    size_sum = float(np.count_nonzero(pred_b) + np.count_nonzero(ref_b))
    union = float(np.count_nonzero(pred_b | ref_b))
    values = {"dice": 2.0 * intersection / size_sum, "jaccard": intersection / union}
    if not set(metrics) <= set(values):
        box = _union_box(pred_b, ref_b)
        pred_to_ref = surface_distances(pred_b[box], ref_b[box], spacing_t)
        ref_to_pred = surface_distances(ref_b[box], pred_b[box], spacing_t)
        both = np.hstack((pred_to_ref, ref_to_pred))
        values.update(hd95=float(np.percentile(both, 95)), asd=float(pred_to_ref.mean()), assd=float(both.mean()))
    return {name: values[name] for name in metrics}


def _empty_case(pred_empty: bool, ref_empty: bool, empty: str) -> dict[str, float]:
    if empty == "paper":
        if pred_empty:
            return dict.fromkeys(METRIC_NAMES, 0.0)
        return {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0, "assd": 0.0}
    if pred_empty and ref_empty:
        return {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0, "assd": 0.0}
    return {"dice": 0.0, "jaccard": 0.0, "hd95": math.nan, "asd": math.nan, "assd": math.nan}


def _foreground_classes(classes: int | Sequence[int]) -> list[int]:
    if isinstance(classes, (int, np.integer)):
        if classes < 2:
            raise ValueError(f"classes as a count must include background and one class at least, got {classes}.")
        return list(range(1, int(classes)))
    labels = [int(c) for c in classes]
    if not labels:
        raise ValueError("classes must name at least one label.")
    return labels


def multiclass_metrics(
    pred, ref, classes: int | Sequence[int], spacing: Sequence[float] | None = None, empty: str = "explicit"
) -> dict[str, Mapping]:
    """Per-class :func:`binary_metrics` of two label maps (each class against the rest) and their mean.

    Args:
        pred: predicted label map (2D or 3D integers).
        ref: reference label map of the same shape.
        classes: number of classes including background 0 (scores ``1..classes-1``), or the labels to score
            (e.g. ``[0, 1, 2]`` where background is the last label, as in EPL).
        spacing, empty: as in :func:`binary_metrics`.

    Returns:
        ``{"per_class": {label: metrics}, "mean": metrics averaged over classes (ignoring nan),
        "undefined": {metric: number of classes whose value is nan}}``.
    """
    labels = _foreground_classes(classes)
    if hasattr(pred, "detach"):
        pred = pred.detach().cpu().numpy()
    if hasattr(ref, "detach"):
        ref = ref.detach().cpu().numpy()
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref shapes differ: {pred.shape} vs {ref.shape}.")
    per_class = {c: binary_metrics(pred == c, ref == c, spacing=spacing, empty=empty) for c in labels}
    mean, undefined = {}, {}
    for name in METRIC_NAMES:
        values = np.array([per_class[c][name] for c in labels], dtype=float)
        undefined[name] = int(np.isnan(values).sum())
        mean[name] = float(np.nanmean(values)) if undefined[name] < len(values) else math.nan
    return {"per_class": per_class, "mean": mean, "undefined": undefined}
