"""EPL building blocks (epl.md §5, §8): Fourier amplitude swap, CutMix box masks, confidence-aware CPS, dual level."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from semizoo.losses import confidence_aware_cps_loss, cps_pseudo_labels, dual_level_kl, kl_variance
from semizoo.transforms import FourierAmplitudeSwapd, cutmix_box_mask, fourier_amplitude_swap


def _shifted_amplitude(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.abs(np.fft.fft2(x.astype(np.float64), axes=(-2, -1))), axes=(-2, -1))


def test_fourier_swap_lam_zero_is_the_identity():
    rng = np.random.default_rng(0)
    image, target = rng.random((2, 40, 50)), rng.random((2, 40, 50))
    assert np.allclose(fourier_amplitude_swap(image, target, 0.05, lam=0.0), image, atol=1e-12)


def test_fourier_swap_replaces_the_window_amplitude_and_keeps_the_rest():
    """300×300, window_frac 0.01: a 7×7 window around DC takes the target's amplitude; 4 bins away, the image's."""
    rng = np.random.default_rng(1)
    image, target = rng.random((1, 300, 300)), 3 * rng.random((1, 300, 300))
    out = fourier_amplitude_swap(image, target, 0.01, lam=1.0)
    a_out, a_img, a_tgt = _shifted_amplitude(out), _shifted_amplitude(image), _shifted_amplitude(target)
    inside = (0, slice(147, 154), slice(147, 154))
    assert np.allclose(a_out[inside], a_tgt[inside], rtol=1e-6)
    for row, col in [(150, 154), (154, 150), (146, 150), (150, 146), (154, 154)]:
        assert a_out[0, row, col] == pytest.approx(a_img[0, row, col], rel=1e-6)
    assert out.mean() == pytest.approx(target.mean(), rel=1e-9)  # DC is inside: the mean follows the target
    assert not np.allclose(a_out[0, 148, 149], a_img[0, 148, 149])


def test_fourier_swap_numpy_equals_torch_channels_are_independent_and_float32_stays_float32():
    rng = np.random.default_rng(2)
    image, target = rng.random((2, 32, 32)).astype(np.float32), rng.random((2, 32, 32)).astype(np.float32)
    out_np = fourier_amplitude_swap(image, target, 0.1)
    out_torch = fourier_amplitude_swap(torch.from_numpy(image), torch.from_numpy(target), 0.1)
    assert out_np.dtype == np.float32 and out_torch.dtype == torch.float32
    assert np.allclose(out_np, out_torch.numpy(), atol=1e-6)
    single = fourier_amplitude_swap(image[1:], target[1:], 0.1)
    assert np.allclose(out_np[1:], single, atol=1e-6)
    changed_target = target.copy()
    changed_target[0] = rng.random((32, 32))
    assert np.allclose(fourier_amplitude_swap(image, changed_target, 0.1)[1], out_np[1], atol=1e-6)


def test_fourier_swap_rejects_mismatched_shapes_and_the_dict_form_writes_the_output_key():
    with pytest.raises(ValueError, match="share one shape"):
        fourier_amplitude_swap(np.zeros((1, 8, 8)), np.zeros((1, 8, 9)))
    rng = np.random.default_rng(3)
    data = {"image": rng.random((1, 16, 16)), "twin_target": rng.random((1, 16, 16))}
    out = FourierAmplitudeSwapd("image", target_key="twin_target", output_key="fourier")(data)
    assert np.allclose(out["fourier"], fourier_amplitude_swap(data["image"], data["twin_target"]))
    assert out["image"] is data["image"]
    with pytest.raises(KeyError, match="twin_target"):
        FourierAmplitudeSwapd("image", target_key="twin_target", output_key="fourier")({"image": data["image"]})


def test_cutmix_box_masks_are_binary_seeded_and_overlapping_boxes_toggle():
    masks = cutmix_box_mask(6, (40, 48), generator=torch.Generator().manual_seed(0))
    assert masks.shape == (6, 1, 40, 48) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masks, cutmix_box_mask(6, (40, 48), generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(masks, cutmix_box_mask(6, (40, 48), generator=torch.Generator().manual_seed(1)))
    toggled = 0
    for seed in range(40):  # some draw of 3 boxes overlaps: a pixel inside two boxes is 0 again
        generator = torch.Generator().manual_seed(seed)
        mask = cutmix_box_mask(1, (30, 30), generator=generator)
        generator = torch.Generator().manual_seed(seed)
        area = 0.25 + 0.25 * torch.rand((1, 3), generator=generator, dtype=torch.float64)
        height = torch.exp(torch.rand((1, 3), generator=generator, dtype=torch.float64) * torch.log(area))
        sizes = torch.round(torch.stack([height, area / height], -1) * math.sqrt(1 / 3) * 30)
        starts = torch.round((30 - sizes) * torch.rand((1, 3, 2), generator=generator, dtype=torch.float64))
        cover = torch.zeros(30, 30)
        for j in range(3):
            y0, x0, y1, x1 = (int(v) for v in (*starts[0, j], *(starts[0, j] + sizes[0, j])))
            cover[y0:y1, x0:x1] += 1
        assert torch.equal(mask[0, 0], (cover % 2 == 1).float())
        toggled += int((cover == 2).any())
    assert toggled > 0


def test_kl_variance_is_zero_for_equal_views_non_negative_and_matches_a_hand_value():
    logits = torch.randn(2, 3, 4, 5)
    assert torch.allclose(kl_variance(logits, logits.clone()), torch.zeros(2, 4, 5), atol=1e-6)
    other = torch.randn(2, 3, 4, 5)
    assert (kl_variance(logits, other) >= -1e-7).all() and kl_variance(logits, other).shape == (2, 4, 5)
    s = torch.tensor([0.0, 0.0]).view(1, 2, 1, 1)  # p = (0.5, 0.5)
    g = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)  # q = (0.75, 0.25)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl_variance(s, g).item() == pytest.approx(expected, rel=1e-6)
    s, g = torch.randn(1, 3, 2, 2, requires_grad=True), torch.randn(1, 3, 2, 2, requires_grad=True)
    kl_variance(s, g).sum().backward()
    assert s.grad is not None and g.grad is not None and s.grad.abs().sum() > 0 and g.grad.abs().sum() > 0


def _four(seed: int = 0, shape=(2, 3, 6, 6)):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, requires_grad=True) for _ in range(4)]


def test_cps_default_is_the_official_formula_and_differs_from_per_pixel_when_v_varies():
    s_l, g_l, s_r, g_r = _four()
    y_l, y_r = s_l.argmax(1), s_r.argmax(1)
    v_l, v_r = kl_variance(s_l, g_l), kl_variance(s_r, g_r)
    official = (
        torch.exp(-v_r).mean() * F.cross_entropy(s_l, y_r)
        + torch.exp(-v_l).mean() * F.cross_entropy(s_r, y_l)
        + v_l.mean()
        + v_r.mean()
    )
    loss = confidence_aware_cps_loss(s_l, g_l, s_r, g_r, y_l, y_r)
    assert loss.item() == pytest.approx(official.item(), rel=1e-6)
    per_pixel = confidence_aware_cps_loss(s_l, g_l, s_r, g_r, y_l, y_r, per_pixel=True)
    assert abs(per_pixel.item() - loss.item()) > 1e-4
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (s_l, g_l, s_r, g_r))


def test_cps_modes_agree_for_constant_v_identical_views_give_the_ce_terms_and_255_is_ignored():
    s_l, _, s_r, _ = _four(1)
    y_l, y_r = s_l.argmax(1), s_r.argmax(1)
    y_r[0, :2] = 255
    y_l[1, 3:] = 255
    # identical views: V = 0, e^{-V} = 1 -> the two CE terms (official: mean over non-ignored pixels)
    official = confidence_aware_cps_loss(s_l, s_l, s_r, s_r, y_l, y_r)
    expected = F.cross_entropy(s_l, y_r, ignore_index=255) + F.cross_entropy(s_r, y_l, ignore_index=255)
    assert official.item() == pytest.approx(expected.item(), rel=1e-6)
    # per pixel, constant V: CE_i = 0 at ignored pixels and the mean runs over all pixels
    per_pixel = confidence_aware_cps_loss(s_l, s_l, s_r, s_r, y_l, y_r, per_pixel=True)
    ce_l = F.cross_entropy(s_l, y_r, ignore_index=255, reduction="none")
    ce_r = F.cross_entropy(s_r, y_l, ignore_index=255, reduction="none")
    assert per_pixel.item() == pytest.approx((ce_l.mean() + ce_r.mean()).item(), rel=1e-6)
    # no ignored pixels and constant V: both modes are the same number
    y_l, y_r = s_l.argmax(1), s_r.argmax(1)
    both = [confidence_aware_cps_loss(s_l, s_l, s_r, s_r, y_l, y_r, per_pixel=p).item() for p in (False, True)]
    assert both[0] == pytest.approx(both[1], rel=1e-6)


def test_pseudo_labels_from_logits_and_from_probabilities_can_differ():
    """Logits (4, 0.1, 0) and (-4, 0.1, 0): their average favours class 1 (0.1 > 0 = 0), the average of their
    probabilities class 0 (0.486 > 0.270 > 0.244)."""
    a = torch.tensor([4.0, 0.1, 0.0]).view(1, 3, 1, 1)
    b = torch.tensor([-4.0, 0.1, 0.0]).view(1, 3, 1, 1)
    mask = torch.zeros(1, 1, 1, 1)
    by_logits = cps_pseudo_labels(a, b, a, b, mask, "logits")
    by_probs = cps_pseudo_labels(a, b, a, b, mask, "probs")
    mean_logits = (a + b) / 2
    mean_probs = (a.softmax(1) + b.softmax(1)) / 2
    assert by_logits.item() == mean_logits.argmax(1).item() == 1
    assert by_probs.item() == mean_probs.argmax(1).item() == 0
    # the mask picks the second batch where it is 1
    c = torch.tensor([0.0, 0.0, 5.0]).view(1, 3, 1, 1)
    assert cps_pseudo_labels(a, b, c, c, torch.ones(1, 1, 1, 1)).item() == 2
    with pytest.raises(ValueError, match="pseudo_from"):
        cps_pseudo_labels(a, b, a, b, mask, "median")


def test_dual_level_kl_is_zero_for_agreeing_networks_symmetric_and_non_negative():
    s_l, g_l, s_r, g_r = _four(2)
    assert dual_level_kl(s_l, g_l, s_l, g_l).item() == pytest.approx(0.0, abs=1e-6)
    assert dual_level_kl(s_l, g_l, g_l, s_l).item() == pytest.approx(0.0, abs=1e-6)  # same view average
    forward, backward = dual_level_kl(s_l, g_l, s_r, g_r), dual_level_kl(s_r, g_r, s_l, g_l)
    assert forward.item() > 0 and forward.item() == pytest.approx(backward.item(), rel=1e-6)
    p_l = (s_l.softmax(1) + g_l.softmax(1)) / 2
    p_r = (s_r.softmax(1) + g_r.softmax(1)) / 2
    expected = (p_l * (p_l.log() - p_r.log())).sum(1).mean() + (p_r * (p_r.log() - p_l.log())).sum(1).mean()
    assert forward.item() == pytest.approx(expected.item(), rel=1e-5)
