import json
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImaged
from semizoo.data import DataError, HDF5Reader, load_split
from semizoo.data.prepare import PrepareError, la_crop, prepare
from semizoo.data.splits import frozen, frozen_split, scaled_split


def _write_acdc_patient(root: Path, number: int, shape=(20, 24, 4), es=3, label_value=None, drop=None):
    """A minimal raw CREATIS patient: Info.cfg and ED/ES frames with ground truth."""
    folder = root / "database" / "training" / f"patient{number:03d}"
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text(f"ED: 1\nES: {es}\nGroup: NOR\nHeight: 180\nNbFrame: 10\nWeight: 80\n")
    rng = np.random.default_rng(number)
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    for frame in (1, es):
        image = rng.random(shape).astype(np.float32) * 100
        label = np.zeros(shape, np.uint8)
        label[5:12, 6:14, 1:3] = 1 + (frame % 3)
        if label_value is not None:
            label[0, 0, 0] = label_value
        nib.save(nib.Nifti1Image(image, affine), folder / f"patient{number:03d}_frame{frame:02d}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), folder / f"patient{number:03d}_frame{frame:02d}_gt.nii.gz")
    if drop:
        (folder / drop.format(n=number)).unlink()
    return folder


def test_frozen_splits_are_the_papers():
    acdc = frozen("acdc")
    assert acdc["train_patients"][:7] == [f"patient{p}" for p in ("099", "038", "050", "100", "058", "021", "049")]
    assert len(acdc["train_patients"]) == 70 and len(acdc["validation"]) == 20 and len(acdc["test"]) == 40
    split = frozen_split("acdc", [f"patient{i:03d}" for i in range(1, 101)])
    assert split["validation"][:3] == ["patient028", "patient085", "patient082"]
    assert not set(split["validation"]) & set(split["test"]) and not set(split["train"]) & set(split["test"])
    la = frozen_split("la", frozen("la")["train"] + frozen("la")["test"])
    assert la["validation"][0] == "Q0MEX9ZIKAGJORSPLQ3Y" and la["validation"][-1] == "UZUZZT2W9IUSHL6ASOX3"
    assert len(la["train"]) == 72 and la["labeled"]["lab4"] == frozen("la")["train"][:4]
    with pytest.raises(DataError, match="missing from the source: patient001"):
        frozen_split("acdc", [f"patient{i:03d}" for i in range(2, 101)])


def test_scaled_split_keeps_proportions_and_is_seeded():
    patients = [f"p{i:02d}" for i in range(40)]
    split = scaled_split("acdc", patients, seed=0)
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (28, 4, 8)
    assert (
        len(split["labeled"]["lab3"]) == 1
        and len(split["labeled"]["lab7"]) == 3
        and len(split["labeled"]["full"]) == 28
    )
    assert split == scaled_split("acdc", patients, seed=0) and split != scaled_split("acdc", patients, seed=1)
    assert sorted(split["train"] + split["validation"] + split["test"]) == patients


def test_prepare_acdc_raw_writes_volumes_slices_and_datalists(tmp_path):
    for number in range(1, 8):
        _write_acdc_patient(tmp_path / "raw", number)
    report = prepare("acdc", tmp_path / "raw", tmp_path / "out", split="scaled")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["data", "datalist.json", "datalists", "prepare_report.json"]
    lab3 = json.loads((out / "datalists" / "lab3.json").read_text())
    assert report["counts"]["lab3"]["labeled"] == len(lab3["labeled"]) == 8  # 1 patient x 2 frames x 4 slices
    assert all("label" not in e for e in lab3["unlabeled"])
    assert {e["patient"] for e in lab3["labeled"]} == set(lab3["labeled_patients"])
    volume = lab3["test"][0]
    with h5py.File(out / volume["image"]) as f:
        image, label, spacing = f["image"][()], f["label"][()], f.attrs["spacing"]
    assert image.shape == (4, 24, 20) and image.min() == 0.0 and image.max() == 1.0  # (Z, Y, X), min-max scaled
    assert list(spacing) == [8.0, 1.5, 1.5] and volume["spacing"] == [8.0, 1.5, 1.5]
    assert set(np.unique(label)) <= {0, 1, 2, 3}
    # same inputs, byte-identical datalists
    prepare("acdc", tmp_path / "raw", tmp_path / "again", split="scaled")
    assert (out / "datalists" / "lab3.json").read_bytes() == (
        tmp_path / "again" / "datalists" / "lab3.json"
    ).read_bytes()


def test_prepare_lists_every_problem_and_writes_nothing(tmp_path):
    _write_acdc_patient(tmp_path / "raw", 1)
    _write_acdc_patient(tmp_path / "raw", 2, label_value=5)
    _write_acdc_patient(tmp_path / "raw", 3, drop="patient{n:03d}_frame03_gt.nii.gz")
    with pytest.raises(PrepareError) as info:
        prepare("acdc", tmp_path / "raw", tmp_path / "out", split="scaled")
    text = str(info.value)
    assert "label values {5: 1 voxels} outside {0,1,2,3}" in text
    assert "Info.cfg names ES frame 3 but patient003_frame03_gt.nii.gz is missing" in text
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_prepare_refuses_foreign_output_and_unknown_layout(tmp_path):
    _write_acdc_patient(tmp_path / "raw", 1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="holds no semizoo output"):
        prepare("acdc", tmp_path / "raw", tmp_path / "mine")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the acdc layout"):
        prepare("acdc", tmp_path / "empty", tmp_path / "out")


def test_la_crop_keeps_the_label_with_margins():
    label = np.zeros((80, 70, 20), np.uint8)
    label[30:40, 25:35, 5:15] = 1
    image = np.arange(label.size, dtype=np.float32).reshape(label.shape)
    cropped_image, cropped_label = la_crop(image, label, np.random.default_rng(0))
    assert cropped_label.sum() == label.sum() and cropped_label.shape[2] == 20
    for axis, (low, high) in enumerate(((30, 39), (25, 34))):
        assert 10 + (high - low + 1) + 10 <= cropped_label.shape[axis] <= 19 + (high - low + 1) + 19


def test_hdf5_reader_loads_keys_with_spacing_and_names_bad_files(tmp_path):
    path = tmp_path / "case.h5"
    with h5py.File(path, "w") as f:
        f["image"] = np.random.rand(4, 6, 8).astype(np.float32)
        f["label"] = np.ones((4, 6, 8), np.uint8)
        f.attrs["spacing"] = [5.0, 1.5, 1.25]
    loader = LoadImaged(keys="image", reader=HDF5Reader(key="image"), image_only=True)
    item = loader({"image": str(path)})
    assert item["image"].shape == (4, 6, 8)
    assert torch.allclose(item["image"].pixdim, torch.tensor([5.0, 1.5, 1.25], dtype=torch.float64))
    label = LoadImaged(keys="label", reader=HDF5Reader(key="label"), image_only=True)({"label": str(path)})["label"]
    assert label.sum() == 4 * 6 * 8
    assert not HDF5Reader().verify_suffix("case.nii.gz") and HDF5Reader().verify_suffix(["a.h5", "b.hdf5"])
    with pytest.raises(DataError, match=r"case.h5: no HDF5 dataset 'mask'"):
        HDF5Reader(key="mask").read(str(path))
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not an hdf5 file")
    with pytest.raises(DataError, match="broken.h5: cannot open HDF5"):
        HDF5Reader().read(str(broken))


def test_load_split_resolves_paths_and_handles_missing_lists(tmp_path, caplog):
    (tmp_path / "prepare_report.json").write_text("{}")
    (tmp_path / "datalists").mkdir()
    datalist = tmp_path / "datalists" / "lab3.json"
    datalist.write_text(json.dumps({"labeled": [{"image": "data/a.h5", "label": "data/a.h5", "patient": "p1"}]}))
    entries = load_split(datalist, "labeled")
    assert entries == [{"image": str(tmp_path / "data/a.h5"), "label": str(tmp_path / "data/a.h5"), "patient": "p1"}]
    assert load_split(datalist, "unlabeled", missing_ok=True) == [] and "no 'unlabeled' list" in caplog.text
    with pytest.raises(DataError, match="lab3.json: no 'test' list"):
        load_split(datalist, "test")
    assert load_split(datalist, "labeled", base_dir="/x")[0]["image"] == "/x/data/a.h5"


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["image"], f["label"] = image, label


def test_prepare_acdc_from_the_ssl4mis_layout(tmp_path):
    root = tmp_path / "ACDC"
    rng = np.random.default_rng(0)
    for number in range(1, 6):
        for frame in (1, 2):
            label = np.zeros((3, 16, 16), np.uint8)
            label[:, 4:10, 4:10] = frame
            _write_h5(root / "data" / f"patient{number:03d}_frame{frame:02d}.h5", rng.random((3, 16, 16)), label)
    (root / "train_slices.list").write_text("patient001_frame01_slice_1\n")
    report = prepare("acdc", root, tmp_path / "out", split="scaled")
    assert report["layout"] == "ssl4mis"
    full = json.loads((tmp_path / "out" / "datalists" / "full.json").read_text())
    assert len(full["labeled"]) == report["patients"]["train"] * 2 * 3  # every slice of both frames
    with h5py.File(tmp_path / "out" / full["labeled"][0]["image"]) as f:
        assert f["image"].shape == (16, 16) and "spacing" not in f.attrs  # SSL4MIS files carry no spacing


def test_prepare_la_from_the_uamt_layout_copies_without_cropping(tmp_path):
    root = tmp_path / "LA" / "2018LA_Seg_Training Set"
    rng = np.random.default_rng(1)
    ids = [f"CASE{i:016d}" for i in range(5)]
    for case in ids:
        label = np.zeros((40, 36, 16), np.uint8)
        label[10:20, 10:20, 4:10] = 1
        _write_h5(root / case / "mri_norm2.h5", rng.normal(size=(40, 36, 16)).astype(np.float32), label)
    report = prepare("la", tmp_path / "LA", tmp_path / "out", split="scaled")
    assert report["layout"] == "uamt" and report["warnings"]
    lab4 = json.loads((tmp_path / "out" / "datalists" / "lab4.json").read_text())
    entry = lab4["labeled"][0]
    assert entry["patient"] in ids and entry["spacing"] == [0.625, 0.625, 0.625]
    with h5py.File(tmp_path / "out" / entry["image"]) as f, h5py.File(root / entry["patient"] / "mri_norm2.h5") as g:
        assert np.array_equal(f["image"][()], g["image"][()]) and np.array_equal(f["label"][()], g["label"][()])


def _ssl4mis_copy(prepared: Path, root: Path, slice_folder: str) -> set[str]:
    """SSL4MIS's ACDC layout from a prepared phantom: training frames only as slices (in ``slice_folder``),
    validation/test frames as volumes in ``data/``, plus the four lists. Returns the training patients."""
    full = json.loads((prepared / "datalists" / "full.json").read_text())
    train = {e["patient"] for e in full["labeled"]}
    (root / "data").mkdir(parents=True)
    (root / slice_folder).mkdir(parents=True, exist_ok=True)
    for volume in sorted((prepared / "data" / "acdc").glob("patient*_frame*.h5")):
        if volume.stem.split("_")[0] not in train:
            shutil.copy(volume, root / "data" / volume.name)
    slices = sorted((prepared / "data" / "acdc" / "slices").glob("*.h5"))
    for path in slices:
        if path.stem.split("_")[0] in train:
            shutil.copy(path, root / slice_folder / path.name)
    evaluation = sorted({p.stem for p in (root / "data").glob("patient*_frame*.h5") if "_slice_" not in p.stem})
    (root / "train.list").write_text("\n".join(sorted(train)) + "\n")
    (root / "val.list").write_text("\n".join(evaluation[: len(evaluation) // 2]) + "\n")
    (root / "test.list").write_text("\n".join(evaluation[len(evaluation) // 2 :]) + "\n")
    (root / "train_slices.list").write_text("\n".join(p.stem for p in slices if p.stem.split("_")[0] in train) + "\n")
    return train


@pytest.mark.parametrize(
    "slice_folder, cases, split",
    [
        pytest.param("data/slices", 100, "standard", marks=pytest.mark.slow, id="slices-folder-standard-split"),
        pytest.param("data", None, "scaled", id="slices-in-data-scaled-split"),
    ],
)
def test_prepare_acdc_from_the_ssl4mis_layout_with_training_patients_as_slices_only(
    tmp_path, slice_folder, cases, split
):
    """SSL4MIS keeps training patients only as 2D slices; prepare stacks them back into volumes (same lists and the
    same slice contents as preparing the raw data), with the slices in data/slices/ or directly in data/. With 100
    phantom patients (patient001-100, the ACDC IDs) the frozen standard split must find every patient (it used to
    fail: "standard split needs 70 IDs missing from the source")."""
    from semizoo.data.phantoms import generate

    generate("acdc", tmp_path / "raw", cases=cases, seed=0, preset="test")
    prepare("acdc", tmp_path / "raw", tmp_path / "first", split=split)
    train = _ssl4mis_copy(tmp_path / "first", tmp_path / "ACDC", slice_folder)
    assert not any((tmp_path / "ACDC" / "data" / f"{p}_frame01.h5").exists() for p in train)  # slices only
    report = prepare("acdc", tmp_path / "ACDC", tmp_path / "second", split=split)
    assert report["layout"] == "ssl4mis"
    first = json.loads((tmp_path / "first" / "datalists" / "full.json").read_text())
    second = json.loads((tmp_path / "second" / "datalists" / "full.json").read_text())
    for key in ("labeled", "validation", "test"):
        assert [e["image"] for e in second[key]] == [e["image"] for e in first[key]], key
    for entry in second["labeled"][:: max(1, len(second["labeled"]) // 5)]:
        with h5py.File(tmp_path / "first" / entry["image"]) as a, h5py.File(tmp_path / "second" / entry["image"]) as b:
            assert np.array_equal(a["image"][()], b["image"][()]) and np.array_equal(a["label"][()], b["label"][()])


def test_prepare_acdc_ssl4mis_reports_a_gap_in_a_frames_slice_numbers(tmp_path):
    from semizoo.data.phantoms import generate

    generate("acdc", tmp_path / "raw", seed=0, preset="test")
    prepare("acdc", tmp_path / "raw", tmp_path / "first", split="scaled")
    train = _ssl4mis_copy(tmp_path / "first", tmp_path / "ACDC", "data/slices")
    gap = tmp_path / "ACDC" / "data" / "slices" / f"{sorted(train)[0]}_frame01_slice_2.h5"
    gap.unlink()
    with pytest.raises(PrepareError, match=r"frame01_slice_\*\.h5: slice numbers \[2\] are missing"):
        prepare("acdc", tmp_path / "ACDC", tmp_path / "out", split="scaled")
    assert not (tmp_path / "out").exists()
