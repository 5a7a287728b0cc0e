"""EPL method plugin (epl.md §4, §8 items 5 and 10) and the ``NetworkPair`` it trains.

Expected values are the spec's formulas written out here on networks without dropout (so repeated calls agree),
the call order is recorded by a spy on the pair, and one trainer step runs the real DeepLabv3+ pair.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from semizoo.engines import SemiSupervisedTrainer
from semizoo.losses import confidence_aware_cps_loss, dual_level_kl
from semizoo.methods import EPL, create
from semizoo.methods.epl import dice_sum_loss
from semizoo.networks import DeepLabV3Plus, NetworkPair
from semizoo.transforms import cutmix_box_mask


def conv_bn(classes: int = 4) -> torch.nn.Module:
    """A small segmenter with batch norm and no dropout (deterministic in train mode)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(), torch.nn.Conv2d(6, classes, 1)
    )


def pair(classes: int = 4, seed: int = 0) -> NetworkPair:
    torch.manual_seed(seed)
    return NetworkPair(conv_bn(classes), conv_bn(classes))


def batches(b: int = 2, size: int = 16, unlabeled: int = 4, classes: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    labeled = {
        "image": torch.randn(b, 1, size, size, generator=g),
        "label": torch.randint(0, classes, (b, 1, size, size), generator=g),
    }
    u = {
        "image": torch.randn(unlabeled, 1, size, size, generator=g),
        "image_fourier": torch.randn(unlabeled, 1, size, size, generator=g),
    }
    return labeled, u


class Spy(torch.nn.Module):
    """Wraps a pair and records (branch, input, grad enabled, training) of every call."""

    def __init__(self, inner: NetworkPair) -> None:
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, branch=None):
        self.calls.append((branch, x.detach().clone(), torch.is_grad_enabled(), self.inner.training))
        return self.inner(x, branch=branch)


def test_dice_sum_is_the_official_formula():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(3, 4, 8, 8, generator=g), torch.randint(0, 4, (3, 1, 8, 8), generator=g)
    p, t = logits.softmax(1), F.one_hot(labels[:, 0], 4).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    expected = (1 - (2 * (p * t).sum(dims) + 0.1) / (p.sum(dims) + t.sum(dims) + 0.1)).sum()
    assert torch.allclose(dice_sum_loss()(logits, labels), expected, atol=1e-6)
    assert torch.allclose(
        dice_sum_loss(include_background=False)(logits, labels),
        expected - (1 - (2 * (p * t).sum(dims)[0] + 0.1) / (p.sum(dims)[0] + t.sum(dims)[0] + 0.1)),
        atol=1e-6,
    )


def test_pair_forward_is_the_probability_average_and_rejects_shared_weights():
    net = pair()
    x = torch.randn(2, 1, 8, 8)
    net.eval()
    average = (net.left(x).softmax(1) + net.right(x).softmax(1)) / 2
    assert torch.allclose(net(x).exp(), average, atol=1e-6)
    assert torch.equal(net(x, branch="left"), net.left(x))
    with pytest.raises(ValueError, match="branch"):
        net(x, branch="middle")
    single = conv_bn()
    with pytest.raises(ValueError, match="share parameters"):
        NetworkPair(single, single)
    scripted = torch.jit.script(net)
    assert torch.allclose(scripted(x), net(x), atol=1e-6)


def test_step_equals_the_spec_formula_and_the_call_order():
    net = pair()
    spy = Spy(net)
    method = EPL(spy, beta=3.0, dual_level=True, gamma=0.5)
    assert create("epl", network=spy).beta == 3.0
    labeled, unlabeled = batches()
    method.train()
    torch.manual_seed(5)
    terms = method.train_step(labeled, unlabeled)

    u, f = unlabeled["image"], unlabeled["image_fourier"]
    u0, u1, f0, f1 = u[:2], u[2:], f[:2], f[2:]
    torch.manual_seed(5)
    mask = cutmix_box_mask(2, (16, 16))
    um, fm = u0 * (1 - mask) + u1 * mask, f0 * (1 - mask) + f1 * mask
    order = [(b, t) for b in ("left", "right") for t in (u0, u1, f0, f1)]
    order += [("left", um), ("left", fm), ("right", um), ("right", fm), ("left", labeled["image"])]
    order += [("right", labeled["image"])]
    assert len(spy.calls) == len(order)
    for (branch, x, grad, training), (want_branch, want_x) in zip(spy.calls, order):
        assert branch == want_branch and torch.allclose(x, want_x) and training
    assert [c[2] for c in spy.calls] == [False] * 8 + [True] * 6

    with torch.no_grad():  # the same networks in train mode: batch statistics, no dropout, so outputs repeat
        pseudo = []
        for k in (net.left, net.right):
            e0, e1 = (k(u0) + k(f0)) / 2, (k(u1) + k(f1)) / 2
            pseudo.append((e0 * (1 - mask) + e1 * mask).argmax(1))
        s_l, g_l, s_r, g_r = net.left(um), net.left(fm), net.right(um), net.right(fm)
        v_l = (g_l.softmax(1) * (g_l.log_softmax(1) - s_l.log_softmax(1))).sum(1)
        v_r = (g_r.softmax(1) * (g_r.log_softmax(1) - s_r.log_softmax(1))).sum(1)
        cps = torch.exp(-v_r).mean() * F.cross_entropy(s_l, pseudo[1]) + torch.exp(-v_l).mean() * F.cross_entropy(
            s_r, pseudo[0]
        )
        cps = cps + v_l.mean() + v_r.mean() + 0.5 * dual_level_kl(s_l, g_l, s_r, g_r)
        sup = dice_sum_loss()(net.left(labeled["image"]), labeled["label"])
        sup = sup + dice_sum_loss()(net.right(labeled["image"]), labeled["label"])
    assert torch.allclose(terms["loss_cps"], cps, atol=1e-5)
    assert torch.allclose(terms["loss_sup"], sup, atol=1e-5)
    assert torch.allclose(terms["loss"], sup + 3.0 * cps, atol=1e-5)
    assert math.isfinite(terms["loss"].item())


def test_without_cutmix_the_whole_unlabeled_batch_is_u0_and_no_second_stream_is_read():
    net = pair()
    spy = Spy(net)
    method = EPL(spy, cutmix=False)
    labeled, unlabeled = batches(unlabeled=3)  # odd: only one stream is loaded
    method.train()
    terms = method.train_step(labeled, unlabeled)
    u, f = unlabeled["image"], unlabeled["image_fourier"]
    seen = [c[1] for c in spy.calls]
    assert len(seen) == 4 + 4 + 2  # (u0, f0) per network without grad, (u0, f0) per network with grad, labeled x2
    assert all(torch.allclose(x, want) for x, want in zip(seen[:8], [u, f] * 4))
    with torch.no_grad():
        y_l = ((net.left(u) + net.left(f)) / 2).argmax(1)
        y_r = ((net.right(u) + net.right(f)) / 2).argmax(1)
        cps = confidence_aware_cps_loss(net.left(u), net.left(f), net.right(u), net.right(f), y_l, y_r)
    assert torch.allclose(terms["loss_cps"], cps, atol=1e-5)
    with pytest.raises(ValueError, match="even"):
        EPL(spy).train_step(labeled, unlabeled)


def test_empty_unlabeled_set_gives_the_supervised_step():
    net = pair()
    method = EPL(net)
    labeled, _ = batches()
    method.train()
    terms = method.train_step(labeled, None)
    sup = dice_sum_loss()(net.left(labeled["image"]), labeled["label"])
    sup = sup + dice_sum_loss()(net.right(labeled["image"]), labeled["label"])
    assert torch.allclose(terms["loss"], sup, atol=1e-5) and terms["loss_cps"].item() == 0.0


def test_variants_change_the_loss():
    labeled, unlabeled = batches()
    values = {}
    for name, kwargs in {
        "code": {},
        "per_pixel": {"per_pixel": True},
        "ensemble": {"ce_on": "ensemble"},
        "probs": {"pseudo_from": "probs"},
    }.items():
        method = EPL(pair(), **kwargs)
        method.train()
        torch.manual_seed(3)
        values[name] = method.train_step(labeled, unlabeled)["loss_cps"].item()
    assert values["per_pixel"] != pytest.approx(values["code"], rel=1e-6)
    assert values["ensemble"] != pytest.approx(values["code"], rel=1e-6)
    with pytest.raises(ValueError, match="ce_on"):
        EPL(pair(), ce_on="both")


def test_trainer_step_moves_both_deeplab_networks_and_their_batch_norm_statistics():
    torch.manual_seed(0)
    net = NetworkPair(DeepLabV3Plus(1, 4), DeepLabV3Plus(1, 4))
    method = EPL(net)
    optimizers = {
        "optimizer_left": torch.optim.AdamW(net.left.parameters(), lr=1e-4, weight_decay=0.01),
        "optimizer_right": torch.optim.AdamW(net.right.parameters(), lr=1e-4, weight_decay=0.01),
    }
    labeled, unlabeled = batches(b=2, size=32, unlabeled=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer = SemiSupervisedTrainer("cpu", None, [(labeled, unlabeled)], net, method, optimizers, max_iterations=1)
    trainer.run()
    assert math.isfinite(trainer.state.output[0]["loss"].item())
    after = net.state_dict()
    for side in ("left", "right"):
        assert not torch.equal(before[f"{side}.classifier.weight"], after[f"{side}.classifier.weight"])
        assert not torch.equal(
            before[f"{side}.backbone.conv1.1.running_mean"], after[f"{side}.backbone.conv1.1.running_mean"]
        )


def test_benchmark_times_both_networks_against_their_labeled_only_step():
    """The benchmark reads EPL's two optimizers and its batch (labelled + two unlabelled halves); its labelled-only
    step is EPL's own supervised step (both networks), not a single network."""
    from semizoo.benchmark import step_cost

    result = step_cost("epl_mnms_segmentation", ["smoke.json", "quickstart.json"], iterations=1, warmup=1, blocks=2)
    assert result["batch"] == {"labeled": 2, "unlabeled": 4, "patch": [48, 48]}
    assert result["steps_timed"] == {"method": 2, "labeled_only": 2}
    assert result["seconds_per_step"]["method"] > result["seconds_per_step"]["labeled_only"] > 0


def test_optional_beta_rampup_scales_the_cps_term_only():
    labeled, unlabeled = batches()
    ramped = EPL(pair(), beta=3.0, beta_rampup=100.0)
    assert EPL(pair()).cps_weight(0) == 3.0 and ramped.cps_weight(100) == pytest.approx(3.0)
    assert ramped.cps_weight(0) == pytest.approx(3.0 * math.exp(-5.0))
    ramped.train()
    ramped.iteration = 20
    torch.manual_seed(3)
    terms = ramped.train_step(labeled, unlabeled)
    weight = 3.0 * math.exp(-5.0 * (1 - 20 / 100) ** 2)
    assert torch.allclose(terms["loss"], terms["loss_sup"] + weight * terms["loss_cps"], atol=1e-5)
