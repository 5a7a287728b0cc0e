import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import Dataset
from monai.transforms import Compose, RandGaussianNoised
from semizoo.data import (
    DistributedTwoStreamBatchSampler,
    IndependentTwoStreamBatchSampler,
    SingleStreamBatchSampler,
    TwoStreamBatchSampler,
    two_stream_loader,
)
from semizoo.data.samplers import item_seeds

PRIMARY = list(range(10))
SECONDARY = list(range(10, 33))
UNLABELED_12 = list(range(12, 40))


def test_two_stream_batch_composition_and_length():
    sampler = TwoStreamBatchSampler(PRIMARY, SECONDARY, batch_size=5, secondary_batch_size=2, seed=1)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 10 // 3
    for batch in batches:
        assert len(batch) == 5
        assert all(i in PRIMARY for i in batch[:3])
        assert all(i in SECONDARY for i in batch[3:])


def test_no_labeled_repeats_within_an_epoch_and_fresh_permutation_per_epoch():
    sampler = TwoStreamBatchSampler(PRIMARY, SECONDARY, batch_size=4, secondary_batch_size=2, seed=3)
    epochs = [list(itertools.chain.from_iterable(b[:2] for b in sampler)) for _ in range(4)]
    for labeled in epochs:
        assert len(labeled) == len(set(labeled)) == 10
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled between epochs


def test_secondary_stream_walks_permutations():
    # 23 unlabeled, 2 per batch, 10 batches = 20 draws from one permutation: no repeats
    sampler = TwoStreamBatchSampler(list(range(20)), SECONDARY, batch_size=4, secondary_batch_size=2, seed=0)
    unlabeled = list(itertools.chain.from_iterable(b[2:] for b in sampler))
    assert len(unlabeled) == 20 and len(set(unlabeled)) == 20


def test_secondary_stream_restarts_each_epoch_with_a_new_permutation():
    sampler = TwoStreamBatchSampler(PRIMARY, list(range(10, 16)), batch_size=2, secondary_batch_size=1, seed=0)
    first = [b[1] for b in sampler]
    second = [b[1] for b in sampler]
    assert first != second
    assert len(set(first[:6])) == 6  # the first 6 draws form a permutation


def test_seeded_sampler_is_deterministic_and_seed_dependent():
    def draw(seed):
        return list(TwoStreamBatchSampler(PRIMARY, SECONDARY, 4, 2, seed=seed))

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


def test_unseeded_sampler_follows_torch_seed():
    torch.manual_seed(11)
    first = list(TwoStreamBatchSampler(PRIMARY, SECONDARY, 4, 2))
    torch.manual_seed(11)
    assert list(TwoStreamBatchSampler(PRIMARY, SECONDARY, 4, 2)) == first


def test_state_dict_resumes_mid_epoch_exactly():
    reference = TwoStreamBatchSampler(PRIMARY, SECONDARY, 4, 2, seed=9)
    full = [b for _ in range(3) for b in reference]
    sampler = TwoStreamBatchSampler(PRIMARY, SECONDARY, 4, 2, seed=9)
    consumed = list(itertools.islice(iter(sampler), 3))  # epoch 0: 3 of 5 batches
    state = sampler.state_dict()
    resumed = TwoStreamBatchSampler(PRIMARY, SECONDARY, 4, 2, seed=123)
    resumed.load_state_dict(state)
    rest = [b for _ in range(3) for b in resumed][: len(full) - 3]
    assert consumed + rest == full


def test_set_epoch_regenerates_that_epoch():
    sampler = TwoStreamBatchSampler(PRIMARY, SECONDARY, 4, 2, seed=2)
    epoch0, epoch1 = list(sampler), list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) == epoch1
    sampler.set_epoch(0)
    assert list(sampler) == epoch0


def test_too_small_streams_raise():
    with pytest.raises(ValueError, match="primary stream has 2 indices"):
        TwoStreamBatchSampler([0, 1], SECONDARY, batch_size=5, secondary_batch_size=2)
    with pytest.raises(ValueError, match="secondary stream"):
        TwoStreamBatchSampler(PRIMARY, [10], batch_size=5, secondary_batch_size=2)


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_shards_are_disjoint_and_union_the_global_batch(world):
    global_sampler = TwoStreamBatchSampler(list(range(12)), UNLABELED_12, 3 * world, 1 * world, seed=4)
    shards = [
        DistributedTwoStreamBatchSampler(list(range(12)), UNLABELED_12, 3, 1, num_replicas=world, rank=r, seed=4)
        for r in range(world)
    ]
    assert all(len(s) == len(global_sampler) == 12 // (2 * world) for s in shards)
    for global_batch, *rank_batches in zip(global_sampler, *shards):
        labeled = [i for b in rank_batches for i in b[:2]]
        unlabeled = [i for b in rank_batches for i in b[2:]]
        assert all(len(b) == 3 for b in rank_batches)
        assert len(set(labeled)) == len(labeled) and len(set(unlabeled)) == len(unlabeled)
        assert sorted(labeled) == sorted(global_batch[: 2 * world])
        assert sorted(unlabeled) == sorted(global_batch[2 * world :])
        assert all(i < 12 for i in labeled) and all(i >= 12 for i in unlabeled)


def test_distributed_sampler_counts_its_own_epochs():
    sampler = DistributedTwoStreamBatchSampler(PRIMARY, SECONDARY, 3, 1, num_replicas=2, rank=0, seed=0)
    first, second = list(sampler), list(sampler)
    assert sampler.epoch == 2 and first != second


def test_independent_streams_length_and_replacement():
    sampler = IndependentTwoStreamBatchSampler([0, 1, 2], list(range(3, 23)), 4, 2, replacement=False, seed=0)
    batches = list(sampler)
    assert len(batches) == 20 // 2
    labeled = Counter(i for b in batches for i in b[:2])
    assert set(labeled) == {0, 1, 2}  # chained permutations visit every labeled index
    assert max(labeled.values()) - min(labeled.values()) <= 1
    with_replacement = IndependentTwoStreamBatchSampler([0, 1, 2], list(range(3, 23)), 4, 2, seed=0)
    assert len(list(with_replacement)) == 10


def test_single_stream_drops_partial_batch():
    sampler = SingleStreamBatchSampler(range(7), 3, seed=0)
    batches = list(sampler)
    assert len(batches) == 2 and len(set(i for b in batches for i in b)) == 6


class _Records(torch.utils.data.Dataset):
    def __init__(self, n, offset, labeled):
        self.n, self.offset, self.labeled = n, offset, labeled

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        item = {"image": torch.full((1, 4, 4), float(self.offset + i))}
        if self.labeled:
            item["label"] = torch.zeros((1, 4, 4), dtype=torch.long)
        return item


def test_two_stream_loader_splits_streams_with_different_keys():
    loader = two_stream_loader(
        _Records(6, 0, True), _Records(9, 100, False), batch_size=4, secondary_batch_size=2, seed=0
    )
    assert len(loader) == 3
    for labeled, unlabeled in loader:
        assert labeled["image"].shape == (2, 1, 4, 4) and "label" in labeled
        assert unlabeled["image"].shape == (2, 1, 4, 4) and "label" not in unlabeled
        assert (labeled["image"][:, 0, 0, 0] < 100).all() and (unlabeled["image"][:, 0, 0, 0] >= 100).all()


def test_two_stream_loader_without_unlabeled_yields_none(caplog):
    loader = two_stream_loader(_Records(6, 0, True), None, batch_size=4, secondary_batch_size=2, seed=0)
    batches = list(loader)
    assert len(batches) == 3
    assert all(u is None and lab["image"].shape[0] == 2 for lab, u in batches)
    assert "no unlabeled data" in caplog.text


def test_two_stream_loader_state_counts_delivered_batches_with_workers():
    kwargs = dict(batch_size=3, secondary_batch_size=1, seed=7)
    reference = [
        b[0]["image"][:, 0, 0, 0].tolist()
        for b in two_stream_loader(_Records(8, 0, True), _Records(8, 50, False), **kwargs)
    ]
    loader = two_stream_loader(_Records(8, 0, True), _Records(8, 50, False), num_workers=2, **kwargs)
    iterator = iter(loader)
    first = [next(iterator)[0]["image"][:, 0, 0, 0].tolist() for _ in range(2)]
    state = loader.state_dict()
    del iterator
    resumed = two_stream_loader(_Records(8, 0, True), _Records(8, 50, False), **kwargs)
    resumed.load_state_dict(state)
    rest = [b[0]["image"][:, 0, 0, 0].tolist() for b in resumed]
    assert state["position"] == 2
    assert first + rest == reference


def test_two_stream_loader_independent_and_distributed():
    loader = two_stream_loader(
        _Records(4, 0, True), _Records(10, 100, False), 4, 2, independent=True, distributed=True, num_replicas=2, rank=1
    )
    assert len(loader) == 10 // 4
    labeled, unlabeled = next(iter(loader))
    assert labeled["image"].shape[0] == 2 and unlabeled["image"].shape[0] == 2


def test_two_stream_loader_rejects_conflicting_kwargs():
    with pytest.raises(ValueError, match="shuffle"):
        two_stream_loader(_Records(4, 0, True), None, 2, 1, shuffle=True)
    with pytest.raises(ValueError, match="no labeled items"):
        two_stream_loader(_Records(4, 0, True), None, 2, 2)


def _noisy(values: range) -> Dataset:
    """Items ``{"x": zeros, "id": i}`` whose ``x`` a random transform fills with noise from its own RandomState."""
    data = [{"x": np.zeros((1, 3), dtype=np.float32), "id": i} for i in values]
    return Dataset(data, transform=Compose([RandGaussianNoised(keys="x", prob=1.0)]))


def _draws(loader, count: int) -> list[tuple[torch.Tensor, ...]]:
    """The first ``count`` batches as (labeled ids, labeled noise, unlabeled ids, unlabeled noise)."""
    return [(lab["id"], lab["x"], unl["id"], unl["x"]) for lab, unl in itertools.islice(iter(loader), count)]


def _assert_same_draws(first, second) -> None:
    assert len(first) == len(second)
    for one, other in zip(first, second):
        assert all(torch.equal(a, b) for a, b in zip(one, other))


def test_item_seeds_are_a_pure_function_of_the_batch_position():
    assert item_seeds(7, 2, 3, 4) == item_seeds(7, 2, 3, 4)
    assert len(set(item_seeds(7, 2, 3, 4))) == 4
    assert item_seeds(7, 2, 3, 4) != item_seeds(7, 2, 4, 4) != item_seeds(7, 3, 3, 4)
    sampler = TwoStreamBatchSampler(PRIMARY, SECONDARY, batch_size=4, secondary_batch_size=2, seed=5, seed_items=True)
    plain = TwoStreamBatchSampler(PRIMARY, SECONDARY, batch_size=4, secondary_batch_size=2, seed=5)
    for position, (seeded, batch) in enumerate(zip(sampler, plain)):
        assert [index for index, _ in seeded] == batch
        assert [seed for _, seed in seeded] == item_seeds(5, 0, position, 4)


def test_augmentation_is_the_same_with_workers_and_after_a_resume():
    def loader(**kwargs):
        return two_stream_loader(_noisy(range(8)), _noisy(range(8, 20)), 4, 2, seed=3, **kwargs)

    reference = _draws(loader(num_workers=0), 6)  # two epochs of 4 // 2 labeled batches and then some
    assert not torch.equal(reference[0][1], reference[2][1]), "the noise must differ between batches"
    _assert_same_draws(reference, _draws(loader(num_workers=2), 6))
    interrupted = loader()
    _draws(interrupted, 3)
    state = interrupted.state_dict()
    resumed = loader(num_workers=2)  # fresh transforms, other workers: only the saved position is shared
    resumed.load_state_dict(state)
    _assert_same_draws(reference[3:], _draws(resumed, 3))
    # without item seeds a resumed run draws other noise (one RandomState per transform, restarted)
    unseeded = loader(seed_items=False)
    unseeded.load_state_dict(state)
    assert not torch.equal(_draws(unseeded, 1)[0][1], reference[3][1])


def test_distributed_shards_augment_every_item_as_the_one_process_run():
    labeled, unlabeled = _noisy(range(8)), _noisy(range(8, 20))
    whole = _draws(two_stream_loader(labeled, unlabeled, 6, 2, seed=4), 2)
    shards = [
        _draws(two_stream_loader(labeled, unlabeled, 3, 1, distributed=True, num_replicas=2, rank=r, seed=4), 2)
        for r in range(2)
    ]
    for step, batch in enumerate(whole):
        for field in range(4):
            assert torch.equal(torch.cat([shard[step][field] for shard in shards]), batch[field])
