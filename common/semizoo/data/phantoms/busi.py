"""BUSI phantoms in the public layout (``Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (<n>).png`` with
``<class> (<n>)_mask.png``, multifocal cases adding ``_mask_1.png``; datasets.md §1.4 and §4).

Each image is a B-mode breast ultrasound drawn in millimetres: tissue layers (bright skin line, fat with dark
lobules, glandular tissue, pectoral muscle, rib shadows), an echogenicity map multiplied by speckle (complex Gaussian
scatterers blurred by an anisotropic point-spread function, magnitude, so Rayleigh-distributed), depth attenuation
with time-gain compensation, log compression to 8 bits. Benign masses are smooth, wider-than-tall hypoechoic ovals
with posterior enhancement; malignant ones irregular and taller (spiculated margins) with posterior shadowing.
Mass-like dark fat lobules and calipers (p = 0.3) are distractors. Images are stored as RGB with equal channels,
masks as 0/255, as in the release. One benign case is multifocal (two masks), and one benign image is a re-scan of
another (shifted, re-speckled: a near duplicate, as the real set has).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from .common import case_rng, smooth_field

__all__ = ["PRESETS", "FIELD_MM", "plan", "render", "write_png", "lesion_box", "generate"]

# counts per class and the image size range (px) per preset; 0.2 mm per pixel at 112 px of a 22 mm wide field
PRESETS = {
    "test": {"cases": 24, "counts": {"benign": 13, "malignant": 6, "normal": 5}, "size": (80, 112)},
    "bench": {"cases": 300, "counts": {"benign": 168, "malignant": 81, "normal": 51}, "size": (200, 256)},
}
FIELD_MM = 40.0


def plan(preset: str) -> list[tuple[str, int]]:
    """``(class, 1-based number within the class)`` of every case index of a preset."""
    return [(name, n + 1) for name, count in PRESETS[preset]["counts"].items() for n in range(count)]


def _ellipse(yy, xx, cy, cx, ry, rx, angle):
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2


def render(
    rng: np.random.Generator,
    size: tuple[int, int],
    kind: str,
    n_lesions: int = 1,
    *,
    field_mm: float = FIELD_MM,
    psf_scale: float = 1.0,
    gain: float = 1.0,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(image uint8 (H, W), [masks bool (H, W)])`` of one case.

    Args:
        rng: the case's generator (the draws, in order, define the case).
        size: ``(H, W)`` in pixels.
        kind: ``benign``, ``malignant`` or ``normal`` (no lesion).
        n_lesions: lesions of a benign/malignant case (later ones never overlap earlier masks; a mask can be empty).
        field_mm: width of the field of view in mm (the pixel size is ``field_mm / W``).
        psf_scale: scales the point-spread function (< 1: finer speckle, another scanner).
        gain: multiplies the echo signal before log compression (another scanner's gain).

    The defaults give the BUSI phantom; other scanners (UDIAT) change only the keyword arguments, so the random
    draws stay in the same order.
    """
    h, w = size
    px = field_mm / w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) * px
    depth = h * px
    echo = np.full((h, w), 0.55, np.float32)
    skin = rng.uniform(1.0, 2.0)
    fat_end = skin + rng.uniform(4.0, 8.0) + 2.0 * smooth_field(rng, (1, w), (px, px), 10.0)[0]
    gland_end = fat_end + rng.uniform(6.0, 12.0) + 2.0 * smooth_field(rng, (1, w), (px, px), 12.0)[0]
    echo[yy < skin] = 1.0
    fat = (yy >= skin) & (yy < fat_end[None, :])
    echo[fat] = 0.35
    gland = (yy >= fat_end[None, :]) & (yy < gland_end[None, :])
    echo[gland] = 0.7 + 0.15 * smooth_field(rng, (h, w), (px, px), 1.5)[gland]
    muscle = yy >= gland_end[None, :]
    echo[muscle] = 0.45 + 0.1 * np.sin(yy[muscle] * rng.uniform(2.0, 3.0))
    for _ in range(int(rng.integers(3, 7))):  # fat lobules: dark, mass-like distractors
        cy, cx = rng.uniform(skin, depth * 0.6), rng.uniform(0, field_mm)
        lob = _ellipse(yy, xx, cy, cx, rng.uniform(1.0, 2.5), rng.uniform(2.0, 4.0), rng.uniform(-0.3, 0.3)) < 1
        echo[lob] = 0.3
    masks = []
    shadow = np.ones((h, w), np.float32)
    for _ in range(n_lesions if kind != "normal" else 0):
        cy, cx = rng.uniform(0.35, 0.6) * depth, rng.uniform(0.3, 0.7) * field_mm
        radius = rng.uniform(2.5, 5.0) if kind == "benign" else rng.uniform(3.0, 5.5)
        theta = np.arctan2(yy - cy, xx - cx)
        if kind == "benign":  # wider than tall, smooth
            ratio = rng.uniform(1.3, 2.0)
            rx, ry = radius * np.sqrt(ratio), radius / np.sqrt(ratio)
            inside = _ellipse(yy, xx, cy, cx, ry, rx, rng.uniform(-0.2, 0.2)) < 1
        else:  # taller, irregular, spiculated
            ratio = rng.uniform(0.8, 1.3)
            rx, ry = radius * np.sqrt(ratio), radius / np.sqrt(ratio)
            spikes = int(rng.integers(6, 15))
            edge = 1.0 + 0.25 * np.maximum(0.0, np.cos(spikes * theta + rng.uniform(0, 2 * np.pi))) ** 4
            edge += 0.08 * np.cos(3 * theta + rng.uniform(0, 2 * np.pi))
            inside = _ellipse(yy, xx, cy, cx, ry * edge, rx * edge, 0.0) < 1
        inside &= ~np.any(masks, axis=0) if masks else True
        echo[inside] = rng.uniform(0.08, 0.2)
        below = (yy > cy) & (np.abs(xx - cx) < rx * 0.8)
        shadow[below & ~inside] *= rng.uniform(1.25, 1.5) if kind == "benign" else rng.uniform(0.35, 0.6)
        masks.append(inside)
    shadow = ndimage.gaussian_filter(shadow, 1.0 / px)
    for _ in range(int(rng.integers(0, 3))):  # rib shadows at depth
        cx = rng.uniform(0, field_mm)
        shadow[(yy > gland_end[None, :] + 3) & (np.abs(xx - cx) < rng.uniform(2.0, 4.0))] *= 0.3
    psf = (rng.uniform(0.5, 0.9) * psf_scale / px, rng.uniform(1.2, 2.0) * psf_scale / px)
    field = rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))
    speckle = np.abs(ndimage.gaussian_filter(field.real, psf) + 1j * ndimage.gaussian_filter(field.imag, psf))
    speckle /= speckle.mean()
    attenuation = np.exp(-rng.uniform(0.02, 0.05) * yy) * (1.0 + rng.uniform(0.0, 0.03) * yy)
    signal = echo * shadow * speckle * attenuation
    if gain != 1.0:
        signal = signal * gain
    image = 255.0 * np.clip(np.log1p(30.0 * signal) / np.log1p(30.0 * rng.uniform(1.6, 2.2)), 0, 1)
    if rng.random() < 0.3:  # calipers: small bright crosses near a mass
        for _ in range(2):
            y, x = int(rng.integers(2, h - 3)), int(rng.integers(2, w - 3))
            image[y - 2 : y + 3, x] = image[y, x - 2 : x + 3] = 255
    return np.round(image).astype(np.uint8), masks


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG (no timestamps: byte-identical across runs)."""
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG", optimize=False)


def lesion_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` pixel edges of a mask's non-zero pixels (x1, y1 exclusive); None when it is empty."""
    rows, cols = np.nonzero(mask)
    if not rows.size:
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def generate(out: str | os.PathLike, cases: int, seed: int, preset: str) -> dict:
    """Write the preset's cases (``cases`` must be the preset's count); returns the manifest's layout part."""
    cases_plan = plan(preset)
    if cases != len(cases_plan):
        raise ValueError(f"busi phantoms follow preset {preset!r}'s class plan: cases must be {len(cases_plan)}")
    root = Path(out) / "Dataset_BUSI_with_GT"
    low, high = PRESETS[preset]["size"]
    names = []
    for k, (kind, number) in enumerate(cases_plan):
        rng = case_rng(seed, "busi", k)
        size = (int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1)))
        n_lesions = 2 if (kind == "benign" and number == 2) else 1
        image, masks = render(rng, size, kind, n_lesions)
        if kind == "benign" and number == 3:  # a near duplicate of benign (1): same anatomy, re-speckled, shifted
            first = case_rng(seed, "busi", 0)
            size = (int(first.integers(low, high + 1)), int(first.integers(low, high + 1)))
            image, masks = render(first, size, "benign", 1)
            image = np.roll(np.clip(image.astype(int) + rng.integers(-6, 7, image.shape), 0, 255), 1, axis=1)
            image, masks = image.astype(np.uint8), [np.roll(m, 1, axis=1) for m in masks]
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{kind} ({number})"
        write_png(folder / f"{stem}.png", np.repeat(image[..., None], 3, axis=2))
        mask_list = masks or [np.zeros(image.shape, bool)]
        for index, mask in enumerate(mask_list):
            suffix = "_mask" if index == 0 else f"_mask_{index}"
            write_png(folder / f"{stem}{suffix}.png", (mask * 255).astype(np.uint8))
        names.append(f"{kind}/{stem}")
    return {"ids": names, "entries": ["Dataset_BUSI_with_GT"]}
