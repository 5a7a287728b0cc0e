"""EMA update and DDP unwrapping helpers of ``semizoo.networks.utils``."""

import pytest
import torch
from semizoo.networks import ema_decay, ema_update_, frozen_copy, unwrap


def test_ema_update_formula_with_warmup():
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    student.register_buffer("counter", torch.ones(1))
    teacher.register_buffer("counter", torch.zeros(1))
    before = teacher.weight.detach().clone()
    assert ema_decay(0, 0.99) == 0.0 and ema_decay(1, 0.99) == 0.5 and ema_decay(10_000, 0.99) == 0.99
    ema_update_(teacher, student, ema_decay(3, 0.99))
    expected = 0.75 * before + 0.25 * student.weight.detach()
    assert torch.allclose(teacher.weight, expected)
    assert teacher.counter.item() == 0.0  # buffers are not averaged
    ema_update_(teacher, student, ema_decay(0, 0.99))
    assert torch.equal(teacher.weight, student.weight)


def test_ema_mismatch_raises():
    with pytest.raises(ValueError, match="parameters differ"):
        ema_update_(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2)), 0.5)


def test_unwrap_and_frozen_copy():
    net = torch.nn.Linear(2, 2)
    assert unwrap(torch.nn.DataParallel(net)) is net and unwrap(net) is net
    copied = frozen_copy(torch.nn.DataParallel(net))
    assert isinstance(copied, torch.nn.Linear) and not any(p.requires_grad for p in copied.parameters())
    assert torch.equal(copied.weight, net.weight) and copied.weight is not net.weight
