"""EPL's data augmentations (epl.md §3, §5): Fourier amplitude swap and CutMix box masks.

- :func:`fourier_amplitude_swap` blends the centred low-frequency amplitude window of an image with a target's and
  keeps the image's phase (FDA-style "Fourier twin", Yao et al., AAAI 2022, Eq. 1-2 as implemented by the official
  code: the window is blended, the outside kept). :class:`FourierAmplitudeSwapd` is its dict form.
- :func:`cutmix_box_mask` draws the CPS-style CutMix masks (several boxes of random area and aspect; overlapping
  boxes toggle).
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from torch import Tensor

__all__ = ["fourier_amplitude_swap", "FourierAmplitudeSwapd", "cutmix_box_mask"]

ArrayLike = Union[np.ndarray, Tensor]


def _swap_numpy(image: np.ndarray, target: np.ndarray, window_frac: float, lam: float) -> np.ndarray:
    spectrum = np.fft.fft2(image.astype(np.float64), axes=(-2, -1))
    amplitude, phase = np.abs(spectrum), np.angle(spectrum)
    target_amplitude = np.abs(np.fft.fft2(target.astype(np.float64), axes=(-2, -1)))
    amplitude = np.fft.fftshift(amplitude, axes=(-2, -1))
    target_amplitude = np.fft.fftshift(target_amplitude, axes=(-2, -1))
    h, w = image.shape[-2:]
    b = int(math.floor(window_frac * min(h, w)))
    ch, cw = h // 2, w // 2
    window = (..., slice(max(ch - b, 0), ch + b + 1), slice(max(cw - b, 0), cw + b + 1))
    amplitude[window] = amplitude[window] * (1.0 - lam) + target_amplitude[window] * lam
    amplitude = np.fft.ifftshift(amplitude, axes=(-2, -1))
    return np.real(np.fft.ifft2(amplitude * np.exp(1j * phase), axes=(-2, -1)))


def fourier_amplitude_swap(
    image: ArrayLike, target: ArrayLike, window_frac: float = 0.01, lam: float = 1.0
) -> ArrayLike:
    """``image`` with the low-frequency amplitude of ``target`` blended in, its own phase kept (epl.md §5).

    Per channel: amplitudes of both 2D spectra (last two axes) are ``fftshift``-ed; inside the window of half-width
    ``b = floor(window_frac · min(H, W))`` around DC (rows ``H//2 - b .. H//2 + b``, columns likewise, inclusive),
    ``A <- (1 - lam) A + lam A_target``; outside, ``A`` is kept. The result is ``Re(ifft2(A e^{i phase}))`` with no
    clipping. ``lam = 0`` returns the image; since DC is always inside, ``lam = 1`` gives ``mean(out) = mean(target)``
    for non-negative inputs.

    Args:
        image: ``(C, H, W)`` (or any ``(..., H, W)``) numpy array or torch tensor.
        target: same shape as ``image``; the source of the amplitude.
        window_frac: window half-width as a fraction of ``min(H, W)`` (0.01: a 7×7 window at 300×300).
        lam: blend weight of the target's amplitude, in [0, 1] (official 1.0).

    Returns:
        The same type, shape and floating dtype as ``image`` (float32 for integer input); computed in float64.

    Raises:
        ValueError: mismatched shapes, fewer than 2 dimensions, ``lam`` outside [0, 1] or a negative ``window_frac``.
    """
    if tuple(image.shape) != tuple(target.shape) or image.ndim < 2:
        raise ValueError(
            f"image and target must share one shape (..., H, W), got {tuple(image.shape)} and {tuple(target.shape)}."
        )
    if not 0.0 <= lam <= 1.0 or window_frac < 0:
        raise ValueError(f"lam must be in [0, 1] and window_frac >= 0, got lam={lam}, window_frac={window_frac}.")
    if isinstance(image, Tensor):
        out = _swap_numpy(
            image.detach().cpu().numpy(), torch.as_tensor(target).detach().cpu().numpy(), window_frac, lam
        )
        dtype = image.dtype if image.is_floating_point() else torch.float32
        return torch.from_numpy(out).to(device=image.device, dtype=dtype)
    out = _swap_numpy(np.asarray(image), np.asarray(target), window_frac, lam)
    dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32
    return out.astype(dtype)


class FourierAmplitudeSwapd(MapTransform):
    """Dict form of :func:`fourier_amplitude_swap`: ``data[output_key] = swap(data[key], data[target_key])``.

    The target image is chosen by the pipeline (epl.md §3: a random source-domain slice, intensity-normalised and
    brought to the image's geometry) and stored under ``target_key`` before this transform runs.
    """

    def __init__(
        self,
        keys: KeysCollection,
        target_key: str,
        output_key: str,
        window_frac: float = 0.01,
        lam: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"FourierAmplitudeSwapd takes one image key, got {self.keys}.")
        self.target_key, self.output_key = target_key, output_key
        self.window_frac, self.lam = float(window_frac), float(lam)

    def __call__(self, data: Mapping[Hashable, ArrayLike]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.target_key not in d:
                raise KeyError(f"FourierAmplitudeSwapd: the target image key {self.target_key!r} is missing.")
            d[self.output_key] = fourier_amplitude_swap(d[key], d[self.target_key], self.window_frac, self.lam)
        return d


def _uniform(shape: Sequence[int], low: float, high: float, generator: Optional[torch.Generator]) -> Tensor:
    return low + (high - low) * torch.rand(tuple(shape), generator=generator, dtype=torch.float64)


def cutmix_box_mask(
    batch: int,
    spatial_size: Tuple[int, int],
    n_boxes: int = 3,
    area_range: Tuple[float, float] = (0.25, 0.5),
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """CutMix masks ``(batch, 1, H, W)`` of 0/1 float32, one per sample (epl.md §3, CPS's box mask generator).

    Per sample and box: area ``a ~ U(area_range)``; height fraction ``h = exp(U(0, 1) · ln a)``, width ``w = a / h``,
    both times ``sqrt(1 / n_boxes)``; size ``round((h, w) · (H, W))``; top-left ``round((shape - size) · u)`` with
    ``u ~ U(0, 1)`` per axis. Starting from zeros, each box region is flipped (``1 - M``), so overlapping boxes
    toggle back to 0.

    Args:
        batch: number of masks.
        spatial_size: ``(H, W)``.
        n_boxes: boxes per mask (3).
        area_range: range of each box's area fraction before the ``1 / n_boxes`` scaling.
        generator: source of every random draw (seed it for reproducible masks).

    Raises:
        ValueError: non-positive sizes or an area range outside (0, 1].
    """
    h_size, w_size = (int(s) for s in spatial_size)
    low, high = (float(a) for a in area_range)
    if batch < 1 or n_boxes < 1 or h_size < 1 or w_size < 1:
        raise ValueError(f"batch, n_boxes and spatial_size must be positive, got {batch}, {n_boxes}, {spatial_size}.")
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"area_range must satisfy 0 < low <= high <= 1, got {area_range}.")
    area = _uniform((batch, n_boxes), low, high, generator)
    height = torch.exp(_uniform((batch, n_boxes), 0.0, 1.0, generator) * torch.log(area))
    width = area / height
    scale = math.sqrt(1.0 / n_boxes)
    shape = torch.tensor([h_size, w_size], dtype=torch.float64)
    sizes = torch.round(torch.stack([height * scale, width * scale], dim=-1) * shape)
    starts = torch.round((shape - sizes) * _uniform((batch, n_boxes, 2), 0.0, 1.0, generator))
    masks = torch.zeros(batch, 1, h_size, w_size)
    for i in range(batch):
        for j in range(n_boxes):
            y0, x0 = int(starts[i, j, 0]), int(starts[i, j, 1])
            y1, x1 = y0 + int(sizes[i, j, 0]), x0 + int(sizes[i, j, 1])
            masks[i, 0, y0:y1, x0:x1] = 1.0 - masks[i, 0, y0:y1, x0:x1]
    return masks
