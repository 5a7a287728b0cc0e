"""SNUBH-style VOC: ``prepare snubh`` (alias ``voc``) for WSSDL detection (datasets.md §1.6, §2; wssdl.md §3).

Layout (the official reader's): ``TIFFImages/<ID>.tif`` (8-bit grey), ``Annotations/<ID>.xml`` and
``ImageSets/Main/<split>.txt`` (one ID per line): ``s_train`` (strong), reduced ``s_train_<N>``, ``ws_train`` (weak),
``test`` and ``test_normal``. Other split files (``ws_train_<N>``, ``*_datasetB``) are listed as ignored.

Annotation → record (:func:`parse_annotation`, :func:`voc_to_box`):

- ``<BIRADS><diag>`` 0/1 → ``image_class`` = diag + 1 (1 benign, 2 malignant); images of ``test_normal`` have
  ``image_class`` 0 and ``box: []`` (a lesion object there is a problem);
- ``<object>`` named ``benign``/``malignant`` → a lesion ``box`` with ``label`` 1/2 (a name disagreeing with diag is
  reported as a warning); ``__background__`` → ``bg_box`` (normal tissue: SNUBH's RPN negatives);
- ``<bndbox>`` is 1-based inclusive: ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (continuous pixel edges,
  x2 exclusive), so the continuous IoU of converted boxes equals the official VOC "+1" IoU.

Weak (``unlabeled``) entries carry ``image_class`` only, never ``box``/``label``/``bg_box``.

Settings: ``s<N>`` from every ``s_train_<N>.txt`` and ``s_full`` from ``s_train.txt`` (the default: WSSDL's 800
strong images). Validation is a seeded, class-stratified 10 % of ``s_train`` (:func:`snubh_validation`, at least one
image per class of two or more), removed from every strong list first; it avoids the IDs of the reduced lists while
enough others remain, so ``s<N>`` keeps its N images. Weak = ``ws_train``; test = ``test`` + ``test_normal``.

Every problem (unreadable TIFF or XML, a missing TIFF or annotation of a listed ID, a box outside the image, an
XML size differing from the TIFF, a missing or bad diag, a strong/test image without a lesion box, unknown object
names, IDs in two lists, a reduced list not within ``s_train``) is collected and raised together
(:class:`semizoo.data.prepare.PrepareError`) before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Union
from xml.etree import ElementTree

import numpy as np

from .errors import DataError

__all__ = [
    "DET_CLASSES",
    "LESION_NAMES",
    "BACKGROUND_NAME",
    "voc_to_box",
    "parse_annotation",
    "read_split_file",
    "snubh_validation",
    "prepare_snubh",
]

DET_CLASSES = {"0": "background", "1": "benign", "2": "malignant"}
LESION_NAMES = {"benign": 1, "malignant": 2}
BACKGROUND_NAME = "__background__"
BASE_SPLITS = ("s_train", "ws_train", "test", "test_normal")
REQUIRED_SPLITS = ("s_train", "test")
DEFAULT_SETTING = "s_full"
VALIDATION_FRACTION = 0.1
_REDUCED = re.compile(r"^s_train_(\d+)$")
_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")

Number = Union[int, float]


def _num(value: float) -> Number:
    return int(value) if float(value).is_integer() else float(value)


def voc_to_box(bndbox: tuple[float, float, float, float] | list[float]) -> list[Number]:
    """1-based inclusive VOC ``(xmin, ymin, xmax, ymax)`` → continuous ``[x1, y1, x2, y2]`` (x2, y2 exclusive).

    ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``: a box of VOC width ``xmax - xmin + 1`` keeps that width,
    so IoU over continuous boxes equals the official "+1" VOC IoU. Integral values stay ``int``.
    """
    xmin, ymin, xmax, ymax = (float(v) for v in bndbox)
    return [_num(xmin - 1), _num(ymin - 1), _num(xmax), _num(ymax)]


def parse_annotation(path: str | os.PathLike) -> dict[str, Any]:
    """Read one VOC annotation: ``{"size": (W, H) | None, "diag": str | None, "objects": [(name, bndbox | None)]}``.

    ``bndbox`` is the float ``(xmin, ymin, xmax, ymax)`` as written (1-based inclusive), None when missing or not
    numeric; ``diag`` is the stripped text of ``<BIRADS><diag>``; objects keep the file order.

    Raises:
        DataError: the file cannot be read or is not well-formed XML.
    """
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise DataError(path, f"cannot parse XML ({error})") from error
    except OSError as error:
        raise DataError(path, f"cannot read XML ({error.strerror or error})") from error
    size = None
    node = root.find("size")
    if node is not None:
        try:
            size = (int(float(node.findtext("width", ""))), int(float(node.findtext("height", ""))))
        except ValueError:
            size = None
    diag = root.findtext("BIRADS/diag")
    objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        box_node = obj.find("bndbox")
        bndbox = None
        if box_node is not None:
            try:
                bndbox = tuple(float(box_node.findtext(k, "")) for k in _BOX_KEYS)
            except ValueError:
                bndbox = None
        objects.append((name, bndbox))
    return {"size": size, "diag": None if diag is None else diag.strip(), "objects": objects}


def read_split_file(path: str | os.PathLike) -> list[str]:
    """IDs of an ``ImageSets/Main`` list: the first token of each non-empty line, in order, without repeats."""
    ids: list[str] = []
    seen: set[str] = set()
    for line in Path(path).read_text().splitlines():
        token = line.split()[0] if line.split() else ""
        if token and token not in seen:
            seen.add(token)
            ids.append(token)
    return ids


def snubh_validation(classes: dict[str, int], reserved: set[str] | frozenset = frozenset(), seed: int = 0) -> list[str]:
    """Seeded, class-stratified 10 % of the strong IDs (``classes``: id -> image class 1/2).

    Per class with n images: ``max(1, floor(0.1 n + 0.5))`` IDs when n >= 2 (else none), the first of
    ``np.random.default_rng(seed).permutation`` over the sorted IDs outside ``reserved`` (the reduced lists), or over
    all of the class when too few are outside. Returns the sorted IDs.
    """
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for image_class in sorted(LESION_NAMES.values()):
        pool = sorted(i for i, c in classes.items() if c == image_class)
        n = max(1, int(np.floor(VALIDATION_FRACTION * len(pool) + 0.5))) if len(pool) >= 2 else 0
        free = [i for i in pool if i not in reserved]
        candidates = free if len(free) >= n else pool
        chosen += [candidates[i] for i in rng.permutation(len(candidates))[:n]]
    return sorted(chosen)


# ---------------------------------------------------------------- reading


def _root(src: Path) -> Path:
    for candidate in [src] + sorted(p for p in src.iterdir() if p.is_dir()):
        if (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    raise DataError(src, "no ImageSets/Main folder (SNUBH VOC layout: TIFFImages/, Annotations/, ImageSets/Main/)")


def _read_tiff(path: Path, problems: list[str]) -> np.ndarray | None:
    from PIL import Image

    try:
        with warnings.catch_warnings():  # PIL warns about corrupt tags before failing; the problem says it all
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                image.load()
                mode = image.mode
                array = np.asarray(image)
    except Exception as error:  # PIL raises several types for corrupt files
        problems.append(f"{path}: cannot read TIFF ({error})")
        return None
    if mode == "L":
        return array
    if mode in ("RGB", "RGBA", "LA"):
        channels = array[..., :1] if mode == "LA" else array[..., :3]
        return np.clip(np.round(channels.mean(axis=2)), 0, 255).astype(np.uint8)
    problems.append(f"{path}: not an 8-bit grey TIFF (mode {mode})")
    return None


def _check_box(
    xml: Path, bndbox: tuple[float, ...] | None, name: str, size: tuple[int, int], problems: list[str]
) -> list[Number] | None:
    width, height = size
    if bndbox is None:
        problems.append(f"{xml}: object {name!r} has no numeric <bndbox> xmin/ymin/xmax/ymax")
        return None
    xmin, ymin, xmax, ymax = bndbox
    if xmax < xmin or ymax < ymin:
        problems.append(f"{xml}: object {name!r} box {list(map(_num, bndbox))} has xmax < xmin or ymax < ymin")
        return None
    if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
        problems.append(
            f"{xml}: object {name!r} box {list(map(_num, bndbox))} is outside the image {width}x{height} "
            "(1-based inclusive)"
        )
        return None
    return voc_to_box(bndbox)


def _case(
    case_id: str, role: str, root: Path, listed_in: Path, problems: list[str], warnings: list[str]
) -> dict[str, Any] | None:
    """Read and check one listed ID; its record fields and grey image, or None (problems appended)."""
    tiff = root / "TIFFImages" / f"{case_id}.tif"
    if not tiff.is_file() and (root / "TIFFImages" / f"{case_id}.tiff").is_file():
        tiff = root / "TIFFImages" / f"{case_id}.tiff"
    xml = root / "Annotations" / f"{case_id}.xml"
    missing = False
    if not tiff.is_file():
        problems.append(f"{listed_in}: {case_id} is listed but TIFFImages/{case_id}.tif is missing")
        missing = True
    if not xml.is_file():
        problems.append(f"{listed_in}: {case_id} is listed but its annotation Annotations/{case_id}.xml is missing")
        missing = True
    if missing:
        return None
    try:
        annotation = parse_annotation(xml)
    except DataError as error:
        problems.append(str(error))
        annotation = None
    grey = _read_tiff(tiff, problems)
    if grey is None or annotation is None:
        return None
    size = (grey.shape[1], grey.shape[0])
    ok = True
    if annotation["size"] is not None and annotation["size"] != size:
        problems.append(f"{xml}: <size> {annotation['size'][0]}x{annotation['size'][1]} != TIFF {size[0]}x{size[1]}")
        ok = False
    case: dict[str, Any] = {"grey": grey, "files": [tiff, xml]}
    if role == "test_normal":
        case["image_class"] = 0
    else:
        diag = annotation["diag"]
        if diag not in ("0", "1"):
            what = "no <BIRADS><diag>" if diag is None else f"<BIRADS><diag> {diag!r} is not 0 or 1"
            problems.append(f"{xml}: {what}")
            return None
        case["image_class"] = int(diag) + 1
    if role == "weak":  # weak images use only diag
        return case if ok else None
    boxes, labels, background = [], [], []
    for name, bndbox in annotation["objects"]:
        if name != BACKGROUND_NAME and name not in LESION_NAMES:
            problems.append(f"{xml}: unknown object name {name!r} (expected benign, malignant or {BACKGROUND_NAME})")
            ok = False
            continue
        box = _check_box(xml, bndbox, name, size, problems)
        if box is None:
            ok = False
        elif name == BACKGROUND_NAME:
            background.append(box)
        else:
            boxes.append(box)
            labels.append(LESION_NAMES[name])
    if role == "test_normal" and boxes:
        problems.append(f"{xml}: listed in test_normal but has {len(boxes)} lesion object(s)")
        ok = False
    if role != "test_normal" and ok and not boxes:
        problems.append(f"{xml}: no lesion <object> (benign/malignant) in a {role} image")
        ok = False
    mismatched = [label for label in labels if label != case["image_class"]]
    if mismatched and role != "test_normal":
        warnings.append(f"{xml}: {len(mismatched)} lesion object name(s) disagree with diag {case['image_class'] - 1}")
    case.update({"box": boxes, "label": labels, "bg_box": background})
    return case if ok else None


def _record(case_id: str, case: dict[str, Any], weak: bool = False) -> dict[str, Any]:
    record: dict[str, Any] = {"image": f"data/snubh/images/{case_id}.png"}
    if not weak:
        record.update({"box": case["box"], "label": case["label"], "bg_box": case["bg_box"]})
    record.update({"image_class": case["image_class"], "id": case_id})
    return record


def _fingerprint(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{os.path.relpath(path, root)}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- prepare


def prepare_snubh(
    src: str | os.PathLike,
    out: str | os.PathLike,
    setting: str | None = None,
    split_seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``prepare snubh`` / ``prepare voc``: check every listed image and annotation, write PNGs and the datalists.

    Args:
        src: the VOC folder (``TIFFImages/``, ``Annotations/``, ``ImageSets/Main/``) or a folder holding it.
        out: the prepared DIR.
        setting: default datalist: ``s_full`` (default) or ``s<N>`` for an ``s_train_<N>.txt`` present.
        split_seed: seed of the validation draw.
        overwrite: replace a non-empty ``out`` that holds something other than semizoo output.

    Returns:
        The report written to ``out/prepare_report.json``.

    Raises:
        DataError: bad arguments or layout; PrepareError: every problem found in the source.
    """
    from .prepare import VERSION, PrepareError, _check_out, _commit, _discard, _dump, _missing_folders

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(src, "source folder does not exist")
    _check_out(out, overwrite)
    root = _root(src)
    main = root / "ImageSets" / "Main"
    problems: list[str] = []
    warnings: list[str] = []
    ignored: list[str] = []
    lists: dict[str, list[str]] = {}
    reduced: dict[int, list[str]] = {}
    for path in sorted(main.iterdir()):
        match = _REDUCED.match(path.stem)
        if path.suffix != ".txt" or (path.stem not in BASE_SPLITS and not match):
            ignored.append(str(path))
            continue
        try:
            ids = read_split_file(path)
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{path}: cannot read split file ({error})")
            continue
        if match:
            reduced[int(match.group(1))] = ids
        else:
            lists[path.stem] = ids
    for name in REQUIRED_SPLITS:
        if name not in lists and not (main / f"{name}.txt").is_file():
            problems.append(f"{main}: {name}.txt is missing")
    for name in ("ws_train", "test_normal"):
        if name not in lists:
            lists[name] = []
            if not (main / f"{name}.txt").is_file():
                warnings.append(f"{main}: no {name}.txt ({'no weak images' if name == 'ws_train' else 'no normals'})")
    settings = [f"s{n}" for n in sorted(reduced)] + ["s_full"]
    default = setting or DEFAULT_SETTING
    if default not in settings:
        raise DataError(src, f"setting {default!r} is not one of {settings}")
    owner: dict[str, str] = {}
    for name in BASE_SPLITS:
        for case_id in lists.get(name, []):
            if case_id in owner:
                problems.append(f"{main / f'{name}.txt'}: {case_id} is also listed in {owner[case_id]}.txt")
            else:
                owner[case_id] = name
    strong_ids = set(lists.get("s_train", []))
    for n, ids in sorted(reduced.items()):
        outside = [i for i in ids if i not in strong_ids]
        if outside and "s_train" in lists:
            problems.append(f"{main / f's_train_{n}.txt'}: {len(outside)} ID(s) not in s_train.txt: {outside[:5]}")
    roles = {"s_train": "strong", "ws_train": "weak", "test": "test", "test_normal": "test_normal"}
    cases: dict[str, dict[str, Any]] = {}
    for case_id, name in owner.items():
        case = _case(case_id, roles[name], root, main / f"{name}.txt", problems, warnings)
        if case is not None:
            cases[case_id] = case
    if "s_train" in lists and not lists["s_train"]:
        problems.append(f"{main / 's_train.txt'}: no IDs")
    if problems:
        raise PrepareError(problems)

    listed = set(owner)
    for folder, suffixes in (("TIFFImages", (".tif", ".tiff")), ("Annotations", (".xml",))):
        if (root / folder).is_dir():
            ignored += [
                str(p) for p in sorted((root / folder).iterdir()) if p.stem not in listed or p.suffix not in suffixes
            ]
    phantom = (src / "semizoo_phantom.json").is_file()
    strong_classes = {i: cases[i]["image_class"] for i in lists["s_train"]}
    reserved = {i for ids in reduced.values() for i in ids}
    validation = snubh_validation(strong_classes, reserved, split_seed)
    val_set = set(validation)
    for n, ids in sorted(reduced.items()):
        lost = [i for i in ids if i in val_set]
        if lost:
            warnings.append(f"s{n}: {len(lost)} of s_train_{n}'s IDs drawn for validation (too few other IDs)")
    members = {f"s{n}": [i for i in ids if i not in val_set] for n, ids in reduced.items()}
    members["s_full"] = [i for i in lists["s_train"] if i not in val_set]
    weak = [_record(i, cases[i], weak=True) for i in sorted(lists["ws_train"])]
    test = [_record(i, cases[i]) for i in sorted(lists["test"] + lists["test_normal"])]
    val_records = [_record(i, cases[i]) for i in validation]
    datalists = {}
    for name in settings:
        datalists[name] = {
            "dataset": "snubh",
            "setting": name,
            "phantom": phantom,
            "classes": DET_CLASSES,
            "labeled": [_record(i, cases[i]) for i in sorted(members[name])],
            "unlabeled": weak,
            "validation": val_records,
            "test": test,
        }
    tmp, created = out / f".semizoo-tmp-{os.getpid()}", _missing_folders(out)
    try:
        from PIL import Image

        for case_id, case in cases.items():
            path = tmp / "data" / "snubh" / "images" / f"{case_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(case["grey"]).save(path, format="PNG")
        files = [f for case in cases.values() for f in case["files"]]
        files += [main / f"{name}.txt" for name in BASE_SPLITS if (main / f"{name}.txt").is_file()]
        files += [main / f"s_train_{n}.txt" for n in reduced]

        def by_class(entries: list[dict[str, Any]]) -> dict[str, int]:
            return {DET_CLASSES[str(c)]: sum(e["image_class"] == c for e in entries) for c in (0, 1, 2)}

        report = {
            "dataset": "snubh",
            "layout": "voc",
            "split": "snubh_lists",
            "split_seed": split_seed,
            "default_setting": default,
            "phantom": phantom,
            "semizoo_prepare_version": VERSION,
            "source": str(src.resolve()),
            "source_fingerprint": _fingerprint(files, src),
            "lists": {name: len(ids) for name, ids in sorted(lists.items())}
            | {f"s_train_{n}": len(ids) for n, ids in sorted(reduced.items())},
            "counts": {
                n: {k: len(c[k]) for k in ("labeled", "unlabeled", "validation", "test")} for n, c in datalists.items()
            },
            "class_counts": {
                n: {k: by_class(c[k]) for k in ("labeled", "unlabeled", "validation", "test")}
                for n, c in datalists.items()
            },
            "ignored_files": ignored,
            "datalist_sha256": {n: hashlib.sha256(_dump(c).encode()).hexdigest() for n, c in datalists.items()},
            "warnings": warnings,
        }
        (tmp / "datalists").mkdir(parents=True, exist_ok=True)
        for name, content in datalists.items():
            (tmp / "datalists" / f"{name}.json").write_text(_dump(content))
        (tmp / "datalist.json").write_text(_dump(datalists[default]))
        (tmp / "prepare_report.json").write_text(_dump(report))
        _commit(tmp, out)
        return report
    finally:
        _discard(tmp, created)
