"""Detection evaluation for :class:`semizoo.engines.DetectionEvaluator` (wssdl.md §7, evaluation.md).

- :class:`CorLocMetric`: ignite metric (the key validation metric: ``val_corloc``, mode ``"any"``).
- :class:`DetectionReport`: writes ``output_dir/<checkpoint stem>/metrics.json`` with CorLoc of the test lesion
  images in both modes (each with :func:`semizoo.metrics.bootstrap_ci` over its units) and per class, false
  positives per normal image (score ≥ 0.5), image-level benign/malignant accuracy (class of the top detection,
  bootstrap CI) and ROC AUC (max malignant score); ``detections.json`` (every image's detections, for paired
  bootstraps between models) and ``detections.png`` (ground truth and detections ≥ 0.5 over a few test images).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
from monai.utils import optional_import

from ..metrics.bootstrap import bootstrap_ci
from ..metrics.detection import corloc, false_positives_per_image, image_classification

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
    from ignite.metrics import Metric
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")
    Metric, _ = optional_import("ignite.metrics", name="Metric", as_type="base")

__all__ = ["CorLocMetric", "DetectionReport", "DetectionWriter", "draw_detections"]

logger = logging.getLogger(__name__)


def _outputs(output: Any) -> list[Mapping[str, Any]]:
    return list(output) if isinstance(output, (list, tuple)) else [output]


class CorLocMetric(Metric):
    """CorLoc over an evaluation run (:func:`semizoo.metrics.corloc`); images without ground truth are skipped.

    Args:
        mode, iou_threshold, score_threshold: as :func:`semizoo.metrics.corloc`.
        output_transform: engine output -> list of ``{"pred", "label"}`` dicts (identity by default).
    """

    def __init__(
        self,
        mode: str = "any",
        iou_threshold: float = 0.5,
        score_threshold: float = 0.5,
        output_transform: Callable = lambda output: output,
    ) -> None:
        self.mode, self.iou_threshold, self.score_threshold = mode, iou_threshold, score_threshold
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self._detections: list[Mapping[str, Any]] = []
        self._truths: list[Mapping[str, Any]] = []

    def update(self, output: Any) -> None:
        for item in _outputs(output):
            self._detections.append(item["pred"])
            self._truths.append(item["label"])

    def compute(self) -> float:
        value = corloc(self._detections, self._truths, self.iou_threshold, self.mode, self.score_threshold)["corloc"]
        return 0.0 if math.isnan(value) else float(value)


def _interval(values: np.ndarray, n_resamples: int, seed: int) -> dict[str, float | int]:
    if values.size == 0:
        return {"n": 0, "mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    mean, low, high = bootstrap_ci(values.astype(float), n_resamples=n_resamples, seed=seed)
    return {"n": int(values.size), "mean": mean, "ci_low": low, "ci_high": high}


class DetectionReport:
    """Collect detections during an evaluation run and write the detection report when it completes.

    Args:
        output_dir: folder of reports; files go to ``output_dir/<checkpoint stem>``.
        checkpoint: the evaluated checkpoint (names the folder; recorded in the report).
        class_names: ``{"1": "benign", "2": "malignant"}``.
        settings: extra facts recorded in the report (setting, seed, iterations).
        iou_threshold, score_threshold: CorLoc settings (0.5, 0.5).
        n_resamples, seed: bootstrap settings.
        figures: number of test images drawn in ``detections.png`` (0: none).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        class_names: Mapping[str, str] | None = None,
        settings: Mapping[str, Any] | None = None,
        iou_threshold: float = 0.5,
        score_threshold: float = 0.5,
        n_resamples: int = 1000,
        seed: int = 0,
        figures: int = 6,
    ) -> None:
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.output_dir = Path(output_dir) / (Path(self.checkpoint).stem if self.checkpoint else "report")
        names = class_names or {"1": "benign", "2": "malignant"}
        self.class_names = {int(k): str(v) for k, v in names.items() if str(v) != "background"}
        self.settings = dict(settings or {})
        self.iou_threshold, self.score_threshold = iou_threshold, score_threshold
        self.n_resamples, self.seed, self.figures = n_resamples, seed, int(figures)
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.items: list[dict[str, Any]] = []
        self._images: list[np.ndarray] = []

    def collect(self, engine: Engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else []
        for index, item in enumerate(_outputs(engine.state.output)):
            self.items.append({"id": item.get("id", ""), "pred": item["pred"], "label": item["label"]})
            if len(self._images) < self.figures and index < len(batch):
                self._images.append(np.asarray(batch[index]["image"].detach().cpu())[0])

    def summary(self) -> dict[str, Any]:
        """Every number of the report (module docstring) from the collected images."""
        preds = [item["pred"] for item in self.items]
        truths = [item["label"] for item in self.items]
        classes = np.array([int(t.get("image_class", -1)) for t in truths])
        result: dict[str, Any] = {"images": len(self.items), "lesion_images": int(np.isin(classes, [1, 2]).sum())}
        for mode in ("any", "top1"):
            scores = corloc(preds, truths, self.iou_threshold, mode, self.score_threshold)
            result[f"corloc_{mode}"] = {
                **_interval(np.asarray(scores["hits"]), self.n_resamples, self.seed),
                "hits": [int(hit) for hit in scores["hits"]],  # per unit, for paired comparisons between models
                "per_class": {self.class_names.get(c, str(c)): v for c, v in scores["per_class"].items()},
            }
        normal = [p for p, c in zip(preds, classes) if c == 0]
        result["fp_per_normal_image"] = {
            "n": len(normal),
            "mean": false_positives_per_image(normal, self.score_threshold) if normal else float("nan"),
        }
        lesion = [i for i, c in enumerate(classes) if c in (1, 2)]
        if lesion:
            scored = image_classification([preds[i] for i in lesion], classes[lesion])
            result["image_accuracy"] = _interval(np.asarray(scored["correct"]), self.n_resamples, self.seed)
            result["roc_auc"] = float(scored["roc_auc"])
        return result

    def write(self, engine: Engine | None = None) -> dict[str, Any]:
        """Write metrics.json, detections.json and detections.png; returns the report dict."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        report = {
            "checkpoint": self.checkpoint,
            "convention": {
                "corloc_any": "official: per (class, image) unit with a GT box of that class, some detection of "
                "that class with score >= 0.5 has IoU > 0.5 with it (headline)",
                "corloc_top1": "paper's wording: the top-scoring detection of each lesion image has IoU > 0.5 "
                "with a GT box of its class",
                "ci": f"percentile bootstrap over units, {self.n_resamples} resamples, seed {self.seed}",
                "image_accuracy": "class of the top detection (none = wrong), lesion images",
                "roc_auc": "malignant vs benign, score = max malignant detection score (0 if none)",
            },
            "settings": self.settings,
            "summary": self.summary(),
        }
        (self.output_dir / "metrics.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
        detections = [
            {"id": item["id"], **{k: np.asarray(v).tolist() for k, v in item["pred"].items()}} for item in self.items
        ]
        (self.output_dir / "detections.json").write_text(json.dumps(detections) + "\n")
        if self._images:
            self._figure(self.output_dir / "detections.png")
        corloc_any = report["summary"]["corloc_any"]
        logger.info(
            "CorLoc (any) %.2f %% (%.2f-%.2f) over %d units; report in %s",
            100 * corloc_any["mean"],
            100 * corloc_any["ci_low"],
            100 * corloc_any["ci_high"],
            corloc_any["n"],
            self.output_dir,
        )
        return report

    def _figure(self, path: Path) -> None:
        draw_detections(self._images, self.items, path, self.score_threshold)


def draw_detections(
    images: Sequence[np.ndarray], items: Sequence[Mapping[str, Any]], path: str | os.PathLike, score_threshold: float
) -> None:
    """Each image with its true boxes (green) and the detections scoring >= ``score_threshold`` (benign yellow,
    malignant red, with their scores); ``items`` are ``{"id", "pred", "label"}`` as the evaluator outputs them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    count = len(images)
    figure, axes = plt.subplots(1, count, figsize=(3 * count, 3), squeeze=False)
    for axis, image, item in zip(axes[0], images, items):
        axis.imshow(image, cmap="gray", vmin=0, vmax=1)
        for box in np.asarray(item["label"]["boxes"]).reshape(-1, 4):
            axis.add_patch(Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, color="lime", lw=1.5))
        pred = item["pred"]
        for box, label, score in zip(
            np.asarray(pred["boxes"]).reshape(-1, 4), np.asarray(pred["labels"]), np.asarray(pred["scores"])
        ):
            if score >= score_threshold:
                color = "red" if int(label) == 2 else "yellow"
                axis.add_patch(Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, color=color, lw=1))
                axis.text(box[0], box[1], f"{score:.2f}", color=color, fontsize=6)
        axis.set_title(str(item.get("id", "")), fontsize=7)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


class DetectionWriter:
    """Write each image's detections as ``output_dir/<id>_det.json`` (boxes xyxy in input pixels, labels, scores).

    Args:
        output_dir: folder of the JSON files (created).
        class_names: label -> name, recorded beside every detection.
        score_threshold: keep detections with at least this score (0.05: everything the detector outputs).
    """

    def __init__(
        self, output_dir: str | os.PathLike, class_names: Mapping[str, str] | None = None, score_threshold: float = 0.0
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = {int(k): str(v) for k, v in (class_names or {"1": "benign", "2": "malignant"}).items()}
        self.score_threshold = float(score_threshold)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for index, item in enumerate(_outputs(engine.state.output)):
            pred = item["pred"]
            keep = np.asarray(pred["scores"]) >= self.score_threshold
            name = item.get("id") or f"image_{engine.state.iteration:04d}_{index}"
            record = {
                "id": name,
                "boxes": np.asarray(pred["boxes"]).reshape(-1, 4)[keep].tolist(),
                "labels": np.asarray(pred["labels"])[keep].astype(int).tolist(),
                "scores": np.asarray(pred["scores"])[keep].tolist(),
                "label_names": self.class_names,
                "box_mode": "xyxy, continuous pixel edges of the input image (x = column)",
            }
            path = self.output_dir / f"{name}_det.json"
            temporary = path.with_suffix(".json.tmp")
            temporary.write_text(json.dumps(record) + "\n")
            os.replace(temporary, path)
