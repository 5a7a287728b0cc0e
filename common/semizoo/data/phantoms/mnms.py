"""M&Ms phantoms in the public ``OpenDataset`` layout (datasets.md §1.3 and §4).

The hearts come from the ACDC cardiac generator (:func:`semizoo.data.phantoms.acdc.render_case`); each vendor then
imposes its own signature on the image (plus per-case jitter): in-plane spacing, gamma, contrast, extra blur, noise
and intensity scale (A 0-1500, B 0-4000, C 0-255, D 0-800), so the domains differ the way the vendors of M&Ms do.
Labels are remapped to M&Ms' order (1 LV, 2 MYO, 3 RV) and kept only at the ED and ES frames.

Layout: ``OpenDataset/{Training/Labeled,Training/Unlabeled,Validation,Testing}/<code>/<code>_sa.nii.gz`` (4-D
``(X, Y, Z, T)``) with ``<code>_sa_gt.nii.gz`` (not for the unlabelled vendor-C cases) and
``OpenDataset/211230_M&Ms_Dataset_information_diagnosis_opendataset.csv`` (unnamed index column, ``External code,
VendorName, Vendor, Centre, ED, ES``; 0-based frames). Vendors A and B are training cases, C and D split between
Validation and Testing, as in the release.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import acdc
from .common import blur, case_rng, random_id, write_nifti_gz

__all__ = ["PRESETS", "VENDORS", "INFO_CSV", "vendor_plan", "check_cases", "write_case", "generate"]

INFO_CSV = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"
# (vendor, centre, labeled count, unlabeled count) per preset; test: A 4, B 2+2, C 3+1 unlabelled, D 4
PRESETS = {
    "test": {
        "plan": [("A", 1, 4, 0), ("B", 2, 2, 0), ("B", 3, 2, 0), ("C", 4, 3, 1), ("D", 5, 4, 0)],
        "fov": 144.0,
        "cases": 16,
    },
    "bench": {
        "plan": [("A", 1, 30, 0), ("B", 2, 24, 0), ("B", 3, 18, 0), ("C", 4, 24, 6), ("D", 5, 24, 0)],
        "fov": 192.0,
        "cases": 126,
    },
}
_FRAMES, _SLICES, _SLICE_SPACING = 8, 6, 10.0
VENDORS = {
    # name, in-plane spacing at the test preset's FOV (mm), gamma, contrast, blur (mm), noise, intensity scale
    "A": {"name": "Siemens", "spacing": 3.0, "gamma": 1.0, "contrast": 1.0, "blur": 0.0, "noise": 0.02, "max": 1500},
    "B": {"name": "Philips", "spacing": 2.7, "gamma": 0.6, "contrast": 0.8, "blur": 1.5, "noise": 0.04, "max": 4000},
    "C": {"name": "GE", "spacing": 3.3, "gamma": 1.6, "contrast": 2.0, "blur": 0.5, "noise": 0.08, "max": 255},
    "D": {"name": "Canon", "spacing": 2.4, "gamma": 2.6, "contrast": 0.8, "blur": 3.0, "noise": 0.03, "max": 800},
}
_ACDC_TO_MNMS = np.array([0, 3, 2, 1], dtype=np.uint8)  # ACDC 1 RV, 2 MYO, 3 LV -> M&Ms 1 LV, 2 MYO, 3 RV


def vendor_plan(preset: str) -> list[tuple[str, int, bool]]:
    """``(vendor, centre, labelled)`` of every case index ``k`` of a preset, vendor by vendor."""
    return [(v, c, k < n_lab) for v, c, n_lab, n_unlab in PRESETS[preset]["plan"] for k in range(n_lab + n_unlab)]


def _signature(rng: np.random.Generator, vendor: str, image: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    sig = VENDORS[vendor]
    x = image.astype(np.float32) / max(float(np.percentile(image, 99.5)), 1.0)
    x = np.clip(x, 0.0, 1.5)
    x = x ** (sig["gamma"] * rng.uniform(0.9, 1.1))
    mean = float(x.mean())
    x = np.clip(mean + (x - mean) * sig["contrast"] * rng.uniform(0.9, 1.1), 0.0, None)
    if sig["blur"] > 0:
        x = blur(x, sig["blur"] * rng.uniform(0.8, 1.2), (*spacing, 1.0), axes=(0, 1))
    x = np.abs(x + sig["noise"] * rng.uniform(0.8, 1.2) * rng.standard_normal(x.shape).astype(np.float32))
    scale = sig["max"] * rng.uniform(0.6, 1.0) / max(float(x.max()), 1e-6)
    return np.round(x * scale).astype(np.int16)


def _folder(k: int, vendor: str, labelled: bool) -> str:
    if not labelled:
        return "Training/Unlabeled"
    if vendor in ("A", "B"):
        return "Training/Labeled"
    return "Validation" if k % 2 == 0 else "Testing"


def write_case(out: Path, k: int, seed: int, preset: str) -> dict:
    """Write case ``k`` of ``preset``; returns its info row."""
    vendor, centre, labelled = vendor_plan(preset)[k]
    rng = case_rng(seed, "mnms", k)
    code = random_id(rng, 6)
    size = int(round(PRESETS[preset]["fov"] / VENDORS[vendor]["spacing"] * (1.0 if preset == "test" else 1.5)))
    pixel = PRESETS[preset]["fov"] / size
    spacing = (pixel, pixel, _SLICE_SPACING)
    case = acdc.render_case(rng, (size, size, _SLICES, _FRAMES), spacing, acdc.GROUPS[k % len(acdc.GROUPS)])
    image = _signature(rng, vendor, case["image"], spacing)
    ed, es = 0, int(case["es"])
    label = np.zeros_like(case["label"])
    for frame in (ed, es):
        label[..., frame] = _ACDC_TO_MNMS[case["label"][..., frame]]
    folder = out / "OpenDataset" / _folder(k, vendor, labelled) / code
    folder.mkdir(parents=True, exist_ok=True)
    write_nifti_gz(folder / f"{code}_sa.nii.gz", image, spacing)
    if labelled:
        write_nifti_gz(folder / f"{code}_sa_gt.nii.gz", label, spacing)
    return {
        "code": code,
        "vendor_name": VENDORS[vendor]["name"],
        "vendor": vendor,
        "centre": centre,
        "ed": ed,
        "es": es,
    }


def check_cases(preset: str, cases: int) -> None:
    """Raise ``ValueError`` unless ``cases`` is the number of cases in the preset's vendor plan."""
    plan = len(vendor_plan(preset))
    if cases != plan:
        raise ValueError(
            f"mnms phantoms follow the vendor plan of preset {preset!r}: cases must be {plan}, got {cases}"
        )


def generate(out: str | os.PathLike, cases: int, seed: int, preset: str) -> dict:
    """Write the preset's ``cases`` patients (its vendor plan) and the info CSV."""
    out = Path(out)
    check_cases(preset, cases)
    rows = [write_case(out, k, seed, preset) for k in range(cases)]
    lines = [",External code,VendorName,Vendor,Centre,ED,ES"]
    lines += [
        f"{i},{r['code']},{r['vendor_name']},{r['vendor']},{r['centre']},{r['ed']},{r['es']}"
        for i, r in enumerate(rows)
    ]
    (out / "OpenDataset" / INFO_CSV).write_text("\n".join(lines) + "\n")
    return {"ids": [r["code"] for r in rows], "vendors": [r["vendor"] for r in rows], "entries": ["OpenDataset"]}
