"""``SegmentationReport``: the evaluation handler that writes ``metrics.json``, ``metrics.csv`` and figures.

Attached to a MONAI ``SupervisedEvaluator`` (evaluate.json's ``validate#handlers``), it scores every case with
:func:`semizoo.metrics.multiclass_metrics` in voxel units and in mm (from the datalist's ``spacing`` or the label's
``pixdim``), then writes under ``output_dir/<checkpoint stem>/`` (evaluation.md, "Protocol"):

- ``metrics.json``: the convention, per unit and metric the mean over cases with std and bootstrap 95 % CI
  (:func:`semizoo.metrics.bootstrap_ci`), the same per class, the voxel confusion matrix pooled over cases (with
  per-class recall, precision and predicted/reference volume), and every case;
- ``metrics.csv``: one row per case, unit and class;
- ``overlays.png`` (image, ground truth and prediction of the best, median and worst case by mean Dice) and
  ``boxplot_dice.png`` (per-class Dice over cases).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from monai.utils import optional_import

from ..metrics.bootstrap import bootstrap_ci
from ..metrics.confusion import confusion_counts, confusion_summary
from ..metrics.segmentation import METRIC_NAMES, multiclass_metrics

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["SegmentationReport", "summarise", "case_name", "overlay_slices", "draw_overlays"]

logger = logging.getLogger(__name__)
UNITS = ("voxel", "mm")


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _labels(value: Any) -> np.ndarray:
    """``(C, *spatial)`` one-hot/probabilities -> argmax; ``(1, *spatial)`` -> squeeze."""
    array = _array(value)
    return (array.argmax(0) if array.shape[0] > 1 else array[0]).astype(np.int64)


def _stats(values: Sequence[float], n_resamples: int, seed: int) -> dict[str, float | int]:
    array = np.asarray(values, dtype=float)
    defined = array[~np.isnan(array)]
    result: dict[str, float | int] = {"n": int(defined.size), "n_undefined": int(array.size - defined.size)}
    if defined.size == 0:
        return {**result, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean, low, high = bootstrap_ci(defined, n_resamples=n_resamples, seed=seed)
    return {**result, "mean": mean, "std": float(defined.std()), "ci_low": low, "ci_high": high}


def summarise(cases: list[dict], class_names: Mapping[int, str], n_resamples: int = 1000, seed: int = 0) -> dict:
    """Mean/std/CI per unit and metric over cases (class mean per case), and per class."""
    summary: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    for unit in UNITS:
        if not all(unit in case for case in cases):
            continue
        summary[unit] = {m: _stats([c[unit]["mean"][m] for c in cases], n_resamples, seed) for m in METRIC_NAMES}
        for label, name in class_names.items():
            values = {m: [c[unit]["per_class"][str(label)][m] for c in cases] for m in METRIC_NAMES}
            per_class.setdefault(name, {})[unit] = {m: _stats(v, n_resamples, seed) for m, v in values.items()}
    return {"summary": summary, "per_class": per_class}


class SegmentationReport:
    """Collect per-case metrics during an evaluation run and write the report when it completes.

    Args:
        output_dir: folder of reports; files go to ``output_dir/<checkpoint stem>``.
        class_names: ``{"1": "rv", ...}`` (``channel_def`` without background) or a class count incl. background.
        checkpoint: path of the evaluated checkpoint (its stem names the folder; recorded in the report).
        empty: empty-case rule of :func:`semizoo.metrics.binary_metrics` (``"paper"`` for SS-Net/ACTION tables).
        slice_axis: spatial axis of the overlay slices (ACDC volumes are (Z, Y, X): 0; LA (X, Y, Z): 2).
        settings: extra facts recorded in the report (setting, seed, iterations, post-processing).
        pred_key, label_key, image_key, spacing_key: keys of the decollated evaluator output and batch.
        n_resamples, seed: bootstrap settings.
        figures: write the PNGs.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Mapping[str, str] | int,
        checkpoint: str | os.PathLike | None = None,
        empty: str = "explicit",
        slice_axis: int = 0,
        settings: Mapping[str, Any] | None = None,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        spacing_key: str = "spacing",
        n_resamples: int = 1000,
        seed: int = 0,
        figures: bool = True,
    ) -> None:
        if isinstance(class_names, int):
            class_names = {str(c): f"class_{c}" for c in range(1, class_names)}
        self.class_names = {int(k): str(v) for k, v in class_names.items() if str(v) != "background"}
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        stem = Path(self.checkpoint).stem if self.checkpoint else "report"
        self.output_dir = Path(output_dir) / stem
        self.empty, self.slice_axis, self.settings = empty, int(slice_axis), dict(settings or {})
        self.keys = (pred_key, label_key, image_key, spacing_key)
        self.n_resamples, self.seed, self.figures = n_resamples, seed, figures
        self.num_labels = max(self.class_names, default=0) + 1
        self.cases: list[dict] = []
        self.confusion = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)
        self._overlays: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.cases, self._overlays = [], []
        self.confusion = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)

    def collect(self, engine: Engine) -> None:
        pred_key, label_key, image_key, spacing_key = self.keys
        outputs, batch = engine.state.output, engine.state.batch
        for index, output in enumerate(outputs):
            item = batch[index] if isinstance(batch, list) else {}
            pred, ref = _labels(output[pred_key]), _labels(output.get(label_key, item.get(label_key)))
            spacing = self._spacing(item.get(spacing_key), output.get(label_key, item.get(label_key)), pred.ndim)
            name = self._name(output.get(label_key, item.get(label_key)), len(self.cases))
            self.add_case(name, pred, ref, spacing, _array(output.get(image_key, item.get(image_key)))[0])

    def add_case(self, name: str, pred: np.ndarray, ref: np.ndarray, spacing, image: np.ndarray | None = None) -> dict:
        """Score one case (label maps) and keep its overlay slice."""
        case: dict[str, Any] = {"case": name, "spacing": None if spacing is None else [float(s) for s in spacing]}
        for unit, unit_spacing in (("voxel", None), ("mm", spacing)):
            if unit == "mm" and spacing is None:
                continue
            scores = multiclass_metrics(pred, ref, list(self.class_names), spacing=unit_spacing, empty=self.empty)
            case[unit] = {
                "per_class": {str(c): scores["per_class"][c] for c in self.class_names},
                "mean": scores["mean"],
            }
        self._grow_confusion(int(max(pred.max(initial=0), ref.max(initial=0))) + 1)
        self.confusion += confusion_counts(pred, ref, len(self.confusion))
        self.cases.append(case)
        if image is not None and self.figures:
            self._overlays.append(self._slices(image, ref, pred))
        return case

    def _grow_confusion(self, size: int) -> None:
        """Widen the confusion matrix for labels beyond the named classes (e.g. a background stored last)."""
        if size > len(self.confusion):
            grown = np.zeros((size, size), dtype=np.int64)
            grown[: len(self.confusion), : len(self.confusion)] = self.confusion
            self.confusion = grown

    def _spacing(self, entry_spacing: Any, label: Any, ndim: int) -> tuple[float, ...] | None:
        if entry_spacing is not None:
            values = [float(v) for v in np.asarray(_array(entry_spacing), dtype=float).ravel()]
            return tuple(values[-ndim:]) if len(values) >= ndim else None
        pixdim = getattr(label, "pixdim", None)
        if pixdim is None:
            return None
        return tuple(float(v) for v in _array(pixdim).ravel()[:ndim])

    @staticmethod
    def _name(label: Any, index: int) -> str:
        return case_name(label, index)

    def _slices(self, image: np.ndarray, ref: np.ndarray, pred: np.ndarray):
        return overlay_slices(image, ref, pred, self.slice_axis)

    def write(self, engine: Engine | None = None) -> dict:
        """Write metrics.json, metrics.csv and the figures; returns the report dict."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        report = {
            "checkpoint": self.checkpoint,
            "convention": {
                "metrics": "medpy: dice, jaccard, hd95 (pooled 95th percentile), asd (pred to ref), assd",
                "units": "voxel: distances in voxels (the papers' unit); mm: scaled by the voxel spacing",
                "empty": self.empty,
                "summary": "mean over cases of the per-case class mean; std over cases; bootstrap 95% CI "
                f"(percentile, {self.n_resamples} resamples, seed {self.seed}); undefined (nan) cases counted",
                "classes": {str(k): v for k, v in self.class_names.items()},
            },
            "settings": self.settings,
            **summarise(self.cases, self.class_names, self.n_resamples, self.seed),
            "confusion": confusion_summary(self.confusion, self.class_names),
            "cases": self.cases,
        }
        (self.output_dir / "metrics.json").write_text(json.dumps(report, indent=4) + "\n")
        self._write_csv()
        if self.figures and self.cases:
            self._write_figures()
        dice = report["summary"].get("voxel", {}).get("dice", {}).get("mean", math.nan)
        logger.info("evaluation of %d cases written to %s (mean Dice %.4f)", len(self.cases), self.output_dir, dice)
        return report

    def _write_csv(self) -> None:
        with open(self.output_dir / "metrics.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case", "unit", "class", *METRIC_NAMES])
            for case in self.cases:
                for unit in UNITS:
                    if unit not in case:
                        continue
                    for label, name in self.class_names.items():
                        values = case[unit]["per_class"][str(label)]
                        writer.writerow([case["case"], unit, name, *(f"{values[m]:.6g}" for m in METRIC_NAMES)])
                    writer.writerow(
                        [case["case"], unit, "mean", *(f"{case[unit]['mean'][m]:.6g}" for m in METRIC_NAMES)]
                    )

    def _write_figures(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if self._overlays:
            self._overlay_figure(plt)
        fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(self.class_names), 3.5))
        data = [[c["voxel"]["per_class"][str(k)]["dice"] for c in self.cases] for k in self.class_names]
        ax.boxplot(data)
        ax.set_xticks(range(1, len(data) + 1), list(self.class_names.values()))
        ax.set_ylabel("Dice")
        ax.set_ylim(0, 1)
        fig.tight_layout()
        fig.savefig(self.output_dir / "boxplot_dice.png", dpi=100)
        plt.close(fig)

    def _overlay_figure(self, plt) -> None:
        """Image, ground truth and prediction of the best, median and worst case by mean Dice."""
        order = np.argsort([c["voxel"]["mean"]["dice"] for c in self.cases])
        rows = []
        for tag, index in (("best", order[-1]), ("median", order[len(order) // 2]), ("worst", order[0])):
            case = self.cases[index]
            titles = (f"{tag}: {case['case']}", f"prediction (Dice {case['voxel']['mean']['dice']:.3f})")
            rows.append((titles, *self._overlays[index]))
        draw_overlays(rows, self.output_dir / "overlays.png", max(self.class_names) + 1)


def case_name(label: Any, index: int) -> str:
    """The case's ID from the label's metadata (``case_id``, else the file stem), else ``case_<index>``."""
    meta = getattr(label, "meta", {}) or {}
    if meta.get("case_id"):  # readers of several cases per file name each one (semizoo.data.LoadCined)
        return str(meta["case_id"])
    filename = meta.get("filename_or_obj")
    return Path(str(filename)).stem if filename else f"case_{index:03d}"


def overlay_slices(
    image: np.ndarray, ref: np.ndarray, pred: np.ndarray, axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2D images as they are; of a volume, the slice along ``axis`` with the largest reference foreground."""
    if ref.ndim == 2:
        return image, ref, pred
    area = (ref > 0).sum(axis=tuple(a for a in range(ref.ndim) if a != axis))
    k = int(area.argmax())
    return np.take(image, k, axis=axis), np.take(ref, k, axis=axis), np.take(pred, k, axis=axis)


def draw_overlays(
    rows: Sequence[tuple[tuple[str, str], np.ndarray, np.ndarray, np.ndarray]], path: str | os.PathLike, n_labels: int
) -> None:
    """One row per case: the image, the ground truth over it and the prediction over it.

    Args:
        rows: ``((case title, prediction title), image, ref, pred)`` with 2D arrays.
        path: the PNG written.
        n_labels: labels including background (sets the colour scale).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    colour_max = max(n_labels, 10) - 1
    for row, ((case_title, pred_title), image, ref, pred) in enumerate(rows):
        for col, (mask, title) in enumerate(((None, case_title), (ref, "ground truth"), (pred, pred_title))):
            ax = axes[row][col]
            ax.imshow(image.T, cmap="gray", origin="lower")
            if mask is not None:
                overlay = np.ma.masked_equal(mask.T, 0)
                ax.imshow(overlay, cmap="tab10", vmin=0, vmax=colour_max, alpha=0.5, origin="lower")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
