import math

import pytest
import torch
from semizoo.schedules import (
    linear_rampup,
    poly_lr,
    poly_scheduler,
    sigmoid_rampup,
    step_lr,
    step_scheduler,
    stepped_sigmoid_rampup,
    wssdl_alpha,
)


@pytest.mark.parametrize(
    "current, length, expected",
    [
        (0, 200, math.exp(-5.0)),
        (100, 200, math.exp(-5.0 * 0.25)),
        (200, 200, 1.0),
        (250, 200, 1.0),
        (-3, 200, math.exp(-5.0)),
        (7, 0, 1.0),
    ],
    ids=["start", "half", "end", "past_end", "negative_clipped", "no_rampup"],
)
def test_sigmoid_rampup_values(current, length, expected):
    assert sigmoid_rampup(current, length) == pytest.approx(expected, rel=1e-12)


def test_sigmoid_rampup_rejects_negative_length():
    with pytest.raises(ValueError, match="rampup_length"):
        sigmoid_rampup(1, -1)


@pytest.mark.parametrize(
    "iteration, max_weight, length, offset, expected",
    [
        # LA (SS-Net): lam_max 1, R 40, offset 1 (ssnet.md §11)
        (148, 1.0, 40, 1, math.exp(-5.0)),
        (149, 1.0, 40, 1, math.exp(-5.0 * (1 - 1 / 40) ** 2)),
        (5999, 1.0, 40, 1, 1.0),
        # ACDC (SS-Net / SSL4MIS): lam_max 0.1, R 200, offset 0
        (149, 0.1, 200, 0, 0.1 * math.exp(-5.0)),
        (150, 0.1, 200, 0, 0.1 * math.exp(-5.0 * (1 - 1 / 200) ** 2)),
        (29999, 0.1, 200, 0, 0.1 * math.exp(-5.0 / 200**2)),
    ],
    ids=["la_148", "la_149", "la_5999", "acdc_149", "acdc_150", "acdc_29999"],
)
def test_stepped_sigmoid_rampup(iteration, max_weight, length, offset, expected):
    assert stepped_sigmoid_rampup(iteration, max_weight, length, period=150, offset=offset) == pytest.approx(
        expected, rel=1e-12
    )


def test_stepped_rampup_is_constant_within_a_period():
    values = {stepped_sigmoid_rampup(i, 1.0, 40) for i in range(300, 450)}
    assert len(values) == 1
    assert stepped_sigmoid_rampup(450, 1.0, 40) > values.pop()


def test_linear_rampup():
    assert linear_rampup(5, 10) == 0.5
    assert linear_rampup(20, 10) == 1.0
    assert linear_rampup(3, 0) == 1.0


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.01), (1999, 0.01), (2000, 0.109), (40000, 0.8796391), (60000, 0.9580328)],
)
def test_wssdl_alpha(step, expected):
    assert wssdl_alpha(step) == pytest.approx(expected, abs=5e-8)


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
