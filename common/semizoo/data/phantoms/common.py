"""Shared helpers of the phantom generators: per-case RNG, smooth fields, tubes, noise and deterministic writers.

Everything is defined in millimetres on a grid centred at the origin, so a case keeps its anatomy whatever the
matrix size. Writers produce byte-identical files across runs (gzip with ``mtime=0``, no timestamps).
"""

from __future__ import annotations

import gzip
import os
import string
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "DATASET_CODES",
    "case_rng",
    "random_id",
    "grid",
    "smooth_field",
    "rotation",
    "bezier",
    "tube",
    "blur",
    "rician",
    "write_gz",
    "write_nifti_gz",
    "write_nrrd",
]

#: Stable integer code of each dataset in the per-case seed ``SeedSequence([seed, code, k])``; never renumber.
DATASET_CODES = {"la": 1, "acdc": 2, "mnms": 3, "busi": 4, "udiat": 5, "snubh": 6}

_ID_ALPHABET = np.array(list(string.ascii_uppercase + string.digits))


def case_rng(seed: int, dataset: str, k: int) -> np.random.Generator:
    """Generator of case ``k``: ``Generator(PCG64(SeedSequence([seed, DATASET_CODES[dataset], k])))``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), DATASET_CODES[dataset], int(k)])))


def random_id(rng: np.random.Generator, length: int = 20) -> str:
    """``length`` uppercase alphanumerics drawn from ``rng``."""
    return "".join(_ID_ALPHABET[rng.integers(0, len(_ID_ALPHABET), size=length)])


def grid(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Open (broadcastable) voxel-centre coordinates in mm, centred at the origin, one array per axis."""
    axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def smooth_field(
    rng: np.random.Generator,
    shape: Sequence[int],
    spacing: Sequence[float],
    length: float,
    n_features: int = 24,
) -> np.ndarray:
    """Zero-mean, about unit-variance Gaussian random field with correlation length ``length`` mm.

    Long fields: random Fourier features (Rahimi & Recht 2007) of an RBF kernel on a coarse grid (step about
    ``length / 4``) spanning the same extent, trilinearly upsampled to ``shape``: cheap and resolution-free.
    Short fields (the coarse grid would not be coarse): Gaussian-filtered white noise, scaled to unit variance.
    """
    shape = tuple(int(n) for n in shape)
    extent = [(n - 1) * s for n, s in zip(shape, spacing)]
    coarse = tuple(min(n, max(2, int(np.ceil(e / (length / 4.0))) + 1)) for n, e in zip(shape, extent))
    if np.prod(coarse) * 8 > np.prod(shape):
        noise = rng.standard_normal(shape, dtype=np.float32)
        sigma = [length / s / np.sqrt(2.0) for s in spacing]
        field = ndimage.gaussian_filter(noise, sigma, mode="wrap", truncate=3.0)
        return (field - field.mean()) / max(float(field.std()), 1e-12)
    axes = [np.linspace(-e / 2.0, e / 2.0, c) if n > 1 else np.zeros(1) for n, e, c in zip(shape, extent, coarse)]
    pts = np.meshgrid(*axes, indexing="ij")
    omega = rng.normal(0.0, 1.0 / length, size=(n_features, len(shape)))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n_features)
    arg = sum(omega[:, i].reshape((-1,) + (1,) * len(shape)) * pts[i][None] for i in range(len(shape)))
    field = np.sqrt(2.0 / n_features) * np.cos(arg + phase.reshape((-1,) + (1,) * len(shape))).sum(0)
    return _upsample_linear(field.astype(np.float32), shape)


def _upsample_linear(field: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable linear interpolation of ``field`` to ``shape``, corner voxel centres aligned (no BLAS calls)."""
    for axis in reversed(range(field.ndim)):
        c, n = field.shape[axis], shape[axis]
        if c == n:
            continue
        pos = np.linspace(0.0, c - 1.0, n)
        lo = np.minimum(np.floor(pos).astype(int), c - 2)
        frac = (pos - lo).astype(np.float32).reshape((-1,) + (1,) * (field.ndim - axis - 1))
        field = np.take(field, lo, axis=axis) * (1.0 - frac) + np.take(field, lo + 1, axis=axis) * frac
    return np.ascontiguousarray(field, dtype=np.float32)


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """3×3 rotation about a random axis by an angle uniform in ``[-max_deg, max_deg]`` degrees (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 12) -> np.ndarray:
    """``n`` points (n, 3) of the quadratic Bézier curve with control points ``p0, p1, p2``."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def tube(
    points: Sequence[np.ndarray],
    centreline: np.ndarray,
    radius: float | np.ndarray,
    margin: float = 0.0,
    axes: Sequence[np.ndarray] | None = None,
    slack: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed distance to a tube around a polyline, evaluated only near it.

    Args:
        points: coordinate arrays ``(x, y, z)`` in mm, all of one 3D shape.
        centreline: (M, 3) polyline, M >= 2.
        radius: scalar or (M,) radius at each polyline point (linear in between).
        margin: also report voxels up to ``margin`` mm outside the tube.
        axes: optional sorted 1D voxel coordinates per axis of the undeformed grid, with ``slack`` the largest
            displacement of ``points`` from that grid: restricts the search to a sub-box (faster).

    Returns:
        ``(index, sdf, arclength)``: flat indices of the voxels within ``radius + margin`` of the polyline, the
        distance to the tube surface there (negative inside) and the arc length of their closest centreline point.
    """
    cl = np.asarray(centreline, dtype=np.float64)
    rad = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(cl),))
    reach = rad.max() + margin
    lo, hi = cl.min(0) - reach, cl.max(0) + reach
    shape = np.shape(points[0])
    box = [slice(0, n) for n in shape]
    if axes is not None:
        for i, ax in enumerate(axes):
            box[i] = slice(int(np.searchsorted(ax, lo[i] - slack)), int(np.searchsorted(ax, hi[i] + slack, "right")))
    sub = [np.asarray(p)[tuple(box)] for p in points]
    near = np.ones(sub[0].shape, bool)
    for i in range(3):
        near &= (sub[i] >= lo[i]) & (sub[i] <= hi[i])
    local = np.nonzero(near)
    index = np.ravel_multi_index(tuple(loc + b.start for loc, b in zip(local, box)), shape)
    p = np.stack([q[local] for q in sub], axis=1).astype(np.float32)  # (N, 3)
    a, b = cl[:-1].astype(np.float32), cl[1:].astype(np.float32)
    ab = b - a
    seg_len = np.linalg.norm(ab, axis=1)
    pa = p[None] - a[:, None]  # (M-1, N, 3)
    dot = np.einsum("mnk,mk->mn", pa, ab)
    t = np.clip(dot / np.maximum(seg_len**2, 1e-12)[:, None], 0.0, 1.0)
    dist = np.sqrt(np.maximum(np.einsum("mnk,mnk->mn", pa, pa) - t * (2 * dot - t * seg_len[:, None] ** 2), 0.0))
    sdf_all = dist - (rad[:-1, None] + t * (rad[1:] - rad[:-1])[:, None]).astype(np.float32)
    seg = np.argmin(sdf_all, axis=0)
    cols = np.arange(len(index))
    sdf = sdf_all[seg, cols]
    arclength = np.concatenate([[0.0], np.cumsum(seg_len)])[seg] + t[seg, cols] * seg_len[seg]
    keep = sdf <= margin
    return index[keep], sdf[keep], arclength[keep]


def blur(image: np.ndarray, sigma_mm: float, spacing: Sequence[float], axes: Sequence[int] | None = None) -> np.ndarray:
    """Gaussian point-spread blur of ``sigma_mm`` along ``axes`` (default all)."""
    axes = range(image.ndim) if axes is None else axes
    sigma = [0.0] * image.ndim
    for ax in axes:
        sigma[ax] = sigma_mm / spacing[ax]
    return ndimage.gaussian_filter(image, sigma, mode="nearest", truncate=3.0)


def rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of ``image`` plus complex white Gaussian noise of standard deviation ``sigma`` per channel."""
    re = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)


def write_gz(path: str | os.PathLike, data: bytes, level: int = 1) -> None:
    """Write ``data`` gzip-compressed without a timestamp or file name (byte-identical across runs)."""
    with open(path, "wb") as f:
        f.write(gzip.compress(data, compresslevel=level, mtime=0))


def write_nifti_gz(path: str | os.PathLike, array: np.ndarray, spacing: Sequence[float]) -> None:
    """Write ``array`` (X, Y, Z[, T]) as deterministic ``.nii.gz`` with a diagonal affine of ``spacing`` (mm)."""
    import nibabel as nib

    affine = np.diag([float(s) for s in spacing[:3]] + [1.0])
    img = nib.Nifti1Image(array, affine)
    img.header.set_data_dtype(array.dtype)
    img.header.set_zooms(tuple(float(s) for s in spacing[:3]) + (1.0,) * (array.ndim - 3))
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    write_gz(path, img.to_bytes())


def write_nrrd(path: str | os.PathLike, array: np.ndarray, spacing: Sequence[float]) -> None:
    """Write a uint8 (X, Y, Z) array as a gzip NRRD (the header ITK writes; data x fastest; no timestamps)."""
    if array.dtype != np.uint8 or array.ndim != 3:
        raise ValueError(f"write_nrrd expects a 3D uint8 array, got {array.dtype} {array.shape}")
    fmt = "{:.17g}".format
    s = [fmt(float(v)) for v in spacing]
    header = (
        "NRRD0004\n"
        "# Complete NRRD file format specification at:\n"
        "# http://teem.sourceforge.net/nrrd/format.html\n"
        "type: unsigned char\n"
        "dimension: 3\n"
        "space: left-posterior-superior\n"
        f"sizes: {array.shape[0]} {array.shape[1]} {array.shape[2]}\n"
        f"space directions: ({s[0]},0,0) (0,{s[1]},0) (0,0,{s[2]})\n"
        "kinds: domain domain domain\n"
        "encoding: gzip\n"
        "space origin: (0,0,0)\n\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(gzip.compress(array.tobytes(order="F"), compresslevel=1, mtime=0))
