"""``python -m semizoo prepare la|acdc``: convert a public layout into semizoo's prepared layout and datalists.

Output (datasets.md §2): ``DIR/data/<dataset>/...h5``, ``DIR/datalists/<setting>.json`` for every setting,
``DIR/datalist.json`` (the default setting) and ``DIR/prepare_report.json``. Every case is checked before
anything is written; problems are listed together (:class:`PrepareError`). Output is written to
``DIR/.semizoo-tmp-<pid>/`` and moved into place only on success.

- **acdc** from the raw CREATIS layout (``database/training/patientNNN``) or the SSL4MIS layout
  (``data/*.h5`` + lists; training frames that exist only as slices ``data/slices/<frame>_slice_K.h5`` or
  ``data/<frame>_slice_K.h5``, as SSL4MIS's loaders read them, are stacked back in K order): 3D volumes
  ``data/acdc/patientNNN_frame{01,02}.h5`` (01 = ED, 02 = ES; SimpleITK order (Z, Y, X), intensities min-max scaled
  per volume, ``spacing`` attribute (z, y, x) when known) and their 2D slices
  ``data/acdc/slices/patientNNN_frameFF_slice_K.h5`` (K from 1, as SSL4MIS names them). Training lists hold slices,
  validation and test hold volumes.
- **la** from the raw challenge layout (``<ID>/lgemri.nrrd``, ``laendo.nrrd``) or UA-MT's h5 layout:
  ``data/la/<ID>.h5`` with the image z-scored over the whole volume, then cropped in x/y to the label box plus a
  margin drawn in [10, 20) per side (UA-MT's preprocessing; seeded by split seed and ID), ``spacing`` (x, y, z).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import DataError
from .hdf5 import read_h5
from .splits import SETTINGS, frozen_split, scaled_split

__all__ = ["PrepareError", "prepare", "detect_layout", "LAYOUTS"]

VERSION = "1"
PHANTOM_MANIFEST = "semizoo_phantom.json"
MAX_LISTED = 50
LAYOUTS = {"acdc": ("raw", "ssl4mis"), "la": ("raw", "uamt")}
CLASSES = {
    "acdc": {"0": "background", "1": "rv", "2": "myocardium", "3": "lv"},
    "la": {"0": "background", "1": "left_atrium"},
}
LA_SPACING_UAMT = (0.625, 0.625, 0.625)  # LA 2018 voxels are 0.625 mm isotropic (datasets.md §1.1)


class PrepareError(ValueError):
    """All problems found while checking a source, each ``"<path>: <problem>"``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{len(problems)} problem(s) in the source data:\n  {listed}{more}")


@dataclass
class Volume:
    """One 3D image/label pair in the prepared orientation."""

    name: str
    patient: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, ...] | None
    extra: dict[str, Any] = field(default_factory=dict)
    image_file: Path | None = None  # the source files, named in problems (the same h5 file for both keys)
    label_file: Path | None = None


# ---------------------------------------------------------------- layout detection


def detect_layout(dataset: str, src: Path) -> str:
    """The source layout from marker files; :class:`DataError` naming them on zero or several matches."""
    markers = {
        "acdc": {"raw": "database/training", "ssl4mis": "train_slices.list"},
        "la": {"raw": "*/lgemri.nrrd", "uamt": "**/mri_norm2.h5"},
    }[dataset]
    found = [layout for layout, pattern in markers.items() if _exists(src, pattern)]
    if len(found) != 1:
        names = ", ".join(f"{layout}: {pattern}" for layout, pattern in markers.items())
        what = "none" if not found else " and ".join(found)
        raise DataError(src, f"cannot tell the {dataset} layout ({what} matched; markers {names}); pass --layout")
    return found[0]


def _exists(src: Path, pattern: str) -> bool:
    if "*" not in pattern:
        return (src / pattern).exists() or any(True for _ in src.glob(f"**/{pattern}"))
    return next(iter(src.glob(pattern)), None) is not None


# ---------------------------------------------------------------- readers (check, then yield volumes)


def _check_volume(
    image_file: Path, label_file: Path, image: np.ndarray, label: np.ndarray, classes: int, problems: list[str]
) -> bool:
    """Shape, finite non-constant intensities and integer labels in ``[0, classes)``; problems name the file."""
    ok = True
    if image.shape != label.shape:
        problems.append(f"{label_file}: shape {label.shape} != image {image.shape}")
        return False
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        problems.append(f"{image_file}: {bad} NaN/Inf voxels in image")
        ok = False
    elif float(image.max()) == float(image.min()):
        problems.append(f"{image_file}: constant image")
        ok = False
    if not np.issubdtype(label.dtype, np.integer) and not np.all(np.mod(label, 1) == 0):
        problems.append(f"{label_file}: non-integer label values")
        return False
    values, counts = np.unique(label.astype(np.int64), return_counts=True)
    outside = {int(v): int(c) for v, c in zip(values, counts) if not 0 <= v < classes}
    if outside:
        listed = ", ".join(f"{v}: {c} voxels" for v, c in outside.items())
        classes_text = ",".join(str(c) for c in range(classes))
        problems.append(f"{label_file}: label values {{{listed}}} outside {{{classes_text}}}")
        ok = False
    return ok


def _read_nifti(path: Path, what: str) -> tuple[np.ndarray, Any]:
    """``(array, nibabel image)`` of a 3-D NIfTI; :class:`DataError` naming the file when unreadable or not 3-D."""
    import nibabel as nib

    try:
        nii = nib.load(str(path))
        array = np.asarray(nii.dataobj)
    except Exception as error:  # nibabel raises many types for corrupt files (bad gzip, header, short data)
        raise DataError(path, f"cannot read NIfTI ({error})") from error
    if array.ndim != 3:
        raise DataError(path, f"expected a 3-D (X, Y, Z) {what}, got shape {array.shape}")
    return array, nii


def _read_info_cfg(path: Path) -> dict[str, str]:
    info = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def _acdc_raw(src: Path, problems: list[str]) -> list[Callable[[], list[Volume]]]:
    root = src / "database" / "training" if (src / "database" / "training").is_dir() else src
    loaders = []
    for folder in sorted(p for p in root.glob("patient[0-9][0-9][0-9]") if p.is_dir()):
        patient = folder.name
        cfg = folder / "Info.cfg"
        if not cfg.is_file():
            problems.append(f"{folder}: Info.cfg is missing")
            continue
        info = _read_info_cfg(cfg)
        frames = []
        for phase in ("ED", "ES"):
            if not info.get(phase, "").isdigit():
                problems.append(f"{cfg}: no integer {phase} frame")
                continue
            frame = int(info[phase])
            image_path = folder / f"{patient}_frame{frame:02d}.nii.gz"
            label_path = folder / f"{patient}_frame{frame:02d}_gt.nii.gz"
            for path in (image_path, label_path):
                if not path.is_file():
                    problems.append(f"{folder}: Info.cfg names {phase} frame {frame} but {path.name} is missing")
            frames.append((phase, image_path, label_path))
        if len(frames) != 2 or not all(p.is_file() for _, a, b in frames for p in (a, b)):
            continue

        def load(frames=frames, patient=patient) -> list[Volume]:
            volumes = []
            for index, (phase, image_path, label_path) in enumerate(frames, start=1):
                image, image_nii = _read_nifti(image_path, "image")
                label, _ = _read_nifti(label_path, "label")
                zooms = tuple(float(z) for z in image_nii.header.get_zooms()[:3])
                volumes.append(
                    Volume(
                        f"{patient}_frame{index:02d}",
                        patient,
                        image.astype(np.float32).transpose(2, 1, 0),
                        label.transpose(2, 1, 0),
                        zooms[::-1],
                        {"phase": phase},
                        image_file=image_path,
                        label_file=label_path,
                    )
                )
            return volumes

        loaders.append(load)
    return loaders


_SSL4MIS_SLICE = re.compile(r"^(patient\d{3}_frame\d{2})_slice_(\d+)\.h5$")


def _ssl4mis_slices(volume_dir: Path, problems: list[str]) -> dict[str, list[Path]]:
    """Training frames that SSL4MIS keeps only as 2D slices (``data/slices/`` or ``data/``), slice files in order.

    SSL4MIS's own loaders read training patients as ``<frame>_slice_<k>.h5`` and validation/test patients as
    volumes. The slice numbers of a frame must be consecutive (a gap would silently drop a slice of the volume).
    """
    frames: dict[str, dict[int, Path]] = {}
    for folder in (volume_dir / "slices", volume_dir):
        for path in folder.glob("patient*_frame*_slice_*.h5"):
            match = _SSL4MIS_SLICE.match(path.name)
            if match:
                frames.setdefault(match.group(1), {})[int(match.group(2))] = path
    ordered = {}
    for frame, by_index in sorted(frames.items()):
        indices = sorted(by_index)
        missing = sorted(set(range(indices[0], indices[-1] + 1)) - set(indices))
        if missing:
            problems.append(f"{by_index[indices[0]].parent}/{frame}_slice_*.h5: slice numbers {missing} are missing")
            continue
        ordered[frame] = [by_index[i] for i in indices]
    return ordered


def _stack_slices(frame: str, paths: list[Path]) -> list[Volume]:
    """One volume (Z, Y, X) from a frame's 2D slice files (no spacing: SSL4MIS files carry none)."""
    images, labels = [], []
    for path in paths:
        image, _ = read_h5(path, "image")
        label, _ = read_h5(path, "label")
        if image.ndim != 2 or image.shape != label.shape:
            raise DataError(path, f"slice image {image.shape} and label {label.shape} must be equal 2D shapes")
        if images and image.shape != images[0].shape:
            raise DataError(path, f"slice shape {image.shape} != {images[0].shape} of {paths[0].name}")
        images.append(image.astype(np.float32))
        labels.append(label)
    files = paths[0].parent / f"{frame}_slice_*.h5"
    return [
        Volume(frame, frame.split("_")[0], np.stack(images), np.stack(labels), None, image_file=files, label_file=files)
    ]


def _read_h5_volume(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...] | None]:
    """``(image, label, spacing)`` of a 3-D h5 volume; :class:`DataError` naming the file and key otherwise."""
    image, spacing = read_h5(path, "image")
    label, _ = read_h5(path, "label")
    for key, array in (("image", image), ("label", label)):
        if array.ndim != 3:
            raise DataError(path, f"expected a 3-D {key!r} volume, got shape {array.shape}")
    return image, label, spacing


def _acdc_ssl4mis(src: Path, problems: list[str]) -> list[Callable[[], list[Volume]]]:
    """SSL4MIS's ACDC copy: volumes ``data/<frame>.h5``; frames present only as slices are stacked back."""
    data = next((p.parent for p in src.glob("**/train_slices.list")), src)
    volume_dir = data / "data" if (data / "data").is_dir() else data
    loaders = []
    volumes = sorted(volume_dir.glob("patient[0-9][0-9][0-9]_frame[0-9][0-9].h5"))
    for path in volumes:

        def load(path=path) -> list[Volume]:
            image, label, spacing = _read_h5_volume(path)
            patient = path.stem.split("_")[0]
            return [
                Volume(path.stem, patient, image.astype(np.float32), label, spacing, image_file=path, label_file=path)
            ]

        loaders.append(load)
    have = {path.stem for path in volumes}
    for frame, paths in _ssl4mis_slices(volume_dir, problems).items():
        if frame not in have:
            loaders.append(lambda frame=frame, paths=paths: _stack_slices(frame, paths))
    if not loaders:
        problems.append(f"{volume_dir}: no patientNNN_frameFF.h5 volumes and no patientNNN_frameFF_slice_K.h5 slices")
    return loaders


def _read_nrrd(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    import itk

    try:
        image = itk.imread(str(path))
        array = itk.array_from_image(image)
    except Exception as error:  # itk raises RuntimeError subclasses for corrupt files
        raise DataError(path, f"cannot read NRRD ({_itk_problem(error)})") from error
    if array.ndim != 3:
        raise DataError(path, f"expected a 3-D NRRD volume, got shape {array.shape[::-1]}")
    return array.transpose(2, 1, 0), tuple(float(s) for s in image.GetSpacing())  # itk gives (z, y, x)


def _itk_problem(error: Exception) -> str:
    """The reason in an ITK exception: one line, without ITK's source location and teem's chain of callers."""
    text = " ".join(str(error).split())
    text = re.sub(r"^.*?ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ", "", text)
    return re.sub(r"^_?nrrd\w*: ", "", text.split("[nrrd] ")[-1].strip())


def _la_raw(src: Path, problems: list[str]) -> list[Callable[[], list[Volume]]]:
    loaders = []
    for folder in sorted(p.parent for p in src.glob("*/lgemri.nrrd")):
        if not (folder / "laendo.nrrd").is_file():
            problems.append(f"{folder}: laendo.nrrd is missing")
            continue

        def load(folder=folder) -> list[Volume]:
            image, spacing = _read_nrrd(folder / "lgemri.nrrd")
            endo, _ = _read_nrrd(folder / "laendo.nrrd")
            values = set(np.unique(endo).tolist())
            if not values <= {0, 255}:
                raise DataError(folder / "laendo.nrrd", f"label values {sorted(values - {0, 255})} outside {{0,255}}")
            label = (endo == 255).astype(np.uint8)
            files = {"image_file": folder / "lgemri.nrrd", "label_file": folder / "laendo.nrrd"}
            return [Volume(folder.name, folder.name, image.astype(np.float32), label, spacing, {"raw": True}, **files)]

        loaders.append(load)
    return loaders


def _la_uamt(src: Path, problems: list[str]) -> list[Callable[[], list[Volume]]]:
    loaders = []
    for path in sorted(src.glob("**/mri_norm2.h5")):

        def load(path=path) -> list[Volume]:
            image, label, spacing = _read_h5_volume(path)
            name, image = path.parent.name, image.astype(np.float32)
            return [Volume(name, name, image, label, spacing or LA_SPACING_UAMT, image_file=path, label_file=path)]

        loaders.append(load)
    return loaders


READERS = {
    ("acdc", "raw"): _acdc_raw,
    ("acdc", "ssl4mis"): _acdc_ssl4mis,
    ("la", "raw"): _la_raw,
    ("la", "uamt"): _la_uamt,
}


# ---------------------------------------------------------------- conversion


def la_crop(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """UA-MT's x/y crop: the label's bounding box plus a margin drawn in [10, 20) on each side, within the volume."""
    nonzero = np.nonzero(label)
    if not nonzero[0].size:
        return image, label
    slices = []
    for axis in (0, 1):
        low, high = int(nonzero[axis].min()), int(nonzero[axis].max())
        start = max(low - int(rng.integers(10, 20)), 0)
        stop = min(high + int(rng.integers(10, 20)), label.shape[axis])
        slices.append(slice(start, stop))
    return image[slices[0], slices[1]], label[slices[0], slices[1]]


def _normalise(dataset: str, volume: Volume, split_seed: int, crop: str) -> Volume:
    if dataset == "acdc":
        low, high = float(volume.image.min()), float(volume.image.max())
        if volume.extra.get("phase") is not None or high > 1.0 or low < 0.0:
            volume.image = ((volume.image - low) / (high - low)).astype(np.float32)
        volume.label = volume.label.astype(np.uint8)
        return volume
    if volume.extra.get("raw"):
        volume.image = ((volume.image - volume.image.mean()) / volume.image.std()).astype(np.float32)
        if crop == "label":
            seed = int.from_bytes(hashlib.sha256(f"{split_seed}:{volume.name}".encode()).digest()[:8], "little")
            volume.image, volume.label = la_crop(volume.image, volume.label, np.random.default_rng(seed))
    volume.label = volume.label.astype(np.uint8)
    return volume


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", track_order=False) as handle:
        handle.create_dataset("image", data=image, compression="gzip", track_times=False)
        handle.create_dataset("label", data=label, compression="gzip", track_times=False)
        if spacing is not None:
            handle.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)


def _entries(dataset: str, volume: Volume) -> tuple[dict, list[dict]]:
    """(volume entry, slice entries) with paths relative to DIR; writes nothing."""
    spacing = None if volume.spacing is None else [round(float(s), 6) for s in volume.spacing]
    rel = f"data/{dataset}/{volume.name}.h5"
    entry = {"image": rel, "label": rel, "patient": volume.patient}
    if spacing is not None:
        entry["spacing"] = spacing
    slices = []
    if dataset == "acdc":
        for k in range(volume.image.shape[0]):
            srel = f"data/acdc/slices/{volume.name}_slice_{k + 1}.h5"
            item = {"image": srel, "label": srel, "patient": volume.patient, "volume": volume.name}
            if spacing is not None:
                item["spacing"] = spacing[1:]
            slices.append(item)
    return entry, slices


def _write_volume(tmp: Path, dataset: str, volume: Volume) -> None:
    _write_h5(tmp / "data" / dataset / f"{volume.name}.h5", volume.image, volume.label, volume.spacing)
    if dataset == "acdc":
        in_plane = None if volume.spacing is None else volume.spacing[1:]
        for k in range(volume.image.shape[0]):
            path = tmp / "data" / "acdc" / "slices" / f"{volume.name}_slice_{k + 1}.h5"
            _write_h5(path, volume.image[k], volume.label[k], in_plane)


def _unlabeled(entries: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in ("label", "box")} for e in entries]


def _datalists(dataset, split, volumes, slices, phantom) -> dict[str, dict]:
    """One datalist per setting: training lists hold slices (ACDC) or volumes (LA)."""
    train_items = slices if dataset == "acdc" else volumes
    lists = {}
    for setting, patients in split["labeled"].items():
        labeled = sorted((e for p in patients for e in train_items[p]), key=lambda e: e["image"])
        rest = [p for p in split["train"] if p not in set(patients)]
        unlabeled = sorted((e for p in rest for e in train_items[p]), key=lambda e: e["image"])
        lists[setting] = {
            "dataset": dataset,
            "setting": setting,
            "phantom": phantom,
            "classes": CLASSES[dataset],
            "labeled_patients": list(patients),
            "labeled": labeled,
            "unlabeled": _unlabeled(unlabeled),
            "validation": sorted((e for p in split["validation"] for e in volumes[p]), key=lambda e: e["image"]),
            "test": sorted((e for p in split["test"] for e in volumes[p]), key=lambda e: e["image"]),
        }
    return lists


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=4) + "\n"


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite and not (out / "prepare_report.json").is_file():
        raise DataError(out, "is not empty and holds no semizoo output; pass --overwrite to replace its contents")


def prepare(
    dataset: str,
    src: str | os.PathLike,
    out: str | os.PathLike,
    layout: str = "auto",
    split: str = "auto",
    split_seed: int = 0,
    setting: str | None = None,
    la_crop_mode: str = "label",
    overwrite: bool = False,
    extra_unlabeled: bool = False,
    labeled_selection: str = "first",
    mask_threshold: float | None = None,
) -> dict[str, Any]:
    """Convert ``src`` (a public layout of ``dataset``) into ``out``; returns the report written there.

    Args:
        dataset: ``acdc``, ``la``, ``mnms`` (:func:`semizoo.data.mnms.prepare_mnms`) or ``busi``
            (:func:`semizoo.data.busi.prepare_busi`; segmentation and detection settings; aliases
            ``busi-segmentation`` and ``busi-detection``, whose ``datalist.json`` defaults to ``det_lab20pct``),
            ``udiat`` (:func:`semizoo.data.udiat.prepare_udiat`) or ``snubh``, alias ``voc``
            (:func:`semizoo.data.snubh.prepare_snubh`).
        src: the downloaded (or phantom) data.
        out: the prepared DIR.
        layout: ``auto`` (from marker files) or one of ``LAYOUTS[dataset]``.
        split: ``standard`` (the frozen lists; fails naming missing IDs), ``scaled`` (a seeded split keeping the
            standard proportions), ``auto`` (``scaled`` for phantoms, else ``standard``).
        split_seed: seed of ``scaled`` splits and of LA crop margins.
        setting: the default datalist (``datalist.json``); ``lab3`` (ACDC) or ``lab4`` (LA) when omitted.
        la_crop_mode: ``label`` (UA-MT's crop from the GT box) or ``none``.
        overwrite: replace a non-empty ``out`` that holds something other than semizoo output.
        extra_unlabeled: mnms only: add the vendor-C ``Training/Unlabeled`` cases to the unlabelled lists.
        labeled_selection: mnms only: ``first`` (EPL's first patients by code) or ``random`` (seeded).
        mask_threshold: busi and udiat only: binarise masks at ``> T`` instead of requiring values in {0, 255}.

    Raises:
        DataError: bad arguments or layout; PrepareError: every problem found in the source.
    """
    if dataset == "mnms":
        from .mnms import prepare_mnms

        if layout not in ("auto", "raw"):
            raise DataError(src, f"layout {layout!r} is not one of ('raw',) for mnms")
        return prepare_mnms(src, out, setting, extra_unlabeled, labeled_selection, split_seed, overwrite)
    if dataset in ("busi", "busi-segmentation", "busi-detection"):
        from .busi import DEFAULT_DET_SETTING, prepare_busi

        if layout not in ("auto", "raw"):
            raise DataError(src, f"layout {layout!r} is not one of ('raw',) for busi")
        if dataset == "busi-detection" and setting is None:
            setting = DEFAULT_DET_SETTING  # the files of busi, with datalist.json = the detection default
        return prepare_busi(src, out, setting, split_seed, mask_threshold, overwrite)
    if dataset == "udiat":
        from .udiat import prepare_udiat

        if layout not in ("auto", "raw"):
            raise DataError(src, f"layout {layout!r} is not one of ('raw',) for udiat")
        return prepare_udiat(src, out, setting, split_seed, mask_threshold, overwrite)
    if dataset in ("snubh", "voc"):
        from .snubh import prepare_snubh

        if layout not in ("auto", "raw", "voc"):
            raise DataError(src, f"layout {layout!r} is not one of ('raw', 'voc') for snubh")
        return prepare_snubh(src, out, setting, split_seed, overwrite)
    if dataset not in LAYOUTS:
        known = sorted(LAYOUTS) + ["busi", "mnms", "snubh", "udiat"]
        raise DataError(src, f"unknown dataset {dataset!r}; choose one of {known}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(src, "source folder does not exist")
    _check_out(out, overwrite)
    if layout == "auto":
        layout = detect_layout(dataset, src)
    if layout not in LAYOUTS[dataset]:
        raise DataError(src, f"layout {layout!r} is not one of {LAYOUTS[dataset]} for {dataset}")
    if la_crop_mode not in ("label", "none"):
        raise DataError(src, f"la crop {la_crop_mode!r} is not one of ('label', 'none')")
    phantom = (src / PHANTOM_MANIFEST).is_file()
    if split == "auto":
        split = "scaled" if phantom else "standard"
    default_setting = setting or next(iter(SETTINGS[dataset]))
    if default_setting not in SETTINGS[dataset]:
        raise DataError(src, f"setting {default_setting!r} is not one of {list(SETTINGS[dataset])}")

    problems: list[str] = []
    loaders = READERS[(dataset, layout)](src, problems)
    volumes: dict[str, list[dict]] = {}
    slices: dict[str, list[dict]] = {}
    tmp, created = out / f".semizoo-tmp-{os.getpid()}", _missing_folders(out)
    n_classes = len(CLASSES[dataset])
    try:
        for volume in _iterate(loaders, problems):
            image_file = volume.image_file or Path(volume.name)
            label_file = volume.label_file or image_file
            if not _check_volume(image_file, label_file, volume.image, volume.label, n_classes, problems):
                continue
            if volume.spacing is not None and any(s <= 0 for s in volume.spacing):
                problems.append(f"{image_file}: spacing {volume.spacing} must be positive")
                continue
            volume = _normalise(dataset, volume, split_seed, la_crop_mode)
            if not problems:
                _write_volume(tmp, dataset, volume)
            entry, slice_entries = _entries(dataset, volume)
            volumes.setdefault(volume.patient, []).append(entry)
            slices.setdefault(volume.patient, []).extend(slice_entries)
        if not volumes and not problems:
            problems.append(f"{src}: no {dataset} cases found in the {layout} layout")
        if problems:
            raise PrepareError(problems)
        patients = sorted(volumes)
        split_lists = (
            frozen_split(dataset, patients) if split == "standard" else scaled_split(dataset, patients, split_seed)
        )
        lists = _datalists(dataset, split_lists, volumes, slices, phantom)
        report = _report(dataset, layout, split, split_seed, default_setting, phantom, src, lists, split_lists)
        (tmp / "datalists").mkdir(parents=True, exist_ok=True)
        for name, content in lists.items():
            (tmp / "datalists" / f"{name}.json").write_text(_dump(content))
        (tmp / "datalist.json").write_text(_dump(lists[default_setting]))
        (tmp / "prepare_report.json").write_text(_dump(report))
        _commit(tmp, out)
        return report
    finally:
        _discard(tmp, created)


def _iterate(loaders: list[Callable[[], list[Volume]]], problems: list[str]) -> Iterator[Volume]:
    for load in loaders:
        try:
            yield from load()
        except DataError as error:
            problems.append(str(error))


def _report(dataset, layout, split, split_seed, setting, phantom, src, lists, split_lists) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "layout": layout,
        "split": split,
        "split_seed": split_seed,
        "default_setting": setting,
        "phantom": phantom,
        "semizoo_prepare_version": VERSION,
        "source": str(src.resolve()),
        "patients": {k: len(v) for k, v in split_lists.items() if k != "labeled"},
        "counts": {
            name: {k: len(content[k]) for k in ("labeled", "unlabeled", "validation", "test")}
            for name, content in lists.items()
        },
        "datalist_sha256": {name: hashlib.sha256(_dump(c).encode()).hexdigest() for name, c in lists.items()},
        "warnings": ["LA spacing assumed 0.625 mm (UA-MT h5 stores none)"] if layout == "uamt" else [],
    }


def _missing_folders(out: Path) -> list[Path]:
    """``out`` and its ancestors that do not exist yet, innermost first (what a failed run must not leave)."""
    return [folder for folder in (out, *out.parents) if not folder.exists()]


def _discard(tmp: Path, created: list[Path]) -> None:
    """Remove ``tmp`` and, innermost first, the folders of ``created`` that are still empty (datasets.md §3: a
    failed ``prepare`` leaves DIR untouched, so it does not leave behind a DIR it created either)."""
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty (a successful run) or already gone
            break


def _commit(tmp: Path, out: Path) -> None:
    """Move the finished output from ``tmp`` into ``out``, replacing earlier semizoo output."""
    out.mkdir(parents=True, exist_ok=True)
    for item in sorted(tmp.iterdir()):
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(item, target)
