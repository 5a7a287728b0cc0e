import math

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary
from semizoo.metrics import (
    SegmentationMetric,
    binary_metrics,
    bootstrap_ci,
    bootstrap_ci_diff,
    confusion_counts,
    confusion_summary,
    multiclass_metrics,
)


def _random_blob_pair(rng, shape):
    """Two overlapping, irregular non-empty masks."""
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")

    def blob():
        centre = [rng.uniform(0.3 * s, 0.7 * s) for s in shape]
        radii = [rng.uniform(0.15 * s, 0.35 * s) for s in shape]
        dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
        return (dist < 1.0) ^ (rng.random(shape) < 0.03)

    return blob(), blob()


CASES = [
    ("2d_iso", (40, 48), None),
    ("2d_aniso", (40, 48), (0.7, 1.9)),
    ("3d_iso", (24, 28, 16), None),
    ("3d_aniso", (24, 28, 16), (0.625, 0.625, 2.5)),
]


@pytest.mark.parametrize("name, shape, spacing", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_equal_medpy(name, shape, spacing, seed):
    rng = np.random.default_rng(seed)
    pred, ref = _random_blob_pair(rng, shape)
    ours = binary_metrics(pred, ref, spacing=spacing)
    expected = {
        "dice": medpy_binary.dc(pred, ref),
        "jaccard": medpy_binary.jc(pred, ref),
        "hd95": medpy_binary.hd95(pred, ref, voxelspacing=spacing),
        "asd": medpy_binary.asd(pred, ref, voxelspacing=spacing),
        "assd": medpy_binary.assd(pred, ref, voxelspacing=spacing),
    }
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("offset", [(30, 25, 20), (0, 0, 0), (49, 50, 30)], ids=["inside", "low_edges", "high_edges"])
def test_surface_metrics_of_small_masks_in_a_large_volume_equal_medpy(offset):
    # binary_metrics measures surfaces inside the masks' bounding box; medpy uses the whole volume.
    rng = np.random.default_rng(7)
    small_pred, small_ref = _random_blob_pair(rng, (15, 14, 10))
    pred, ref = np.zeros((64, 64, 40), bool), np.zeros((64, 64, 40), bool)
    window = tuple(slice(o, o + s) for o, s in zip(offset, small_pred.shape))
    pred[window], ref[window] = small_pred, small_ref
    spacing = (0.625, 0.7, 2.5)
    ours = binary_metrics(pred, ref, spacing=spacing)
    assert ours["hd95"] == pytest.approx(medpy_binary.hd95(pred, ref, voxelspacing=spacing), abs=1e-9)
    assert ours["asd"] == pytest.approx(medpy_binary.asd(pred, ref, voxelspacing=spacing), abs=1e-9)
    assert ours["assd"] == pytest.approx(medpy_binary.assd(pred, ref, voxelspacing=spacing), abs=1e-9)


def test_asd_is_directional_and_spacing_scales_distances():
    pred = np.zeros((30, 30), bool)
    ref = np.zeros((30, 30), bool)
    pred[5:10, 5:10] = True
    ref[5:25, 5:25] = True
    forward, backward = binary_metrics(pred, ref), binary_metrics(ref, pred)
    assert forward["asd"] != pytest.approx(backward["asd"])
    assert forward["assd"] == pytest.approx(backward["assd"])
    doubled = binary_metrics(pred, ref, spacing=(2.0, 2.0))
    assert doubled["hd95"] == pytest.approx(2 * forward["hd95"])
    assert doubled["dice"] == forward["dice"]


@pytest.mark.parametrize(
    "pred_empty, ref_empty, empty, expected",
    [
        (True, True, "explicit", (1.0, 1.0, 0.0, 0.0)),
        (True, False, "explicit", (0.0, 0.0, math.nan, math.nan)),
        (False, True, "explicit", (0.0, 0.0, math.nan, math.nan)),
        (True, True, "paper", (0.0, 0.0, 0.0, 0.0)),
        (True, False, "paper", (0.0, 0.0, 0.0, 0.0)),
        (False, True, "paper", (1.0, 1.0, 0.0, 0.0)),
    ],
    ids=["explicit_both", "explicit_pred", "explicit_ref", "paper_both", "paper_pred", "paper_ref"],
)
def test_empty_case_rules(pred_empty, ref_empty, empty, expected):
    full = np.zeros((12, 12, 6), bool)
    full[3:8, 3:8, 2:4] = True
    none = np.zeros_like(full)
    result = binary_metrics(none if pred_empty else full, none if ref_empty else full, empty=empty)
    got = (result["dice"], result["jaccard"], result["hd95"], result["asd"])
    for g, e in zip(got, expected):
        assert (math.isnan(g) and math.isnan(e)) or g == e


def test_binary_metrics_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        binary_metrics(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="empty must be one of"):
        binary_metrics(np.ones((4, 4)), np.ones((4, 4)), empty="zero")
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(np.ones((4, 4)), np.ones((4, 4)), spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="2D or 3D"):
        binary_metrics(np.ones(4), np.ones(4))


def test_multiclass_metrics_per_class_and_mean():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 4, size=(20, 20, 8))
    pred = ref.copy()
    pred[rng.random(ref.shape) < 0.2] = 0
    result = multiclass_metrics(pred, ref, classes=4, spacing=(1.0, 1.0, 3.0))
    assert sorted(result["per_class"]) == [1, 2, 3]
    for c in (1, 2, 3):
        assert result["per_class"][c]["dice"] == pytest.approx(medpy_binary.dc(pred == c, ref == c))
    assert result["mean"]["dice"] == pytest.approx(np.mean([result["per_class"][c]["dice"] for c in (1, 2, 3)]))
    # explicit labels (EPL: background last) and nan-aware mean with a count
    pred_missing = np.where(pred == 2, 0, pred)
    result = multiclass_metrics(pred_missing, ref, classes=[1, 2, 3])
    assert result["undefined"]["hd95"] == 1
    assert result["mean"]["hd95"] == pytest.approx(
        np.mean([result["per_class"][1]["hd95"], result["per_class"][3]["hd95"]])
    )


def test_segmentation_metric_for_evaluators_matches_binary_metrics():
    rng = np.random.default_rng(4)
    ref = torch.as_tensor(rng.integers(0, 3, size=(2, 1, 16, 16)))
    pred = ref.clone()
    pred[:, :, :4] = 0
    onehot = torch.nn.functional.one_hot(pred[:, 0], 3).permute(0, 3, 1, 2).float()
    metric = SegmentationMetric("dice", classes=3)
    metric(y_pred=onehot, y=ref)
    per_case = metric.aggregate("none")
    assert per_case.shape == (2, 2)
    expected = [[binary_metrics(pred[b, 0] == c, ref[b, 0] == c)["dice"] for c in (1, 2)] for b in range(2)]
    assert torch.allclose(per_case, torch.tensor(expected, dtype=torch.float64))
    assert float(metric.aggregate()) == pytest.approx(float(np.mean(expected)))


def test_bootstrap_reproduces_the_wssdl_published_interval():
    values = np.array([1.0] * 338 + [0.0] * 62)
    mean, low, high = bootstrap_ci(values)
    assert (mean, low, high) == pytest.approx((0.845, 0.81, 0.88), abs=1e-12)


def test_bootstrap_follows_the_specified_algorithm():
    values = np.random.default_rng(1).random(25)
    idx = np.random.default_rng(7).integers(0, 25, size=(500, 25))
    expected = np.percentile(values[idx].mean(1), [5.0, 95.0])
    mean, low, high = bootstrap_ci(values, n_resamples=500, level=0.9, seed=7)
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(tuple(expected))
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(np.ones(9)) == (1.0, 1.0, 1.0)


def test_paired_bootstrap_difference():
    rng = np.random.default_rng(2)
    a = rng.random(30)
    b = a - 0.1 + rng.normal(0, 0.01, 30)
    diff, low, high = bootstrap_ci_diff(a, b)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert low < diff < high and low > 0.09 and high < 0.11  # pairing removes the between-case spread
    idx = np.random.default_rng(0).integers(0, 30, size=(1000, 30))
    expected = np.percentile(a[idx].mean(1) - b[idx].mean(1), [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(expected))
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ci_diff(a, b[:5])
    with pytest.raises(ValueError, match="nan"):
        bootstrap_ci([1.0, math.nan])


def test_confusion_counts_and_summary_by_hand():
    ref = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 0], [2, 2, 1, 2]])
    counts = confusion_counts(pred, ref, 3)
    # rows = reference, columns = prediction, counted by hand from the arrays above
    assert counts.tolist() == [[1, 1, 1], [1, 1, 0], [0, 1, 2]]
    summary = confusion_summary(counts, {1: "a", 2: "b"})
    assert summary["per_class"]["a"] == {"recall": 0.5, "precision": 1 / 3, "volume_ratio": 1.5}
    assert summary["per_class"]["b"]["volume_ratio"] == 1.0 and summary["rates"][2] == [0.0, 1 / 3, 2 / 3]
    empty = confusion_summary(confusion_counts(np.zeros(4, int), np.zeros(4, int), 2), {1: "a"})
    assert empty["per_class"]["a"] == {"recall": None, "precision": None, "volume_ratio": None}
    assert empty["rates"][1] == [None, None]


def test_confusion_counts_rejects_probabilities_and_shape_mismatch():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_counts(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_counts(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)


def test_binary_metrics_computes_only_what_is_asked(monkeypatch):
    import semizoo.metrics.segmentation as segmentation

    pred, ref = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    pred[2:6, 2:6], ref[3:7, 3:7] = True, True
    full = binary_metrics(pred, ref)

    def _no_surfaces(*args, **kwargs):
        raise AssertionError("surfaces extracted for an overlap-only request")

    monkeypatch.setattr(segmentation, "surface_distances", _no_surfaces)
    assert binary_metrics(pred, ref, metrics=("dice",)) == {"dice": full["dice"]} == {"dice": 2 * 9 / 32}
    assert binary_metrics(pred, ~pred & False, metrics=("jaccard",)) == {"jaccard": 0.0}
    with pytest.raises(ValueError, match="subset"):
        binary_metrics(pred, ref, metrics=("dice", "hausdorff"))
