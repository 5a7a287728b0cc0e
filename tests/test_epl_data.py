"""M&Ms data for EPL (epl.md §3, §7, §8 items 7 and 8; datasets.md §1.3, §2, §4): phantoms, ``prepare mnms``, the
leave-one-vendor-out split rule, the cine reader, the EPL transforms and the evaluation protocol."""

from __future__ import annotations

import json
import math

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from semizoo.data import DataError, LoadCined, SlicePool, load_split
from semizoo.data.mnms import labeled_count, mnms_split
from semizoo.data.phantoms import generate
from semizoo.data.prepare import PrepareError, prepare
from semizoo.handlers import VendorDiceReport
from semizoo.metrics import epl_slice_dice, vendor_average, vendor_summary
from semizoo.transforms import (
    EPLGeometryd,
    FourierTwind,
    ProbabilityThresholdd,
    epl_train_transforms,
    fourier_amplitude_swap,
    match_histogram,
    percentile_min_max,
)

REAL_COUNTS = {("A", 1): 95, ("B", 2): 74, ("B", 3): 51, ("C", 4): 50, ("D", 5): 50}


@pytest.fixture(scope="module")
def mnms(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnms")
    generate("mnms", root / "raw", seed=0, preset="test")
    prepare("mnms", root / "raw", root / "prepared")
    return root


def real_cases() -> list[dict]:
    return [
        {"code": f"{vendor}{centre}{k:03d}", "vendor": vendor, "centre": centre, "labeled": True}
        for (vendor, centre), n in REAL_COUNTS.items()
        for k in range(n)
    ]


@pytest.mark.parametrize("fraction, expected", [(0.02, [3, 3, 3, 2, 2]), (0.05, [6, 5, 4, 4, 4])])
def test_labeled_patients_follow_the_epl_table(fraction, expected):
    assert [labeled_count(n, fraction) for n in REAL_COUNTS.values()] == expected
    for target in "ABCD":
        split = mnms_split(real_cases(), target, fraction)
        per_folder = {}
        for code in split["labeled"]:
            per_folder[code[:2]] = per_folder.get(code[:2], 0) + 1
        want = {f"{v}{c}": n for (v, c), n in zip(REAL_COUNTS, expected) if v != target}
        assert per_folder == want
        assert set(split["labeled"]) <= set(split["unlabeled"])
        assert all(code.startswith(target) for code in split["test"]) and len(split["test"]) == sum(
            n for (v, _), n in REAL_COUNTS.items() if v == target
        )
        training = split["labeled"] + split["unlabeled"] + split["validation"]
        assert not any(code.startswith(target) for code in training)
        assert not set(split["validation"]) & set(split["unlabeled"])
        # validation = the last ceil(0.1 N) patients by code of each source folder
        for (vendor, centre), n in REAL_COUNTS.items():
            if vendor != target:
                tail = [f"{vendor}{centre}{k:03d}" for k in range(n - math.ceil(0.1 * n), n)]
                assert set(tail) <= set(split["validation"])
                assert labeled_count(n, fraction) == sum(c.startswith(f"{vendor}{centre}") for c in split["labeled"])
    first = mnms_split(real_cases(), "D", 0.05)["labeled"]
    assert first[:6] == [f"A1{k:03d}" for k in range(6)]
    drawn = mnms_split(real_cases(), "D", 0.05, selection="random", seed=3)["labeled"]
    assert len(drawn) == len(first) and drawn != first
    assert drawn == mnms_split(real_cases(), "D", 0.05, selection="random", seed=3)["labeled"]


def test_phantom_vendors_labels_and_determinism(tmp_path, mnms):
    raw = mnms / "raw" / "OpenDataset"
    rows = (raw / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv").read_text().splitlines()
    assert rows[0] == ",External code,VendorName,Vendor,Centre,ED,ES" and len(rows) == 17
    info = {r.split(",")[1]: r.split(",") for r in rows[1:]}
    intensities = {}
    for gt in sorted(raw.rglob("*_sa_gt.nii.gz")):
        code = gt.name[:6]
        label = np.asarray(nib.load(str(gt)).dataobj)
        image = np.asarray(nib.load(str(gt.with_name(f"{code}_sa.nii.gz"))).dataobj)
        assert image.shape == label.shape and image.ndim == 4
        ed, es = int(info[code][5]), int(info[code][6])
        annotated = [t for t in range(label.shape[3]) if label[..., t].any()]
        assert annotated == sorted({ed, es}) and ed != es
        assert set(np.unique(label)) <= {0, 1, 2, 3} and {1, 2, 3} <= set(np.unique(label))
        intensities.setdefault(info[code][3], []).append(percentile_min_max(image.astype(float)).ravel())
    from scipy.stats import ks_2samp

    vendors = sorted(intensities)
    assert vendors == ["A", "B", "C", "D"]
    for i, a in enumerate(vendors):
        for b in vendors[i + 1 :]:
            assert ks_2samp(np.concatenate(intensities[a]), np.concatenate(intensities[b])).statistic > 0.2, (a, b)
    generate("mnms", tmp_path / "again", seed=0, preset="test")
    first = sorted(p.relative_to(mnms / "raw") for p in (mnms / "raw").rglob("*.nii.gz"))
    for rel in first[:4]:
        assert (tmp_path / "again" / rel).read_bytes() == (mnms / "raw" / rel).read_bytes()


def test_prepare_writes_cine_files_and_every_setting(mnms):
    out = mnms / "prepared"
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["patients"] == {"A": 4, "B": 4, "C": 3, "D": 4}  # the vendor-C unlabelled case is unused
    assert sorted(p.stem for p in (out / "datalists").glob("*.json")) == sorted(
        f"target{v}_{f}" for v in "ABCD" for f in ("2pct", "5pct", "10pct", "full")
    )
    datalist = json.loads((out / "datalists" / "targetB_5pct.json").read_text())
    assert datalist["classes"] == {"0": "background", "1": "lv", "2": "myocardium", "3": "rv"}
    assert {e["vendor"] for e in datalist["test"]} == {"B"}
    assert not {e["vendor"] for k in ("labeled", "unlabeled", "validation") for e in datalist[k]} & {"B"}
    assert all("label" not in e for e in datalist["unlabeled"])
    entry = datalist["labeled"][0]
    code, vendor = entry["patient"], entry["vendor"]
    raw = next((mnms / "raw" / "OpenDataset").rglob(f"{code}_sa_gt.nii.gz"))
    gt = np.asarray(nib.load(str(raw)).dataobj)
    image = np.asarray(nib.load(str(raw.with_name(f"{code}_sa.nii.gz"))).dataobj)
    with h5py.File(out / "data" / "mnms" / vendor / f"{code}.h5") as handle:
        assert handle["image"].shape == image.shape[::-1] and handle["label"].shape == (2, *image.shape[2::-1])
        es = int(handle.attrs["es"])
        np.testing.assert_array_equal(handle["label"][1], gt[..., es].transpose(2, 1, 0))
        np.testing.assert_allclose(handle["image"][es], image[..., es].transpose(2, 1, 0))
    loaded = LoadCined()(load_split(out / "datalists" / "targetB_5pct.json", "labeled")[0])
    assert loaded["image"].shape == image.shape[1::-1] and loaded["label"].shape == image.shape[1::-1]
    np.testing.assert_allclose(loaded["image"].numpy(), image[:, :, entry["slice"], entry["frame"]].T)
    np.testing.assert_array_equal(loaded["label"].numpy(), gt[:, :, entry["slice"], entry["frame"]].T)
    bad = dict(load_split(out / "datalists" / "targetB_5pct.json", "labeled")[0], frame=99)
    with pytest.raises(DataError, match=r"'image' index 99 outside"):
        LoadCined()(bad)


def test_prepare_reports_a_corrupt_or_mismatched_case_and_writes_nothing(tmp_path, mnms):
    src = tmp_path / "src"
    import shutil

    shutil.copytree(mnms / "raw", src)
    gts = sorted(src.rglob("*_sa_gt.nii.gz"))
    gts[0].write_bytes(b"not a nifti")
    gt = nib.load(str(gts[1]))
    nib.save(nib.Nifti1Image(np.asarray(gt.dataobj)[:, :, :-1], gt.affine), str(gts[1]))
    with pytest.raises(PrepareError) as info:
        prepare("mnms", src, tmp_path / "out")
    message = str(info.value)
    assert f"{gts[0]}: cannot read NIfTI" in message
    assert f"{gts[1]}: shape" in message and "!= image" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_histogram_matching_equals_skimage():
    from skimage.exposure import match_histograms

    rng = np.random.default_rng(0)
    image, reference = rng.gamma(2.0, size=(37, 41)), rng.normal(5.0, 2.0, size=(50, 30))
    np.testing.assert_allclose(match_histogram(image, reference), match_histograms(image, reference), atol=1e-9)
    normalised = percentile_min_max(np.concatenate([image.ravel(), [1e6]]))
    assert normalised.min() == 0.0 and normalised.max() == 1.0 and normalised.dtype == np.float32


def test_geometry_and_twin_share_the_draws(mnms):
    datalist = mnms / "prepared" / "datalists" / "targetD_5pct.json"
    pool = SlicePool.from_datalist(datalist, "unlabeled")
    assert {e["domain"] for e in pool.entries} == {"A", "B", "C"}
    assert SlicePool.from_datalist(datalist, "unlabeled", domain="first_source").domain == "A"
    image = torch.rand(1, 30, 40)
    label = torch.zeros(1, 30, 40, dtype=torch.long)
    label[:, 10:20, 10:20] = 3
    geometry = EPLGeometryd(target_spacing=2.0)
    geometry.set_random_state(1)
    out = geometry({"image": image, "label": label, "spacing": [3.0, 2.5]})
    assert out["image"].shape == (1, int(30 * 3.0 / 2.0), int(40 * 2.5 / 2.0)) == out["label"].shape
    assert 0 <= out["epl_angle"] <= 90 and set(torch.unique(out["label"]).tolist()) <= {0, 3}
    twin = FourierTwind(pool=pool, target_spacing=2.0)
    twin.set_random_state(4)
    result = twin({"image": image, "epl_angle": 17})
    twin.set_random_state(4)
    target = twin.target_like(image, 17)
    assert target.shape == image.shape
    torch.testing.assert_close(
        result["image_fourier"], fourier_amplitude_swap(image, target.float(), 0.01, 1.0).float()
    )


def test_train_pipelines_give_crops_and_twins(mnms):
    datalist = mnms / "prepared" / "datalists" / "targetD_5pct.json"
    pool = SlicePool.from_datalist(datalist, "unlabeled")
    labeled = epl_train_transforms(True, pool, pool, target_spacing=2.5, pad_size=68, crop_size=64)
    unlabeled = epl_train_transforms(False, pool, pool, target_spacing=2.5, pad_size=68, crop_size=64)
    a = labeled(load_split(datalist, "labeled")[0])
    b = unlabeled(load_split(datalist, "unlabeled")[0])
    assert a["image"].shape == a["label"].shape == (1, 64, 64) and "image_fourier" not in a
    assert b["image"].shape == b["image_fourier"].shape == (1, 64, 64) and "label" not in b
    assert float(a["image"].min()) >= 0.0 and float(a["image"].max()) <= 1.0
    assert not torch.allclose(b["image"], b["image_fourier"])


def test_probability_threshold_differs_from_argmax():
    probs = torch.tensor([0.30, 0.45, 0.0, 0.25]).view(4, 1, 1).repeat(1, 2, 2)
    probs[:, 0, 0] = torch.tensor([0.1, 0.7, 0.1, 0.1])
    label = ProbabilityThresholdd()({"pred": probs})["pred"]
    assert label.shape == (1, 2, 2)
    assert label[0, 0, 0] == 1 and label[0, 1, 1] == 0  # argmax would say 1 (LV) at 0.45
    assert probs.argmax(0)[1, 1] == 1


def test_evaluation_protocol():
    empty = np.zeros((1, 4, 4), dtype=int)
    assert epl_slice_dice(empty, empty)[0] == pytest.approx(1.0)
    pred = np.zeros((2, 4, 4), dtype=int)
    ref = np.zeros((2, 4, 4), dtype=int)
    pred[0, :2, :2], ref[0, :2, :2] = 1, 1  # 4 agreeing LV pixels
    pred[0, 3, 3], ref[0, 3, 3] = 2, 3  # a foreground pixel of the wrong class counts in both sums, not in overlap
    ref[1, 0, 0] = 2
    dice = epl_slice_dice(pred, ref)
    assert dice[0] == pytest.approx((2 * 4 + 1e-4) / (5 + 5 + 1e-4))
    assert dice[1] == pytest.approx(1e-4 / (1 + 1e-4))
    report = VendorDiceReport("unused")
    report.add("p1", "A", pred, ref)
    report.add("p1", "A", empty, empty)  # the ES volume of the same patient
    report.add("p2", "A", empty, empty)
    assert report.slices["p1"] == pytest.approx([dice[0], dice[1], 1.0])
    summary = vendor_summary({"A": [np.mean(report.slices["p1"]), 1.0]})
    values = 100 * np.array([np.mean(report.slices["p1"]), 1.0])
    assert summary["A"]["mean"] == pytest.approx(values.mean()) and summary["A"]["std"] == pytest.approx(
        values.std(ddof=1)
    )
    average = vendor_average({"A": 80.0, "B": 84.0, "C": 86.0, "D": 90.0})
    assert average["mean"] == pytest.approx(85.0) and average["std"] == pytest.approx(np.std([80, 84, 86, 90]))


def test_test_time_histogram_matching_is_seeded(mnms):
    """epl.md §7: the test preprocessing keeps the random histogram matching, seeded: two evaluations agree."""
    import monai
    from monai.data import DataLoader, Dataset
    from semizoo.transforms import epl_eval_transforms

    datalist = mnms / "prepared" / "datalists" / "targetD_5pct.json"
    images = []
    for seed in (7, 7, 8):
        monai.utils.set_determinism(seed=seed)
        reference = SlicePool.from_datalist(datalist, "unlabeled", domain="first_source")
        dataset = Dataset(load_split(datalist, "test")[:2], epl_eval_transforms(reference, 3.0, 48))
        images.append(torch.cat([b["image"].as_tensor().flatten() for b in DataLoader(dataset, batch_size=1)]))
    monai.utils.set_determinism(seed=None)
    assert torch.equal(images[0], images[1]) and not torch.equal(images[0], images[2])
