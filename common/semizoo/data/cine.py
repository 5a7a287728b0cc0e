"""Reading one frame or one slice of a prepared cine file (M&Ms, datasets.md §2) and pools of slices to draw from.

- :class:`LoadCined` reads, for a datalist entry with ``frame`` (and ``slice``), only that chunk of the entry's h5
  file: ``image[frame]`` ``(Z, Y, X)`` or ``image[frame, slice]`` ``(Y, X)``; the label is ``label[phase]`` (0 ED,
  1 ES) or ``label[phase, slice]``. Arrays come back channel-less as MONAI ``MetaTensor`` with an affine from the
  file's ``spacing``.
- :class:`SlicePool` holds the slice entries of a datalist list (optionally one domain) and reads a random one on
  demand: EPL's histogram-matching references and Fourier-twin targets (epl.md §3).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from .datalist import find_prepared_root, load_split
from .errors import DataError

__all__ = ["read_cine", "LoadCined", "SlicePool"]


def read_cine(path: str | os.PathLike, key: str, index: int, slice_index: int | None = None):
    """``(array, spacing)`` of ``h5[key][index]`` or ``h5[key][index, slice_index]``; spacing matches the array.

    Raises:
        DataError: naming the file and key: unreadable file, missing key, index out of range.
    """
    import h5py

    path = os.fspath(path)
    try:
        with h5py.File(path, "r") as handle:
            if key not in handle:
                raise DataError(path, f"no HDF5 dataset {key!r} (has {sorted(handle.keys())})")
            data = handle[key]
            if not isinstance(data, h5py.Dataset):
                raise DataError(path, f"{key!r} is an HDF5 group, not a dataset")
            if data.ndim != 4:
                raise DataError(path, f"{key!r} must be 4-D (frames or phases, Z, Y, X), got shape {data.shape}")
            if not 0 <= int(index) < data.shape[0]:
                raise DataError(path, f"{key!r} index {index} outside [0, {data.shape[0]})")
            if slice_index is not None and not 0 <= int(slice_index) < data.shape[1]:
                raise DataError(path, f"{key!r} slice {slice_index} outside [0, {data.shape[1]})")
            chunk = data[int(index)] if slice_index is None else data[int(index), int(slice_index)]
            spacing = handle.attrs.get("spacing")
    except DataError:
        raise
    except OSError as error:
        raise DataError(path, f"cannot open HDF5 ({error})") from error
    spacing = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in np.atleast_1d(spacing))
    return np.asarray(chunk), spacing[-chunk.ndim :]


class LoadCined(MapTransform):
    """Load the entry's frame (``frame``) or slice (``frame`` + ``slice``) of ``image`` and the ``phase``'s label.

    Args:
        keys: ``"image"`` and/or ``"label"`` (paths in the entry).
        allow_missing_keys: skip keys absent from the entry (unlabelled entries have no ``label``).
    """

    def __init__(self, keys: KeysCollection = ("image", "label"), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if "frame" not in d:
                raise DataError(str(d[key]), "datalist entry has no 'frame' (not a prepared M&Ms entry)")
            index = int(d["frame"]) if key == "image" else int(d.get("phase", -1))
            if key != "image" and index < 0:
                raise DataError(str(d[key]), "labelled entry has no 'phase' (0 ED, 1 ES)")
            slice_index = d.get("slice")
            array, spacing = read_cine(d[key], str(key), index, slice_index)
            affine = torch.eye(array.ndim + 1, dtype=torch.float64)
            affine[: array.ndim, : array.ndim] = torch.diag(torch.tensor(spacing, dtype=torch.float64))
            name = Path(str(d[key])).stem + f"_frame{int(d['frame']):02d}"
            meta = {
                "filename_or_obj": str(d[key]),
                "case_id": name if slice_index is None else f"{name}_slice{int(slice_index):02d}",
                "spacing": np.asarray(spacing),
                "original_channel_dim": "no_channel",
                "spatial_shape": np.asarray(array.shape),
            }
            dtype = np.float32 if key == "image" else np.int64
            d[key] = MetaTensor(torch.as_tensor(array.astype(dtype)), affine=affine, meta=meta)
        return d


class SlicePool:
    """Slice entries to draw random 2-D arrays from (EPL's histogram references and Fourier targets).

    Args:
        entries: datalist entries with ``image``, ``frame`` and ``slice`` (absolute paths or relative to ``root``).
        root: folder the entries' paths are relative to.
        domain: keep only entries of this ``domain``.

    Raises:
        DataError: no entry left.
    """

    def __init__(self, entries: Sequence[Mapping[str, Any]], root: str | os.PathLike | None = None, domain=None):
        self.root = None if root is None else Path(root)
        self.entries = [dict(e) for e in entries if "slice" in e and (domain is None or e.get("domain") == domain)]
        if not self.entries:
            raise DataError(
                str(root), f"no slice entries{'' if domain is None else f' of domain {domain!r}'} to draw from"
            )
        self.domain = domain

    @classmethod
    def from_datalist(cls, datalist: str | os.PathLike, split: str = "unlabeled", domain: Any = None) -> "SlicePool":
        """The slices of ``split`` in a prepared datalist; ``domain="first_source"``: the first vendor (A, B, C, D
        order) that is not the datalist's ``target`` (EPL's histogram reference domain)."""
        import json

        if domain == "first_source":
            target = json.loads(Path(datalist).read_text()).get("target")
            domain = next(v for v in "ABCD" if v != target)
        return cls(load_split(datalist, split), root=find_prepared_root(datalist), domain=domain)

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, index: int) -> tuple[np.ndarray, tuple[float, ...]]:
        """``(slice, in-plane spacing)`` of entry ``index``."""
        entry = self.entries[index]
        path = Path(entry["image"])
        if self.root is not None and not path.is_absolute():
            path = self.root / path
        return read_cine(path, "image", int(entry["frame"]), int(entry["slice"]))

    def draw(self, rng: np.random.RandomState | np.random.Generator) -> tuple[np.ndarray, tuple[float, ...]]:
        """A uniformly random slice and its spacing."""
        index = rng.randint(len(self)) if isinstance(rng, np.random.RandomState) else rng.integers(len(self))
        return self.read(int(index))
