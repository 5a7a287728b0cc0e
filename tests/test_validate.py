"""Datalist validation before work (issue 13 item 1): one clear message per problem, nothing written on failure.

Each failure mode starts from a valid prepared phantom datalist, breaks one thing, and checks that
``validate_datalist`` (and ``python -m semizoo validate``) names the file or list and the problem. A bundle run on a
broken datalist must stop before any component is built or file written, and training must never read test files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_data import prepared_phantoms
from PIL import Image
from semizoo.data import DataError, DatalistError, check_training_data, load_split, validate_datalist
from semizoo.data.validate import bundle_settings

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "train.json").is_file())
SETTINGS = {"acdc": "lab3", "la": "lab4", "mnms": "targetD_5pct", "busi": "seg_lab25pct"}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("phantoms")


def _copy(phantoms: Path, tmp_path: Path, dataset: str) -> Path:
    """A writable copy of the prepared phantom ``dataset``; returns its default datalist."""
    target = tmp_path / dataset
    shutil.copytree(prepared_phantoms(phantoms, dataset), target)
    return target / "datalists" / f"{SETTINGS[dataset]}.json"


def _edit(datalist: Path, change) -> dict:
    content = json.loads(datalist.read_text())
    change(content)
    datalist.write_text(json.dumps(content))
    return content


def _problems(datalist: Path, **kwargs) -> str:
    with pytest.raises(DatalistError) as raised:
        validate_datalist(datalist, **kwargs)
    return str(raised.value)


def _file(datalist: Path, split: str, key: str = "image", index: int = 0) -> Path:
    return datalist.parents[1] / json.loads(datalist.read_text())[split][index][key]


@pytest.mark.parametrize("dataset,setting", [*SETTINGS.items(), ("busi", "det_lab10pct")])
def test_prepared_phantom_datalists_pass(phantoms, dataset, setting):
    datalist = prepared_phantoms(phantoms, dataset) / "datalists" / f"{setting}.json"
    assert " ok {" in validate_datalist(datalist)


def test_missing_file(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "acdc")
    path = _file(datalist, "labeled")
    path.unlink()
    assert f"{path}: file is missing (labeled image, label)" in _problems(datalist)


def test_corrupt_hdf5(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "acdc")
    path = _file(datalist, "validation")
    path.write_bytes(b"\x89HDF\r\n" + os.urandom(200))
    assert f"{path}: cannot open HDF5" in _problems(datalist)


def test_hdf5_without_label_key(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "la")
    path = _file(datalist, "labeled")
    with h5py.File(path, "a") as handle:
        del handle["label"]
    assert f"{path}: no HDF5 dataset 'label' (has ['image'])" in _problems(datalist)


def test_nan_intensities(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "acdc")
    path = _file(datalist, "unlabeled", index=3)
    with h5py.File(path, "a") as handle:
        image = handle["image"][()]
        image[0, :3] = np.nan
        handle["image"][...] = image
    assert f"{path}: 3 NaN/inf intensities in the image" in _problems(datalist)


def test_label_values_outside_the_class_set(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "acdc")
    path = _file(datalist, "labeled", "label")
    with h5py.File(path, "a") as handle:
        label = handle["label"][()]
        label[0, 0] = 7
        handle["label"][...] = label
    assert f"{path}: label values [7] outside the class set [0, 1, 2, 3]" in _problems(datalist)


def test_image_label_shape_mismatch(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "acdc")
    path = _file(datalist, "validation", "label")
    with h5py.File(path, "a") as handle:
        label = handle["label"][()]
        del handle["label"]
        handle["label"] = label[:, :-2]
    message = _problems(datalist)
    assert f"{path}: label shape" in message and "!= image shape" in message


def test_spacing_differs_from_the_datalist(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "acdc")
    _edit(datalist, lambda content: content["validation"][0].update(spacing=[5.0, 1.0, 1.0]))
    assert "differs from the datalist's [5.0, 1.0, 1.0]" in _problems(datalist)


@pytest.mark.parametrize("first,second", [("labeled", "test"), ("validation", "test"), ("labeled", "validation")])
def test_a_patient_in_two_splits_is_named(phantoms, tmp_path, first, second):
    datalist = _copy(phantoms, tmp_path, "acdc")

    def leak(content):
        content[second].append(dict(content[first][0]))

    content = _edit(datalist, leak)
    patient = content[first][0]["patient"]
    assert f"patients in both {first} and {second}: {patient}" in _problems(datalist)


def test_labeled_and_unlabeled_share_patients_only_by_a_documented_rule(phantoms, tmp_path):
    acdc = _copy(phantoms, tmp_path, "acdc")
    content = _edit(acdc, lambda c: c["unlabeled"].append({k: v for k, v in c["labeled"][0].items() if k != "label"}))
    assert f"patients in both labeled and unlabeled: {content['labeled'][0]['patient']}" in _problems(acdc)
    mnms = prepared_phantoms(phantoms, "mnms") / "datalists" / "targetD_5pct.json"
    content = json.loads(mnms.read_text())
    shared = {e["patient"] for e in content["labeled"]} & {e["patient"] for e in content["unlabeled"]}
    assert shared, "the M&Ms unlabeled pool holds the labeled patients' other frames (epl.md)"
    assert " ok {" in validate_datalist(mnms)


def test_too_few_labeled_items_for_the_batch(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "la")
    count = len(json.loads(datalist.read_text())["labeled"])
    assert f"labeled has {count} items, fewer than the labeled batch size {count + 1}" in _problems(
        datalist, labeled_batch_size=count + 1
    )


def test_empty_unlabeled_list_warns_and_passes(phantoms, tmp_path, caplog):
    datalist = _copy(phantoms, tmp_path, "acdc")
    _edit(datalist, lambda content: content.update(unlabeled=[]))
    assert "'unlabeled': 0" in validate_datalist(datalist)
    assert "no unlabeled entries: training falls back to labeled-only batches" in caplog.text


def test_bundle_class_set_and_batch_are_checked(phantoms):
    assert bundle_settings("ssnet_la_segmentation") == ({"0": "background", "1": "left_atrium"}, 2)
    datalist = prepared_phantoms(phantoms, "acdc") / "datalists" / "lab3.json"
    assert "datalist classes [0, 1, 2, 3] != bundle's [0, 1]" in _problems(datalist, bundle="ssnet_la_segmentation")
    with pytest.raises(Exception, match="not a bundle folder or a bundle name"):
        validate_datalist(datalist, bundle="no_such_bundle")


def _folder(tmp_path: Path, entries: dict[str, list[dict]], classes: dict | None = None) -> Path:
    (tmp_path / "prepare_report.json").write_text("{}")
    datalist = tmp_path / "datalist.json"
    content = {"dataset": "custom", "classes": classes or {"0": "background", "1": "fg"}, "test": []}
    content.update(validation=[], **entries)
    datalist.write_text(json.dumps(content))
    return datalist


def test_nifti_pairs_unreadable_and_spacing_mismatch(tmp_path):
    image = np.random.default_rng(0).random((8, 8, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image((image > 0.5).astype(np.uint8), np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "a_seg.nii.gz")
    (tmp_path / "b.nii.gz").write_bytes(os.urandom(300))
    datalist = _folder(
        tmp_path,
        {
            "labeled": [
                {"image": "a.nii.gz", "label": "a_seg.nii.gz", "patient": "a"},
                {"image": "b.nii.gz", "label": "a_seg.nii.gz", "patient": "b"},
            ]
        },
    )
    message = _problems(datalist)
    assert f"{tmp_path / 'a_seg.nii.gz'}: label spacing [1.0, 1.0, 3.0] != image spacing [1.0, 1.0, 2.0]" in message
    assert f"{tmp_path / 'b.nii.gz'}: cannot be read as a medical image" in message


def test_png_mask_size_corrupt_png_and_detection_boxes(tmp_path):
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((20, 31), np.uint8)).save(tmp_path / "a_mask.png")
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    datalist = _folder(
        tmp_path,
        {
            "labeled": [
                {"image": "a.png", "label": "a_mask.png", "patient": "a"},
                {"image": "c.png", "label": "a_mask.png", "patient": "c"},
                {"image": "a.png", "box": [[2, 2, 40, 10]], "label": [1], "patient": "d"},
                {"image": "a.png", "box": [[2, 2, 8, 10]], "label": [0], "patient": "e"},
            ]
        },
    )
    message = _problems(datalist)
    assert f"{tmp_path / 'a_mask.png'}: label shape (20, 31) != image shape (20, 30)" in message
    assert f"{tmp_path / 'c.png'}: cannot be read as an image" in message
    assert f"{tmp_path / 'a.png'}: box [2, 2, 40, 10] lies outside the 30x20 image" in message
    assert f"{tmp_path / 'a.png'}: box label 0 is not a foreground class [1]" in message


def test_cli_names_every_problem(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "acdc")
    _file(datalist, "labeled").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "semizoo", "validate", str(datalist), "--bundle", "ssnet_acdc_segmentation"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "1 problem(s) in datalist" in result.stderr and "file is missing (labeled image, label)" in result.stderr


def test_training_checks_never_read_test_files(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "acdc")
    for entry in json.loads(datalist.read_text())["test"]:
        (datalist.parents[1] / entry["image"]).unlink(missing_ok=True)
    assert " ok {" in check_training_data(datalist, {"0": "a", "1": "b", "2": "c", "3": "d"}, 1)
    assert "file is missing (test image, label)" in _problems(datalist)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_and_model_selection_configs_never_load_the_test_split(bundle):
    """Only evaluate.json (reporting) and inference.json (the bundle's demo inputs) may name the test split."""
    for config in sorted((REPO / "bundles" / bundle / "configs").glob("*.json")):
        if config.name in ("evaluate.json", "inference.json"):
            continue
        text = config.read_text()
        assert "'test'" not in text and '"test"' not in text, f"{config} loads the test split"
        if config.name in ("train.json", "multi_gpu_train.json"):
            content = json.loads(text)
            assert all("check_training_data(@datalist" in content[key][0] for key in ("run", "training"))


@pytest.mark.slow
def test_a_bundle_run_on_bad_data_stops_before_writing_anything(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "acdc")
    path = _file(datalist, "labeled", "label")
    with h5py.File(path, "a") as handle:
        label = handle["label"][()]
        label[0, 0] = 9
        handle["label"][...] = label
    root = tmp_path / "bundle_out"
    configs = str(["configs/train.json", "configs/smoke.json"])
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs]
    command += ["--bundle_root", str(root), "--dataset_dir", str(datalist.parents[1])]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bundle_dir = REPO / "bundles" / "meanteacher_acdc_segmentation"
    result = subprocess.run(command, cwd=bundle_dir, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode != 0
    assert f"{path}: label values [9] outside the class set [0, 1, 2, 3]" in result.stdout + result.stderr
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*")), sorted(root.rglob("*"))


def test_under_ddp_the_labeled_list_must_fill_the_global_batch(phantoms, tmp_path, monkeypatch):
    datalist = _copy(phantoms, tmp_path, "la")
    count = len(json.loads(datalist.read_text())["labeled"])
    classes = {"0": "background", "1": "left_atrium"}
    assert " ok {" in check_training_data(datalist, classes, count)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    with pytest.raises(
        DatalistError, match=f"labeled has {count} items, fewer than the labeled batch size {2 * count}"
    ):
        check_training_data(datalist, classes, count)


def _in_memory_lists(datalist: Path) -> dict[str, list[dict]]:
    """The training lists as a bundle's datasets hold them (paths joined), as MONAI Label passes its images."""
    return {split: load_split(datalist, split) for split in ("labeled", "unlabeled", "validation")}


def test_without_a_datalist_file_training_checks_the_lists_it_was_given(phantoms, tmp_path, caplog):
    """MONAI Label overrides train#dataset#data/validate#dataset#data and has no datalist: those lists are checked."""
    datalist = _copy(phantoms, tmp_path, "la")
    lists = _in_memory_lists(datalist)
    missing = tmp_path / "no_such" / "lab4.json"
    classes = {"0": "background", "1": "left_atrium"}
    count = len(lists["labeled"])
    with caplog.at_level("WARNING"):
        summary = check_training_data(missing, classes, count, lists={**lists, "unlabeled": []})
    assert "the bundle's lists" in summary and f"'labeled': {len(lists['labeled'])}" in summary
    assert f"{missing} does not exist" in caplog.text and "no unlabeled entries" in caplog.text
    path = Path(lists["validation"][0]["image"])
    with h5py.File(path, "a") as handle:
        handle["label"][0, 0, 0] = 7
    with pytest.raises(DatalistError, match=f"{path}: label values \\[7\\] outside the class set \\[0, 1\\]"):
        check_training_data(missing, classes, count, lists=lists)
    with pytest.raises(
        DatalistError, match=f"labeled has {count} items, fewer than the labeled batch size {count + 1}"
    ):
        check_training_data(missing, classes, count + 1, lists=lists)
    with pytest.raises(DataError, match="cannot read datalist"):
        check_training_data(missing, classes, count)  # no lists: the missing datalist is the error


def test_an_existing_datalist_is_checked_even_when_lists_are_given(phantoms, tmp_path):
    datalist = _copy(phantoms, tmp_path, "acdc")
    lists = _in_memory_lists(datalist)
    path = _file(datalist, "labeled")
    path.unlink()
    with pytest.raises(DatalistError, match="file is missing"):
        check_training_data(datalist, {"0": "a", "1": "b", "2": "c", "3": "d"}, 1, lists=lists)


def test_a_missing_datalist_gives_no_unlabeled_list_only_where_allowed(tmp_path):
    assert load_split(tmp_path / "absent.json", "unlabeled", missing_ok=True) == []
    with pytest.raises(DataError, match="cannot read datalist"):
        load_split(tmp_path / "absent.json", "labeled")
