"""WSSDL-BUS losses (Shin et al., IEEE TMI 2019; wssdl.md §4-§5): the weak MIL loss and the official box losses.

- :func:`select_mass_of_interest`: the row of one weak image's RoI logits that a rule picks as its "mass of interest".
- :func:`mil_weak_loss`: the class-weighted, ``alpha``-scaled CE of each weak image's selected row (wssdl.md §5).
- :func:`official_rpn_box_loss`: the official code's RPN box loss, discontinuous at ``|d| = 1`` (wssdl.md §4).
- :func:`official_rcnn_box_loss`: the official plain-L1 R-CNN box loss normalised by the number of RoIs (wssdl.md §4).
- :func:`class_weights_from_labels`: the ``auto`` class weights ``(0, p_M, 1 - p_M)`` of the weak set (wssdl.md §4).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MOI_RULES",
    "select_mass_of_interest",
    "mil_weak_loss",
    "official_rpn_box_loss",
    "official_rcnn_box_loss",
    "class_weights_from_labels",
]

MOI_RULES = ("most_malignant", "most_benign", "most_discriminative", "most_abnormal")
_BY = ("logit", "prob")


def _label_int(value, what: str) -> int:
    """A python int from an int-like scalar (python, numpy or 0-d/1-element tensor); rejects bools and floats."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_floating_point():
            raise ValueError(f"{what} must be one integer, got a tensor of shape {tuple(value.shape)}.")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer in {{0, 1, 2}}, got {value!r}.")
    value = int(value)
    if value not in (0, 1, 2):
        raise ValueError(f"{what} must be 0 (normal), 1 (benign) or 2 (malignant), got {value}.")
    return value


def _check_options(rule: str, by: str) -> None:
    if rule not in MOI_RULES:
        raise ValueError(f"unknown mass-of-interest rule {rule!r}; expected one of {MOI_RULES}.")
    if by not in _BY:
        raise ValueError(f"by must be 'logit' or 'prob', got {by!r}.")


def select_mass_of_interest(roi_logits, image_label, rule: str = "most_malignant", by: str = "logit") -> int:
    """Row index of the mass of interest among one weak image's RoIs (wssdl.md §5; WSSDL paper Sec. II-B, Table II).

    ``roi_logits`` (R, 3), columns [background, benign, malignant], torch or numpy; ``by="prob"`` softmaxes each row
    first. Label 2: argmax column 2 (any rule). Label 1: ``most_malignant`` argmax col 2, ``most_benign`` argmax col 1,
    ``most_discriminative`` argmax of max(col 1, col 2), ``most_abnormal`` argmin col 0. Label 0 (semizoo extension):
    argmin col 0. Ties go to the lowest index. Raises ``ValueError`` for R = 0, a bad shape, label, rule or ``by``.
    """
    _check_options(rule, by)
    label = _label_int(image_label, "image_label")
    if isinstance(roi_logits, Tensor):
        scores = roi_logits.detach().to("cpu", torch.float64).numpy()
    else:
        scores = np.asarray(roi_logits, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != 3:
        raise ValueError(f"roi_logits must be (R, 3) [background, benign, malignant], got shape {scores.shape}.")
    if scores.shape[0] == 0:
        raise ValueError("roi_logits has no RoI (R = 0): no mass of interest can be selected.")
    if by == "prob":
        shifted = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        scores = exp / exp.sum(axis=1, keepdims=True)
    if label == 0:
        return int(np.argmin(scores[:, 0]))
    if label == 2 or rule == "most_malignant":
        return int(np.argmax(scores[:, 2]))
    if rule == "most_benign":
        return int(np.argmax(scores[:, 1]))
    if rule == "most_discriminative":
        return int(np.argmax(np.maximum(scores[:, 1], scores[:, 2])))
    return int(np.argmin(scores[:, 0]))  # most_abnormal


def _labels_list(image_labels) -> list[int]:
    if isinstance(image_labels, Tensor):
        if image_labels.ndim != 1:
            raise ValueError(f"image_labels must be 1-D (B,), got shape {tuple(image_labels.shape)}.")
        if image_labels.is_floating_point():
            raise ValueError("image_labels must be integers (int64), got a floating-point tensor.")
        values = image_labels.detach().cpu().tolist()
    else:
        array = np.asarray(image_labels)
        if array.ndim != 1:
            raise ValueError(f"image_labels must be 1-D (B,), got shape {array.shape}.")
        values = array.tolist()
    return [_label_int(value, f"image_labels[{i}]") for i, value in enumerate(values)]


def _class_weights(class_weights) -> list[float]:
    if isinstance(class_weights, Tensor):
        class_weights = class_weights.detach().cpu().tolist()
    weights = [float(w) for w in class_weights]
    if len(weights) != 3:
        raise ValueError(f"class_weights must have 3 entries (background, benign, malignant), got {len(weights)}.")
    return weights


def mil_weak_loss(
    roi_logits_per_image: Sequence[Tensor],
    image_labels,
    alpha,
    class_weights=(0.0, 0.2209, 0.7791),
    rule: str = "most_malignant",
    by: str = "logit",
) -> Tensor:
    """Weak MIL loss ``(1/B) Σ_i alpha · w[y_i] · (-log softmax(z_i)[y_i])`` (wssdl.md §5), a 0-d tensor.

    ``z_i`` is the row of ``roi_logits_per_image[i]`` (R_i, 3) chosen by :func:`select_mass_of_interest` under
    ``no_grad``; gradients reach only the selected rows. Images with weight 0 or R_i = 0 add 0 but count in B;
    B = 0 gives a 0-d zero. ``alpha`` (float or 0-d tensor) is not differentiated. The CE is computed in the logits'
    dtype (float32 for half/bfloat16 logits) on their device.
    """
    _check_options(rule, by)
    logits = list(roi_logits_per_image)
    labels = _labels_list(image_labels)
    if len(labels) != len(logits):
        raise ValueError(f"got {len(logits)} logit tensors but {len(labels)} image labels.")
    weights = _class_weights(class_weights)
    if isinstance(alpha, Tensor):
        if alpha.numel() != 1:
            raise ValueError(f"alpha must be a float or a 0-d tensor, got shape {tuple(alpha.shape)}.")
        alpha = alpha.detach().reshape(())
    for i, z in enumerate(logits):
        if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[1] != 3:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"roi_logits_per_image[{i}] must be a (R_i, 3) tensor, got {shape}.")
    reference = next((z for z in logits if z.shape[0] > 0), None)
    if reference is None:
        device = alpha.device if isinstance(alpha, Tensor) else None
        return torch.zeros((), device=device)
    dtype = torch.float32 if reference.dtype in (torch.float16, torch.bfloat16) else reference.dtype
    total = reference[:0].sum().to(dtype)  # a zero that keeps the graph (no NaN from inf * 0)
    for z, label in zip(logits, labels):
        if z.shape[0] == 0 or weights[label] == 0.0:
            continue
        with torch.no_grad():
            row = select_mass_of_interest(z.detach(), label, rule=rule, by=by)
        selected = z[row].to(dtype)
        total = total + weights[label] * (-F.log_softmax(selected, dim=-1)[label])
    if isinstance(alpha, Tensor):
        alpha = alpha.to(device=total.device, dtype=total.dtype)
    return alpha * total / len(labels)


def _check_box_inputs(deltas: Tensor, targets: Tensor, mask: Tensor, mask_name: str) -> Tensor:
    if deltas.ndim != 2 or deltas.shape[1] != 4:
        raise ValueError(f"deltas must be (S, 4), got shape {tuple(deltas.shape)}.")
    if tuple(targets.shape) != tuple(deltas.shape):
        raise ValueError(f"targets must have the shape of deltas {tuple(deltas.shape)}, got {tuple(targets.shape)}.")
    if tuple(mask.shape) != (deltas.shape[0],):
        raise ValueError(f"{mask_name} must be ({deltas.shape[0]},), got shape {tuple(mask.shape)}.")
    return mask.to(device=deltas.device, dtype=torch.bool)


def official_rpn_box_loss(deltas: Tensor, targets: Tensor, positive: Tensor, num_anchors: int = 9) -> Tensor:
    """Official WSSDL RPN box loss over the sampled anchor set S (wssdl.md §4, official ``_smooth_l1_loss`` use).

    ``d = deltas - targets`` (S, 4); per element ``ℓ = 4.5·m·d²`` if ``|d| < 1`` else ``|d| - 1/18`` with ``m = 1``
    on positive rows and 0 on negative rows (negatives count only from ``|d| ≥ 1``; the jump at 1 is kept);
    ``L = 10 / (4·A·|S|) · Σ ℓ`` with ``A = num_anchors``. ``|S| = 0`` gives a zero that keeps the graph.
    """
    positive = _check_box_inputs(deltas, targets, positive, "positive")
    if int(num_anchors) < 1:
        raise ValueError(f"num_anchors must be >= 1, got {num_anchors}.")
    count = deltas.shape[0]
    if count == 0:
        return deltas.sum() * 0
    diff = deltas - targets.to(device=deltas.device, dtype=deltas.dtype)
    magnitude = diff.abs()
    inner = torch.where(positive[:, None], 4.5 * diff * diff, torch.zeros_like(diff))
    elementwise = torch.where(magnitude < 1.0, inner, magnitude - 1.0 / 18.0)
    return elementwise.sum() * (10.0 / (4.0 * int(num_anchors) * count))


def official_rcnn_box_loss(deltas: Tensor, targets: Tensor, foreground: Tensor, num_rois: int) -> Tensor:
    """Official WSSDL R-CNN box loss ``(1/num_rois) · Σ_{fg r} Σ_k |d_{r,k}|`` (plain L1; wssdl.md §4).

    ``deltas``/``targets`` (N, 4) are the class-specific deltas of the sampled RoIs, ``foreground`` (N,) bool;
    ``num_rois`` is |R|. No row gives a zero that keeps the graph.
    """
    foreground = _check_box_inputs(deltas, targets, foreground, "foreground")
    if deltas.shape[0] == 0:
        return deltas.sum() * 0
    if int(num_rois) < 1:
        raise ValueError(f"num_rois must be >= 1, got {num_rois}.")
    magnitude = (deltas - targets.to(device=deltas.device, dtype=deltas.dtype)).abs()
    return torch.where(foreground[:, None], magnitude, torch.zeros_like(magnitude)).sum() / int(num_rois)


def class_weights_from_labels(image_labels) -> tuple[float, float, float]:
    """The ``auto`` weak-loss class weights ``(0, p_M, 1 - p_M)`` (wssdl.md §4; SNUBH 933/4224 → 0.2209).

    ``p_M`` is the share of malignant (2) among the weak images labelled 1 or 2 (normal images are ignored).
    Raises ``ValueError`` when no image is benign or malignant, or a label is outside {0, 1, 2}.
    """
    labels = _labels_list(image_labels)
    lesion = [label for label in labels if label in (1, 2)]
    if not lesion:
        raise ValueError("class weights need at least one benign (1) or malignant (2) weak image, got none.")
    share = sum(label == 2 for label in lesion) / len(lesion)
    return (0.0, float(share), float(1.0 - share))
