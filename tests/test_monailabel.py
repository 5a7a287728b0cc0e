"""MONAI Label (0.8.x) serves and trains the segmentation bundles through its own task classes (issue 12, item 4).

``BundleInferTask`` reads ``inference.json`` (``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``),
``metadata.json`` (input/output keys, ``channel_def`` labels) and ``models/model.pt``, drops ``SaveImaged`` and adds
its own ``Restored``; it sends NIfTI (or PNG) files, never the prepared HDF5 files. Each bundle's prediction through
MONAI Label on such a file must equal the bundle's own pipeline on the prepared file of the same case.
``BundleTrainTask`` runs ``train.json``'s ``run`` with ``train#dataset#data`` / ``validate#dataset#data`` set to its
datastore's image/label pairs, ``train#trainer#max_epochs`` and ``device``, and no datalist or unlabeled list: the
bundle must fall back to labeled-only training and check the lists it was given.

The scratch bundles get the smoke values of ``smoke.json`` written into their configs (a small patch, a narrow
network), as a MONAI Label user edits a bundle's configs.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from bundle_data import bundle_prediction, dataset_of, prepared_phantoms, scratch_bundle
from monailabel.datastore.local import LocalDatastore
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from semizoo import usage

REPO = Path(__file__).resolve().parents[1]
EXEMPTIONS = yaml.safe_load((Path(__file__).parent / "bundle_exemptions.yml").read_text()) or {}
BUNDLES = sorted(
    p.name
    for p in (REPO / "bundles").iterdir()
    if (p / "configs" / "inference.json").is_file() and "monai_label" not in EXEMPTIONS.get(p.name, {})
)
SETTINGS = {"acdc": "lab3", "la": "lab4", "busi": "seg_lab25pct"}
# bundles whose train.json trains on what MONAI Label's datastore holds (3D NIfTI image/label pairs; the 2D ACDC
# bundles draw a random slice per item); semizoo.usage states why the others cannot, in each bundle's "Use it"
TRAINABLE = [b for b in BUNDLES if usage.monai_label_trains(b)]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("phantoms")


def _first_case(data: Path, dataset: str, split: str) -> dict:
    datalist = json.loads((data / "datalists" / f"{SETTINGS[dataset]}.json").read_text())
    return {k: str(data / v) if k in ("image", "label") else v for k, v in datalist[split][0].items()}


def _as_monai_label_file(case: dict, dataset: str, folder: Path) -> Path:
    """What MONAI Label's datastore holds for the case: NIfTI in the scanner's (X, Y, Z) order, or the PNG."""
    if dataset == "busi":
        return Path(case["image"])
    with h5py.File(case["image"], "r") as handle:
        image = handle["image"][()].astype(np.float32)
    image = image.transpose(2, 1, 0) if dataset == "acdc" else image  # prepared ACDC is (Z, Y, X); LA is (X, Y, Z)
    path = folder / f"{Path(case['image']).stem}.nii.gz"
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(path))
    return path


@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_infer_task_matches_the_bundle_pipeline(name, tmp_path, phantom_root):
    dataset = dataset_of(name)
    data = prepared_phantoms(phantom_root, dataset)
    bundle = scratch_bundle(name, tmp_path)
    task = BundleInferTask(str(bundle), conf={})
    assert task.is_valid()
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert task.labels == {v.lower(): int(k) for k, v in channels.items() if v.lower() != "background"}

    case = _first_case(data, dataset, "test")
    image = _as_monai_label_file(case, dataset, tmp_path)
    result_file, _ = task({"image": str(image), "device": "cpu", "result_extension": ".nii.gz"})
    served = np.asarray(nib.load(result_file).dataobj)
    served = served[0] if dataset == "busi" else served  # MONAI Label writes 2D results as (1, W, H)
    expected = bundle_prediction(bundle, case["image"])
    expected = expected.transpose(2, 1, 0) if dataset == "acdc" else expected  # into the NIfTI's (X, Y, Z)
    assert served.shape == expected.shape
    assert set(np.unique(served)) <= {int(k) for k in channels}
    np.testing.assert_array_equal(served, expected)


class _SmokeTrainTask(BundleTrainTask):
    """MONAI Label's documented extension point (``_update_overrides``) keeps the run to a few iterations."""

    def _update_overrides(self, overrides: dict) -> dict:
        overrides.update({"max_iterations": 2, "val_interval": 2, "checkpoint_interval": 2})
        return overrides


def _local_datastore(data: Path, dataset: str, folder: Path, count: int) -> LocalDatastore:
    """MONAI Label's own datastore over ``count`` volumes as NIfTI (X, Y, Z): images in ``folder``, labels in
    labels/final."""
    datalist = json.loads((data / "datalists" / f"{SETTINGS[dataset]}.json").read_text())
    entries = [e for split in ("labeled", "validation", "unlabeled", "test") for e in datalist.get(split, [])]
    (folder / "labels" / "final").mkdir(parents=True)
    written = 0
    for entry in entries:
        with h5py.File(data / entry["image"], "r") as handle:
            if handle["image"].ndim != 3 or "label" not in handle:
                continue  # ACDC's labeled entries are 2D slices of volumes listed elsewhere
            image, label = handle["image"][()].astype(np.float32), handle["label"][()].astype(np.uint8)
        if dataset == "acdc":  # prepared ACDC is (Z, Y, X)
            image, label = image.transpose(2, 1, 0), label.transpose(2, 1, 0)
        name = f"{Path(entry['image']).stem}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / name))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(folder / "labels" / "final" / name))
        written += 1
        if written == count:
            break
    return LocalDatastore(str(folder))


@pytest.mark.parametrize("name", TRAINABLE)
def test_bundle_train_task_trains_on_datastore_pairs_without_unlabeled_data(name, tmp_path, phantom_root, capfd):
    dataset = dataset_of(name)
    data = prepared_phantoms(phantom_root, dataset)
    bundle = scratch_bundle(name, tmp_path)
    (bundle / "models" / "model.pt").unlink()  # a first training: nothing to start from
    datastore = _local_datastore(data, dataset, tmp_path / "datastore", 5)
    assert len(datastore.datalist()) == 5
    task = _SmokeTrainTask(str(bundle), conf={})
    assert task.is_valid()
    request = {"model": name, "device": "cpu", "max_epochs": 1, "val_split": 0.2, "multi_gpu": False}
    task(request, datastore)
    logged = "".join(capfd.readouterr())  # the bundle's logging.conf handlers write to the console
    assert "does not exist: checking the bundle's lists" in logged  # MONAI Label's pairs were checked
    assert "no unlabeled entries: training falls back to labeled-only batches" in logged
    state = torch.load(bundle / "models" / "model_final.pt", weights_only=True)
    assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert (bundle / "models" / "model.pt").is_file()  # best-on-validation, selected on MONAI Label's 20 % split
