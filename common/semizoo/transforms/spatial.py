"""Random spatial transforms of the reference pipelines that MONAI has no exact equivalent for.

- ``SSL4MISRandomGeneratord``: SSL4MIS ``code/dataloaders/dataset.py`` ``RandomGenerator`` @06df604 (ssnet.md §3):
  with p = 0.5 a rot90 by k ∈ {0,1,2,3} then a flip along axis 0 or 1; otherwise with p = 0.5 a rotation by an
  integer angle in [-20, 19]° (nearest, same size, zero fill); then a nearest-neighbour resize to ``output_size``.
- ``UAMTRandCropd``: UA-MT ``RandomCrop`` (``code/dataloaders/la_heart.py`` @88ed29a): if any dimension is not
  larger than the patch, zero-pad every dimension d by ``max((p_d - s_d) // 2 + 3, 0)`` on both sides, then crop
  at an offset uniform in ``[0, s_d - p_d)`` per axis.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage

__all__ = ["SSL4MISRandomGeneratord", "UAMTRandCropd"]


def _as_numpy(value) -> tuple[np.ndarray, bool]:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy(), True
    return np.asarray(value), False


def _like(array: np.ndarray, was_tensor: bool):
    array = np.ascontiguousarray(array)
    return torch.as_tensor(array) if was_tensor else array


class SSL4MISRandomGeneratord(Randomizable, MapTransform):
    """SSL4MIS's 2D augmentation on channel-first ``(C, H, W)`` items; every key gets the same draw.

    Interpolation is nearest-neighbour for every key (images included), as in the reference code.

    Args:
        keys: keys to transform (e.g. ``["image", "label"]``).
        output_size: ``(H, W)`` after the resize.
        allow_missing_keys: skip absent keys (unlabeled items have no label).
    """

    def __init__(
        self, keys: KeysCollection, output_size: Sequence[int] = (256, 256), allow_missing_keys: bool = False
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.output_size = tuple(int(s) for s in output_size)
        self._mode, self._k, self._flip_axis, self._angle = "none", 0, 0, 0

    def randomize(self, data=None) -> None:
        if self.R.random_sample() > 0.5:
            self._mode = "rot_flip"
            self._k, self._flip_axis = int(self.R.randint(0, 4)), int(self.R.randint(0, 2))
        elif self.R.random_sample() > 0.5:
            self._mode, self._angle = "rotate", int(self.R.randint(-20, 20))
        else:
            self._mode = "none"

    def _apply(self, plane: np.ndarray) -> np.ndarray:
        if self._mode == "rot_flip":
            plane = np.flip(np.rot90(plane, self._k), axis=self._flip_axis)
        elif self._mode == "rotate":
            plane = ndimage.rotate(plane, self._angle, order=0, reshape=False)
        h, w = plane.shape
        return ndimage.zoom(plane, (self.output_size[0] / h, self.output_size[1] / w), order=0)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            array, was_tensor = _as_numpy(d[key])
            if array.ndim != 3:
                raise ValueError(f"SSL4MISRandomGeneratord expects channel-first 2D {key!r}, got shape {array.shape}.")
            d[key] = _like(np.stack([self._apply(channel) for channel in array]), was_tensor)
        return d


class UAMTRandCropd(Randomizable, MapTransform):
    """UA-MT's random 3D crop on channel-first ``(C, X, Y, Z)`` items; every key gets the same offsets.

    Args:
        keys: keys to crop.
        roi_size: patch size ``(p_x, p_y, p_z)``.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, roi_size: Sequence[int], allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.roi_size = tuple(int(s) for s in roi_size)
        self._offsets: tuple[int, ...] = (0, 0, 0)

    def padding(self, shape: Sequence[int]) -> list[int]:
        """Per-axis symmetric zero padding: ``max((p - s) // 2 + 3, 0)`` on every axis if any ``s <= p``."""
        if all(s > p for s, p in zip(shape, self.roi_size)):
            return [0] * len(shape)
        return [max((p - s) // 2 + 3, 0) for s, p in zip(shape, self.roi_size)]

    def randomize(self, shape: Sequence[int]) -> None:
        # offset uniform in [0, s - p) (exclusive, as the reference); 0 when s == p
        self._offsets = tuple(int(self.R.randint(0, s - p)) if s > p else 0 for s, p in zip(shape, self.roi_size))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        first = next(iter(self.key_iterator(d)), None)
        if first is None:
            return d
        shape = _as_numpy(d[first])[0].shape[1:]
        if len(shape) != len(self.roi_size):
            raise ValueError(f"UAMTRandCropd roi {self.roi_size} does not match {first!r} of shape {shape}.")
        pads = self.padding(shape)
        padded_shape = [s + 2 * p for s, p in zip(shape, pads)]
        self.randomize(padded_shape)
        for key in self.key_iterator(d):
            array, was_tensor = _as_numpy(d[key])
            if array.shape[1:] != tuple(shape):
                raise ValueError(f"UAMTRandCropd: {key!r} shape {array.shape[1:]} differs from {first!r} {shape}.")
            array = np.pad(array, [(0, 0)] + [(p, p) for p in pads], mode="constant")
            window = tuple(slice(o, o + p) for o, p in zip(self._offsets, self.roi_size))
            d[key] = _like(array[(slice(None), *window)], was_tensor)
        return d
