"""``python -m semizoo validate DATALIST``: the checks of datasets.md §3 on a prepared datalist."""

from __future__ import annotations

import json
from pathlib import Path

from .datalist import load_split
from .errors import DataError
from .hdf5 import H5_SUFFIXES, read_h5
from .prepare import PrepareError

__all__ = ["validate_datalist"]

LISTS = ("labeled", "unlabeled", "validation", "test")


def validate_datalist(datalist: str) -> str:
    """Every file exists and reads (h5 keys present, image/label shapes equal); lists are patient-disjoint.

    Returns a one-line summary; raises :class:`PrepareError` listing every problem.
    """
    content = json.loads(Path(datalist).read_text())
    problems: list[str] = []
    patients: dict[str, set[str]] = {}
    counts = {}
    for key in LISTS:
        entries = load_split(datalist, key, missing_ok=key == "unlabeled")
        counts[key] = len(entries)
        patients[key] = {str(e.get("patient", e.get("group", e["image"]))) for e in entries}
        for entry in entries:
            if key == "unlabeled" and ("label" in entry or "box" in entry):
                problems.append(f"{entry['image']}: unlabeled entry carries a label")
            _check_entry(entry, problems)
    for first, second in (
        ("validation", "test"),
        ("labeled", "test"),
        ("unlabeled", "test"),
        ("labeled", "validation"),
    ):
        shared = sorted(patients[first] & patients[second])
        if shared:
            problems.append(f"{datalist}: {first} and {second} share patients {shared[:10]}")
    if problems:
        raise PrepareError(problems)
    return f"{datalist}: {content.get('dataset')} {content.get('setting')} ok {counts}"


def _check_boxes(entry: dict, problems: list[str]) -> None:
    """Detection entries: ``label`` is one class per ``box`` ``[x1, y1, x2, y2]`` with x1 < x2 and y1 < y2."""
    boxes, labels = entry.get("box", []), entry.get("label", [])
    if len(boxes) != len(labels):
        problems.append(f"{entry['image']}: {len(boxes)} boxes but {len(labels)} box labels")
    for box in boxes:
        if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            problems.append(f"{entry['image']}: box {box} is not [x1, y1, x2, y2] with x1 < x2 and y1 < y2")


def _check_entry(entry: dict, problems: list[str]) -> None:
    shapes = {}
    if "box" in entry or isinstance(entry.get("label"), list):
        _check_boxes(entry, problems)
    for key in ("image", "label"):
        path = entry.get(key)
        if path is None or not isinstance(path, (str, Path)):
            continue
        if not Path(path).is_file():
            problems.append(f"{path}: file is missing")
            continue
        if str(path).lower().endswith(H5_SUFFIXES):
            try:
                shapes[key] = read_h5(path, key)[0].shape
            except DataError as error:
                problems.append(str(error))
    if len(shapes) == 2 and shapes["image"] != shapes["label"]:
        problems.append(f"{entry['label']}: label shape {shapes['label']} != image {shapes['image']}")
