"""BUSI: ``prepare busi`` from the public release and the shared seeded split ``busi_split`` (datasets.md §1.4, §2).

Release layout: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (<n>).png`` with ``<class> (<n>)_mask.png``
and, for multifocal cases, ``_mask_1.png``/``_mask_2.png``. ``prepare`` converts each image to 8-bit grey (channel
mean), ORs all of its masks (> 0 → 1) and writes ``data/busi/images/<class>_<nnn>.png`` and
``data/busi/masks/<class>_<nnn>.png``. Every problem (unreadable PNG, a mask whose size differs from its image, mask
values outside {0, 255}, an image without a mask) is reported, naming the file, before anything is written.

Split (``busi_split``): near-duplicate images (~19 % of BUSI) are grouped first: difference hashes of the 9×8 grey
thumbnail within 4 bits, merged by union-find. Groups are split 70/10/20 % into train/validation/test per class
with a seeded permutation (a group whose images disagree on the class stays in train and is reported). Segmentation
settings ``seg_lab{5,10,25,50}pct`` label a class-stratified share of the train groups, ``seg_full`` all of them;
normal images are excluded from segmentation lists (epl.md §3). The split is recomputed from the data with the
seed (``--split-seed``), so the same release gives byte-identical datalists.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

__all__ = [
    "BUSI_CLASSES",
    "IMAGE_CLASSES",
    "SEG_SETTINGS",
    "difference_hash",
    "duplicate_groups",
    "busi_split",
    "ImagePool",
    "balance_malignant",
    "prepare_busi",
]

BUSI_CLASSES = {"0": "background", "1": "lesion"}
IMAGE_CLASSES = {"normal": 0, "benign": 1, "malignant": 2}
SEG_SETTINGS = {"seg_lab5pct": 0.05, "seg_lab10pct": 0.10, "seg_lab25pct": 0.25, "seg_lab50pct": 0.50, "seg_full": None}
DEFAULT_SETTING = "seg_lab25pct"
_IMAGE = re.compile(r"^(benign|malignant|normal) \((\d+)\)\.png$", re.IGNORECASE)
_MASK = re.compile(r"^(benign|malignant|normal) \((\d+)\)_mask(?:_(\d+))?\.png$", re.IGNORECASE)


def difference_hash(grey: np.ndarray) -> int:
    """64-bit difference hash: the image bilinearly shrunk to 9×8, bit = pixel brighter than its left neighbour."""
    from PIL import Image

    thumb = np.asarray(Image.fromarray(np.asarray(grey, dtype=np.uint8)).resize((9, 8), Image.BILINEAR), dtype=float)
    bits = (thumb[:, 1:] > thumb[:, :-1]).ravel()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def duplicate_groups(hashes: dict[str, int], max_distance: int = 4) -> dict[str, str]:
    """Union-find of the ids whose hashes differ in at most ``max_distance`` bits; id -> group (its smallest id)."""
    ids = sorted(hashes)
    parent = {i: i for i in ids}

    def find(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a_index, a in enumerate(ids):
        for b in ids[a_index + 1 :]:
            if bin(hashes[a] ^ hashes[b]).count("1") <= max_distance:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    return {i: find(i) for i in ids}


def busi_split(classes: dict[str, str], groups: dict[str, str], seed: int = 0) -> dict[str, Any]:
    """Group-level 70/10/20 split per class, seeded; plus the labelled groups of every segmentation setting.

    Args:
        classes: image id -> ``benign``/``malignant``/``normal``.
        groups: image id -> duplicate group (:func:`duplicate_groups`).
        seed: permutation seed.

    Returns:
        ``{"train", "validation", "test"}`` (lists of groups), ``"conflicts"`` (groups with several classes, kept in
        train) and ``"labeled"``: setting -> labelled train groups (stratified by class, at least one per class).
    """
    members: dict[str, set[str]] = {}
    for image, group in groups.items():
        members.setdefault(group, set()).add(classes[image])
    conflicts = sorted(g for g, kinds in members.items() if len(kinds) > 1)
    rng = np.random.default_rng(seed)
    split: dict[str, list[str]] = {"train": list(conflicts), "validation": [], "test": []}
    by_class: dict[str, list[str]] = {}
    for kind in IMAGE_CLASSES:
        pool = sorted(g for g, kinds in members.items() if kinds == {kind})
        order = [pool[i] for i in rng.permutation(len(pool))]
        n_test, n_val = round(0.2 * len(order)), round(0.1 * len(order))
        split["test"] += order[:n_test]
        split["validation"] += order[n_test : n_test + n_val]
        split["train"] += order[n_test + n_val :]
        by_class[kind] = order[n_test + n_val :]
    labeled: dict[str, list[str]] = {}
    for setting, fraction in SEG_SETTINGS.items():
        chosen: list[str] = []
        for kind in ("benign", "malignant"):
            train = by_class[kind]
            n = len(train) if fraction is None else min(len(train), max(1, round(fraction * len(train))))
            chosen += train[:n]
        labeled[setting] = sorted(chosen)
    return {**{k: sorted(v) for k, v in split.items()}, "conflicts": conflicts, "labeled": labeled}


class ImagePool:
    """Prepared BUSI images to draw Fourier-twin targets from (epl.md §3: a random training image).

    ``draw`` returns ``(grey float64 array, (1.0, 1.0))`` transposed to MONAI's PNG reading order ``(W, H)``, so the
    target's spectrum is oriented like the images MONAI loads.

    Args:
        entries: datalist entries with ``image`` (absolute paths, as :func:`semizoo.data.load_split` gives).

    Raises:
        DataError: no entry.
    """

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = [dict(e) for e in entries]
        if not self.entries:
            raise DataError("busi", "no images to draw Fourier targets from")

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, index: int) -> tuple[np.ndarray, tuple[float, float]]:
        from PIL import Image

        path = self.entries[index]["image"]
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("L"), dtype=np.float64)
        except OSError as error:
            raise DataError(path, f"cannot read PNG ({error})") from error
        return array.T, (1.0, 1.0)

    def draw(self, rng: np.random.RandomState | np.random.Generator) -> tuple[np.ndarray, tuple[float, float]]:
        index = rng.randint(len(self)) if isinstance(rng, np.random.RandomState) else rng.integers(len(self))
        return self.read(int(index))


def balance_malignant(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The BUSI reproduction's balancing: every malignant entry once more with ``hflip: 1`` (flipped when loaded);
    the others get ``hflip: 0`` (every entry of a batch must have the same keys)."""
    extra = [{**e, "hflip": 1} for e in entries if e.get("class") == "malignant"]
    return [{**e, "hflip": 0} for e in entries] + extra


# ---------------------------------------------------------------- prepare


def _root(src: Path) -> Path:
    for candidate in (src / "Dataset_BUSI_with_GT", src):
        if any((candidate / kind).is_dir() for kind in IMAGE_CLASSES):
            return candidate
    raise DataError(src, "no Dataset_BUSI_with_GT/{benign,malignant,normal} folders")


def _read_png(path: Path, problems: list[str]) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image)
    except Exception as error:  # PIL raises several types for corrupt files
        problems.append(f"{path}: cannot read PNG ({error})")
        return None
    return array


def _grey(array: np.ndarray) -> np.ndarray:
    return array if array.ndim == 2 else array[..., :3].mean(axis=2)


def _scan(root: Path, problems: list[str], ignored: list[str]) -> dict[str, dict[str, Any]]:
    cases: dict[str, dict[str, Any]] = {}
    for kind in IMAGE_CLASSES:
        folder = root / kind
        if not folder.is_dir():
            problems.append(f"{folder}: missing class folder")
            continue
        masks: dict[str, list[tuple[int, Path]]] = {}
        for path in sorted(folder.iterdir()):
            image_match, mask_match = _IMAGE.match(path.name), _MASK.match(path.name)
            if image_match:
                case_id = f"{kind}_{int(image_match.group(2)):03d}"
                cases[case_id] = {"kind": kind, "image": path, "masks": []}
            elif mask_match:
                case_id = f"{kind}_{int(mask_match.group(2)):03d}"
                masks.setdefault(case_id, []).append((int(mask_match.group(3) or 0), path))
            else:
                ignored.append(str(path))
        for case_id, found in masks.items():
            if case_id not in cases:
                problems.append(f"{found[0][1]}: mask without an image")
                continue
            cases[case_id]["masks"] = [p for _, p in sorted(found)]
    return cases


def prepare_busi(
    src: str | os.PathLike,
    out: str | os.PathLike,
    setting: str | None = None,
    split_seed: int = 0,
    mask_threshold: float | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``prepare busi``: check every image and mask, write grey images, merged masks and the datalists.

    Raises:
        DataError: bad arguments or layout; PrepareError: every problem found in the cases.
    """
    from .prepare import VERSION, PrepareError, _check_out, _commit, _dump

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(src, "source folder does not exist")
    _check_out(out, overwrite)
    default = setting or DEFAULT_SETTING
    if default not in SEG_SETTINGS:
        raise DataError(src, f"setting {default!r} is not one of {list(SEG_SETTINGS)}")
    root = _root(src)
    problems: list[str] = []
    ignored: list[str] = []
    cases = _scan(root, problems, ignored)
    converted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for case_id, case in sorted(cases.items()):
        if not case["masks"]:
            problems.append(f"{case['image']}: no mask file ({case['image'].stem}_mask.png)")
            continue
        image = _read_png(case["image"], problems)
        if image is None:
            continue
        grey = np.round(_grey(image)).astype(np.uint8)
        merged = np.zeros(grey.shape, bool)
        for mask_path in case["masks"]:
            mask = _read_png(mask_path, problems)
            if mask is None:
                continue
            mask = _grey(mask) if mask.ndim == 3 else mask
            if mask.shape != grey.shape:
                problems.append(
                    f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} != image {grey.shape[1]}x{grey.shape[0]}"
                )
                continue
            if mask_threshold is None:
                outside = np.setdiff1d(np.unique(mask), [0, 255])
                if outside.size:
                    problems.append(
                        f"{mask_path}: mask values {outside[:5].tolist()} outside {{0,255}} (use --mask-threshold)"
                    )
                    continue
                merged |= mask > 0
            else:
                merged |= mask > mask_threshold
        converted[case_id] = (grey, merged)
    if not cases:
        problems.append(f"{root}: no '<class> (<n>).png' images")
    if problems:
        raise PrepareError(problems)
    kinds = {case_id: cases[case_id]["kind"] for case_id in converted}
    groups = duplicate_groups({case_id: difference_hash(grey) for case_id, (grey, _) in converted.items()})
    split = busi_split(kinds, groups, split_seed)

    def entry(case_id: str, labeled: bool) -> dict[str, Any]:
        item = {"image": f"data/busi/images/{case_id}.png"}
        if labeled:
            item["label"] = f"data/busi/masks/{case_id}.png"
        item.update(
            {
                "patient": case_id,
                "group": groups[case_id],
                "class": kinds[case_id],
                "image_class": IMAGE_CLASSES[kinds[case_id]],
                "domain": "busi",
            }
        )
        return item

    lesion = [c for c in sorted(converted) if kinds[c] != "normal"]
    lists = {}
    for name in SEG_SETTINGS:
        labeled_groups = set(split["labeled"][name])
        train = {g for g in split["train"]}
        lists[name] = {
            "dataset": "busi",
            "setting": name,
            "phantom": (src / "semizoo_phantom.json").is_file(),
            "classes": BUSI_CLASSES,
            "labeled": [entry(c, True) for c in lesion if groups[c] in labeled_groups],
            "unlabeled": [entry(c, False) for c in lesion if groups[c] in train and groups[c] not in labeled_groups],
            "validation": [entry(c, True) for c in lesion if groups[c] in set(split["validation"])],
            "test": [entry(c, True) for c in lesion if groups[c] in set(split["test"])],
        }
    tmp = out / f".semizoo-tmp-{os.getpid()}"
    try:
        from PIL import Image

        for case_id, (grey, merged) in converted.items():
            for folder, array in (("images", grey), ("masks", merged.astype(np.uint8))):
                path = tmp / "data" / "busi" / folder / f"{case_id}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path, format="PNG")
        n_groups = len(set(groups.values()))
        report = {
            "dataset": "busi",
            "layout": "raw",
            "split": "busi_split",
            "split_seed": split_seed,
            "default_setting": default,
            "phantom": lists[default]["phantom"],
            "semizoo_prepare_version": VERSION,
            "source": str(src.resolve()),
            "images": {k: sum(v == k for v in kinds.values()) for k in IMAGE_CLASSES},
            "duplicate_groups": {"groups": n_groups, "images_in_shared_groups": len(groups) - n_groups},
            "conflicting_groups": split["conflicts"],
            "ignored_files": ignored,
            "counts": {
                n: {k: len(c[k]) for k in ("labeled", "unlabeled", "validation", "test")} for n, c in lists.items()
            },
            "datalist_sha256": {n: hashlib.sha256(_dump(c).encode()).hexdigest() for n, c in lists.items()},
            "warnings": (
                [f"{len(split['conflicts'])} duplicate groups mix classes (kept in train)"]
                if split["conflicts"]
                else []
            ),
        }
        (tmp / "datalists").mkdir(parents=True, exist_ok=True)
        for name, content in lists.items():
            (tmp / "datalists" / f"{name}.json").write_text(_dump(content))
        (tmp / "datalist.json").write_text(_dump(lists[default]))
        (tmp / "prepare_report.json").write_text(_dump(report))
        _commit(tmp, out)
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
