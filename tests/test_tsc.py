"""ACTION++ targeted supervised contrast (action.md §5, §7.1, §7.6, §11): loss, class centres and TSCMemory.

Expected values come from hand formulas or naive Python loops written here, never from the code under test.
"""

from __future__ import annotations

import copy
import itertools
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from semizoo.losses import tsc as tsc_module
from semizoo.losses.tsc import (
    centres_cache_path,
    load_or_create_centres,
    regular_simplex_centres,
    tsc_loss,
    uniform_hypersphere_centres,
)
from semizoo.methods.action import TSCMemory

# ---------------------------------------------------------------------------------------------------------------------
# naive references


def _naive_tsc(s, t, y, queue, queue_labels, centres, assignment, temperature, target_weight):
    """Row-by-row Python loop of action.md §5 in float64: returns (loss, L_class, L_target)."""
    s, t, queue, centres = (a.double().tolist() for a in (s, t, queue, centres))
    y, queue_labels, assignment = y.tolist(), queue_labels.tolist(), assignment.tolist()
    n_rows, k = len(s), len(queue_labels)

    def dot(a, b):
        return sum(ai * bi for ai, bi in zip(a, b))

    total_class = total_target = 0.0
    for n in range(n_rows):
        columns = [dot(s[n], t[n])]
        columns += [dot(s[n], [queue[d][j] for d in range(len(queue))]) for j in range(k)]
        columns += [dot(s[n], g) for g in centres]
        columns = [c / temperature for c in columns]
        top = max(columns)
        lse = top + math.log(sum(math.exp(c - top) for c in columns))
        lp = [c - lse for c in columns]
        positives = [j for j in range(k) if queue_labels[j] == y[n]]
        size = 1 + len(positives) + 1
        total_class += (lp[0] + sum(lp[1 + j] for j in positives)) / size
        total_target += lp[1 + k + assignment[y[n]]] / size
    loss_class, loss_target = -total_class / n_rows, -total_target / n_rows
    return loss_class + target_weight * loss_target, loss_class, loss_target


def _unit_rows(*shape):
    return F.normalize(torch.randn(*shape), dim=-1)


def _random_case(n, d, k, n_cls, filled):
    s, t = _unit_rows(n, d), _unit_rows(n, d)
    y = torch.randint(0, n_cls, (n,))
    queue = F.normalize(torch.randn(d, k), dim=0)
    queue_labels = torch.randint(0, n_cls, (k,))
    queue_labels[filled:] = -1
    centres = _unit_rows(n_cls, d)
    assignment = torch.randperm(n_cls)
    return s, t, y, queue, queue_labels, centres, assignment


# ---------------------------------------------------------------------------------------------------------------------
# tsc_loss

# queue_labels, labels, expected |P_n| (by hand: 1 view + queue entries of the same class + 1 centre)
POSITIVE_SETS = [
    pytest.param([-1, -1, -1, -1], [0, 1], [2, 2], id="empty_queue"),
    pytest.param([0, 1, 1, -1, 1], [0, 1], [3, 5], id="mixed_queue"),
    pytest.param([1, 1, 1], [0, 1, 1], [2, 5, 5], id="one_class_fills_queue"),
    pytest.param([0, 0, 1, 1, 0, -1], [1, 0, 0, 1], [4, 5, 5, 4], id="four_rows"),
]


@pytest.mark.parametrize("queue_labels, labels, sizes", POSITIVE_SETS)
@pytest.mark.parametrize("target_weight", [0.1, 0.2])
def test_positive_set_sizes_with_all_logits_zero(queue_labels, labels, sizes, target_weight):
    """s ⟂ everything: every logit is 0, lp = -log M, so L_target = log M · mean 1/|P_n| and
    L_class = log M · mean (1 + #queue positives)/|P_n|: the loss pins |P_n| (2-class toy)."""
    k, n = len(queue_labels), len(labels)
    eye = torch.eye(4)
    s = eye[0].repeat(n, 1)  # (N, 4), orthogonal to e1..e3
    t = eye[1].repeat(n, 1)
    queue = eye[[1 + (j % 3) for j in range(k)]].t()  # (4, K) columns in span(e1, e2, e3)
    centres = eye[[1, 2]]  # (2, 4)
    log_m = math.log(1 + k + 2)
    expected_target = log_m * sum(1 / p for p in sizes) / n
    expected_class = log_m * sum((p - 1) / p for p in sizes) / n  # view + queue positives = |P_n| - 1
    loss, loss_class, loss_target = tsc_loss(
        s,
        t,
        torch.tensor(labels),
        queue,
        torch.tensor(queue_labels),
        centres,
        torch.tensor([1, 0]),
        0.07,
        target_weight,
        return_parts=True,
    )
    assert loss_target.item() == pytest.approx(expected_target, rel=1e-5)
    assert loss_class.item() == pytest.approx(expected_class, rel=1e-5)
    assert loss.item() == pytest.approx(expected_class + target_weight * expected_target, rel=1e-5)


# N, D, K, n_cls, filled queue slots, temperature, target_weight
NAIVE_CASES = [
    pytest.param(6, 5, 7, 2, 4, 0.07, 0.1, id="2cls_partly_filled"),
    pytest.param(8, 4, 5, 4, 5, 0.5, 0.2, id="4cls_full_queue"),
    pytest.param(5, 3, 6, 3, 0, 1.0, 1.0, id="3cls_empty_queue"),
]


@pytest.mark.parametrize("n, d, k, n_cls, filled, temperature, target_weight", NAIVE_CASES)
def test_tsc_loss_equals_naive_loop(n, d, k, n_cls, filled, temperature, target_weight):
    case = _random_case(n, d, k, n_cls, filled)
    loss, loss_class, loss_target = tsc_loss(*case, temperature, target_weight, return_parts=True)
    ref, ref_class, ref_target = _naive_tsc(*case, temperature, target_weight)
    assert loss.item() == pytest.approx(ref, rel=1e-5, abs=1e-6)
    assert loss_class.item() == pytest.approx(ref_class, rel=1e-5, abs=1e-6)
    assert loss_target.item() == pytest.approx(ref_target, rel=1e-5, abs=1e-6)
    assert tsc_loss(*case, temperature, target_weight).item() == pytest.approx(ref, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("target_weight", [0.0, 0.1, 0.2, 1.0, 3.0], ids=lambda w: f"tw{w}")
def test_target_weight_scales_only_the_target_term(target_weight):
    case = _random_case(10, 6, 9, 3, 7)
    base, base_class, base_target = tsc_loss(*case, 0.1, 0.0, return_parts=True)
    loss, loss_class, loss_target = tsc_loss(*case, 0.1, target_weight, return_parts=True)
    assert loss_class.item() == pytest.approx(base_class.item(), rel=1e-6)
    assert loss_target.item() == pytest.approx(base_target.item(), rel=1e-6)
    assert base_target.item() > 0
    assert (loss - base).item() == pytest.approx(target_weight * base_target.item(), rel=1e-5, abs=1e-6)


def test_only_the_student_rows_get_gradients():
    s, t, y, queue, queue_labels, centres, assignment = _random_case(6, 4, 5, 2, 5)
    s, t, queue, centres = (a.clone().requires_grad_(True) for a in (s, t, queue, centres))
    tsc_loss(s, t, y, queue, queue_labels, centres, assignment, 0.07, 0.1).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None and queue.grad is None and centres.grad is None


def _bad(**overrides):
    args = dict(
        feat_s=torch.zeros(4, 3),
        feat_t=torch.zeros(4, 3),
        labels=torch.zeros(4, dtype=torch.long),
        queue=torch.zeros(3, 5),
        queue_labels=torch.zeros(5, dtype=torch.long),
        centres=torch.zeros(2, 3),
        assignment=torch.arange(2),
        temperature=0.07,
        target_weight=0.1,
    )
    args.update(overrides)
    return args


BAD_INPUTS = [
    pytest.param(_bad(feat_t=torch.zeros(4, 2)), r"\(4, 3\) and \(4, 2\)", id="teacher_dim"),
    pytest.param(_bad(labels=torch.zeros(3, dtype=torch.long)), r"\(3,\)", id="labels_length"),
    pytest.param(_bad(queue=torch.zeros(4, 5)), r"\(4, 5\)", id="queue_dim"),
    pytest.param(_bad(queue_labels=torch.zeros(6, dtype=torch.long)), r"\(6,\)", id="queue_labels_length"),
    pytest.param(_bad(centres=torch.zeros(2, 4)), r"\(2, 4\)", id="centres_dim"),
    pytest.param(_bad(assignment=torch.arange(3)), r"\(3,\)", id="assignment_length"),
    pytest.param(_bad(labels=torch.tensor([0, 1, 2, 0])), r"\[0, 2\)", id="label_out_of_range"),
    pytest.param(_bad(temperature=0.0), "temperature", id="zero_temperature"),
]


@pytest.mark.parametrize("kwargs, message", BAD_INPUTS)
def test_tsc_loss_rejects_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tsc_loss(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# class centres


@pytest.mark.parametrize("n", [2, 4], ids=["n2", "n4"])
def test_centres_form_a_regular_simplex(n):
    # t = 0.5, lr = 0.05: converged in 300 steps (at t = 0.07 Adam's eps stalls the gradients, see the docstring)
    centres = uniform_hypersphere_centres(n, 8, steps=300, lr=0.05, t=0.5, seed=0)
    assert isinstance(centres, torch.Tensor) and centres.shape == (n, 8) and centres.dtype == torch.float32
    assert torch.allclose(centres.norm(dim=1), torch.ones(n), atol=1e-5)
    gram = centres.double() @ centres.double().t()
    off_diagonal = gram[~torch.eye(n, dtype=torch.bool)]
    assert (off_diagonal + 1.0 / (n - 1)).abs().max().item() < 0.02


def test_centres_at_default_temperature_lower_the_energy_and_are_seeded():
    start = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(3)).double(), dim=1)

    def energy(x):  # mean_i log Σ_j exp(x_i·x_j / 0.07), by a loop
        x = x.double().tolist()
        return sum(math.log(sum(math.exp(sum(a * b for a, b in zip(xi, xj)) / 0.07) for xj in x)) for xi in x) / 4

    centres = uniform_hypersphere_centres(4, 8, steps=100, seed=3)
    assert torch.allclose(centres.norm(dim=1), torch.ones(4), atol=1e-5)
    assert energy(centres) < energy(start) - 1e-9
    assert torch.equal(centres, uniform_hypersphere_centres(4, 8, steps=100, seed=3))
    assert not torch.equal(centres, uniform_hypersphere_centres(4, 8, steps=100, seed=4))


def _naive_adam_trajectory(n, dim, steps, lr, t, seed):
    """(energy, x̂) before each step of a hand-written Adam (betas 0.9/0.999, eps 1e-8) on the uniformity energy."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)).double()
    m, v, seen = torch.zeros_like(x), torch.zeros_like(x), []
    for i in range(1, steps + 1):
        leaf = x.clone().requires_grad_(True)
        x_hat = leaf / leaf.norm(dim=1, keepdim=True)
        energy = torch.logsumexp(x_hat @ x_hat.t() / t, dim=1).mean()
        energy.backward()
        seen.append((energy.item(), x_hat.detach()))
        m, v = 0.9 * m + 0.1 * leaf.grad, 0.999 * v + 0.001 * leaf.grad**2
        x = x - lr * (m / (1 - 0.9**i)) / ((v / (1 - 0.999**i)).sqrt() + 1e-8)
    return seen


def test_centres_are_the_lowest_energy_iterate_not_the_last():
    seen = _naive_adam_trajectory(4, 8, steps=3, lr=1.0, t=0.5, seed=0)
    best = min(range(3), key=lambda i: seen[i][0])
    assert best != 2  # precondition: the last step overshoots
    centres = uniform_hypersphere_centres(4, 8, steps=3, lr=1.0, t=0.5, seed=0)
    assert torch.allclose(centres.double(), seen[best][1], atol=1e-6)


def test_centres_reject_bad_sizes():
    with pytest.raises(ValueError, match="steps=0"):
        uniform_hypersphere_centres(2, 8, steps=0)


def test_centre_cache_is_created_then_reused(tmp_path, monkeypatch):
    directory = tmp_path / "models"  # created on demand
    first = load_or_create_centres(3, 8, directory, steps=50)
    path = directory / "tsc_centres_3x8.npy"
    assert centres_cache_path(3, 8, directory) == path and path.is_file()
    assert np.array_equal(np.load(path), first.numpy())
    stamp = path.stat().st_mtime_ns

    def must_not_run(*args, **kwargs):
        raise AssertionError("centres recomputed although the cache file exists")

    monkeypatch.setattr(tsc_module, "uniform_hypersphere_centres", must_not_run)
    second = load_or_create_centres(3, 8, directory, steps=50)
    assert torch.equal(first, second) and second.dtype == torch.float32
    assert path.stat().st_mtime_ns == stamp
    assert sorted(os.listdir(directory)) == ["tsc_centres_3x8.npy"]


def test_centre_cache_is_written_atomically(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        assert os.path.isfile(src) and not os.path.exists(dst)  # fully written before it takes the final name
        calls.append((os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(tsc_module.os, "replace", spy)
    load_or_create_centres(2, 4, tmp_path, steps=10)
    final = os.fspath(tmp_path / "tsc_centres_2x4.npy")
    assert len(calls) == 1 and calls[0][1] == final
    assert os.path.dirname(calls[0][0]) == os.fspath(tmp_path) and calls[0][0] != final
    assert os.listdir(tmp_path) == ["tsc_centres_2x4.npy"]


def test_failed_cache_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tsc_module.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        load_or_create_centres(2, 4, tmp_path, steps=10)
    assert os.listdir(tmp_path) == []


def test_cached_centres_of_the_wrong_shape_raise(tmp_path):
    np.save(tmp_path / "tsc_centres_2x4.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        load_or_create_centres(2, 4, tmp_path)


def test_memory_makes_and_caches_its_centres(tmp_path):
    memory = TSCMemory(3, 6, K=8, centre_steps=20, centre_cache_dir=tmp_path)
    assert np.array_equal(np.load(tmp_path / "tsc_centres_3x6.npy"), memory.centres.numpy())


# ---------------------------------------------------------------------------------------------------------------------
# TSCMemory


def _memory(n_cls=3, dim=4, K=12, q=5, **kwargs):
    return TSCMemory(n_cls, dim, K=K, centres=_unit_rows(n_cls, dim), queries_per_class=q, **kwargs)


def test_memory_initial_state():
    memory = _memory(n_cls=3, dim=5, K=7)
    assert memory.queue.shape == (5, 7) and torch.allclose(memory.queue.norm(dim=0), torch.ones(7), atol=1e-5)
    assert torch.equal(memory.queue_labels, torch.full((7,), -1)) and int(memory.queue_ptr) == 0
    assert memory.centroids.shape == (3, 5) and torch.allclose(memory.centroids.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (memory.temperature, memory.target_weight, memory.queries_per_class) == (0.07, 0.1, 5)
    assert set(dict(memory.named_buffers())) == {
        "centres",
        "queue",
        "queue_labels",
        "queue_ptr",
        "centroids",
        "assignment",
    }


def _coded_maps(labels, dim=3):
    """Features whose channel 0 is the flat pixel id; the teacher map is 2·student + 1."""
    b, spatial = labels.shape[0], labels.shape[1:]
    ids = torch.arange(labels.numel(), dtype=torch.float32).reshape(b, 1, *spatial)
    feat_s = torch.cat([ids] + [torch.randn(b, 1, *spatial) for _ in range(dim - 1)], dim=1)
    return feat_s, 2 * feat_s + 1


def test_sampling_draws_queries_per_present_class_aligned_and_shuffled():
    labels = torch.zeros(2, 6, 5, dtype=torch.long)
    labels[0, :2] = 2  # 10 pixels of class 2
    labels[1, 3, 4] = 1  # a single pixel of class 1
    feat_s, feat_t = _coded_maps(labels)
    memory = _memory(n_cls=3, dim=3, q=256)
    s, t, y = memory.sample(feat_s, feat_t, labels, generator=torch.Generator().manual_seed(0))
    assert s.shape == (768, 3) and t.shape == (768, 3) and y.shape == (768,)
    assert torch.equal(t, 2 * s + 1)  # teacher row of the same pixel
    flat = labels.reshape(-1)
    ids = s[:, 0].long()
    assert torch.equal(y, flat[ids])  # label of that pixel
    assert [int((y == c).sum()) for c in range(3)] == [256, 256, 256]
    assert set(ids[y == 1].tolist()) == {1 * 30 + 3 * 5 + 4}
    assert len(set(ids[y == 2].tolist())) > 5  # uniform with replacement over the 10 pixels
    assert (y[1:] != y[:-1]).sum() > 100  # randomly permuted, not grouped by class


def test_sampling_is_uniform_within_a_class():
    labels = torch.tensor([[0, 1, 1, 0, 1, 0]])
    feat_s, feat_t = _coded_maps(labels)
    memory = _memory(n_cls=2, dim=3, q=6000)
    s, _, y = memory.sample(feat_s, feat_t, labels, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(s[y == 1, 0].long(), minlength=6)
    assert counts[[0, 3, 5]].sum() == 0
    assert torch.allclose(counts[[1, 2, 4]].float() / 6000, torch.full((3,), 1 / 3), atol=0.03)


# labels builder, expected class of the fallback rows
FALLBACKS = [
    pytest.param(lambda: torch.zeros(2, 8, 8, dtype=torch.long), 0, id="2d_background_only"),
    pytest.param(lambda: torch.ones(2, 1, 4, 4, 3, dtype=torch.long), 1, id="3d_channel_dim_one_class"),
]


@pytest.mark.parametrize("make_labels, cls", FALLBACKS)
def test_single_class_fallback_samples_256_pixels_and_runs(make_labels, cls):
    labels = make_labels()
    spatial = labels.shape[2:] if labels.dim() == 5 else labels.shape[1:]
    feat_s = torch.randn(labels.shape[0], 4, *spatial, requires_grad=True)
    feat_t = torch.randn(labels.shape[0], 4, *spatial)
    memory = TSCMemory(2, 4, K=1000, centres=_unit_rows(2, 4))  # default queries_per_class = 256
    s, t, y = memory.sample(feat_s, feat_t, labels, generator=torch.Generator().manual_seed(0))
    assert s.shape == (256, 4) and t.shape == (256, 4) and torch.equal(y, torch.full((256,), cls))
    rows_per_sample = torch.isin(s.detach(), feat_s.detach()[1].reshape(4, -1).t()).all(1).sum()
    assert 0 < rows_per_sample < 256  # drawn over all pixels of the batch, not one sample
    loss = memory(feat_s, feat_t, labels, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    assert feat_s.grad.abs().sum() > 0
    assert int(memory.queue_ptr) == 256 and int((memory.queue_labels == cls).sum()) == 256


def test_sampling_draw_order_is_pinned():
    """Documented CPU draws: fallback one randint over all B·P pixels (no permutation); otherwise a randint per
    present class in increasing order, then one randperm."""
    memory = _memory(n_cls=3, dim=3, q=4)
    single = torch.full((2, 3, 3), 2)
    feat_s, feat_t = _coded_maps(single)
    s, _, _ = memory.sample(feat_s, feat_t, single, generator=torch.Generator().manual_seed(5))
    assert s[:, 0].long().tolist() == torch.randint(18, (4,), generator=torch.Generator().manual_seed(5)).tolist()

    two = torch.tensor([[[0, 2, 0], [2, 2, 0]]])  # class 0 at ids 0, 2, 5; class 2 at ids 1, 3, 4
    feat_s, feat_t = _coded_maps(two)
    s, _, _ = memory.sample(feat_s, feat_t, two, generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    ids = [[0, 2, 5][i] for i in torch.randint(3, (4,), generator=generator).tolist()]
    ids += [[1, 3, 4][i] for i in torch.randint(3, (4,), generator=generator).tolist()]
    expected = [ids[i] for i in torch.randperm(8, generator=generator).tolist()]
    assert s[:, 0].long().tolist() == expected


def test_centroid_update_formula_by_hand():
    memory = TSCMemory(3, 2, K=4, centres=torch.eye(3, 2))
    memory.centroids.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    feats = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    memory.update_centroids(feats, labels)
    # class 0: batch mean (0, 1); 0.9·(1, 0) + 0.1·(0, 1) = (0.9, 0.1)
    expected_0 = [0.9 / math.sqrt(0.82), 0.1 / math.sqrt(0.82)]
    # class 1: batch mean (0.5, 0.5) -> (r, r), r = 1/√2; 0.9·(0, 1) + 0.1·(r, r)
    r = 1 / math.sqrt(2)
    v = (0.1 * r, 0.9 + 0.1 * r)
    expected_1 = [v[0] / math.hypot(*v), v[1] / math.hypot(*v)]
    assert memory.centroids[0].tolist() == pytest.approx(expected_0, abs=1e-6)
    assert memory.centroids[1].tolist() == pytest.approx(expected_1, abs=1e-6)
    assert memory.centroids[2].tolist() == pytest.approx([0.6, 0.8], abs=1e-7)  # not sampled: unchanged


def _brute_force_best(similarity):
    n = len(similarity)
    return max(sum(similarity[c][p[c]] for c in range(n)) for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("n_cls", [3, 4], ids=["3cls", "4cls"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_assignment_is_the_best_permutation(n_cls, seed):
    torch.manual_seed(seed)
    memory = TSCMemory(n_cls, 6, K=4, centres=_unit_rows(n_cls, 6))
    memory.centroids.copy_(_unit_rows(n_cls, 6))
    similarity = (memory.centroids.double() @ memory.centres.double().t()).tolist()
    assignment = memory.assign()
    assert assignment.dtype == torch.long and sorted(assignment.tolist()) == list(range(n_cls))
    achieved = sum(similarity[c][assignment[c]] for c in range(n_cls))
    assert achieved == pytest.approx(_brute_force_best(similarity), abs=1e-9)
    assert torch.equal(memory.assignment, assignment)


def test_assignment_is_not_greedy():
    # centres = unit axes, so centroid rows are the similarity rows; greedy/identity give 1.0, optimum 1.7
    memory = TSCMemory(3, 3, K=4, centres=torch.eye(3))
    memory.centroids.copy_(torch.tensor([[0.9, 0.8, 0.0], [0.8, 0.0, 0.0], [0.0, 0.0, 0.1]]))
    assert memory.assign().tolist() == [1, 0, 2]


# K, keys per call, calls
QUEUE_CASES = [
    pytest.param(8, 4, 3, id="n_divides_k"),
    pytest.param(10, 4, 4, id="wraps_n_not_dividing_k"),
    pytest.param(7, 3, 5, id="wraps_twice"),
    pytest.param(5, 7, 2, id="n_exceeds_k"),
]


@pytest.mark.parametrize("K, n, calls", QUEUE_CASES)
def test_queue_is_a_wrapping_fifo(K, n, calls):
    memory = TSCMemory(3, 2, K=K, centres=_unit_rows(3, 2))
    queue = [list(col) for col in memory.queue.t().tolist()]
    labels, ptr = [-1] * K, 0
    for _ in range(calls):
        keys, key_labels = torch.randn(n, 2), torch.randint(0, 3, (n,))
        memory.enqueue(keys, key_labels)
        for key, label in zip(keys.tolist(), key_labels.tolist()):  # one entry at a time
            queue[ptr], labels[ptr] = key, label
            ptr = (ptr + 1) % K
    assert int(memory.queue_ptr) == ptr
    assert memory.queue_labels.tolist() == labels
    assert torch.allclose(memory.queue.t(), torch.tensor(queue))


def test_forward_runs_the_steps_in_order():
    """sample -> centroid update -> Hungarian -> loss on the old queue -> enqueue, against a hand path."""
    memory = _memory(n_cls=3, dim=4, K=20, q=3, temperature=0.2, target_weight=0.3)
    memory.enqueue(_unit_rows(8, 4), torch.tensor([0, 1, 2, 2, 1, 0, 1, 1]))  # partly filled, ptr 8
    labels = torch.randint(0, 3, (2, 1, 5, 5))
    labels[0, 0, 0, :3] = torch.tensor([0, 1, 2])  # all three classes present
    feat_s = torch.randn(2, 4, 5, 5, requires_grad=True)
    feat_t = torch.randn(2, 4, 5, 5, requires_grad=True)
    before = copy.deepcopy(memory)

    s, t, y = before.sample(feat_s, feat_t, labels, generator=torch.Generator().manual_seed(7))
    s, t = s / s.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)
    centroids = before.centroids.clone()
    for c in range(3):  # every class is sampled
        mean = s.detach()[y == c].mean(0)
        mixed = 0.9 * centroids[c] + 0.1 * mean / mean.norm()
        centroids[c] = mixed / mixed.norm()
    similarity = (centroids.double() @ before.centres.double().t()).tolist()
    best = max(itertools.permutations(range(3)), key=lambda p: sum(similarity[c][p[c]] for c in range(3)))
    expected, expected_class, expected_target = _naive_tsc(
        s, t, y, before.queue, before.queue_labels, before.centres, torch.tensor(best), 0.2, 0.3
    )

    loss, loss_class, loss_target = memory(
        feat_s, feat_t, labels, generator=torch.Generator().manual_seed(7), return_parts=True
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert (loss_class.item(), loss_target.item()) == pytest.approx((expected_class, expected_target), rel=1e-5)
    assert torch.allclose(memory.centroids, centroids, atol=1e-6)
    assert memory.assignment.tolist() == list(best)
    assert int(memory.queue_ptr) == 8 + 9
    assert torch.allclose(memory.queue[:, 8:17].t(), t.detach(), atol=1e-6)
    assert torch.equal(memory.queue_labels[8:17], y) and torch.equal(memory.queue[:, 17:], before.queue[:, 17:])
    loss.backward()
    assert feat_s.grad.abs().sum() > 0 and feat_t.grad is None
    # the temperature argument overrides the attribute for one call
    again = copy.deepcopy(before)
    assert again(feat_s, feat_t, labels, temperature=0.2, generator=torch.Generator().manual_seed(7)).item() == (
        pytest.approx(expected, rel=1e-5)
    )


def test_state_round_trips_through_weights_only_load(tmp_path):
    memory = _memory(n_cls=3, dim=4, K=10, q=2)
    labels = torch.randint(0, 3, (2, 6, 6))
    feats = [torch.randn(2, 4, 6, 6) for _ in range(4)]
    memory(feats[0], feats[1], labels, generator=torch.Generator().manual_seed(0))
    memory(feats[2], feats[3], labels, generator=torch.Generator().manual_seed(1))
    torch.save(memory.state_dict(), tmp_path / "tsc.pt")
    state = torch.load(tmp_path / "tsc.pt", weights_only=True)
    restored = TSCMemory(3, 4, K=10, centres=torch.zeros(3, 4), queries_per_class=2)
    restored.load_state_dict(state)
    for name, buffer in memory.named_buffers():
        assert torch.equal(buffer, getattr(restored, name)), name
    a = memory(feats[0], feats[3], labels, generator=torch.Generator().manual_seed(2))
    b = restored(feats[0], feats[3], labels, generator=torch.Generator().manual_seed(2))
    assert a.item() == b.item() and torch.equal(memory.queue, restored.queue)


BAD_MEMORY_INPUTS = [
    pytest.param(torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4), torch.zeros(2, 4, 4), r"\(2, 5, 4, 4\)", id="dim"),
    pytest.param(torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 3), torch.zeros(2, 4, 4), r"\(2, 4, 4, 3\)", id="pair"),
    pytest.param(torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.zeros(2, 4, 5), r"\(2, 4, 5\)", id="labels"),
    pytest.param(torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.full((2, 4, 4), 3), "n_cls=3", id="range"),
]


@pytest.mark.parametrize("feat_s, feat_t, labels, message", BAD_MEMORY_INPUTS)
def test_memory_rejects_bad_inputs(feat_s, feat_t, labels, message):
    with pytest.raises(ValueError, match=message):
        _memory(n_cls=3, dim=4)(feat_s, feat_t, labels)


def test_memory_rejects_centres_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 5\)"):
        TSCMemory(3, 4, K=8, centres=torch.zeros(3, 5))


@pytest.mark.parametrize("n, dim", [(2, 128), (4, 496), (3, 3), (1, 8)])
def test_regular_simplex_centres_are_the_exact_uniform_configuration(n, dim):
    """Unit rows, every pairwise cosine -1/(n-1) (the optimum the official optimisation approximates), seeded."""
    centres = regular_simplex_centres(n, dim, seed=3)
    assert centres.shape == (n, dim) and centres.dtype == torch.float32
    assert torch.allclose(centres.norm(dim=1), torch.ones(n), atol=1e-6)
    cosines = centres @ centres.t()
    off_diagonal = cosines[~torch.eye(n, dtype=torch.bool)]
    if n > 1:
        assert torch.allclose(off_diagonal, torch.full_like(off_diagonal, -1.0 / (n - 1)), atol=1e-6)
    assert torch.equal(centres, regular_simplex_centres(n, dim, seed=3))
    assert not torch.allclose(centres, regular_simplex_centres(n, dim, seed=4))
    with pytest.raises(ValueError, match="1 <= n <= dim"):
        regular_simplex_centres(dim + 1, dim)


def test_tsc_memory_takes_simplex_centres_without_a_cache_file(tmp_path):
    memory = TSCMemory(2, 16, K=8, centre_cache_dir=tmp_path, centre_method="simplex")
    assert torch.dot(memory.centres[0], memory.centres[1]).item() == pytest.approx(-1.0, abs=1e-6)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="centre_method"):
        TSCMemory(2, 16, K=8, centre_method="random")
