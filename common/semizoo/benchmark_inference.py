"""Sliding-window inference cost for ``python -m semizoo benchmark``: the paper's stride vs faster overlaps.

For a bundle whose test inferer (``validate#inferer`` after ``configs/evaluate.json``) is a 3D sliding window (the LA
bundles), one phantom test volume is segmented with that inferer (setting ``configured``: at the paper shape the
paper's roi and strides, at the cpu shape the CPU-sized ones) and with the same inferer at each faster ``overlap``
(strides ``max(1, int(roi · (1 - overlap)))``). Each setting reports seconds per case (inferer and the bundle's test
post-processing), the number of windows, and the Dice of its prediction with the ``configured`` prediction and with
the label. The volume is resized (image trilinear, label nearest) so that each axis is at least ``cover`` × the roi,
about the size of a UA-MT-cropped LA volume; the test phantoms are smaller. Weights are the network's initialisation
unless a checkpoint is given: only then does Dice vs the label mean something; without one, the timing and the
agreement between settings do.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .benchmark_build import build
from .benchmark_data import dataset_of, prepared_phantoms
from .benchmark_steps import sync

__all__ = ["dice", "compare_settings", "sliding_window_roi", "measure_inference", "with_overlap"]


def sliding_window_roi(inferer: Any) -> list[int] | None:
    """The roi of a 3D MONAI sliding-window inferer, else ``None``."""
    from monai.inferers import SlidingWindowInferer

    if not isinstance(inferer, SlidingWindowInferer):
        return None
    roi = [int(r) for r in inferer.roi_size]
    return roi if len(roi) == 3 else None


def with_overlap(inferer: Any, overlap: float) -> Any:
    """A copy of a sliding-window ``inferer`` with windows ``overlap`` apart (a strided one: matching strides)."""
    fast = copy.copy(inferer)
    roi = [int(r) for r in inferer.roi_size]
    if hasattr(inferer, "strides"):
        fast.strides = [max(1, int(r * (1.0 - overlap))) for r in roi]
        # the strided inferer's rule, overlap = 1 - (s + 0.5) / r; a stride of the whole roi is MONAI's overlap 0
        fast.overlap = [max(0.0, 1.0 - (s + 0.5) / r) for s, r in zip(fast.strides, roi)]
    else:
        fast.overlap = float(overlap)
    return fast


def dice(a: torch.Tensor, b: torch.Tensor, classes: int) -> float:
    """Mean Dice over the foreground classes ``1..classes-1`` of two label maps (1.0 for a class absent in both)."""
    scores = []
    for c in range(1, classes):
        x, y = a == c, b == c
        total = int(x.sum()) + int(y.sum())
        scores.append(1.0 if total == 0 else 2.0 * int((x & y).sum()) / total)
    return float(sum(scores) / len(scores))


def compare_settings(
    settings: dict[str, Any],
    network: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    label: torch.Tensor | None,
    classes: int,
    postprocess: Callable[[torch.Tensor], torch.Tensor],
    reference: str = "configured",
) -> dict[str, dict[str, Any]]:
    """Seconds, windows and Dice (vs ``settings[reference]``'s prediction and vs ``label``) of each inferer; ``network``
    runs once per window (``windows`` counts its calls' batch sizes)."""
    calls = {"windows": 0}

    def counted(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls["windows"] += int(x.shape[0])
        return network(x, *args, **kwargs)

    predictions, results = {}, {}
    for name, inferer in settings.items():
        calls["windows"] = 0
        sync(image.device)
        start = time.perf_counter()
        with torch.no_grad():
            prediction = postprocess(inferer(image, counted))
        sync(image.device)
        predictions[name] = prediction.cpu()
        results[name] = {"seconds_per_case": time.perf_counter() - start, "windows": calls["windows"]}
        if hasattr(inferer, "strides"):
            results[name]["strides"] = [int(s) for s in inferer.strides]
        overlap = inferer.overlap
        results[name]["overlap"] = [round(float(o), 4) for o in overlap] if isinstance(overlap, Sequence) else overlap
    for name, result in results.items():
        result["dice_vs_" + reference] = dice(predictions[name], predictions[reference], classes)
        if label is not None:
            result["dice_vs_label"] = dice(predictions[name], label.cpu(), classes)
    return results


def _postprocess(parser: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The bundle's test post-processing (``validate#postprocessing``) of a ``(1, C, ...)`` output: a label map."""
    transform = parser.get_parsed_content("validate#postprocessing") if "validate#postprocessing" in parser else None

    def apply(output: torch.Tensor) -> torch.Tensor:
        if transform is None:
            return output[0].argmax(dim=0, keepdim=True)
        return torch.as_tensor(transform({"pred": output[0]})["pred"])

    return apply


def measure_inference(
    bundle: Path,
    configs: Sequence[str],
    phantom_root: Path,
    workdir: Path,
    overlaps: Sequence[float] = (0.5, 0.25),
    checkpoint: str | Path | None = None,
    cover: float = 1.2,
) -> dict[str, Any] | None:
    """:func:`compare_settings` of the bundle's test inferer vs ``overlaps`` on one phantom test volume; ``None`` when
    the test inferer is not a 3D sliding window."""
    from monai.bundle import ConfigParser

    probe = ConfigParser()
    probe.read_config(list(configs))
    if "validate#inferer" not in probe or sliding_window_roi(probe.get_parsed_content("validate#inferer")) is None:
        return None
    dataset_dir = prepared_phantoms(phantom_root, dataset_of(configs))
    setup = build(bundle, configs, workdir, dataset_dir=dataset_dir)
    parser = setup.parser
    inferer = parser.get_parsed_content("validate#inferer")
    roi = sliding_window_roi(inferer)
    network_def = parser.get_parsed_content("network_def")
    if checkpoint is not None:
        network_def.load_state_dict(torch.load(checkpoint, map_location=setup.device, weights_only=True))
    network = setup.method.network
    network.eval()
    record = parser.get_parsed_content("validate#dataset")[0]
    image = torch.as_tensor(record["image"]).float()[None]
    label = torch.as_tensor(record["label"])[None] if "label" in record else None
    phantom_shape = list(image.shape[2:])
    target = [max(s, math.ceil(cover * r)) for s, r in zip(phantom_shape, roi)]
    if target != phantom_shape:
        image = torch.nn.functional.interpolate(image, size=target, mode="trilinear", align_corners=False)
        if label is not None:
            label = torch.nn.functional.interpolate(label.float(), size=target, mode="nearest").long()
    settings = {"configured": inferer, **{f"overlap {o:g}": with_overlap(inferer, o) for o in overlaps}}
    classes = int(parser.get_parsed_content("num_classes"))
    results = compare_settings(
        settings, network, image.to(setup.device), None if label is None else label[0], classes, _postprocess(parser)
    )
    return {
        "roi": roi,
        "volume": target,
        "phantom_volume": phantom_shape,
        "weights": str(checkpoint) if checkpoint is not None else "random initialisation (no checkpoint)",
        "settings": results,
    }
