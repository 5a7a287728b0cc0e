"""BUSI for EPL (datasets.md §1.4, §2, §4; epl.md §3): phantoms in the release layout, ``prepare busi`` (merged masks,
clear errors before any output), duplicate groups and the seeded split, and the BUSI training pipeline; the detection
datalists ``det_*`` (wssdl.md §3: one box per mask file, strong/weak selection, normals, skipped settings)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from semizoo.data import DataError, ImagePool, balance_malignant, load_split
from semizoo.data.busi import (
    DET_SETTINGS,
    boxes_from_masks,
    busi_split,
    detection_strong,
    difference_hash,
    duplicate_groups,
    mask_box,
)
from semizoo.data.phantoms import generate
from semizoo.data.prepare import PrepareError, prepare
from semizoo.transforms import ConditionalFlipd, epl_busi_eval_transforms, epl_busi_train_transforms


@pytest.fixture(scope="module")
def busi(tmp_path_factory):
    root = tmp_path_factory.mktemp("busi")
    generate("busi", root / "raw", seed=0, preset="test")
    prepare("busi", root / "raw", root / "prepared")
    return root


def _png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_phantom_has_the_release_layout(busi):
    root = busi / "raw" / "Dataset_BUSI_with_GT"
    counts = {kind: len(list((root / kind).glob(f"{kind} (*).png"))) for kind in ("benign", "malignant", "normal")}
    assert counts == {"benign": 13, "malignant": 6, "normal": 5}
    image = _png(root / "benign" / "benign (1).png")
    assert image.ndim == 3 and image.shape[2] == 3 and (image[..., 0] == image[..., 2]).all()
    assert set(np.unique(_png(root / "benign" / "benign (1)_mask.png"))) == {0, 255}
    assert (root / "benign" / "benign (2)_mask_1.png").is_file()  # the multifocal case
    assert not _png(root / "normal" / "normal (1)_mask.png").any()
    assert 80 <= image.shape[0] <= 112 and 80 <= image.shape[1] <= 112


def test_prepare_converts_merges_masks_and_groups_duplicates(busi):
    raw = busi / "raw" / "Dataset_BUSI_with_GT" / "benign"
    out = busi / "prepared"
    grey = _png(out / "data" / "busi" / "images" / "benign_002.png")
    np.testing.assert_array_equal(grey, np.round(_png(raw / "benign (2).png")[..., :3].mean(axis=2)).astype(np.uint8))
    merged = _png(out / "data" / "busi" / "masks" / "benign_002.png")
    expected = (_png(raw / "benign (2)_mask.png") > 0) | (_png(raw / "benign (2)_mask_1.png") > 0)
    np.testing.assert_array_equal(merged, expected.astype(np.uint8))
    assert (_png(raw / "benign (2)_mask_1.png") > 0).any() and not np.array_equal(
        merged > 0, _png(raw / "benign (2)_mask.png") > 0
    )
    datalist = json.loads((out / "datalists" / "seg_lab25pct.json").read_text())
    entries = [e for k in ("labeled", "unlabeled", "validation", "test") for e in datalist[k]]
    assert not any(e["class"] == "normal" for e in entries) and len(entries) == 19
    groups = {e["patient"]: e["group"] for e in entries}
    assert groups["benign_003"] == groups["benign_001"]  # the phantom's re-scan of benign (1)
    by_list = {k: {e["group"] for e in datalist[k]} for k in ("labeled", "unlabeled", "validation", "test")}
    for a in by_list:
        for b in by_list:
            assert a == b or not by_list[a] & by_list[b], (a, b)
    assert all("label" not in e for e in datalist["unlabeled"])
    assert {e["class"] for e in datalist["labeled"]} == {"benign", "malignant"}
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["images"] == {"normal": 5, "benign": 13, "malignant": 6}


def test_prepare_names_a_mismatched_mask_and_writes_nothing(tmp_path, busi):
    src = tmp_path / "src"
    shutil.copytree(busi / "raw", src)
    folder = src / "Dataset_BUSI_with_GT"
    mask = folder / "malignant" / "malignant (2)_mask.png"
    small = _png(mask)[:-3, :-2]
    Image.fromarray(small).save(mask)
    grey = _png(folder / "benign" / "benign (4)_mask.png").copy()
    grey[0, 0] = 128
    Image.fromarray(grey).save(folder / "benign" / "benign (4)_mask.png")
    (folder / "benign" / "benign (5).png").write_bytes(b"\x89PNG broken")
    with pytest.raises(PrepareError) as info:
        prepare("busi", src, tmp_path / "out")
    message = str(info.value)
    height, width = _png(folder / "malignant" / "malignant (2).png").shape[:2]
    assert f"{mask}: mask size {width - 2}x{height - 3} != image {width}x{height}" in message
    assert "benign (4)_mask.png: mask values [128] outside {0,255} (use --mask-threshold)" in message
    assert "benign (5).png: cannot read PNG" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_difference_hash_groups_and_split_rules():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, 80)).astype(np.uint8)
    near = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    other = rng.integers(0, 255, (64, 80)).astype(np.uint8)
    hashes = {"a": difference_hash(base), "b": difference_hash(near), "c": difference_hash(other)}
    assert bin(hashes["a"] ^ hashes["b"]).count("1") <= 4 < bin(hashes["a"] ^ hashes["c"]).count("1")
    assert duplicate_groups(hashes) == {"a": "a", "b": "a", "c": "c"}
    classes = {f"b{i:02d}": "benign" for i in range(40)} | {f"m{i:02d}": "malignant" for i in range(20)}
    classes |= {"x1": "benign", "x2": "malignant"}  # one group of two classes: kept in train
    groups = {i: i for i in classes} | {"x2": "x1"}
    split = busi_split(classes, groups, seed=0)
    assert split["conflicts"] == ["x1"] and "x1" in split["train"]
    assert sum(g.startswith("b") for g in split["test"]) == 8 and sum(g.startswith("m") for g in split["test"]) == 4
    assert sum(g.startswith("b") for g in split["validation"]) == 4
    assert len(split["labeled"]["seg_lab25pct"]) == round(0.25 * 28) + round(0.25 * 14)
    assert set(split["labeled"]["seg_lab25pct"]) < set(split["labeled"]["seg_lab50pct"]) <= set(split["train"])
    assert split == busi_split(classes, groups, seed=0) and split != busi_split(classes, groups, seed=1)


def test_busi_pipelines_balancing_and_twins(busi):
    datalist = busi / "prepared" / "datalist.json"
    labeled = load_split(datalist, "labeled")
    balanced = balance_malignant(labeled)
    malignant = [e for e in labeled if e["class"] == "malignant"]
    assert len(balanced) == len(labeled) + len(malignant) and {e["hflip"] for e in balanced} == {0, 1}
    image = torch.arange(12.0).view(1, 3, 4)
    flipped = ConditionalFlipd("image")({"image": image, "hflip": 1})["image"]
    assert torch.equal(flipped, image.flip(1)) and torch.equal(
        ConditionalFlipd("image")({"image": image, "hflip": 0})["image"], image
    )
    pool = ImagePool(labeled)
    array, _ = pool.read(0)
    assert array.shape == _png(labeled[0]["image"]).T.shape
    out = epl_busi_train_transforms(False, pool, resize=68, crop_size=64)(load_split(datalist, "unlabeled")[0])
    assert out["image"].shape == out["image_fourier"].shape == (1, 64, 64)
    lab = epl_busi_train_transforms(True, None, resize=68, crop_size=64)(balanced[-1])
    assert lab["label"].shape == (1, 64, 64) and set(torch.unique(lab["label"]).tolist()) <= {0.0, 1.0}
    test = epl_busi_eval_transforms(64)(load_split(datalist, "test")[0])
    assert (
        test["image"].shape == (1, 64, 64)
        and test["label"].shape[1:] == _png(load_split(datalist, "test")[0]["label"]).T.shape
    )


# ---------------------------------------------------------------- detection datalists (wssdl.md §3)

DET_LISTS = ("labeled", "unlabeled", "validation", "test")


def _release(root, n_benign: int = 11, n_malignant: int = 8, n_normal: int = 10) -> None:
    """A tiny tree in the release layout with hand-drawn masks on 36×48 noise images (distinct difference hashes).

    ``benign (1)``: multifocal (``_mask.png`` an L shape -> box [38, 3, 46, 10], ``_mask_1.png`` two pixels -> box
    [2, 25, 11, 31], ``_mask_2.png`` empty -> no box); ``benign (<n>)`` with the largest n: only an empty mask; every
    other lesion: a rectangle rows 10..19, columns 15..29 -> box [15, 10, 30, 20].
    """
    rng = np.random.default_rng(7)
    for kind, count in (("benign", n_benign), ("malignant", n_malignant), ("normal", n_normal)):
        folder = root / "Dataset_BUSI_with_GT" / kind
        folder.mkdir(parents=True)
        for number in range(1, count + 1):
            grey = rng.integers(0, 256, (36, 48), dtype=np.uint8)
            Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(folder / f"{kind} ({number}).png")
            masks = [np.zeros((36, 48), np.uint8)]
            if kind == "benign" and number == 1:
                masks = [np.zeros((36, 48), np.uint8) for _ in range(3)]
                masks[0][3:8, 40:46] = 255  # rows 3..7, columns 40..45
                masks[0][5:10, 38] = 255  # rows 5..9, column 38
                masks[1][30, 2] = masks[1][25, 10] = 255
            elif kind != "normal" and not (kind == "benign" and number == n_benign):
                masks[0][10:20, 15:30] = 255
            for index, mask in enumerate(masks):
                suffix = "_mask" if index == 0 else f"_mask_{index}"
                Image.fromarray(mask).save(folder / f"{kind} ({number}){suffix}.png")


def _lists(out) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((out / "datalists").glob("*.json"))}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("busi_tiny")
    _release(root / "raw")
    prepare("busi", root / "raw", root / "prepared")
    return root


def test_mask_boxes_use_columns_as_x_and_exclusive_ends():
    mask = np.zeros((5, 8), np.uint8)
    assert mask_box(mask) is None
    mask[1, 6] = 255
    assert mask_box(mask) == [6.0, 1.0, 7.0, 2.0]
    mask[3, 2] = 1
    assert mask_box(mask) == [2.0, 1.0, 7.0, 4.0]
    assert boxes_from_masks([mask, np.zeros((5, 8), bool), mask[:, ::-1]]) == [
        [2.0, 1.0, 7.0, 4.0],
        [1.0, 1.0, 6.0, 4.0],
    ]


def test_detection_strong_selection_rules():
    candidates = {f"b{i:02d}": "benign" for i in range(40)} | {f"m{i:02d}": "malignant" for i in range(9)}
    picked = {name: detection_strong(candidates, name, seed=0) for name in DET_SETTINGS if name != "det_s50"}
    counts = {n: (sum(i[0] == "b" for i in p), sum(i[0] == "m" for i in p)) for n, p in picked.items()}
    assert counts == {
        "det_lab5pct": (2, 1),
        "det_lab10pct": (4, 1),
        "det_lab20pct": (8, 2),
        "det_s10": (5, 5),
        "det_full": (40, 9),
    }
    assert set(picked["det_lab5pct"]) <= set(picked["det_lab10pct"]) <= set(picked["det_lab20pct"])
    assert all(p == sorted(p) for p in picked.values())
    assert picked["det_lab20pct"] == detection_strong(candidates, "det_lab20pct", seed=0)
    assert picked["det_lab20pct"] != detection_strong(candidates, "det_lab20pct", seed=1)
    with pytest.raises(DataError, match="det_s50: needs 25 benign \\+ 25 malignant .* 40 benign and 9 malignant"):
        detection_strong(candidates, "det_s50")
    with pytest.raises(DataError, match="det_lab5pct: needs at least one .* per class"):
        detection_strong({"b": "benign"}, "det_lab5pct")


def test_detection_boxes_per_mask_file(tiny):
    lists = _lists(tiny / "prepared")
    full = lists["det_full"]
    boxed = {e["id"]: e for k in ("labeled", "validation", "test") for e in full[k]}
    assert boxed["benign_001"]["box"] == [[38.0, 3.0, 46.0, 10.0], [2.0, 25.0, 11.0, 31.0]]  # _mask_2.png is empty
    assert boxed["benign_001"]["label"] == [1, 1] and boxed["benign_001"]["image_class"] == 1
    assert boxed["malignant_001"] == {
        "image": "data/busi/images/malignant_001.png",
        "box": [[15.0, 10.0, 30.0, 20.0]],
        "label": [2],
        "image_class": 2,
        "id": "malignant_001",
        "group": "malignant_001",
        "domain": "busi",
    }
    assert full["classes"] == {"0": "background", "1": "benign", "2": "malignant"} and full["setting"] == "det_full"
    # the merged segmentation mask is still written from all mask files
    merged = _png(tiny / "prepared" / "data" / "busi" / "masks" / "benign_001.png")
    assert merged.sum() == 6 * 5 + 5 + 2
    report = json.loads((tiny / "prepared" / "prepare_report.json").read_text())
    assert report["detection"]["empty_mask_files"] == 2  # benign (1)_mask_2.png and benign (11)_mask.png
    assert any(w.startswith("benign_011: benign image without any mask pixel") for w in report["warnings"])
    for content in lists.values():
        if content["setting"].startswith("det_"):
            assert "benign_011" not in {e["id"] for k in ("labeled", "validation", "test") for e in content[k]}


def test_detection_lists_normals_weak_entries_and_counts(tiny):
    lists = _lists(tiny / "prepared")
    det = {name: content for name, content in lists.items() if name.startswith("det_")}
    assert sorted(det) == sorted(n for n in DET_SETTINGS if n != "det_s50")  # 5 + 5 benign/malignant train images
    for name, content in det.items():
        for entry in content["unlabeled"]:
            assert "box" not in entry and "label" not in entry and entry["image_class"] in (0, 1, 2)
        for key in ("labeled", "validation", "test"):
            for entry in content[key]:
                assert len(entry["box"]) == len(entry["label"])
                assert entry["label"] == [entry["image_class"]] * len(entry["box"])
        for key in ("validation", "test"):
            normals = [e for e in content[key] if e["image_class"] == 0]
            assert all(e["box"] == [] and e["label"] == [] for e in normals)
        assert all(e["box"] for e in content["labeled"])
        images = [set(e["image"] for e in content[k]) for k in DET_LISTS]
        assert sum(len(s) for s in images) == len(set().union(*images))
    assert [e for k in ("validation", "test") for e in det["det_full"][k] if e["image_class"] == 0]
    # det_full: weak = the 7 train normals (+ benign_011, no mask pixel, when it is a train image)
    empty_in_train = "benign_011" in {e["patient"] for k in ("labeled", "unlabeled") for e in lists["seg_full"][k]}
    weak = {e["id"] for e in det["det_full"]["unlabeled"]}
    assert weak == {e["id"] for e in det["det_full"]["unlabeled"] if e["image_class"] == 0} | (
        {"benign_011"} if empty_in_train else set()
    )
    assert len(weak) == 7 + empty_in_train
    # strong counts: stratified k % of the train lesion images with a box (>= 1 per class), s10 = 5 + 5
    n = {c: sum(e["image_class"] == c for e in det["det_full"]["labeled"]) for c in (1, 2)}
    assert n[2] == 5 and n[1] in (7, 8)
    for name, fraction in DET_SETTINGS.items():
        if name == "det_s50":
            continue
        got = {c: sum(e["image_class"] == c for e in det[name]["labeled"]) for c in (1, 2)}
        if name == "det_s10":
            expected = {1: 5, 2: 5}
        elif fraction is None:
            expected = n
        else:
            expected = {c: min(n[c], max(1, round(fraction * n[c]))) for c in n}
        assert got == expected, name
        train = {e["image"] for k in ("labeled", "unlabeled") for e in det[name][k]}
        assert train == {e["image"] for k in ("labeled", "unlabeled") for e in det["det_full"][k]}
        for key in ("validation", "test"):
            assert det[name][key] == det["det_full"][key]
    strong = {name: {e["id"] for e in det[name]["labeled"]} for name in det}
    assert strong["det_lab5pct"] <= strong["det_lab10pct"] <= strong["det_lab20pct"] <= strong["det_full"]
    report = json.loads((tiny / "prepared" / "prepare_report.json").read_text())
    assert report["counts"]["det_s10"] == {k: len(det["det_s10"][k]) for k in DET_LISTS}
    assert "det_s50" not in report["counts"] and "needs 25 benign" in report["detection"]["skipped"]["det_s50"]


def test_detection_uses_the_segmentation_split(tiny):
    lists = _lists(tiny / "prepared")
    seg = lists["seg_lab25pct"]
    seg_train = {e["image"] for k in ("labeled", "unlabeled") for e in seg[k]}
    boxless = "benign_011"  # no mask pixel: weak in train, left out of det validation/test
    for name in ("det_lab20pct", "det_s10", "det_full"):
        det = lists[name]
        for key in ("validation", "test"):
            seg_groups = {e["group"] for e in seg[key] if e["patient"] != boxless}
            assert {e["group"] for e in det[key] if e["image_class"]} == seg_groups
        det_train = {e["image"] for k in ("labeled", "unlabeled") for e in det[k] if e["image_class"]}
        assert det_train == seg_train
        groups = {k: {e["group"] for e in det[k]} for k in DET_LISTS}
        train = groups["labeled"] | groups["unlabeled"]
        assert not train & groups["validation"] and not train & groups["test"]
        assert not groups["validation"] & groups["test"]


def test_detection_prepare_is_deterministic_and_alias(tmp_path, tiny):
    prepare("busi", tiny / "raw", tmp_path / "again")
    first, second = tiny / "prepared", tmp_path / "again"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for path in files:
        assert (first / path).read_bytes() == (second / path).read_bytes(), path
    report = prepare("busi-detection", tiny / "raw", tmp_path / "alias")
    assert report["default_setting"] == "det_lab20pct"
    assert (tmp_path / "alias" / "datalist.json").read_bytes() == (
        first / "datalists" / "det_lab20pct.json"
    ).read_bytes()
    for path in (first / "datalists").iterdir():
        assert (tmp_path / "alias" / "datalists" / path.name).read_bytes() == path.read_bytes()


def test_default_phantom_skips_det_s10_and_s50_with_warnings(tmp_path, busi):
    out = busi / "prepared"
    report = json.loads((out / "prepare_report.json").read_text())
    assert set(report["detection"]["skipped"]) == {"det_s10", "det_s50"}
    assert any(w.startswith("det_s10 not written: needs 5 benign + 5 malignant") for w in report["warnings"])
    assert not (out / "datalists" / "det_s10.json").exists() and (out / "datalists" / "det_lab20pct.json").is_file()
    assert {n for n in report["counts"] if n.startswith("det_")} == {
        "det_lab5pct",
        "det_lab10pct",
        "det_lab20pct",
        "det_full",
    }
    full = json.loads((out / "datalists" / "det_full.json").read_text())
    boxed = {e["id"]: e for k in ("labeled", "validation", "test") for e in full[k]}
    raw = busi / "raw" / "Dataset_BUSI_with_GT" / "benign"
    expected = []
    for name in ("benign (2)_mask.png", "benign (2)_mask_1.png"):  # the phantom's multifocal case
        rows, cols = np.nonzero(_png(raw / name))
        expected.append([float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)])
    assert boxed["benign_002"]["box"] == expected and len(expected) == 2
    assert all(e["box"] == [] for k in ("validation", "test") for e in full[k] if e["image_class"] == 0)
    assert all("box" not in e for e in full["unlabeled"]) and {e["image_class"] for e in full["unlabeled"]} == {0}
    with pytest.raises(DataError, match="setting 'det_s10' cannot be written: needs 5 benign"):
        prepare("busi", busi / "raw", tmp_path / "s10", setting="det_s10")
    assert not (tmp_path / "s10").exists() or not any((tmp_path / "s10").iterdir())
