"""BUSI for EPL (datasets.md §1.4, §2, §4; epl.md §3): phantoms in the release layout, ``prepare busi`` (merged masks,
clear errors before any output), duplicate groups and the seeded split, and the BUSI training pipeline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from semizoo.data import ImagePool, balance_malignant, load_split
from semizoo.data.busi import busi_split, difference_hash, duplicate_groups
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
