"""ACTION's batch augmentations: pre-training views, unlabelled mixing, the stage-3 strong view (action.md §3, §5, §7).

Papers: You et al., ACTION (IPMI 2023) and ACTION++ (MICCAI 2023). Official code charlesyou999648/ACTION @77730a7
(read, never copied): ``code/dataloaders/dataset_withAug.py`` (ACDC ``RandomColorJitter``/``RandomNoise``),
``code/dataloaders/la_heart.py`` (LA ones), ``code/train_{2D,3D}_pretrain*.py`` (which view gets which),
``code/augment.py`` / ``code/augment_3d.py`` (``generate_cutout_mask[_3d]``, ``generate_class_mask``,
``generate_unsup_data[_3d]``, ``transform``, ``batch_transform``).

- :func:`action_pretrain_views`: student/teacher views of the distillation stages.
- :func:`mix_unlabeled`: cutmix / classmix / cutout of a pseudo-labelled batch.
- :class:`ActionStrongAug`: the per-sample colour jitter + blur of the mixed batch (+ optional :class:`AdvMorph`).
- :class:`AdvMorph`: a random smooth displacement (the official ``adv_morph`` module is missing, §7.2).
- :func:`box_gaussian_blur`: Pillow's ``GaussianBlur`` (three box passes per axis) on tensors.

All functions take batches ``(B, C, *spatial)`` on any device and draw every random number from an optional
``torch.Generator`` (CPU or on the data's device; None = torch's global generator), so a seeded generator gives
the same result on every call. Only single-channel brightness and contrast are implemented: torchvision's
saturation and hue leave one-channel images unchanged.

``compat`` / ``intensity_compat`` (§3, §7.10): ``"fixed"`` (default) keeps float intensities throughout (no clamp,
no 8-bit rounding, every slice); ``"official"`` reproduces the official value handling: torchvision's tensor
``ColorJitter`` clamps to [0, 1]; blur goes through ``ToPILImage`` (``⌊255·v⌋`` as bytes, clamped here where the
original wraps), Pillow's 8-bit blur, then ``÷255`` (ACDC) or left in 0..255 (LA); the ACDC strong view quantises
image and confidence to 8 bits and jitters in Pillow's 8-bit arithmetic; the LA strong view only touches slices
``v[:, :, j]`` with ``j < D``. The official path destroys z-scored LA intensities: keep it for side-by-side
reproduction only.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "COMPATS",
    "MIX_MODES",
    "action_pretrain_views",
    "mix_unlabeled",
    "cutout_box_mask",
    "class_mix_mask",
    "ActionStrongAug",
    "AdvMorph",
    "box_gaussian_blur",
]

COMPATS = ("fixed", "official")
MIX_MODES = ("cutmix", "classmix", "cutout")

_ONE = float(1 << 24)
_HALF = float(1 << 23)


# ----------------------------------------------------------------------------------------------------------------
# random numbers
# ----------------------------------------------------------------------------------------------------------------


def _gen_device(generator: Optional[torch.Generator]) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape: Sequence[int], generator: Optional[torch.Generator]) -> Tensor:
    """``U[0, 1)`` float64 on the generator's device."""
    return torch.rand(tuple(shape), generator=generator, device=_gen_device(generator), dtype=torch.float64)


def _coin(p: float, generator: Optional[torch.Generator]) -> bool:
    """True with probability ``p`` (one draw)."""
    return bool(_rand((1,), generator).item() < p)


def _uniform(low: float, high: float, generator: Optional[torch.Generator]) -> float:
    return float(low + (high - low) * _rand((1,), generator).item())


def _randint(low: int, high: int, generator: Optional[torch.Generator]) -> int:
    """Uniform integer in ``[low, high)``."""
    if high <= low:
        raise ValueError(f"empty integer range [{low}, {high}).")
    return int(torch.randint(low, high, (1,), generator=generator, device=_gen_device(generator)).item())


def _check_compat(name: str, value: str) -> str:
    if value not in COMPATS:
        raise ValueError(f"{name} must be one of {COMPATS}, got {value!r}.")
    return value


def _check_prob(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
    return float(value)


def _check_batch(x: Tensor, spatial_dims: Optional[int] = None, name: str = "image") -> int:
    dims = x.dim() - 2
    if dims not in (2, 3) or (spatial_dims is not None and dims != spatial_dims):
        want = "(B, C, H, W) or (B, C, H, W, D)" if spatial_dims is None else f"{spatial_dims} spatial dims"
        raise ValueError(f"{name} must be {want}, got shape {list(x.shape)}.")
    return dims


# ----------------------------------------------------------------------------------------------------------------
# planes: the 2D images that torchvision / Pillow see
# ----------------------------------------------------------------------------------------------------------------


def _to_planes(x: Tensor, axis: Optional[int]) -> Tuple[Tensor, int]:
    """``(B, C, *spatial)`` → ``(B·S, C, P1, P2)``: 2D input as is (S = 1); 3D sliced along tensor ``axis``."""
    if axis is None:
        return x, 1
    moved = x.movedim(axis, 1)
    return moved.reshape((-1,) + tuple(moved.shape[2:])), moved.shape[1]


def _from_planes(planes: Tensor, like: Tensor, axis: Optional[int]) -> Tensor:
    if axis is None:
        return planes
    moved = like.movedim(axis, 1)
    return planes.reshape(moved.shape).movedim(1, axis)


def _jitter_factors(n: int, brightness: Sequence[float], contrast: Sequence[float], generator) -> Tuple[Tensor, ...]:
    """Per-plane brightness factor, contrast factor and order (contrast first) as in ``ColorJitter.get_params``."""
    u = _rand((3, n), generator)
    b = brightness[0] + (brightness[1] - brightness[0]) * u[0]
    c = contrast[0] + (contrast[1] - contrast[0]) * u[1]
    return b, c, u[2] < 0.5


def _jitter(planes: Tensor, brightness, contrast, clamp: bool, generator) -> Tensor:
    """torchvision tensor ``ColorJitter`` (brightness, contrast) on each plane ``(N, C, P1, P2)``.

    Brightness ``b·v``, contrast ``c·v + (1 - c)·mean(v)`` (mean over the plane), in a random order per plane;
    ``clamp`` to [0, 1] after each (torchvision's ``_blend``). Without the clamp both orders give the same result.
    """
    b, c, contrast_first = _jitter_factors(planes.shape[0], brightness, contrast, generator)
    shape = (-1,) + (1,) * (planes.dim() - 1)
    b = b.to(planes.device, planes.dtype).view(shape)
    c = c.to(planes.device, planes.dtype).view(shape)
    first = contrast_first.to(planes.device).view(shape)
    dims = tuple(range(1, planes.dim()))

    def _bright(v: Tensor) -> Tensor:
        out = b * v
        return out.clamp(0.0, 1.0) if clamp else out

    def _contrast(v: Tensor) -> Tensor:
        out = c * v + (1.0 - c) * v.mean(dim=dims, keepdim=True)
        return out.clamp(0.0, 1.0) if clamp else out

    return torch.where(first, _bright(_contrast(planes)), _contrast(_bright(planes)))


def _jitter_levels(levels: Tensor, brightness, contrast, generator) -> Tensor:
    """Pillow ``ColorJitter`` on 8-bit planes (values 0..255): ``ImageEnhance`` blends in float32, truncated.

    Brightness blends with black, contrast with the plane's rounded mean ``int(mean + 0.5)``.
    """
    b, c, contrast_first = _jitter_factors(levels.shape[0], brightness, contrast, generator)
    shape = (-1,) + (1,) * (levels.dim() - 1)
    v32 = levels.to(torch.float32)
    b = b.to(levels.device, torch.float32).view(shape)
    c = c.to(levels.device, torch.float32).view(shape)
    first = contrast_first.to(levels.device).view(shape)
    dims = tuple(range(1, levels.dim()))

    def _bright(v: Tensor) -> Tensor:
        return torch.trunc(b * v).clamp(0.0, 255.0)

    def _contrast(v: Tensor) -> Tensor:
        mean = torch.floor(v.to(torch.float64).mean(dim=dims, keepdim=True) + 0.5).to(torch.float32)
        return torch.trunc(mean + c * (v - mean)).clamp(0.0, 255.0)

    out = torch.where(first, _bright(_contrast(v32)), _contrast(_bright(v32)))
    return out.to(levels.dtype)


def _to_levels(v: Tensor) -> Tensor:
    """``ToPILImage``'s ``mul(255).byte()`` with a clamp instead of the uint8 wrap-around: ``⌊clamp(255v)⌋``."""
    return torch.trunc((v * 255).clamp(0.0, 255.0))


def _pil_box_weights(sigma: float) -> Tuple[int, float, float]:
    """Pillow ``BoxBlur.c``: box radius of ``GaussianBlur(sigma)`` (3 passes) and its 24-bit fixed-point weights.

    Returns ``(half, ww, fw)``: the box covers ``2·half + 1`` whole pixels of weight ``ww / 2^24`` and one pixel on each
    side of weight ``fw / 2^24`` (float32 arithmetic as in C).
    """
    f32 = np.float32
    sigma2 = f32(sigma) * f32(sigma) / f32(3)
    length = f32(np.sqrt(12.0 * float(sigma2) + 1.0))
    whole = f32(np.floor((float(length) - 1.0) / 2.0))
    frac = (f32(2) * whole + f32(1)) * (whole * (whole + f32(1)) - f32(3) * sigma2)
    frac = frac / (f32(6) * (sigma2 - (whole + f32(1)) * (whole + f32(1))))
    radius = whole + frac
    ww = int(f32(1 << 24) / (radius * f32(2) + f32(1)))
    half = int(radius)
    fw = ((1 << 24) - (2 * half + 1) * ww) // 2
    return half, float(ww), float(fw)


def box_gaussian_blur(planes: Tensor, sigma: float, quantised: bool = False) -> Tensor:
    """Pillow's ``ImageFilter.GaussianBlur(radius=sigma)`` on every 2D plane of ``planes`` ``(..., H, W)``.

    Pillow approximates the Gaussian by three passes of a box of fractional radius along W, then three along H,
    with edge replication. ``quantised=True`` works on 8-bit levels (0..255) and rounds after every pass exactly as
    Pillow's fixed-point code (bit-exact for 8-bit input); ``False`` applies the same kernel in float (the
    ``"fixed"`` blur: any intensity scale, no rounding).

    Raises:
        ValueError: ``sigma`` not positive or fewer than 2 dims.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}.")
    if planes.dim() < 2:
        raise ValueError(f"planes must have at least 2 dims, got shape {list(planes.shape)}.")
    half, ww, fw = _pil_box_weights(float(sigma))
    shape = planes.shape
    dtype = torch.float64 if quantised else planes.dtype
    x = planes.reshape((-1, 1) + tuple(shape[-2:])).to(dtype)
    kernel = torch.full((2 * half + 3,), ww, dtype=torch.float64)
    kernel[0] = kernel[-1] = fw
    if not quantised:
        kernel = kernel / kernel.sum()
    kernel = kernel.to(x.device, dtype)
    k = kernel.numel()
    for horizontal in (True, False):
        weight = kernel.view(1, 1, 1, k) if horizontal else kernel.view(1, 1, k, 1)
        pad = (half + 1, half + 1, 0, 0) if horizontal else (0, 0, half + 1, half + 1)
        for _ in range(3):
            x = F.conv2d(F.pad(x, pad, mode="replicate"), weight)
            if quantised:
                x = torch.floor((x + _HALF) / _ONE)
    return x.reshape(shape).to(planes.dtype)


def _blur(planes: Tensor, sigma: float, quantised: bool) -> Tensor:
    """Blur planes ``(N, C, P1, P2)``: float (fixed) or through 8 bits (official; returns 0..255 levels)."""
    if quantised:
        return box_gaussian_blur(_to_levels(planes), sigma, quantised=True)
    return box_gaussian_blur(planes, sigma, quantised=False)


# ----------------------------------------------------------------------------------------------------------------
# pre-training views (§3)
# ----------------------------------------------------------------------------------------------------------------


def action_pretrain_views(
    x: Tensor,
    spatial_dims: int,
    compat: str = "fixed",
    generator: Optional[torch.Generator] = None,
    jitter_prob: float = 0.5,
    blur_prob: float = 0.5,
    jitter_strength: Optional[float] = None,
    sigma_range: Tuple[float, float] = (0.15, 1.15),
) -> Tuple[Tensor, Tensor]:
    """Student and teacher views of a pre-training batch ``x`` ``(B, C, *spatial)`` (action.md §3).

    ``J``: with probability ``jitter_prob`` (one draw per batch) brightness and contrast jitter with factors
    ``U[1 - s, 1 + s]``, drawn per sample (2D, ``s = 0.2``) or per z-slice ``x[..., z]`` (3D, ``s = 0.02``).
    ``Blur``: with probability ``blur_prob`` (one draw per batch) Pillow's Gaussian blur with one
    ``σ ~ U(sigma_range)`` for the whole batch, per 2D image / per z-slice. ACDC (2D): student ``J(x)``, teacher
    ``Blur(J(x))``; LA (3D): both ``Blur(J(x))`` (official in-place transforms, ``combinations`` 2 / 1).
    Official: ``dataset_withAug.py`` / ``la_heart.py`` ``RandomColorJitter`` + ``RandomNoise``.

    Args:
        x: batch ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
        spatial_dims: 2 (ACDC preset) or 3 (LA preset).
        compat: ``"fixed"`` (float, no clamp) or ``"official"`` (jitter clamps to [0, 1]; blur through 8 bits,
            ``÷255`` in 2D, left in 0..255 in 3D).
        generator: source of every random draw.
        jitter_prob, blur_prob: per-batch probabilities (0.5 official).
        jitter_strength: ``s``; default 0.2 (2D) / 0.02 (3D).
        sigma_range: range of the blur σ.

    Returns:
        ``(student, teacher)``, new tensors shaped like ``x``.

    Raises:
        ValueError: ``x`` not matching ``spatial_dims``, unknown ``compat``, a probability outside [0, 1].
    """
    _check_batch(x, spatial_dims, "x")
    _check_compat("compat", compat)
    jitter_prob, blur_prob = _check_prob("jitter_prob", jitter_prob), _check_prob("blur_prob", blur_prob)
    official = compat == "official"
    strength = (0.2 if spatial_dims == 2 else 0.02) if jitter_strength is None else float(jitter_strength)
    factors = (max(0.0, 1.0 - strength), 1.0 + strength)
    axis = None if spatial_dims == 2 else 4  # LA: z-slices x[..., z]
    planes, _ = _to_planes(x, axis)
    jittered = planes
    if _coin(jitter_prob, generator):
        jittered = _jitter(planes, factors, factors, clamp=official, generator=generator)
    blurred: Optional[Tensor] = None
    if _coin(blur_prob, generator):
        sigma = _uniform(sigma_range[0], sigma_range[1], generator)
        blurred = _blur(jittered, sigma, quantised=official)
        if official and spatial_dims == 2:
            blurred = blurred / 255.0
    student = _from_planes(jittered, x, axis).clone()
    if blurred is None:
        return student, student.clone()
    teacher = _from_planes(blurred, x, axis)
    if spatial_dims == 3:
        return teacher.clone(), teacher
    return student, teacher


# ----------------------------------------------------------------------------------------------------------------
# mixing (§5)
# ----------------------------------------------------------------------------------------------------------------


def cutout_box_mask(
    spatial_shape: Sequence[int],
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
    depth: int = 20,
) -> Tensor:
    """Mask ``m`` (``spatial_shape``), 1 outside and 0 inside a random box (official ``generate_cutout_mask[_3d]``).

    ``w ~ U_int[W//2 + 1, W)``, ``h = round(H·W/2/w)`` (half to even, as ``np.round``), ``x0 ~ U_int[0, W - w]``,
    ``y0 ~ U_int[0, H - h]``; 3D adds a slab of ``min(depth, D)`` slices from ``z0 ~ U_int[0, D - depth]``.
    Box axes: H = dim 0, W = dim 1, D = dim 2. Draw order: w, x0, y0 (, z0).

    Raises:
        ValueError: not 2 or 3 dims, or W < 3 (no valid width).
    """
    shape = [int(s) for s in spatial_shape]
    if len(shape) not in (2, 3):
        raise ValueError(f"spatial_shape must have 2 or 3 dims, got {shape}.")
    height, width = shape[0], shape[1]
    w = _randint(width // 2 + 1, width, generator)
    h = int(np.round(height * width / 2 / w))
    x0 = _randint(0, width - w + 1, generator)
    y0 = _randint(0, height - h + 1, generator)
    mask = torch.ones(shape, device=device)
    if len(shape) == 2:
        mask[y0 : y0 + h, x0 : x0 + w] = 0
    else:
        d = min(int(depth), shape[2])
        z0 = _randint(0, shape[2] - d + 1, generator)
        mask[y0 : y0 + h, x0 : x0 + w, z0 : z0 + d] = 0
    return mask


def class_mix_mask(pseudo: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """ClassMix mask of one pseudo-label map: 1 on ``⌊n/2⌋`` random classes of the ``n`` present (official
    ``generate_class_mask``: a random permutation of the sorted unique labels, first half kept)."""
    labels = torch.unique(pseudo)
    order = torch.randperm(labels.numel(), generator=generator, device=_gen_device(generator)).to(labels.device)
    selected = labels[order][: labels.numel() // 2]
    return torch.isin(pseudo, selected).to(torch.float32)


def mix_unlabeled(
    data: Tensor,
    pseudo: Tensor,
    conf: Tensor,
    mode: str = "cutmix",
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Mix a pseudo-labelled batch (action.md §5; official ``generate_unsup_data[_3d]``).

    Sample ``i`` with partner ``(i + 1) mod B``: ``out = m·v_i + (1 - m)·v_partner`` for image, label and
    confidence. ``"cutmix"``: ``m`` = :func:`cutout_box_mask` (0 in the box); ``"classmix"``: ``m`` =
    :func:`class_mix_mask` of ``pseudo_i``; ``"cutout"``: no partner, image·m, conf·m and label -1 in the box.
    With ``B = 1`` the partner is the sample itself: cutmix and classmix return copies (no draw); cutout still cuts.

    Args:
        data: images ``(B, C, *spatial)``.
        pseudo: pseudo-labels ``(B, *spatial)`` (integer).
        conf: confidences ``(B, *spatial)``.
        mode: one of ``MIX_MODES``.
        generator: source of the masks' random draws (sample by sample).

    Returns:
        ``(image, pseudo, conf)``: new tensors; ``pseudo`` long.

    Raises:
        ValueError: unknown ``mode`` or mismatched shapes.
    """
    if mode not in MIX_MODES:
        raise ValueError(f"mode must be one of {MIX_MODES}, got {mode!r}.")
    _check_batch(data, None, "data")
    spatial = tuple(data.shape[2:])
    if tuple(pseudo.shape) != (data.shape[0],) + spatial or tuple(conf.shape) != tuple(pseudo.shape):
        raise ValueError(
            f"pseudo and conf must be (B, *spatial) = {[data.shape[0], *spatial]}, "
            f"got {list(pseudo.shape)} and {list(conf.shape)} for data {list(data.shape)}."
        )
    batch = data.shape[0]
    pseudo = pseudo.long()
    if batch == 1 and mode != "cutout":
        return data.clone(), pseudo.clone(), conf.clone()
    images, labels, confs = [], [], []
    for i in range(batch):
        if mode == "classmix":
            mask = class_mix_mask(pseudo[i], generator).to(data.device)
        else:
            mask = cutout_box_mask(spatial, generator, device=data.device)
        keep = mask.bool()
        if mode == "cutout":
            images.append(data[i] * mask.to(data.dtype))
            labels.append(torch.where(keep, pseudo[i], torch.full_like(pseudo[i], -1)))
            confs.append(conf[i] * mask.to(conf.dtype))
            continue
        j = (i + 1) % batch
        m = mask.to(data.dtype)
        images.append(data[i] * m + data[j] * (1 - m))
        labels.append(torch.where(keep, pseudo[i], pseudo[j]))
        mc = mask.to(conf.dtype)
        confs.append(conf[i] * mc + conf[j] * (1 - mc))
    return torch.stack(images), torch.stack(labels), torch.stack(confs)


# ----------------------------------------------------------------------------------------------------------------
# strong view (§3, §7.2)
# ----------------------------------------------------------------------------------------------------------------


class AdvMorph:
    """Random smooth displacement of 2D images (action.md §7.2; stands in for the missing official ``adv_morph``).

    Per sample, displacement vectors ``(dx, dy) ~ N(0, I)`` on a ``grid_size`` control grid are scaled so that the
    largest has length ``epsilon`` pixels, upsampled bilinearly (``align_corners=True``) to the image size (so no
    displacement exceeds ``epsilon``), and the image is resampled at ``p + d(p)`` (bilinear, border padding).
    Images only: labels and confidences are not warped (as at the official call site). Experimental, ACDC only.

    Args:
        epsilon: largest displacement in pixels (1.5, the official config).
        grid_size: control grid ``(gh, gw)`` (32×32 = 256/8, the official ``vector_size``).

    Raises:
        ValueError: negative ``epsilon`` or a grid smaller than 2×2.
    """

    def __init__(self, epsilon: float = 1.5, grid_size: Sequence[int] = (32, 32)) -> None:
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon!r}.")
        if len(grid_size) != 2 or min(grid_size) < 2:
            raise ValueError(f"grid_size must be two sizes >= 2, got {list(grid_size)}.")
        self.epsilon = float(epsilon)
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))

    def displacement(
        self,
        batch: int,
        size: Sequence[int],
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
    ) -> Tensor:
        """Displacement field ``(B, 2, H, W)`` in pixels, channel 0 along W (x), channel 1 along H (y)."""
        vectors = torch.randn((batch, 2) + self.grid_size, generator=generator, device=_gen_device(generator))
        longest = vectors.norm(dim=1).flatten(1).amax(dim=1).clamp_min(1e-12)
        vectors = vectors * (self.epsilon / longest).view(-1, 1, 1, 1)
        vectors = vectors.to(device if device is not None else vectors.device)
        return F.interpolate(vectors, size=tuple(int(s) for s in size), mode="bilinear", align_corners=True)

    def __call__(self, image: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Warp ``image`` ``(B, C, H, W)`` (H, W >= 2); returns a new tensor."""
        _check_batch(image, 2, "image")
        batch, _, height, width = image.shape
        if height < 2 or width < 2:
            raise ValueError(f"AdvMorph needs H, W >= 2, got shape {list(image.shape)}.")
        field = self.displacement(batch, (height, width), generator, image.device).to(image.dtype)
        ys = torch.linspace(-1.0, 1.0, height, device=image.device, dtype=image.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=image.device, dtype=image.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        gx = grid_x + field[:, 0] * (2.0 / (width - 1))
        gy = grid_y + field[:, 1] * (2.0 / (height - 1))
        grid = torch.stack([gx, gy], dim=-1)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class ActionStrongAug:
    """Stage-3 strong view of the mixed unlabelled batch, per sample (action.md §3; official ``batch_transform``).

    2D (ACDC): with p = ``jitter_prob`` ColorJitter brightness/contrast ``U(0.75, 1.25)`` (the official
    ``ColorJitter((.75, 1.25)×3, (-.25, .25))``; saturation and hue are no-ops on one channel), with p =
    ``blur_prob`` Pillow blur ``σ ~ U(0.15, 1.15)``; then, with p = ``adv_morph_prob`` per batch, :class:`AdvMorph`
    on the images. 3D (LA): the same with factors ``U(0.98, 1.02)`` on the slices ``v[:, :, j]`` of each sample
    ``v`` ``(C, H, W, D)`` (tensor axis 3 of the batch; planes ``(C, H, D)``), jitter factors per slice, one σ per
    sample. Labels pass through unchanged.

    ``intensity_compat="fixed"`` (default): float throughout, no clamp, every slice. ``"official"``: 2D image and
    confidence quantised to ``⌊255v⌋/255`` (``ToPILImage``), jitter in Pillow's 8-bit arithmetic, 8-bit blur,
    result ``÷255``; 3D only slices ``j < D`` (the official loop bound), jitter clamped to [0, 1], blurred slices
    left in 0..255.

    Args:
        spatial_dims: 2 (ACDC preset) or 3 (LA preset).
        intensity_compat: ``"fixed"`` or ``"official"``.
        adv_morph_prob: per-batch probability of :class:`AdvMorph` (default 0: the official module is missing;
            official 0.5). 2D only.
        jitter_prob, blur_prob: per-sample probabilities (0.5 official).
        jitter_range: brightness and contrast factor range; default (0.75, 1.25) (2D) / (0.98, 1.02) (3D).
        sigma_range: blur σ range.
        adv_morph: the :class:`AdvMorph` to use (default ``AdvMorph()``).

    Raises:
        ValueError: bad ``spatial_dims``, ``intensity_compat`` or probability; ``adv_morph_prob > 0`` in 3D.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        intensity_compat: str = "fixed",
        adv_morph_prob: float = 0.0,
        jitter_prob: float = 0.5,
        blur_prob: float = 0.5,
        jitter_range: Optional[Tuple[float, float]] = None,
        sigma_range: Tuple[float, float] = (0.15, 1.15),
        adv_morph: Optional[AdvMorph] = None,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        self.spatial_dims = int(spatial_dims)
        self.intensity_compat = _check_compat("intensity_compat", intensity_compat)
        self.adv_morph_prob = _check_prob("adv_morph_prob", adv_morph_prob)
        if self.adv_morph_prob > 0 and self.spatial_dims != 2:
            raise ValueError("AdvMorph is 2D only (ACDC): adv_morph_prob must be 0 for spatial_dims=3.")
        self.jitter_prob = _check_prob("jitter_prob", jitter_prob)
        self.blur_prob = _check_prob("blur_prob", blur_prob)
        default = (0.75, 1.25) if self.spatial_dims == 2 else (0.98, 1.02)
        self.jitter_range = tuple(float(v) for v in (default if jitter_range is None else jitter_range))
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))
        self.adv_morph = AdvMorph() if adv_morph is None else adv_morph

    def _sample_2d(self, v: Tensor, generator) -> Tensor:
        """One 2D sample ``(C, H, W)``."""
        planes = v.unsqueeze(0)
        official = self.intensity_compat == "official"
        if official:
            planes = _to_levels(planes)
        if _coin(self.jitter_prob, generator):
            if official:
                planes = _jitter_levels(planes, self.jitter_range, self.jitter_range, generator)
            else:
                planes = _jitter(planes, self.jitter_range, self.jitter_range, clamp=False, generator=generator)
        if _coin(self.blur_prob, generator):
            sigma = _uniform(self.sigma_range[0], self.sigma_range[1], generator)
            planes = box_gaussian_blur(planes, sigma, quantised=official)
        if official:
            planes = planes / 255.0
        return planes[0]

    def _sample_3d(self, v: Tensor, generator) -> Tensor:
        """One 3D sample ``(C, H, W, D)``: slices ``v[:, :, j]``."""
        official = self.intensity_compat == "official"
        out = v.clone()
        count = min(v.shape[2], v.shape[3]) if official else v.shape[2]
        planes = out[:, :, :count].movedim(2, 0)  # (S, C, H, D)
        if _coin(self.jitter_prob, generator):
            planes = _jitter(planes, self.jitter_range, self.jitter_range, clamp=official, generator=generator)
        if _coin(self.blur_prob, generator):
            sigma = _uniform(self.sigma_range[0], self.sigma_range[1], generator)
            planes = _blur(planes, sigma, quantised=official)
        out[:, :, :count] = planes.movedim(0, 2)
        return out

    def __call__(
        self, image: Tensor, pseudo: Tensor, conf: Tensor, generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Augment ``image`` ``(B, C, *spatial)``; ``pseudo`` ``(B, *spatial)`` is returned unchanged, ``conf``
        ``(B, *spatial)`` quantised in the official 2D path. Returns new ``(image, pseudo, conf)`` tensors.

        Raises:
            ValueError: wrong ranks or mismatched shapes.
        """
        _check_batch(image, self.spatial_dims, "image")
        spatial = (image.shape[0],) + tuple(image.shape[2:])
        if tuple(pseudo.shape) != spatial or tuple(conf.shape) != spatial:
            raise ValueError(
                f"pseudo and conf must be {list(spatial)}, got {list(pseudo.shape)} and {list(conf.shape)}."
            )
        step = self._sample_2d if self.spatial_dims == 2 else self._sample_3d
        out = torch.stack([step(image[b], generator) for b in range(image.shape[0])])
        if self.spatial_dims == 2 and self.intensity_compat == "official":
            conf = _to_levels(conf) / 255.0
        else:
            conf = conf.clone()
        if self.adv_morph_prob > 0 and _coin(self.adv_morph_prob, generator):
            out = self.adv_morph(out, generator)
        return out, pseudo.clone(), conf
