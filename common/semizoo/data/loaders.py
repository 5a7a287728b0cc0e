"""``two_stream_loader``: one DataLoader that yields ``(labeled_batch, unlabeled_batch)`` pairs.

Both datasets are concatenated and indexed by a two-stream batch sampler (:mod:`semizoo.data.samplers`);
the collate function splits each index batch by position, so labeled and unlabeled records may carry
different keys (unlabeled records need no ``label``). With no unlabeled data the loader yields
``(labeled_batch, None)`` and the methods fall back to supervised training.

Every item is read with its own augmentation seed (the sampler's ``seed_items``; :class:`SeededItems` reseeds
the random transforms of its dataset before reading it), so augmentation depends only on the item's place in the
run: the same with 0 or 8 workers, one process or a sharded DDP run, and after a resume.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any, Callable, Iterator, Sequence

import torch
from monai.data import list_data_collate
from monai.data.utils import worker_init_fn
from monai.transforms import Randomizable
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from .samplers import (
    DistributedTwoStreamBatchSampler,
    IndependentTwoStreamBatchSampler,
    SingleStreamBatchSampler,
    TwoStreamBatchSampler,
)

__all__ = ["SeededItems", "TwoStreamCollate", "TwoStreamLoader", "two_stream_loader"]

logger = logging.getLogger(__name__)


class SeededItems(Dataset):
    """``dataset[(index, item_seed)]``: reseed the random transforms of the part holding ``index``, then read it.

    ``dataset`` is a MONAI dataset (its ``transform``, usually a ``Compose``, is reseeded with
    ``set_random_state``) or a ``ConcatDataset`` of such; a plain ``index`` reads without reseeding.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.parts = list(dataset.datasets) if isinstance(dataset, ConcatDataset) else [dataset]
        self.ends = list(dataset.cumulative_sizes) if isinstance(dataset, ConcatDataset) else [len(dataset)]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        if not isinstance(item, tuple):
            return self.dataset[item]
        index, seed = item
        transform = getattr(self.parts[bisect.bisect_right(self.ends, index)], "transform", None)
        if isinstance(transform, Randomizable):
            transform.set_random_state(seed=int(seed))
        return self.dataset[index]


class TwoStreamCollate:
    """Collate the first ``primary_batch_size`` items and the rest separately; ``None`` for an empty rest."""

    def __init__(self, primary_batch_size: int, collate_fn: Callable = list_data_collate) -> None:
        self.primary_batch_size = int(primary_batch_size)
        self.collate_fn = collate_fn

    def __call__(self, items: Sequence[Any]) -> tuple[Any, Any]:
        primary, secondary = items[: self.primary_batch_size], items[self.primary_batch_size :]
        return self.collate_fn(list(primary)), (self.collate_fn(list(secondary)) if secondary else None)


class TwoStreamLoader:
    """Iterable of ``(labeled, unlabeled)`` batches with ``len``, ``set_epoch`` and exact-resume state.

    The position saved by ``state_dict`` counts the batches *delivered* to the caller (not those prefetched
    by workers), so a resumed run continues with the next undelivered batch.
    """

    def __init__(self, dataloader: DataLoader) -> None:
        self.dataloader = dataloader
        self.batch_sampler = dataloader.batch_sampler
        self._epoch = self.batch_sampler.epoch
        self._delivered = self.batch_sampler.state_dict()["position"]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    @property
    def primary_batch_size(self) -> int:
        return self.batch_sampler.primary_batch_size

    @property
    def secondary_batch_size(self) -> int:
        return self.batch_sampler.secondary_batch_size

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)
        self._epoch, self._delivered = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        state = dict(self.batch_sampler.state_dict())
        state.update(epoch=self._epoch, position=self._delivered)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)
        self._epoch, self._delivered = int(state["epoch"]), int(state["position"])

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        # the sampler may run ahead under prefetching: restart it where delivery stopped
        self.batch_sampler.load_state_dict({**self.batch_sampler.state_dict(), **self.state_dict()})
        for batch in self.dataloader:
            self._delivered += 1
            yield batch
        self._epoch, self._delivered = self._epoch + 1, 0


def two_stream_loader(
    labeled: Dataset,
    unlabeled: Dataset | None,
    batch_size: int,
    secondary_batch_size: int,
    independent: bool = False,
    replacement: bool = True,
    distributed: bool = False,
    seed: int | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
    collate_fn: Callable = list_data_collate,
    seed_items: bool = True,
    **kwargs: Any,
) -> TwoStreamLoader:
    """Build the ``(labeled, unlabeled)`` loader of a semi-supervised run.

    Args:
        labeled: dataset of labeled records.
        unlabeled: dataset of unlabeled records; ``None`` or empty gives labeled-only batches of
            ``batch_size - secondary_batch_size`` and ``None`` as the unlabeled batch (with a warning).
        batch_size: labeled + unlabeled items per batch (per process under DDP).
        secondary_batch_size: unlabeled items per batch.
        independent: two endless independent streams (EPL, ACTION) instead of UA-MT's sampler; an epoch is then
            ``len(unlabeled) // secondary_batch_size`` batches.
        replacement: with ``independent``, draw each stream with replacement.
        distributed: shard every batch across the process group (:class:`DistributedTwoStreamBatchSampler`);
            requires an explicit shared ``seed`` (0 when omitted).
        seed: base seed of the sampler; ``None`` draws one from torch's global generator.
        num_replicas, rank: override the process group's world size and rank.
        collate_fn: collation of each stream.
        seed_items: give every item its own augmentation seed (:class:`SeededItems`); ``False`` keeps one random
            state per transform (per worker), which a resume or another worker count does not reproduce.
        kwargs: passed to ``torch.utils.data.DataLoader`` (``num_workers``, ``pin_memory``, ...).
    """
    for forbidden in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
        if forbidden in kwargs:
            raise ValueError(f"two_stream_loader sets {forbidden!r} itself; remove it from the arguments.")
    primary_batch_size = int(batch_size) - int(secondary_batch_size)
    if primary_batch_size < 1:
        raise ValueError(f"batch_size {batch_size} leaves no labeled items next to {secondary_batch_size} unlabeled.")
    n_labeled = len(labeled)
    n_unlabeled = 0 if unlabeled is None else len(unlabeled)
    if n_labeled < primary_batch_size:
        raise ValueError(f"{n_labeled} labeled items cannot fill a labeled batch of {primary_batch_size}.")
    if n_unlabeled == 0:
        logger.warning("no unlabeled data: training falls back to labeled-only batches of %d.", primary_batch_size)
        if distributed:
            sampler = DistributedTwoStreamBatchSampler(
                range(n_labeled),
                [],
                primary_batch_size,
                0,
                num_replicas,
                rank,
                seed=0 if seed is None else seed,
                seed_items=seed_items,
            )
        else:
            sampler = SingleStreamBatchSampler(range(n_labeled), primary_batch_size, seed=seed, seed_items=seed_items)
        dataset: Dataset = labeled
    else:
        dataset = ConcatDataset([labeled, unlabeled])
        primary, secondary = range(n_labeled), range(n_labeled, n_labeled + n_unlabeled)
        if distributed:
            sampler = DistributedTwoStreamBatchSampler(
                primary,
                secondary,
                batch_size,
                secondary_batch_size,
                num_replicas=num_replicas,
                rank=rank,
                seed=0 if seed is None else seed,
                independent=independent,
                replacement=replacement,
                seed_items=seed_items,
            )
        elif independent:
            sampler = IndependentTwoStreamBatchSampler(
                primary,
                secondary,
                batch_size,
                secondary_batch_size,
                replacement=replacement,
                seed=seed,
                seed_items=seed_items,
            )
        else:
            sampler = TwoStreamBatchSampler(
                primary, secondary, batch_size, secondary_batch_size, seed=seed, seed_items=seed_items
            )
    collate = TwoStreamCollate(sampler.primary_batch_size, collate_fn)
    # a private generator: creating an iterator must not draw from torch's global RNG (exact resume)
    base_seed = sampler.global_sampler.seed if hasattr(sampler, "global_sampler") else sampler.seed
    kwargs.setdefault("generator", torch.Generator().manual_seed(base_seed))
    # give each worker its own random-transform state (MONAI's DataLoader does the same)
    kwargs.setdefault("worker_init_fn", worker_init_fn)
    if seed_items:
        dataset = SeededItems(dataset)
    return TwoStreamLoader(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, **kwargs))
