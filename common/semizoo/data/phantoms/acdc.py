"""ACDC phantoms in the raw public layout (``database/training/patientNNN/``, datasets.md §1.2 and §4).

Each patient is a short-axis cine stack (X, Y, Z, T) drawn in millimetres: a bullet-shaped LV (bright blood pool
with dark papillary muscles, both labelled LV), a myocardial ring (thicker in HCM, with a thinned sector in MINF),
an RV crescent on the septal side that fades before the apex, a tilted base plane (the most basal slice is partly
atrium) and, around the heart, pericardial and subcutaneous fat, chest-wall muscle, dark lungs, a liver as bright
as the myocardium and unlabelled bright vessels. Systole shrinks the LV by the group's ejection fraction, thickens
the wall and shortens the ventricle. Bias field, blur, gamma and Rician noise (CNR 1.5-4 blood vs myocardium)
vary per case. Labels come from the geometry only: 0 background, 1 RV, 2 MYO, 3 LV.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .common import blur, case_rng, grid, rician, smooth_field, write_nifti_gz

__all__ = ["PRESETS", "GROUPS", "layout", "render_case", "write_case", "generate"]

#: Matrix, in-plane spacing (mm), slices, slice spacing (mm), frames and default number of patients per preset.
PRESETS = {
    "test": {"cases": 10, "size": 48, "spacing": 3.0, "slices": 6, "slice_spacing": 10.0, "frames": 8},
    "bench": {"cases": 100, "size": 128, "spacing": 1.5, "slices": 8, "slice_spacing": 10.0, "frames": 12},
}
GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")

# LV cavity radius at ED, wall thickness, LV ejection fraction, RV thickness, RV span (deg), RV ejection fraction.
_GROUP_RANGES = {
    "NOR": {
        "r0": (20, 26),
        "wall": (7, 11),
        "ef": (0.55, 0.70),
        "rv": (18, 28),
        "span": (100, 140),
        "rvef": (0.45, 0.6),
    },
    "MINF": {
        "r0": (23, 30),
        "wall": (7, 10),
        "ef": (0.25, 0.45),
        "rv": (18, 26),
        "span": (100, 140),
        "rvef": (0.4, 0.55),
    },
    "DCM": {"r0": (28, 33), "wall": (6, 8), "ef": (0.20, 0.35), "rv": (16, 26), "span": (100, 140), "rvef": (0.3, 0.5)},
    "HCM": {
        "r0": (15, 20),
        "wall": (15, 22),
        "ef": (0.60, 0.70),
        "rv": (15, 22),
        "span": (100, 130),
        "rvef": (0.5, 0.6),
    },
    "RV": {"r0": (18, 23), "wall": (7, 10), "ef": (0.50, 0.65), "rv": (30, 40), "span": (140, 160), "rvef": (0.2, 0.4)},
}

# Tissue codes of the painted scene.
AIR, TISSUE, FAT, MUSCLE, LUNG, LIVER, SPINE, VESSEL, ATRIUM, VALVE, RV_WALL, RV_BLOOD, MYO, LV_BLOOD, PAPILLARY = (
    range(15)
)


def layout(preset: str, size: int | None = None) -> dict:
    """Shape (X, Y, Z, T) and spacing (x, y, z mm) of a preset; ``size`` changes the matrix, keeping the FOV."""
    p = PRESETS[preset]
    n = int(size) if size is not None else p["size"]
    if n < 16:
        raise ValueError(f"acdc phantom size must be >= 16, got {n}")
    sx = p["size"] * p["spacing"] / n
    return {"shape": (n, n, p["slices"], p["frames"]), "spacing": (sx, sx, p["slice_spacing"])}


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _rot(vec: np.ndarray, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([np.cos(a) * vec[0] - np.sin(a) * vec[1], np.sin(a) * vec[0] + np.cos(a) * vec[1]])


def _profile(s: np.ndarray, q: float) -> np.ndarray:
    """Bullet-shaped long-axis profile: 1 at the base (s = 0), 0 at the apex (s = 1)."""
    return np.sqrt(np.clip(1.0 - np.clip(s, 0.0, None) ** q, 0.0, None))


def render_case(rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...], group: str) -> dict:
    """Draw one patient: ``image`` int16 and ``label`` uint8 (X, Y, Z, T), ``es`` (0-based frame), ``tissue`` codes."""
    nx, ny, nz, nt = shape
    sx, sy, sz = spacing
    g = _GROUP_RANGES[group]
    f32 = np.float32

    # --- cardiac cycle: contraction c(t) in [0, 1], 0 at ED (frame 0), 1 at ES
    es = int(np.clip(round(nt * rng.uniform(0.3, 0.45)), 1, nt - 1))
    t = np.arange(nt, dtype=f32)
    c_t = np.where(t <= es, 0.5 - 0.5 * np.cos(np.pi * t / es), 0.5 + 0.5 * np.cos(np.pi * (t - es) / max(nt - es, 1)))
    c_t = c_t.reshape(1, 1, 1, nt).astype(f32)

    # --- heart geometry (mm)
    r0, wall, ef = _u(rng, g["r0"]), _u(rng, g["wall"]), _u(rng, g["ef"])
    rv_t0, span0, rv_ef = _u(rng, g["rv"]), _u(rng, g["span"]), _u(rng, g["rvef"])
    shorten = rng.uniform(0.88, 0.95)  # long-axis length ratio ES/ED
    f_lv = np.sqrt((1.0 - ef) / shorten)  # in-plane cavity radius ratio ES/ED
    f_rv = (1.0 - rv_ef) ** 0.6
    coverage = (nz - 1) * sz
    length = coverage * rng.uniform(1.0, 1.15) + rng.uniform(0, 6)  # base plane -> epicardial apex
    apex_wall = rng.uniform(5, 9)
    q = rng.uniform(2.0, 3.2)
    z0 = rng.uniform(-3, 5)  # position of the first slice below the base plane
    tilt = np.tan(np.deg2rad(rng.uniform(8, 22)))
    rv_len = rng.uniform(0.55, 0.75)

    fov = nx * sx
    alpha = np.deg2rad(200 + rng.uniform(-40, 40))
    u = np.array([np.cos(alpha), np.sin(alpha)])  # septal direction (towards the RV)
    v = _rot(u, 90)
    centre = -u * rv_t0 * 0.5 + rng.uniform(-0.08, 0.08, 2) * fov
    drift = rng.uniform(-0.12, 0.12, 2)  # long-axis obliquity (mm per mm)
    tilt_dir = _rot(u, rng.uniform(0, 360))

    # angular shape: cavity harmonics, wall thickness modulation, infarct sector, papillary muscles
    harm = [(rng.uniform(0, 0.06), rng.uniform(0, 2 * np.pi), n) for n in (2, 3)]
    wall_mod = (rng.uniform(0, 0.15), rng.uniform(0, 2 * np.pi))
    septal_boost = rng.uniform(0.1, 0.25) if group == "HCM" else 0.0
    infarct = (rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(30, 55))) if group == "MINF" else None
    pap = [
        (np.pi + s * np.deg2rad(rng.uniform(40, 65)), rng.uniform(0.5, 0.68), rng.uniform(2.5, 4.0)) for s in (-1, 1)
    ]

    # --- coordinates (X, Y, Z, 1) -> heart frame
    x, y, z = grid((nx, ny, nz), (sx, sy, sz))
    x, y = x[..., None], y[..., None]
    zmm = (z[..., None] - z[0, 0, 0] + z0).astype(f32)  # depth below the base plane at ED
    cx = centre[0] + drift[0] * zmm
    cy = centre[1] + drift[1] * zmm
    dx, dy = x - cx, y - cy
    a = dx * u[0] + dy * u[1]  # along the septal direction
    b = dx * v[0] + dy * v[1]
    rho = np.sqrt(a * a + b * b)
    theta = np.arctan2(b, a)
    base_shift = tilt * (dx * tilt_dir[0] + dy * tilt_dir[1])  # tilted base plane

    # --- LV: cavity and epicardium per angle, depth and frame
    zb = c_t * (1.0 - shorten) * length  # the base descends towards the fixed apex in systole
    depth = zmm - zb  # along the long axis, from the (descending) base
    below_base = depth - base_shift  # > 0 below the tilted base plane: ventricles, else atria
    span_len = length - zb
    s_epi = depth / span_len
    s_cav = depth / (span_len - apex_wall)
    m = 1.0 + sum(amp * np.cos(n * theta - ph) for amp, ph, n in harm)
    w = wall * (1.0 + wall_mod[0] * np.cos(theta - wall_mod[1]) + septal_boost * np.cos(theta))
    w = np.clip(w, 0.8 * g["wall"][0], g["wall"][1])
    kinetic = np.ones_like(theta)
    if infarct is not None:
        d_ang = np.angle(np.exp(1j * (theta - infarct[0])))
        inf_w = np.exp(-0.5 * (d_ang / infarct[1]) ** 4)
        w = w * (1.0 - 0.45 * inf_w)
        kinetic = 1.0 - 0.8 * inf_w
    r_ed = r0 * m * _profile(s_cav, q)
    out_ed = (r0 * m + w) * _profile(s_epi, q)
    r_cav = r_ed * (1.0 - c_t * (1.0 - f_lv) * kinetic)
    r_epi = np.sqrt(np.clip(out_ed**2 - r_ed**2, 0, None) + r_cav**2)  # myocardial area is conserved
    ventricle = below_base > 0
    lv_cav = ventricle & (rho < r_cav)
    lv_epi = ventricle & (rho < r_epi)

    # papillary muscles: dots inside the cavity that follow the wall (labelled LV)
    pap_mask = np.zeros_like(lv_cav)
    s_mid = (depth > 0.15 * span_len) & (depth < 0.75 * span_len)
    for ang, frac, rad in pap:
        rad_t = rad * (1.0 + 0.25 * c_t)
        ref = r0 * _profile(s_cav, q) * (1.0 - c_t * (1.0 - f_lv)) * frac
        px, py = ref * np.cos(ang), ref * np.sin(ang)
        pap_mask |= s_mid & ((a - px) ** 2 + (b - py) ** 2 < rad_t**2)
    pap_mask &= lv_cav

    # --- RV crescent: circle (centre d along u, radius R) minus the LV epicardium, spanning `span` degrees
    rv_depth = np.clip(depth / (rv_len * span_len), 0, None)
    rv_t = rv_t0 * np.sqrt(np.clip(1.0 - rv_depth**2.2, 0, None)) * (1.0 - c_t * (1.0 - f_rv))
    half = np.deg2rad(span0 * (0.75 + 0.25 * np.sqrt(np.clip(1.0 - rv_depth, 0, None))) / 2.0)
    # septal epicardial radius on the LV axis (one value per slice and frame, so the crescent is a true circle)
    m0 = 1.0 + sum(amp * np.cos(ph) for amp, ph, _ in harm)
    w0 = np.clip(wall * (1.0 + wall_mod[0] * np.cos(wall_mod[1]) + septal_boost), 0.8 * g["wall"][0], g["wall"][1])
    r_ed0 = r0 * m0 * _profile(depth / (span_len - apex_wall), q)
    out_ed0 = (r0 * m0 + w0) * _profile(depth / span_len, q)
    r_cav0 = r_ed0 * (1.0 - c_t * (1.0 - f_lv))
    r_sep = np.maximum(np.sqrt(np.clip(out_ed0**2 - r_ed0**2, 0, None) + r_cav0**2), 1.0)
    d_c = ((r_sep + rv_t) ** 2 - r_sep**2) / np.maximum(2.0 * (r_sep + rv_t - r_sep * np.cos(half)), 1e-3)
    r_rv = r_sep + rv_t - d_c
    rho_rv = np.sqrt((a - d_c) ** 2 + b**2)
    has_rv = ventricle & (rv_t > 0.5)
    rv_blood = has_rv & (rho_rv < r_rv) & ~lv_epi
    rv_wall_t = rng.uniform(2.5, 4.5)
    rv_outer = has_rv & (rho_rv < r_rv + rv_wall_t) & ~lv_epi & ~rv_blood
    heart = lv_epi | rv_blood | rv_outer

    # --- atria above the tilted base plane (unlabelled blood), with a dark valve plane
    above = (below_base <= 0) & (below_base > -30)
    ra_r = max(12.0, 0.9 * rv_t0)
    rho_ra = np.sqrt((a - (r0 + 0.5 * wall + 0.6 * rv_t0)) ** 2 + b**2)
    atrium = above & ((rho < r0 * 1.05) | (rho_ra < ra_r))
    atrium_wall = above & ~atrium & ((rho < r0 * 1.05 + 3) | (rho_ra < ra_r + 3))
    valve = (np.abs(below_base) < 1.5 * tilt) & (rho < r0 * 1.1 + 3)

    # --- surroundings (static over time; zmm broadcast keeps slow variation along z)
    chest_dir = _rot(u, rng.uniform(15, 55))
    r_body = rng.uniform(150, 230)
    fat_t, mus_t = rng.uniform(6, 16), rng.uniform(8, 16)
    d_cw = r0 + wall + rv_t0 + rng.uniform(6, 22)
    c_body = centre + chest_dir * (d_cw - (r_body - fat_t - mus_t))
    rho_body = np.sqrt((x - c_body[0]) ** 2 + (y - c_body[1]) ** 2)
    body = rho_body < r_body
    fat_sc = body & (rho_body > r_body - fat_t)
    muscle = body & ~fat_sc & (rho_body > r_body - fat_t - mus_t)

    def ellipse(c: np.ndarray, ax: np.ndarray, ra: float, rb: float) -> np.ndarray:
        ex, ey = x - c[0], y - c[1]
        pa = ex * ax[0] + ey * ax[1]
        pb = -ex * ax[1] + ey * ax[0]
        return (pa / ra) ** 2 + (pb / rb) ** 2 < 1.0

    r_out = r0 + wall
    lungs = np.zeros(np.broadcast_shapes(x.shape, y.shape), bool)
    for side, extra in ((-1.0, 0.0), (1.0, rv_t0)):
        ax_l = _rot(u, rng.uniform(-25, 25))
        ra, rb = rng.uniform(25, 45), rng.uniform(45, 80)
        c_l = centre + side * ax_l * (r_out + extra + rng.uniform(8, 25) + ra) + v * rng.uniform(-25, 25)
        lungs |= ellipse(c_l, ax_l, ra, rb)
    liver_dir = _rot(u, -rng.uniform(60, 115))
    r_liver = rng.uniform(70, 130)
    gap = np.clip(rng.uniform(8, 30) - zmm * rng.uniform(0.15, 0.45), 0.0, None)
    c_liver = centre + liver_dir * (r_out + r_liver)
    liver = ((x - c_liver[0]) ** 2 + (y - c_liver[1]) ** 2) < (r_liver - gap) ** 2
    vessels = np.zeros(np.broadcast_shapes(x.shape, y.shape, zmm.shape), bool)
    spine_dir = _rot(-chest_dir, rng.uniform(-30, 30))
    r_ao = rng.uniform(9, 13)
    c_spine = centre + spine_dir * (r_out + rng.uniform(25, 45))
    r_sp = rng.uniform(13, 18)
    spine = ((x - c_spine[0]) ** 2 + (y - c_spine[1]) ** 2) < r_sp**2
    c_ao = c_spine + _rot(spine_dir, rng.choice([-90, 90]) + rng.uniform(-20, 20)) * (r_sp + r_ao + rng.uniform(1, 6))
    vessels |= ((x - c_ao[0]) ** 2 + (y - c_ao[1]) ** 2) < r_ao**2
    c_ivc = c_liver - liver_dir * (r_liver * rng.uniform(0.2, 0.6)) + _rot(liver_dir, 90) * rng.uniform(-20, 20)
    vessels |= liver & (((x - c_ivc[0]) ** 2 + (y - c_ivc[1]) ** 2) < rng.uniform(7, 12) ** 2)
    for _ in range(int(rng.integers(1, 3))):  # great vessels next to the base, fading down the stack
        r_gv = rng.uniform(9, 14)
        c_gv = centre + _rot(chest_dir, rng.uniform(-70, 70)) * (r_out + rv_t0 * 0.7 + r_gv + rng.uniform(2, 10))
        reach = rng.uniform(0.25, 0.6) * coverage
        vessels |= (zmm < reach) & (((x - c_gv[0]) ** 2 + (y - c_gv[1]) ** 2) < r_gv**2)

    # pericardial fat: a patchy band just outside the heart
    band = rng.uniform(3, 8)
    near_lv = ventricle & (rho < r_epi + band)
    near_rv = has_rv & (rho_rv < r_rv + rv_wall_t + band)
    patch = smooth_field(rng, (nx, ny, nz), (sx, sy, sz), rng.uniform(10, 20))[..., None]
    peri_fat = (near_lv | near_rv) & ~heart & (patch > rng.uniform(-0.6, 0.3))

    # --- paint tissues (later wins)
    full = np.broadcast_shapes(x.shape, y.shape, zmm.shape, c_t.shape)
    tissue = np.full(full, AIR, np.uint8)
    for code, mask in (
        (TISSUE, body),
        (FAT, fat_sc),
        (MUSCLE, muscle),
        (LUNG, lungs & body & ~fat_sc & ~muscle),
        (LIVER, liver & body & ~fat_sc & ~muscle),
        (SPINE, spine),
        (VESSEL, vessels),
        (FAT, peri_fat),
        (RV_WALL, atrium_wall),
        (ATRIUM, atrium),
        (VALVE, valve),
        (RV_WALL, rv_outer),
        (RV_BLOOD, rv_blood),
        (MYO, lv_epi),
        (LV_BLOOD, lv_cav),
        (PAPILLARY, pap_mask),
    ):
        tissue[np.broadcast_to(mask, full)] = code

    label = np.zeros(full, np.uint8)
    label[np.broadcast_to(rv_blood, full)] = 1
    label[np.broadcast_to(lv_epi & ~lv_cav, full)] = 2
    label[np.broadcast_to(lv_cav, full)] = 3

    # --- intensities (blood = 1)
    myo = rng.uniform(0.25, 0.45)
    levels = np.zeros(16, np.float32)
    levels[AIR] = 0.0
    levels[TISSUE] = rng.uniform(0.35, 0.6)
    levels[FAT] = rng.uniform(0.8, 1.05)
    levels[MUSCLE] = myo * rng.uniform(0.8, 1.1)
    levels[LUNG] = rng.uniform(0.02, 0.08)
    levels[LIVER] = myo * rng.uniform(0.9, 1.15)
    levels[SPINE] = rng.uniform(0.4, 0.7)
    levels[VESSEL] = rng.uniform(0.85, 1.1)
    levels[ATRIUM] = rng.uniform(0.85, 1.05)
    levels[VALVE] = myo * 0.8
    levels[RV_WALL] = myo * rng.uniform(0.9, 1.1)
    levels[RV_BLOOD] = rng.uniform(0.85, 1.05)
    levels[MYO] = myo
    levels[LV_BLOOD] = 1.0
    levels[PAPILLARY] = myo * rng.uniform(0.9, 1.1)
    texture = 1.0 + 0.08 * smooth_field(rng, (nx, ny, nz), (sx, sy, sz), rng.uniform(6, 12))[..., None]
    bias = 1.0 + rng.uniform(0.15, 0.3) * np.tanh(0.7 * smooth_field(rng, (nx, ny, nz), (sx, sy, sz), 120.0))
    clean = levels[tissue] * texture * bias[..., None]
    clean = blur(clean, rng.uniform(0.5, 1.0) * sx, (sx, sy, sz, 1.0), axes=(0, 1))
    gamma = rng.uniform(0.8, 1.25)
    clean = np.clip(clean, 0, None) ** gamma
    sigma = (1.0 - myo**gamma) / rng.uniform(1.5, 4.0)
    noisy = rician(rng, clean.astype(f32), sigma)
    gain = rng.uniform(150, 1200)
    image = np.clip(np.round(noisy * gain), 0, 32767).astype(np.int16)
    return {"image": image, "label": label, "es": es, "tissue": tissue}


def write_case(out: str | os.PathLike, k: int, seed: int, shape: tuple[int, ...], spacing: tuple[float, ...]) -> str:
    """Write patient ``k`` (0-based; named ``patient{k+1:03d}``) under ``out/database/training``; return its name."""
    rng = case_rng(seed, "acdc", k)
    name = f"patient{k + 1:03d}"
    group = GROUPS[k % len(GROUPS)]
    height, weight = round(float(rng.uniform(150, 195)), 1), round(float(rng.uniform(50, 105)), 1)
    case = render_case(rng, shape, spacing, group)
    ed, es = 1, case["es"] + 1
    folder = Path(out) / "database" / "training" / name
    folder.mkdir(parents=True, exist_ok=True)
    info = f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: {height}\nNbFrame: {shape[3]}\nWeight: {weight}\n"
    (folder / "Info.cfg").write_text(info)
    write_nifti_gz(folder / f"{name}_4d.nii.gz", case["image"], spacing)
    for frame in (ed, es):
        write_nifti_gz(
            folder / f"{name}_frame{frame:02d}.nii.gz", np.ascontiguousarray(case["image"][..., frame - 1]), spacing
        )
        write_nifti_gz(
            folder / f"{name}_frame{frame:02d}_gt.nii.gz", np.ascontiguousarray(case["label"][..., frame - 1]), spacing
        )
    return name


def generate(out: str | os.PathLike, cases: int, seed: int, preset: str, size: int | None = None) -> dict:
    """Write ``cases`` patients; return the layout part of the manifest (ids, shape, spacing)."""
    lay = layout(preset, size)
    names = [write_case(out, k, seed, lay["shape"], lay["spacing"]) for k in range(cases)]
    return {
        "ids": names,
        "shape": list(lay["shape"]),
        "spacing": [float(s) for s in lay["spacing"]],
        "entries": ["database"],
    }
