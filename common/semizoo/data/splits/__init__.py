"""Frozen split lists (facts from the official repositories, with sha256 of the original files) and split rules.

``la.json``: yulequan/UA-MT ``data/{train,test}.list`` (identical in ycwu1997/SS-Net ``data/LA``);
``acdc.json``: HiLab-git/SSL4MIS ``data/ACDC/{train_slices,train,val,test}.list`` (identical in SS-Net).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["SETTINGS", "frozen", "frozen_split", "scaled_split"]

HERE = Path(__file__).parent
# setting -> labelled patients in the standard split (None = every training patient)
SETTINGS: dict[str, dict[str, int | None]] = {
    "acdc": {"lab3": 3, "lab7": 7, "full": None},
    "la": {"lab4": 4, "lab8": 8, "full": None},
}
STANDARD_SIZES = {"acdc": {"train": 70, "validation": 10, "test": 20}, "la": {"train": 72, "validation": 8, "test": 20}}


@lru_cache(maxsize=None)
def frozen(dataset: str) -> dict[str, Any]:
    """The frozen split file of ``dataset``."""
    return json.loads((HERE / f"{dataset}.json").read_text())


def _patients(names: list[str]) -> list[str]:
    ordered: list[str] = []
    for name in names:
        patient = name.split("_")[0]
        if patient not in ordered:
            ordered.append(patient)
    return ordered


def _standard_lists(dataset: str) -> dict[str, list[str]]:
    data = frozen(dataset)
    if dataset == "acdc":
        return {
            "train": list(data["train_patients"]),
            "validation": _patients(data["validation"]),
            "test": _patients(data["test"]),
        }
    train = list(data["train"])
    return {"train": train[:-8], "validation": train[-8:], "test": list(data["test"])}


def _with_settings(dataset: str, lists: dict[str, list[str]], scale: float) -> dict[str, Any]:
    labeled = {}
    for setting, count in SETTINGS[dataset].items():
        n = len(lists["train"]) if count is None else max(1, min(len(lists["train"]), round(count * scale)))
        labeled[setting] = lists["train"][:n]
    return {**lists, "labeled": labeled}


def frozen_split(dataset: str, available: list[str]) -> dict[str, Any]:
    """The papers' split (datasets.md §2); :class:`DataError` naming frozen IDs missing from ``available``."""
    lists = _standard_lists(dataset)
    wanted = [p for ids in lists.values() for p in ids]
    missing = sorted(set(wanted) - set(available))
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise DataError(
            HERE / f"{dataset}.json", f"standard split needs {len(missing)} IDs missing from the source: {shown}"
        )
    return _with_settings(dataset, lists, 1.0)


def scaled_split(dataset: str, available: list[str], seed: int = 0) -> dict[str, Any]:
    """A seeded split of ``available`` keeping the standard proportions, at least one patient per list."""
    sizes = STANDARD_SIZES[dataset]
    total = sum(sizes.values())
    n = len(available)
    if n < 3:
        raise DataError(HERE, f"{dataset} needs at least 3 patients for a split, got {n}")
    order = [available[i] for i in np.random.default_rng(seed).permutation(n)]
    n_test = max(1, round(n * sizes["test"] / total))
    n_val = max(1, round(n * sizes["validation"] / total))
    n_val = min(n_val, n - n_test - 1)
    lists = {"test": sorted(order[:n_test]), "validation": sorted(order[n_test : n_test + n_val])}
    lists["train"] = order[n_test + n_val :]
    return _with_settings(dataset, lists, len(lists["train"]) / sizes["train"])
