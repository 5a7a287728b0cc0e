"""Breast ultrasound detection data (datasets.md §1.5, §1.6, §2–§4; wssdl.md §3): the ``bus`` phantoms (UDIAT
Dataset B and SNUBH-style VOC), ``prepare udiat`` and ``prepare snubh``/``voc``, the VOC box convention, the xlsx
reader, the ``det_paper`` split and the problem reports (every problem named, nothing written)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from semizoo.cli import main
from semizoo.data.phantoms import MANIFEST, generate
from semizoo.data.phantoms.udiat import kind_of, write_xlsx
from semizoo.data.prepare import PrepareError, prepare
from semizoo.data.snubh import parse_annotation, snubh_validation, voc_to_box
from semizoo.data.udiat import mask_box, read_udiat_types, read_xlsx, udiat_paper_split

torchvision_ops = pytest.importorskip("torchvision.ops")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _ids(path: Path) -> list[str]:
    return path.read_text().split()


@pytest.fixture(scope="module")
def bus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bus")
    generate("bus", root / "raw")
    prepare("udiat", root / "raw" / "udiat", root / "udiat")
    prepare("voc", root / "raw" / "snubh", root / "snubh")
    return root


# ------------------------------------------------------------------------------------------------------ VOC boxes
def _voc_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The official VOC IoU of 1-based inclusive boxes (N,4) x (M,4): widths and heights are ``max - min + 1``."""
    a, b = a[:, None, :].astype(np.float64), b[None, :, :].astype(np.float64)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1, 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1, 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


def _random_voc(rng: np.random.Generator, n: int, extent: int) -> np.ndarray:
    lo = rng.integers(1, extent, size=(n, 2))
    size = rng.integers(0, extent // 2, size=(n, 2))  # 0: a one-pixel-wide box (xmin == xmax)
    return np.concatenate([lo, lo + size], axis=1)


def test_voc_to_continuous_box_iou_equals_the_plus_one_convention():
    rng = np.random.default_rng(0)
    a = _random_voc(rng, 300, 40)
    b = np.concatenate([_random_voc(rng, 200, 40), a[:5]])  # a few identical boxes too
    expected = _voc_iou(a, b)
    converted_a = torch.tensor([voc_to_box(box) for box in a.tolist()], dtype=torch.float64)
    converted_b = torch.tensor([voc_to_box(box) for box in b.tolist()], dtype=torch.float64)
    iou = torchvision_ops.box_iou(converted_a, converted_b).numpy()
    assert 0 < (expected > 0).mean() < 1 and (expected == 1).any()  # overlaps, disjoint pairs and identical boxes
    np.testing.assert_allclose(iou, expected, rtol=0, atol=1e-12)
    assert voc_to_box([1, 1, 1, 1]) == [0, 0, 1, 1]  # one pixel: x1 = xmin - 1, x2 = xmax
    assert voc_to_box((11, 21, 30, 40)) == [10, 20, 30, 40]
    assert all(isinstance(v, int) for v in voc_to_box((11.0, 21.0, 30.0, 40.0)))
    # adjacent VOC boxes (xmax 10, next xmin 11) share no pixel: IoU 0 in both conventions
    touching = torch.tensor([voc_to_box((1, 1, 10, 10)), voc_to_box((11, 1, 20, 10))], dtype=torch.float64)
    assert torchvision_ops.box_iou(touching[:1], touching[1:]).item() == 0.0


# ---------------------------------------------------------------------------------------------------- SNUBH (VOC)
def test_xml_diag_plus_one_and_background_boxes(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><size><width>50</width><height>40</height><depth>1</depth></size>"
        "<BIRADS><diag>1</diag></BIRADS>"
        "<object><name>malignant</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>20</xmax><ymax>18</ymax></bndbox>"
        "</object><object><name>__background__</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax>"
        "<ymax>4</ymax></bndbox></object></annotation>"
    )
    parsed = parse_annotation(xml)
    assert parsed["size"] == (50, 40) and parsed["diag"] == "1"
    assert parsed["objects"] == [("malignant", (5.0, 6.0, 20.0, 18.0)), ("__background__", (1.0, 1.0, 10.0, 4.0))]


def test_snubh_records_follow_the_xml(bus):
    raw, out = bus / "raw" / "snubh", bus / "snubh"
    datalist = _json(out / "datalists" / "s_full.json")
    assert _json(out / "datalist.json") == datalist  # s_full is the default
    assert datalist["classes"] == {"0": "background", "1": "benign", "2": "malignant"}
    strong = datalist["labeled"] + datalist["validation"] + datalist["test"]
    assert strong and datalist["unlabeled"]
    for entry in strong:
        parsed = parse_annotation(raw / "Annotations" / f"{entry['id']}.xml")
        lesions = [b for name, b in parsed["objects"] if name != "__background__"]
        background = [b for name, b in parsed["objects"] if name == "__background__"]
        assert entry["bg_box"] == [voc_to_box(b) for b in background] and 1 <= len(background) <= 3
        assert entry["box"] == [voc_to_box(b) for b in lesions]
        assert entry["label"] == [
            {"benign": 1, "malignant": 2}[n] for n, _ in parsed["objects"] if n != "__background__"
        ]
        if parsed["diag"] is None:  # the phantom's normals
            assert entry["image_class"] == 0 and entry["box"] == [] and entry["label"] == []
        else:
            assert entry["image_class"] == int(parsed["diag"]) + 1
        assert list(entry) == ["image", "box", "label", "bg_box", "image_class", "id"]
    for entry in datalist["unlabeled"]:  # weak: the image class only
        assert set(entry) == {"image", "image_class", "id"} and entry["image_class"] in (1, 2)
    assert any(len(e["box"]) == 2 for e in strong)  # the multifocal case


def test_snubh_lists_settings_and_validation(bus):
    raw, out = bus / "raw" / "snubh", bus / "snubh"
    main_dir = raw / "ImageSets" / "Main"
    lists = {p.stem: _ids(p) for p in main_dir.glob("*.txt")}
    assert set(lists) == {"s_train", "s_train_10", "ws_train", "test", "test_normal"}
    assert sorted((out / "datalists").iterdir()) == [out / "datalists" / "s10.json", out / "datalists" / "s_full.json"]
    s10, full = _json(out / "datalists" / "s10.json"), _json(out / "datalists" / "s_full.json")
    validation = [e["id"] for e in full["validation"]]
    assert {e["id"] for e in s10["labeled"]} == set(lists["s_train_10"])  # the reduced list is kept whole
    assert not set(validation) & set(lists["s_train_10"])
    assert sorted(validation + [e["id"] for e in full["labeled"]]) == sorted(lists["s_train"])
    assert sorted(e["image_class"] for e in full["validation"]) == [1, 2]  # stratified: one per class here
    assert {e["id"] for e in full["unlabeled"]} == set(lists["ws_train"])
    assert {e["id"] for e in full["test"]} == set(lists["test"] + lists["test_normal"])
    assert sum(e["image_class"] == 0 for e in full["test"]) == len(lists["test_normal"]) >= 1
    for entry in full["labeled"]:
        image = _png(out / entry["image"])
        with Image.open(raw / "TIFFImages" / f"{entry['id']}.tif") as tiff:
            assert tiff.mode == "L"
            np.testing.assert_array_equal(image, np.asarray(tiff))
        assert image.dtype == np.uint8 and image.ndim == 2
    report = _json(out / "prepare_report.json")
    assert report["counts"]["s10"] == {"labeled": 10, "unlabeled": 4, "validation": 2, "test": 6}
    assert report["phantom"] is True and report["default_setting"] == "s_full"
    assert sorted(p.name for p in out.iterdir()) == ["data", "datalist.json", "datalists", "prepare_report.json"]


def test_snubh_validation_is_seeded_stratified_and_spares_reduced_lists():
    classes = {f"{i:03d}": 1 + (i % 2) for i in range(100)}
    reserved = {f"{i:03d}" for i in range(10)}
    first = snubh_validation(classes, reserved, seed=0)
    assert first == snubh_validation(classes, reserved, seed=0) != snubh_validation(classes, reserved, seed=1)
    assert len(first) == 10 and sum(classes[i] == 2 for i in first) == 5 and not set(first) & reserved
    assert snubh_validation({"a": 1, "b": 1, "c": 2}, {"a", "b"}) == ["a"]  # too few outside: from the reserved


# ---------------------------------------------------------------------------------------------------------- UDIAT
def test_udiat_xlsx_sheet_types(bus, tmp_path):
    raw = bus / "raw" / "udiat"
    rows = read_xlsx(raw / "DatasetB.xlsx")
    assert rows[0] == ["Image", "Type"] and len(rows) == 11
    problems: list[str] = []
    types = read_udiat_types(raw / "DatasetB.xlsx", problems)
    assert problems == [] and types == {f"{k + 1:06d}": kind_of(k) for k in range(10)}
    # numbers in the Image column, other column order, lower-case types, a blank row, an extra column
    book = tmp_path / "numbers.xlsx"
    write_xlsx(book, [["Notes", "Type", "Image"], ["x", "malignant ", 2], [], ["", "Benign", 10.0]])
    assert read_udiat_types(book, problems) == {"000002": "malignant", "000010": "benign"} and problems == []
    # a hand-made sheet with inline strings and no shared-string table
    inline = tmp_path / "inline.xlsx"
    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>Image</t></is></c><c r="C1" t="inlineStr"><is><t>Type</t></is>'
        '</c></row><row r="3"><c r="A3" t="inlineStr"><is><t>000007.png</t></is></c><c r="C3" t="inlineStr"><is>'
        "<r><t>Mal</t></r><r><t>ignant</t></r></is></c></row></sheetData></worksheet>"
    )
    with zipfile.ZipFile(inline, "w") as archive:
        archive.writestr(
            "xl/workbook.xml",
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheets>'
            '<sheet name="A" sheetId="1"/></sheets></workbook>',
        )
        archive.writestr("xl/worksheets/sheet1.xml", sheet)
    assert read_xlsx(inline) == [["Image", "", "Type"], [], ["000007.png", "", "Malignant"]]
    assert read_udiat_types(inline, problems) == {"000007": "malignant"} and problems == []


def test_udiat_masks_to_boxes(bus):
    raw, out = bus / "raw" / "udiat", bus / "udiat"
    datalist = _json(out / "datalists" / "test.json")
    assert len(datalist["test"]) == 10 and not datalist["labeled"] and not datalist["unlabeled"]
    for entry in datalist["test"]:
        gt = _png(raw / "GT" / f"{entry['id']}.png")
        rows, cols = np.where(gt > 0)
        assert entry["box"] == [[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]]
        assert (
            entry["label"]
            == [entry["image_class"]]
            == [{"Benign": 1, "Malignant": 2}[kind_of(int(entry["id"]) - 1).capitalize()]]
        )
        assert entry["domain"] == "udiat"
        mask = _png(out / "data" / "udiat" / "masks" / f"{entry['id']}.png")
        np.testing.assert_array_equal(mask, (gt > 0).astype(np.uint8))
        np.testing.assert_array_equal(_png(out / entry["image"]), _png(raw / "original" / f"{entry['id']}.png"))
        image = _png(out / entry["image"])
        assert image.shape[1] * 3 == image.shape[0] * 4  # the 4:3 frame
    assert mask_box(np.zeros((4, 4), bool)) is None
    assert mask_box(np.pad(np.ones((2, 3), bool), ((1, 1), (2, 0)))) == [2, 1, 5, 3]


def test_det_paper_split_counts():
    for n_benign, n_malignant in ((109, 54), (110, 53)):
        classes = {f"{i + 1:06d}": "benign" if i < n_benign else "malignant" for i in range(n_benign + n_malignant)}
        split = udiat_paper_split(classes, seed=0)
        test = [classes[i] for i in split["test"]]
        assert test.count("benign") == 20 and test.count("malignant") == 20
        assert len(split["labeled"]) == n_benign + n_malignant - 40 == 123
        assert not set(split["labeled"]) & set(split["test"])
        assert split == udiat_paper_split(classes, seed=0) and split != udiat_paper_split(classes, seed=1)
    # fewer than 40 images of a class (phantoms): min(20, n // 2) test images of that class
    small = udiat_paper_split({"a": "benign", "b": "benign", "c": "benign", "d": "malignant"}, seed=0)
    assert len(small["test"]) == 1 and "d" in small["labeled"]


def test_det_paper_on_a_release_sized_phantom(tmp_path):
    generate("udiat", tmp_path / "raw", cases=163)  # 109 benign + 54 malignant, as the release (test-preset frames)
    report = prepare("udiat", tmp_path / "raw", tmp_path / "out")
    assert report["images"] == {"benign": 109, "malignant": 54}
    assert report["counts"]["det_paper"] == {"labeled": 123, "unlabeled": 0, "validation": 0, "test": 40}
    assert report["class_counts"]["det_paper"]["test"] == {"benign": 20, "malignant": 20}
    assert report["warnings"] == [] and report["default_setting"] == "det_paper"
    assert _json(tmp_path / "out" / "datalist.json")["setting"] == "det_paper"


def test_small_phantom_det_paper_rule(bus):
    report = _json(bus / "udiat" / "prepare_report.json")
    assert report["images"] == {"benign": 7, "malignant": 3}
    assert report["class_counts"]["det_paper"]["test"] == {"benign": 3, "malignant": 1}  # min(20, n // 2)
    assert len(report["warnings"]) == 2


# ------------------------------------------------------------------------------------------------------- phantoms
def test_bus_phantom_layout_and_manifest(bus):
    raw = bus / "raw"
    manifest = _json(raw / MANIFEST)
    assert manifest["entries"] == ["busi", "udiat", "snubh"] and manifest["arguments"]["dataset"] == "bus"
    assert sorted(p.name for p in raw.iterdir()) == sorted(["busi", "udiat", "snubh", MANIFEST])
    assert (raw / "busi" / "Dataset_BUSI_with_GT" / "benign" / "benign (1).png").is_file()
    assert (
        len(list((raw / "udiat" / "original").glob("*.png"))) == len(list((raw / "udiat" / "GT").glob("*.png"))) == 10
    )
    assert len(list((raw / "snubh" / "TIFFImages").glob("*.tif"))) == 24
    for part in ("busi", "udiat", "snubh"):
        assert _json(raw / part / MANIFEST)["dataset"] == part
    size = sum(p.stat().st_size for p in raw.rglob("*") if p.is_file())
    assert size < 5 * 2**20


def test_phantoms_are_byte_identical_and_case_independent(bus, tmp_path):
    generate("bus", tmp_path / "again")
    first, second = _files(bus / "raw"), _files(tmp_path / "again")
    assert first.keys() == second.keys() and len(first) > 100
    assert [k for k in first if first[k] != second[k]] == []
    generate("busi", tmp_path / "busi")  # bus/busi is the standalone BUSI phantom, unchanged
    busi = _files(tmp_path / "busi")
    assert all(busi[k] == first[f"busi/{k}"] for k in busi if k != MANIFEST)
    generate("udiat", tmp_path / "few", cases=3)
    few = _files(tmp_path / "few")
    assert all(few[k] == first[f"udiat/{k}"] for k in few if k.startswith(("original/", "GT/")))
    with pytest.raises(ValueError, match="cases must be 24"):
        generate("snubh", tmp_path / "bad", cases=3)
    with pytest.raises(ValueError, match="cases must be None"):
        generate("bus", tmp_path / "bad", cases=3)


def test_prepare_is_deterministic(bus, tmp_path):
    prepare("snubh", bus / "raw" / "snubh", tmp_path / "snubh")
    prepare("udiat", bus / "raw" / "udiat", tmp_path / "udiat")
    for name in ("snubh", "udiat"):
        a, b = _files(bus / name), _files(tmp_path / name)
        assert a.keys() == b.keys()
        assert [k for k in a if a[k] != b[k] and k != "prepare_report.json"] == []


# --------------------------------------------------------------------------------------------------------- errors
def _copy(bus: Path, tmp_path: Path, part: str) -> Path:
    src = tmp_path / "src"
    shutil.copytree(bus / "raw" / part, src)
    return src


def test_snubh_problems_are_collected_and_nothing_is_written(bus, tmp_path):
    src = _copy(bus, tmp_path, "snubh")
    (src / "Annotations" / "000003.xml").write_text("<annotation><size><width>9</wid")  # corrupt XML
    (src / "TIFFImages" / "000016.tif").unlink()  # a weak image's TIFF
    (src / "Annotations" / "000020.xml").unlink()  # a test image's annotation
    (src / "ImageSets" / "Main" / "test.txt").write_text(
        (src / "ImageSets" / "Main" / "test.txt").read_text() + "404\n"
    )
    xml = src / "Annotations" / "000005.xml"
    width = parse_annotation(xml)["size"][0]
    text = xml.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    xml.write_text(text[:start] + str(width + 1) + text[text.index("</xmax>") :])  # box outside the image
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as info:
        prepare("snubh", src, out)
    message = str(info.value)
    assert f"{src / 'Annotations' / '000003.xml'}: cannot parse XML" in message
    assert (
        f"{src / 'ImageSets' / 'Main' / 'ws_train.txt'}: 000016 is listed but TIFFImages/000016.tif is missing"
        in message
    )
    assert "000020 is listed but its annotation Annotations/000020.xml is missing" in message
    assert "404 is listed but TIFFImages/404.tif is missing" in message
    assert f"{xml}: object" in message and "is outside the image" in message
    assert len(info.value.problems) == 6  # 404 lacks both files
    assert not out.exists()


def test_snubh_bad_tiff_and_size_mismatch(bus, tmp_path):
    src = _copy(bus, tmp_path, "snubh")
    (src / "TIFFImages" / "000001.tif").write_bytes(b"II*\x00 truncated")
    tiff = src / "TIFFImages" / "000002.tif"
    Image.fromarray(_png(tiff)[:-1]).save(tiff, format="TIFF")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PrepareError) as info:
        prepare("voc", src, out)
    assert f"{src / 'TIFFImages' / '000001.tif'}: cannot read TIFF" in str(info.value)
    assert f"{src / 'Annotations' / '000002.xml'}: <size>" in str(info.value)
    assert list(out.iterdir()) == []


def test_udiat_problems_are_collected_and_nothing_is_written(bus, tmp_path):
    src = _copy(bus, tmp_path, "udiat")
    rows = read_xlsx(src / "DatasetB.xlsx")
    rows[3][1] = "Suspicious"
    write_xlsx(src / "DatasetB.xlsx", rows)
    gt = src / "GT" / "000005.png"
    Image.fromarray(_png(gt)[:-2]).save(gt)  # mask size != image
    (src / "GT" / "000006.png").unlink()
    (src / "original" / "000007.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as info:
        prepare("udiat", src, out)
    message = str(info.value)
    assert f"{src / 'DatasetB.xlsx'}: row 4: unknown Type 'Suspicious' for image 000003" in message
    assert f"{gt}: mask size" in message
    assert f"{src / 'original' / '000006.png'}: no GT mask" in message
    assert f"{src / 'original' / '000007.png'}: cannot read PNG" in message
    assert len(info.value.problems) == 4
    assert not out.exists()


def test_udiat_bad_workbook(bus, tmp_path):
    src = _copy(bus, tmp_path, "udiat")
    (src / "DatasetB.xlsx").write_bytes(b"not a zip")
    with pytest.raises(PrepareError, match="DatasetB.xlsx: cannot read xlsx") as info:
        prepare("udiat", src, tmp_path / "out")
    assert len(info.value.problems) == 1 and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------------------ CLI
def test_cli_phantoms_and_prepare(tmp_path, capsys):
    assert main(["phantoms", "snubh", str(tmp_path / "raw")]) == 0
    assert "wrote snubh phantoms" in capsys.readouterr().out
    assert main(["prepare", "voc", str(tmp_path / "raw"), str(tmp_path / "out"), "--setting=s10"]) == 0
    assert json.loads(capsys.readouterr().out)["s10"]["labeled"] == 10
    assert _json(tmp_path / "out" / "datalist.json")["setting"] == "s10"
    (tmp_path / "raw" / "Annotations" / "000001.xml").write_text("<oops")
    assert main(["prepare", "snubh", str(tmp_path / "raw"), str(tmp_path / "out2")]) == 2
    assert "000001.xml: cannot parse XML" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
