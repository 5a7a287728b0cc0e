"""``VendorDiceReport``: EPL's test protocol (epl.md §7) as an evaluator handler writing ``vendor_dice.json``.

Every evaluated volume (one patient's ED or ES frame) adds its slices' :func:`semizoo.metrics.epl_slice_dice` to
its patient; a patient scores the mean of its slices, a vendor the mean ± sample std of its patients (×100). The
file goes next to ``SegmentationReport``'s, under ``output_dir/<checkpoint stem>/``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from monai.utils import optional_import

from ..metrics.epl import epl_slice_dice, vendor_summary

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["VendorDiceReport"]

logger = logging.getLogger(__name__)


def _labels(value: Any) -> np.ndarray:
    array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    return array[0] if array.ndim >= 3 and array.shape[0] == 1 else array


def _field(item: Mapping[str, Any], key: str, default: str) -> str:
    value = item.get(key, default)
    if isinstance(value, (list, tuple)):
        value = value[0]
    return str(value.item() if hasattr(value, "item") else value)


class VendorDiceReport:
    """Collect EPL slice Dices per patient and vendor and write ``vendor_dice.json`` when the run completes.

    Args:
        output_dir: folder of reports (files go to ``output_dir/<checkpoint stem>``).
        checkpoint: the evaluated checkpoint (names the folder).
        settings: facts recorded in the file (setting, target vendor, seed).
        pred_key, label_key: label maps in the decollated evaluator output.
        group_key: the batch field that groups patients (``vendor``; BUSI: ``domain``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        settings: Mapping[str, Any] | None = None,
        pred_key: str = "pred",
        label_key: str = "label",
        group_key: str = "vendor",
    ) -> None:
        stem = Path(os.fspath(checkpoint)).stem if checkpoint else "report"
        self.output_dir = Path(output_dir) / stem
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.settings, self.keys, self.group_key = dict(settings or {}), (pred_key, label_key), group_key
        self.slices: dict[str, list[float]] = {}
        self.vendor_of: dict[str, str] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.slices, self.vendor_of = {}, {}

    def collect(self, engine: Engine) -> None:
        pred_key, label_key = self.keys
        batch = engine.state.batch
        for index, output in enumerate(engine.state.output):
            item = batch[index] if isinstance(batch, list) else {}
            patient = _field(item, "patient", f"case_{len(self.slices):03d}")
            group = _field(item, self.group_key, "?")
            self.add(patient, group, _labels(output[pred_key]), _labels(output[label_key]))

    def add(self, patient: str, vendor: str, pred: np.ndarray, ref: np.ndarray) -> None:
        """Add one volume's slices to ``patient`` (of ``vendor``)."""
        self.slices.setdefault(patient, []).extend(epl_slice_dice(pred, ref).tolist())
        self.vendor_of[patient] = vendor

    def write(self, engine: Engine | None = None) -> dict:
        """Write ``vendor_dice.json``; returns its content."""
        patients = {p: float(np.mean(s)) for p, s in sorted(self.slices.items())}
        by_vendor: dict[str, list[float]] = {}
        for patient, score in patients.items():
            by_vendor.setdefault(self.vendor_of[patient], []).append(score)
        report = {
            "checkpoint": self.checkpoint,
            "protocol": "EPL (epl.md §7): per slice (BUSI: per image), Dice of the foreground classes' one-hot masks "
            "flattened together (M&Ms: LV/MYO/RV; BUSI: lesion), smooth 1e-4 (empty/empty = 1); patient = mean of its "
            "slices (M&Ms: ED and ES); group (vendor) = mean x100 and sample std over patients",
            "settings": self.settings,
            "vendors": vendor_summary(by_vendor),
            "patients": {
                p: {"vendor": self.vendor_of[p], "dice": s, "n_slices": len(self.slices[p])}
                for p, s in patients.items()
            },
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "vendor_dice.json").write_text(json.dumps(report, indent=4) + "\n")
        for vendor, row in report["vendors"].items():
            logger.info("EPL Dice vendor %s: %.2f ± %.2f (%d patients)", vendor, row["mean"], row["std"], row["n"])
        return report
