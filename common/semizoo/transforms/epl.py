"""EPL's data pipeline for M&Ms (epl.md §3): intensity, geometry and Fourier twins as MONAI dict transforms.

- :func:`match_histogram` (cumulative-histogram matching, as ``skimage.exposure.match_histograms`` for one channel)
  and :func:`percentile_min_max` (clip to the [0.5, 99.5] percentiles, min-max to [0, 1]);
- :class:`EPLIntensityd`: per 2-D slice, histogram-match to a random slice of the reference pool (the first source
  domain), then ``percentile_min_max``; used for training and test (seeded), as the official code does;
- :class:`EPLGeometryd`: rotate by a random whole number of degrees in [0, 90] (image bilinear, label nearest),
  then resize to a ``target_spacing`` grid: ``(int(H s_y / t), int(W s_x / t))``;
- :class:`FourierTwind`: the Fourier twin of an image: a random pool slice, normalised, rotated by the image's
  angle, resized to the grid, padded/cropped to the image's size, then ``fourier_amplitude_swap(image, target)``;
- :class:`RandGaussianBlurd`: torchvision ``GaussianBlur(kernel, σ ~ U(σ_min, σ_max))``, one draw per call;
- :class:`ProbabilityThresholdd`: probabilities to a label map, class ``c ≥ 1`` where ``p_c > 0.5`` (EPL's test
  rule; at most one class can exceed 0.5), else background;
- the factories :func:`epl_train_transforms`, :func:`epl_eval_transforms` and :func:`epl_post_transforms`.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Activationsd,
    CenterSpatialCropd,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Flip,
    Invertd,
    LoadImaged,
    MapTransform,
    RandFlipd,
    Randomizable,
    RandSpatialCropd,
    Resize,
    Resized,
    Rotate,
    ScaleIntensityd,
    Spacingd,
    SpatialCropd,
    SpatialPadd,
)

from ..data.cine import LoadCined, SlicePool
from .fourier import fourier_amplitude_swap

__all__ = [
    "match_histogram",
    "percentile_min_max",
    "EPLIntensityd",
    "EPLGeometryd",
    "FourierTwind",
    "RandGaussianBlurd",
    "ProbabilityThresholdd",
    "epl_train_transforms",
    "epl_eval_transforms",
    "epl_post_transforms",
    "ConditionalFlipd",
    "epl_busi_train_transforms",
    "epl_busi_eval_transforms",
]


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def match_histogram(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map ``image``'s values so that its cumulative histogram follows ``reference``'s (float64 result).

    Each distinct value of ``image`` goes to the reference value at the same cumulative frequency, linearly
    interpolated between the reference's distinct values.
    """
    values, inverse, counts = np.unique(np.ravel(image), return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(np.ravel(reference), return_counts=True)
    quantiles = np.cumsum(counts) / np.size(image)
    ref_quantiles = np.cumsum(ref_counts) / np.size(reference)
    return np.interp(quantiles, ref_quantiles, ref_values.astype(np.float64))[inverse].reshape(np.shape(image))


def percentile_min_max(image: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Clip to the ``lower``/``upper`` percentiles, then min-max to [0, 1] (float32; a constant image gives 0)."""
    low, high = np.percentile(image, [lower, upper])
    clipped = np.clip(image, low, high).astype(np.float64)
    span = clipped.max() - clipped.min()
    return ((clipped - clipped.min()) / span if span > 0 else np.zeros_like(clipped)).astype(np.float32)


def _as_like(array: Any, like: Any) -> Any:
    """``array`` as a float32 tensor carrying ``like``'s meta data (when ``like`` is a MetaTensor)."""
    out = torch.as_tensor(array, dtype=torch.float32)
    if isinstance(like, MetaTensor):
        return MetaTensor(out, meta=like.meta, applied_operations=like.applied_operations)
    return out


class EPLIntensityd(Randomizable, MapTransform):
    """Histogram matching to a random reference slice, then percentile clipping and min-max, per 2-D slice.

    Args:
        keys: image keys (channel-first ``(C, H, W)`` or ``(C, Z, H, W)``; every 2-D slice is treated alone).
        reference: slices to match to (the first source domain); ``None`` skips the matching.
        lower, upper: percentiles of the clip.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        reference: SlicePool | None = None,
        lower: float = 0.5,
        upper: float = 99.5,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.reference, self.lower, self.upper = reference, float(lower), float(upper)

    def randomize(self, data: Any = None) -> None:
        pass

    def slice(self, image: np.ndarray) -> np.ndarray:
        """One 2-D slice through the whole intensity chain."""
        if self.reference is not None:
            image = match_histogram(image, self.reference.draw(self.R)[0])
        return percentile_min_max(image, self.lower, self.upper)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            array = _numpy(d[key]).astype(np.float64)
            planes = array.reshape(-1, *array.shape[-2:])
            out = np.stack([self.slice(p) for p in planes]).reshape(array.shape)
            d[key] = _as_like(out, d[key])
        return d


def _resize_to_grid(image: Any, spacing: Sequence[float], target_spacing: float, mode: str) -> Any:
    height, width = image.shape[-2:]
    size = (
        max(1, int(height * float(spacing[-2]) / target_spacing)),
        max(1, int(width * float(spacing[-1]) / target_spacing)),
    )
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return Resize(spatial_size=size, mode=mode, anti_aliasing=False, **kwargs)(image)


class EPLGeometryd(Randomizable, MapTransform):
    """Rotate by ``randint(0, max_angle)`` degrees, then resize in-plane to a ``target_spacing`` grid.

    The angle (degrees) is stored under ``angle_key`` for :class:`FourierTwind`. Inputs are channel-first 2-D.

    Args:
        keys: image and label keys (labels use nearest interpolation).
        label_keys: which of ``keys`` are label maps.
        target_spacing: grid spacing in mm (1.1, official; the CPU configs use a coarser grid).
        max_angle: largest rotation in whole degrees (90).
        spacing_key: entry field with the in-plane spacing ``(s_y, s_x)``.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        label_keys: KeysCollection = ("label",),
        target_spacing: float = 1.1,
        max_angle: int = 90,
        spacing_key: str = "spacing",
        angle_key: str = "epl_angle",
        allow_missing_keys: bool = True,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_keys = set(label_keys)
        self.target_spacing, self.max_angle = float(target_spacing), int(max_angle)
        self.spacing_key, self.angle_key = spacing_key, angle_key
        self.angle = 0

    def randomize(self, data: Any = None) -> None:
        self.angle = int(self.R.randint(0, self.max_angle + 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        self.randomize()
        spacing = [float(s) for s in np.ravel(_numpy(d[self.spacing_key]))]
        for key in self.key_iterator(d):
            label = key in self.label_keys
            mode = "nearest" if label else "bilinear"
            image = torch.as_tensor(_numpy(d[key]), dtype=torch.float32)
            rotated = Rotate(math.radians(self.angle), keep_size=True, mode=mode, padding_mode="zeros")(image)
            resized = _resize_to_grid(rotated, spacing, self.target_spacing, mode)
            d[key] = torch.as_tensor(resized).round().long() if label else torch.as_tensor(resized)
        d[self.angle_key] = self.angle
        return d


class FourierTwind(Randomizable, MapTransform):
    """Build ``output_key``: the Fourier twin of ``key`` with a random pool slice as amplitude target (epl.md §3).

    Args:
        key: the (already resized, padded and cropped) channel-first 2-D image.
        pool: target slices (all source-domain slices).
        output_key: where the twin goes.
        target_spacing: the grid of :class:`EPLGeometryd`.
        window_frac, lam: :func:`fourier_amplitude_swap` (0.01, 1.0).
        angle_key: the image's rotation from :class:`EPLGeometryd`.
        lower, upper: percentiles of the target's clip (0 and 100: plain min-max, BUSI).
        target_size: resize the target to this size instead of the ``target_spacing`` grid (BUSI: 300×300).
    """

    def __init__(
        self,
        key: str = "image",
        pool: SlicePool | None = None,
        output_key: str = "image_fourier",
        target_spacing: float = 1.1,
        window_frac: float = 0.01,
        lam: float = 1.0,
        angle_key: str = "epl_angle",
        lower: float = 0.5,
        upper: float = 99.5,
        target_size: Sequence[int] | None = None,
    ) -> None:
        MapTransform.__init__(self, key)
        self.target_size = None if target_size is None else tuple(int(s) for s in target_size)
        if pool is None:
            raise ValueError("FourierTwind needs a SlicePool of target slices.")
        self.key, self.pool, self.output_key = key, pool, output_key
        self.target_spacing, self.window_frac, self.lam = float(target_spacing), float(window_frac), float(lam)
        self.angle_key, self.lower, self.upper = angle_key, float(lower), float(upper)

    def randomize(self, data: Any = None) -> None:
        pass

    def target_like(self, image: torch.Tensor, angle: int) -> torch.Tensor:
        """A random pool slice, normalised, rotated by ``angle``, on the grid and cut to ``image``'s size."""
        target, spacing = self.pool.draw(self.R)
        target = torch.as_tensor(percentile_min_max(target, self.lower, self.upper))[None]
        target = Rotate(math.radians(angle), keep_size=True, mode="bilinear", padding_mode="zeros")(target)
        if self.target_size is None:
            target = _resize_to_grid(target, spacing, self.target_spacing, "bilinear")
        else:
            target = Resize(self.target_size, mode="bilinear", align_corners=False, anti_aliasing=False)(target)
        size = tuple(image.shape[-2:])
        target = SpatialPadd("t", spatial_size=size, method="symmetric")({"t": target})["t"]
        return torch.as_tensor(CenterSpatialCropd("t", roi_size=size)({"t": target})["t"])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        image = torch.as_tensor(_numpy(d[self.key]), dtype=torch.float32)
        target = self.target_like(image, int(d.get(self.angle_key, 0)))
        d[self.output_key] = fourier_amplitude_swap(image, target.float(), self.window_frac, self.lam).float()
        return d


class RandGaussianBlurd(Randomizable, MapTransform):
    """``torchvision.transforms.GaussianBlur(kernel_size, sigma=(low, high))`` on each key, one σ per key and call."""

    def __init__(
        self,
        keys: KeysCollection,
        kernel_size: int = 5,
        sigma: tuple[float, float] = (0.25, 1.25),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.kernel_size, self.sigma = int(kernel_size), (float(sigma[0]), float(sigma[1]))

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from torchvision.transforms.functional import gaussian_blur

        d = dict(data)
        for key in self.key_iterator(d):
            sigma = float(self.R.uniform(*self.sigma))
            image = torch.as_tensor(_numpy(d[key]), dtype=torch.float32)
            d[key] = gaussian_blur(image, [self.kernel_size, self.kernel_size], [sigma, sigma])
        return d


class ProbabilityThresholdd(MapTransform):
    """``(K, *S)`` probabilities to a ``(1, *S)`` label map: class ``c ≥ 1`` where ``p_c > threshold``, else 0."""

    def __init__(self, keys: KeysCollection = "pred", threshold: float = 0.5, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            probs = d[key]
            foreground = probs[1:] > self.threshold
            classes = torch.arange(1, probs.shape[0], device=probs.device).view(-1, *[1] * (probs.dim() - 1))
            label = (foreground * classes).sum(0)
            d[key] = _as_like(label[None], probs)
        return d


def epl_train_transforms(
    labeled: bool = True,
    reference: SlicePool | None = None,
    fourier_pool: SlicePool | None = None,
    target_spacing: float = 1.1,
    pad_size: int = 300,
    crop_size: int = 288,
    window_frac: float = 0.01,
    lam: float = 1.0,
    load: bool = True,
) -> Compose:
    """M&Ms training slices (epl.md §3): load, intensity, rotate + grid resize, then

    - labelled: pad to ``crop_size`` (symmetric), crop ``crop_size`` at (0, 0);
    - unlabelled: pad to ``pad_size``, centre-crop ``pad_size``, Fourier twin (``image_fourier``), random crop
      ``crop_size`` shared by image and twin;

    then horizontal and vertical flips (p = 0.5, shared) and an independent Gaussian blur of image and twin.
    """
    keys = ["image", "label"] if labeled else ["image"]
    out = [LoadCined(keys), EnsureChannelFirstd(keys, channel_dim="no_channel")] if load else []
    out += [EPLIntensityd("image", reference), EPLGeometryd(keys, target_spacing=target_spacing)]
    crop = (int(crop_size), int(crop_size))
    if labeled:
        out += [SpatialPadd(keys, crop, method="symmetric"), SpatialCropd(keys, roi_start=(0, 0), roi_end=crop)]
        spatial = keys
    else:
        pad = (int(pad_size), int(pad_size))
        out += [SpatialPadd("image", pad, method="symmetric"), CenterSpatialCropd("image", pad)]
        out += [FourierTwind("image", fourier_pool, target_spacing=target_spacing, window_frac=window_frac, lam=lam)]
        spatial = ["image", "image_fourier"]
        out += [RandSpatialCropd(spatial, crop, random_size=False)]
    out += [RandFlipd(spatial, prob=0.5, spatial_axis=0), RandFlipd(spatial, prob=0.5, spatial_axis=1)]
    out += [RandGaussianBlurd("image")] + ([] if labeled else [RandGaussianBlurd("image_fourier")])
    out += [EnsureTyped(spatial, track_meta=False)]
    return Compose(out)


def epl_eval_transforms(
    reference: SlicePool | None = None,
    target_spacing: float = 1.1,
    crop_size: int = 288,
    labeled: bool = True,
    load: bool = True,
) -> Compose:
    """M&Ms validation/test volumes ``(1, Z, Y, X)``: intensity per slice (seeded histogram matching), in-plane
    resampling to ``target_spacing``, symmetric pad to ``crop_size``, crop at (0, 0). Only the image is transformed;
    :func:`epl_post_transforms` inverts these on the probabilities, so metrics use the label's own grid.
    """
    keys = ["image", "label"] if labeled else ["image"]
    crop = int(crop_size)
    out = [LoadCined(keys), EnsureChannelFirstd(keys, channel_dim="no_channel")] if load else []
    out += [
        EPLIntensityd("image", reference),
        EnsureTyped(keys),
        Spacingd("image", pixdim=(-1.0, float(target_spacing), float(target_spacing)), mode="bilinear"),
        SpatialPadd("image", (-1, crop, crop), method="symmetric"),
        SpatialCropd("image", roi_start=(0, 0, 0), roi_end=(1 << 20, crop, crop)),
    ]
    return Compose(out)


def epl_post_transforms(preprocessing: Compose, threshold: float = 0.5) -> Compose:
    """Network log-probabilities → probabilities → inverse of ``preprocessing`` → label map (``p_c > 0.5``)."""
    return Compose(
        [
            Activationsd("pred", softmax=True),
            Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
            ProbabilityThresholdd("pred", threshold),
        ]
    )


class ConditionalFlipd(MapTransform):
    """Flip ``keys`` along ``spatial_axis`` when the entry's ``flag_key`` is truthy (BUSI's malignant balancing)."""

    def __init__(self, keys: KeysCollection, flag_key: str = "hflip", spatial_axis: int = 0, allow_missing_keys=True):
        super().__init__(keys, allow_missing_keys)
        self.flag_key, self.flip = flag_key, Flip(spatial_axis=spatial_axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if d.get(self.flag_key):
            for key in self.key_iterator(d):
                d[key] = self.flip(d[key])
        return d


# MONAI reads PNGs as (W, H): spatial axis 0 runs left-right, so a horizontal flip is a flip of axis 0.
_BUSI_HFLIP_AXIS = 0


def epl_busi_train_transforms(
    labeled: bool = True,
    fourier_pool: Any = None,
    resize: int = 300,
    crop_size: int = 288,
    window_frac: float = 0.01,
    lam: float = 1.0,
) -> Compose:
    """BUSI training images (epl.md §3): load the grey PNG (and the {0, 1} mask), min-max to [0, 1], the balancing
    flip (``hflip`` entries), resize to ``resize``² (masks nearest), then

    - unlabelled: Fourier twin with a random training image (``fourier_pool``, plain min-max, resized alike);
    - both: random crop ``crop_size``² (shared by image, twin and mask), horizontal flip p = 0.5 (shared), an
      independent Gaussian blur of image and twin.
    """
    keys = ["image", "label"] if labeled else ["image"]
    size = (int(resize), int(resize))
    out = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys, channel_dim="no_channel"),
        ScaleIntensityd("image", minv=0.0, maxv=1.0),
        ConditionalFlipd(keys, spatial_axis=_BUSI_HFLIP_AXIS),
        Resized("image", size, mode="bilinear", align_corners=False, anti_aliasing=False),
    ]
    if labeled:
        out.append(Resized("label", size, mode="nearest"))
        spatial = keys
    else:
        twin = FourierTwind(
            "image", fourier_pool, window_frac=window_frac, lam=lam, lower=0.0, upper=100.0, target_size=size
        )
        out.append(twin)
        spatial = ["image", "image_fourier"]
    crop = (int(crop_size), int(crop_size))
    out += [
        RandSpatialCropd(spatial, crop, random_size=False),
        RandFlipd(spatial, prob=0.5, spatial_axis=_BUSI_HFLIP_AXIS),
    ]
    out += [RandGaussianBlurd("image")] + ([] if labeled else [RandGaussianBlurd("image_fourier")])
    out += [EnsureTyped(spatial, track_meta=False)]
    return Compose(out)


def epl_busi_eval_transforms(size: int = 288, labeled: bool = True, load: bool = True) -> Compose:
    """BUSI validation/test images: load, min-max, resize the image to ``size``² (inverted on the probabilities by
    :func:`epl_post_transforms`, so the Dice is computed at the original resolution)."""
    keys = ["image", "label"] if labeled else ["image"]
    out = [LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys, channel_dim="no_channel")] if load else []
    out += [
        ScaleIntensityd("image", minv=0.0, maxv=1.0),
        EnsureTyped(keys),
        Resized("image", (int(size), int(size)), mode="bilinear", align_corners=False, anti_aliasing=False),
    ]
    return Compose(out)
