"""Phantom generators (datasets.md §4): raw layouts, determinism, budgets and the global-threshold difficulty check."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from semizoo.data.phantoms import MANIFEST, generate

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute")

ACDC_INFO_KEYS = {"ED", "ES", "Group", "Height", "NbFrame", "Weight"}
MAX_THRESHOLD_DICE = 0.60


# ---------------------------------------------------------------------------------------------------------- helpers
def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _nii(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def _nrrd(path: Path) -> tuple[dict[str, str], np.ndarray]:
    """Independent minimal NRRD reader (uint8, gzip), x fastest: header dict and an (X, Y, Z) array."""
    raw = path.read_bytes()
    head, data = raw.split(b"\n\n", 1)
    lines = head.decode("ascii").splitlines()
    fields = dict(line.split(": ", 1) for line in lines[1:] if not line.startswith("#"))
    sizes = [int(v) for v in fields["sizes"].split()]
    return fields, np.frombuffer(gzip.decompress(data), np.uint8).reshape(sizes, order="F")


def best_threshold_dice(images: list[np.ndarray], masks: list[np.ndarray], n_quantiles: int = 64) -> float:
    """Best Dice of a single global intensity interval [a, b) over all cases, a and b among ``n_quantiles`` quantiles.

    Intervals include both one-sided thresholds (``a`` = minimum: "below"; ``b`` = maximum: "above") and middle
    bands (a mid-intensity class), so this is at least the best single-threshold Dice in either direction.
    """
    values = np.concatenate([np.asarray(im, np.float64).ravel() for im in images])
    truth = np.concatenate([np.asarray(m, bool).ravel() for m in masks])
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, n_quantiles + 1)))
    bins = np.digitize(values, edges[1:-1])
    n_bins = len(edges) - 1
    total = np.concatenate([[0], np.cumsum(np.bincount(bins, minlength=n_bins))])
    positive = np.concatenate([[0], np.cumsum(np.bincount(bins, weights=truth, minlength=n_bins))])
    lo, hi = np.triu_indices(n_bins + 1, 1)
    dice = 2 * (positive[hi] - positive[lo]) / (truth.sum() + total[hi] - total[lo])
    return float(dice.max())


NORMALISATIONS = {
    "raw": lambda a: a.astype(np.float64),
    "minmax": lambda a: (a - a.min()) / max(float(a.max() - a.min()), 1e-9),
    "zscore": lambda a: (a - a.mean()) / max(float(a.std()), 1e-9),
}


def _three_runs(tmp_path_factory, dataset: str) -> dict:
    """Three cases, the full test preset, and the full preset again (for determinism checks)."""
    root = tmp_path_factory.mktemp(dataset)
    small = generate(dataset, root / "small", cases=3)
    full = generate(dataset, root / "a")
    again = generate(dataset, root / "b")
    return {"root": root, "small": small, "manifest": full, "again": again}


@pytest.fixture(scope="module")
def acdc_runs(tmp_path_factory):
    return _three_runs(tmp_path_factory, "acdc")


@pytest.fixture(scope="module")
def la_runs(tmp_path_factory):
    return _three_runs(tmp_path_factory, "la")


def _acdc_frames(root: Path) -> list[dict]:
    """Every patient's ED and ES frame: image, label and Info.cfg."""
    out = []
    for folder in sorted((root / "database" / "training").iterdir()):
        info = dict(line.split(": ", 1) for line in (folder / "Info.cfg").read_text().splitlines())
        for key in ("ED", "ES"):
            frame = int(info[key])
            stem = folder / f"{folder.name}_frame{frame:02d}"
            out.append(
                {
                    "patient": folder.name,
                    "phase": key,
                    "info": info,
                    "image": _nii(Path(f"{stem}.nii.gz")),
                    "label": _nii(Path(f"{stem}_gt.nii.gz")),
                }
            )
    return out


def _la_cases(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [
        (d.name, _nrrd(d / "lgemri.nrrd")[1], _nrrd(d / "laendo.nrrd")[1])
        for d in sorted(p for p in root.iterdir() if p.is_dir())
    ]


# -------------------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dataset": "mnist"}, r"acdc.*la"),
        ({"dataset": "acdc", "preset": "huge"}, r"test.*bench"),
        ({"dataset": "la", "cases": 0}, r"cases"),
        ({"dataset": "la", "seed": -1}, r"seed"),
        ({"dataset": "la", "size": 64}, r"size"),
        ({"dataset": "acdc", "size": 8}, r"size"),
    ],
    ids=["unknown_dataset", "unknown_preset", "zero_cases", "negative_seed", "size_for_la", "tiny_size"],
)
def test_bad_arguments_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(out=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_refuses_foreign_directory_and_regenerates_own(tmp_path):
    foreign = tmp_path / "user"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not empty"):
        generate("la", foreign, cases=1)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    own = tmp_path / "own"
    first = generate("la", own, cases=3, seed=1)
    second = generate("la", own, cases=2, seed=1)
    assert second["ids"] == first["ids"][:2]
    assert sorted(p.name for p in own.iterdir()) == sorted(second["ids"] + [MANIFEST])
    assert json.loads((own / MANIFEST).read_text()) == second


# ---------------------------------------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("runs", ["acdc_runs", "la_runs"])
def test_test_preset_size_budget(request, runs):
    """The test preset stays small on disk (its time is a benchmark figure, not a test: CI machines vary)."""
    run = request.getfixturevalue(runs)
    size = sum(p.stat().st_size for p in (run["root"] / "a").rglob("*") if p.is_file())
    assert size < 5 * 2**20, f"test preset wrote {size / 2**20:.2f} MiB"


# ------------------------------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("runs", ["acdc_runs", "la_runs"])
def test_byte_identical_across_runs(request, runs):
    run = request.getfixturevalue(runs)
    first, second = _files(run["root"] / "a"), _files(run["root"] / "b")
    assert len(first) > 10
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


@pytest.mark.parametrize("runs", ["acdc_runs", "la_runs"])
def test_case_k_independent_of_case_count(request, runs):
    run = request.getfixturevalue(runs)
    small, full = _files(run["root"] / "small"), _files(run["root"] / "a")
    data = [k for k in small if k != MANIFEST]
    assert run["small"]["ids"] == run["manifest"]["ids"][:3]
    assert len(data) >= 6
    assert all(small[k] == full[k] for k in data)


def test_seed_changes_output(tmp_path):
    a = generate("acdc", tmp_path / "s0", cases=1, seed=0)
    b = generate("acdc", tmp_path / "s1", cases=1, seed=1)
    name = a["ids"][0]
    rel = f"database/training/{name}/{name}_4d.nii.gz"
    assert b["ids"] == a["ids"]
    assert (tmp_path / "s0" / rel).read_bytes() != (tmp_path / "s1" / rel).read_bytes()


def test_manifest_records_arguments(acdc_runs):
    manifest = acdc_runs["manifest"]
    on_disk = json.loads((acdc_runs["root"] / "a" / MANIFEST).read_text())
    assert on_disk == manifest
    assert manifest["arguments"] == {
        "dataset": "acdc",
        "preset": "test",
        "cases": 10,
        "seed": 0,
        "size": None,
        "layout": "raw",
    }
    assert manifest["version"] and manifest["generator"] == "semizoo.data.phantoms"


# ----------------------------------------------------------------------------------------------------------- layout
def test_acdc_raw_layout(acdc_runs):
    root = acdc_runs["root"] / "a" / "database" / "training"
    names = sorted(p.name for p in root.iterdir())
    assert names == [f"patient{i:03d}" for i in range(1, 11)]
    groups = set()
    for name in names:
        folder = root / name
        info = dict(line.split(": ", 1) for line in (folder / "Info.cfg").read_text().splitlines())
        assert set(info) == ACDC_INFO_KEYS
        ed, es, n_frames = int(info["ED"]), int(info["ES"]), int(info["NbFrame"])
        assert ed == 1 and 1 < es <= n_frames == 8
        assert 100 < float(info["Height"]) < 220 and 30 < float(info["Weight"]) < 150
        groups.add(info["Group"])
        expected = {f"{name}_4d.nii.gz", "Info.cfg"}
        expected |= {f"{name}_frame{f:02d}{s}.nii.gz" for f in (ed, es) for s in ("", "_gt")}
        assert {p.name for p in folder.iterdir()} == expected
        img4d = nib.load(str(folder / f"{name}_4d.nii.gz"))
        assert img4d.shape == (48, 48, 6, 8)
        assert np.allclose(img4d.header.get_zooms()[:3], (3.0, 3.0, 10.0))
        data4d = np.asarray(img4d.dataobj)
        for f in (ed, es):
            frame = nib.load(str(folder / f"{name}_frame{f:02d}.nii.gz"))
            gt = nib.load(str(folder / f"{name}_frame{f:02d}_gt.nii.gz"))
            assert frame.shape == gt.shape == (48, 48, 6)
            assert np.allclose(gt.header.get_zooms(), (3.0, 3.0, 10.0))
            assert np.allclose(frame.affine, np.diag([3.0, 3.0, 10.0, 1.0]))
            assert gt.get_data_dtype() == np.uint8
            np.testing.assert_array_equal(np.asarray(frame.dataobj), data4d[..., f - 1])
    assert groups == {"NOR", "MINF", "DCM", "HCM", "RV"}


def test_acdc_size_override(tmp_path):
    manifest = generate("acdc", tmp_path / "big", cases=1, size=64)
    name = manifest["ids"][0]
    img = nib.load(str(tmp_path / "big" / "database" / "training" / name / f"{name}_frame01_gt.nii.gz"))
    assert img.shape == (64, 64, 6)
    assert np.allclose(img.header.get_zooms(), (2.25, 2.25, 10.0))
    assert set(np.unique(np.asarray(img.dataobj))) == {0, 1, 2, 3}


def test_la_raw_layout_read_by_itk(la_runs):
    itk = pytest.importorskip("itk")
    root = la_runs["root"] / "a"
    ids = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(ids) == 12 and sorted(la_runs["manifest"]["ids"]) == ids
    assert all(re.fullmatch(r"[A-Z0-9]{20}", i) for i in ids)
    for case_id in ids:
        assert {p.name for p in (root / case_id).iterdir()} == {"lgemri.nrrd", "laendo.nrrd"}
    for case_id in ids[:2]:
        for fname in ("lgemri.nrrd", "laendo.nrrd"):
            img = itk.imread(str(root / case_id / fname))
            assert tuple(img.GetSpacing()) == (2.5, 2.5, 2.5)
            assert tuple(img.GetLargestPossibleRegion().GetSize()) == (64, 64, 32)
            header, mine = _nrrd(root / case_id / fname)
            assert header["type"] in ("unsigned char", "uint8")
            np.testing.assert_array_equal(itk.array_from_image(img), mine.transpose(2, 1, 0))


# ----------------------------------------------------------------------------------------------------------- labels
def test_acdc_labels_and_phases(acdc_runs):
    frames = _acdc_frames(acdc_runs["root"] / "a")
    for item in frames:
        assert set(np.unique(item["label"])) <= {0, 1, 2, 3}
        assert item["image"].dtype.kind in "iuf" and np.isfinite(item["image"]).all()
    for ed, es in zip(frames[::2], frames[1::2]):
        assert set(np.unique(ed["label"])) == {0, 1, 2, 3}
        assert not np.array_equal(ed["label"], es["label"])
        assert not np.array_equal(ed["image"], es["image"])
        lv_ed, lv_es = (ed["label"] == 3).sum(), (es["label"] == 3).sum()
        assert lv_es < lv_ed, f"{ed['patient']}: LV does not shrink at ES"
        apex = ed["label"][..., -1]
        assert (apex == 1).sum() < 0.1 * (ed["label"][..., 2] == 1).sum(), f"{ed['patient']}: RV at the apex"


def test_la_labels(la_runs):
    for case_id, image, label in _la_cases(la_runs["root"] / "a"):
        assert set(np.unique(label)) == {0, 255}, case_id
        assert image.std() > 5, case_id
        fg = np.argwhere(label > 0)
        assert fg.min() >= 1 and (fg.max(0) <= np.array(label.shape) - 2).all(), f"{case_id}: label touches border"


# ------------------------------------------------------------------------------------------------------- difficulty
def test_threshold_scanner_detects_easy_phantoms():
    """The scanner itself must find an intensity-separable class (else the difficulty check could never fail)."""
    rng = np.random.default_rng(0)
    masks = [rng.random((20, 20, 5)) < 0.2 for _ in range(3)]
    middle = [np.where(m, 2.0, rng.choice([0.0, 4.0], m.shape)) + 0.1 * rng.random(m.shape) for m in masks]
    assert best_threshold_dice(middle, masks) > 0.95
    assert best_threshold_dice([-im for im in middle], masks) > 0.95


@pytest.mark.parametrize("norm", sorted(NORMALISATIONS))
def test_acdc_best_global_threshold_dice(acdc_runs, norm):
    frames = _acdc_frames(acdc_runs["root"] / "a")
    images = [NORMALISATIONS[norm](f["image"]) for f in frames]
    scores = {c: best_threshold_dice(images, [f["label"] == c for f in frames]) for c in (1, 2, 3)}
    assert max(scores.values()) <= MAX_THRESHOLD_DICE, scores


@pytest.mark.parametrize("norm", sorted(NORMALISATIONS))
def test_la_best_global_threshold_dice(la_runs, norm):
    cases = _la_cases(la_runs["root"] / "a")
    score = best_threshold_dice([NORMALISATIONS[norm](im) for _, im, _ in cases], [lb > 0 for _, _, lb in cases])
    assert score <= MAX_THRESHOLD_DICE, score
