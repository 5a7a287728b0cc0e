"""SNUBH-style VOC phantoms (the private WSSDL layout; datasets.md §1.6 and §4, wssdl.md §3).

``TIFFImages/<ID>.tif`` (8-bit grey), ``Annotations/<ID>.xml`` and ``ImageSets/Main/<split>.txt``. An annotation
holds ``<size>``, ``<BIRADS><diag>0|1</diag></BIRADS>`` (0 benign, 1 malignant; absent for normal images), the lesion
``<object>``s (``<name>`` benign|malignant, 1-based inclusive ``<bndbox>``: xmin = first column + 1, xmax = last
column + 1) followed by 1–3 ``__background__`` objects: boxes of normal tissue that touch no lesion. Split files:
``s_train`` (strong, half malignant), its reduced ``s_train_<N>`` (the first N/2 benign and N/2 malignant of
``s_train``), ``ws_train`` (weak, about 22 % malignant as in SNUBH), ``test`` and ``test_normal``.

Images come from the BUSI phantom's renderer with a per-case scanner jitter (point-spread scale and gain), as the
hospital data mixes scanners. One strong benign case (the second) is multifocal. Case ``k`` draws from
``case_rng(seed, "snubh", k)``; the preset fixes the plan, so ``cases`` must equal its length.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .busi import lesion_box, render
from .common import case_rng

__all__ = ["PRESETS", "SPLITS", "plan", "background_boxes", "annotation_xml", "generate"]

# (split, class, count) blocks in ID order, the reduced strong lists and the image size range (px) per preset
PRESETS = {
    "test": {
        "cases": 24,
        "blocks": [
            ("s_train", "benign", 7),
            ("s_train", "malignant", 7),
            ("ws_train", "benign", 3),
            ("ws_train", "malignant", 1),
            ("test", "benign", 2),
            ("test", "malignant", 2),
            ("test_normal", "normal", 2),
        ],
        "reduced": (10,),
        "size": (80, 112),
    },
    "bench": {
        "cases": 300,
        "blocks": [
            ("s_train", "benign", 50),
            ("s_train", "malignant", 50),
            ("ws_train", "benign", 94),
            ("ws_train", "malignant", 26),
            ("test", "benign", 30),
            ("test", "malignant", 30),
            ("test_normal", "normal", 20),
        ],
        "reduced": (10, 50),
        "size": (200, 256),
    },
}
SPLITS = ("s_train", "ws_train", "test", "test_normal")


def plan(preset: str) -> list[tuple[str, str]]:
    """``(split, class)`` of every case index of a preset."""
    return [(split, kind) for split, kind, count in PRESETS[preset]["blocks"] for _ in range(count)]


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def background_boxes(
    rng: np.random.Generator, size: tuple[int, int], lesions: list[tuple[int, int, int, int]]
) -> list[tuple[int, int, int, int]]:
    """1–3 boxes ``(x0, y0, x1, y1)`` (pixel edges) of normal tissue, disjoint from the lesion boxes and each other."""
    h, w = size
    wanted = int(rng.integers(1, 4))
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(200):
        if len(boxes) == wanted:
            break
        bw, bh = int(rng.integers(w // 6, w // 3 + 1)), int(rng.integers(h // 8, h // 4 + 1))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        box = (x0, y0, x0 + bw, y0 + bh)
        if not any(_overlaps(box, other) for other in lesions + boxes):
            boxes.append(box)
    if not boxes:
        raise RuntimeError("snubh phantom: no room for a background box")
    return boxes


def annotation_xml(
    name: str,
    size: tuple[int, int],
    kind: str,
    lesions: list[tuple[int, int, int, int]],
    background: list[tuple[int, int, int, int]],
) -> str:
    """The VOC annotation of one image; boxes given as pixel edges are written 1-based inclusive."""
    h, w = size
    lines = [
        "<annotation>",
        "\t<folder>TIFFImages</folder>",
        f"\t<filename>{name}.tif</filename>",
        "\t<size>",
        f"\t\t<width>{w}</width>",
        f"\t\t<height>{h}</height>",
        "\t\t<depth>1</depth>",
        "\t</size>",
    ]
    if kind != "normal":
        lines += ["\t<BIRADS>", f"\t\t<diag>{int(kind == 'malignant')}</diag>", "\t</BIRADS>"]
    objects = [(kind, box) for box in lesions] + [("__background__", box) for box in background]
    for label, (x0, y0, x1, y1) in objects:
        lines += [
            "\t<object>",
            f"\t\t<name>{label}</name>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0 + 1}</xmin>",
            f"\t\t\t<ymin>{y0 + 1}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    return "\n".join(lines + ["</annotation>"]) + "\n"


def generate(out: str | os.PathLike, cases: int, seed: int, preset: str) -> dict:
    """Write the preset's cases (``cases`` must be the preset's count); returns the manifest's layout part."""
    from PIL import Image

    cases_plan = plan(preset)
    if cases != len(cases_plan):
        raise ValueError(f"snubh phantoms follow preset {preset!r}'s split plan: cases must be {len(cases_plan)}")
    root = Path(out)
    for folder in ("TIFFImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    low, high = PRESETS[preset]["size"]
    lists: dict[str, list[str]] = {split: [] for split in SPLITS}
    strong: dict[str, list[str]] = {"benign": [], "malignant": []}
    ids = []
    for k, (split, kind) in enumerate(cases_plan):
        rng = case_rng(seed, "snubh", k)
        size = (int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1)))
        psf_scale, gain = float(rng.uniform(0.7, 1.2)), float(rng.uniform(0.85, 1.2))
        multifocal = split == "s_train" and kind == "benign" and len(strong["benign"]) == 1
        image, masks = render(rng, size, kind, 2 if multifocal else 1, psf_scale=psf_scale, gain=gain)
        lesions = [box for box in (lesion_box(m) for m in masks) if box is not None]
        if kind != "normal" and not lesions:
            raise RuntimeError(f"snubh phantom case {k}: empty lesion mask")
        background = background_boxes(rng, size, lesions)
        name = f"{k + 1:06d}"
        Image.fromarray(image).save(root / "TIFFImages" / f"{name}.tif", format="TIFF")
        (root / "Annotations" / f"{name}.xml").write_text(annotation_xml(name, size, kind, lesions, background))
        lists[split].append(name)
        if split == "s_train":
            strong[kind].append(name)
        ids.append(name)
    for n in PRESETS[preset]["reduced"]:
        lists[f"s_train_{n}"] = strong["benign"][: n // 2] + strong["malignant"][: n - n // 2]
    for split, names in lists.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{name}\n" for name in names))
    return {
        "ids": ids,
        "lists": {split: len(names) for split, names in sorted(lists.items())},
        "entries": ["TIFFImages", "Annotations", "ImageSets"],
    }
