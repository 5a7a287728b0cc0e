"""Datalist checks before any work (datasets.md §3): ``python -m semizoo validate`` and the start of every training.

Every problem found is listed in one :class:`DatalistError`, each as ``"<file or list>: <problem>"``, before a
bundle writes anything:

- every entry's files exist and read (HDF5 keys, cine frames, NIfTI/NRRD through MONAI's readers, PNG/TIFF);
- image and label agree in shape and spacing (and with the entry's ``spacing``); images hold no NaN/inf;
- label values lie in the class set (the bundle's ``class_names``, else the datalist's ``classes``); detection
  boxes are ``[x1, y1, x2, y2]`` inside the image with a foreground class each;
- ``labeled``, ``unlabeled``, ``validation`` and ``test`` are patient-disjoint, except a documented method rule
  (:data:`SHARED_BY_DESIGN`); validation and test are never shared with anything;
- the labeled list fills a labeled batch; an empty unlabeled list is allowed with a warning (supervised fallback).

Training checks ``labeled``, ``unlabeled`` and ``validation`` and only reads the *patient IDs* of ``test``
(:func:`check_training_data`): the test split is never read by training or model selection.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..bundle_paths import bundle_path
from .cine import read_cine
from .datalist import load_split
from .errors import DataError
from .hdf5 import H5_SUFFIXES, read_h5
from .prepare import MAX_LISTED, PrepareError

__all__ = ["DatalistError", "validate_datalist", "check_training_data", "bundle_settings", "SHARED_BY_DESIGN"]

logger = logging.getLogger(__name__)

LISTS = ("labeled", "unlabeled", "validation", "test")
TRAINING_LISTS = ("labeled", "unlabeled", "validation")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# (list, list) -> {dataset: the documented rule that lets the two lists share patients}
SHARED_BY_DESIGN: dict[tuple[str, str], dict[str, str]] = {
    ("labeled", "unlabeled"): {
        "mnms": "EPL's M&Ms unlabeled pool holds every frame of the source-vendor patients, including the labeled "
        "patients' unannotated frames (epl.md §3)"
    }
}
SPACING_TOLERANCE = 1e-3  # relative


class DatalistError(PrepareError):
    """All problems of a datalist, each ``"<file or list>: <problem>"``."""

    def __init__(self, datalist: str | os.PathLike, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        ValueError.__init__(self, f"{len(problems)} problem(s) in datalist {os.fspath(datalist)}:\n  {listed}{more}")


def _patient(entry: Mapping[str, Any]) -> str:
    for key in ("patient", "group", "id", "image"):
        if key in entry:
            return str(entry[key])
    return "?"


def _read(entry: Mapping[str, Any], key: str) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """``(array, spacing)`` of ``entry[key]`` as the bundles read it; :class:`DataError` naming the file otherwise."""
    path = os.fspath(entry[key])
    suffix = path.lower()
    if suffix.endswith(H5_SUFFIXES):
        if "frame" in entry:  # one frame (or slice) of a cine file; labels are indexed by phase
            index = entry["frame"] if key == "image" else entry.get("phase", 0)
            return read_cine(path, key, int(index), entry.get("slice"))
        return read_h5(path, key)
    if suffix.endswith(PIL_SUFFIXES):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return np.asarray(image), None
        except (OSError, UnidentifiedImageError, ValueError) as error:
            raise DataError(path, f"cannot be read as an image ({error})") from error
    from monai.transforms import LoadImage

    try:
        image = LoadImage(image_only=True)(path)
    except Exception as error:  # MONAI wraps every reader's failure in a RuntimeError with a long chain
        raise DataError(path, f"cannot be read as a medical image ({str(error).splitlines()[0]})") from error
    spacing = tuple(float(s) for s in image.pixdim[: image.ndim]) if hasattr(image, "pixdim") else None
    return np.asarray(image), spacing


def _same_spacing(first: Sequence[float], second: Sequence[float]) -> bool:
    return len(first) == len(second) and all(
        math.isclose(a, b, rel_tol=SPACING_TOLERANCE) for a, b in zip(first, second)
    )


def _check_boxes(entry: Mapping[str, Any], shape: tuple[int, ...] | None, classes: set[int], problems: list[str]):
    """Detection entries: one foreground class per ``box`` ``[x1, y1, x2, y2]``, x1 < x2, y1 < y2, inside the image."""
    boxes, labels = entry.get("box", []), entry.get("label", [])
    name = entry["image"]
    if len(boxes) != len(labels):
        problems.append(f"{name}: {len(boxes)} boxes but {len(labels)} box labels")
    for label in labels:
        if label not in classes or label == 0:
            problems.append(f"{name}: box label {label} is not a foreground class {sorted(classes - {0})}")
    for box in boxes:
        if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            problems.append(f"{name}: box {box} is not [x1, y1, x2, y2] with x1 < x2 and y1 < y2")
        elif shape is not None and (min(box) < 0 or box[2] > shape[1] or box[3] > shape[0]):
            problems.append(f"{name}: box {box} lies outside the {shape[1]}x{shape[0]} image")


def _check_entry(entry: Mapping[str, Any], split: str, classes: set[int], problems: list[str]) -> None:
    image_path = entry.get("image")
    if image_path is None:
        problems.append(f"{split}: an entry has no 'image' ({dict(entry)})")
        return
    detection = "box" in entry or isinstance(entry.get("label"), list)
    if split == "unlabeled" and ("label" in entry or "box" in entry):
        problems.append(f"{image_path}: unlabeled entry carries a label")
    arrays: dict[str, tuple[np.ndarray, tuple[float, ...] | None]] = {}
    keys = [key for key in (("image",) if detection else ("image", "label")) if entry.get(key) is not None]
    for path in dict.fromkeys(entry[key] for key in keys):  # image and label often share one HDF5 file
        if not Path(path).is_file():
            problems.append(f"{path}: file is missing ({split} {', '.join(k for k in keys if entry[k] == path)})")
    for key in keys:
        path = entry[key]
        if not Path(path).is_file():
            continue
        try:
            arrays[key] = _read(entry, key)
        except DataError as error:
            problems.append(str(error))
    if "image" in arrays:
        image = arrays["image"][0]
        if np.issubdtype(image.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(image)))
            if bad:
                problems.append(f"{image_path}: {bad} NaN/inf intensities in the image")
    if detection:
        _check_boxes(entry, arrays["image"][0].shape[:2] if "image" in arrays else None, classes, problems)
        return
    if "label" in arrays:
        _check_label(entry, arrays, classes, problems)
    if "image" in arrays and entry.get("spacing") is not None and arrays["image"][1] is not None:
        if not _same_spacing(arrays["image"][1], entry["spacing"]):
            problems.append(
                f"{image_path}: spacing {list(arrays['image'][1])} differs from the datalist's {entry['spacing']}"
            )


def _check_label(entry: Mapping[str, Any], arrays: dict, classes: set[int], problems: list[str]) -> None:
    label, label_spacing = arrays["label"]
    path = entry["label"]
    if not (np.issubdtype(label.dtype, np.integer) or np.all(np.mod(label[np.isfinite(label)], 1) == 0)):
        problems.append(f"{path}: label holds non-integer values")
    elif not np.all(np.isfinite(label)):
        problems.append(f"{path}: label holds NaN/inf")
    else:
        values = {int(v) for v in np.unique(label)}
        outside = sorted(values - classes)
        if outside:
            problems.append(f"{path}: label values {outside} outside the class set {sorted(classes)}")
    if "image" not in arrays:
        return
    image, image_spacing = arrays["image"]
    spatial = image.shape[: label.ndim] if image.ndim == label.ndim + 1 else image.shape  # channel-last colour
    if tuple(spatial) != tuple(label.shape):
        problems.append(f"{path}: label shape {tuple(label.shape)} != image shape {tuple(image.shape)}")
    elif image_spacing is not None and label_spacing is not None and not _same_spacing(image_spacing, label_spacing):
        problems.append(f"{path}: label spacing {list(label_spacing)} != image spacing {list(image_spacing)}")


def _disjointness(datalist: str, dataset: str, patients: dict[str, set[str]], problems: list[str]) -> list[str]:
    """Errors for patients shared between lists; returns the documented exceptions that applied."""
    applied = []
    for i, first in enumerate(LISTS):
        for second in LISTS[i + 1 :]:
            shared = sorted(patients.get(first, set()) & patients.get(second, set()))
            if not shared:
                continue
            rule = SHARED_BY_DESIGN.get((first, second), {}).get(dataset)
            if rule is not None:
                applied.append(f"{first} and {second} share {len(shared)} patients by design: {rule}")
                continue
            listed = ", ".join(shared[:10]) + (f" and {len(shared) - 10} more" if len(shared) > 10 else "")
            problems.append(f"{datalist}: patients in both {first} and {second}: {listed}")
    return applied


def validate_datalist(
    datalist: str | os.PathLike,
    bundle: str | os.PathLike | None = None,
    classes: Mapping[str, Any] | Sequence[int] | None = None,
    labeled_batch_size: int | None = None,
    read: Sequence[str] = LISTS,
    require_validation: bool = False,
) -> str:
    """Check ``datalist`` (module docstring); a one-line summary, or :class:`DatalistError` listing every problem.

    Args:
        datalist: a datalist JSON written by ``prepare``.
        bundle: a bundle folder or name under the repository's ``bundles/``: its ``class_names`` and labeled batch
            size (:func:`bundle_settings`) are checked against the datalist.
        classes: the class set (``{"0": "background", ...}`` or class indices); default: the bundle's, else the
            datalist's ``classes``.
        labeled_batch_size: labeled items per batch; default: the bundle's, else not checked.
        read: the lists whose files are read (all patient IDs are always compared).
        require_validation: an empty validation list is an error (training selects models on it); otherwise a
            warning (test-only datalists such as UDIAT's).
    """
    datalist = os.fspath(datalist)
    try:
        content = json.loads(Path(datalist).read_text())
    except OSError as error:
        raise DataError(datalist, f"cannot read datalist ({error.strerror})") from error
    except ValueError as error:
        raise DataError(datalist, f"not valid JSON ({error})") from error
    if bundle is not None:
        bundle_classes, bundle_batch = bundle_settings(bundle)
        classes = bundle_classes if classes is None else classes
        labeled_batch_size = bundle_batch if labeled_batch_size is None else labeled_batch_size
    classes = classes if classes is not None else content.get("classes")
    problems: list[str] = []
    if classes is not None:
        listed = content.get("classes")
        if listed is not None and {int(c) for c in listed} != {int(c) for c in classes}:
            problems.append(
                f"{datalist}: datalist classes {sorted(map(int, listed))} != bundle's {sorted(int(c) for c in classes)}"
            )
    splits: dict[str, list[dict[str, Any]]] = {}
    for split in LISTS:
        try:
            splits[split] = load_split(datalist, split, missing_ok=split == "unlabeled")
        except DataError as error:
            problems.append(str(error))
    counts = _check_lists(
        datalist, splits, str(content.get("dataset")), classes, labeled_batch_size, read, require_validation, problems
    )
    return f"{datalist}: {content.get('dataset')} {content.get('setting')} ok {counts}"


def _check_lists(
    name: str,
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    dataset: str,
    classes: Mapping[str, Any] | Sequence[int] | None,
    labeled_batch_size: int | None,
    read: Sequence[str],
    require_validation: bool,
    problems: list[str],
) -> dict[str, int]:
    """The checks of the module docstring over ``splits`` (list → entries); raises :class:`DatalistError` naming
    ``name`` with ``problems`` and every new one, else returns the list sizes."""
    if classes is None:
        problems.append(f"{name}: no 'classes' in the datalist and no bundle given: cannot check label values")
    class_set = set() if classes is None else {int(c) for c in classes}
    patients = {split: {_patient(entry) for entry in entries} for split, entries in splits.items()}
    counts = {split: len(entries) for split, entries in splits.items()}
    for split, entries in splits.items():
        if split in read and class_set:
            for entry in entries:
                _check_entry(entry, split, class_set, problems)
    applied = _disjointness(name, dataset, patients, problems)
    if labeled_batch_size is not None and counts.get("labeled", 0) < int(labeled_batch_size):
        problems.append(
            f"{name}: labeled has {counts.get('labeled', 0)} items, fewer than the labeled batch size "
            f"{labeled_batch_size}"
        )
    if require_validation and counts.get("validation", 1) == 0:
        problems.append(f"{name}: validation is empty: model selection needs validation cases")
    if problems:
        raise DatalistError(name, problems)
    if counts.get("unlabeled", 0) == 0:
        logger.warning("%s: no unlabeled entries: training falls back to labeled-only batches.", name)
    if counts.get("validation", 1) == 0:
        logger.warning("%s: no validation entries: usable for testing only, not for training.", name)
    for rule in applied:
        logger.info("%s: %s", name, rule)
    return counts


def check_training_data(
    datalist: str | os.PathLike,
    classes: Mapping[str, Any] | Sequence[int],
    labeled_batch_size: int,
    lists: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> str:
    """:func:`validate_datalist` at the start of training: the training lists' files, every list's patient IDs.

    ``labeled_batch_size`` is per process; under ``torch.distributed`` the labeled list must fill the global batch
    (times the world size).

    ``lists``: the ``labeled``/``unlabeled``/``validation`` entries the run's datasets hold. When ``datalist`` does
    not exist and these are given, they are checked instead (MONAI Label passes its datastore's images as
    ``train#dataset#data`` and ``validate#dataset#data`` and has no datalist file); a datalist that exists is always
    the one checked, test IDs included.

    The first expression of each bundle's ``run`` and ``training`` lists, so bad data stops the run before any
    component is built or file written (not ``initialize``: MONAI puts the bundle root on ``sys.path`` only for
    ``run``, and an exported bundle imports its vendored semizoo from there).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # the loader draws one global batch for all ranks
        labeled_batch_size = int(labeled_batch_size) * dist.get_world_size()
    if lists is not None and not Path(datalist).is_file():
        name = "the bundle's lists (train#dataset#data, train#unlabeled_dataset#data, validate#dataset#data)"
        splits = {split: list(lists.get(split) or []) for split in TRAINING_LISTS}
        logger.warning("%s does not exist: checking %s instead.", os.fspath(datalist), name)
        counts = _check_lists(name, splits, "", classes, labeled_batch_size, TRAINING_LISTS, True, [])
        return f"{name}: ok {counts}"
    summary = validate_datalist(
        datalist, classes=classes, labeled_batch_size=labeled_batch_size, read=TRAINING_LISTS, require_validation=True
    )
    logger.info("data checked: %s", summary)
    return summary


def bundle_settings(bundle: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """``(class_names, labeled batch size)`` of a bundle's ``configs/train.json`` (a folder or a name in bundles/)."""
    from monai.bundle import ConfigParser

    try:
        config = bundle_path(bundle) / "configs" / "train.json"
    except FileNotFoundError as error:
        raise DataError(bundle, "not a bundle folder or a bundle name under bundles/") from error
    if not config.is_file():
        raise DataError(config, "the bundle has no training config")
    parser = ConfigParser()
    parser.read_config(str(config))
    batch = parser.get_parsed_content("train#dataloader#batch_size")
    secondary = parser.get_parsed_content("train#dataloader#secondary_batch_size")
    return dict(parser.get_parsed_content("class_names")), int(batch) - int(secondary)
