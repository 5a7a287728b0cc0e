"""UDIAT Dataset B: ``prepare udiat`` for detection (datasets.md §1.5, §2; wssdl.md §3).

Release layout: ``original/000001.png…`` (B-mode images), binary ``GT/000001.png…`` and ``DatasetB.xlsx`` with the
columns ``Image`` and ``Type`` (``Benign``/``Malignant``; counts are quoted as 109/54 or 110/53, so the workbook is
read, never assumed). The workbook is read with :mod:`zipfile` and :mod:`xml.etree` (:func:`read_xlsx`), no
spreadsheet library. ``prepare`` writes ``data/udiat/images/<id>.png`` (8-bit grey, channel mean) and
``data/udiat/masks/<id>.png`` ({0, 1}); each image has one box: the bounding box of its GT pixels in pixel edges
(x0 = first column, x1 = last column + 1; :func:`mask_box`).

Settings: ``test`` (every image in ``test``: UDIAT as an external test set) and ``det_paper`` (the default, WSSDL's
split, :func:`udiat_paper_split`): test = 20 benign + 20 malignant drawn with ``--split-seed``, strong (``labeled``)
= the rest, no weak set and no validation list. A source with fewer than 40 images of a class (phantoms) takes
``min(20, n // 2)`` test images of that class, so both lists keep each class; the report warns.

Every problem (unreadable PNG or workbook, a missing GT mask, a mask whose size differs from its image, mask values
outside {0, 255}, an empty mask, an unknown ``Type``, an image not in the workbook or a workbook row without its
image) is collected and raised together (:class:`semizoo.data.prepare.PrepareError`) before anything is written.

Record: ``{"image", "box": [[x0, y0, x1, y1]], "label": [1|2], "image_class": 1|2, "id", "domain": "udiat"}``.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np

from .errors import DataError

__all__ = [
    "DET_CLASSES",
    "IMAGE_CLASSES",
    "UDIAT_SETTINGS",
    "read_xlsx",
    "read_udiat_types",
    "mask_box",
    "udiat_paper_split",
    "scan_udiat",
    "prepare_udiat",
]

DET_CLASSES = {"0": "background", "1": "benign", "2": "malignant"}
IMAGE_CLASSES = {"benign": 1, "malignant": 2}
UDIAT_SETTINGS = ("det_paper", "test")
DEFAULT_SETTING = "det_paper"
PAPER_TEST_PER_CLASS = 20
XLSX_NAME = "DatasetB.xlsx"
_CELL = re.compile(r"^([A-Z]+)(\d+)$")


# ---------------------------------------------------------------- xlsx (zip + xml)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in node if _local(child.tag) == name]


def _text(node: ElementTree.Element) -> str:
    """Concatenated ``<t>`` texts below ``node`` (shared or inline rich-text strings), phonetic runs excluded."""
    if _local(node.tag) == "t":
        return node.text or ""
    return "".join(_text(child) for child in node if _local(child.tag) != "rPh")


def _rels(archive: zipfile.ZipFile, part: str) -> dict[str, tuple[str, str]]:
    """Relationship id -> (type, target part path) of ``part``."""
    folder, name = posixpath.split(part)
    rels_name = posixpath.join(folder, "_rels", f"{name}.rels")
    if rels_name not in archive.namelist():
        return {}
    out = {}
    for rel in ElementTree.fromstring(archive.read(rels_name)):
        target = rel.get("Target", "")
        path = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(folder, target))
        out[rel.get("Id", "")] = (rel.get("Type", ""), path)
    return out


def _column_index(letters: str) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - 64
    return index - 1


def _number(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else text


def read_xlsx(path: str | os.PathLike) -> list[list[str]]:
    """Cell texts of the first worksheet of an xlsx workbook, one list per row (gaps filled with ``""``).

    Shared, inline and formula strings, booleans and numbers (integral numbers without ``.0``) are read; styles
    and formats are ignored. Only :mod:`zipfile` and :mod:`xml.etree` are used.

    Raises:
        DataError: not a zip/xlsx file, or a workbook without a readable worksheet.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            workbook = next(
                (target for kind, target in _rels(archive, "").values() if kind.endswith("/officeDocument")),
                "xl/workbook.xml",
            )
            if workbook not in names:
                raise DataError(path, f"not an xlsx workbook (no {workbook})")
            relations = _rels(archive, workbook)
            book = ElementTree.fromstring(archive.read(workbook))
            sheets = [s for node in _children(book, "sheets") for s in _children(node, "sheet")]
            if not sheets:
                raise DataError(path, "the workbook has no worksheet")
            rel_id = next((v for k, v in sheets[0].attrib.items() if _local(k) == "id"), "")
            sheet = relations.get(rel_id, ("", "xl/worksheets/sheet1.xml"))[1]
            shared_part = next((t for k, t in relations.values() if k.endswith("/sharedStrings")), None)
            shared: list[str] = []
            if shared_part and shared_part in names:
                shared = [_text(si) for si in ElementTree.fromstring(archive.read(shared_part))]
            if sheet not in names:
                raise DataError(path, f"worksheet {sheet} is missing")
            root = ElementTree.fromstring(archive.read(sheet))
    except zipfile.BadZipFile as error:
        raise DataError(path, f"cannot read xlsx (not a zip archive: {error})") from error
    except (zlib.error, EOFError) as error:  # a damaged compressed member
        raise DataError(path, f"cannot read xlsx (corrupt zip member: {error})") from error
    except ElementTree.ParseError as error:
        raise DataError(path, f"cannot read xlsx (bad XML: {error})") from error
    except (OSError, KeyError) as error:
        raise DataError(path, f"cannot read xlsx ({error})") from error
    rows: list[list[str]] = []
    for data in _children(root, "sheetData"):
        for row_index, row in enumerate(_children(data, "row")):
            try:
                number = int(row.get("r", row_index + 1))
            except ValueError as error:
                raise DataError(path, f"bad row number {row.get('r')!r} in the worksheet") from error
            while len(rows) < number - 1:
                rows.append([])
            cells: dict[int, str] = {}
            for position, cell in enumerate(_children(row, "c")):
                match = _CELL.match(cell.get("r", ""))
                column = _column_index(match.group(1)) if match else position
                kind = cell.get("t", "n")
                value = next((c.text or "" for c in cell if _local(c.tag) == "v"), "")
                if kind == "s":
                    try:
                        value = shared[int(value)]
                    except (ValueError, IndexError) as error:
                        raise DataError(path, f"cell {cell.get('r')}: bad shared string index {value!r}") from error
                elif kind == "inlineStr":
                    value = "".join(_text(c) for c in cell if _local(c.tag) == "is")
                elif kind == "b":
                    value = "TRUE" if value == "1" else "FALSE"
                elif kind == "n":
                    value = _number(value)
                cells[column] = value
            rows.append([cells.get(i, "") for i in range(max(cells) + 1)] if cells else [])
    return rows


def _image_id(value: str) -> str:
    """``000001`` from ``1``, ``000001``, ``000001.png``; other names unchanged (without ``.png``)."""
    stem = value.strip()
    stem = stem[:-4] if stem.lower().endswith(".png") else stem
    return f"{int(stem):06d}" if stem.isdigit() else stem


def read_udiat_types(path: str | os.PathLike, problems: list[str], listed: set[str] | None = None) -> dict[str, str]:
    """Image id -> ``benign``/``malignant`` from ``DatasetB.xlsx`` (columns ``Image``, ``Type``, any order/case).

    Unknown types, duplicate images and missing columns are appended to ``problems`` (naming the file and row);
    ``listed`` (when given) receives every image id of the sheet, valid or not.
    """
    try:
        rows = read_xlsx(path)
    except DataError as error:
        problems.append(str(error))
        return {}
    header_row = next((i for i, row in enumerate(rows) if any(cell.strip() for cell in row)), None)
    if header_row is None:
        problems.append(f"{path}: empty worksheet (expected columns Image, Type)")
        return {}
    header = [cell.strip().lower() for cell in rows[header_row]]
    if "image" not in header or "type" not in header:
        problems.append(f"{path}: header {rows[header_row]} lacks the columns Image and Type")
        return {}
    image_col, type_col = header.index("image"), header.index("type")
    types: dict[str, str] = {}
    for number, row in enumerate(rows[header_row + 1 :], start=header_row + 2):
        image = row[image_col].strip() if image_col < len(row) else ""
        kind = row[type_col].strip() if type_col < len(row) else ""
        if not image and not kind:
            continue
        if not image:
            problems.append(f"{path}: row {number}: Type {kind!r} without an Image")
            continue
        case_id = _image_id(image)
        if listed is not None:
            listed.add(case_id)
        if kind.lower() not in IMAGE_CLASSES:
            problems.append(
                f"{path}: row {number}: unknown Type {kind!r} for image {image} (expected Benign or Malignant)"
            )
            continue
        if case_id in types:
            problems.append(f"{path}: row {number}: image {image} is listed twice")
            continue
        types[case_id] = kind.lower()
    return types


# ---------------------------------------------------------------- images, masks, boxes


def mask_box(mask: np.ndarray) -> list[int] | None:
    """``[x0, y0, x1, y1]``: pixel edges of the non-zero pixels (x1 = last column + 1); None for an empty mask."""
    rows, cols = np.nonzero(mask)
    if not rows.size:
        return None
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


def _read_png(path: Path, problems: list[str]) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            mode, array = image.mode, np.asarray(image)
    except Exception as error:  # PIL raises several types for corrupt files
        problems.append(f"{path}: cannot read PNG ({error})")
        return None
    if array.dtype not in (np.uint8, np.bool_):  # 16-bit or float PNGs would wrap around when cast to 8 bits
        problems.append(f"{path}: not an 8-bit PNG (mode {mode}); expected 8-bit grey or RGB")
        return None
    return array


def _grey(array: np.ndarray) -> np.ndarray:
    """8-bit grey: the mean of the colour channels (alpha dropped)."""
    grey = array if array.ndim == 2 else array[..., : min(3, array.shape[2])].mean(axis=2)
    return np.clip(np.round(grey), 0, 255).astype(np.uint8)


def _root(src: Path) -> Path:
    for candidate in [src] + sorted(p for p in src.iterdir() if p.is_dir()):
        if (candidate / "original").is_dir():
            return candidate
    raise DataError(src, "no original/ folder (UDIAT Dataset B layout: original/, GT/, DatasetB.xlsx)")


def _workbook(root: Path, src: Path) -> Path:
    for folder in (root, src):
        if (folder / XLSX_NAME).is_file():
            return folder / XLSX_NAME
    found = sorted({p for folder in (root, src) for p in folder.glob("*.xlsx") if not p.name.startswith("~$")})
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(root, f"no {XLSX_NAME} (the Image/Type workbook of UDIAT Dataset B)")
    raise DataError(root, f"no {XLSX_NAME} and several other workbooks: {[p.name for p in found]}")


def scan_udiat(
    src: str | os.PathLike, problems: list[str], ignored: list[str], mask_threshold: float | None = None
) -> dict[str, dict[str, Any]]:
    """Read and check every UDIAT case; id -> ``{"kind", "image" (grey uint8), "mask" (bool), "box", "files"}``.

    Problems are appended to ``problems`` (nothing is raised for a case); unused files to ``ignored``.

    Raises:
        DataError: no ``original/`` folder or no workbook.
    """
    src = Path(src)
    root = _root(src)
    workbook = _workbook(root, src)
    listed: set[str] = set()
    before = len(problems)
    types = read_udiat_types(workbook, problems, listed)
    workbook_failed = not listed and len(problems) > before  # unreadable: do not flag every image as unlisted
    gt_folder = root / "GT"
    if not gt_folder.is_dir():
        problems.append(f"{gt_folder}: missing GT mask folder")
    images: dict[str, Path] = {}
    for path in sorted((root / "original").iterdir()):
        if path.is_file() and path.suffix.lower() == ".png":
            images[_image_id(path.name)] = path
        else:
            ignored.append(str(path))
    if gt_folder.is_dir():
        for path in sorted(gt_folder.iterdir()):
            if not (path.is_file() and path.suffix.lower() == ".png"):
                ignored.append(str(path))
            elif _image_id(path.name) not in images:
                problems.append(f"{path}: GT mask without an image in original/")
    for case_id in sorted(listed - set(images)):
        problems.append(f"{workbook}: image {case_id} is listed but original/{case_id}.png is missing")
    cases: dict[str, dict[str, Any]] = {}
    for case_id, path in sorted(images.items()):
        if case_id not in types:
            if case_id not in listed and not workbook_failed:
                problems.append(f"{path}: image not listed in {workbook.name} (no Type)")
            continue
        mask_path = gt_folder / path.name
        if not mask_path.is_file():
            problems.append(f"{path}: no GT mask ({mask_path})")
            continue
        image, mask = _read_png(path, problems), _read_png(mask_path, problems)
        if image is None or mask is None:
            continue
        grey = _grey(image)
        mask = mask if mask.ndim == 2 else mask[..., : min(3, mask.shape[2])].max(axis=2)
        if mask.shape != grey.shape:
            problems.append(
                f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} != image {grey.shape[1]}x{grey.shape[0]}"
            )
            continue
        if mask_threshold is None:
            values = np.unique(mask)
            if np.setdiff1d(values, [0, 255]).size and np.setdiff1d(values, [0, 1]).size:
                outside = np.setdiff1d(values, [0, 1, 255])[:5].tolist() or values[:5].tolist()
                problems.append(f"{mask_path}: mask values {outside} outside {{0,255}} (use --mask-threshold)")
                continue
            binary = mask > 0
        else:
            binary = mask > mask_threshold
        box = mask_box(binary)
        if box is None:
            problems.append(f"{mask_path}: empty GT mask (every UDIAT image shows a lesion)")
            continue
        cases[case_id] = {
            "kind": types[case_id],
            "image": grey,
            "mask": binary,
            "box": box,
            "files": [path, mask_path],
        }
    if not images:
        problems.append(f"{root / 'original'}: no PNG images")
    return cases


# ---------------------------------------------------------------- split and datalists


def udiat_paper_split(
    classes: dict[str, str], seed: int = 0, per_class: int = PAPER_TEST_PER_CLASS
) -> dict[str, list[str]]:
    """WSSDL's UDIAT split: test = ``per_class`` benign + ``per_class`` malignant ids, seeded; strong = the rest.

    A class with fewer than ``2 * per_class`` images gives ``min(per_class, n // 2)`` test images. The draw:
    ``rng = np.random.default_rng(seed)``, then per class (benign, malignant) the first ``n_test`` ids of
    ``rng.permutation`` over the sorted ids.

    Returns:
        ``{"labeled": [...], "test": [...]}``, both sorted.
    """
    rng = np.random.default_rng(seed)
    test: list[str] = []
    for kind in IMAGE_CLASSES:
        pool = sorted(i for i, k in classes.items() if k == kind)
        n_test = min(per_class, len(pool) // 2)
        test += [pool[i] for i in rng.permutation(len(pool))[:n_test]]
    chosen = set(test)
    return {"labeled": sorted(i for i in classes if i not in chosen), "test": sorted(test)}


def _record(case_id: str, case: dict[str, Any]) -> dict[str, Any]:
    label = IMAGE_CLASSES[case["kind"]]
    return {
        "image": f"data/udiat/images/{case_id}.png",
        "box": [list(case["box"])],
        "label": [label],
        "image_class": label,
        "id": case_id,
        "domain": "udiat",
    }


def _fingerprint(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        rel = os.path.relpath(path, root)
        digest.update(f"{rel}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def prepare_udiat(
    src: str | os.PathLike,
    out: str | os.PathLike,
    setting: str | None = None,
    split_seed: int = 0,
    mask_threshold: float | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``prepare udiat``: check every image, mask and workbook row; write grey images, {0,1} masks and datalists.

    Args:
        src: the UDIAT Dataset B folder (``original/``, ``GT/``, ``DatasetB.xlsx``) or a folder holding it.
        out: the prepared DIR.
        setting: default datalist: ``det_paper`` (default) or ``test``.
        split_seed: seed of the ``det_paper`` test draw.
        mask_threshold: binarise masks at ``> T`` instead of requiring values in {0, 255} (or {0, 1}).
        overwrite: replace a non-empty ``out`` that holds something other than semizoo output.

    Returns:
        The report written to ``out/prepare_report.json``.

    Raises:
        DataError: bad arguments or layout; PrepareError: every problem found in the cases.
    """
    from .prepare import VERSION, PrepareError, _check_out, _commit, _discard, _dump, _missing_folders

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(src, "source folder does not exist")
    _check_out(out, overwrite)
    default = setting or DEFAULT_SETTING
    if default not in UDIAT_SETTINGS:
        raise DataError(src, f"setting {default!r} is not one of {list(UDIAT_SETTINGS)}")
    problems: list[str] = []
    ignored: list[str] = []
    cases = scan_udiat(src, problems, ignored, mask_threshold)
    if problems:
        raise PrepareError(problems)
    phantom = (src / "semizoo_phantom.json").is_file()
    kinds = {case_id: case["kind"] for case_id, case in cases.items()}
    split = udiat_paper_split(kinds, split_seed)
    records = {case_id: _record(case_id, case) for case_id, case in sorted(cases.items())}
    members = {"det_paper": split, "test": {"labeled": [], "test": sorted(records)}}
    lists = {}
    for name in UDIAT_SETTINGS:
        lists[name] = {
            "dataset": "udiat",
            "setting": name,
            "phantom": phantom,
            "classes": DET_CLASSES,
            "labeled": [records[i] for i in members[name]["labeled"]],
            "unlabeled": [],
            "validation": [],
            "test": [records[i] for i in members[name]["test"]],
        }
    warnings = []
    for kind in IMAGE_CLASSES:
        n_test = sum(kinds[i] == kind for i in split["test"])
        if n_test < PAPER_TEST_PER_CLASS:
            total = sum(k == kind for k in kinds.values())
            warnings.append(
                f"det_paper: {n_test} {kind} test images (only {total} {kind} images: min(20, n // 2) per class)"
            )
    tmp, created = out / f".semizoo-tmp-{os.getpid()}", _missing_folders(out)
    try:
        from PIL import Image

        for case_id, case in cases.items():
            for folder, array in (("images", case["image"]), ("masks", case["mask"].astype(np.uint8))):
                path = tmp / "data" / "udiat" / folder / f"{case_id}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path, format="PNG")
        files = [f for case in cases.values() for f in case["files"]]
        report = {
            "dataset": "udiat",
            "layout": "raw",
            "split": "det_paper",
            "split_seed": split_seed,
            "default_setting": default,
            "phantom": phantom,
            "semizoo_prepare_version": VERSION,
            "source": str(src.resolve()),
            "source_fingerprint": _fingerprint(files, src),
            "images": {k: sum(v == k for v in kinds.values()) for k in IMAGE_CLASSES},
            "ignored_files": ignored,
            "counts": {
                n: {k: len(c[k]) for k in ("labeled", "unlabeled", "validation", "test")} for n, c in lists.items()
            },
            "class_counts": {
                n: {
                    k: {kind: sum(e["image_class"] == v for e in c[k]) for kind, v in IMAGE_CLASSES.items()}
                    for k in ("labeled", "test")
                }
                for n, c in lists.items()
            },
            "datalist_sha256": {n: hashlib.sha256(_dump(c).encode()).hexdigest() for n, c in lists.items()},
            "warnings": warnings,
        }
        (tmp / "datalists").mkdir(parents=True, exist_ok=True)
        for name, content in lists.items():
            (tmp / "datalists" / f"{name}.json").write_text(_dump(content))
        (tmp / "datalist.json").write_text(_dump(lists[default]))
        (tmp / "prepare_report.json").write_text(_dump(report))
        _commit(tmp, out)
        return report
    finally:
        _discard(tmp, created)
