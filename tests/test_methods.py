import math

import pytest
import torch
from semizoo.methods import MeanTeacher, Method, Supervised, create, register, registered
from semizoo.schedules import sigmoid_rampup
from toy import tiny_net


def _batch(n, labeled=True):
    batch = {"image": torch.randn(n, 1, 16, 16)}
    if labeled:
        batch["label"] = torch.randint(0, 2, (n, 1, 16, 16))
    return batch


def test_registry_creates_and_rejects():
    assert {"supervised", "mean_teacher"} <= set(registered())
    assert isinstance(create("mean_teacher", network=tiny_net()), MeanTeacher)
    with pytest.raises(KeyError, match="unknown method 'fixmatch'; registered methods: .*mean_teacher"):
        create("fixmatch", network=tiny_net())
    with pytest.raises(ValueError, match="already registered"):

        @register("supervised")
        class Other(Method):
            pass


def test_method_state_excludes_the_student():
    method = MeanTeacher(tiny_net())
    assert method.state_dict() and all(k.startswith("teacher.") for k in method.state_dict())
    assert all(not p.requires_grad for p in method.teacher.parameters())
    assert len(list(method.parameters())) == len(list(method.teacher.parameters()))


def test_teacher_receives_no_gradient():
    method = MeanTeacher(tiny_net(), consistency_start=0).train()
    method.iteration = 3000
    terms = method.train_step(_batch(2), _batch(2, labeled=False))
    terms["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.network.parameters())
    assert terms["loss_cons"].item() > 0


@pytest.mark.parametrize(
    "kwargs, iteration, expected",
    [
        (dict(consistency_start=1000, consistency_rampup=200), 999, 0.0),
        (dict(consistency_start=1000, consistency_rampup=200), 1000, 0.1 * sigmoid_rampup(6, 200)),
        (dict(consistency_start=1000, consistency_rampup=200), 30000, 0.1),
        (dict(consistency_start=0, consistency_rampup=40), 0, 0.1 * math.exp(-5)),
        (dict(consistency_start=0, consistency_rampup=40), 149, 0.1 * math.exp(-5)),
        (dict(consistency_start=0, consistency_rampup=40), 150, 0.1 * math.exp(-5 * (39 / 40) ** 2)),
        (dict(consistency_start=0, consistency_rampup=40), 5999, 0.1 * math.exp(-5 / 40**2)),
        (dict(consistency_start=0, consistency_rampup=40), 6000, 0.1),
    ],
    ids=["acdc_gate_999", "acdc_1000", "acdc_end", "la_0", "la_149", "la_150", "la_5999", "la_6000"],
)
def test_consistency_weight_boundaries(kwargs, iteration, expected):
    method = MeanTeacher(tiny_net(), **kwargs)
    assert method.consistency_weight(iteration) == pytest.approx(expected, rel=1e-12)
    method.iteration = iteration
    terms = method.train_step(_batch(2), _batch(2, labeled=False))
    assert terms["cons_weight"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(
        (terms["loss_sup"] + terms["cons_weight"] * terms["loss_cons"]).item(), rel=1e-5
    )


def test_teacher_noise_is_clipped():
    method = MeanTeacher(tiny_net(), noise_std=10.0, noise_clip=0.2)
    noise = method.teacher_noise(torch.zeros(4, 1, 32, 32))
    assert noise.abs().max().item() == pytest.approx(0.2)
    default = MeanTeacher(tiny_net()).teacher_noise(torch.zeros(8, 1, 64, 64))
    assert default.abs().max() <= 0.2 and default.std().item() == pytest.approx(0.1, rel=0.1)


def test_supervised_fallback_without_unlabeled_batch():
    method = MeanTeacher(tiny_net(), consistency_start=0)
    method.iteration = 10_000
    terms = method.train_step(_batch(3), None)
    assert terms["loss"].item() == terms["loss_sup"].item()
    assert terms["loss_cons"].item() == 0.0 and terms["cons_weight"].item() == 0.0


def test_supervised_ignores_unlabeled_and_uses_the_loss():
    method = Supervised(tiny_net(), sup_loss=lambda logits, label: logits.mean() * 0 + 2.5)
    terms = method.train_step(_batch(2), _batch(2, labeled=False))
    assert terms["loss"].item() == 2.5


def test_missing_key_is_named():
    with pytest.raises(KeyError, match="the labeled batch has no 'label'; its keys are \\['image'\\]"):
        Supervised(tiny_net()).train_step(_batch(2, labeled=False), None)
