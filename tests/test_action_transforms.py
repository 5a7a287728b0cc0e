"""ACTION's pre-training views, unlabelled mixing, strong view and AdvMorph (action.md §3, §5, §7.2, §11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from semizoo.transforms.action import (
    ActionStrongAug,
    AdvMorph,
    action_pretrain_views,
    box_gaussian_blur,
    class_mix_mask,
    cutout_box_mask,
    mix_unlabeled,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _box(zero_mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) per axis of the bounding box of ``zero_mask``; asserts the mask fills its box."""
    idx = zero_mask.nonzero()
    lo, hi = idx.min(dim=0).values, idx.max(dim=0).values
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
    assert zero_mask[box].all() and zero_mask.sum() == zero_mask[box].numel()
    return [(int(a), int(b - a + 1)) for a, b in zip(lo, hi)]


# ---------------------------------------------------------------------------------------------------------------
# Pillow blur
# ---------------------------------------------------------------------------------------------------------------


def test_quantised_blur_matches_pillow_exactly():
    rng = np.random.default_rng(0)
    plane = (rng.random((17, 23)) * 256).astype(np.uint8)
    for sigma in [0.15, 0.4, 1.0, 1.15] + rng.uniform(0.15, 1.15, 12).tolist():
        expected = np.array(Image.fromarray(plane).filter(ImageFilter.GaussianBlur(radius=sigma)))
        ours = box_gaussian_blur(torch.from_numpy(plane).float(), sigma, quantised=True)
        assert np.array_equal(ours.numpy().astype(np.uint8), expected), sigma


def test_float_blur_preserves_constants_and_mean_scale():
    x = torch.full((1, 1, 9, 9), -3.25)
    assert torch.allclose(box_gaussian_blur(x, 0.8), x)
    y = torch.randn(1, 1, 32, 32)
    out = box_gaussian_blur(y, 1.0)
    assert abs(out.mean() - y.mean()) < 0.05 and out.std() < y.std()  # smooths, stays in float scale


# ---------------------------------------------------------------------------------------------------------------
# pre-training views
# ---------------------------------------------------------------------------------------------------------------

VIEW_CASES = [(2, (3, 1, 16, 16)), (3, (1, 1, 16, 16, 8))]


@pytest.mark.parametrize("dims,shape", VIEW_CASES, ids=["acdc", "la"])
@pytest.mark.parametrize("compat", ["fixed", "official"])
def test_pretrain_views_identity_when_p0(dims, shape, compat):
    x = torch.rand(shape)
    student, teacher = action_pretrain_views(x, dims, compat, _gen(), jitter_prob=0.0, blur_prob=0.0)
    assert torch.equal(student, x) and torch.equal(teacher, x)
    assert student.data_ptr() != x.data_ptr() and teacher.data_ptr() != student.data_ptr()


@pytest.mark.parametrize("dims,shape", VIEW_CASES, ids=["acdc", "la"])
def test_pretrain_views_deterministic_under_a_seed(dims, shape):
    x = torch.rand(shape)
    runs = [action_pretrain_views(x, dims, "fixed", _gen(seed), 1.0, 1.0) for seed in (3, 3, 4)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_acdc_views_student_jittered_teacher_blurred():
    x = torch.rand(2, 1, 16, 16)
    student, teacher = action_pretrain_views(x, 2, "fixed", _gen(), jitter_prob=1.0, blur_prob=0.0)
    assert torch.equal(student, teacher) and not torch.equal(student, x)
    student, teacher = action_pretrain_views(x, 2, "fixed", _gen(), jitter_prob=0.0, blur_prob=1.0)
    assert torch.equal(student, x) and not torch.equal(teacher, x)


def test_la_views_are_equal():
    x = torch.randn(1, 1, 8, 8, 6)
    student, teacher = action_pretrain_views(x, 3, "fixed", _gen(), jitter_prob=1.0, blur_prob=1.0)
    assert torch.equal(student, teacher) and not torch.equal(student, x)


@pytest.mark.parametrize(
    "dims,shape,strength,per_plane",
    [(2, (4, 1, 16, 16), 0.2, "sample"), (3, (1, 1, 8, 8, 6), 0.02, "z_slice")],
    ids=["acdc_per_sample", "la_per_z_slice"],
)
def test_fixed_jitter_is_brightness_times_contrast(dims, shape, strength, per_plane):
    x = torch.rand(shape, dtype=torch.float64) + 0.5
    student, _ = action_pretrain_views(x, dims, "fixed", _gen(1), jitter_prob=1.0, blur_prob=0.0)
    # one plane: out = b·c·x + b·(1 - c)·mean(x), so mean(out) = b·mean(x) and std(out) = b·c·std(x)
    planes_in = x.movedim(-1, 1).flatten(0, 1) if dims == 3 else x
    planes_out = student.movedim(-1, 1).flatten(0, 1) if dims == 3 else student
    b = planes_out.flatten(1).mean(1) / planes_in.flatten(1).mean(1)
    c = planes_out.flatten(1).std(1) / planes_in.flatten(1).std(1) / b
    for factor in (b, c):
        assert ((factor >= 1 - strength - 1e-9) & (factor <= 1 + strength + 1e-9)).all()
        assert factor.unique().numel() == factor.numel()  # one draw per plane
    rebuilt = (b * c).view(-1, 1, 1, 1) * planes_in + (b * (1 - c)).view(-1, 1, 1, 1) * planes_in.mean(
        dim=(1, 2, 3), keepdim=True
    )
    assert torch.allclose(rebuilt, planes_out)


def test_official_views_clamp_and_quantise():
    x = torch.randn(2, 1, 16, 16)
    fixed, _ = action_pretrain_views(x, 2, "fixed", _gen(), jitter_prob=1.0, blur_prob=0.0)
    official, _ = action_pretrain_views(x, 2, "official", _gen(), jitter_prob=1.0, blur_prob=0.0)
    assert fixed.min() < 0 and official.min() >= 0 and official.max() <= 1  # torchvision's clamp
    _, teacher = action_pretrain_views(torch.rand(2, 1, 16, 16), 2, "official", _gen(), 0.0, 1.0)
    assert torch.equal(teacher * 255, (teacher * 255).round()) and teacher.max() <= 1  # 8 bits, ÷255
    _, teacher3d = action_pretrain_views(torch.rand(1, 1, 8, 8, 4), 3, "official", _gen(), 0.0, 1.0)
    assert torch.equal(teacher3d, teacher3d.round()) and teacher3d.max() > 1  # LA: left in 0..255


# ---------------------------------------------------------------------------------------------------------------
# mixing
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,depth",
    [((16, 16), None), ((12, 21), None), ((16, 16, 24), 20), ((16, 12, 8), 8)],
    ids=["square", "odd_width", "la_slab", "shallow_clipped"],
)
def test_cutmix_box_bounds_over_seeds(shape, depth):
    height, width = shape[0], shape[1]
    widths, at_end = set(), set()
    for seed in range(60):
        mask = cutout_box_mask(shape, _gen(seed))
        box = _box(mask == 0)
        (y0, h), (x0, w) = box[0], box[1]
        assert width // 2 + 1 <= w < width and h == round(height * width / 2 / w)
        assert 0 <= x0 <= width - w and 0 <= y0 <= height - h
        at_end |= {axis for axis, (start, length) in enumerate(box) if start + length == mask.shape[axis]}
        if depth is not None:
            z0, d = box[2]
            assert d == depth and 0 <= z0 <= shape[2] - depth
        widths.add(w)
    assert len(widths) > 2  # the width is random
    assert at_end == set(range(len(shape)))  # the upper start bounds are reached (inclusive)


def test_mix_partner_is_next_sample():
    batch, size = 3, 16
    data = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 1, size, size).clone()
    pseudo = torch.arange(batch).view(batch, 1, 1).expand(batch, size, size).clone()
    conf = data[:, 0] / 10
    image, label, c = mix_unlabeled(data, pseudo, conf, "cutmix", _gen(5))
    for i in range(batch):
        partner = (i + 1) % batch
        inside = _box(image[i, 0] == partner)  # the box takes the partner
        assert len(inside) == 2
        assert set(image[i].unique().tolist()) == {float(i), float(partner)}
        assert torch.equal(label[i], image[i, 0].long()) and torch.allclose(c[i], image[i, 0] / 10)
    assert label.dtype == torch.long


@pytest.mark.parametrize("mode", ["cutmix", "classmix"])
def test_mix_with_batch_one_is_identity(mode):
    data, pseudo, conf = torch.rand(1, 1, 8, 8), torch.randint(0, 3, (1, 8, 8)), torch.rand(1, 8, 8)
    image, label, c = mix_unlabeled(data, pseudo, conf, mode, _gen())
    assert torch.equal(image, data) and torch.equal(label, pseudo) and torch.equal(c, conf)


@pytest.mark.parametrize("classes,kept", [(4, 2), (3, 1), (5, 2), (1, 0)], ids=["n4", "n3", "n5", "n1"])
def test_classmix_keeps_half_the_present_classes(classes, kept):
    size = 10
    pseudo0 = torch.arange(size * size).view(size, size) % classes
    pseudo = torch.stack([pseudo0, torch.full((size, size), 7)])
    data = torch.stack([torch.zeros(1, size, size), torch.ones(1, size, size)])
    for seed in range(5):
        image, label, _ = mix_unlabeled(data, pseudo, torch.rand(2, size, size), "classmix", _gen(seed))
        own = image[0, 0] == 0  # m = 1: pixels kept from sample 0
        chosen = pseudo0[own].unique()
        assert chosen.numel() == kept
        assert torch.equal(own, torch.isin(pseudo0, chosen))
        assert torch.equal(label[0], torch.where(own, pseudo0, torch.full_like(pseudo0, 7)))
    mask = class_mix_mask(pseudo0, _gen())
    assert mask.dtype == torch.float32 and mask.shape == pseudo0.shape


@pytest.mark.parametrize("shape", [(2, 1, 12, 12), (1, 1, 12, 12, 24)], ids=["2d", "3d_b1"])
def test_cutout_sets_label_minus_one_and_zeroes_the_box(shape):
    data = torch.rand(shape) + 0.1
    pseudo = torch.randint(0, 3, (shape[0],) + shape[2:])
    conf = torch.rand(pseudo.shape) + 0.1
    image, label, c = mix_unlabeled(data, pseudo, conf, "cutout", _gen(2))
    for b in range(shape[0]):
        box = label[b] == -1
        _box(box)
        assert torch.equal(image[b, 0] == 0, box) and torch.equal(c[b] == 0, box)
        assert torch.equal(image[b, 0][~box], data[b, 0][~box]) and torch.equal(label[b][~box], pseudo[b][~box])


def test_mix_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        mix_unlabeled(torch.rand(2, 1, 8, 8), torch.zeros(2, 8, 8), torch.rand(2, 8, 8), "mixup")
    with pytest.raises(ValueError, match="pseudo and conf must be"):
        mix_unlabeled(torch.rand(2, 1, 8, 8), torch.zeros(2, 8, 9), torch.rand(2, 8, 8), "cutmix")


# ---------------------------------------------------------------------------------------------------------------
# strong view and AdvMorph
# ---------------------------------------------------------------------------------------------------------------

STRONG = [(2, (3, 1, 16, 16)), (3, (1, 1, 8, 12, 6))]


@pytest.mark.parametrize("dims,shape", STRONG, ids=["acdc", "la"])
@pytest.mark.parametrize("compat", ["fixed", "official"])
def test_strong_aug_keeps_shapes_and_labels(dims, shape, compat):
    image = torch.rand(shape)
    pseudo = torch.randint(0, 3, (shape[0],) + shape[2:])
    conf = torch.rand(pseudo.shape)
    aug = ActionStrongAug(dims, compat, jitter_prob=1.0, blur_prob=1.0)
    out, label, c = aug(image, pseudo, conf, _gen())
    assert out.shape == image.shape and out.dtype == image.dtype
    assert torch.equal(label, pseudo) and c.shape == conf.shape and not torch.equal(out, image)
    again = aug(image, pseudo, conf, _gen())
    assert torch.equal(out, again[0])


@pytest.mark.parametrize("dims,shape", [(2, (4, 1, 32, 32)), (3, (1, 1, 16, 16, 8))], ids=["acdc", "la"])
def test_fixed_strong_aug_keeps_z_scored_intensities(dims, shape):
    image = torch.randn(shape, generator=_gen(9))
    pseudo = torch.zeros((shape[0],) + shape[2:], dtype=torch.long)
    conf = torch.rand(pseudo.shape, generator=_gen(8))
    out, _, c = ActionStrongAug(dims, "fixed", jitter_prob=1.0, blur_prob=1.0)(image, pseudo, conf, _gen())
    assert out.min() < -1 and out.max() < 10 and abs(out.mean() - image.mean()) < 0.3  # not 0..1, not 0..255
    assert torch.equal(c, conf) and c.data_ptr() != conf.data_ptr()  # no 8-bit rounding; a new tensor


def test_official_acdc_strong_aug_quantises_image_and_confidence():
    image, conf = torch.rand(2, 1, 16, 16), torch.rand(2, 16, 16)
    pseudo = torch.zeros(2, 16, 16, dtype=torch.long)
    out, _, c = ActionStrongAug(2, "official", jitter_prob=0.0, blur_prob=0.0)(image, pseudo, conf, _gen())
    assert torch.equal(out, torch.floor(image * 255) / 255) and torch.equal(c, torch.floor(conf * 255) / 255)
    out, _, _ = ActionStrongAug(2, "official", jitter_prob=1.0, blur_prob=1.0)(image, pseudo, conf, _gen())
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4) and out.min() >= 0 and out.max() <= 1


def test_official_la_strong_aug_touches_slices_below_depth_only():
    image = torch.randn(1, 1, 6, 10, 4)  # v[:, :, j] for j < D = 4 of W = 10
    pseudo, conf = torch.zeros(1, 6, 10, 4, dtype=torch.long), torch.rand(1, 6, 10, 4)
    out, _, _ = ActionStrongAug(3, "official", jitter_prob=0.0, blur_prob=1.0)(image, pseudo, conf, _gen())
    assert torch.equal(out[:, :, :, 4:], image[:, :, :, 4:])
    assert torch.equal(out[:, :, :, :4], out[:, :, :, :4].round()) and out[:, :, :, :4].min() >= 0  # 0..255 levels
    fixed, _, _ = ActionStrongAug(3, "fixed", jitter_prob=0.0, blur_prob=1.0)(image, pseudo, conf, _gen())
    assert not torch.equal(fixed[:, :, :, 4:], image[:, :, :, 4:])  # fixed: every slice


def test_adv_morph_displacement_is_bounded_and_smooth():
    morph = AdvMorph(epsilon=1.5, grid_size=(8, 8))
    field = morph.displacement(2, (32, 32), _gen())
    norms = field.norm(dim=1)
    assert norms.max() <= 1.5 + 1e-5 and norms.flatten(1).max(dim=1).values.min() > 1.4
    # warping the ramp x ↦ x moves each interior pixel by its x displacement (bilinear is exact on linear maps)
    ramp = torch.arange(32, dtype=torch.float32).view(1, 1, 1, 32).expand(2, 1, 32, 32).contiguous()
    warped = morph(ramp, _gen())
    inner = (slice(None), 0, slice(2, -2), slice(2, -2))
    assert torch.allclose(warped[inner] - ramp[inner], field[:, 0, 2:-2, 2:-2], atol=1e-4)
    assert torch.allclose(AdvMorph(epsilon=0.0)(ramp, _gen()), ramp, atol=1e-5)


def test_adv_morph_prob_applies_to_images_only():
    image, pseudo, conf = torch.rand(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32)), torch.rand(2, 32, 32)
    plain = ActionStrongAug(2, "fixed", adv_morph_prob=0.0, jitter_prob=0.0, blur_prob=0.0)
    morphed = ActionStrongAug(2, "fixed", adv_morph_prob=1.0, jitter_prob=0.0, blur_prob=0.0)
    assert torch.equal(plain(image, pseudo, conf, _gen())[0], image)
    out, label, c = morphed(image, pseudo, conf, _gen())
    assert not torch.equal(out, image) and torch.equal(label, pseudo) and torch.equal(c, conf)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(spatial_dims=3, adv_morph_prob=0.5), "2D only"),
        (dict(spatial_dims=2, intensity_compat="uint8"), "intensity_compat must be one of"),
        (dict(spatial_dims=2, blur_prob=1.5), r"blur_prob must be in \[0, 1\]"),
        (dict(spatial_dims=4), "spatial_dims must be 2 or 3"),
    ],
    ids=["morph_3d", "compat", "prob", "dims"],
)
def test_strong_aug_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActionStrongAug(**kwargs)
