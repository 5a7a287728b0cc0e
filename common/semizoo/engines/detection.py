"""``DetectionEvaluator``: a MONAI ``Evaluator`` for detectors that take lists of images of any size (WSSDL-BUS).

Batches are lists of records (``no_collation``). Each iteration runs ``network(images)`` in eval mode without
gradients and sets ``engine.state.output`` to one dict per image (MONAI's decollated shape): ``pred`` = the
detections (``boxes``, ``labels``, ``scores`` on the CPU), ``label`` = the ground truth (``boxes``, ``labels``,
``image_class``) and ``id``. FORWARD_COMPLETED and MODEL_COMPLETED fire as in ``SupervisedEvaluator``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from monai.engines import Evaluator
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer

from ..data.self_training import select_pseudo_boxes
from ..networks.utils import unwrap

__all__ = ["DetectionEvaluator", "pseudo_box_lists"]

logger = logging.getLogger(__name__)


def _ground_truth(record: dict) -> dict[str, Any]:
    boxes = torch.as_tensor(record.get("box", torch.zeros(0, 4)), dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(record.get("label", torch.zeros(0)), dtype=torch.int64).reshape(-1)
    image_class = int(torch.as_tensor(record.get("image_class", -1)).reshape(-1)[0])
    return {"boxes": boxes, "labels": labels, "image_class": image_class}


class DetectionEvaluator(Evaluator):
    """Evaluate a detector over a loader of record lists.

    Args:
        device: where the network runs.
        val_data_loader: loader yielding lists of records with ``image`` (C, H, W) and optional ``box``,
            ``label``, ``image_class``, ``id``.
        network: the detector; ``network(list_of_images)`` returns per-image detection dicts.
        inferer: calls the network on the image list (``SimpleInferer`` by default, i.e. ``network(images)``).
        image_key: key of the image in the records.
        kwargs: ``monai.engines.Evaluator`` arguments (``key_val_metric``, ``val_handlers``, ...).
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Any,
        network: torch.nn.Module,
        inferer: Inferer | None = None,
        image_key: str = "image",
        **kwargs: Any,
    ) -> None:
        super().__init__(device=device, val_data_loader=val_data_loader, decollate=False, **kwargs)
        self.network, self.image_key = network, image_key
        self.inferer = SimpleInferer() if inferer is None else inferer

    def _iteration(self, engine: DetectionEvaluator, batchdata: Sequence[dict]) -> list[dict[str, Any]]:
        if isinstance(batchdata, dict):
            raise ValueError("DetectionEvaluator expects lists of records (collate_fn=monai.data.utils.no_collation).")
        records = list(batchdata)
        images = [torch.as_tensor(r[self.image_key]).to(engine.state.device).float() for r in records]
        engine.state.batch = records
        self.network.eval()
        with torch.no_grad():
            detections = self.inferer(images, self.network)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output = [
            {
                "pred": {key: value.detach().cpu() for key, value in detection.items()},
                "label": _ground_truth(record),
                "id": str(record.get("id", "")),
            }
            for record, detection in zip(records, detections)
        ]
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def pseudo_box_lists(
    network: torch.nn.Module,
    checkpoint: str | os.PathLike,
    strong: Sequence[Mapping[str, Any]],
    weak: Sequence[Mapping[str, Any]],
    fraction: float,
    transform: Callable[[dict], dict],
    device: torch.device | str = "cpu",
    out_file: str | os.PathLike | None = None,
    image_key: str = "image",
) -> dict[str, list[dict]]:
    """WSSDL self-training data (wssdl.md §4): detect on every weak image with the initial model ``checkpoint``,
    move the most confident agreeing ones (:func:`semizoo.data.select_pseudo_boxes`) to the strong set.

    Args:
        network: a detector of the bundle's architecture (a separate instance: its weights are overwritten).
        checkpoint: the initial model M0 (a state dict, e.g. ``models/model_final.pt``); loaded with
            ``weights_only=True``.
        strong, weak: the datalist entries of the initial run (absolute paths, as ``load_split`` gives).
        fraction: share of the weak set to move (0.5 or 0.75 in the paper).
        transform: the test-time preprocessing (no augmentation), record -> record with ``image``.
        device: where the detector runs.
        out_file: if given, ``{"labeled": ..., "unlabeled": ...}`` is written there (atomically) for the record.

    Returns:
        ``{"labeled": strong + moved (with ``box``, ``label``, ``pseudo_score``), "unlabeled": remaining weak}``.

    Raises:
        FileNotFoundError: the initial model is missing (train the first stage first).
    """
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"self-training needs the initial model {checkpoint}; train the first stage first.")
    model = unwrap(network).to(device)
    model.load_state_dict(torch.load(checkpoint, map_location=device, weights_only=True))
    model.eval()
    detections = []
    with torch.no_grad():
        for record in weak:
            image = torch.as_tensor(transform(dict(record))[image_key]).to(device).float()
            detections.append({key: value.cpu() for key, value in model([image])[0].items()})
    moved, remaining = select_pseudo_boxes(list(weak), detections, fraction)
    logger.info(
        "pseudo boxes from %s: %d of %d weak images moved to the strong set (fraction %.2f)",
        checkpoint,
        len(moved),
        len(weak),
        fraction,
    )
    lists = {"labeled": [dict(entry) for entry in strong] + moved, "unlabeled": remaining}
    if out_file is not None:
        path = Path(out_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(lists, indent=2, default=str) + "\n")
        os.replace(temporary, path)
    return lists
