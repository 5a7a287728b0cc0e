"""WSSDL-BUS losses (wssdl.md §4, §5, §8 items 1-3 and 7): α schedule, mass of interest, MIL loss, box losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from semizoo.losses import (
    class_weights_from_labels,
    mil_weak_loss,
    official_rcnn_box_loss,
    official_rpn_box_loss,
    select_mass_of_interest,
)
from semizoo.schedules import wssdl_alpha

# columns [background, benign, malignant]; by hand: argmax col 2 = row 2, argmax col 1 = row 1,
# argmax max(col 1, col 2) = row 1 (3.0 > 2.5), argmin col 0 = row 3.
MATRIX = np.array(
    [
        [2.0, 0.5, 0.1],
        [0.0, 3.0, 1.0],
        [1.0, 0.2, 2.5],
        [-2.0, 1.0, 1.5],
    ]
)
RULES = ("most_malignant", "most_benign", "most_discriminative", "most_abnormal")
EXPECTED_ROW = {
    (2, "most_malignant"): 2,
    (2, "most_benign"): 2,
    (2, "most_discriminative"): 2,
    (2, "most_abnormal"): 2,
    (1, "most_malignant"): 2,
    (1, "most_benign"): 1,
    (1, "most_discriminative"): 1,
    (1, "most_abnormal"): 3,
    (0, "most_malignant"): 3,
    (0, "most_benign"): 3,
    (0, "most_discriminative"): 3,
    (0, "most_abnormal"): 3,
}


def _nll(row, label: int) -> float:
    """-log softmax(row)[label] written out with math.exp."""
    return math.log(sum(math.exp(float(v)) for v in row)) - float(row[label])


# --- §8 item 1: α schedule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, expected", [(0, 0.01), (1999, 0.01), (2000, 0.109), (40000, 0.8796391), (60000, 0.9580328)]
)
def test_wssdl_alpha_values(step, expected):
    assert wssdl_alpha(step) == pytest.approx(expected, abs=5e-8)
    assert isinstance(wssdl_alpha(step), float)


# --- §8 item 2: mass of interest ---------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [0, 1, 2])
@pytest.mark.parametrize("rule", RULES)
def test_every_rule_and_label_on_the_hand_matrix(rule, label):
    expected = EXPECTED_ROW[(label, rule)]
    assert select_mass_of_interest(MATRIX, label, rule=rule) == expected
    got = select_mass_of_interest(torch.tensor(MATRIX, dtype=torch.float32), torch.tensor(label), rule=rule)
    assert got == expected and isinstance(got, int)


def test_most_discriminative_follows_the_larger_of_benign_and_malignant():
    matrix = MATRIX.copy()
    matrix[2, 2] = 3.5  # now the malignant maximum beats the benign maximum 3.0
    assert select_mass_of_interest(matrix, 1, rule="most_discriminative") == 2
    assert select_mass_of_interest(matrix, 1, rule="most_benign") == 1


def test_default_rule_is_most_malignant_by_logit():
    assert select_mass_of_interest(MATRIX, 1) == 2


def test_ties_go_to_the_lowest_index():
    tied = np.array([[0.0, 1.0, 0.5], [3.0, 0.0, 2.0], [-1.0, 1.0, 2.0], [-1.0, 1.0, 2.0]])
    assert select_mass_of_interest(tied, 2) == 1  # col 2: 0.5, 2, 2, 2
    assert select_mass_of_interest(tied, 1, rule="most_benign") == 0  # col 1: 1, 0, 1, 1
    assert select_mass_of_interest(tied, 1, rule="most_abnormal") == 2  # col 0: 0, 3, -1, -1
    assert select_mass_of_interest(tied, 0) == 2
    assert select_mass_of_interest(tied, 1, rule="most_discriminative") == 1  # max: 1, 2, 2, 2
    assert select_mass_of_interest(np.zeros((5, 3)), 2, by="prob") == 0


def test_prob_and_logit_can_disagree():
    logits = np.array([[0.0, 0.0, 2.0], [5.0, 5.0, 3.0]])
    p_row0 = math.exp(2.0) / (1.0 + 1.0 + math.exp(2.0))  # 0.787
    p_row1 = math.exp(3.0) / (2.0 * math.exp(5.0) + math.exp(3.0))  # 0.063
    assert p_row0 > p_row1 and logits[1, 2] > logits[0, 2]
    assert select_mass_of_interest(logits, 2, by="logit") == 1
    assert select_mass_of_interest(logits, 2, by="prob") == 0
    assert select_mass_of_interest(torch.tensor(logits), 2, by="prob") == 0


def test_mass_of_interest_errors():
    with pytest.raises(ValueError, match="R = 0"):
        select_mass_of_interest(np.zeros((0, 3)), 2)
    with pytest.raises(ValueError, match="unknown mass-of-interest rule"):
        select_mass_of_interest(MATRIX, 1, rule="most_suspicious")
    with pytest.raises(ValueError, match="by must be"):
        select_mass_of_interest(MATRIX, 1, by="score")
    with pytest.raises(ValueError, match=r"\(R, 3\)"):
        select_mass_of_interest(np.zeros((4, 2)), 1)
    with pytest.raises(ValueError, match="image_label"):
        select_mass_of_interest(MATRIX, 3)


# --- §8 item 3: MIL weak loss ------------------------------------------------------------------------------------

Z1 = [[0.1, 0.2, 0.3], [1.0, -1.0, 2.0], [0.5, 0.5, -0.5]]  # label 2: argmax col 2 = row 1
Z2 = [[0.0, 1.5, 0.7], [0.3, 0.1, -0.2]]  # label 1, most_malignant: argmax col 2 = row 0
Z3 = [[2.0, -1.0, 0.0], [-3.0, 0.5, 0.25]]  # label 0: argmin col 0 = row 1, weight 0
WEIGHTS = (0.0, 0.3, 0.7)


def _leaves(*rows):
    return [torch.tensor(r, dtype=torch.float64, requires_grad=True) for r in rows]


def test_mil_loss_matches_the_hand_formula():
    z1, z2 = _leaves(Z1, Z2)
    loss = mil_weak_loss([z1, z2], torch.tensor([2, 1]), 0.5, class_weights=WEIGHTS)
    expected = 0.5 * (0.7 * _nll(Z1[1], 2) + 0.3 * _nll(Z2[0], 1)) / 2
    assert loss.ndim == 0 and loss.item() == pytest.approx(expected, rel=1e-12)


def test_mil_loss_default_class_weights_and_prob_selection():
    logits = [[0.0, 0.0, 2.0], [5.0, 5.0, 3.0]]
    by_logit = mil_weak_loss(_leaves(logits), [2], 1.0)
    by_prob = mil_weak_loss(_leaves(logits), [2], 1.0, by="prob")
    assert by_logit.item() == pytest.approx(0.7791 * _nll(logits[1], 2), rel=1e-12)
    assert by_prob.item() == pytest.approx(0.7791 * _nll(logits[0], 2), rel=1e-12)


def test_mil_loss_label_zero_and_empty_images_add_zero_but_count_in_b():
    z1, z2, z3 = _leaves(Z1, Z2, Z3)
    two = mil_weak_loss([z1, z2], [2, 1], 1.0, class_weights=WEIGHTS).item()
    with_normal = mil_weak_loss([z1, z2, z3], [2, 1, 0], 1.0, class_weights=WEIGHTS).item()
    empty = torch.zeros((0, 3), dtype=torch.float64, requires_grad=True)
    with_empty = mil_weak_loss([z1, empty, z2], [2, 2, 1], 1.0, class_weights=WEIGHTS).item()
    assert with_normal == pytest.approx(two * 2 / 3, rel=1e-12)
    assert with_empty == pytest.approx(two * 2 / 3, rel=1e-12)
    # label 0 with a non-zero background weight is pushed to background on argmin col 0
    weighted_normal = mil_weak_loss([z3], [0], 1.0, class_weights=(0.4, 0.3, 0.7)).item()
    assert weighted_normal == pytest.approx(0.4 * _nll(Z3[1], 0), rel=1e-12)


def test_mil_loss_with_no_image_or_only_zero_terms_is_zero():
    zero = mil_weak_loss([], torch.zeros(0, dtype=torch.int64), 0.5)
    assert zero.ndim == 0 and zero.item() == 0.0
    (z3,) = _leaves(Z3)
    only_normal = mil_weak_loss([z3], [0], 0.5)
    assert only_normal.item() == 0.0
    only_normal.backward()  # still a graph: an all-weak step with normal images does not crash
    assert torch.count_nonzero(z3.grad) == 0


def test_mil_loss_is_linear_in_alpha_and_alpha_is_not_differentiated():
    base = mil_weak_loss(_leaves(Z1, Z2), [2, 1], 1.0, class_weights=WEIGHTS).item()
    for a in (0.0, 0.01, 0.3, 0.953):
        assert mil_weak_loss(_leaves(Z1, Z2), [2, 1], a, class_weights=WEIGHTS).item() == pytest.approx(a * base)
    alpha = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    loss = mil_weak_loss(_leaves(Z1, Z2), [2, 1], alpha, class_weights=WEIGHTS)
    assert loss.item() == pytest.approx(0.25 * base)
    loss.backward()
    assert alpha.grad is None


def test_mil_loss_gradients_reach_only_the_selected_rows():
    z1, z2, z3 = _leaves(Z1, Z2, Z3)
    mil_weak_loss([z1, z2, z3], [2, 1, 0], 0.5, class_weights=WEIGHTS).backward()
    assert torch.count_nonzero(z1.grad[1]) == 3 and torch.count_nonzero(z1.grad[[0, 2]]) == 0
    assert torch.count_nonzero(z2.grad[0]) == 3 and torch.count_nonzero(z2.grad[1]) == 0
    assert z3.grad is None or torch.count_nonzero(z3.grad) == 0
    # d/dz of w·alpha/B·CE(z, y) = w·alpha/B·(softmax(z) - onehot(y))
    row = torch.tensor(Z1[1], dtype=torch.float64)
    expected = 0.7 * 0.5 / 3 * (torch.softmax(row, 0) - torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(z1.grad[1], expected)


def test_mil_loss_keeps_the_logits_dtype_and_device():
    z = torch.tensor(Z1, dtype=torch.float32, requires_grad=True)
    loss = mil_weak_loss([z], torch.tensor([2]), torch.tensor(0.5))
    assert loss.dtype == torch.float32 and loss.device == z.device
    half = mil_weak_loss([torch.tensor(Z1, dtype=torch.bfloat16)], [2], 1.0)
    assert half.item() == pytest.approx(0.7791 * _nll(Z1[1], 2), rel=2e-2)


def test_mil_loss_errors():
    with pytest.raises(ValueError, match="image labels"):
        mil_weak_loss(_leaves(Z1, Z2), [2], 1.0)
    with pytest.raises(ValueError, match="unknown mass-of-interest rule"):
        mil_weak_loss(_leaves(Z1), [2], 1.0, rule="largest")
    with pytest.raises(ValueError, match=r"\(R_i, 3\)"):
        mil_weak_loss([torch.zeros(4, 2)], [2], 1.0)
    with pytest.raises(ValueError, match="0 \\(normal\\), 1 \\(benign\\) or 2"):
        mil_weak_loss(_leaves(Z1), [5], 1.0)


# --- official box losses (§4, §8 item 7) ------------------------------------------------------------------------


def test_official_rpn_box_loss_toy():
    targets = torch.tensor([[0.25, -0.25, 0.5, 0.0], [1.0, 0.0, -1.0, 0.5]], dtype=torch.float64)
    d = torch.tensor([[0.5, -0.999, 1.0, -2.0], [0.5, -0.999, 1.0, -2.0]], dtype=torch.float64)
    deltas = (targets + d).requires_grad_(True)
    positive = torch.tensor([True, False])
    loss = official_rpn_box_loss(deltas, targets, positive, num_anchors=9)
    # positive row: 4.5·0.25, 4.5·0.999², |1|-1/18, |2|-1/18 ; negative row: 0, 0, 1-1/18, 2-1/18
    total = 4.5 * 0.25 + 4.5 * 0.999**2 + 2 * (1 - 1 / 18) + 2 * (2 - 1 / 18)
    assert loss.item() == pytest.approx(10 / (4 * 9 * 2) * total, rel=1e-9)
    loss.backward()
    k = 10 / 72
    expected_grad = torch.tensor(
        [[9 * 0.5 * k, 9 * -0.999 * k, k, -k], [0.0, 0.0, k, -k]], dtype=torch.float64
    )  # dℓ/dd = 9·m·d inside, sign(d) outside
    assert torch.allclose(deltas.grad, expected_grad)


def _single(d: float, positive: bool, num_anchors: int = 9) -> float:
    deltas = torch.tensor([[d, 0.0, 0.0, 0.0]], dtype=torch.float64)
    return official_rpn_box_loss(deltas, torch.zeros_like(deltas), torch.tensor([positive]), num_anchors).item()


def test_official_rpn_box_loss_jumps_at_one_and_negatives_count_only_from_one():
    k = 10 / (4 * 9)
    assert _single(0.9999, True) == pytest.approx(4.5 * 0.9999**2 * k)
    assert _single(1.0, True) == pytest.approx((1 - 1 / 18) * k)
    assert _single(-1.0, True) == pytest.approx((1 - 1 / 18) * k)
    assert _single(0.9999, True) - _single(1.0, True) > 3.5 * k  # the kept discontinuity
    assert _single(0.9999, False) == 0.0 and _single(-0.5, False) == 0.0
    assert _single(1.0, False) == pytest.approx((1 - 1 / 18) * k)
    assert _single(-3.0, False) == pytest.approx((3 - 1 / 18) * k)
    assert _single(3.0, True, num_anchors=1) == pytest.approx((3 - 1 / 18) * 10 / 4)


def test_official_rpn_box_loss_empty_set_keeps_the_graph_and_checks_shapes():
    deltas = torch.zeros((0, 4), requires_grad=True)
    loss = official_rpn_box_loss(deltas, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    with pytest.raises(ValueError, match="positive"):
        official_rpn_box_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="targets"):
        official_rpn_box_loss(torch.zeros(3, 4), torch.zeros(2, 4), torch.zeros(3, dtype=torch.bool))


def test_official_rcnn_box_loss_is_plain_l1_over_foreground_divided_by_num_rois():
    deltas = torch.tensor([[0.5, -1.5, 2.0, 0.0], [9.0, 9.0, 9.0, 9.0], [-0.25, 0.1, 0.0, 3.0]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0] * 4, [0.0, 0.1, -1.0, 1.0]], dtype=torch.float64)
    deltas.requires_grad_(True)
    loss = official_rcnn_box_loss(deltas, targets, torch.tensor([True, False, True]), num_rois=128)
    # |d| row 0: 0.5 + 1.5 + 1 + 0 ; row 2: 0.25 + 0 + 1 + 2
    assert loss.item() == pytest.approx((3.0 + 3.25) / 128, rel=1e-12)
    loss.backward()
    assert torch.count_nonzero(deltas.grad[1]) == 0
    assert deltas.grad[0, 1].item() == pytest.approx(-1 / 128)
    empty = official_rcnn_box_loss(torch.zeros((0, 4)), torch.zeros((0, 4)), torch.zeros(0, dtype=torch.bool), 0)
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="num_rois"):
        official_rcnn_box_loss(deltas, targets, torch.tensor([True, False, True]), num_rois=0)


# --- class weights -------------------------------------------------------------------------------------------------


def test_auto_class_weights_reproduce_the_snubh_default():
    labels = np.array([1] * 3291 + [2] * 933)
    weights = class_weights_from_labels(labels)
    assert weights[0] == 0.0
    assert weights[1] == pytest.approx(933 / 4224) and weights[2] == pytest.approx(3291 / 4224)
    assert weights == pytest.approx((0.0, 0.2209, 0.7791), abs=5e-5)
    assert class_weights_from_labels(torch.tensor([0, 0, 1, 2, 2])) == pytest.approx((0.0, 2 / 3, 1 / 3))
    assert class_weights_from_labels([2, 2]) == (0.0, 1.0, 0.0)


def test_auto_class_weights_need_lesion_images():
    with pytest.raises(ValueError, match="benign"):
        class_weights_from_labels([0, 0])
    with pytest.raises(ValueError, match="benign"):
        class_weights_from_labels([])
    with pytest.raises(ValueError):
        class_weights_from_labels([1, 3])
