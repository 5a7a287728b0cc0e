"""Prepared phantom datasets shared by the bundle harness (session-scoped, built once per test run)."""

from __future__ import annotations

from pathlib import Path

from semizoo.data.phantoms import generate
from semizoo.data.prepare import prepare

# bundle name prefix -> dataset
DATASET_OF_BUNDLE = {"_acdc_": "acdc", "_la_": "la", "_mnms_": "mnms", "_busi_": "busi", "_bus_": "busi"}


def dataset_of(bundle: str) -> str:
    for marker, dataset in DATASET_OF_BUNDLE.items():
        if marker in f"_{bundle}_":
            return dataset
    raise KeyError(f"no phantom dataset known for bundle {bundle!r}; extend DATASET_OF_BUNDLE")


def prepared_phantoms(root: Path, dataset: str) -> Path:
    """Generate the ``test`` preset phantoms of ``dataset`` and prepare them under ``root``."""
    raw, out = root / f"{dataset}_raw", root / f"{dataset}_prepared"
    if not (out / "prepare_report.json").is_file():
        generate(dataset, raw, seed=0, preset="test")
        prepare(dataset, raw, out)
    return out
