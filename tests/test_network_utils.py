"""EMA update, DDP unwrapping and weights-file helpers of ``semizoo.networks.utils``."""

import pytest
import torch
from semizoo.networks import NetworkPair, ema_decay, ema_update_, frozen_copy, load_weights, unwrap


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


def _pair(seed: int) -> NetworkPair:
    torch.manual_seed(seed)
    return NetworkPair(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)), torch.nn.Conv2d(1, 2, 1))


def test_load_weights_copies_every_tensor_from_a_run_checkpoint(tmp_path):
    """A saved pair (as a run's ``models/model_final.pt``, or wrapped in ``{"model": ...}`` with DDP's ``module.``
    prefix) becomes the starting point of a freshly built one: every parameter and buffer equal; None: untouched."""
    source = _pair(0)
    source.left[1].running_mean.fill_(0.5)
    torch.save(source.state_dict(), tmp_path / "model_final.pt")
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "wrapped.pt")
    for name in ("model_final.pt", "wrapped.pt"):
        target = _pair(1)
        assert not torch.equal(target.right.weight, source.right.weight)
        assert load_weights(target, tmp_path / name) is target
        for (key, mine), theirs in zip(target.state_dict().items(), source.state_dict().values()):
            assert torch.equal(mine, theirs), key
    untouched = _pair(1)
    weight = untouched.right.weight.detach().clone()
    assert torch.equal(load_weights(untouched, None).right.weight, weight)


def test_load_weights_refuses_a_file_of_another_network_before_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="initial weights file .*missing.pt"):
        load_weights(_pair(0), tmp_path / "missing.pt")
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    target = _pair(1)
    before = target.right.weight.detach().clone()
    with pytest.raises(ValueError, match=r"missing \['left.0.bias'.*unexpected \['0.bias', '0.weight'\]"):
        load_weights(target, tmp_path / "other.pt")
    assert torch.equal(target.right.weight, before)
    wide = _pair(0)
    wide.right = torch.nn.Conv2d(1, 3, 1)
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"right.weight: file \(3, 1, 1, 1\) vs network \(2, 1, 1, 1\)"):
        load_weights(target, tmp_path / "wide.pt")
