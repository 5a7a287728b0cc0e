"""Bad inputs for every reader and every ``prepare`` (datasets.md §3; issue 13, items 2 and 5).

One generated bad file per failure mode and reader: corrupt or truncated HDF5/NIfTI/NRRD/PNG/TIFF/xlsx/XML/CSV,
missing keys and files, wrong dimensionality or bit depth, image/label mismatches, label values outside the class
set and NaN/Inf intensities. Each must give the project's error (:class:`DataError` or :class:`PrepareError`, or
exit code 2 from the CLI) whose message names the offending file (or key) and the problem, and a failed ``prepare``
must leave no output: DIR is not created, or keeps exactly what it held, also when the failure comes after some
cases were written or when writing itself fails. Modes already covered by test_data.py, test_epl_data.py,
test_busi_data.py and test_bus_data.py are not repeated here.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from semizoo.cli import main
from semizoo.data import DataError, HDF5Reader, LoadCined
from semizoo.data.busi import ImagePool
from semizoo.data.cine import read_cine
from semizoo.data.hdf5 import read_h5
from semizoo.data.phantoms import generate
from semizoo.data.phantoms.common import write_nrrd
from semizoo.data.phantoms.udiat import write_xlsx
from semizoo.data.prepare import PrepareError, prepare
from semizoo.data.udiat import read_xlsx
from semizoo.transforms import hdf5_load_transforms

RNG = np.random.default_rng(13)
GARBAGE = bytes(RNG.integers(0, 256, 512, dtype=np.uint8))
ACDC_SHAPE = (12, 10, 3)  # NIfTI (X, Y, Z)
LA_SHAPE = (16, 14, 4)  # NRRD / UA-MT h5 (X, Y, Z)
N_CASES = 5


# ----------------------------------------------------------------------------------------------------- file writers
def _garbage(path: Path) -> Path:
    path.write_bytes(GARBAGE)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncate(path: Path, cut: int | None = None) -> Path:
    """Drop the second half of the file (or its last ``cut`` bytes)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if cut is None else len(data) - cut])
    return path


def _nifti(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 8.0, 1.0])), str(path))
    return path


def _nrrd(path: Path, array: np.ndarray) -> Path:
    """A raw little-endian NRRD of ``array`` (X fastest), uchar or float, of any dimension."""
    kind = {np.dtype(np.uint8): "uchar", np.dtype(np.float32): "float"}[array.dtype]
    header = (
        f"NRRD0004\ntype: {kind}\ndimension: {array.ndim}\nsizes: {' '.join(str(s) for s in array.shape)}\n"
        f"spacings: {' '.join(['0.625'] * array.ndim)}\nencoding: raw\nendian: little\n\n"
    )
    path.write_bytes(header.encode("ascii") + array.tobytes(order="F"))
    return path


def _h5(path: Path, spacing=None, **datasets: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        for key, array in datasets.items():
            handle[key] = array
        if spacing is not None:
            handle.attrs["spacing"] = spacing
    return path


def _edit_h5(path: Path, **datasets: np.ndarray | None) -> Path:
    """Replace (an array), drop (``None``) or turn into a group (``"group"``) datasets of an h5 file."""
    with h5py.File(path, "a") as handle:
        for key, array in datasets.items():
            if key in handle:
                del handle[key]
            if isinstance(array, str):
                handle.create_group(key)
            elif array is not None:
                handle[key] = array
    return path


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _image(shape, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 100).astype(np.float32)


def _label(shape, value: int = 1) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[2:8, 2:7] = value
    label[3:5, 3:5] = max(1, value - 1)
    return label


# ------------------------------------------------------------------------------------------- tiny 3D sources by hand
def _acdc_raw(root: Path, n: int = N_CASES) -> Path:
    """Raw CREATIS layout: ``database/training/patientNNN`` with Info.cfg and ED (1) / ES (2) frames."""
    for number in range(1, n + 1):
        folder = root / "database" / "training" / f"patient{number:03d}"
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\n")
        for frame in (1, 2):
            _nifti(folder / f"patient{number:03d}_frame{frame:02d}.nii.gz", _image(ACDC_SHAPE, number * 10 + frame))
            _nifti(folder / f"patient{number:03d}_frame{frame:02d}_gt.nii.gz", _label(ACDC_SHAPE, 3))
    return root


def _acdc_ssl4mis(root: Path, n: int = N_CASES) -> Path:
    """SSL4MIS layout: ``data/patientNNN_frameFF.h5`` volumes (Z, Y, X); patient ``n + 1``'s frame01 only as
    ``data/slices/…_slice_K.h5``."""
    shape = ACDC_SHAPE[::-1]
    for number in range(1, n + 2):
        for frame in (1, 2):
            name = f"patient{number:03d}_frame{frame:02d}"
            image, label = _image(shape, number * 10 + frame), _label(shape[::-1], 3).transpose(2, 1, 0)
            if number <= n or frame == 2:
                _h5(root / "data" / f"{name}.h5", image=image, label=label)
            else:
                for k in range(shape[0]):
                    _h5(root / "data" / "slices" / f"{name}_slice_{k + 1}.h5", image=image[k], label=label[k])
    (root / "train_slices.list").write_text("patient001_frame01_slice_1\n")
    return root


def _la_ids(n: int = N_CASES) -> list[str]:
    return [f"CASE{k:016d}" for k in range(1, n + 1)]


def _la_raw(root: Path, n: int = N_CASES) -> Path:
    """Raw LA layout: ``<ID>/lgemri.nrrd`` (uchar) and ``laendo.nrrd`` (0/255), gzip-encoded like the release."""
    for k, case in enumerate(_la_ids(n)):
        (root / case).mkdir(parents=True)
        write_nrrd(root / case / "lgemri.nrrd", (_image(LA_SHAPE, k) * 2.5).astype(np.uint8), (0.625,) * 3)
        write_nrrd(root / case / "laendo.nrrd", _label(LA_SHAPE) * np.uint8(255), (0.625,) * 3)
    return root


def _la_uamt(root: Path, n: int = N_CASES) -> Path:
    """UA-MT layout: ``<ID>/mri_norm2.h5`` with ``image`` and ``label`` (X, Y, Z)."""
    for k, case in enumerate(_la_ids(n)):
        _h5(root / case / "mri_norm2.h5", image=_image(LA_SHAPE, k), label=_label(LA_SHAPE))
    return root


# ----------------------------------------------------------------------------------------- the table of bad inputs
class Bad(NamedTuple):
    """One failure mode: ``build(root, phantom)`` makes a good source, ``mutate(src)`` breaks one file and returns
    the path the message must start with; ``phrase`` names the problem."""

    id: str
    dataset: str
    build: Callable[[Path, Callable[[str], Path]], Path]
    mutate: Callable[[Path], Path]
    phrase: str
    error: type = PrepareError
    problems: int = 1  # how many problems the one bad file causes


def _hand(builder):
    return lambda root, phantom: builder(root)


def _copy(dataset: str):
    def build(root: Path, phantom: Callable[[str], Path]) -> Path:
        shutil.copytree(phantom(dataset), root)
        return root

    return build


# the files the volume cases break (the second case, so an earlier one may already have been converted)
def _acdc_patient(src: Path) -> Path:
    return src / "database" / "training" / "patient002"


def _acdc_image(src: Path) -> Path:
    return _acdc_patient(src) / "patient002_frame01.nii.gz"


def _acdc_gt(src: Path) -> Path:
    return _acdc_patient(src) / "patient002_frame02_gt.nii.gz"


def _ssl4mis_volume(src: Path) -> Path:
    return src / "data" / "patient002_frame01.h5"


def _ssl4mis_slice(src: Path) -> Path:
    return src / "data" / "slices" / f"patient{N_CASES + 1:03d}_frame01_slice_2.h5"


def _la_case(src: Path) -> Path:
    return src / _la_ids()[1]


def _uamt_file(src: Path) -> Path:
    return _la_case(src) / "mri_norm2.h5"


def _with_nan(path: Path) -> Path:
    image = _image(ACDC_SHAPE, 0)
    image[0, 0, :2] = np.nan
    return _nifti(path, image)


def _rewrite_cfg(src: Path) -> Path:
    (_acdc_patient(src) / "Info.cfg").write_text("ED: 1\nES: end-systole\n")
    return _acdc_patient(src) / "Info.cfg"


def _unlink(*paths: Path, report: Path | None = None) -> Path:
    """Delete files or folders; returns ``report`` (the path the message names), by default the first path."""
    for path in paths:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return report or paths[0]


VOLUMES = [
    # acdc, raw CREATIS layout (NIfTI)
    Bad("acdc-raw/garbage-image", "acdc", _hand(_acdc_raw), lambda s: _garbage(_acdc_image(s)), "cannot read NIfTI"),
    Bad(
        "acdc-raw/truncated-label",
        "acdc",
        _hand(_acdc_raw),
        lambda s: _truncate(_acdc_gt(s)),
        "cannot read NIfTI",
    ),
    Bad(
        "acdc-raw/2d-image",
        "acdc",
        _hand(_acdc_raw),
        lambda s: _nifti(_acdc_image(s), _image(ACDC_SHAPE[:2], 0)),
        "expected a 3-D (X, Y, Z) image, got shape (12, 10)",
    ),
    Bad(
        "acdc-raw/4d-label",
        "acdc",
        _hand(_acdc_raw),
        lambda s: _nifti(_acdc_gt(s), _label(ACDC_SHAPE + (2,))),
        "expected a 3-D (X, Y, Z) label, got shape (12, 10, 3, 2)",
    ),
    Bad(
        "acdc-raw/shape-mismatch",
        "acdc",
        _hand(_acdc_raw),
        lambda s: _nifti(_acdc_gt(s), _label((12, 10, 2))),
        "shape (2, 10, 12) != image (3, 10, 12)",
    ),
    Bad("acdc-raw/nan", "acdc", _hand(_acdc_raw), lambda s: _with_nan(_acdc_image(s)), "2 NaN/Inf voxels in image"),
    Bad(
        "acdc-raw/no-info-cfg",
        "acdc",
        _hand(_acdc_raw),
        lambda s: _unlink(_acdc_patient(s) / "Info.cfg", report=_acdc_patient(s)),
        "Info.cfg is missing",
    ),
    Bad("acdc-raw/bad-info-cfg", "acdc", _hand(_acdc_raw), _rewrite_cfg, "no integer ES frame"),
    # acdc, SSL4MIS layout (h5 volumes and slices)
    Bad(
        "acdc-ssl4mis/garbage-h5",
        "acdc",
        _hand(_acdc_ssl4mis),
        lambda s: _garbage(_ssl4mis_volume(s)),
        "cannot open HDF5",
    ),
    Bad(
        "acdc-ssl4mis/no-label-key",
        "acdc",
        _hand(_acdc_ssl4mis),
        lambda s: _edit_h5(_ssl4mis_volume(s), label=None),
        "no HDF5 dataset 'label' (has ['image'])",
    ),
    Bad(
        "acdc-ssl4mis/2d-volume",
        "acdc",
        _hand(_acdc_ssl4mis),
        lambda s: _edit_h5(_ssl4mis_volume(s), image=_image((10, 12), 0), label=_label((10, 12))),
        "expected a 3-D 'image' volume, got shape (10, 12)",
    ),
    Bad(
        "acdc-ssl4mis/shape-mismatch",
        "acdc",
        _hand(_acdc_ssl4mis),
        lambda s: _edit_h5(_ssl4mis_volume(s), label=_label((3, 10, 11))),
        "shape (3, 10, 11) != image (3, 10, 12)",
    ),
    Bad(
        "acdc-ssl4mis/label-values",
        "acdc",
        _hand(_acdc_ssl4mis),
        lambda s: _edit_h5(_ssl4mis_volume(s), label=_label((3, 10, 12), 5)),
        "label values {5: 60 voxels} outside {0,1,2,3}",
    ),
    Bad(
        "acdc-ssl4mis/constant-image",
        "acdc",
        _hand(_acdc_ssl4mis),
        lambda s: _edit_h5(_ssl4mis_volume(s), image=np.zeros((3, 10, 12), np.float32)),
        "constant image",
    ),
    Bad(
        "acdc-ssl4mis/inf",
        "acdc",
        _hand(_acdc_ssl4mis),
        lambda s: _edit_h5(_ssl4mis_volume(s), image=_with(_image((3, 10, 12), 0), (0, 0, slice(0, 3)), np.inf)),
        "3 NaN/Inf voxels in image",
    ),
    Bad(
        "acdc-ssl4mis/truncated-slice",
        "acdc",
        _hand(_acdc_ssl4mis),
        lambda s: _truncate(_ssl4mis_slice(s)),
        "cannot open HDF5",
    ),
    Bad(
        "acdc-ssl4mis/3d-slice",
        "acdc",
        _hand(_acdc_ssl4mis),
        lambda s: _edit_h5(_ssl4mis_slice(s), image=_image((2, 10, 12), 0), label=_label((2, 10, 12))),
        "slice image (2, 10, 12) and label (2, 10, 12) must be equal 2D shapes",
    ),
    # la, raw challenge layout (NRRD)
    Bad(
        "la-raw/garbage-image",
        "la",
        _hand(_la_raw),
        lambda s: _garbage(_la_case(s) / "lgemri.nrrd"),
        "cannot read NRRD",
    ),
    Bad(
        "la-raw/truncated-label",
        "la",
        _hand(_la_raw),
        lambda s: _truncate(_la_case(s) / "laendo.nrrd", cut=12),  # the gzip data ends early
        "cannot read NRRD (expected 896 bytes but received",
    ),
    Bad(
        "la-raw/2d-image",
        "la",
        _hand(_la_raw),
        lambda s: _nrrd(_la_case(s) / "lgemri.nrrd", np.ones(LA_SHAPE[:2], np.uint8)),
        "expected a 3-D NRRD volume, got shape (16, 14)",
    ),
    Bad(
        "la-raw/shape-mismatch",
        "la",
        _hand(_la_raw),
        lambda s: _nrrd(_la_case(s) / "laendo.nrrd", _label((16, 14, 3)) * np.uint8(255)),
        "shape (16, 14, 3) != image (16, 14, 4)",
    ),
    Bad(
        "la-raw/label-values",
        "la",
        _hand(_la_raw),
        lambda s: _nrrd(_la_case(s) / "laendo.nrrd", _label(LA_SHAPE) * np.uint8(128)),
        "label values [128] outside {0,255}",
    ),
    Bad(
        "la-raw/nan",
        "la",
        _hand(_la_raw),
        lambda s: _nrrd(_la_case(s) / "lgemri.nrrd", np.where(_label(LA_SHAPE) == 1, np.nan, 1.0).astype(np.float32)),
        "120 NaN/Inf voxels in image",
    ),
    Bad(
        "la-raw/no-label-file",
        "la",
        _hand(_la_raw),
        lambda s: _unlink(_la_case(s) / "laendo.nrrd", report=_la_case(s)),
        "laendo.nrrd is missing",
    ),
    # la, UA-MT layout (h5)
    Bad("la-uamt/truncated-h5", "la", _hand(_la_uamt), lambda s: _truncate(_uamt_file(s)), "cannot open HDF5"),
    Bad(
        "la-uamt/no-image-key",
        "la",
        _hand(_la_uamt),
        lambda s: _edit_h5(_uamt_file(s), image=None),
        "no HDF5 dataset 'image' (has ['label'])",
    ),
    Bad(
        "la-uamt/label-is-a-group",
        "la",
        _hand(_la_uamt),
        lambda s: _edit_h5(_uamt_file(s), label="group"),
        "'label' is an HDF5 group, not a dataset",
    ),
    Bad(
        "la-uamt/4d-image",
        "la",
        _hand(_la_uamt),
        lambda s: _edit_h5(_uamt_file(s), image=_image((2, *LA_SHAPE), 0)),
        "expected a 3-D 'image' volume, got shape (2, 16, 14, 4)",
    ),
    Bad(
        "la-uamt/shape-mismatch",
        "la",
        _hand(_la_uamt),
        lambda s: _edit_h5(_uamt_file(s), label=_label((16, 14, 5))),
        "shape (16, 14, 5) != image (16, 14, 4)",
    ),
    Bad(
        "la-uamt/label-values",
        "la",
        _hand(_la_uamt),
        lambda s: _edit_h5(_uamt_file(s), label=_label(LA_SHAPE, 3)),
        "label values {2: 16 voxels, 3: 104 voxels} outside {0,1}",
    ),
    Bad(
        "la-uamt/bad-spacing",
        "la",
        _hand(_la_uamt),
        lambda s: _h5(_uamt_file(s), spacing=[0.6, 0.6], image=_image(LA_SHAPE, 0), label=_label(LA_SHAPE)),
        "spacing (0.6, 0.6) does not match the 3-D 'image' array",
    ),
    Bad(
        "la-uamt/negative-spacing",
        "la",
        _hand(_la_uamt),
        lambda s: _h5(_uamt_file(s), spacing=[0.6, -0.6, 0.6], image=_image(LA_SHAPE, 0), label=_label(LA_SHAPE)),
        "spacing (0.6, -0.6, 0.6) must be positive",
    ),
]


# ------------------------------------------------------------------------------------------------------ M&Ms cases
def _mnms_case(src: Path) -> tuple[Path, Path]:
    """The first labelled case's image and ground truth."""
    gt = sorted((src / "OpenDataset" / "Training" / "Labeled").rglob("*_sa_gt.nii.gz"))[0]
    return gt.with_name(gt.name.replace("_sa_gt", "_sa")), gt


def _mnms_nifti(src: Path, which: int, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    path = _mnms_case(src)[which]
    nii = nib.load(str(path))
    return _nifti(path, change(np.asarray(nii.dataobj)))


def _with(array: np.ndarray, index, value) -> np.ndarray:
    array = array.astype(np.float32 if isinstance(value, float) else array.dtype)
    array[index] = value
    return array


def _mnms_csv(src: Path, change: Callable[[list[str]], list[str]]) -> Path:
    """Apply ``change`` to the information CSV's lines; returns the CSV."""
    path = next((src / "OpenDataset").glob("*.csv"))
    path.write_text("\n".join(change(path.read_text().splitlines())) + "\n")
    return path


def _mnms_es(src: Path) -> Path:
    """The information sheet gives the first labelled case ES frame 99; returns that case's image."""
    image = _mnms_case(src)[0]
    code = image.name[: -len("_sa.nii.gz")]
    _mnms_csv(src, lambda lines: [",".join(li.split(",")[:-1] + ["99"]) if f",{code}," in li else li for li in lines])
    return image


MNMS = [
    Bad("mnms/garbage-image", "mnms", _copy("mnms"), lambda s: _garbage(_mnms_case(s)[0]), "cannot read NIfTI"),
    Bad("mnms/truncated-gt", "mnms", _copy("mnms"), lambda s: _truncate(_mnms_case(s)[1]), "cannot read NIfTI"),
    Bad(
        "mnms/3d-image",
        "mnms",
        _copy("mnms"),
        lambda s: _mnms_nifti(s, 0, lambda a: a[..., 0]),
        "expected a 4-D (X, Y, Z, T) image, got shape",
    ),
    Bad(
        "mnms/label-values",
        "mnms",
        _copy("mnms"),
        lambda s: _mnms_nifti(s, 1, lambda a: _with(a, (0, 0, 0, 0), 7)),
        "label values {7: 1 voxels} outside {0,1,2,3}",
    ),
    Bad(
        "mnms/nan",
        "mnms",
        _copy("mnms"),
        lambda s: _mnms_nifti(s, 0, lambda a: _with(a, (0, 0, 0, slice(None)), np.nan)),
        "NaN/Inf voxels in image",
    ),
    Bad(
        "mnms/missing-gt",
        "mnms",
        _copy("mnms"),
        lambda s: _unlink(_mnms_case(s)[1], report=_mnms_case(s)[0]),
        "no ground truth (",
    ),
    Bad("mnms/es-beyond-t", "mnms", _copy("mnms"), _mnms_es, "ES frame 99 >= T"),
    Bad(
        "mnms/garbage-csv",
        "mnms",
        _copy("mnms"),
        lambda s: _garbage(next((s / "OpenDataset").glob("*.csv"))),
        "cannot read the information CSV",
        error=DataError,
    ),
    Bad(
        "mnms/short-csv-row",
        "mnms",
        _copy("mnms"),
        lambda s: _mnms_csv(s, lambda lines: lines[:2] + [",".join(lines[2].split(",")[:4])] + lines[3:]),
        "line 3: no value for ['Centre', 'ED', 'ES']",
        error=DataError,
    ),
]


# ------------------------------------------------------------------------------------------------------ BUSI cases
def _busi(src: Path, name: str) -> Path:
    kind = name.split(" ")[0]
    return src / "Dataset_BUSI_with_GT" / kind / name


def _sixteen_bit(path: Path) -> Path:
    grey = _png(path)
    grey = grey if grey.ndim == 2 else grey[..., 0]
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)
    return path


BUSI = [
    Bad(
        "busi-detection/truncated-mask",
        "busi-detection",
        _copy("busi"),
        lambda s: _truncate(_busi(s, "malignant (1)_mask.png")),
        "cannot read PNG (image file is truncated",
    ),
    Bad(
        "busi/16-bit-image",
        "busi",
        _copy("busi"),
        lambda s: _sixteen_bit(_busi(s, "benign (3).png")),
        "not an 8-bit PNG (mode I;16)",
    ),
    Bad(
        "busi/no-mask-file",
        "busi",
        _copy("busi"),
        lambda s: _unlink(_busi(s, "benign (1)_mask.png"), report=_busi(s, "benign (1).png")),
        "no mask file (benign (1)_mask.png)",
    ),
    Bad(
        "busi-detection/mask-without-image",
        "busi-detection",
        _copy("busi"),
        lambda s: _unlink(_busi(s, "malignant (3).png"), report=_busi(s, "malignant (3)_mask.png")),
        "mask without an image",
    ),
    Bad(
        "busi/missing-class-folder",
        "busi",
        _copy("busi"),
        lambda s: _unlink(s / "Dataset_BUSI_with_GT" / "normal"),
        "missing class folder",
    ),
]


# ----------------------------------------------------------------------------------------------------- UDIAT cases
def _xlsx_rows(src: Path, change: Callable[[list[list[str]]], list[list[str]]]) -> Path:
    path = src / "DatasetB.xlsx"
    write_xlsx(path, change(read_xlsx(path)))
    return path


def _drop_row_5(src: Path) -> Path:
    """The workbook loses the row of image 000005; returns that image."""
    _xlsx_rows(src, lambda rows: [row for row in rows if row[0] not in ("5", "000005")])
    return src / "original" / "000005.png"


def _xlsx_parts(src: Path, change: Callable[[str, bytes], bytes]) -> Path:
    """Rewrite the workbook's zip members through ``change(name, data)``."""
    path = src / "DatasetB.xlsx"
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, change(name, data))
    return path


def _corrupt_member(src: Path) -> Path:
    """Flip bytes inside the deflated worksheet (the zip directory stays intact)."""
    path = src / "DatasetB.xlsx"
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("xl/worksheets/sheet1.xml")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for k in range(start + 5, start + 25):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def _mask_values(path: Path, value: int | None) -> Path:
    mask = _png(path).copy()
    if value is None:
        mask[:] = 0
    else:
        mask[mask > 0] = value
        mask[0, 0] = 255
    Image.fromarray(mask).save(path)
    return path


UDIAT = [
    Bad("udiat/truncated-gt", "udiat", _copy("udiat"), lambda s: _truncate(s / "GT" / "000002.png"), "cannot read PNG"),
    Bad(
        "udiat/16-bit-image",
        "udiat",
        _copy("udiat"),
        lambda s: _sixteen_bit(s / "original" / "000003.png"),
        "not an 8-bit PNG (mode I;16)",
    ),
    Bad(
        "udiat/mask-values",
        "udiat",
        _copy("udiat"),
        lambda s: _mask_values(s / "GT" / "000004.png", 128),
        "mask values [128] outside {0,255} (use --mask-threshold)",
    ),
    Bad(
        "udiat/empty-mask",
        "udiat",
        _copy("udiat"),
        lambda s: _mask_values(s / "GT" / "000004.png", None),
        "empty GT mask",
    ),
    Bad(
        "udiat/xlsx-bad-xml",
        "udiat",
        _copy("udiat"),
        lambda s: _xlsx_parts(s, lambda name, data: data[: len(data) // 2] if name.endswith("sheet1.xml") else data),
        "cannot read xlsx (bad XML",
    ),
    Bad("udiat/xlsx-corrupt-member", "udiat", _copy("udiat"), _corrupt_member, "cannot read xlsx (corrupt zip member"),
    Bad(
        "udiat/xlsx-bad-row-number",
        "udiat",
        _copy("udiat"),
        lambda s: _xlsx_parts(s, lambda name, data: data.replace(b'r="2"', b'r="two"', 1) if "sheet" in name else data),
        "bad row number 'two' in the worksheet",
    ),
    Bad(
        "udiat/xlsx-missing-columns",
        "udiat",
        _copy("udiat"),
        lambda s: _xlsx_rows(s, lambda rows: [["Name", "Kind"]] + rows[1:]),
        "lacks the columns Image and Type",
    ),
    Bad(
        "udiat/image-not-in-xlsx",
        "udiat",
        _copy("udiat"),
        _drop_row_5,
        "image not listed in DatasetB.xlsx (no Type)",
    ),
    Bad(
        "udiat/listed-image-missing",
        "udiat",
        _copy("udiat"),
        lambda s: _unlink(s / "GT" / "000006.png", s / "original" / "000006.png", report=s / "DatasetB.xlsx"),
        "image 000006 is listed but original/000006.png is missing",
    ),
    Bad(
        "udiat/gt-without-image",
        "udiat",
        _copy("udiat"),
        lambda s: Path(shutil.copy(s / "GT" / "000001.png", s / "GT" / "000099.png")),
        "GT mask without an image in original/",
    ),
    Bad(
        "udiat/no-workbook",
        "udiat",
        _copy("udiat"),
        lambda s: _unlink(s / "DatasetB.xlsx", report=s),
        "no DatasetB.xlsx",
        error=DataError,
    ),
]


# ----------------------------------------------------------------------------------------------------- SNUBH cases
def _xml(src: Path, case: str, old: str, new: str) -> Path:
    path = src / "Annotations" / f"{case}.xml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def _tiff(src: Path, case: str, array: np.ndarray) -> Path:
    path = src / "TIFFImages" / f"{case}.tif"
    Image.fromarray(array).save(path, format="TIFF")
    return path


def _main(src: Path, name: str) -> Path:
    return src / "ImageSets" / "Main" / f"{name}.txt"


def _append(path: Path, line: str) -> Path:
    path.write_text(path.read_text() + line + "\n")
    return path


SNUBH = [
    Bad(
        "snubh/truncated-tiff",
        "snubh",
        _copy("snubh"),
        lambda s: _truncate(s / "TIFFImages" / "000004.tif"),
        "cannot read TIFF",
    ),
    Bad(
        "snubh/16-bit-tiff",
        "snubh",
        _copy("snubh"),
        lambda s: _tiff(s, "000006", np.full((94, 93), 300, np.uint16)),
        "not an 8-bit grey TIFF (mode I;16)",
    ),
    Bad(
        "snubh/nan-float-tiff",
        "voc",
        _copy("snubh"),
        lambda s: _tiff(s, "000007", np.full((94, 93), np.nan, np.float32)),
        "not an 8-bit grey TIFF (mode F)",
    ),
    Bad(
        "snubh/empty-xml",
        "snubh",
        _copy("snubh"),
        lambda s: _write(s / "Annotations" / "000008.xml", b""),
        "cannot parse XML (no element found",
    ),
    Bad(
        "snubh/no-diag", "snubh", _copy("snubh"), lambda s: _xml(s, "000001", "<diag>0</diag>", ""), "no <BIRADS><diag>"
    ),
    Bad(
        "snubh/bad-diag",
        "snubh",
        _copy("snubh"),
        lambda s: _xml(s, "000001", "<diag>0</diag>", "<diag>benign</diag>"),
        "<BIRADS><diag> 'benign' is not 0 or 1",
    ),
    Bad(
        "snubh/non-numeric-box",
        "snubh",
        _copy("snubh"),
        lambda s: _xml(s, "000001", "<xmin>20</xmin>", "<xmin>twenty</xmin>"),
        "object 'benign' has no numeric <bndbox>",
    ),
    Bad(
        "snubh/inverted-box",
        "snubh",
        _copy("snubh"),
        lambda s: _xml(s, "000001", "<xmin>20</xmin>", "<xmin>50</xmin>"),
        "has xmax < xmin or ymax < ymin",
    ),
    Bad(
        "snubh/unknown-object",
        "snubh",
        _copy("snubh"),
        lambda s: _xml(s, "000001", "<name>benign</name>", "<name>cyst</name>"),
        "unknown object name 'cyst'",
    ),
    Bad(
        "snubh/id-in-two-lists",
        "snubh",
        _copy("snubh"),
        lambda s: _append(_main(s, "test"), "000002"),
        "000002 is also listed in s_train.txt",
    ),
    Bad(
        "snubh/garbage-split-file",
        "snubh",
        _copy("snubh"),
        lambda s: _write(_main(s, "ws_train"), b"\xff\xfe\x80\x81 not text"),
        "cannot read split file",
    ),
    Bad(
        "snubh/no-s-train",
        "snubh",
        _copy("snubh"),
        lambda s: _unlink(_main(s, "s_train"), report=s / "ImageSets" / "Main"),
        "s_train.txt is missing",
    ),
]

PREPARE_CASES = VOLUMES + MNMS + BUSI + UDIAT + SNUBH
CASE = {bad.id: bad for bad in PREPARE_CASES}


# ----------------------------------------------------------------------------------------------------------- checks
def _snapshot(folder: Path) -> dict[str, bytes] | None:
    """``None`` when ``folder`` does not exist, else every file (and empty folder) below it."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"/") for p in sorted(folder.rglob("*"))}


def _no_library_internals(message: str) -> None:
    """No traceback, no C++ source location (ITK) and one line per problem."""
    assert not any(word in message for word in ("Traceback", "ITK ERROR", ".cxx:", ".pyx")), message
    assert all(line.startswith("  /") for line in message.splitlines()[1:]), message


def _split(dataset: str) -> dict[str, str]:
    """acdc/la sources built here have no phantom manifest: a scaled split (the frozen one needs the real IDs)."""
    return {"split": "scaled"} if dataset in ("acdc", "la") else {}


def _reject(bad: Bad, src: Path, out: Path, path: Path) -> str:
    """Run ``prepare`` on the broken source: the project's error, one problem starting with ``"<path>: "`` and
    holding the phrase, and ``out`` exactly as before. Returns the message."""
    before = _snapshot(out)
    with pytest.raises(bad.error) as info:
        prepare(bad.dataset, src, out, **_split(bad.dataset))
    error = info.value
    problems = error.problems if isinstance(error, PrepareError) else [str(error)]
    assert len(problems) == bad.problems, str(error)
    assert any(p.startswith(f"{path}: ") and bad.phrase in p for p in problems), str(error)
    _no_library_internals(str(error))
    assert _snapshot(out) == before, "a failed prepare changed its output folder"
    return str(error)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Callable[[str], Path]:
    """Test-preset phantoms of a dataset, generated once per module on first use."""
    root, made = tmp_path_factory.mktemp("phantoms"), {}

    def get(dataset: str) -> Path:
        if dataset not in made:
            made[dataset] = root / dataset
            generate(dataset, made[dataset], seed=0, preset="test")
        return made[dataset]

    return get


@pytest.mark.parametrize("bad", PREPARE_CASES, ids=[b.id for b in PREPARE_CASES])
def test_prepare_names_the_bad_file_and_writes_nothing(bad, tmp_path, phantoms):
    src = bad.build(tmp_path / "src", phantoms)
    path = bad.mutate(src)
    _reject(bad, src, tmp_path / "out", path)


KEEP_CASES = [
    CASE[i]
    for i in (
        "acdc-raw/garbage-image",
        "la-uamt/truncated-h5",
        "mnms/garbage-image",
        "busi-detection/truncated-mask",
        "udiat/xlsx-bad-xml",
        "snubh/truncated-tiff",
    )
]


@pytest.mark.parametrize("bad", KEEP_CASES, ids=[b.id for b in KEEP_CASES])
def test_a_failed_prepare_keeps_earlier_output(bad, tmp_path, phantoms):
    """DIR holding an earlier run's output keeps it byte for byte when the next run fails."""
    src = bad.build(tmp_path / "src", phantoms)
    out = tmp_path / "out"
    prepare(bad.dataset, src, out, **_split(bad.dataset))
    assert (out / "prepare_report.json").is_file()
    path = bad.mutate(src)
    _reject(bad, src, out, path)


# ------------------------------------------------------------------------------------ failures after writing began
def _spy(monkeypatch, module, name: str) -> list:
    """Record the first argument (the path written) of every call of ``module.name``."""
    real, calls = getattr(module, name), []

    def spy(path, *args):
        calls.append(path)
        return real(path, *args)

    monkeypatch.setattr(module, name, spy)
    return calls


LAST = {
    "acdc-raw": (
        "acdc",
        _acdc_raw,
        lambda s: s / "database" / "training" / f"patient{N_CASES:03d}" / f"patient{N_CASES:03d}_frame02.nii.gz",
    ),
    "acdc-ssl4mis": ("acdc", _acdc_ssl4mis, lambda s: s / "data" / f"patient{N_CASES:03d}_frame02.h5"),
    "la-raw": ("la", _la_raw, lambda s: s / _la_ids()[-1] / "laendo.nrrd"),
    "la-uamt": ("la", _la_uamt, lambda s: s / _la_ids()[-1] / "mri_norm2.h5"),
}


@pytest.mark.parametrize("layout", sorted(LAST))
def test_a_corrupt_last_volume_found_while_converting_leaves_no_output(layout, tmp_path, monkeypatch):
    """acdc/la convert volume by volume: the earlier volumes are already written when the last one turns out to be
    corrupt; the temporary folder and the DIR it created are removed."""
    import semizoo.data.prepare as module

    dataset, build, last = LAST[layout]
    src = build(tmp_path / "src")
    _garbage(last(src))
    written = _spy(monkeypatch, module, "_write_h5")
    out = tmp_path / "deep" / "out"
    with pytest.raises(PrepareError) as info:
        prepare(dataset, src, out, split="scaled")
    assert len(info.value.problems) == 1 and str(info.value.problems[0]).startswith(f"{last(src)}: cannot ")
    assert written and all(".semizoo-tmp-" in str(p) for p in written)  # writing had begun
    assert not (tmp_path / "deep").exists()


def test_mnms_corrupt_last_case_found_while_converting_leaves_no_output(tmp_path, monkeypatch, phantoms):
    import semizoo.data.mnms as module

    src = _copy("mnms")(tmp_path / "src", phantoms)
    last = max((p for p in src.rglob("*_sa.nii.gz") if "Unlabeled" not in p.parts), key=lambda p: p.name)
    _garbage(last)  # the last code converted
    written = _spy(monkeypatch, module, "_write_case")
    with pytest.raises(PrepareError) as info:
        prepare("mnms", src, tmp_path / "out")
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(f"{last}: cannot read NIfTI (")
    assert written and not (tmp_path / "out").exists()


BUS_CASES = [CASE["busi-detection/truncated-mask"], CASE["udiat/truncated-gt"], CASE["snubh/truncated-tiff"]]


@pytest.mark.parametrize("bad", BUS_CASES, ids=[b.id for b in BUS_CASES])
def test_bus_prepares_check_every_case_before_writing(bad, tmp_path, monkeypatch, phantoms):
    """busi/udiat/snubh read and check every case first: a bad file means not one PNG is written."""
    src = bad.build(tmp_path / "src", phantoms)
    path = bad.mutate(src)
    saved = []
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: saved.append(fp))
    _reject(bad, src, tmp_path / "out", path)
    assert saved == []


WRITERS = {
    "acdc": ("semizoo.data.prepare", "_write_h5", lambda root, phantom: _acdc_raw(root)),
    "la": ("semizoo.data.prepare", "_write_h5", lambda root, phantom: _la_uamt(root)),
    "mnms": ("semizoo.data.mnms", "_write_case", _copy("mnms")),
    "busi": ("PIL.Image", "Image.save", _copy("busi")),
    "udiat": ("PIL.Image", "Image.save", _copy("udiat")),
    "snubh": ("PIL.Image", "Image.save", _copy("snubh")),
}


@pytest.mark.parametrize("dataset", sorted(WRITERS))
@pytest.mark.parametrize("earlier", [False, True], ids=["new-dir", "earlier-output"])
def test_a_write_error_midway_leaves_no_output(dataset, earlier, tmp_path, monkeypatch, phantoms):
    """Writing fails on the third file (disk full): the error propagates, nothing of the run is left in DIR."""
    import importlib

    module_name, attribute, build = WRITERS[dataset]
    src = build(tmp_path / "src", phantoms)
    out = tmp_path / "out"
    kwargs = _split(dataset)
    if earlier:
        prepare(dataset, src, out, **kwargs)
    before = _snapshot(out)
    owner = importlib.import_module(module_name)
    for part in attribute.split(".")[:-1]:
        owner = getattr(owner, part)
    real, calls = getattr(owner, attribute.split(".")[-1]), []

    def failing(*args, **kw):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kw)

    monkeypatch.setattr(owner, attribute.split(".")[-1], failing)
    with pytest.raises(OSError, match="No space left on device"):
        prepare(dataset, src, out, **kwargs)
    assert len(calls) == 3
    assert _snapshot(out) == before


# ------------------------------------------------------------------------------------------------------------- CLI
CLI_CASES = [
    CASE[i]
    for i in (
        "acdc-raw/garbage-image",
        "la-raw/garbage-image",
        "mnms/garbage-image",
        "mnms/garbage-csv",
        "busi-detection/truncated-mask",
        "udiat/xlsx-corrupt-member",
        "snubh/truncated-tiff",
    )
]


@pytest.mark.parametrize("bad", CLI_CASES, ids=[b.id for b in CLI_CASES])
def test_cli_prepare_exits_2_with_the_message(bad, tmp_path, phantoms, capsys):
    src = bad.build(tmp_path / "src", phantoms)
    path = bad.mutate(src)
    out = tmp_path / "out"
    args = ["prepare", bad.dataset, str(src), str(out)] + (["--split=scaled"] if bad.dataset in ("acdc", "la") else [])
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    assert f"{path}: " in captured.err and bad.phrase in captured.err
    assert not out.exists()


# --------------------------------------------------------------------------------------------- training-time readers
def _volume_h5(path: Path, spacing=(2.0, 1.0, 1.0), **changes) -> Path:
    _h5(path, spacing=spacing, image=_image((3, 4, 5), 0), label=_label((3, 4, 5)))
    return _edit_h5(path, **changes) if changes else path


def _damaged_chunks(path: Path) -> Path:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("image", data=_image((20, 30, 40), 0), compression="gzip")
    data = bytearray(path.read_bytes())
    for k in range(len(data) // 2, len(data) // 2 + 200):
        data[k] ^= 0xA5
    path.write_bytes(bytes(data))
    return path


def _cine_h5(path: Path, **changes) -> Path:
    _h5(path, spacing=[8.0, 1.5, 1.5], image=_image((4, 3, 6, 5), 0), label=_label((2, 3, 6, 5)))
    return _edit_h5(path, **changes) if changes else path


def _png_file(path: Path) -> Path:
    Image.fromarray(_label((40, 50)) * np.uint8(200)).save(path)
    return path


def _load_h5(key: str):
    return lambda path: HDF5Reader(key=key).get_data(HDF5Reader(key=key).read(str(path)))


def _bundle_loader(key: str):
    """The bundles' loader of ``key`` (:func:`semizoo.transforms.hdf5_load_transforms`)."""
    return lambda path: hdf5_load_transforms(key)[0]({key: str(path)})


class Reader(NamedTuple):
    id: str
    write: Callable[[Path], Path]  # writes the bad file under the given path
    read: Callable[[Path], object]
    phrase: str


READERS = [
    Reader(
        "read_h5/truncated",
        lambda p: _truncate(_volume_h5(p)),
        lambda p: read_h5(p, "image"),
        "cannot open HDF5 (Unable to synchronously open file (truncated file",
    ),
    Reader("read_h5/damaged-chunk", _damaged_chunks, lambda p: read_h5(p, "image"), "cannot read HDF5 dataset 'image'"),
    Reader(
        "read_h5/key-is-a-group",
        lambda p: _volume_h5(p, label="group"),
        lambda p: read_h5(p, "label"),
        "'label' is an HDF5 group, not a dataset",
    ),
    Reader(
        "read_h5/spacing-length",
        lambda p: _h5(p, spacing=[1.0, 1.0], image=_image((3, 4, 5), 0)),
        lambda p: read_h5(p, "image"),
        "spacing (1.0, 1.0) does not match the 3-D 'image' array",
    ),
    Reader("HDF5Reader/missing-file", lambda p: p, _load_h5("image"), "cannot open HDF5"),
    Reader(
        "HDF5Reader/1d-dataset",
        lambda p: _volume_h5(p, spacing=None, image=np.arange(7.0)),
        _load_h5("image"),
        "HDF5 dataset 'image' must be 2-D or 3-D, got shape (7,)",
    ),
    Reader(
        "LoadImaged(HDF5Reader)/4d-dataset",
        lambda p: _volume_h5(p, spacing=None, label=_label((2, 3, 4, 5))),  # SSL4MIS files carry no spacing
        _bundle_loader("label"),
        "HDF5 dataset 'label' must be 2-D or 3-D, got shape (2, 3, 4, 5)",
    ),
    Reader("LoadImaged(HDF5Reader)/garbage", _garbage, _bundle_loader("image"), "cannot open HDF5"),
    Reader(
        "LoadImaged(HDF5Reader)/no-label-key",
        lambda p: _cine_h5(p, label=None),
        _bundle_loader("label"),
        "no HDF5 dataset 'label' (has ['image'])",
    ),
    Reader("read_cine/garbage", _garbage, lambda p: read_cine(p, "image", 0, 0), "cannot open HDF5"),
    Reader(
        "read_cine/no-label-key",
        lambda p: _cine_h5(p, label=None),
        lambda p: read_cine(p, "label", 0, 0),
        "no HDF5 dataset 'label' (has ['image'])",
    ),
    Reader(
        "read_cine/key-is-a-group",
        lambda p: _cine_h5(p, image="group"),
        lambda p: read_cine(p, "image", 0),
        "'image' is an HDF5 group, not a dataset",
    ),
    Reader(
        "read_cine/3d-image",
        lambda p: _cine_h5(p, image=_image((3, 6, 5), 0)),
        lambda p: read_cine(p, "image", 0, 0),
        "'image' must be 4-D (frames or phases, Z, Y, X), got shape (3, 6, 5)",
    ),
    Reader(
        "read_cine/slice-outside", _cine_h5, lambda p: read_cine(p, "label", 1, 3), "'label' slice 3 outside [0, 3)"
    ),
    Reader(
        "LoadCined/no-frame",
        _cine_h5,
        lambda p: LoadCined()({"image": str(p), "label": str(p), "phase": 0}),
        "datalist entry has no 'frame' (not a prepared M&Ms entry)",
    ),
    Reader(
        "LoadCined/no-phase",
        _cine_h5,
        lambda p: LoadCined()({"image": str(p), "label": str(p), "frame": 0, "slice": 1}),
        "labelled entry has no 'phase' (0 ED, 1 ES)",
    ),
    Reader(
        "ImagePool/truncated-png",
        lambda p: _truncate(_png_file(p.with_suffix(".png"))),
        lambda p: ImagePool([{"image": str(p.with_suffix(".png"))}]).read(0),
        "cannot read PNG (image file is truncated",
    ),
]


@pytest.mark.parametrize("reader", READERS, ids=[r.id for r in READERS])
def test_training_time_readers_name_the_file_and_key(reader, tmp_path):
    path = reader.write(tmp_path / "case.h5")
    with pytest.raises(DataError) as info:
        reader.read(tmp_path / "case.h5")
    message = str(info.value)
    assert message.startswith(f"{path}: ") and reader.phrase in message, message
    assert "\n" not in message  # one line
    _no_library_internals(message)


def test_the_corpus_covers_every_reader():
    """Every reader module of the issue has bad-input cases here (a new reader needs its own)."""
    prepared = {b.id.split("/")[0] for b in PREPARE_CASES}
    assert prepared >= {
        "acdc-raw",
        "acdc-ssl4mis",
        "la-raw",
        "la-uamt",
        "mnms",
        "busi",
        "busi-detection",
        "udiat",
        "snubh",
    }
    assert {r.id.split("/")[0] for r in READERS} >= {
        "read_h5",
        "HDF5Reader",
        "LoadImaged(HDF5Reader)",
        "read_cine",
        "LoadCined",
        "ImagePool",
    }
    assert len({b.id for b in PREPARE_CASES}) == len(PREPARE_CASES)
