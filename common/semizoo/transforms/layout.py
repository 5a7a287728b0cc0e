"""Volumes from NIfTI/NRRD files in the slice-first layout of the prepared HDF5 files, and 2D slices of them.

The prepared ACDC files keep SSL4MIS's ``(Z, Y, X)`` arrays (SimpleITK order), which the 2D bundles slice along the
first spatial axis. NIfTI and NRRD readers (MONAI's, and so MONAI Label and MONAI Deploy, which send NIfTI) give
``(X, Y, Z)``. This transform reverses the spatial axes of items read from any non-HDF5 file, leaves HDF5 items as
they are, and records which it did, so ``Invertd`` puts predictions back into the input file's layout before saving.
The affine in the meta data stays the source file's: the data and affine agree again once inverted.

``RandVolumeSliced`` lets the 2D ACDC bundles train on whole volumes, which is what MONAI Label sends
(bundle-checklist.md §7): a 3D item becomes one random slice along its first spatial axis, a 2D slice passes as is.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, Randomizable
from monai.utils import TraceKeys

from ..data.hdf5 import H5_SUFFIXES

__all__ = ["SliceFirstd", "RandVolumeSliced", "is_hdf5_item"]


def is_hdf5_item(item: Any) -> bool:
    """Whether a loaded item came from an HDF5 file (its ``filename_or_obj`` meta data ends in .h5/.hdf5)."""
    meta = getattr(item, "meta", {}) or {}
    return str(meta.get("filename_or_obj", "")).lower().endswith(H5_SUFFIXES)


class SliceFirstd(MapTransform, InvertibleTransform):
    """Reverse the spatial axes of channel-first items read from non-HDF5 files: ``(C, X, Y, Z) → (C, Z, Y, X)``.

    Args:
        keys: keys to arrange (``image``, ``label``).
        allow_missing_keys: skip absent keys (inference has no label).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    @staticmethod
    def _reverse(item: torch.Tensor) -> torch.Tensor:
        return item.permute(0, *range(item.ndim - 1, 0, -1)).contiguous()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            reverse = not is_hdf5_item(d[key]) and d[key].ndim >= 3
            d[key] = self._reverse(d[key]) if reverse else d[key]
            self.push_transform(d[key], extra_info={"reversed": reverse})
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            transform = self.pop_transform(d[key])
            if transform[TraceKeys.EXTRA_INFO]["reversed"]:
                d[key] = self._reverse(d[key])
        return d


class RandVolumeSliced(Randomizable, MapTransform):
    """One random slice of channel-first volumes: ``(C, Z, Y, X) → (C, Y, X)``, the same ``z`` for every key;
    2D items ``(C, Y, X)`` pass unchanged and draw nothing.

    Args:
        keys: keys to slice (``image``, ``label``); they share the first spatial size.
        allow_missing_keys: skip absent keys (unlabeled items have no label).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = True) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self._index = 0

    def randomize(self, depth: int) -> None:
        self._index = int(self.R.randint(depth))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys or d[keys[0]].ndim != 4:
            return d
        self.randomize(d[keys[0]].shape[1])
        for key in keys:
            d[key] = d[key][:, self._index]
        return d
