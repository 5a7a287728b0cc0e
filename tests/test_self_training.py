"""WSSDL self-training selection (wssdl.md §4 "Self-training", §8 item 8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from semizoo.data.self_training import select_pseudo_boxes


def det(boxes, scores, labels):
    return {
        "boxes": np.asarray(boxes, dtype=float).reshape(-1, 4),
        "scores": np.asarray(scores, dtype=float),
        "labels": np.asarray(labels, dtype=np.int64),
    }


def _weak(classes):
    return [{"image": f"w{i}.png", "image_class": c} for i, c in enumerate(classes)]


def _ids(entries):
    return [e["image"] for e in entries]


# w0: top detection (0.95) says malignant on a benign image -> filtered out although a benign box exists
# w1: agrees, 0.6      w2: no detection      w3: tie 0.8/0.8, the first (benign) is the top -> disagrees
# w4: agrees, 0.7      w5: agrees through its second detection, 0.99
WEAK = _weak([1, 2, 1, 2, 1, 2])
DETECTIONS = [
    det([[1, 1, 5, 5], [2, 2, 6, 6]], [0.9, 0.95], [1, 2]),
    det([[10, 20, 30, 40]], [0.6], [2]),
    det([], [], []),
    det([[0, 0, 4, 4], [1, 1, 2, 2]], [0.8, 0.8], [1, 2]),
    det([[3.5, 4.25, 9, 11]], [0.7], [1]),
    det([[0, 0, 1, 1], [7, 8, 9, 10]], [0.3, 0.99], [2, 2]),
]


def test_agreement_filter_and_ranking_keep_the_original_order():
    moved, remaining = select_pseudo_boxes(WEAK, DETECTIONS, 0.34)  # floor(0.34 * 6) = 2: w5 (0.99), w4 (0.7)
    assert _ids(moved) == ["w4.png", "w5.png"]
    assert _ids(remaining) == ["w0.png", "w1.png", "w2.png", "w3.png"]
    assert moved[0]["box"] == [[3.5, 4.25, 9.0, 11.0]] and moved[0]["label"] == [1]
    assert moved[1]["box"] == [[7.0, 8.0, 9.0, 10.0]] and moved[1]["label"] == [2]
    assert moved[1]["pseudo_score"] == pytest.approx(0.99) and moved[0]["pseudo_score"] == pytest.approx(0.7)
    assert all(type(v) is float for v in moved[0]["box"][0]) and type(moved[0]["pseudo_score"]) is float
    assert type(moved[0]["label"][0]) is int
    assert moved[0]["image_class"] == 1 and moved[0]["image"] == "w4.png"
    assert "box" not in WEAK[4]  # the input entries are not modified


def test_floor_of_the_fraction_and_the_cap_when_fewer_candidates():
    moved, remaining = select_pseudo_boxes(WEAK, DETECTIONS, 0.5)  # floor(3.0) = 3 = all candidates
    assert _ids(moved) == ["w1.png", "w4.png", "w5.png"] and _ids(remaining) == ["w0.png", "w2.png", "w3.png"]
    moved, remaining = select_pseudo_boxes(WEAK, DETECTIONS, 0.75)  # floor(4.5) = 4 > 3 candidates
    assert _ids(moved) == ["w1.png", "w4.png", "w5.png"] and len(remaining) == 3
    moved, _ = select_pseudo_boxes(WEAK, DETECTIONS, 1.0)
    assert len(moved) == 3
    moved, remaining = select_pseudo_boxes(WEAK, DETECTIONS, 0.16)  # floor(0.96) = 0
    assert moved == [] and _ids(remaining) == _ids(WEAK)
    moved, _ = select_pseudo_boxes(WEAK, DETECTIONS, 0.2)  # floor(1.2) = 1: the best one only
    assert _ids(moved) == ["w5.png"]


def test_floor_is_not_fooled_by_float_round_off():
    weak = _weak([1] * 100)
    detections = [det([[0, 0, 1, 1]], [0.5 + i / 1000], [1]) for i in range(100)]
    moved, remaining = select_pseudo_boxes(weak, detections, 0.57)  # 0.57 * 100 = 56.99999999999999 in floats
    assert len(moved) == 57 and len(remaining) == 43
    assert _ids(moved) == [f"w{i}.png" for i in range(43, 100)]  # the 57 highest scores


def test_ties_are_broken_by_list_order():
    weak = _weak([2, 1, 2, 1])
    detections = [det([[0, 0, 1, 1]], [0.5], [c]) for c in (2, 1, 2, 1)]
    moved, remaining = select_pseudo_boxes(weak, detections, 0.5)
    assert _ids(moved) == ["w0.png", "w1.png"] and _ids(remaining) == ["w2.png", "w3.png"]
    detections[3] = det([[0, 0, 1, 1]], [0.6], [1])
    moved, _ = select_pseudo_boxes(weak, detections, 0.5)
    assert _ids(moved) == ["w0.png", "w3.png"]


def test_torch_detections_and_a_custom_label_key():
    weak = [{"image": "a.png", "y": 2}, {"image": "b.png", "y": 1}]
    detections = [
        {"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "scores": torch.tensor([0.4]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[5.0, 6.0, 7.0, 8.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([2])},
    ]
    moved, remaining = select_pseudo_boxes(weak, detections, 1.0, label_key="y")
    assert _ids(moved) == ["a.png"] and moved[0]["box"] == [[1.0, 2.0, 3.0, 4.0]] and moved[0]["label"] == [2]
    assert _ids(remaining) == ["b.png"]


def test_empty_weak_set():
    assert select_pseudo_boxes([], [], 0.5) == ([], [])


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_fraction_outside_the_unit_interval_is_an_error(fraction):
    with pytest.raises(ValueError, match="fraction"):
        select_pseudo_boxes(WEAK, DETECTIONS, fraction)


def test_malformed_inputs_are_errors():
    with pytest.raises(ValueError, match="6 weak entries but 5"):
        select_pseudo_boxes(WEAK, DETECTIONS[:5], 0.5)
    with pytest.raises(ValueError, match="image_class"):
        select_pseudo_boxes([{"image": "x.png"}], [det([], [], [])], 0.5)
    with pytest.raises(ValueError, match=r"detections\[0\]"):
        select_pseudo_boxes(_weak([1]), [{"boxes": np.zeros((2, 4)), "scores": [0.1], "labels": [1]}], 0.5)
    with pytest.raises(ValueError, match=r"detections\[0\]"):
        select_pseudo_boxes(_weak([1]), [{"scores": [0.1]}], 0.5)
