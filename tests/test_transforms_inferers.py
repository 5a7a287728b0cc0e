import itertools
import math

import numpy as np
import pytest
import torch
from monai.transforms import KeepLargestConnectedComponent
from scipy import ndimage
from semizoo.engines import slice_wise_inferer, strided_sliding_window_inferer
from semizoo.handlers import SegmentationReport
from semizoo.metrics import multiclass_metrics
from semizoo.transforms import SSL4MISRandomGeneratord, UAMTRandCropd
from skimage.measure import label as skimage_label


def test_ssl4mis_generator_applies_one_draw_to_image_and_label():
    image = np.random.rand(1, 40, 30).astype(np.float32)
    transform = SSL4MISRandomGeneratord(["image", "label"], output_size=(64, 64))
    modes = set()
    for seed in range(40):
        transform.set_random_state(seed)
        out = transform({"image": image, "label": (image > 0.5).astype(np.uint8)})
        assert out["image"].shape == (1, 64, 64) and out["label"].shape == (1, 64, 64)
        # nearest interpolation everywhere: the label is still the thresholded image
        assert np.array_equal(out["label"], (out["image"] > 0.5).astype(np.uint8))
        modes.add(transform._mode)
    assert modes == {"rot_flip", "rotate", "none"}


def test_ssl4mis_generator_matches_the_reference_operations():
    image = np.random.rand(1, 20, 24)
    transform = SSL4MISRandomGeneratord(["image"], output_size=(40, 48))
    for seed in range(30):
        transform.set_random_state(seed)
        out = transform({"image": image})["image"][0]
        plane = image[0]
        if transform._mode == "rot_flip":
            plane = np.flip(np.rot90(plane, transform._k), axis=transform._flip_axis)
        elif transform._mode == "rotate":
            assert -20 <= transform._angle <= 19
            plane = ndimage.rotate(plane, transform._angle, order=0, reshape=False)
        expected = ndimage.zoom(plane, (40 / plane.shape[0], 48 / plane.shape[1]), order=0)
        assert np.array_equal(out, expected)


def test_uamt_crop_pads_like_the_reference_and_keeps_pairs_aligned():
    crop = UAMTRandCropd(["image", "label"], roi_size=(16, 16, 8))
    assert crop.padding((30, 30, 20)) == [0, 0, 0]
    assert crop.padding((30, 12, 20)) == [max((16 - 30) // 2 + 3, 0), (16 - 12) // 2 + 3, max((8 - 20) // 2 + 3, 0)]
    volume = np.arange(20 * 12 * 10, dtype=np.float32).reshape(1, 20, 12, 10)
    offsets = set()
    for seed in range(50):
        crop.set_random_state(seed)
        out = crop({"image": volume, "label": volume.copy()})
        assert out["image"].shape == (1, 16, 16, 8) and np.array_equal(out["image"], out["label"])
        offsets.add(crop._offsets)
    padded = [20 + 2 * 1, 12 + 2 * 5, 10 + 2 * 2]  # every axis padded once one axis is too small
    assert all(0 <= o < n - p for off in offsets for o, n, p in zip(off, padded, (16, 16, 8)))
    assert max(o[0] for o in offsets) == 22 - 16 - 1  # exclusive upper bound, as UA-MT


@pytest.mark.parametrize("size", [(112, 150, 80), (150, 200, 101), (113, 130, 120), (160, 112, 95)])
def test_sliding_window_starts_match_the_official_formula(size):
    roi, strides = (112, 112, 80), (18, 18, 4)
    starts = set()

    class Recorder(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    inferer = strided_sliding_window_inferer(roi, strides)
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    interval = _get_scan_interval(size, roi, 3, inferer.overlap)
    for window in dense_patch_slices(size, roi, interval):
        starts.add(tuple(s.start for s in window))
    official = [
        sorted({min(i * s, n - p) for i in range(math.ceil((n - p) / s) + 1)}) for n, p, s in zip(size, roi, strides)
    ]
    assert starts == set(itertools.product(*official))


def test_sliding_window_averages_softmax_and_pads_small_volumes():
    net = torch.nn.Conv3d(1, 2, 1)
    x = torch.randn(1, 1, 20, 18, 10)  # smaller than the window in every axis
    out = strided_sliding_window_inferer((32, 32, 16), (8, 8, 4))(x, net)
    assert out.shape == (1, 2, 20, 18, 10)
    assert torch.allclose(out.sum(1), torch.ones(1, 20, 18, 10))
    # a pointwise network gives exactly its own softmax whatever the windows
    assert torch.allclose(out, torch.softmax(net(x), 1), atol=1e-6)


def test_largest_component_equals_skimage():
    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((24, 24, 12)) > 0.6)
    components = skimage_label(mask, connectivity=3)
    sizes = np.bincount(components.ravel())[1:]
    expected = components == (np.argmax(sizes) + 1)
    got = KeepLargestConnectedComponent(applied_labels=[1], connectivity=3)(
        torch.as_tensor(mask[None].astype(np.uint8))
    )
    assert np.array_equal(np.asarray(got[0]).astype(bool), expected)


def test_slice_wise_inferer_resizes_there_and_back():
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[2:]))
            return torch.cat([x * 0, x, 1 - x], dim=1)  # class 1 where x > 0.5, else class 2

    volume = torch.rand(1, 1, 3, 20, 26)
    out = slice_wise_inferer((32, 32))(volume, Net())
    assert out.shape == (1, 3, 3, 20, 26) and set(seen) == {(32, 32)}
    labels = out.argmax(1)[0].numpy()
    for z in range(3):
        plane = ndimage.zoom(volume[0, 0, z].numpy(), (32 / 20, 32 / 26), order=0)
        expected = ndimage.zoom(np.where(plane > 0.5, 1, 2), (20 / 32, 26 / 32), order=0)
        assert np.array_equal(labels[z], expected)


def test_segmentation_report_writes_metrics_csv_and_figures(tmp_path):
    rng = np.random.default_rng(0)
    report = SegmentationReport(
        tmp_path, {"0": "background", "1": "rv", "2": "lv"}, checkpoint="x/model.pt", slice_axis=0
    )
    pairs = []
    for index in range(5):
        ref = np.zeros((4, 24, 24), np.int64)
        ref[:, 4:12, 4:12], ref[:, 14:20, 10:20] = 1, 2
        pred = np.where(rng.random(ref.shape) < 0.1 * index, 0, ref)
        pairs.append((pred, ref))
        report.add_case(f"case{index}", pred, ref, (5.0, 1.5, 1.5), rng.random((4, 24, 24)))
    result = report.write()
    folder = tmp_path / "model"
    assert (folder / "metrics.json").is_file() and (folder / "overlays.png").stat().st_size > 1000
    assert (folder / "boxplot_dice.png").is_file()
    rows = (folder / "metrics.csv").read_text().splitlines()
    assert rows[0] == "case,unit,class,dice,jaccard,hd95,asd,assd" and len(rows) == 1 + 5 * 2 * 3
    case_means = [c["voxel"]["mean"]["dice"] for c in result["cases"]]
    assert result["summary"]["voxel"]["dice"]["mean"] == pytest.approx(np.mean(case_means))
    last = multiclass_metrics(*pairs[-1], classes=[1, 2], spacing=(5.0, 1.5, 1.5))
    assert result["cases"][-1]["mm"]["per_class"]["1"]["hd95"] == last["per_class"][1]["hd95"]
    assert result["cases"][-1]["mm"]["mean"]["dice"] == last["mean"]["dice"]
    # pooled confusion: the same count taken directly from the label maps
    dropped = sum(int(((ref == 1) & (pred == 0)).sum()) for pred, ref in pairs)
    assert result["confusion"]["counts"][1][0] == dropped and result["confusion"]["counts"][1][2] == 0
    rv_voxels = sum(int((ref == 1).sum()) for _, ref in pairs)
    assert result["confusion"]["per_class"]["rv"]["recall"] == pytest.approx(1 - dropped / rv_voxels)
    assert result["summary"]["voxel"]["dice"]["ci_low"] <= result["summary"]["voxel"]["dice"]["mean"]
    assert result["per_class"]["rv"]["mm"]["dice"]["n"] == 5
