"""Data-pipeline figures for ``python -m semizoo benchmark``: phantom datasets and the data-wait fraction.

The data-wait fraction is the share of each training iteration spent blocked in ``next(loader)`` while the real
step runs: ``sum(wait) / sum(iteration)`` over the timed iterations, where an iteration is fetching the batch, moving
it to the device and one plain step (:func:`semizoo.benchmark_steps.plain_step`). A loader that runs out starts a new
epoch, and that restart is waiting too, as in training.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .benchmark_build import Setup, build
from .benchmark_steps import plain_step, sync
from .engines.trainer import to_device

__all__ = ["dataset_of", "prepared_phantoms", "data_wait", "measure_data_wait"]


def dataset_of(configs: Sequence[str]) -> str:
    """The phantom dataset a bundle trains on, from its ``dataset_dir`` (``.../<dataset>_prepared``)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(configs))
    return Path(str(parser["dataset_dir"])).name.removesuffix("_prepared")


def prepared_phantoms(root: Path, dataset: str) -> Path:
    """The quick start's phantoms of ``dataset`` (its number of cases, which the cpu-shape configs' labelled
    batches need), generated and prepared under ``root`` (reused when present)."""
    from .quickstart import DATASETS, phantom_data

    return phantom_data(dataset, Path(root), DATASETS[dataset]["cases"])


def _endless(loader: Iterable) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the train loader yields no batch.")


def data_wait(setup: Setup, loader: Iterable, iterations: int, warmup: int = 1) -> dict[str, Any]:
    """Fraction of iteration time blocked in ``next(loader)`` over ``iterations`` steps after ``warmup`` ones."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}.")
    batches, device = _endless(loader), setup.device
    setup.method.train()
    wait = total = 0.0
    for index in range(warmup + iterations):
        start = time.perf_counter()
        labeled, unlabeled = next(batches)
        fetched = time.perf_counter()
        labeled = to_device(labeled, device)
        unlabeled = None if unlabeled is None else to_device(unlabeled, device)
        setup.method.iteration = index
        plain_step(setup.method, setup.optimizers, labeled, unlabeled, setup.set_to_none, setup.grad_clip_norm)
        sync(device)
        if index >= warmup:
            wait += fetched - start
            total += time.perf_counter() - start
    return {
        "fraction": wait / total,
        "wait_seconds": wait / iterations,
        "iteration_seconds": total / iterations,
        "iterations": iterations,
        "warmup": warmup,
    }


def measure_data_wait(
    bundle: Path,
    configs: Sequence[str],
    phantom_root: Path,
    workdir: Path,
    iterations: int,
    warmup: int = 1,
    earlier: Sequence[Sequence[str]] = (),
) -> dict[str, Any]:
    """:func:`data_wait` of the bundle's own train loader (``train#dataloader``) on prepared phantoms."""
    dataset = dataset_of(configs)
    dataset_dir = prepared_phantoms(phantom_root, dataset)
    setup = build(bundle, configs, workdir, dataset_dir=dataset_dir, earlier=earlier)
    with_data = setup.parser
    loader = with_data.get_parsed_content("train#dataloader")
    workers = (
        with_data.get_parsed_content("train#dataloader#num_workers")
        if "train#dataloader#num_workers" in with_data
        else 0
    )
    result = data_wait(setup, loader, iterations, warmup)
    result.update(dataset=dataset, dataset_dir=str(dataset_dir), num_workers=int(workers))
    return result
