"""The example MONAI Deploy application (scripts/deploy_app.py, issue 12 item 3) on every bundle it serves.

Each bundle that exports to TorchScript and is not exempt from MONAI Deploy (tests/bundle_exemptions.yml) is a
scratch copy with seeded random weights and its smoke values (bundle_data.scratch_bundle), exported to
``models/model.ts`` with ``monai.bundle ckpt_export`` (configs embedded); both commands are those of the bundle's
"Use it" section (semizoo.usage). The application runs in its own process
on a NIfTI volume in (X, Y, Z) order through the SDK's ``MonaiBundleInferenceOperator``; the label map it writes must
equal the bundle's own inference pipeline (eager network, MONAI's loading) on the same file, voxel for voxel, and
carry the input's affine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml
from bundle_data import bundle_prediction, dataset_of, prepared_phantoms, scratch_bundle
from semizoo import usage

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "scripts" / "deploy_app.py"
# the SDK's venv, layered on .venv by scripts/setup_venv.sh (installed into .venv, `import monai` would load Holoscan)
DEPLOY_PYTHON = REPO / ".venv-deploy" / "bin" / "python"
EXEMPTIONS = yaml.safe_load((Path(__file__).parent / "bundle_exemptions.yml").read_text()) or {}
BUNDLES = sorted(
    p.name
    for p in (REPO / "bundles").iterdir()
    if (p / "configs" / "metadata.json").is_file()
    and not {"monai_deploy", "torchscript"} & set(EXEMPTIONS.get(p.name, {}))
)
SETTINGS = {"acdc": "lab3", "la": "lab4"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("phantoms")


def _export(bundle: Path) -> None:
    command = usage.export_torchscript(bundle, python=sys.executable)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _test_volume(data: Path, dataset: str, folder: Path) -> Path:
    """The first test case as a NIfTI volume in (X, Y, Z) order with a non-trivial affine."""
    entry = json.loads((data / "datalists" / f"{SETTINGS[dataset]}.json").read_text())["test"][0]
    with h5py.File(data / entry["image"], "r") as handle:
        image = handle["image"][()].astype(np.float32)
    image = image.transpose(2, 1, 0) if dataset == "acdc" else image  # prepared ACDC is (Z, Y, X)
    path = folder / f"{Path(entry['image']).stem}.nii.gz"
    nib.save(nib.Nifti1Image(image, np.diag([1.5, 1.25, 5.0, 1.0])), str(path))
    return path


@pytest.mark.parametrize("name", BUNDLES)
def test_deploy_app_writes_the_bundle_pipeline_prediction(name, tmp_path, phantom_root):
    dataset = dataset_of(name)
    bundle = scratch_bundle(name, tmp_path)
    _export(bundle)
    volume = _test_volume(prepared_phantoms(phantom_root, dataset), dataset, tmp_path)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = usage.deploy(bundle, volume, out, python=str(DEPLOY_PYTHON), app=APP)
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    written = nib.load(str(out / volume.name.replace(".nii.gz", "_seg.nii.gz")))
    labels = np.asarray(written.dataobj)
    expected = bundle_prediction(bundle, volume)
    assert labels.shape == nib.load(str(volume)).shape == expected.shape
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_allclose(written.affine, nib.load(str(volume)).affine)
    assert len(np.unique(labels)) > 1  # random weights still give a non-constant map: the comparison means something


def test_deploy_app_refuses_a_bundle_without_model_ts(tmp_path):
    bundle = scratch_bundle("ssnet_la_segmentation", tmp_path)
    volume = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), str(volume))
    command = [str(DEPLOY_PYTHON), str(APP), "--bundle", str(bundle), "--input", str(volume), "--output", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "models/model.ts is missing: run `python -m monai.bundle ckpt_export`" in (
        result.stderr
    )
