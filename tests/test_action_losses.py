"""ACTION / ACTION++ loss cores (action.md §4, §5, §11): values pinned by hand formulas, not by the code under test."""

import math

import pytest
import torch
import torch.nn.functional as F
from semizoo.losses.action import (
    ReCoLoss,
    SoftLabelKLLoss,
    WeightedPseudoLabelCE,
    queue_logits,
    reco_loss,
    soft_label_kl,
    weighted_pseudo_label_ce,
)
from semizoo.schedules import cosine_temperature

LN2, LN3, LN4 = math.log(2.0), math.log(3.0), math.log(4.0)


# --------------------------------------------------------------------------------------------- queue_logits


@pytest.mark.parametrize(
    "n, k, d",
    [(3, 36, 512), (1, 4, 2), (2 * 8 * 8, 36 * 8 * 8, 36)],
    ids=["latent_acdc_BxK", "single_anchor", "output_rows_BFxKF"],
)
def test_queue_logits_shape(n, k, d):
    assert queue_logits(torch.randn(n, d), torch.randn(k, d), 0.1).shape == (n, k)


def test_queue_logits_values_are_cosines_over_temperature():
    anchors = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    queue = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, -4.0]])
    # cosines by hand: (3,4)/5 against e0, e1, -(3,4)/5; (0,-1) against the same
    expected = torch.tensor([[0.6, 0.8, -1.0], [0.0, -1.0, 0.8]]) / 0.5
    torch.testing.assert_close(queue_logits(anchors, queue, 0.5), expected)


@pytest.mark.parametrize(
    "anchors, queue, match",
    [
        ((4, 8), (6, 7), r"\(4, 8\) and \(6, 7\)"),
        ((4, 8, 1), (6, 8), r"\(4, 8, 1\) and \(6, 8\)"),
    ],
    ids=["feature_size_mismatch", "anchors_not_2d"],
)
def test_queue_logits_rejects_bad_shapes(anchors, queue, match):
    with pytest.raises(ValueError, match=match):
        queue_logits(torch.zeros(anchors), torch.zeros(queue), 0.1)


def test_queue_logits_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        queue_logits(torch.ones(1, 2), torch.ones(1, 2), 0.0)


# --------------------------------------------------------------------------------------------- soft_label_kl


def _kl_rows_by_hand(p_teacher, p_student):
    """(1/R) Σ_r Σ_k p_t (log p_t - log p_s) from probability rows given as nested lists."""
    rows = [sum(pt * math.log(pt / ps) for pt, ps in zip(t, s)) for t, s in zip(p_teacher, p_student)]
    return sum(rows) / len(rows)


@pytest.mark.parametrize(
    "student, teacher, expected",
    [
        ([[0.3, -1.2, 2.0], [5.0, 5.0, 5.0]], [[0.3, -1.2, 2.0], [5.0, 5.0, 5.0]], 0.0),
        ([[1.0, 2.0], [0.0, 0.0]], [[11.0, 12.0], [-7.0, -7.0]], 0.0),  # softmax is shift invariant per row
        # softmax rows: student (1/4, 3/4), (1/2, 1/2); teacher (1/2, 1/2), (3/4, 1/4)
        (
            [[0.0, LN3], [0.0, 0.0]],
            [[0.0, 0.0], [LN3, 0.0]],
            _kl_rows_by_hand([[0.5, 0.5], [0.75, 0.25]], [[0.25, 0.75], [0.5, 0.5]]),
        ),
        # one row, three columns: student (1/6, 2/6, 3/6), teacher (1/3, 1/3, 1/3)
        ([[0.0, LN2, LN3]], [[1.0, 1.0, 1.0]], _kl_rows_by_hand([[1 / 3] * 3], [[1 / 6, 2 / 6, 3 / 6]])),
    ],
    ids=["equal_logits", "shifted_rows", "two_rows_hand", "three_columns_hand"],
)  # fmt: skip
def test_soft_label_kl_values(student, teacher, expected):
    got = soft_label_kl(torch.tensor(student), torch.tensor(teacher))
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert SoftLabelKLLoss()(torch.tensor(student), torch.tensor(teacher)).item() == pytest.approx(expected, abs=1e-6)


def test_soft_label_kl_is_not_symmetric():
    student, teacher = torch.tensor([[0.0, LN3]]), torch.tensor([[0.0, 0.0]])
    forward = _kl_rows_by_hand([[0.5, 0.5]], [[0.25, 0.75]])
    assert soft_label_kl(student, teacher).item() == pytest.approx(forward, abs=1e-6)
    assert soft_label_kl(teacher, student).item() != pytest.approx(forward, abs=1e-3)


@pytest.mark.parametrize("detach", [False, True], ids=["teacher_gets_grad", "caller_detaches"])
def test_soft_label_kl_gradient_reaches_teacher_unless_detached(detach):
    student = torch.randn(4, 6, requires_grad=True)
    teacher = torch.randn(4, 6, requires_grad=True)
    soft_label_kl(student, teacher.detach() if detach else teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    if detach:
        assert teacher.grad is None
    else:
        assert teacher.grad is not None and teacher.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "student, teacher",
    [((3, 4), (3, 5)), ((2, 3, 4), (2, 3, 4))],
    ids=["shape_mismatch", "not_2d"],
)
def test_soft_label_kl_rejects_bad_shapes(student, teacher):
    with pytest.raises(ValueError, match=re_shapes(student, teacher)):
        soft_label_kl(torch.zeros(student), torch.zeros(teacher))


def re_shapes(*shapes):
    """Regex that requires every shape, written as a tuple, in the message."""
    return ".*".join(r"\(" + ", ".join(str(s) for s in shape) + r"\)" for shape in shapes)


# --------------------------------------------------------------------------------------------- weighted CE


def _pixels(rows):
    """[(logits, pseudo, conf)] per pixel for each sample → logits (B, C, 1, P); pseudo, conf (B, 1, 1, P)."""
    logits = torch.tensor([[px[0] for px in sample] for sample in rows]).permute(0, 2, 1)[:, :, None]
    pseudo = torch.tensor([[px[1] for px in sample] for sample in rows])[:, None, None]
    conf = torch.tensor([[px[2] for px in sample] for sample in rows])[:, None, None]
    return logits, pseudo, conf


# Sample 0: CE ln2 (w 1/2), CE ln4 (label 1 with softmax 1/4), ignored; strong 1 of 2 valid → w_0 = 1/2.
# Sample 1: CE 0 (logit gap 60 underflows: not counted), CE ln(4/3), CE ln2; strong 2 of 3 valid → w_1 = 2/3.
HAND_ROWS = [
    [([0.0, 0.0], 0, 0.99), ([LN3, 0.0], 1, 0.5), ([4.0, -4.0], -1, 0.0)],
    [([0.0, 60.0], 1, 1.0), ([LN3, 0.0], 0, 0.98), ([0.0, 0.0], 1, 0.3)],
]
HAND_EXPECTED = (0.5 * (LN2 + LN4) + (2 / 3) * (math.log(4 / 3) + LN2)) / 4


@pytest.mark.parametrize(
    "rows, threshold, expected",
    [
        (HAND_ROWS, 0.97, HAND_EXPECTED),
        # δs = 0.5: sample 0 has 2 strong of 2 valid (w 1), sample 1 has 2 of 3 (w 2/3)
        (HAND_ROWS, 0.5, ((LN2 + LN4) + (2 / 3) * (math.log(4 / 3) + LN2)) / 4),
        ([[([0.0, 0.0], -1, 1.0), ([1.0, 2.0], -1, 1.0)]], 0.97, 0.0),
        ([[([30.0, -30.0], 0, 1.0), ([-30.0, 30.0], 1, 1.0)]], 0.97, 0.0),
        # no strong pixel: w = 0, yet the positive-CE pixels stay in the denominator (official masked mean)
        ([[([0.0, 0.0], 0, 0.1), ([0.0, 0.0], 1, 0.2)]], 0.97, 0.0),
    ],
    ids=[
        "hand_example_with_ignored",
        "lower_threshold",
        "all_ignored_zero_not_nan",
        "zero_ce_zero_not_nan",
        "no_strong",
    ],
)  # fmt: skip
def test_weighted_pseudo_label_ce_values(rows, threshold, expected):
    logits, pseudo, conf = _pixels(rows)
    logits.requires_grad_(True)
    got = weighted_pseudo_label_ce(logits, pseudo, conf, threshold)
    assert not torch.isnan(got)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    got.backward()  # the zero results still backpropagate
    assert logits.grad is not None


def test_weighted_pseudo_label_ce_channel_free_inputs_and_module_agree():
    logits, pseudo, conf = _pixels(HAND_ROWS)
    with_channel = weighted_pseudo_label_ce(logits, pseudo, conf)
    without_channel = weighted_pseudo_label_ce(logits, pseudo[:, 0], conf[:, 0])
    module = WeightedPseudoLabelCE(strong_threshold=0.97)(logits, pseudo[:, 0], conf)
    assert with_channel.item() == pytest.approx(HAND_EXPECTED, abs=1e-6)
    assert without_channel.item() == pytest.approx(HAND_EXPECTED, abs=1e-6)
    assert module.item() == pytest.approx(HAND_EXPECTED, abs=1e-6)


def test_weighted_pseudo_label_ce_3d_matches_naive_loop():
    logits = torch.randn(2, 3, 4, 4, 3)
    pseudo = torch.randint(-1, 3, (2, 4, 4, 3))
    conf = torch.rand(2, 4, 4, 3) * 0.1 + 0.9
    total, count = 0.0, 0
    for b in range(2):
        strong = sum(float(c) >= 0.97 for c in conf[b].flatten())
        valid = sum(int(p) >= 0 for p in pseudo[b].flatten())
        for idx in torch.nonzero(torch.ones(4, 4, 3)).tolist():
            label = int(pseudo[(b, *idx)])
            if label < 0:
                continue
            row = logits[(b, slice(None), *idx)]
            ce = float(torch.logsumexp(row, 0) - row[label])
            if ce > 0:
                total, count = total + strong / valid * ce, count + 1
    got = weighted_pseudo_label_ce(logits, pseudo, conf)
    assert got.item() == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize(
    "pseudo, conf, match",
    [
        ((2, 5, 4), (2, 4, 4), r"pseudo.*\(2, 3, 4, 4\).*\(2, 5, 4\)"),
        ((2, 4, 4), (2, 2, 4, 4), r"conf.*\(2, 3, 4, 4\).*\(2, 2, 4, 4\)"),
        ((1, 4, 4), (1, 4, 4), r"pseudo.*\(2, 3, 4, 4\).*\(1, 4, 4\)"),
    ],
    ids=["pseudo_spatial", "conf_channels", "batch"],
)
def test_weighted_pseudo_label_ce_rejects_bad_shapes(pseudo, conf, match):
    with pytest.raises(ValueError, match=match):
        weighted_pseudo_label_ce(torch.zeros(2, 3, 4, 4), torch.zeros(pseudo, dtype=torch.long), torch.zeros(conf))


# --------------------------------------------------------------------------------------------- reco_loss


def _scene(pixels, num_classes, layout):
    """Build reco_loss inputs from pixels ``(feature, class, hard, valid)``.

    ``layout`` is ``(B, *spatial)`` with ``B·Π spatial`` = number of pixels; ``hard`` sets the own-class probability
    to 0.5 (below δs = 0.97) or 0.99; ``valid`` is the mask value.
    """
    feats = torch.tensor([px[0] for px in pixels], dtype=torch.float32)  # (P, D)
    labels = torch.tensor([px[1] for px in pixels])
    own = torch.tensor([0.5 if px[2] else 0.99 for px in pixels])
    onehot = F.one_hot(labels, num_classes).float()
    prob = onehot * own[:, None] + (1 - onehot) * ((1 - own) / (num_classes - 1))[:, None]
    mask = torch.tensor([float(px[3]) for px in pixels])[:, None]

    def to_layout(x):  # (P, X) → (B, X, *spatial)
        return x.reshape(*layout, x.shape[1]).movedim(-1, 1).contiguous()

    return to_layout(feats), to_layout(onehot), to_layout(mask), to_layout(prob)


def _e(i, scale=1.0, dim=4):
    v = [0.0] * dim
    v[i] = scale
    return v


def _contrast(positive_cos, negative_cos, n, tau):
    """CE of one anchor with one positive key and n negatives at the given cosines: log(1 + n·e^{(c⁻ - c⁺)/τ})."""
    return math.log(1.0 + n * math.exp((negative_cos - positive_cos) / tau))


# three classes on orthogonal axes, features of varying length: anchors point along μ_c, negatives ⟂ them
ORTHOGONAL = [(_e(c, s), c, True, 1) for c in range(3) for s in (1.0, 2.0, 3.0, 0.5)]
ONE_EASY = [(f, c, c != 2, m) for f, c, _, m in ORTHOGONAL]
# class 2 is masked out, and its features lie on class 0's axis: counted, they would change both terms
MASKED = [(f, c, h, m) for f, c, h, m in ORTHOGONAL if c < 2] + [(_e(0, 1.0), 2, True, 0)] * 4
# class 0 = {10·e0 (hard), e1 (easy)}: μ_0 = (5, 0.5, 0, 0), raw mean; class 1 = e2 (hard)
RAW_MEAN = [(_e(0, 10.0), 0, True, 1), (_e(1, 1.0), 0, False, 1), (_e(2, 1.0), 1, True, 1), (_e(2, 2.0), 1, True, 1)]
COS_RAW = 5.0 / math.sqrt(25.25)
# two classes at 45°: every negative has cosine 1/√2 with every anchor
OBLIQUE = [([1.0, 0.0], 0, True, 1), ([2.0, 0.0], 0, True, 1), ([1.0, 1.0], 1, True, 1), ([3.0, 3.0], 1, True, 1)]


@pytest.mark.parametrize(
    "pixels, num_classes, layout, tau, n, expected",
    [
        (ORTHOGONAL, 3, (1, 12, 1), 0.5, 16, _contrast(1, 0, 16, 0.5)),
        (ORTHOGONAL, 3, (2, 3, 2, 1), 0.2, 5, _contrast(1, 0, 5, 0.2)),
        (ORTHOGONAL, 4, (3, 2, 2), 0.5, 7, _contrast(1, 0, 7, 0.5)),  # class 3 absent: not in 𝒞
        (ONE_EASY, 3, (1, 12, 1), 0.5, 16, 2 / 3 * _contrast(1, 0, 16, 0.5)),
        (MASKED, 3, (1, 12, 1), 0.5, 16, _contrast(1, 0, 16, 0.5)),
        (RAW_MEAN, 2, (1, 4, 1), 0.5, 9, (_contrast(COS_RAW, 0, 9, 0.5) + _contrast(1, 0, 9, 0.5)) / 2),
        (OBLIQUE, 2, (2, 2), 0.2, 11, _contrast(1, 1 / math.sqrt(2), 11, 0.2)),
    ],
    ids=[
        "orthogonal_2d",
        "orthogonal_3d",
        "absent_class_not_counted",
        "easy_class_counted_in_denominator",
        "masked_class_not_present",
        "raw_mean_prototype_hard_anchors_only",
        "oblique_two_classes",
    ],
)
def test_reco_loss_closed_form(pixels, num_classes, layout, tau, n, expected):
    rep, onehot, mask, prob = _scene(pixels, num_classes, layout)
    generator = torch.Generator().manual_seed(3)
    got = reco_loss(rep, onehot, mask, prob, 0.97, tau, 8, n, generator=generator)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)  # float32 CE near 0 at small τ


@pytest.mark.parametrize(
    "pixels",
    [
        [(_e(0, 1.0), 1, True, 1)] * 4,
        [(_e(0, 1.0), 0, True, 1)] * 2 + [(_e(1, 1.0), 1, True, 0)] * 2,
        [(_e(0, 1.0), 0, True, 0), (_e(1, 1.0), 1, True, 0)] * 2,
        [(_e(0, 1.0), 0, False, 1), (_e(1, 1.0), 1, False, 1)] * 2,
    ],
    ids=["single_class", "second_class_masked", "empty_mask", "no_hard_pixels"],
)
def test_reco_loss_zero_cases(pixels):
    rep, onehot, mask, prob = _scene(pixels, 3, (1, 4, 1))
    rep.requires_grad_(True)
    got = reco_loss(rep, onehot, mask, prob, 0.97, 0.5, 8, 16)
    assert got.item() == 0.0
    got.backward()  # the zero stays on rep's graph
    assert rep.grad is not None and rep.grad.abs().sum() == 0


def test_reco_loss_gradient_only_through_anchors():
    torch.manual_seed(1)
    rep = torch.randn(2, 8, 6, 6, requires_grad=True)
    labels = torch.randint(0, 3, (2, 6, 6))
    onehot = F.one_hot(labels, 3).movedim(-1, 1).float()
    prob = torch.full((2, 3, 6, 6), 0.99) * onehot
    hard = torch.zeros(2, 6, 6, dtype=torch.bool)
    hard[0, 0, :3] = hard[1, 5, 3:] = True  # the only possible anchors
    prob = torch.where(hard[:, None] & onehot.bool(), torch.full_like(prob, 0.4), prob)
    mask = torch.ones(2, 1, 6, 6)
    loss = reco_loss(rep, onehot, mask, prob, 0.97, 0.5, 16, 32, generator=torch.Generator().manual_seed(0))
    loss.backward()
    grad_norm = rep.grad.norm(dim=1)  # (B, H, W)
    # μ_c and the negatives come from every valid pixel: any gradient through them would show up here
    assert grad_norm[~hard].abs().max() == 0
    assert (grad_norm[hard] > 0).sum() >= 3


def test_reco_loss_reproducible_with_generator():
    rep = torch.randn(2, 8, 6, 6)
    onehot = F.one_hot(torch.randint(0, 4, (2, 6, 6)), 4).movedim(-1, 1).float()
    prob = torch.softmax(torch.randn(2, 4, 6, 6), dim=1)
    mask = (torch.rand(2, 1, 6, 6) > 0.2).float()

    def run(seed):
        return reco_loss(rep, onehot, mask, prob, 0.97, 0.5, 8, 16, generator=torch.Generator().manual_seed(seed))

    global_state = torch.get_rng_state()
    first, second, other = run(7), run(7), run(8)
    assert torch.equal(torch.get_rng_state(), global_state)  # all draws from the given generator
    assert first.item() == second.item()
    assert first.item() != other.item()
    module = ReCoLoss(0.97, 0.5, 8, 16)(rep, onehot, mask, prob, generator=torch.Generator().manual_seed(7))
    assert module.item() == first.item()


def test_reco_loss_negative_classes_follow_prototype_similarity():
    # class 0 (hard) at e0; class 1 (easy) at 45°, class 2 (easy) orthogonal. π = softmax((1/√2, 0)/τ) over (1, 2);
    # with many negatives the counts approach N·π, so L = L_0/3 ≈ (log(e^{1/τ} + N Σ_j π_j e^{c_j/τ}) - 1/τ)/3.
    tau, n = 0.5, 20000
    c1 = 1 / math.sqrt(2)
    pixels = [([1.0, 0.0, 0.0], 0, True, 1)] * 2 + [([1.0, 1.0, 0.0], 1, False, 1)] * 2
    pixels += [([0.0, 0.0, 1.0], 2, False, 1)] * 2
    rep, onehot, mask, prob = _scene(pixels, 3, (1, 6, 1))
    pi1 = math.exp(c1 / tau) / (math.exp(c1 / tau) + 1.0)
    expected = (math.log(math.exp(1 / tau) + n * (pi1 * math.exp(c1 / tau) + (1 - pi1))) - 1 / tau) / 3
    uniform = (math.log(math.exp(1 / tau) + n * (0.5 * math.exp(c1 / tau) + 0.5)) - 1 / tau) / 3
    assert abs(expected - uniform) > 0.05  # the check below tells the two apart
    got = reco_loss(rep, onehot, mask, prob, 0.97, tau, 4, n, generator=torch.Generator().manual_seed(0))
    assert got.item() == pytest.approx(expected, abs=3e-3)


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((2, 8, 6, 6), (2, 3, 6, 5), (2, 1, 6, 6), (2, 3, 6, 5)), r"label_onehot.*\(2, 8, 6, 6\).*\(2, 3, 6, 5\)"),
        (((2, 8, 6, 6), (2, 3, 6, 6), (2, 1, 6, 6), (2, 4, 6, 6)), r"prob.*\(2, 3, 6, 6\).*\(2, 4, 6, 6\)"),
        (((2, 8, 6, 6), (2, 3, 6, 6), (2, 6, 6), (2, 3, 6, 6)), r"mask.*\(2, 8, 6, 6\).*\(2, 6, 6\)"),
        (((2, 8, 6, 6), (1, 3, 6, 6), (2, 1, 6, 6), (1, 3, 6, 6)), r"label_onehot.*\(2, 8, 6, 6\).*\(1, 3, 6, 6\)"),
    ],
    ids=["spatial_mismatch", "prob_classes", "mask_without_channel", "batch_mismatch"],
)  # fmt: skip
def test_reco_loss_rejects_bad_shapes(shapes, match):
    rep, onehot, mask, prob = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        reco_loss(rep, onehot, mask, prob, 0.97, 0.5, 8, 16)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"temperature": 0.0}, "temperature"), ({"num_queries": 0}, "num_queries"), ({"num_negatives": -1}, "num_")],
    ids=["zero_temperature", "no_queries", "negative_negatives"],
)
def test_reco_loss_module_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReCoLoss(**kwargs)


# --------------------------------------------------------------------------------------------- cosine_temperature


@pytest.mark.parametrize(
    "e, E, t_low, t_high, period_frac, expected",
    [
        (0, 31, 0.1, 1.0, 0.1, 1.0),
        (1.55, 31, 0.1, 1.0, 0.1, 0.1),  # half of the 3.1-epoch period
        (0.775, 31, 0.1, 1.0, 0.1, 0.55),  # quarter period: midpoint
        (50, 100, 0.07, 1.0, 1.0, 0.07),
        (0, 100, 0.6, 2.0, 1.0, 2.0),
        (25, 100, 0.6, 2.0, 1.0, 1.3),
    ],
    ids=["start_t_high", "half_period_t_low", "quarter_period_mid", "full_period_half", "custom_high", "custom_mid"],
)
def test_cosine_temperature_values(e, E, t_low, t_high, period_frac, expected):
    assert cosine_temperature(e, E, t_low, t_high, period_frac) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("e", [0, 1, 2, 7, 13], ids=lambda e: f"epoch_{e}")
def test_cosine_temperature_is_periodic(e):
    E, period_frac = 40, 0.1  # period 4 epochs
    assert cosine_temperature(e + 4, E, 0.1, 1.0, period_frac) == pytest.approx(
        cosine_temperature(e, E, 0.1, 1.0, period_frac), abs=1e-12
    )


def test_cosine_temperature_defaults_and_errors():
    assert cosine_temperature(5, 10, 0.2) == pytest.approx(0.2, abs=1e-12)  # t_high 1.0, one period over E
    with pytest.raises(ValueError, match="period_frac"):
        cosine_temperature(0, 10, 0.1, 1.0, 0.0)
    with pytest.raises(ValueError, match="E="):
        cosine_temperature(0, 0, 0.1)
