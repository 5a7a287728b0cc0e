"""ACTION heads, logit windows and the row/queue layouts (action.md §2, §4, §11)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from semizoo.networks import SSL4MISUNet
from semizoo.networks.action import (
    ActionDistillHeads,
    RepresentationHead,
    logit_windows,
    num_windows,
    pyramid_features,
    queue_rows,
    window_queue_entries,
    window_rows,
    window_starts,
)
from torch import nn

# ---------------------------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------------------------

STARTS = [
    # n, size, step, end, expected starts
    (256, 64, 32, "exclusive", [0, 32, 64, 96, 128, 160]),  # ACDC: last start 192 excluded
    (256, 64, 32, "inclusive", [0, 32, 64, 96, 128, 160, 192]),
    (112, 20, 10, "inclusive", [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]),  # LA x / y
    (80, 20, 10, "inclusive", [0, 10, 20, 30, 40, 50, 60]),  # LA z
    (32, 16, 8, "exclusive", [0, 8]),  # ACDC smoke
    (16, 8, 4, "inclusive", [0, 4, 8]),  # LA smoke z
]


@pytest.mark.parametrize(
    "n,size,step,end,expected", STARTS, ids=["acdc", "acdc_incl", "la_xy", "la_z", "smoke2d", "smoke3d_z"]
)
def test_window_starts(n, size, step, end, expected):
    assert window_starts(n, size, step, end) == expected


@pytest.mark.parametrize(
    "shape,size,step,end,windows",
    [
        ((2, 4, 256, 256), 64, 32, "exclusive", 36),
        ((1, 2, 112, 112, 80), 20, 10, "inclusive", 700),
        ((2, 4, 32, 32), 16, 8, "exclusive", 4),
        ((1, 2, 32, 32, 16), 8, 4, "inclusive", 147),
    ],
    ids=["acdc_P36", "la_P700", "smoke_acdc_P4", "smoke_la_P147"],
)
def test_window_count_and_shape_at_real_sizes(shape, size, step, end, windows):
    logits = torch.empty(shape, device="meta")  # shapes only
    assert num_windows(shape[2:], size, step, end) == windows
    out = logit_windows(logits, size, step, end)
    assert tuple(out.shape) == (windows * shape[0], shape[1]) + (size,) * (len(shape) - 2)


def test_windows_are_raster_ordered_and_window_major():
    logits = torch.randn(2, 3, 12, 10)
    out = logit_windows(logits, 4, 3, "inclusive")
    starts = [(i, j) for i in range(0, 9, 3) for j in range(0, 7, 3)]  # hand-written raster order
    assert out.shape == (len(starts) * 2, 3, 4, 4)
    for w, (i, j) in enumerate(starts):
        for b in range(2):
            assert torch.equal(out[w * 2 + b], logits[b, :, i : i + 4, j : j + 4])


def test_windows_3d_raster_order():
    logits = torch.randn(1, 2, 6, 6, 6)
    out = logit_windows(logits, 4, 2, "inclusive")
    starts = [(i, j, k) for i in (0, 2) for j in (0, 2) for k in (0, 2)]
    for w, (i, j, k) in enumerate(starts):
        assert torch.equal(out[w], logits[0, :, i : i + 4, j : j + 4, k : k + 4])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n=16, size=32, step=8, end="exclusive"), "exceeds"),
        (dict(n=16, size=8, step=0, end="exclusive"), "positive"),
        (dict(n=16, size=8, step=4, end="both"), "end must be one of"),
    ],
    ids=["too_big", "zero_step", "bad_end"],
)
def test_window_starts_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        window_starts(**kwargs)


def test_exclusive_window_of_full_size_is_rejected():
    with pytest.raises(ValueError, match="no exclusive window"):
        logit_windows(torch.zeros(1, 1, 8, 8), 8, 4, "exclusive")


# ---------------------------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------------------------

P, B, C, POOL = 4, 3, 2, 2
FEAT = C * POOL * POOL


def _window_outputs() -> torch.Tensor:
    """A (P·B, C, pool, pool) with distinct values: A[w·B + b] is window w of sample b."""
    return torch.arange(P * B * FEAT, dtype=torch.float32).reshape(P * B, C, POOL, POOL) + 0.5


def test_official_rows_follow_the_flat_w_b_f_order():
    a = _window_outputs()
    rows = window_rows(a, P, "official")
    assert rows.shape == (B * FEAT, P)
    flat = [a[w * B + b].flatten()[f].item() for w in range(P) for b in range(B) for f in range(FEAT)]
    for t, value in enumerate(flat):
        assert rows[t // P, t % P].item() == value


def test_aligned_row_holds_the_cell_window_values():
    a = _window_outputs()
    rows = window_rows(a, P, "aligned")
    assert rows.shape == (B * FEAT, P)
    for b, f in itertools.product(range(B), range(FEAT)):
        expected = [a[w * B + b].flatten()[f].item() for w in range(P)]
        assert rows[b * FEAT + f].tolist() == expected


@pytest.mark.parametrize("layout", ["official", "aligned"], ids=["official", "aligned"])
def test_queue_entries_and_queue_rows(layout):
    a = _window_outputs()
    entries = window_queue_entries(a, P, layout)
    assert entries.shape == (B, P, FEAT)
    for b, w, f in itertools.product(range(B), range(P), range(FEAT)):
        if layout == "official":  # raw reshape of the (w, b, f) order
            t = (b * P + w) * FEAT + f
            expected = a[(t // FEAT)].flatten()[t % FEAT].item()
        else:
            expected = a[w * B + b].flatten()[f].item()
        assert entries[b, w, f].item() == expected
    queue = torch.randn(5, P, FEAT)
    rows = queue_rows(queue, layout)
    assert rows.shape == (5 * FEAT, P)
    for k, p, f in itertools.product(range(5), range(P), range(FEAT)):
        if layout == "official":  # (P, K, F) flat order, read as rows of P
            t = (p * 5 + k) * FEAT + f
            assert rows[t // P, t % P].item() == queue[k, p, f].item()
        else:
            assert rows[k * FEAT + f, p].item() == queue[k, p, f].item()


def test_aligned_queue_rows_match_student_rows_of_the_same_outputs():
    a = _window_outputs()
    queue = window_queue_entries(a, P, "aligned")  # K = B entries
    assert torch.equal(queue_rows(queue, "aligned"), window_rows(a, P, "aligned"))
    # the official layout does not line up (action.md §7.7)
    assert not torch.equal(
        queue_rows(window_queue_entries(a, P, "official"), "official"), window_rows(a, P, "official")
    )


def test_logit_shapes_with_queues():
    k, d = 6, 16
    a = _window_outputs()
    rows = F.normalize(window_rows(a, P, "aligned"), dim=1)
    q_rows = F.normalize(queue_rows(torch.randn(k, P, FEAT), "aligned"), dim=1)
    assert (rows @ q_rows.T).shape == (B * FEAT, k * FEAT)
    heads = ActionDistillHeads(2, C, 8, d, POOL)
    z = heads(latent=torch.randn(B, 8, 2, 2))["latent"]
    assert (F.normalize(z, dim=1) @ F.normalize(torch.randn(k, d), dim=1).T).shape == (B, k)


def test_layout_errors():
    with pytest.raises(ValueError, match="patch_layout must be one of"):
        window_rows(_window_outputs(), P, "raw")
    with pytest.raises(ValueError, match="whole number"):
        window_rows(_window_outputs(), 5, "official")
    with pytest.raises(ValueError, match=r"\(K, P, F\)"):
        queue_rows(torch.zeros(2, 3), "aligned")


# ---------------------------------------------------------------------------------------------------------------
# heads
# ---------------------------------------------------------------------------------------------------------------

HEADS = [
    # spatial_dims, n_classes, latent_channels, latent_dim, pool, latent shape, window shape
    (2, 4, 32, 16, 2, (2, 32, 3, 3), (8, 4, 8, 8)),
    (3, 2, 16, 8, 2, (1, 16, 2, 2, 2), (6, 2, 4, 4, 4)),
]


def _param_count(dims, c, cin, d, pool):
    latent = (cin * cin + cin) + (cin * d + d)
    out = (c * 2 * c + 2 * c) + (2 * c * c + c)
    return 2 * latent + 2 * (d * d + d) + 2 * out + 2 * (c * c + c)


@pytest.mark.parametrize("dims,c,cin,d,pool,latent_shape,window_shape", HEADS, ids=["2d", "3d"])
def test_heads_shapes_structure_and_dispatch(dims, c, cin, d, pool, latent_shape, window_shape):
    heads = ActionDistillHeads(dims, c, cin, d, pool)
    allowed = (nn.Sequential, nn.Linear, nn.Flatten, nn.Conv2d, nn.Conv3d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
    assert all(isinstance(m, allowed) for name, m in heads.named_modules() if name)  # no norms, no activations
    assert sum(p.numel() for p in heads.parameters()) == _param_count(dims, c, cin, d, pool)
    assert heads.features == c * pool**dims
    latent, windows = torch.randn(latent_shape), torch.randn(window_shape)
    student = heads(latent=latent, windows=windows, branch="student")
    teacher = heads(latent=latent, windows=windows, branch="teacher")
    assert student["latent"].shape == teacher["latent"].shape == (latent_shape[0], d)
    assert student["windows"].shape == teacher["windows"].shape == (window_shape[0], c) + (pool,) * dims
    # the teacher branch is k_latent / k_out alone; the student adds the predictors
    assert torch.allclose(teacher["latent"], heads.k_latent(latent))
    assert torch.allclose(student["latent"], heads.latent_predictor(heads.q_latent(latent)))
    assert torch.allclose(teacher["windows"], heads.k_out(windows))
    assert torch.allclose(student["windows"], heads.out_predictor(heads.q_out(windows)))
    assert heads(latent=latent).keys() == {"latent"}
    # the latent projection pools globally: the mean over space is all it sees
    pooled = latent.mean(dim=tuple(range(2, latent.dim())), keepdim=True).expand_as(latent)
    assert torch.allclose(heads.teacher_latent(pooled), teacher["latent"], atol=1e-5)


@pytest.mark.parametrize(
    "branch,trained,untouched",
    [
        ("student", {"q_latent", "latent_predictor", "q_out", "out_predictor"}, {"k_latent", "k_out"}),
        ("teacher", {"k_latent", "k_out"}, {"q_latent", "latent_predictor", "q_out", "out_predictor"}),
    ],
    ids=["student", "teacher"],
)
def test_gradients_reach_the_branch_heads_only(branch, trained, untouched):
    heads = ActionDistillHeads(2, 4, 32, 16, 2)
    out = heads(latent=torch.randn(2, 32, 3, 3), windows=torch.randn(8, 4, 8, 8), branch=branch)
    (out["latent"].square().sum() + out["windows"].square().sum()).backward()
    for name in trained:
        grads = [p.grad for p in getattr(heads, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    for name in untouched:
        assert all(p.grad is None for p in getattr(heads, name).parameters()), name


def test_query_key_pairs_match_shapes():
    heads = ActionDistillHeads(3, 2, 16, 8, 2)
    for q, k in heads.query_key_pairs():
        assert [p.shape for p in q.parameters()] == [p.shape for p in k.parameters()]


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda h: h(latent=torch.randn(2, 32, 3, 3), branch="ema"), "branch must be one of"),
        (lambda h: h(latent=torch.randn(2, 16, 3, 3)), r"latent must be \(B, 32"),
        (lambda h: h(windows=torch.randn(8, 3, 8, 8)), r"windows must be \(N, 4"),
        (lambda h: ActionDistillHeads(1, 4, 32, 16, 2), "spatial_dims"),
    ],
    ids=["branch", "latent_channels", "window_channels", "dims"],
)
def test_heads_errors(call, match):
    heads = ActionDistillHeads(2, 4, 32, 16, 2)
    with pytest.raises(ValueError, match=match):
        call(heads)


# ---------------------------------------------------------------------------------------------------------------
# representation head
# ---------------------------------------------------------------------------------------------------------------


def test_representation_head_on_a_unet_pyramid():
    net = SSL4MISUNet(1, 4).eval()
    with torch.no_grad():
        pyramid = net(torch.randn(2, 1, 32, 32), features=True)["pyramid"]
    feats = pyramid_features(pyramid, (32, 32))
    assert feats.shape == (2, 496, 32, 32)
    assert torch.equal(feats[:, 480:], pyramid[4])  # u4 is already at input size: copied
    # align_corners=True keeps the corner values of the 2×2 bottleneck
    x4 = pyramid[0]
    assert torch.allclose(feats[:, :256, 0, 0], x4[:, :, 0, 0]) and torch.allclose(
        feats[:, :256, -1, -1], x4[:, :, -1, -1]
    )
    head = RepresentationHead(496, 24, spatial_dims=2)
    assert head.proj[0].bias is None and head.proj[0].kernel_size == (3, 3) and head.proj[0].padding == (1, 1)
    assert head.proj[1].kernel_size == (1, 1) and head.proj[1].bias is not None
    out = head(feats)
    assert out.shape == (2, 24, 32, 32)
    assert torch.allclose(head(pyramid), out)  # the list is concatenated at the finest size


def test_representation_head_3d_and_trilinear_resize():
    pyramid = [torch.randn(1, 8, 2, 2, 2), torch.randn(1, 4, 4, 4, 4), torch.randn(1, 2, 8, 8, 8)]
    feats = pyramid_features(pyramid)
    assert feats.shape == (1, 14, 8, 8, 8)
    # a trilinear align_corners resize of a 2-point axis is linear between the two end values
    mid = pyramid[0][0, 0, 0, 0, 0] + (pyramid[0][0, 0, 0, 0, 1] - pyramid[0][0, 0, 0, 0, 0]) * 3 / 7
    assert torch.allclose(feats[0, 0, 0, 0, 3], mid, atol=1e-6)
    head = RepresentationHead(14, 5, spatial_dims=3)
    assert isinstance(head.proj[0], nn.Conv3d)
    assert head(feats).shape == (1, 5, 8, 8, 8)
    with pytest.raises(ValueError, match=r"expects \(B, 14"):
        head(torch.randn(1, 13, 8, 8, 8))
    with pytest.raises(ValueError, match="all 2D or all 3D"):
        pyramid_features([torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4, 4)])
