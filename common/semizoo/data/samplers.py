"""Batch samplers that mix a labeled (primary) and an unlabeled (secondary) index stream.

``TwoStreamBatchSampler`` follows UA-MT's ``TwoStreamBatchSampler`` (yulequan/UA-MT
``code/dataloaders/la_heart.py`` @88ed29a), which SSL4MIS and SS-Net reuse: each batch is
``primary_batch_size`` labeled indices drawn from one fresh permutation per epoch, followed by
``secondary_batch_size`` unlabeled indices drawn from an endless chain of permutations that
restarts every epoch. An epoch is ``len(primary) // primary_batch_size`` batches.

Unlike the original, the permutations come from a generator seeded by ``(seed, epoch)``, so an
epoch can be regenerated exactly: ``state_dict()`` stores the epoch and the number of batches
already consumed, which is what exact resume needs. ``DistributedTwoStreamBatchSampler`` gives
rank ``r`` the r-th slice of each stream of every batch of the one-process sampler built with the
same seed and world-size times larger batches, so shards are disjoint and their union is the
one-process batch.

With ``seed_items=True`` every index comes with its own augmentation seed, ``(index, item_seed)``, derived from
``(seed, epoch, position, slot)`` (:func:`item_seeds`): the random transforms of an item then depend only on where
it sits in the run, not on which worker or process draws it, or on whether the run was interrupted and resumed.
"""

from __future__ import annotations

import itertools
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = [
    "item_seeds",
    "TwoStreamBatchSampler",
    "DistributedTwoStreamBatchSampler",
    "IndependentTwoStreamBatchSampler",
    "SingleStreamBatchSampler",
]


def _draw_seed() -> int:
    """A seed from torch's global generator, so ``monai.utils.set_determinism`` controls unseeded samplers."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch)])


def item_seeds(seed: int, epoch: int, position: int, count: int) -> list[int]:
    """``count`` augmentation seeds of batch ``position`` of epoch ``epoch`` (numpy ``SeedSequence``, 32-bit)."""
    sequence = np.random.SeedSequence([int(seed), int(epoch), int(position)])
    return [int(value) for value in sequence.generate_state(count, dtype=np.uint32)]


def _permutation_chain(indices: np.ndarray, rng: np.random.Generator) -> Iterator[int]:
    while True:
        yield from indices[rng.permutation(len(indices))].tolist()


def _with_replacement(indices: np.ndarray, rng: np.random.Generator) -> Iterator[int]:
    while True:
        yield from indices[rng.integers(0, len(indices), size=len(indices))].tolist()


def _take(stream: Iterator[int], count: int) -> list[int]:
    return list(itertools.islice(stream, count))


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
        num_replicas = (
            num_replicas if num_replicas is not None else (torch.distributed.get_world_size() if initialized else 1)
        )
        rank = rank if rank is not None else (torch.distributed.get_rank() if initialized else 0)
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}.")
    return int(num_replicas), int(rank)


class _ResumableBatchSampler(Sampler):
    """Epoch bookkeeping shared by the samplers: seeded per-epoch streams and a resumable position.

    ``__iter__`` regenerates epoch ``self.epoch`` and skips the batches already consumed; after a full pass
    the epoch counter advances by itself (MONAI only calls ``set_epoch`` on torch's own samplers). With
    ``seed_items`` each index is yielded as ``(index, item_seed)``.
    """

    def __init__(self, seed: int | None, seed_items: bool = False) -> None:
        self.seed = _draw_seed() if seed is None else int(seed)
        self.seed_items = bool(seed_items)
        self.epoch = 0
        self.position = 0

    def _batches(self, rng: np.random.Generator) -> Iterator[list[int]]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch at the next ``__iter__``."""
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(_epoch_rng(self.seed, self.epoch))
        for batch in itertools.islice(batches, self.position, len(self)):
            if self.seed_items:
                batch = list(zip(batch, item_seeds(self.seed, self.epoch, self.position, len(batch))))
            self.position += 1
            yield batch
        self.epoch, self.position = self.epoch + 1, 0


def _check_indices(indices: Sequence[int], name: str, batch: int) -> np.ndarray:
    array = np.asarray(list(indices), dtype=np.int64)
    if batch < 1:
        raise ValueError(f"the {name} batch size must be >= 1, got {batch}.")
    if len(array) < batch:
        raise ValueError(f"{name} stream has {len(array)} indices, fewer than its batch size {batch}.")
    return array


class TwoStreamBatchSampler(_ResumableBatchSampler):
    """UA-MT two-stream batches: ``batch_size - secondary_batch_size`` primary then ``secondary_batch_size`` secondary.

    Args:
        primary_indices: dataset indices of the labeled stream (each used at most once per epoch).
        secondary_indices: dataset indices of the unlabeled stream (endless chain of permutations).
        batch_size: total batch size.
        secondary_batch_size: unlabeled items per batch.
        seed: base seed of the per-epoch generators; ``None`` draws one from torch's global generator.
        seed_items: yield ``(index, item_seed)`` pairs (:func:`item_seeds`).
    """

    def __init__(
        self,
        primary_indices: Sequence[int],
        secondary_indices: Sequence[int],
        batch_size: int,
        secondary_batch_size: int,
        seed: int | None = None,
        seed_items: bool = False,
    ) -> None:
        super().__init__(seed, seed_items)
        self.primary_batch_size = int(batch_size) - int(secondary_batch_size)
        self.secondary_batch_size = int(secondary_batch_size)
        self.primary_indices = _check_indices(primary_indices, "primary", self.primary_batch_size)
        self.secondary_indices = _check_indices(secondary_indices, "secondary", self.secondary_batch_size)

    def __len__(self) -> int:
        return len(self.primary_indices) // self.primary_batch_size

    def _batches(self, rng: np.random.Generator) -> Iterator[list[int]]:
        primary = iter(self.primary_indices[rng.permutation(len(self.primary_indices))].tolist())
        secondary = _permutation_chain(self.secondary_indices, rng)
        for _ in range(len(self)):
            yield _take(primary, self.primary_batch_size) + _take(secondary, self.secondary_batch_size)


class IndependentTwoStreamBatchSampler(TwoStreamBatchSampler):
    """Two endless, independently reshuffled streams (EPL, ACTION fine-tuning); ``len = N_secondary // secondary``.

    With ``replacement=True`` each stream draws uniformly with replacement, else it chains permutations.
    """

    def __init__(
        self,
        primary_indices: Sequence[int],
        secondary_indices: Sequence[int],
        batch_size: int,
        secondary_batch_size: int,
        replacement: bool = True,
        seed: int | None = None,
        seed_items: bool = False,
    ) -> None:
        super().__init__(
            primary_indices, secondary_indices, batch_size, secondary_batch_size, seed=seed, seed_items=seed_items
        )
        self.replacement = bool(replacement)

    def __len__(self) -> int:
        return len(self.secondary_indices) // self.secondary_batch_size

    def _batches(self, rng: np.random.Generator) -> Iterator[list[int]]:
        stream = _with_replacement if self.replacement else _permutation_chain
        primary_rng, secondary_rng = rng.spawn(2)
        primary = stream(self.primary_indices, primary_rng)
        secondary = stream(self.secondary_indices, secondary_rng)
        for _ in range(len(self)):
            yield _take(primary, self.primary_batch_size) + _take(secondary, self.secondary_batch_size)


class SingleStreamBatchSampler(_ResumableBatchSampler):
    """Labeled-only batches (supervised fallback): one permutation per epoch, last partial batch dropped."""

    def __init__(
        self, indices: Sequence[int], batch_size: int, seed: int | None = None, seed_items: bool = False
    ) -> None:
        super().__init__(seed, seed_items)
        self.primary_batch_size = int(batch_size)
        self.secondary_batch_size = 0
        self.primary_indices = _check_indices(indices, "primary", self.primary_batch_size)

    def __len__(self) -> int:
        return len(self.primary_indices) // self.primary_batch_size

    def _batches(self, rng: np.random.Generator) -> Iterator[list[int]]:
        order = self.primary_indices[rng.permutation(len(self.primary_indices))].tolist()
        for start in range(0, len(self) * self.primary_batch_size, self.primary_batch_size):
            yield order[start : start + self.primary_batch_size]


class DistributedTwoStreamBatchSampler(Sampler):
    """Rank ``rank``'s share of a one-process two-stream sampler with world-size times larger batches.

    Each global batch is split per stream: this rank gets primary items ``[r*p, (r+1)*p)`` and secondary items
    ``[r*s, (r+1)*s)`` where ``p``/``s`` are the per-rank sizes, so every rank sees a ``p + s`` batch and the
    shards of one step are disjoint. All ranks must use the same ``seed``.

    Args:
        primary_indices, secondary_indices: as :class:`TwoStreamBatchSampler`.
        batch_size, secondary_batch_size: per-rank sizes.
        num_replicas, rank: default to the initialised process group (1 and 0 without one).
        seed: shared base seed.
        independent, replacement: use :class:`IndependentTwoStreamBatchSampler` semantics instead of UA-MT's.
            ``secondary_batch_size=0`` shards labeled-only batches (:class:`SingleStreamBatchSampler`).
        seed_items: yield ``(index, item_seed)`` pairs; the seeds are those of the one-process batch, so a sharded
            run augments every item as the one-process run does.
    """

    def __init__(
        self,
        primary_indices: Sequence[int],
        secondary_indices: Sequence[int],
        batch_size: int,
        secondary_batch_size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        independent: bool = False,
        replacement: bool = True,
        seed_items: bool = False,
    ) -> None:
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.primary_batch_size = int(batch_size) - int(secondary_batch_size)
        self.secondary_batch_size = int(secondary_batch_size)
        world = self.num_replicas
        sizes = dict(batch_size=int(batch_size) * world, secondary_batch_size=self.secondary_batch_size * world)
        if self.secondary_batch_size == 0:
            self.global_sampler: _ResumableBatchSampler = SingleStreamBatchSampler(
                primary_indices, self.primary_batch_size * world, seed=seed, seed_items=seed_items
            )
        elif independent:
            self.global_sampler = IndependentTwoStreamBatchSampler(
                primary_indices, secondary_indices, replacement=replacement, seed=seed, seed_items=seed_items, **sizes
            )
        else:
            self.global_sampler = TwoStreamBatchSampler(
                primary_indices, secondary_indices, seed=seed, seed_items=seed_items, **sizes
            )

    def __len__(self) -> int:
        return len(self.global_sampler)

    @property
    def epoch(self) -> int:
        return self.global_sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.global_sampler.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return self.global_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.global_sampler.load_state_dict(state)

    def __iter__(self) -> Iterator[list[int]]:
        p, s, r = self.primary_batch_size, self.secondary_batch_size, self.rank
        primary_total = p * self.num_replicas
        for batch in self.global_sampler:
            primary, secondary = batch[:primary_total], batch[primary_total:]
            yield primary[r * p : (r + 1) * p] + secondary[r * s : (r + 1) * s]
