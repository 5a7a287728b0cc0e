import math

import pytest
import torch
from monai.losses import DiceLoss
from semizoo.losses import ForegroundDiceLoss, binary_dice_loss, class_separation_loss, soft_dice_loss, vat_lds_loss
from semizoo.methods import SSNet, create
from semizoo.methods.ssnet import PrototypeMemory
from semizoo.networks import SSL4MISUNet, SSNetNetwork


def test_soft_dice_with_onehot_target_equals_monai_acdc_flags():
    probs = torch.softmax(torch.randn(3, 4, 8, 8), 1)
    labels = torch.randint(0, 4, (3, 1, 8, 8))
    onehot = torch.nn.functional.one_hot(labels[:, 0], 4).movedim(-1, 1).float()
    monai = DiceLoss(to_onehot_y=True, squared_pred=True, smooth_nr=1e-10, smooth_dr=1e-10, batch=True)
    assert soft_dice_loss(probs, onehot).item() == pytest.approx(monai(probs, labels).item(), abs=1e-6)


def test_binary_dice_equals_monai_foreground_flags():
    logits = torch.randn(2, 2, 6, 6, 4)
    labels = torch.randint(0, 2, (2, 1, 6, 6, 4))
    monai = DiceLoss(
        include_background=False, to_onehot_y=True, softmax=True, smooth_nr=1e-8, smooth_dr=1e-8, batch=True
    )
    assert ForegroundDiceLoss()(logits, labels).item() == pytest.approx(monai(logits, labels).item(), abs=1e-6)
    p, y = torch.rand(10), (torch.rand(10) > 0.5).float()
    assert binary_dice_loss(p, y).item() == pytest.approx(1 - (2 * (p * y).sum() + 1e-8) / (p.sum() + y.sum() + 1e-8))


class _Net(torch.nn.Module):
    """Conv-BN-ReLU-conv without dropout: deterministic train-mode forwards."""

    def __init__(self, ignore_input: bool = False):
        super().__init__()
        self.ignore_input = ignore_input
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(), torch.nn.Conv2d(6, 3, 1)
        )
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.body(torch.zeros_like(x) + 1.0 if self.ignore_input else x)


def test_vat_perturbation_norm_and_gradients():
    net = _Net().train()
    x = torch.randn(3, 1, 12, 12)
    loss, r = vat_lds_loss(
        net, x, soft_dice_loss, xi=10.0, eps=6.0, generator=torch.Generator().manual_seed(0), return_perturbation=True
    )
    norms = r.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((3,), 6.0), rtol=1e-4)
    assert net.calls == 3  # clean target + one power iteration + the perturbed pass
    assert all(p.grad is None for p in net.parameters())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_vat_leaves_batchnorm_statistics_as_one_plain_forward():
    torch.manual_seed(1)
    net, twin = _Net().train(), _Net().train()
    twin.load_state_dict(net.state_dict())
    x = torch.randn(4, 1, 10, 10)
    vat_lds_loss(net, x, soft_dice_loss, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        twin(x)
    bn, twin_bn = net.body[1], twin.body[1]
    assert torch.allclose(bn.running_mean, twin_bn.running_mean) and torch.allclose(bn.running_var, twin_bn.running_var)
    assert bn.num_batches_tracked.item() == twin_bn.num_batches_tracked.item() == 1
    assert bn.track_running_stats  # restored


def test_vat_on_a_model_ignoring_its_input():
    net = _Net(ignore_input=True).train()
    loss, r = vat_lds_loss(net, torch.randn(2, 1, 8, 8), soft_dice_loss, return_perturbation=True)
    assert torch.count_nonzero(r) == 0
    p = torch.softmax(net(torch.zeros(2, 1, 8, 8)), 1)
    assert loss.item() == pytest.approx(soft_dice_loss(p, p).item(), abs=1e-6)
    assert soft_dice_loss(p, p).item() == pytest.approx(0.0, abs=1e-6)


def test_vat_noise_depends_only_on_the_cpu_seed():
    net = _Net().eval()
    x = torch.randn(2, 1, 8, 8)
    first = vat_lds_loss(net, x, soft_dice_loss, generator=torch.Generator().manual_seed(5), return_perturbation=True)
    torch.manual_seed(123)  # the global generator does not matter
    second = vat_lds_loss(net, x, soft_dice_loss, generator=torch.Generator().manual_seed(5), return_perturbation=True)
    assert torch.equal(first[1], second[1])


def _first_feature_score(c, rows):
    return rows[:, 0]


def test_memory_keeps_lowest_or_highest_and_replaces():
    features = torch.randn(40, 4)
    features[:, 0] = torch.linspace(-2, 2, 40)[torch.randperm(40)]
    labels = torch.tensor([1] * 40)
    lowest, highest = PrototypeMemory(3, dim=4), PrototypeMemory(3, dim=4, keep="highest")
    lowest.update(features, labels, _first_feature_score)
    highest.update(features, labels, _first_feature_score)
    order = torch.argsort(features[:, 0])
    assert set(lowest[1][:, 0].tolist()) == set(features[order[:32], 0].tolist())
    assert set(highest[1][:, 0].tolist()) == set(features[order[8:], 0].tolist())
    assert lowest[1].shape == highest[1].shape == (32, 4)
    assert lowest[0].shape == (0, 4) and lowest[2].shape == (0, 4)
    # <= 32 rows kept verbatim, replacing (not appending); a class without rows is unchanged
    few = torch.randn(5, 4)
    lowest.update(few, torch.tensor([1, 1, 1, 0, 0]), _first_feature_score)
    assert torch.equal(lowest[1], few[:3])
    lowest.update(few, torch.tensor([2] * 5), _first_feature_score)
    assert torch.equal(lowest[1], few[:3]) and torch.equal(lowest[2], few)
    lowest.update(few, torch.zeros(5, dtype=torch.long), _first_feature_score)
    assert lowest[0].shape[0] == 0  # background never stored
    restored = PrototypeMemory(3, dim=4)
    restored.load_state_dict(lowest.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.rows(), lowest.rows()))
    with pytest.raises(ValueError, match="keep must be one of"):
        PrototypeMemory(2, keep="random")


def _selectors(n, value=0.0):
    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 1), value) + 0 * x[:, :1]

    return [Constant() for _ in range(n)]


def test_class_separation_zero_for_identical_vectors_and_hand_formula():
    v = torch.randn(1, 8)
    queries = v.repeat(6, 1)
    memory = [None, v.repeat(4, 1), v.repeat(3, 1)]
    labels = torch.tensor([1, 1, 1, 2, 2, 2])
    loss = class_separation_loss(queries, labels, memory, _selectors(3), _selectors(3), 3)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)

    queries, memory = torch.randn(7, 8), [None, torch.randn(4, 8), torch.randn(5, 8)]
    labels = torch.tensor([1, 1, 1, 2, 2, 2, 0])
    expected = 0.0
    for c in (1, 2):
        z = torch.nn.functional.normalize(queries[labels == c], dim=1)
        m = torch.nn.functional.normalize(memory[c], dim=1)
        expected += (1 - z @ m.t()).mean().item()
    loss = class_separation_loss(queries, labels, memory, _selectors(3), _selectors(3), 3)
    assert loss.item() == pytest.approx(expected / 3, rel=1e-5)
    # M_c <= 1 or N_c <= 1: no contribution
    one_query = torch.tensor([1, 2, 2, 2, 2, 2, 0])
    only_two = class_separation_loss(queries, one_query, memory, _selectors(3), _selectors(3), 3)
    z = torch.nn.functional.normalize(queries[one_query == 2], dim=1)
    m = torch.nn.functional.normalize(memory[2], dim=1)
    assert only_two.item() == pytest.approx((1 - z @ m.t()).mean().item() / 3, rel=1e-5)
    single_row = class_separation_loss(queries, labels, [None, memory[1][:1], None], _selectors(3), _selectors(3), 3)
    assert single_row.item() == 0.0


def test_class_separation_query_gradient_ignores_the_weights():
    torch.manual_seed(0)
    heads = SSNetNetwork(SSL4MISUNet(1, 3), 3).heads.eval()
    queries = torch.randn(10, 32, requires_grad=True)
    memory = [None, torch.randn(4, 32), torch.randn(6, 32)]
    labels = torch.tensor([1] * 5 + [2] * 5)
    class_separation_loss(queries, labels, memory, heads.selector, heads.memory_selector, 3).backward()
    grad = queries.grad.clone()
    # recompute with every weight detached
    queries.grad = None
    total = 0
    for c in (1, 2):
        z = queries[labels == c]
        a = torch.sigmoid(heads.selector[c](z.detach())).detach()
        m = torch.nn.functional.normalize(memory[c], dim=1)
        b = torch.sigmoid(heads.memory_selector[c](m)).detach()
        w = (len(z) * a / a.sum()) @ (len(m) * b / b.sum()).t()
        total = total + (w * (1 - torch.nn.functional.normalize(z, dim=1) @ m.t())).sum() / (len(z) * len(m))
    (total / 3).backward()
    assert torch.allclose(grad, queries.grad, atol=1e-6)


def _ssnet(**kwargs):
    torch.manual_seed(0)
    network = SSNetNetwork(SSL4MISUNet(1, 4), 4)
    calls = []
    network.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return create("ssnet", network=network, n_classes=4, **kwargs), calls


def _batches():
    labeled = {"image": torch.rand(2, 1, 16, 16), "label": torch.randint(0, 4, (2, 1, 16, 16))}
    labeled["label"][:, :, 4:12, 4:12] = 3
    return labeled, {"image": torch.rand(2, 1, 16, 16)}


def test_ssnet_step_forwards_terms_and_fallback():
    method, calls = _ssnet(lam_max=0.1, rampup_length=0)
    method.train()
    labeled, unlabeled = _batches()
    terms = method.train_step(labeled, unlabeled)
    assert calls == [4, 4, 4, 4]  # one main forward of [labelled; unlabelled] + three VAT forwards
    assert all(math.isfinite(v.item()) for v in terms.values())
    expected = terms["loss_sup"] + 0.1 * (terms["loss_lds"] + 0.1 * (terms["loss_cs_l"] + terms["loss_cs_u"]))
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    terms["loss"].backward()
    heads = method.heads
    assert heads.selector[3][0].weight.grad is not None and heads.memory_selector[3][0].weight.grad is not None
    calls.clear()
    fallback = method.train_step(labeled, None)
    assert fallback["loss_cs_u"].item() == 0.0 and calls == [2, 2, 2, 2]


@pytest.mark.parametrize(
    "flags, zero_terms, forwards",
    [
        (dict(use_lds=False), ["loss_lds"], 1),
        (dict(use_class_sep=False), ["loss_cs_l", "loss_cs_u"], 4),
        (dict(lds_clean_from_main_forward=True), [], 3),
    ],
    ids=["no_lds", "no_class_sep", "reuse_main_forward"],
)
def test_ssnet_ablation_flags(flags, zero_terms, forwards):
    method, calls = _ssnet(rampup_length=0, **flags)
    method.train()
    terms = method.train_step(*_batches())
    assert len(calls) == forwards
    for name in zero_terms:
        assert terms[name].item() == 0.0
    if "loss_lds" not in zero_terms:
        assert terms["loss_lds"].item() > 0


def test_ssnet_requires_heads():
    with pytest.raises(TypeError, match="SSNetNetwork"):
        SSNet(SSL4MISUNet(1, 4), n_classes=4)


def test_ssnet_network_is_a_scriptable_segmenter():
    network = SSNetNetwork(SSL4MISUNet(1, 4), 4).eval()
    x = torch.rand(1, 1, 32, 32)
    scripted = torch.jit.script(network)
    assert torch.allclose(scripted(x), network(x), atol=1e-5)


def test_ssnet_state_restores_memory_and_vat_noise(tmp_path):
    method, _ = _ssnet(rampup_length=0)
    method.train()
    method.train_step(*_batches())
    torch.save(method.state_dict(), tmp_path / "method.pt")
    expected = torch.rand(4, generator=method.generator)
    restored, _ = _ssnet(rampup_length=0)
    restored.load_state_dict(torch.load(tmp_path / "method.pt", weights_only=True))
    assert torch.equal(torch.rand(4, generator=restored.generator), expected)
    assert all(torch.equal(a, b) for a, b in zip(restored.memory.rows(), method.memory.rows()))
    assert restored.memory[3].shape[0] > 0
