"""LA 2018 phantoms in the raw public layout (``<ID>/lgemri.nrrd`` + ``laendo.nrrd``, datasets.md §1.1 and §4).

Each case is an LGE-like volume drawn in millimetres (axes x left, y posterior, z superior): a warped ellipsoidal
left atrium (semi-axes 18-30 mm) with four curved pulmonary veins (radius 4-7 mm, 15-30 mm long, then thinner
distal branches) and an appendage. The label is the atrial body, the appendage and the first 10 mm of each vein.
Unlabelled look-alikes at blood intensity surround it: LV (with a dark nulled myocardium), RV, RA, ascending and
descending aorta, pulmonary arteries and the distal veins. A thin patchy enhanced wall, textured tissue, fat,
lungs, spine, a bias field (0.7-1.3), Rician noise (5-15 % of blood) and blur complete it. Stored as uint8.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .common import bezier, blur, case_rng, grid, random_id, rician, rotation, smooth_field, tube, write_nrrd

__all__ = ["PRESETS", "render_case", "write_case", "generate"]

#: Volume shape (x, y, z), isotropic spacing (mm) and default number of cases per preset.
PRESETS = {
    "test": {"cases": 12, "shape": (64, 64, 32), "spacing": 2.5},
    "bench": {"cases": 100, "shape": (96, 96, 64), "spacing": 1.25},
}
LABEL_VEIN_MM = 10.0  # the label stops this far into each pulmonary vein
MARGIN_MM = 6.0  # labelled voxels keep at least this distance from the volume border

AIR, TISSUE, FAT, LUNG, SPINE, MYO, WALL, LV, RV, RA, AORTA, PA, VEIN, LA_WALL, LA = range(15)

# Ostium directions in the atrial frame (x left, y posterior, z superior): LSPV, LIPV, RSPV, RIPV.
_VEIN_DIRS = np.array([[0.8, 0.4, 0.45], [0.8, 0.45, -0.4], [-0.8, 0.4, 0.45], [-0.8, 0.45, -0.4]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _perp(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    """A random unit vector orthogonal to ``d``."""
    r = rng.normal(size=3)
    r -= r.dot(d) * d
    return _unit(r)


def _atrium(rng: np.random.Generator, scale: float) -> dict:
    """Draw the atrial geometry in its own frame (centre at the origin), all lengths multiplied by ``scale``."""
    semi = np.array([rng.uniform(22, 30), rng.uniform(18, 25), rng.uniform(18, 26)]) * scale
    rot = rotation(rng, 20.0)
    veins = []
    for d in _VEIN_DIRS:
        d_local = _unit(d + rng.uniform(-0.15, 0.15, 3))
        ostium = rot @ (d_local / np.linalg.norm(d_local / semi))
        out_dir = _unit(rot @ _unit(d_local / semi**2) + np.array([np.sign(d[0]) * 0.6, 0.3, 0.0]))
        length, radius = rng.uniform(15, 30) * scale, rng.uniform(4, 7) * scale
        bend = _perp(rng, out_dir) * rng.uniform(0.15, 0.45) * length
        end = ostium + out_dir * length + bend * 0.5
        line = np.concatenate([[ostium - out_dir * 4.0], bezier(ostium, ostium + out_dir * length / 2 + bend, end)])
        branches = []
        for _ in range(2):  # distal branches into the lung (unlabelled)
            b_dir = _unit(out_dir + _perp(rng, out_dir) * rng.uniform(0.3, 0.9))
            b_len = rng.uniform(12, 25) * scale
            branches.append(np.stack([end, end + b_dir * b_len]))
        veins.append({"line": line, "radius": radius, "branches": branches})
    d_laa = _unit(np.array([0.55, -0.65, 0.5]) + rng.uniform(-0.15, 0.15, 3))
    o_laa = rot @ (d_laa / np.linalg.norm(d_laa / semi))
    n_laa = _unit(rot @ _unit(d_laa / semi**2))
    laa_len = rng.uniform(18, 28) * scale
    bend = _perp(rng, n_laa) * rng.uniform(0.3, 0.6) * laa_len
    laa_line = np.concatenate(
        [[o_laa - n_laa * 5.0], bezier(o_laa, o_laa + n_laa * laa_len / 2 + bend, o_laa + n_laa * laa_len)]
    )
    laa_radius = np.linspace(rng.uniform(7, 10), rng.uniform(2.5, 4), len(laa_line)) * scale
    return {"semi": semi, "rot": rot, "veins": veins, "laa": (laa_line, laa_radius)}


def _label_extent(atr: dict, glob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (mm, atrial centre at the origin) of the labelled region after ``glob``, before warping."""
    half = np.sqrt((((glob @ atr["rot"]) * atr["semi"][None]) ** 2).sum(1)) * 1.08
    lo, hi = -half, half.copy()
    for vein in atr["veins"]:
        line = vein["line"]
        seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        pts = (glob @ line[arc <= LABEL_VEIN_MM + 4.0 + seg.max()].T).T
        lo, hi = np.minimum(lo, pts.min(0) - vein["radius"]), np.maximum(hi, pts.max(0) + vein["radius"])
    line, rad = atr["laa"]
    line = (glob @ line.T).T
    lo, hi = np.minimum(lo, (line - rad[:, None]).min(0)), np.maximum(hi, (line + rad[:, None]).max(0))
    return lo, hi


def render_case(rng: np.random.Generator, shape: tuple[int, int, int], spacing: float) -> dict:
    """Draw one case: ``image`` uint8 (X, Y, Z), ``label`` uint8 (X, Y, Z) in {0, 1} and the ``tissue`` code map."""
    shape = tuple(int(n) for n in shape)
    sp = (spacing,) * 3
    fov = np.array(shape) * spacing

    # --- atrium, scaled down if needed so the label keeps MARGIN_MM from the border after warping
    warp_amp = rng.uniform(1.5, 3.5)
    glob = rotation(rng, 12.0)
    state = rng.bit_generator.state
    atr = _atrium(rng, 1.0)
    lo, hi = _label_extent(atr, glob)
    room = fov - 2 * (MARGIN_MM + 2 * warp_amp + spacing)
    scale = min(1.0, float(np.min(room / (hi - lo))))
    if scale < 1.0:
        rng.bit_generator.state = state
        atr = _atrium(rng, scale * 0.98)
        lo, hi = _label_extent(atr, glob)
    slack = np.clip(room - (hi - lo), 0, None)
    centre = -fov / 2 + MARGIN_MM + 2 * warp_amp + spacing - lo + rng.uniform(0, 1, 3) * slack

    # --- warped coordinates
    x, y, z = grid(shape, sp)
    warp_len = rng.uniform(25, 40)
    px, py, pz = (
        c + 2 * warp_amp * np.tanh(0.5 * smooth_field(rng, shape, sp, warp_len)) for c in np.broadcast_arrays(x, y, z)
    )
    pts = (px, py, pz)
    axes = [np.ravel(c) for c in (x, y, z)]

    def near_tube(line: np.ndarray, radius: float | np.ndarray, margin: float = 0.0):
        return tube(pts, line, radius, margin=margin, axes=axes, slack=2 * warp_amp)

    tissue = np.full(shape, TISSUE, np.uint8)
    flat = tissue.reshape(-1)

    def at(off: tuple[float, float, float]) -> np.ndarray:
        return centre + glob @ np.asarray(off, dtype=float)

    def ellipsoid(c: np.ndarray, semi: np.ndarray, rot: np.ndarray, reach: float = 1.5) -> np.ndarray:
        """Normalised radius |R^T (p - c) / semi| (< 1 inside), evaluated where it is below ``reach`` (else inf)."""
        half = np.sqrt(((rot * semi[None]) ** 2).sum(1)) * reach + 2 * warp_amp
        box = tuple(
            slice(int(np.searchsorted(ax, ci - h)), int(np.searchsorted(ax, ci + h, "right")))
            for ax, ci, h in zip(axes, c, half)
        )
        q = [p[box] - ci for p, ci in zip(pts, c)]
        m = (rot / semi[None]).T
        radius = np.full(shape, np.inf, np.float32)
        radius[box] = np.sqrt(sum((m[i, 0] * q[0] + m[i, 1] * q[1] + m[i, 2] * q[2]) ** 2 for i in range(3)))
        return radius

    def paint_tube(code: int, line: np.ndarray, radius: float | np.ndarray, wall: float = 0.0, wall_code: int = WALL):
        idx, sdf, _ = near_tube(line, radius, wall)
        if wall > 0:
            flat[idx[sdf > 0]] = wall_code
        flat[idx[sdf <= 0]] = code

    # --- surroundings: lungs, spine, fat
    for side in (-1, 1):
        c_lung = at((side * rng.uniform(72, 88), rng.uniform(10, 30), 0.0))
        lung = ellipsoid(c_lung, np.array([rng.uniform(40, 55), rng.uniform(70, 90), 150.0]), rotation(rng, 10))
        tissue[lung < 1] = LUNG
    c_sp = at((rng.uniform(-8, 8), rng.uniform(55, 70), 0.0))
    r_sp = rng.uniform(14, 19)
    tissue[((px - c_sp[0]) ** 2 + (py - c_sp[1]) ** 2) < r_sp**2] = SPINE
    fat_patch = smooth_field(rng, shape, sp, rng.uniform(8, 15))

    # --- look-alikes at blood intensity
    semi_lv = np.array([rng.uniform(22, 30), rng.uniform(22, 30), rng.uniform(30, 40)])
    rot_lv = glob @ rotation(rng, 25)
    c_lv = at((rng.uniform(25, 40), rng.uniform(-60, -45), rng.uniform(-45, -30)))
    myo_t = rng.uniform(8, 12)
    e_lv = ellipsoid(c_lv, semi_lv, rot_lv)
    e_lv_out = ellipsoid(c_lv, semi_lv + myo_t, rot_lv)
    tissue[(e_lv_out < 1.35) & (fat_patch > 0.3)] = FAT  # epicardial fat
    c_rv = c_lv + glob @ np.array([-rng.uniform(30, 42), -rng.uniform(12, 22), rng.uniform(-5, 10)])
    semi_rv = np.array([rng.uniform(14, 20), rng.uniform(22, 30), rng.uniform(25, 35)])
    e_rv = ellipsoid(c_rv, semi_rv, rot_lv)
    tissue[ellipsoid(c_rv, semi_rv + 3.0, rot_lv) < 1] = WALL
    tissue[e_rv < 1] = RV
    tissue[e_lv_out < 1] = MYO
    tissue[e_lv < 1] = LV
    c_ra = at((-rng.uniform(38, 50), -rng.uniform(5, 20), rng.uniform(-12, 5)))
    semi_ra = np.array([rng.uniform(18, 26), rng.uniform(18, 24), rng.uniform(20, 28)])
    rot_ra = glob @ rotation(rng, 25)
    tissue[ellipsoid(c_ra, semi_ra + 2.5, rot_ra) < 1] = WALL
    tissue[ellipsoid(c_ra, semi_ra, rot_ra) < 1] = RA
    top = atr["semi"].max()
    r_asc, r_desc, r_pa = rng.uniform(12, 16), rng.uniform(9, 13), rng.uniform(8, 11)
    p0 = at((rng.uniform(-12, 2), -rng.uniform(38, 48), -60.0))
    p2 = at((rng.uniform(-15, 0), -rng.uniform(35, 50), 70.0))
    paint_tube(AORTA, bezier(p0, (p0 + p2) / 2 + glob @ rng.uniform(-8, 8, 3), p2), r_asc, wall=2.0)
    p0 = at((rng.uniform(15, 30), rng.uniform(30, 45), -80.0))
    p2 = at((rng.uniform(15, 30), rng.uniform(30, 45), 80.0))
    paint_tube(AORTA, bezier(p0, (p0 + p2) / 2 + glob @ rng.uniform(-6, 6, 3), p2), r_desc, wall=2.0)
    pa_root = at((rng.uniform(-5, 10), -rng.uniform(30, 40), top + rng.uniform(10, 18)))
    for side in (-1, 1):
        end = at((side * rng.uniform(55, 75), rng.uniform(5, 20), top + rng.uniform(5, 20)))
        paint_tube(PA, bezier(pa_root, (pa_root + end) / 2 + glob @ rng.uniform(-6, 6, 3), end), r_pa, wall=1.5)

    # --- left atrium: body, veins (label for the first 10 mm), appendage, patchy wall
    wall_t = rng.uniform(2.0, 3.5)
    e_la = ellipsoid(centre, atr["semi"], glob @ atr["rot"])
    lobes = smooth_field(rng, shape, sp, 30.0)
    inside_body = e_la < 1.0 + 0.06 * lobes
    la_wall = (e_la < 1.0 + 0.06 * lobes + wall_t / atr["semi"].mean()) & ~inside_body
    label = inside_body.reshape(-1).copy()
    wall_mask = la_wall.reshape(-1).copy()
    vein_blood = np.zeros_like(label)
    for vein in atr["veins"]:
        line = centre + (glob @ vein["line"].T).T
        idx, sdf, arc = near_tube(line, np.linspace(vein["radius"], 0.8 * vein["radius"], len(line)), margin=wall_t)
        wall_mask[idx[sdf > 0]] = True
        vein_blood[idx[sdf <= 0]] = True
        label[idx[(sdf <= 0) & (arc <= LABEL_VEIN_MM + 4.0)]] = True
        for branch in vein["branches"]:
            b_line = centre + (glob @ branch.T).T
            idx, sdf, _ = near_tube(b_line, 0.6 * vein["radius"], margin=1.5)
            wall_mask[idx[sdf > 0]] = True
            vein_blood[idx[sdf <= 0]] = True
    laa_line = centre + (glob @ atr["laa"][0].T).T
    idx, sdf, _ = near_tube(laa_line, atr["laa"][1], margin=wall_t)
    wall_mask[idx[sdf > 0]] = True
    label[idx[sdf <= 0]] = True
    flat[wall_mask & ~label & ~vein_blood] = LA_WALL
    flat[vein_blood & ~label] = VEIN
    flat[label] = LA
    label = label.reshape(shape)

    # --- intensities (blood = 1)
    levels = np.zeros(16, np.float32)
    levels[AIR] = 0.0
    levels[TISSUE] = rng.uniform(0.3, 0.6)
    levels[FAT] = rng.uniform(1.2, 1.7)
    levels[LUNG] = rng.uniform(0.03, 0.1)
    levels[SPINE] = rng.uniform(0.5, 0.85)
    levels[MYO] = rng.uniform(0.12, 0.3)
    levels[WALL] = rng.uniform(0.4, 0.8)
    for code in (LV, RV, RA, AORTA, PA, VEIN):
        levels[code] = rng.uniform(0.88, 1.12)
    levels[LA] = 1.0
    levels[LA_WALL] = rng.uniform(0.5, 0.9)
    clean = levels[tissue]
    texture = smooth_field(rng, shape, sp, rng.uniform(5, 10))
    amp = rng.uniform(0.12, 0.25)
    is_blood = np.isin(tissue, (LV, RV, RA, AORTA, PA, VEIN, LA))
    clean *= 1.0 + np.where(is_blood, 0.05, amp) * texture
    enhance = smooth_field(rng, shape, sp, rng.uniform(6, 12))
    bright = (tissue == LA_WALL) & (enhance > rng.uniform(-0.2, 0.6))
    clean[bright] = rng.uniform(1.3, 1.8) * (1.0 + 0.1 * texture[bright])
    bias = 1.0 + rng.uniform(0.15, 0.3) * np.tanh(0.7 * smooth_field(rng, shape, sp, rng.uniform(80, 150)))
    clean = blur(clean * bias, rng.uniform(0.5, 1.0) * spacing, sp)
    noisy = rician(rng, clean.astype(np.float32), rng.uniform(0.05, 0.15))
    image = np.clip(np.round(noisy * rng.uniform(70, 120)), 0, 255).astype(np.uint8)
    return {"image": image, "label": label.astype(np.uint8), "tissue": tissue}


def write_case(out: str | os.PathLike, k: int, seed: int, preset: str) -> str:
    """Write case ``k`` as ``out/<ID>/lgemri.nrrd`` and ``laendo.nrrd`` (0/255); return the 20-character ID."""
    rng = case_rng(seed, "la", k)
    case_id = random_id(rng, 20)
    p = PRESETS[preset]
    case = render_case(rng, p["shape"], p["spacing"])
    folder = Path(out) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    write_nrrd(folder / "lgemri.nrrd", case["image"], (p["spacing"],) * 3)
    write_nrrd(folder / "laendo.nrrd", case["label"] * np.uint8(255), (p["spacing"],) * 3)
    return case_id


def generate(out: str | os.PathLike, cases: int, seed: int, preset: str) -> dict:
    """Write ``cases`` cases; return the layout part of the manifest (ids, shape, spacing, entries)."""
    p = PRESETS[preset]
    ids = [write_case(out, k, seed, preset) for k in range(cases)]
    if len(set(ids)) != len(ids):
        raise RuntimeError("duplicate LA phantom IDs; change the seed")
    return {"ids": ids, "shape": list(p["shape"]), "spacing": [float(p["spacing"])] * 3, "entries": sorted(ids)}
