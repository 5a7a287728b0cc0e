"""Detection metrics of WSSDL-BUS (wssdl.md §5, §7, §8 items 4-5): CorLoc, bootstrap CI, FP/image, classification."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from semizoo.metrics import bootstrap_ci, corloc, false_positives_per_image, image_classification

GT_BOX = [0.0, 0.0, 10.0, 10.0]
HALF = [0.0, 0.0, 10.0, 5.0]  # IoU with GT_BOX = 50 / 100 = 0.5 exactly
SIXTY = [0.0, 0.0, 10.0, 6.0]  # IoU 0.6
FAR = [50.0, 50.0, 60.0, 60.0]  # IoU 0


def det(boxes, scores, labels):
    return {
        "boxes": np.asarray(boxes, dtype=float).reshape(-1, 4),
        "scores": np.asarray(scores, dtype=float),
        "labels": np.asarray(labels, dtype=np.int64),
    }


def gt(boxes, labels):
    return {"boxes": np.asarray(boxes, dtype=float).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64)}


def _hits(result) -> list[bool]:
    return [bool(h) for h in result["hits"]]


# --- §8 item 4: CorLoc toys ----------------------------------------------------------------------------------------


def test_any_mode_ignores_scores_below_the_threshold():
    truth = [gt([GT_BOX], [1])]
    assert corloc([det([GT_BOX], [0.49], [1])], truth)["corloc"] == 0.0
    assert corloc([det([GT_BOX], [0.5], [1])], truth)["corloc"] == 1.0  # >= threshold counts
    assert corloc([det([GT_BOX], [0.49], [1])], truth, score_threshold=0.4)["corloc"] == 1.0


@pytest.mark.parametrize("mode", ["any", "top1"])
def test_iou_exactly_one_half_is_no_hit(mode):
    truth = [gt([GT_BOX], [2])]
    assert corloc([det([HALF], [0.9], [2])], truth, mode=mode)["corloc"] == 0.0
    assert corloc([det([SIXTY], [0.9], [2])], truth, mode=mode)["corloc"] == 1.0
    assert corloc([det([SIXTY], [0.9], [2])], truth, mode=mode, iou_threshold=0.6)["corloc"] == 0.0


def test_wrong_class_is_no_hit():
    truth = [gt([GT_BOX], [1])]
    wrong = [det([GT_BOX], [0.95], [2])]
    assert corloc(wrong, truth, mode="any")["corloc"] == 0.0
    assert corloc(wrong, truth, mode="top1")["corloc"] == 0.0
    assert corloc(wrong, truth, mode="top1", require_class=False)["corloc"] == 1.0


def test_top1_ignores_the_score_threshold_and_uses_only_the_top_detection():
    truth = [gt([GT_BOX], [1])]
    low = [det([GT_BOX], [0.1], [1])]
    assert corloc(low, truth, mode="top1")["corloc"] == 1.0
    assert corloc(low, truth, mode="any")["corloc"] == 0.0
    top_is_wrong = [det([FAR, GT_BOX], [0.9, 0.8], [1, 1])]
    assert corloc(top_is_wrong, truth, mode="top1")["corloc"] == 0.0
    assert corloc(top_is_wrong, truth, mode="any")["corloc"] == 1.0
    # ties: the first detection is the top one
    assert corloc([det([FAR, GT_BOX], [0.7, 0.7], [1, 1])], truth, mode="top1")["corloc"] == 0.0
    assert corloc([det([GT_BOX, FAR], [0.7, 0.7], [1, 1])], truth, mode="top1")["corloc"] == 1.0
    # no detection is a miss, and still a unit
    result = corloc([det([], [], [])], truth, mode="top1")
    assert result["corloc"] == 0.0 and _hits(result) == [False]


@pytest.mark.parametrize("mode", ["any", "top1"])
def test_images_without_ground_truth_make_no_unit(mode):
    detections = [det([GT_BOX], [0.9], [1]), det([GT_BOX], [0.9], [1]), det([FAR], [0.9], [1])]
    truths = [gt([], []), gt([GT_BOX], [1]), gt([GT_BOX], [1])]
    result = corloc(detections, truths, mode=mode)
    assert _hits(result) == [True, False] and result["corloc"] == 0.5
    empty = corloc(detections[:1], truths[:1], mode=mode)
    assert math.isnan(empty["corloc"]) and empty["hits"].shape == (0,) and empty["hits"].dtype == bool
    assert math.isnan(empty["per_class"][1]) and math.isnan(empty["per_class"][2])


def test_any_mode_units_are_class_major():
    detections = [
        det([GT_BOX], [0.9], [2]),  # image 0, GT class 2: hit
        det([GT_BOX], [0.9], [2]),  # image 1, GT class 1: wrong class, miss
        det([[20, 20, 30, 30], GT_BOX], [0.8, 0.3], [1, 2]),  # image 2: class 1 hit, class 2 below 0.5 -> miss
    ]
    truths = [gt([GT_BOX], [2]), gt([GT_BOX], [1]), gt([[20, 20, 30, 30], GT_BOX], [1, 2])]
    result = corloc(detections, truths)
    # (1, img 1), (1, img 2), (2, img 0), (2, img 2)
    assert _hits(result) == [False, True, True, False]
    assert result["corloc"] == 0.5
    assert result["per_class"] == {1: 0.5, 2: 0.5}
    top1 = corloc(detections, truths, mode="top1")
    assert _hits(top1) == [True, False, True]  # image order; image 2's top detection is its class-1 hit
    assert top1["per_class"][1] == pytest.approx(1 / 2) and top1["per_class"][2] == pytest.approx(2 / 2)


def test_any_mode_hit_may_come_from_any_detection_and_any_box_of_the_class():
    detections = [det([FAR, [0, 0, 10, 9], [100, 100, 120, 130]], [0.99, 0.6, 0.7], [2, 2, 2])]
    truths = [gt([[200, 200, 210, 210], GT_BOX], [2, 2])]
    assert corloc(detections, truths)["corloc"] == 1.0


def test_torch_and_numpy_inputs_agree():
    detections = [det([GT_BOX, FAR], [0.9, 0.4], [1, 2]), det([SIXTY], [0.3], [2])]
    truths = [gt([GT_BOX], [1]), gt([GT_BOX], [2])]
    as_torch = lambda items: [{k: torch.as_tensor(v) for k, v in item.items()} for item in items]  # noqa: E731
    for mode in ("any", "top1"):
        a, b = corloc(detections, truths, mode=mode), corloc(as_torch(detections), as_torch(truths), mode=mode)
        assert _hits(a) == _hits(b) and a["corloc"] == b["corloc"]
    assert _hits(corloc(detections, truths)) == [True, False]
    assert _hits(corloc(detections, truths, mode="top1")) == [True, True]


def test_corloc_validation_names_the_image():
    truths = [gt([GT_BOX], [1]), gt([GT_BOX], [1])]
    bad_boxes = [det([GT_BOX], [0.9], [1]), {"boxes": np.zeros((2, 3)), "scores": np.zeros(2), "labels": [1, 1]}]
    with pytest.raises(ValueError, match="image 1"):
        corloc(bad_boxes, truths)
    bad_scores = [det([GT_BOX], [0.9], [1]), {"boxes": np.zeros((2, 4)), "scores": np.zeros(3), "labels": [1, 1]}]
    with pytest.raises(ValueError, match="scores of image 1"):
        corloc(bad_scores, truths)
    with pytest.raises(ValueError, match="image 0"):
        corloc([det([GT_BOX], [0.9], [1])] * 2, [{"boxes": np.zeros((1, 4)), "labels": [1, 2]}, truths[1]])
    with pytest.raises(ValueError, match="image 0"):
        corloc([{"boxes": np.zeros((1, 4))}], truths[:1])
    with pytest.raises(ValueError, match="ground truth for 2"):
        corloc([det([GT_BOX], [0.9], [1])], truths)
    with pytest.raises(ValueError, match="mode"):
        corloc(truths, truths, mode="all")


# --- §8 item 5: bootstrap CI ---------------------------------------------------------------------------------------


def test_bootstrap_is_seed_deterministic():
    values = np.random.default_rng(3).random(40) > 0.3
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    assert bootstrap_ci(values, seed=5)[1:] != bootstrap_ci(values, seed=6)[1:]


def test_bootstrap_all_ones_and_the_published_interval():
    assert bootstrap_ci(np.ones(400, dtype=bool)) == (1.0, 1.0, 1.0)
    values = np.array([1.0] * 338 + [0.0] * 62)
    assert bootstrap_ci(values) == (0.845, 0.81, 0.88)  # the paper's 84.50 (81.00-88.00)


def test_corloc_hits_feed_the_bootstrap():
    detections = [det([GT_BOX], [0.9], [1])] * 338 + [det([FAR], [0.9], [1])] * 62
    truths = [gt([GT_BOX], [1])] * 400
    result = corloc(detections, truths)
    assert result["corloc"] == 0.845
    assert bootstrap_ci(result["hits"]) == (0.845, 0.81, 0.88)


# --- FP per image ------------------------------------------------------------------------------------------------


def test_false_positives_per_image():
    detections = [det([GT_BOX] * 3, [0.9, 0.5, 0.49], [1, 2, 1]), det([], [], []), det([FAR], [0.6], [2])]
    assert false_positives_per_image(detections) == pytest.approx((2 + 0 + 1) / 3)
    assert false_positives_per_image(detections, score_threshold=0.95) == 0.0
    assert false_positives_per_image(detections, score_threshold=0.0) == pytest.approx(4 / 3)
    assert math.isnan(false_positives_per_image([]))
    torch_dets = [{k: torch.as_tensor(v) for k, v in d.items()} for d in detections]
    assert false_positives_per_image(torch_dets) == pytest.approx(1.0)


# --- image-level classification ---------------------------------------------------------------------------------


def test_image_classification_accuracy_and_auc_on_a_hand_toy():
    detections = [
        det([GT_BOX, FAR], [0.9, 0.3], [1, 2]),  # benign, predicted benign (right); malignant score 0.3
        det([GT_BOX], [0.8], [2]),  # malignant, predicted malignant (right); 0.8
        det([GT_BOX, FAR], [0.7, 0.3], [1, 2]),  # malignant, predicted benign (wrong); 0.3
        det([], [], []),  # benign, no detection (wrong); 0
        det([GT_BOX], [0.99], [2]),  # normal: not counted
    ]
    result = image_classification(detections, [1, 2, 2, 1, 0])
    assert result["accuracy"] == 0.5
    # malignant {0.8, 0.3} vs benign {0.3, 0}: 0.8>0.3, 0.8>0, 0.3=0.3 (1/2), 0.3>0 -> 3.5 / 4
    assert result["roc_auc"] == 0.875
    assert result["correct"].tolist() == [True, True, False, False] and result["correct"].dtype == bool
    assert result["scores"].tolist() == [0.3, 0.8, 0.3, 0.0]
    assert result["targets"].tolist() == [1, 2, 2, 1] and result["indices"].tolist() == [0, 1, 2, 3]


def test_image_classification_ties_perfect_ranking_and_missing_class():
    tie_first = [det([GT_BOX, FAR], [0.6, 0.6], [2, 1])]  # top on ties = first -> malignant
    assert image_classification(tie_first, torch.tensor([2]))["accuracy"] == 1.0
    assert math.isnan(image_classification(tie_first, [2])["roc_auc"])
    perfect = [det([GT_BOX], [0.9], [2]), det([GT_BOX], [0.9], [1])]
    result = image_classification(perfect, np.array([2, 1]))
    assert result["roc_auc"] == 1.0 and result["accuracy"] == 1.0
    reversed_ = image_classification([det([GT_BOX], [0.2], [2]), det([GT_BOX], [0.9], [2])], [2, 1])
    assert reversed_["roc_auc"] == 0.0 and reversed_["accuracy"] == 0.5
    none = image_classification([det([], [], [])], [0])
    assert math.isnan(none["accuracy"]) and none["correct"].shape == (0,)
    with pytest.raises(ValueError, match="image classes"):
        image_classification(perfect, [1])


def test_corloc_difference_is_the_paired_bootstrap_of_the_two_hit_vectors():
    """A hits units 0, 1, 3 and B only unit 1: difference 0.5; the CI resamples the same units for both models."""
    from semizoo.metrics import corloc_difference

    truths = [{"boxes": np.array([[0.0, 0.0, 10.0, 10.0]]), "labels": np.array([1])} for _ in range(4)]
    hit = {"boxes": np.array([[0.0, 0.0, 10.0, 10.0]]), "scores": np.array([0.9]), "labels": np.array([1])}
    miss = {"boxes": np.array([[20.0, 20.0, 30.0, 30.0]]), "scores": np.array([0.9]), "labels": np.array([1])}
    result = corloc_difference([hit, hit, miss, hit], [miss, hit, miss, miss], truths)
    assert result["a"] == 0.75 and result["b"] == 0.25 and result["difference"] == 0.5 and result["units"] == 4
    a, b = np.array([1.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 0.0])
    idx = np.random.default_rng(0).integers(0, 4, size=(1000, 4))
    low, high = np.percentile(a[idx].mean(1) - b[idx].mean(1), [2.5, 97.5])
    assert result["ci_low"] == pytest.approx(low) and result["ci_high"] == pytest.approx(high)
    with pytest.raises(ValueError, match="model A has 4 images but model B 3"):
        corloc_difference([hit] * 4, [hit] * 3, truths)
