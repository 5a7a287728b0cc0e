"""``HDF5Reader``: a MONAI ``ImageReader`` for the UA-MT/SSL4MIS HDF5 files (one dataset per key).

Each prepared ``.h5`` holds ``image`` and ``label`` datasets and an optional ``spacing`` attribute (one value
per array axis, mm). A datalist entry may point ``image`` and ``label`` at the same file; one ``LoadImaged`` per
key with ``HDF5Reader(key=k)`` reads the dataset named like the key. Non-h5 suffixes are rejected at once, so
MONAI falls back to its own readers for NIfTI/PNG (MONAI Label sends NIfTI).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from .errors import DataError

__all__ = ["HDF5Reader", "H5_SUFFIXES", "read_h5"]

H5_SUFFIXES = (".h5", ".hdf5")


def read_h5(path: str | os.PathLike, key: str) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """``(array, spacing)`` of dataset ``key`` of ``path``; :class:`DataError` naming the file and key otherwise."""
    import h5py

    path = os.fspath(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(path, f"cannot open HDF5 ({error})") from error
    with handle:
        if key not in handle:
            raise DataError(path, f"no HDF5 dataset {key!r} (has {sorted(handle.keys())})")
        if not isinstance(handle[key], h5py.Dataset):
            raise DataError(path, f"{key!r} is an HDF5 group, not a dataset")
        try:
            array = np.asarray(handle[key][()])
            spacing = handle.attrs.get("spacing")
        except (OSError, ValueError, TypeError) as error:  # damaged chunks, unreadable attributes
            raise DataError(path, f"cannot read HDF5 dataset {key!r} ({error})") from error
    if spacing is not None:
        spacing = tuple(float(s) for s in np.atleast_1d(spacing))
        if len(spacing) != array.ndim:
            raise DataError(path, f"spacing {spacing} does not match the {array.ndim}-D {key!r} array")
    return array, spacing


class HDF5Reader(ImageReader):
    """Read dataset ``key`` of ``.h5`` files as channel-less arrays with an affine built from ``spacing``.

    Args:
        key: the HDF5 dataset to read (``"image"`` or ``"label"``).
        dtype: cast the array (``None`` keeps the stored dtype).
    """

    def __init__(self, key: str = "image", dtype: Any = None) -> None:
        super().__init__()
        self.key, self.dtype = key, dtype

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        return all(str(name).lower().endswith(H5_SUFFIXES) for name in ensure_tuple(filename))

    def read(self, data: Sequence[str] | str, **kwargs: Any) -> list[tuple[np.ndarray, tuple | None, str]]:
        items = []
        for name in ensure_tuple(data):
            array, spacing = read_h5(name, self.key)
            items.append((array if self.dtype is None else array.astype(self.dtype), spacing, str(name)))
        return items if len(items) > 1 else items[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        items = img if isinstance(img, list) else [img]
        arrays, metas = [], []
        for array, spacing, name in items:
            if array.ndim not in (2, 3):
                raise DataError(name, f"HDF5 dataset {self.key!r} must be 2-D or 3-D, got shape {array.shape}")
            spacing = (1.0,) * array.ndim if spacing is None else spacing
            affine = np.diag([*spacing, 1.0]) if array.ndim == 3 else _affine_2d(spacing)
            metas.append(
                {
                    MetaKeys.AFFINE: affine,
                    MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                    MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
                    MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel",
                    MetaKeys.SPACE: SpaceKeys.RAS,
                    "spacing": np.asarray(spacing, dtype=float),
                    "h5_key": self.key,
                    "filename_or_obj": name,
                }
            )
            arrays.append(array)
        if len(arrays) == 1:
            return arrays[0], metas[0]
        return np.stack(arrays, axis=0), {**metas[0], MetaKeys.ORIGINAL_CHANNEL_DIM: 0}


def _affine_2d(spacing: Sequence[float]) -> np.ndarray:
    affine = np.eye(3)
    affine[0, 0], affine[1, 1] = spacing[0], spacing[1]
    return affine
