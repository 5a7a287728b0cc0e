"""``TrainingFigures``: learning curves and sample validation predictions, drawn when training completes.

While training, the handler averages each loss term of the trainer's output over windows of ``interval``
iterations and records every scalar metric of each validation run (with the trainer's iteration). When training
completes it writes into ``output_dir``:

- ``learning_curves.png``: one panel per loss term and per validation metric, against the iteration;
- ``learning_curves.json``: the same points (``{"loss": {"term": [[iteration, mean], ...]}, "validation": ...}``);
- ``sample_predictions.png``: the first ``samples`` cases of the latest validation: image, ground truth and
  prediction (segmentation; the slice with the most reference foreground of a volume) or the image with its true
  boxes and detections (detection).

The recorded points are part of the training checkpoint (``state_dict``), so a resumed run draws its whole history.
Attach the handler before the checkpointer (first in the trainer's handlers): the checkpoint of iteration ``k`` then
holds iteration ``k``'s terms. The figures are written after every other handler has seen ``COMPLETED`` (a final
validation included).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from monai.utils import optional_import

from .detection_report import draw_detections
from .progress import loss_terms
from .report import _array, _labels, case_name, draw_overlays, overlay_slices

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["TrainingFigures"]

logger = logging.getLogger(__name__)


class TrainingFigures:
    """Record loss terms and validation metrics; draw them and sample predictions at the end (module docstring).

    Args:
        output_dir: folder of the PNGs and the JSON.
        validator: the evaluator the trainer's validation handler runs (``None``: loss curves only).
        interval: iterations averaged into one point of the loss curves.
        samples: validation cases drawn in ``sample_predictions.png`` (0: none).
        slice_axis: axis of the slice drawn from a volume (ACDC (Z, Y, X): 0; LA (X, Y, Z): 2).
        n_labels: labels including background (the segmentation colour scale).
        score_threshold: detections drawn from this score on.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        validator: Engine | None = None,
        interval: int = 50,
        samples: int = 4,
        slice_axis: int = 0,
        n_labels: int = 2,
        score_threshold: float = 0.5,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}.")
        self.output_dir = Path(output_dir)
        self.validator = validator
        self.interval, self.samples, self.slice_axis = int(interval), int(samples), int(slice_axis)
        self.n_labels, self.score_threshold = int(n_labels), float(score_threshold)
        self.loss: dict[str, list[list[float]]] = {}
        self.validation: dict[str, list[list[float]]] = {}
        self._sums: dict[str, float] = {}
        self._count = 0
        self._trainer: Engine | None = None
        self._sample_items: list[tuple[str, Any]] = []
        self._sample_iteration = 0

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record_terms)
        engine.add_event_handler(Events.STARTED, self._write_last)
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_STARTED, self._reset_samples)
            self.validator.add_event_handler(Events.ITERATION_COMPLETED, self.collect_samples)
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self.record_validation)

    def _write_last(self, engine: Engine) -> None:
        """Register :meth:`write` for ``COMPLETED`` once every handler is attached, so that it runs last."""
        if not engine.has_event_handler(self.write, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.write)

    # recording
    def record_terms(self, engine: Engine) -> None:
        """Add this iteration's loss terms to the window; close the window every ``interval`` iterations."""
        for name, value in loss_terms(engine.state.output).items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._count += 1
        if engine.state.iteration % self.interval == 0:
            self._flush(engine.state.iteration)

    def _flush(self, iteration: int) -> None:
        if self._count:
            for name, total in self._sums.items():
                self.loss.setdefault(name, []).append([float(iteration), total / self._count])
        self._sums, self._count = {}, 0

    def record_validation(self, validator: Engine) -> None:
        """Every scalar metric of the validation that just ran, at the trainer's iteration."""
        iteration = float(self._trainer.state.iteration) if self._trainer is not None else math.nan
        for name, value in validator.state.metrics.items():
            if isinstance(value, (int, float)) or (hasattr(value, "numel") and value.numel() == 1):
                self.validation.setdefault(str(name), []).append([iteration, float(value)])
        self._sample_iteration = int(iteration) if math.isfinite(iteration) else 0

    def _reset_samples(self, validator: Engine) -> None:
        self._sample_items = []

    def collect_samples(self, validator: Engine) -> None:
        """Keep the first ``samples`` cases of this validation: 2D slices (segmentation) or boxes (detection)."""
        outputs = validator.state.output
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        batch = validator.state.batch if isinstance(validator.state.batch, list) else []
        for index, output in enumerate(outputs):
            if len(self._sample_items) >= self.samples:
                return
            item = batch[index] if index < len(batch) else {}
            pred = output["pred"]
            if isinstance(pred, Mapping):  # detection: {"boxes", "labels", "scores"}
                image = _array(item.get("image", output.get("image")))[0]
                self._sample_items.append(("detection", (image, output)))
                continue
            label = output.get("label", item.get("label"))
            image = _array(output.get("image", item.get("image")))[0]
            name = case_name(label, len(self._sample_items))
            self._sample_items.append(
                ("segmentation", (name, overlay_slices(image, _labels(label), _labels(pred), self.slice_axis)))
            )

    # checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "validation": self.validation,
            "window": {"sums": dict(self._sums), "count": self._count},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loss = {k: [list(p) for p in v] for k, v in state["loss"].items()}
        self.validation = {k: [list(p) for p in v] for k, v in state["validation"].items()}
        self._sums = {k: float(v) for k, v in state["window"]["sums"].items()}
        self._count = int(state["window"]["count"])

    # output
    def write(self, engine: Engine | None = None) -> None:
        """Write learning_curves.json/.png and sample_predictions.png into ``output_dir``."""
        if engine is not None:
            self._flush(engine.state.iteration)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        history = {"interval": self.interval, "loss": self.loss, "validation": self.validation}
        (self.output_dir / "learning_curves.json").write_text(json.dumps(history) + "\n")  # one line: long runs
        if self.loss or self.validation:
            self._draw_curves(self.output_dir / "learning_curves.png")
        if self._sample_items:
            self._draw_samples(self.output_dir / "sample_predictions.png")
        logger.info("learning curves and sample predictions written to %s", self.output_dir)

    def _draw_curves(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [(f"train: {k}", v) for k, v in self.loss.items()]
        panels += [(f"validation: {k}", v) for k, v in self.validation.items()]
        columns = min(3, len(panels))
        rows = math.ceil(len(panels) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
        for ax, (title, points) in zip(axes.ravel(), panels):
            array = np.asarray(points, dtype=float).reshape(-1, 2)
            ax.plot(array[:, 0], array[:, 1], marker="o" if len(array) < 20 else None, markersize=3)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(panels) :]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    def _draw_samples(self, path: Path) -> None:
        suffix = f"iteration {self._sample_iteration}"
        if self._sample_items[0][0] == "detection":
            images = [image for _, (image, _) in self._sample_items]
            items = [{**output, "id": f"{output.get('id', '')} ({suffix})"} for _, (_, output) in self._sample_items]
            draw_detections(images, items, path, self.score_threshold)
            return
        rows = [((name, f"prediction ({suffix})"), *slices) for _, (name, slices) in self._sample_items]
        draw_overlays(rows, path, self.n_labels)
