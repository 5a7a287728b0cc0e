"""ACTION / ACTION++ fine-tuning plugin ``semizoo.methods.Action`` (action.md §5-§7, §11, §13).

Tiny networks (SSL4MIS U-Net with 4-64 channels on 32×32, UA-MT V-Net with 4 filters on 32×32×16) and smoke sizes
(ReCo Q=8, N=16; TSC 8 queries per class, K=96, 20 centre steps). Expected values come from the spec's formulas
written out here, from hooks on the networks, or from a second, independently built run.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from semizoo.engines import SemiSupervisedTrainer
from semizoo.methods import Action
from semizoo.methods import action as action_module
from semizoo.methods import create
from semizoo.networks import RepresentationHead, SSL4MISUNet, UAMTVNet, pyramid_features

SMOKE = dict(num_queries=8, num_negatives=16, tsc_queue_size=96, tsc_queries_per_class=8, tsc_centre_steps=20)
TERMS = {"loss", "loss_sup", "loss_unsup", "loss_reco", "loss_tsc", "t_reco", "t_tsc"}

# ACDC: 4 classes, pyramid 4+8+16+32+64 = 124 channels; LA: 2 classes, pyramid 16·4 = 64 channels
PRESETS = {
    "acdc_action": dict(dims=2, kwargs=dict(mix_mode="cutmix", isd_side_effects=True)),
    "acdc_actionpp": dict(
        dims=2,
        kwargs=dict(
            mix_mode="cutmix",
            isd_side_effects=False,
            tsc_weight=0.01,
            tsc_cosine=True,
            reco_cosine=True,
            reco_temperature=0.1,
            tsc_teacher_feature="pyramid",
        ),
    ),
    "la_action": dict(dims=3, kwargs=dict(mix_mode="classmix", isd_side_effects=False)),
    "la_actionpp": dict(
        dims=3,
        kwargs=dict(
            mix_mode="classmix",
            isd_side_effects=False,
            tsc_weight=0.01,
            reco_cosine=True,
            reco_temperature=0.1,
            tsc_teacher_feature="k_rep",
            tsc_target_weight=0.2,
        ),
    ),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread for these tiny networks: on a shared 2-core machine, OpenMP spin-waiting made the file
    ~10× slower with two threads; the previous count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _network(dims: int, seed: int = 0, head_scale: float = 1.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = SSL4MISUNet(1, 4, features=(4, 8, 16, 32, 64)) if dims == 2 else UAMTVNet(1, 2, n_filters=4)
    with torch.no_grad():  # a larger head gives confident teacher pixels (δs = 0.97), so L_u is not 0
        net.head.weight.mul_(head_scale)
    return net


def _rep_head(dims: int, tsc_feature: str | None = None, seed: int = 1) -> RepresentationHead:
    torch.manual_seed(seed)
    if dims == 2:
        return RepresentationHead(124, 124 if tsc_feature == "pyramid" else 32, 2)
    return RepresentationHead(64, 16, 3)


def _batch(dims: int, batch: int | None = None, seed: int = 0) -> tuple[dict, dict]:
    generator = torch.Generator().manual_seed(seed)
    size = (32, 32) if dims == 2 else (32, 32, 16)
    n = (2 if dims == 2 else 1) if batch is None else batch
    classes = 4 if dims == 2 else 2
    labeled = {
        "image": torch.randn(n, 1, *size, generator=generator),
        "label": torch.randint(0, classes, (n, 1, *size), generator=generator),
    }
    return labeled, {"image": torch.randn(n, 1, *size, generator=generator)}


def _method(preset: str, tmp_path, network=None, rep_head=None, seed: int = 3, head_scale: float = 1.0, **overrides):
    spec = PRESETS[preset]
    dims, kwargs = spec["dims"], {**SMOKE, **spec["kwargs"], **overrides}
    network = _network(dims, head_scale=head_scale) if network is None else network
    rep_head = _rep_head(dims, kwargs.get("tsc_teacher_feature")) if rep_head is None else rep_head
    method = Action(
        network,
        rep_head,
        4 if dims == 2 else 2,
        spatial_dims=dims,
        iters_per_epoch=2,
        max_iterations=40,
        tsc_centre_cache_dir=tmp_path,
        seed=seed,
        **kwargs,
    )
    return method.train()


def _identity_view(image, pseudo, conf, generator=None):
    return image.clone(), pseudo.clone(), conf.clone()


def _bn_batches(network: torch.nn.Module) -> list[int]:
    return [
        int(m.num_batches_tracked) for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]


# ---------------------------------------------------------------------------------------------------------------------
# terms, weights, gradients


@pytest.mark.parametrize("preset", list(PRESETS), ids=list(PRESETS))
def test_terms_are_finite_the_loss_is_the_weighted_sum_and_every_parameter_gets_a_gradient(preset, tmp_path):
    method = _method(preset, tmp_path, head_scale=8.0)
    labeled, unlabeled = _batch(PRESETS[preset]["dims"])
    terms = method.train_step(labeled, unlabeled)
    assert set(terms) == TERMS
    assert all(v.numel() == 1 and math.isfinite(v.item()) for v in terms.values())
    tsc_on = "tsc_weight" in PRESETS[preset]["kwargs"]
    expected = terms["loss_sup"] + terms["loss_unsup"] + 0.01 * terms["loss_reco"] + 0.01 * terms["loss_tsc"]
    assert torch.allclose(terms["loss"], expected, rtol=1e-6, atol=1e-7)
    assert terms["loss_reco"].item() > 0  # several classes with hard pixels
    assert (terms["loss_tsc"].item() > 0) == tsc_on
    terms["loss"].backward()
    assert all(p.grad is not None for p in method.network.parameters())
    assert all(p.grad is not None for p in method.rep_head.parameters())
    assert all(not p.requires_grad and p.grad is None for p in method.teacher.parameters())
    if method.k_rep is not None:
        assert all(not p.requires_grad and p.grad is None for p in method.k_rep.parameters())


def test_parameters_no_term_uses_still_get_a_zero_gradient(tmp_path):
    # DDP rule 2 (methods/base.py): the step adds zero_gradient_anchor over the student and the head
    network, rep_head = _network(2), _rep_head(2)
    network.unused = torch.nn.Parameter(torch.ones(3))
    rep_head.unused = torch.nn.Parameter(torch.ones(2))
    method = _method("acdc_action", tmp_path, network=network, rep_head=rep_head)
    terms = method.train_step(*_batch(2))
    assert terms["loss"].item() == pytest.approx(
        (terms["loss_sup"] + terms["loss_unsup"] + 0.01 * terms["loss_reco"]).item(), rel=1e-6
    )
    terms["loss"].backward()
    assert torch.equal(network.unused.grad, torch.zeros(3)) and torch.equal(rep_head.unused.grad, torch.zeros(2))


def test_supervised_term_is_half_ce_plus_squared_batch_dice_of_the_labelled_logits(tmp_path):
    method = _method("acdc_action", tmp_path, isd_side_effects=False)
    outputs = []
    method.network.register_forward_hook(lambda module, args, out: outputs.append(out))
    labeled, unlabeled = _batch(2)
    terms = method.train_step(labeled, unlabeled)
    logits = outputs[0]["logits"].detach().double()  # the first student forward is the labelled one
    labels = labeled["label"][:, 0]
    probs = logits.softmax(1)
    onehot = F.one_hot(labels, 4).movedim(-1, 1).double()
    dims = (0, 2, 3)  # batch=True: sums over the batch and all pixels, per class
    dice = 1 - (2 * (probs * onehot).sum(dims) + 1e-5) / ((probs**2).sum(dims) + onehot.sum(dims) + 1e-5)
    ce = -logits.log_softmax(1).gather(1, labels[:, None])[:, 0].mean()
    assert terms["loss_sup"].item() == pytest.approx((0.5 * (ce + dice.mean())).item(), rel=1e-5)


def test_unsupervised_and_reco_inputs_follow_the_teacher_pseudo_labels(tmp_path, monkeypatch):
    # B = 1: cutmix is the identity, and so is the injected strong view, so x_a = x_u and (y_m, c_m) = teacher's
    method = _method("acdc_action", tmp_path, isd_side_effects=False, strong_aug=_identity_view, head_scale=8.0)
    student, teacher, reco_calls = [], [], []
    method.network.register_forward_hook(lambda module, args, out: student.append((args[0], out)))
    method.teacher.register_forward_hook(lambda module, args, out: teacher.append(out))
    real_reco = action_module.reco_loss

    def spy(*args, **kwargs):
        reco_calls.append((args, kwargs))
        return real_reco(*args, **kwargs)

    monkeypatch.setattr(action_module, "reco_loss", spy)
    labeled, unlabeled = _batch(2, batch=1)
    terms = method.train_step(labeled, unlabeled)

    assert len(teacher) == 1 and len(student) == 2
    assert torch.equal(student[1][0], unlabeled["image"])
    conf, pseudo = teacher[0].softmax(1).max(1)
    logits_u = student[1][1]["logits"].detach().double()
    ce = -logits_u.log_softmax(1).gather(1, pseudo[:, None])[:, 0]  # per-pixel CE, no ignored pixels here
    weight = (conf >= 0.97).sum().double() / pseudo.numel()
    positive = ce > 0
    expected = (weight * ce[positive]).sum() / positive.sum()
    assert weight.item() > 0 and terms["loss_unsup"].item() == pytest.approx(expected.item(), rel=1e-5)

    (rep, onehot, mask, prob, strong, tau, queries, negatives), kwargs = reco_calls[0]
    logits_l = student[0][1]["logits"]
    assert rep.shape[0] == 2 and rep.requires_grad and not prob.requires_grad
    assert torch.equal(onehot, F.one_hot(torch.cat([labeled["label"][:, 0], pseudo]), 4).movedim(-1, 1).float())
    assert torch.equal(mask[:1], torch.ones_like(mask[:1]))
    assert torch.equal(mask[1:, 0], (conf >= 0.7).float())
    assert torch.allclose(prob, torch.cat([logits_l, student[1][1]["logits"]]).softmax(1))
    assert (strong, tau, queries, negatives) == (0.97, 0.5, 8, 16)
    assert kwargs["generator"] is method.generator


# ---------------------------------------------------------------------------------------------------------------------
# teacher, k_rep, ISD side effects


@pytest.mark.parametrize("preset", ["acdc_actionpp", "la_actionpp"], ids=["acdc", "la_k_rep"])
def test_teacher_and_k_rep_are_parameter_emas_after_the_optimizer_step(preset, tmp_path):
    method = _method(preset, tmp_path)
    with torch.no_grad():  # make the teacher differ from the student, so the EMA is visible
        for p in method.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    teacher_before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    labeled, unlabeled = _batch(PRESETS[preset]["dims"])
    optimizer = torch.optim.SGD(list(method.network.parameters()) + list(method.rep_head.parameters()), lr=0.5)
    terms = method.train_step(labeled, unlabeled)
    params_after_step = {k: v.clone() for k, v in method.teacher.named_parameters()}
    assert all(torch.equal(params_after_step[k], teacher_before[k]) for k in params_after_step)  # no ISD effects
    terms["loss"].backward()
    optimizer.step()
    k_rep_before = None if method.k_rep is None else {k: v.clone() for k, v in method.k_rep.named_parameters()}
    buffers_before = {k: v.clone() for k, v in method.teacher.named_buffers()}
    method.after_optimizer_step()
    student = dict(method.network.named_parameters())
    for name, value in method.teacher.named_parameters():
        assert torch.allclose(value, 0.99 * teacher_before[name] + 0.01 * student[name], atol=1e-6), name
    assert all(torch.equal(v, buffers_before[k]) for k, v in method.teacher.named_buffers())  # parameters only
    if k_rep_before is not None:
        rep = dict(method.rep_head.named_parameters())
        for name, value in method.k_rep.named_parameters():
            assert torch.allclose(value, 0.99 * k_rep_before[name] + 0.01 * rep[name], atol=1e-6), name
        assert not torch.allclose(k_rep_before["proj.0.weight"], rep["proj.0.weight"])  # the head moved


@pytest.mark.parametrize("side_effects", [True, False], ids=["isd_on", "isd_off"])
def test_isd_side_effects_add_one_student_forward_and_one_ema_update(side_effects, tmp_path):
    method = _method("acdc_action", tmp_path, isd_side_effects=side_effects)
    with torch.no_grad():
        for p in method.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    teacher_before = {k: v.clone() for k, v in method.teacher.named_parameters()}
    student_before = {k: v.clone() for k, v in method.network.named_parameters()}
    running_before = [m.running_mean.clone() for m in method.network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    inputs = []
    method.network.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    labeled, unlabeled = _batch(2)
    method.train_step(labeled, unlabeled)
    assert set(_bn_batches(method.network)) == {3 if side_effects else 2}  # x_l, x_a (, raw x_u)
    if side_effects:
        assert torch.equal(inputs[2], unlabeled["image"])
        bn = [m for m in method.network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert not torch.allclose(bn[0].running_mean, running_before[0])
    for name, value in method.teacher.named_parameters():
        expected = 0.99 * teacher_before[name] + 0.01 * student_before[name] if side_effects else teacher_before[name]
        assert torch.allclose(value, expected, atol=1e-7), name
    # without an unlabelled batch there is no ISD call: one forward, teacher untouched
    method.train_step(labeled, None)
    assert set(_bn_batches(method.network)) == {4 if side_effects else 3}


def test_teacher_mode_follows_teacher_eval_mode(tmp_path):
    assert _method("acdc_action", tmp_path).teacher.training
    method = _method("acdc_action", tmp_path, teacher_eval_mode=True)
    assert not method.teacher.training and method.network.training and method.rep_head.training


# ---------------------------------------------------------------------------------------------------------------------
# no unlabelled data, ACTION++ TSC, temperatures


def test_without_unlabelled_batch_the_step_is_supervised_plus_contrast(tmp_path, monkeypatch):
    method = _method("acdc_actionpp", tmp_path)
    calls, reco_reps = [], []
    method.network.register_forward_hook(lambda module, args, out: calls.append(args[0]))
    real_reco = action_module.reco_loss
    monkeypatch.setattr(
        action_module, "reco_loss", lambda rep, *a, **k: (reco_reps.append((rep, a[1])), real_reco(rep, *a, **k))[1]
    )
    labeled, _ = _batch(2)
    terms = method.train_step(labeled, None)
    assert terms["loss_unsup"].item() == 0.0
    assert all(math.isfinite(v.item()) for v in terms.values()) and terms["loss_tsc"].item() > 0
    assert len(calls) == 1 and torch.equal(calls[0], labeled["image"])
    rep, mask = reco_reps[0]
    assert rep.shape[0] == 2 and torch.equal(mask, torch.ones_like(mask))  # labelled pixels only, all valid
    terms["loss"].backward()
    assert all(p.grad is not None for p in list(method.network.parameters()) + list(method.rep_head.parameters()))


@pytest.mark.parametrize("preset", ["acdc_actionpp", "la_actionpp"], ids=["acdc", "la"])
def test_actionpp_tsc_term_advances_the_queue(preset, tmp_path):
    method = _method(preset, tmp_path)
    labeled, unlabeled = _batch(PRESETS[preset]["dims"])
    present = torch.unique(labeled["label"]).numel()
    assert method.tsc is not None and int(method.tsc.queue_ptr) == 0
    terms = method.train_step(labeled, unlabeled)
    assert terms["loss_tsc"].item() > 0
    assert int(method.tsc.queue_ptr) == (8 * present) % 96
    assert sorted(torch.unique(method.tsc.queue_labels[: 8 * present]).tolist()) == list(range(present))
    method.train_step(labeled, unlabeled)
    assert int(method.tsc.queue_ptr) == (16 * present) % 96
    plain = _method(preset.replace("pp", ""), tmp_path)
    assert plain.tsc is None and plain.k_rep is None
    assert plain.train_step(labeled, unlabeled)["loss_tsc"].item() == 0.0


def test_tsc_teacher_feature_is_the_raw_teacher_pyramid_on_acdc(tmp_path, monkeypatch):
    method = _method("acdc_actionpp", tmp_path, teacher_eval_mode=True)  # eval teacher: deterministic features
    seen = []
    real_forward = action_module.TSCMemory.forward
    monkeypatch.setattr(
        action_module.TSCMemory,
        "forward",
        lambda self, s, t, y, **k: (seen.append((s, t, y, k)), real_forward(self, s, t, y, **k))[1],
    )
    labeled, unlabeled = _batch(2)
    method.train_step(labeled, unlabeled)
    feat_s, feat_t, labels, kwargs = seen[0]
    with torch.no_grad():
        expected = pyramid_features(method.teacher(labeled["image"], features=True)["pyramid"], (32, 32))
    assert feat_t.shape == (2, 124, 32, 32) and torch.allclose(feat_t, expected, atol=1e-6)
    assert feat_s.shape == feat_t.shape and feat_s.requires_grad and torch.equal(labels, labeled["label"][:, 0])
    assert kwargs["temperature"] == pytest.approx(1.0) and kwargs["generator"] is method.generator  # cosine at e=0


@pytest.mark.parametrize("iteration", [0, 1, 2, 5, 21])
def test_temperatures_follow_the_cosine_schedules(iteration, tmp_path):
    # iters_per_epoch 2, max_iterations 40: E = 21, e = iteration // 2, period 0.1·E epochs
    e, period = iteration // 2, 0.1 * 21
    cosine = (1 + math.cos(2 * math.pi * e / period)) / 2
    actionpp = _method("acdc_actionpp", tmp_path)
    assert actionpp.temperatures(iteration) == pytest.approx((0.1 + 0.9 * cosine, 0.07 + 0.93 * cosine))
    la = _method("la_actionpp", tmp_path)
    assert la.temperatures(iteration) == pytest.approx((0.1 + 0.9 * cosine, 0.07))  # LA: TSC T fixed
    assert _method("acdc_action", tmp_path).temperatures(iteration) == (0.5, 0.07)
    if iteration == 5:
        actionpp.iteration = iteration
        terms = actionpp.train_step(*_batch(2))
        assert terms["t_reco"].item() == pytest.approx(0.1 + 0.9 * cosine, rel=1e-6)
        assert terms["t_tsc"].item() == pytest.approx(0.07 + 0.93 * cosine, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# checkpoint, DDP-style wrappers, trainer, arguments


def test_state_dict_round_trip_restores_teacher_head_memory_and_generator(tmp_path):
    first = _method("acdc_actionpp", tmp_path / "a", isd_side_effects=True, seed=3)
    labeled, unlabeled = _batch(2)
    optimizer = torch.optim.SGD(list(first.network.parameters()) + list(first.rep_head.parameters()), lr=0.1)
    optimizer.zero_grad()
    first.train_step(labeled, unlabeled)["loss"].backward()
    optimizer.step()
    first.after_optimizer_step()
    path = tmp_path / "checkpoint.pt"
    torch.save({"method": first.state_dict(), "network": first.network.state_dict()}, path)
    state = torch.load(path, weights_only=True)
    keys = set(state["method"])
    assert {"_extra_state", "teacher.head.weight", "rep_head.proj.0.weight", "tsc.queue", "tsc.queue_ptr"} <= keys
    assert not any(k.startswith(("encoder.", "decoder.", "head.")) for k in keys)  # the student is saved separately

    second = _method(
        "acdc_actionpp",
        tmp_path / "b",
        network=_network(2, seed=11),
        rep_head=_rep_head(2, "pyramid", 12),
        seed=99,
        isd_side_effects=True,
    )
    second.network.load_state_dict(state["network"])
    second.load_state_dict(state["method"])
    assert torch.equal(second.tsc.queue, first.tsc.queue) and torch.equal(second.tsc.centres, first.tsc.centres)
    first.iteration = second.iteration = 1
    results = []
    for method in (first, second):
        torch.manual_seed(5)  # dropout draws
        results.append({k: v.detach() for k, v in method.train_step(labeled, unlabeled).items()})
    assert all(torch.equal(results[0][k], results[1][k]) for k in TERMS)
    assert int(first.tsc.queue_ptr) == int(second.tsc.queue_ptr)
    for module_a, module_b in ((first.teacher, second.teacher), (first.network, second.network)):
        state_a, state_b = module_a.state_dict(), module_b.state_dict()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert torch.equal(first.generator.get_state(), second.generator.get_state())


class _ForwardOnly(torch.nn.DataParallel):
    """A DDP stand-in that ``unwrap`` peels (a ``DataParallel`` without devices): ``module`` may run only inside this
    wrapper's ``forward`` (checked by a pre-hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        torch.nn.Module.__init__(self)  # no device set-up: this stand-in only forwards
        self.module = module
        self.inside = False
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.inside, self.calls = True, self.calls + 1
        try:
            return self.module(*args, **kwargs)
        finally:
            self.inside = False

    def guard(self) -> None:
        def check(module, args):
            if not self.inside and torch.is_grad_enabled():
                raise RuntimeError("trainable call bypassed the wrapper's forward")

        self.module.register_forward_pre_hook(check)


def test_trainable_calls_go_through_the_wrappers_forward(tmp_path):
    network, rep_head = _ForwardOnly(_network(2)), _ForwardOnly(_rep_head(2))
    method = _method("acdc_action", tmp_path, network=network, rep_head=rep_head)
    network.guard()  # after the teacher copy, so only the student's inner module is guarded
    rep_head.guard()
    no_grad_calls = []
    network.module.register_forward_pre_hook(lambda m, a: no_grad_calls.append(network.inside))
    labeled, unlabeled = _batch(2)
    terms = method.train_step(labeled, unlabeled)
    assert network.calls == 3 and rep_head.calls == 2  # x_l, x_a, raw x_u (ISD side effects); r_l, r_u
    assert all(no_grad_calls)  # even the no-grad side-effect forward goes through the wrapper
    assert method.rep_head is rep_head.module and "rep_head.proj.0.weight" in method.state_dict()  # no "module."
    terms["loss"].backward()
    assert all(p.grad is not None for p in list(network.parameters()) + list(rep_head.parameters()))


def test_two_iterations_in_the_semisupervised_trainer(tmp_path):
    method = _method("acdc_actionpp", tmp_path, isd_side_effects=True)
    network = method.network
    loader = [_batch(2, seed=s) for s in range(2)]
    optimizer = torch.optim.SGD(list(network.parameters()) + list(method.rep_head.parameters()), lr=0.05)
    head_before = method.rep_head.proj[0].weight.clone()
    teacher_before = method.teacher.head.weight.clone()
    trainer = SemiSupervisedTrainer("cpu", None, loader, network, method, optimizer, max_iterations=2)
    trainer.run()
    assert trainer.state.iteration == 2 and method.iteration == 1
    assert set(trainer.state.output[0]) == TERMS
    assert all(math.isfinite(v.item()) for v in trainer.state.output[0].values())
    assert not torch.equal(method.rep_head.proj[0].weight, head_before)
    assert not torch.equal(method.teacher.head.weight, teacher_before)
    assert int(method.tsc.queue_ptr) != 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mix_mode="mixup"), "mix_mode"),
        (dict(tsc_teacher_feature="student"), "tsc_teacher_feature"),
        (dict(strong_aug=_identity_view, intensity_compat="official"), "strong_aug"),
        (dict(reco_temperature=0.0), "temperatures"),
        (dict(tsc_weight=0.01, tsc_teacher_feature="pyramid"), "keep its channels"),  # head 124 -> 32
    ],
    ids=["mix_mode", "tsc_feature", "strong_aug_conflict", "temperature", "pyramid_channels"],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Action(_network(2), _rep_head(2), 4, **{**SMOKE, **kwargs})


def test_registered_as_action():
    method = create("action", network=_network(2), rep_head=_rep_head(2), n_classes=4, **SMOKE)
    assert isinstance(method, Action) and method.name == "action"
