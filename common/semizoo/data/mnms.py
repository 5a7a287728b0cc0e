"""M&Ms: ``prepare mnms`` from the public ``OpenDataset`` release and EPL's leave-one-vendor-out splits.

Prepared layout (datasets.md §2): ``data/mnms/<vendor>/<code>.h5`` with ``image`` float32 ``(T, Z, Y, X)`` (raw
intensities), ``label`` uint8 ``(2, Z, Y, X)`` (ED, then ES; 1 LV, 2 MYO, 3 RV) and attributes ``spacing`` (z, y,
x mm), ``vendor``, ``centre``, ``ed``, ``es`` (0-based frames). Datalist entries point at that file and name the
``frame`` (and ``slice``) to read, and ``phase`` (0 ED, 1 ES) for the label; :class:`semizoo.data.LoadCined` reads
only that chunk.

Split per target vendor and labelled fraction k (EPL, epl.md §3): every source folder (vendor A, B centre 2, B
centre 3, C, D; patients sorted by code) of N patients keeps its last ``n_val = ceil(0.1 N)`` patients for
validation; labelled = the ED/ES slices of the first ``n = ceil(N k + 1)`` patients (clamped to ``N - n_val``);
unlabelled = every frame and slice of every non-validation source patient, labelled ones included (EPL's rule);
test = the target vendor's ED/ES volumes. Settings are ``target{A,B,C,D}_{2pct,5pct,10pct,full}``.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

__all__ = [
    "MNMS_CLASSES",
    "VENDORS",
    "FRACTIONS",
    "SETTINGS",
    "DEFAULT_SETTING",
    "labeled_count",
    "mnms_split",
    "read_info",
    "prepare_mnms",
]

MNMS_CLASSES = {"0": "background", "1": "lv", "2": "myocardium", "3": "rv"}
VENDORS = ("A", "B", "C", "D")
FRACTIONS = {"2pct": Fraction(2, 100), "5pct": Fraction(5, 100), "10pct": Fraction(10, 100), "full": None}
SETTINGS = [f"target{v}_{f}" for v in VENDORS for f in FRACTIONS]
DEFAULT_SETTING = "targetD_5pct"
INFO_PATTERN = "*M&Ms_Dataset_*nformation*opendataset*"
CASE_FOLDERS = ("Training/Labeled", "Validation", "Testing")
UNLABELED_FOLDER = "Training/Unlabeled"
REQUIRED_COLUMNS = ("External code", "Vendor", "Centre", "ED", "ES")


def labeled_count(n_patients: int, fraction: Fraction | float) -> int:
    """EPL's labelled patients of a folder of ``n_patients``: ``ceil(N k + 1)``, computed exactly (no float error)."""
    return math.ceil(Fraction(n_patients) * Fraction(str(fraction)) + 1)


def mnms_split(
    cases: list[dict[str, Any]],
    target: str,
    fraction: Fraction | float | None,
    selection: str = "first",
    seed: int = 0,
) -> dict[str, list[str]]:
    """Patient codes per list for one target vendor and labelled fraction (module docstring).

    Args:
        cases: one dict per patient with ``code``, ``vendor``, ``centre`` and ``labeled`` (has ground truth).
        target: the held-out vendor (test set).
        fraction: k (``None``: every non-validation source patient is labelled).
        selection: ``"first"`` (official: the first n by code) or ``"random"`` (seeded draw).
        seed: seed of the random selection.

    Returns:
        ``{"labeled", "unlabeled", "validation", "test"}``: lists of codes; ``unlabeled`` includes ``labeled``.

    Raises:
        DataError: unknown target or selection, or a source folder without labelled patients.
    """
    if target not in VENDORS:
        raise DataError("mnms", f"target vendor {target!r} is not one of {list(VENDORS)}")
    if selection not in ("first", "random"):
        raise DataError("mnms", f"labeled selection {selection!r} is not 'first' or 'random'")
    lists: dict[str, list[str]] = {"labeled": [], "unlabeled": [], "validation": [], "test": []}
    folders: dict[tuple[str, int], list[dict]] = {}
    for case in sorted(cases, key=lambda c: c["code"]):
        if case["vendor"] == target:
            if case["labeled"]:
                lists["test"].append(case["code"])
        else:
            folders.setdefault((case["vendor"], int(case["centre"])), []).append(case)
    for (vendor, centre), members in sorted(folders.items()):
        annotated = [c["code"] for c in members if c["labeled"]]
        extra = [c["code"] for c in members if not c["labeled"]]
        n_val = math.ceil(0.1 * len(annotated)) if len(annotated) > 1 else 0
        train = annotated[: len(annotated) - n_val]
        if not train:
            raise DataError("mnms", f"source folder {vendor} centre {centre} has no annotated training patient")
        n = len(train) if fraction is None else min(labeled_count(len(annotated), fraction), len(train))
        if selection == "random":
            order = np.random.default_rng([seed, ord(vendor), centre]).permutation(len(train))
            chosen = sorted(train[i] for i in order[:n])
        else:
            chosen = train[:n]
        lists["labeled"] += chosen
        lists["unlabeled"] += train + extra
        lists["validation"] += annotated[len(annotated) - n_val :]
    return {name: sorted(codes) for name, codes in lists.items()}


# ---------------------------------------------------------------- reading the release


def read_info(src: Path) -> dict[str, dict[str, Any]]:
    """The info sheet as ``{code: {vendor, centre, ed, es}}``; :class:`DataError` naming the file and problem."""
    sheets = sorted(p for p in src.rglob(INFO_PATTERN) if p.is_file())
    csvs = [p for p in sheets if p.suffix.lower() == ".csv"]
    if not csvs:
        found = f" (found {', '.join(p.name for p in sheets)}: save it as CSV)" if sheets else ""
        raise DataError(src, f"no M&Ms information CSV matching {INFO_PATTERN}.csv{found}")
    path = csvs[0]
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(path, f"cannot read the information CSV ({error})") from error
    columns = set(rows[0]) if rows else set()
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(path, f"missing columns {missing} (has {sorted(c for c in columns if c)})")
    info: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(rows, start=2):
        short = [c for c in REQUIRED_COLUMNS if row.get(c) is None]
        if short:
            raise DataError(path, f"line {line}: no value for {short} (the row has too few fields)")
        code, vendor = row["External code"].strip(), row["Vendor"].strip()
        if vendor not in VENDORS:
            raise DataError(path, f"line {line}: unknown vendor {vendor!r} for {code}")
        try:
            info[code] = {"vendor": vendor, "centre": int(row["Centre"]), "ed": int(row["ED"]), "es": int(row["ES"])}
        except ValueError as error:
            raise DataError(path, f"line {line}: non-integer Centre/ED/ES for {code} ({error})") from error
    return info


def _find_cases(
    src: Path, extra_unlabeled: bool, problems: list[str] | None = None
) -> dict[str, tuple[Path, Path | None]]:
    """``{code: (image, gt or None)}`` over the release folders (``Training/Unlabeled`` only when asked).

    Only ``Training/Unlabeled`` cases lack ground truth in the release: a missing ``_sa_gt.nii.gz`` elsewhere is
    appended to ``problems`` (when given) instead of silently making the case unlabelled.
    """
    roots = [src / "OpenDataset"] if (src / "OpenDataset").is_dir() else [src]
    folders = CASE_FOLDERS + ((UNLABELED_FOLDER,) if extra_unlabeled else ())
    found: dict[str, tuple[Path, Path | None]] = {}
    for root in roots:
        for folder in folders:
            for image in sorted((root / folder).glob("*/*_sa.nii.gz")):
                code = image.name[: -len("_sa.nii.gz")]
                gt = image.with_name(f"{code}_sa_gt.nii.gz")
                if not gt.is_file() and folder != UNLABELED_FOLDER and problems is not None:
                    problems.append(
                        f"{image}: no ground truth ({gt.name} is missing; only {UNLABELED_FOLDER} has none)"
                    )
                found[code] = (image, gt if gt.is_file() else None)
    return found


def _load_case(code: str, image_path: Path, gt_path: Path | None, row: dict[str, Any], problems: list[str]):
    import nibabel as nib

    try:
        nii = nib.load(str(image_path))
        image = np.asarray(nii.dataobj, dtype=np.float32)
        spacing = tuple(float(s) for s in nii.header.get_zooms()[:3])
    except Exception as error:  # nibabel raises several types for corrupt files
        problems.append(f"{image_path}: cannot read NIfTI ({error})")
        return None
    if image.ndim != 4:
        problems.append(f"{image_path}: expected a 4-D (X, Y, Z, T) image, got shape {image.shape}")
        return None
    n_frames = image.shape[3]
    for phase in ("ed", "es"):
        if not 0 <= row[phase] < n_frames:
            problems.append(f"{image_path}: {phase.upper()} frame {row[phase]} >= T = {n_frames}")
            return None
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
        problems.append(f"{image_path}: {bad} NaN/Inf voxels in image")
        return None
    if any(s <= 0 for s in spacing):
        problems.append(f"{image_path}: spacing {spacing} must be positive")
        return None
    label = None
    if gt_path is not None:
        try:
            gt = np.asarray(nib.load(str(gt_path)).dataobj)
        except Exception as error:
            problems.append(f"{gt_path}: cannot read NIfTI ({error})")
            return None
        if gt.shape != image.shape:
            problems.append(f"{gt_path}: shape {gt.shape} != image {image.shape}")
            return None
        if not np.all(np.mod(gt, 1) == 0):
            problems.append(f"{gt_path}: non-integer label values")
            return None
        values, counts = np.unique(gt.astype(np.int64), return_counts=True)
        outside = {int(v): int(c) for v, c in zip(values, counts) if not 0 <= v < len(MNMS_CLASSES)}
        if outside:
            listed = ", ".join(f"{v}: {c} voxels" for v, c in outside.items())
            problems.append(f"{gt_path}: label values {{{listed}}} outside {{0,1,2,3}}")
            return None
        label = np.stack([gt[..., row["ed"]], gt[..., row["es"]]]).astype(np.uint8).transpose(0, 3, 2, 1)
    # (X, Y, Z, T) -> (T, Z, Y, X); spacing (z, y, x)
    return {
        "image": np.ascontiguousarray(image.transpose(3, 2, 1, 0)),
        "label": None if label is None else np.ascontiguousarray(label),
        "spacing": (spacing[2], spacing[1], spacing[0]),
    }


def _write_case(path: Path, case: dict[str, Any], row: dict[str, Any]) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", track_order=False) as handle:
        handle.create_dataset("image", data=case["image"], compression="gzip", chunks=(1, 1, *case["image"].shape[2:]))
        if case["label"] is not None:
            handle.create_dataset(
                "label", data=case["label"], compression="gzip", chunks=(1, 1, *case["label"].shape[2:])
            )
        handle.attrs["spacing"] = np.asarray(case["spacing"], dtype=np.float64)
        for key in ("vendor", "centre", "ed", "es"):
            handle.attrs[key] = row[key]


def _entries(code: str, row: dict[str, Any], shape: tuple[int, ...], spacing: tuple[float, ...], labeled: bool):
    """(ED/ES slice entries, every-frame slice entries, ED/ES volume entries) of one patient."""
    rel = f"data/mnms/{row['vendor']}/{code}.h5"
    base = {"patient": code, "vendor": row["vendor"], "centre": row["centre"], "domain": row["vendor"]}
    n_frames, n_slices = shape[0], shape[1]
    in_plane = [round(float(s), 6) for s in spacing[1:]]
    phase_slices, volumes = [], []
    if labeled:
        for phase, frame in enumerate((row["ed"], row["es"])):
            for z in range(n_slices):
                phase_slices.append(
                    {
                        "image": rel,
                        "label": rel,
                        **base,
                        "frame": frame,
                        "slice": z,
                        "phase": phase,
                        "spacing": in_plane,
                    }
                )
            volumes.append(
                {
                    "image": rel,
                    "label": rel,
                    **base,
                    "frame": frame,
                    "phase": phase,
                    "spacing": [round(float(s), 6) for s in spacing],
                }
            )
    every = [
        {"image": rel, **base, "frame": t, "slice": z, "spacing": in_plane}
        for t in range(n_frames)
        for z in range(n_slices)
    ]
    return phase_slices, every, volumes


def prepare_mnms(
    src: str | os.PathLike,
    out: str | os.PathLike,
    setting: str | None = None,
    extra_unlabeled: bool = False,
    labeled_selection: str = "first",
    split_seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``prepare mnms``: check every case, write the h5 files and one datalist per setting; returns the report.

    Raises:
        DataError: bad arguments or no info sheet; PrepareError: every problem found in the cases.
    """
    from .prepare import VERSION, PrepareError, _check_out, _commit, _discard, _dump, _missing_folders

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(src, "source folder does not exist")
    _check_out(out, overwrite)
    default = setting or DEFAULT_SETTING
    if default not in SETTINGS:
        raise DataError(src, f"setting {default!r} is not one of {SETTINGS}")
    info = read_info(src)
    problems: list[str] = []
    found = _find_cases(src, extra_unlabeled, problems)
    problems += [f"{found[c][0]}: patient {c} is not in the information sheet" for c in sorted(set(found) - set(info))]
    if not found:
        problems.append(f"{src}: no */<code>_sa.nii.gz cases under {', '.join(CASE_FOLDERS)}")
    phantom = (src / "semizoo_phantom.json").is_file()
    tmp, created = out / f".semizoo-tmp-{os.getpid()}", _missing_folders(out)
    cases, entries = [], {}
    try:
        for code in sorted(set(found) & set(info)):
            image_path, gt_path = found[code]
            case = _load_case(code, image_path, gt_path, info[code], problems)
            if case is None:
                continue
            if not problems:
                _write_case(tmp / "data" / "mnms" / info[code]["vendor"] / f"{code}.h5", case, info[code])
            labeled = case["label"] is not None
            cases.append(
                {"code": code, "vendor": info[code]["vendor"], "centre": info[code]["centre"], "labeled": labeled}
            )
            entries[code] = _entries(code, info[code], case["image"].shape, case["spacing"], labeled)
        if problems:
            raise PrepareError(problems)
        lists = {}
        for name in SETTINGS:
            target, fraction = name[len("target")], FRACTIONS[name.split("_")[1]]
            split = mnms_split(cases, target, fraction, labeled_selection, split_seed)
            lists[name] = {
                "dataset": "mnms",
                "setting": name,
                "phantom": phantom,
                "classes": MNMS_CLASSES,
                "target": target,
                "labeled_patients": split["labeled"],
                "labeled": [e for code in split["labeled"] for e in entries[code][0]],
                "unlabeled": [e for code in split["unlabeled"] for e in entries[code][1]],
                "validation": [e for code in split["validation"] for e in entries[code][2]],
                "test": [e for code in split["test"] for e in entries[code][2]],
            }
        report = {
            "dataset": "mnms",
            "layout": "raw",
            "split": "epl",
            "labeled_selection": labeled_selection,
            "split_seed": split_seed,
            "default_setting": default,
            "phantom": phantom,
            "semizoo_prepare_version": VERSION,
            "source": str(src.resolve()),
            "patients": {v: sum(c["vendor"] == v for c in cases) for v in VENDORS},
            "counts": {
                n: {k: len(c[k]) for k in ("labeled", "unlabeled", "validation", "test")} for n, c in lists.items()
            },
            "datalist_sha256": {n: hashlib.sha256(_dump(c).encode()).hexdigest() for n, c in lists.items()},
            "warnings": [],
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
