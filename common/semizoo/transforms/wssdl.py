"""WSSDL-BUS detection pipelines (wssdl.md §3): grey PNG + boxes in, ``image`` (1, H, W) in [0, 1] out.

Images are read with MONAI's ``PILReader(reverse_indexing=False)`` so that array rows are image rows: a box
``[x1, y1, x2, y2]`` of the datalist (x = column, continuous pixel edges) indexes ``image[:, y1:y2, x1:x2]``, the
layout torchvision's detectors expect. Training augmentation (:class:`WSSDLAugmentd`, official ``data_layer``):

- all images: horizontal flip p = 0.5 (boxes flipped with the image);
- weak images only: rotation U(−5°, 5°) filled with the BUS mean 68.274/255, then a random crop that removes
  an integer in [0, ⌊0.05H⌋] rows at the top and in [1, ⌊0.05H⌋] at the bottom (numpy's inclusive
  ``random_integers``), the same for columns with W;
- all images: brightness ``x += U(−0.2, 0.2)``, clip to [0, 1]; contrast ``x = (x − mean)·U(0.2, 1.8) + mean``, clip.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import PILReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandomizableTransform,
    ScaleIntensityRanged,
)
from scipy import ndimage

__all__ = ["BoxesToTensord", "WSSDLAugmentd", "wssdl_transforms", "BUS_FILL"]

BUS_FILL = 68.274 / 255.0


class BoxesToTensord(MapTransform):
    """``box`` -> float32 (G, 4), ``label`` -> int64 (G,), ``image_class`` -> int64 0-d; absent keys are skipped."""

    def __init__(self, box_key: str = "box", label_key: str = "label", class_key: str = "image_class") -> None:
        super().__init__([box_key, label_key, class_key], allow_missing_keys=True)
        self.box_key, self.label_key, self.class_key = box_key, label_key, class_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.box_key in d:
            d[self.box_key] = torch.as_tensor(np.asarray(d[self.box_key], dtype=np.float32).reshape(-1, 4))
        if self.label_key in d:
            d[self.label_key] = torch.as_tensor(np.asarray(d[self.label_key], dtype=np.int64).reshape(-1))
        if self.class_key in d:
            d[self.class_key] = torch.as_tensor(int(d[self.class_key]), dtype=torch.int64)
        return d


class WSSDLAugmentd(RandomizableTransform, MapTransform):
    """The official WSSDL training augmentation of one record (module docstring); ``strong`` records keep boxes.

    Args:
        keys: the image key.
        strong: box-labelled record (flip moves its boxes; no rotation or crop, as the official strong path).
        box_key: key of the (G, 4) boxes.
        flip_prob, max_rotation, cut_fraction, brightness, contrast: the official values by default.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        strong: bool = True,
        box_key: str = "box",
        flip_prob: float = 0.5,
        max_rotation: float = 5.0,
        cut_fraction: float = 0.05,
        brightness: float = 0.2,
        contrast: tuple[float, float] = (0.2, 1.8),
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.strong, self.box_key = bool(strong), box_key
        self.flip_prob, self.max_rotation, self.cut_fraction = flip_prob, max_rotation, cut_fraction
        self.brightness, self.contrast = brightness, contrast

    def _weak_geometry(self, image: np.ndarray) -> np.ndarray:
        angle = self.R.uniform(-self.max_rotation, self.max_rotation)
        image = ndimage.rotate(image, angle, axes=(1, 2), reshape=False, order=1, mode="constant", cval=BUS_FILL)
        height, width = image.shape[1:]
        rows, cols = int(np.floor(self.cut_fraction * height)), int(np.floor(self.cut_fraction * width))
        top, bottom = self.R.randint(0, rows + 1), self.R.randint(1, max(rows, 1) + 1)
        left, right = self.R.randint(0, cols + 1), self.R.randint(1, max(cols, 1) + 1)
        return image[:, top : height - bottom, left : width - right]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = np.asarray(d[key].detach().cpu() if torch.is_tensor(d[key]) else d[key], dtype=np.float32)
            if self.R.rand() < self.flip_prob:
                image = image[..., ::-1]
                if self.strong and self.box_key in d:
                    boxes = torch.as_tensor(d[self.box_key], dtype=torch.float32).clone().reshape(-1, 4)
                    boxes[:, [0, 2]] = image.shape[-1] - boxes[:, [2, 0]]
                    d[self.box_key] = boxes
            if not self.strong:
                image = self._weak_geometry(image)
            image = np.clip(image + self.R.uniform(-self.brightness, self.brightness), 0.0, 1.0)
            mean = float(image.mean())
            image = np.clip((image - mean) * self.R.uniform(*self.contrast) + mean, 0.0, 1.0)
            d[key] = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
        return d


def wssdl_transforms(mode: str = "eval", image_key: str = "image") -> Compose:
    """Load (rows = image rows, [0, 1]), boxes to tensors and, for ``mode`` ``"strong"``/``"weak"``, augment."""
    if mode not in ("strong", "weak", "eval"):
        raise ValueError(f"mode must be 'strong', 'weak' or 'eval', got {mode!r}.")
    transforms: list = [
        LoadImaged(image_key, reader=PILReader(reverse_indexing=False), image_only=True),
        EnsureChannelFirstd(image_key, channel_dim="no_channel"),
        ScaleIntensityRanged(image_key, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0),
        EnsureTyped(image_key, data_type="tensor", track_meta=False, dtype=torch.float32),
        BoxesToTensord(),
    ]
    if mode != "eval":
        transforms.append(WSSDLAugmentd(image_key, strong=mode == "strong"))
    return Compose(transforms)
