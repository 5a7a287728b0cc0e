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

Detection (``prepare busi`` and its alias ``busi-detection``; wssdl.md §3) writes ``datalists/det_*.json`` from the
same split (same train/validation/test groups as the segmentation lists):

- Boxes: one per mask *file* (:func:`mask_box`, :func:`boxes_from_masks`): ``[x1, y1, x2, y2]`` with x1 = the first
  and x2 = the last non-zero column + 1 (y: rows) of the binarised mask, in the stored image's pixels (continuous
  edges, x2/y2 exclusive). Empty mask files give no box; ``label`` is the folder class per box (1 benign,
  2 malignant); ``image_class`` 0 normal, 1 benign, 2 malignant.
- ``labeled`` (strong): ``image``, ``box``, ``label``, ``image_class``, ``id``, ``group``, ``domain``.
  ``unlabeled`` (weak): the same without ``box``/``label``. ``validation``/``test``: lesion images with their boxes,
  normal images with ``box: []``, ``label: []``.
- Strong (:func:`detection_strong`) = a selection of the train lesion images that have a box, per class from a
  permutation seeded by ``(split seed, image class)``: ``det_lab{5,10,20}pct`` a class-stratified k % (at least one
  per class), ``det_s10``/``det_s50`` exactly 5+5 / 25+25 benign+malignant, ``det_full`` all. The settings are
  nested prefixes of the same permutations (5 % ⊆ 10 % ⊆ 20 %, s10 ⊆ s50). Weak = the other train lesion images
  (including those whose masks are all empty) plus **all train normal images** (image_class 0): whether normals are
  used as weak images is decided at training time (wssdl ``normal_as_weak``).
- Strong/weak selection is per image, not per duplicate group: both are training data, so a near-duplicate pair may
  be split between strong and weak (the report counts such groups); validation and test stay group-disjoint.
- A setting the split cannot fill (``det_s10``/``det_s50`` on small data) is not written; the report's warnings say
  why (an error only when it is the requested ``--setting``). Lesion images in validation/test without any box are
  left out of the detection lists (warned).
"""

from __future__ import annotations

import hashlib
import os
import re
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
    "DET_CLASSES",
    "DET_SETTINGS",
    "DEFAULT_DET_SETTING",
    "mask_box",
    "boxes_from_masks",
    "detection_strong",
    "prepare_busi",
]

BUSI_CLASSES = {"0": "background", "1": "lesion"}
IMAGE_CLASSES = {"normal": 0, "benign": 1, "malignant": 2}
SEG_SETTINGS = {"seg_lab5pct": 0.05, "seg_lab10pct": 0.10, "seg_lab25pct": 0.25, "seg_lab50pct": 0.50, "seg_full": None}
DEFAULT_SETTING = "seg_lab25pct"
DET_CLASSES = {"0": "background", "1": "benign", "2": "malignant"}
# strong selection per detection setting: a float = a class-stratified fraction, an int = that many images (half
# malignant), None = every train lesion image with a box
DET_SETTINGS: dict[str, float | int | None] = {
    "det_lab5pct": 0.05,
    "det_lab10pct": 0.10,
    "det_lab20pct": 0.20,
    "det_s10": 10,
    "det_s50": 50,
    "det_full": None,
}
DEFAULT_DET_SETTING = "det_lab20pct"
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
        except Exception as error:  # PIL raises several types for corrupt files (OSError, SyntaxError, ...)
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


def mask_box(mask: np.ndarray) -> list[float] | None:
    """``[x1, y1, x2, y2]`` of the non-zero pixels of a 2D mask, ``None`` when it has none.

    Column = x and row = y of the array as stored (a PNG read by PIL: ``(H, W)``); x1 = the first non-zero column,
    x2 = the last one + 1 (continuous pixel edges, x2 exclusive), and the same for y with rows.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D (H, W), got shape {mask.shape}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def boxes_from_masks(masks: list[np.ndarray]) -> list[list[float]]:
    """One :func:`mask_box` per mask (one mask file of an image each), in order; empty masks give no box."""
    return [box for box in (mask_box(mask) for mask in masks) if box is not None]


def detection_strong(candidates: dict[str, str], setting: str, seed: int = 0) -> list[str]:
    """The strong (boxed) training images of a detection setting (:data:`DET_SETTINGS`), sorted.

    Each class's candidates (sorted) are permuted with ``default_rng([seed, image class])`` (1 benign,
    2 malignant); a setting takes a prefix of each permutation, so the settings are nested (5 % ⊆ 10 % ⊆ 20 % ⊆ full,
    s10 ⊆ s50) and do not depend on the other class's size.

    Args:
        candidates: image id -> ``benign``/``malignant`` of the train lesion images that have at least one box.
        setting: ``det_lab{5,10,20}pct`` (class-stratified fraction, at least one per class), ``det_s10``/``det_s50``
            (exactly half benign, half malignant) or ``det_full`` (all).
        seed: the split seed.

    Raises:
        DataError: an unknown setting, or a class with too few candidates (none, or fewer than half of s10/s50).
    """
    if setting not in DET_SETTINGS:
        raise DataError(setting, f"not a detection setting; choose one of {list(DET_SETTINGS)}")
    rule = DET_SETTINGS[setting]
    pools = {kind: sorted(i for i, k in candidates.items() if k == kind) for kind in ("benign", "malignant")}
    have = f"the split has {len(pools['benign'])} benign and {len(pools['malignant'])} malignant"
    if isinstance(rule, int) and min(len(pool) for pool in pools.values()) < rule // 2:
        raise DataError(
            setting, f"needs {rule // 2} benign + {rule // 2} malignant training lesion images with a box; {have}"
        )
    if not all(pools.values()):
        raise DataError(setting, f"needs at least one training lesion image with a box per class; {have}")
    chosen: list[str] = []
    for kind, pool in pools.items():
        order = [pool[i] for i in np.random.default_rng([seed, IMAGE_CLASSES[kind]]).permutation(len(pool))]
        if isinstance(rule, int):
            n = rule // 2
        else:
            n = len(pool) if rule is None else min(len(pool), max(1, round(rule * len(pool))))
        chosen += order[:n]
    return sorted(chosen)


def _detection_lists(
    kinds: dict[str, str],
    groups: dict[str, str],
    boxes: dict[str, list[list[float]]],
    split: dict[str, Any],
    seed: int,
    phantom: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Any], list[str]]:
    """``(datalists, skipped setting -> reason, report section, warnings)`` of the detection settings."""
    train, validation, test = (set(split[k]) for k in ("train", "validation", "test"))
    ids = sorted(kinds)
    warnings = []
    for case_id in ids:
        if kinds[case_id] != "normal" and not boxes[case_id]:
            where = "weak only" if groups[case_id] in train else "left out of the det validation/test lists"
            warnings.append(f"{case_id}: {kinds[case_id]} image without any mask pixel: no box, {where}")
        if kinds[case_id] == "normal" and boxes[case_id]:
            warnings.append(f"{case_id}: normal image with a non-empty mask: no box (image_class 0)")

    def entry(case_id: str, with_boxes: bool) -> dict[str, Any]:
        item: dict[str, Any] = {"image": f"data/busi/images/{case_id}.png"}
        if with_boxes:
            found = boxes[case_id] if kinds[case_id] != "normal" else []
            item["box"] = found
            item["label"] = [IMAGE_CLASSES[kinds[case_id]]] * len(found)
        item.update({"image_class": IMAGE_CLASSES[kinds[case_id]], "id": case_id, "group": groups[case_id]})
        item["domain"] = "busi"
        return item

    def evaluation(members: set[str]) -> list[dict[str, Any]]:
        return [
            entry(c, True)
            for c in ids
            if groups[c] in members and (kinds[c] == "normal" or boxes[c])  # lesion images without a box: left out
        ]

    candidates = {c: kinds[c] for c in ids if groups[c] in train and kinds[c] != "normal" and boxes[c]}
    lists: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    info: dict[str, Any] = {
        "strong": {},
        "strong_weak_shared_groups": {},
        "train_normals_in_unlabeled": sum(groups[c] in train and kinds[c] == "normal" for c in ids),
    }
    for name in DET_SETTINGS:
        try:
            strong = set(detection_strong(candidates, name, seed))
        except DataError as error:
            skipped[name] = error.problem
            continue
        weak = [c for c in ids if groups[c] in train and c not in strong]
        lists[name] = {
            "dataset": "busi",
            "setting": name,
            "phantom": phantom,
            "classes": DET_CLASSES,
            "labeled": [entry(c, True) for c in sorted(strong)],
            "unlabeled": [entry(c, False) for c in weak],
            "validation": evaluation(validation),
            "test": evaluation(test),
        }
        _check_detection(lists[name])
        info["strong"][name] = {k: sum(kinds[c] == k for c in strong) for k in ("benign", "malignant")}
        info["strong_weak_shared_groups"][name] = len({groups[c] for c in strong} & {groups[c] for c in weak})
    warnings += [f"{name} not written: {reason}" for name, reason in skipped.items()]
    return lists, skipped, info, warnings


def _check_detection(content: dict[str, Any]) -> None:
    """The invariants of a detection datalist (datasets.md §2), checked before anything is written."""
    name = content["setting"]
    keys = ("labeled", "unlabeled", "validation", "test")
    images = {k: [e["image"] for e in content[k]] for k in keys}
    for k in keys:
        if len(set(images[k])) != len(images[k]) or images[k] != sorted(images[k]):
            raise AssertionError(f"{name}: {k} entries are not unique and sorted")
    for a_index, a in enumerate(keys):
        for b in keys[a_index + 1 :]:
            if set(images[a]) & set(images[b]):
                raise AssertionError(f"{name}: {a} and {b} share images {sorted(set(images[a]) & set(images[b]))}")
    train = {e["group"] for k in ("labeled", "unlabeled") for e in content[k]}
    held = {k: {e["group"] for e in content[k]} for k in ("validation", "test")}
    if train & held["validation"] or train & held["test"] or held["validation"] & held["test"]:
        raise AssertionError(f"{name}: train, validation and test share duplicate groups")
    for e in content["unlabeled"]:
        if "box" in e or "label" in e:
            raise AssertionError(f"{name}: unlabeled entry {e['id']} carries a box or label")
    for k in ("labeled", "validation", "test"):
        for e in content[k]:
            if len(e["box"]) != len(e["label"]) or (k == "labeled" and not e["box"]):
                raise AssertionError(f"{name}: {k} entry {e['id']} has {len(e['box'])} boxes, {len(e['label'])} labels")


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
            mode, array = image.mode, np.asarray(image)
    except Exception as error:  # PIL raises several types for corrupt files
        problems.append(f"{path}: cannot read PNG ({error})")
        return None
    if array.dtype not in (np.uint8, np.bool_):  # 16-bit or float PNGs would wrap around when cast to 8 bits
        problems.append(f"{path}: not an 8-bit PNG (mode {mode}); expected 8-bit grey or RGB")
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
    """``prepare busi`` (alias ``busi-detection``): check every image and mask, write grey images, merged masks, the
    segmentation datalists (:data:`SEG_SETTINGS`) and the detection datalists (:data:`DET_SETTINGS`, boxes per mask
    file; a detection setting the split cannot fill is skipped with a warning in the report).

    Args:
        src: the release folder (holding ``Dataset_BUSI_with_GT`` or the class folders).
        out: the prepared DIR.
        setting: the default datalist (``datalist.json``), a segmentation or detection setting; ``None``:
            ``seg_lab25pct``.
        split_seed: seed of :func:`busi_split` and of the detection strong selection.
        mask_threshold: binarise masks at ``> T`` instead of requiring values in {0, 255}.
        overwrite: replace a non-empty ``out`` that holds something other than semizoo output.

    Raises:
        DataError: bad arguments or layout; PrepareError: every problem found in the cases.
    """
    from .prepare import VERSION, PrepareError, _check_out, _commit, _discard, _dump, _missing_folders

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(src, "source folder does not exist")
    _check_out(out, overwrite)
    default = setting or DEFAULT_SETTING
    if default not in SEG_SETTINGS and default not in DET_SETTINGS:
        raise DataError(src, f"setting {default!r} is not one of {list(SEG_SETTINGS) + list(DET_SETTINGS)}")
    root = _root(src)
    problems: list[str] = []
    ignored: list[str] = []
    cases = _scan(root, problems, ignored)
    converted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    boxes: dict[str, list[list[float]]] = {}  # one box per non-empty mask file, in mask file order
    empty_mask_files = 0
    for case_id, case in sorted(cases.items()):
        if not case["masks"]:
            problems.append(f"{case['image']}: no mask file ({case['image'].stem}_mask.png)")
            continue
        image = _read_png(case["image"], problems)
        if image is None:
            continue
        grey = np.round(_grey(image)).astype(np.uint8)
        merged = np.zeros(grey.shape, bool)
        binary_masks = []
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
                binary = mask > 0
            else:
                binary = mask > mask_threshold
            merged |= binary
            binary_masks.append(binary)
        converted[case_id] = (grey, merged)
        boxes[case_id] = boxes_from_masks(binary_masks)
        if case["kind"] != "normal":
            empty_mask_files += len(binary_masks) - len(boxes[case_id])
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
    phantom = (src / "semizoo_phantom.json").is_file()
    det_lists, skipped, det_info, det_warnings = _detection_lists(kinds, groups, boxes, split, split_seed, phantom)
    if default in skipped:
        raise DataError(src, f"setting {default!r} cannot be written: {skipped[default]}")
    written = {**lists, **det_lists}
    tmp, created = out / f".semizoo-tmp-{os.getpid()}", _missing_folders(out)
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
            "phantom": phantom,
            "semizoo_prepare_version": VERSION,
            "source": str(src.resolve()),
            "images": {k: sum(v == k for v in kinds.values()) for k in IMAGE_CLASSES},
            "duplicate_groups": {"groups": n_groups, "images_in_shared_groups": len(groups) - n_groups},
            "conflicting_groups": split["conflicts"],
            "ignored_files": ignored,
            "counts": {
                n: {k: len(c[k]) for k in ("labeled", "unlabeled", "validation", "test")} for n, c in written.items()
            },
            "datalist_sha256": {n: hashlib.sha256(_dump(c).encode()).hexdigest() for n, c in written.items()},
            "detection": {
                "default_setting": DEFAULT_DET_SETTING,
                "written": list(det_lists),
                "skipped": skipped,
                "boxes": sum(len(boxes[c]) for c in lesion),
                "empty_mask_files": empty_mask_files,
                **det_info,
            },
            "warnings": (
                [f"{len(split['conflicts'])} duplicate groups mix classes (kept in train)"]
                if split["conflicts"]
                else []
            )
            + det_warnings,
        }
        (tmp / "datalists").mkdir(parents=True, exist_ok=True)
        for name, content in written.items():
            (tmp / "datalists" / f"{name}.json").write_text(_dump(content))
        (tmp / "datalist.json").write_text(_dump(written[default]))
        (tmp / "prepare_report.json").write_text(_dump(report))
        _commit(tmp, out)
        return report
    finally:
        _discard(tmp, created)
