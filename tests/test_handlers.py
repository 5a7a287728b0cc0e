import random

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from semizoo.handlers import (
    EMATeacherHandler,
    RNGState,
    ema_decay,
    ema_update_,
    latest_checkpoint,
    poly_lr,
    poly_scheduler,
    step_lr,
    step_scheduler,
)


def _lrs(scheduler, optimizer, n):
    values = []
    for _ in range(n):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_poly_scheduler_matches_ssl4mis_formula():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    values = _lrs(poly_scheduler(optimizer, max_iterations=50, power=0.9), optimizer, 50)
    expected = [0.01 * (1 - i / 50) ** 0.9 for i in range(50)]
    assert values == pytest.approx(expected, rel=1e-6)
    assert [poly_lr(i, 0.01, 50) for i in range(50)] == pytest.approx(expected, rel=1e-12)


def test_step_scheduler_matches_uamt_formula():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    values = _lrs(step_scheduler(optimizer, step_size=25, gamma=0.1), optimizer, 60)
    assert values[:25] == pytest.approx([0.01] * 25)
    assert values[25:50] == pytest.approx([1e-3] * 25)
    assert values[50:] == pytest.approx([1e-4] * 10)
    assert step_lr(2499, 0.01, 2500) == 0.01 and step_lr(2500, 0.01, 2500) == pytest.approx(1e-3)


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


def test_ema_handler_updates_after_each_iteration():
    student, teacher = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    start = teacher.weight.detach().clone()
    engine = Engine(lambda e, b: None)
    EMATeacherHandler(teacher, student, decay=0.9, warmup=False).attach(engine)
    engine.run([0, 1], max_epochs=1)
    expected = 0.81 * start + (1 - 0.81) * student.weight.detach()
    assert torch.allclose(teacher.weight, expected, atol=1e-6)


def test_ema_mismatch_raises():
    with pytest.raises(ValueError, match="parameters differ"):
        ema_update_(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2)), 0.5)


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    random.gauss(0, 1)
    torch.save({"rng": RNGState().state_dict()}, tmp_path / "c.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    RNGState().load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item())
    assert got == expected


def test_latest_checkpoint_picks_highest_iteration(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for name in ["checkpoint_iteration=200.pt", "checkpoint_iteration=1000.pt", "checkpoint_iteration=400.pt"]:
        (tmp_path / name).write_bytes(b"x")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_iteration=1000.pt")


def test_atomic_checkpoint_saver_writes_complete_readable_files(tmp_path):
    from semizoo.handlers import AtomicCheckpointSaver

    net = torch.nn.Linear(3, 2)
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(
        str(tmp_path),
        {"model": net},
        save_final=True,
        final_filename="model_final.pt",
        save_interval=2,
        epoch_level=False,
        n_saved=1,
    )
    saver.attach(engine)
    engine.run([0, 1, 2, 3], max_epochs=1)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model_final.pt", "model_iteration=4.pt"]  # no temporary files left, old interval removed
    state = torch.load(tmp_path / "model_final.pt", weights_only=True)
    assert torch.equal(state["weight"], net.weight)
    assert (tmp_path / "model_final.pt").stat().st_mode & 0o777 == 0o644
    for checkpoint in (saver._final_checkpoint, saver._interval_checkpoint):
        assert checkpoint.save_handler._atomic


def test_every_filters_events():
    from semizoo.handlers import every

    keep = every(50)
    assert [i for i in range(1, 201) if keep(None, i)] == [50, 100, 150, 200]
    with pytest.raises(ValueError, match="interval"):
        every(0)
