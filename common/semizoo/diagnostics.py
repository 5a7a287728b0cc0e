"""Diagnostics for consistency methods: is the teacher's view of the unlabelled data biased per class?

Mean Teacher (and its relatives) pulls the student towards the teacher's prediction of a *perturbed* input: in train
mode (dropout on, batch-statistics batch norm) with Gaussian noise added (SSL4MIS: σ 0.1 clipped at ±0.2). If that
perturbation changes how much of one class a network predicts, the consistency target is biased against (or towards)
that class, and because the teacher is an average of the student, the bias compounds during training.

:func:`teacher_view_areas` measures it for one network: the predicted area of each class on a set of slices under
three views, ``eval`` (clean input, eval mode: what is deployed), ``train`` (clean input, train mode) and ``teacher``
(train mode plus the teacher's noise), optionally against reference labels. ``python -m semizoo teacher-bias`` runs it
on a bundle checkpoint and a datalist.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["VIEWS", "teacher_view_areas", "teacher_bias_report"]

VIEWS = ("eval", "train", "teacher")


def _view_counts(
    network: nn.Module,
    images: torch.Tensor,
    num_classes: int,
    view: str,
    noise: tuple[float, float],
    batch: int,
    draws: int,
    seed: int,
) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.int64)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    network.train(view != "eval")
    with torch.no_grad(), torch.random.fork_rng(devices=[] if images.device.type == "cpu" else [images.device]):
        torch.manual_seed(seed)  # dropout masks
        for start in range(0, len(images), batch):
            chunk, probabilities = images[start : start + batch], 0.0
            for _ in range(1 if view == "eval" else draws):
                inputs = chunk
                if view == "teacher":
                    draw = torch.randn(chunk.shape, generator=generator, device=chunk.device, dtype=chunk.dtype)
                    inputs = chunk + torch.clamp(draw * noise[0], -noise[1], noise[1])
                probabilities = probabilities + torch.softmax(network(inputs), dim=1)
            labels = probabilities.argmax(1)
            counts += np.bincount(labels.flatten().cpu().numpy(), minlength=num_classes)[:num_classes]
    return counts


def teacher_view_areas(
    network: nn.Module,
    images: torch.Tensor,
    num_classes: int,
    labels: torch.Tensor | np.ndarray | None = None,
    noise_std: float = 0.1,
    noise_clip: float = 0.2,
    batch_size: int = 4,
    draws: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Predicted voxels per class of ``network`` on ``images`` (N, C, *spatial) under the three :data:`VIEWS`.

    The network is copied, so its weights and batch-norm running statistics are untouched. ``batch_size`` matters in
    train mode (batch statistics): use the method's unlabelled batch size. ``draws > 1`` averages the softmax of that
    many dropout/noise draws before the argmax in the train and teacher views: the *expected* target, which is what a
    student fitting it with a squared error learns over many iterations. Returns ``areas`` (view -> counts per
    class), ``noise_effect`` (teacher / train area per class: the bias the noise alone adds) and, with ``labels``,
    ``reference`` counts and ``ratio_to_reference`` (view -> predicted / reference per class).
    """
    if images.dim() < 3:
        raise ValueError(f"images must be (N, C, *spatial), got shape {tuple(images.shape)}.")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}.")
    probe = copy.deepcopy(network)
    areas = {
        view: _view_counts(probe, images, num_classes, view, (noise_std, noise_clip), batch_size, draws, seed)
        for view in VIEWS
    }

    def ratio(a: np.ndarray, b: np.ndarray) -> list[float | None]:
        return [float(x / y) if y > 0 else None for x, y in zip(a, b)]

    result: dict[str, Any] = {
        "views": {
            "eval": "clean input, eval mode (deployed)",
            "train": "clean input, train mode (dropout, batch-statistics BN)",
            "teacher": f"train mode + clamp(N(0, {noise_std}^2), ±{noise_clip}) input noise (Mean Teacher target)",
        },
        "draws": draws,
        "areas": {view: counts.tolist() for view, counts in areas.items()},
        "noise_effect": ratio(areas["teacher"], areas["train"]),
    }
    if labels is not None:
        labels = labels.cpu().numpy() if hasattr(labels, "cpu") else np.asarray(labels)
        reference = np.bincount(labels.astype(np.int64).ravel(), minlength=num_classes)[:num_classes]
        result["reference"] = reference.tolist()
        result["ratio_to_reference"] = {view: ratio(counts, reference) for view, counts in areas.items()}
    return result


def _load_slices(datalist: str | os.PathLike, key: str, size: Sequence[int] | None, limit: int | None):
    from scipy import ndimage

    from .data import DataError, load_split
    from .data.hdf5 import read_h5

    entries = load_split(datalist, key)[:limit]
    images, labels = [], []
    for entry in entries:
        image, _ = read_h5(entry["image"], "image")
        if "label" in entry:
            label = read_h5(entry["label"], "label")[0]
        else:  # an unlabelled entry: its file may still hold a label (phantoms, SSL4MIS slices)
            try:
                label = read_h5(entry["image"], "label")[0]
            except DataError:
                label = None
        if image.ndim != 2:
            raise ValueError(f"{entry['image']}: teacher-bias reads 2D slices, got a {image.ndim}-D image")
        factors = None if size is None else [s / d for s, d in zip(size, image.shape)]
        images.append(image if factors is None else ndimage.zoom(image, factors, order=1))
        if label is not None:
            labels.append(label if factors is None else ndimage.zoom(label, factors, order=0))
    stacked = torch.as_tensor(np.stack(images)[:, None].astype(np.float32))
    return stacked, (np.stack(labels) if len(labels) == len(images) else None)


def teacher_bias_report(
    bundle: str | os.PathLike,
    checkpoint: str | os.PathLike,
    datalist: str | os.PathLike,
    key: str = "unlabeled",
    size: Sequence[int] | None = None,
    batch_size: int = 4,
    limit: int | None = None,
    noise_std: float = 0.1,
    noise_clip: float = 0.2,
    draws: int = 1,
) -> dict[str, Any]:
    """:func:`teacher_view_areas` of a bundle's network (``configs/inference.json`` ``network_def``) from
    ``checkpoint`` on list ``key`` of ``datalist`` (2D slices, resized to ``size``, default the bundle's
    ``patch_size``); reference labels are used when the slices carry them (phantoms do)."""
    from monai.bundle import ConfigParser

    from .bundle_paths import bundle_path

    root = bundle_path(bundle)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    size = list(size) if size is not None else list(parser.get_parsed_content("patch_size"))
    images, labels = _load_slices(datalist, key, size, limit)
    num_classes = int(parser.get_parsed_content("num_classes"))
    result = teacher_view_areas(network, images, num_classes, labels, noise_std, noise_clip, batch_size, draws)
    result["inputs"] = {"bundle": str(root), "checkpoint": os.fspath(checkpoint), "datalist": os.fspath(datalist)}
    result["inputs"].update({"list": key, "slices": len(images), "size": size, "batch_size": batch_size})
    result["class_names"] = parser.get("class_names")
    return result
