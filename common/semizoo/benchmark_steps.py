"""Step timing for ``python -m semizoo benchmark``: the method vs its labeled-only step, the trainer vs a plain loop.

Both comparisons are measured side by side in one process, in alternating blocks (A B B A ...) after warm-up steps,
on the same network, optimizer(s) and batch, so slow drifts of the machine hit both sides alike.

The plain loop is the minimal PyTorch loop computing the same losses as the trainer, because both call the method's
own ``train_step``::

    zero_grad -> terms = method.train_step(labeled, unlabeled) -> terms["loss"].backward()
    -> method.before_optimizer_step() -> optimizer.step() -> method.after_optimizer_step()

(a manual-optimization method gets :class:`PlainStep`, which runs the same calls without the trainer's events).
Where the trainer's handlers step an LR scheduler every iteration, the plain loop steps it too (``scheduler.step()``
after the step, as any PyTorch loop with a schedule does), so both loops train identically.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from .benchmark_build import Setup

__all__ = [
    "PlainStep",
    "framework_overhead",
    "labeled_only",
    "median_ratio_ci",
    "plain_iteration",
    "plain_loop",
    "plain_step",
    "sync",
    "time_steps",
]


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on the CPU), so timings cover the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def labeled_only(method: Any) -> Any:
    """The labeled-only step of ``method``'s network and batch: the method itself when its step without unlabelled
    data is its own bound (``supervised_fallback``, e.g. EPL's two networks, WSSDL's strong-only step), otherwise
    :class:`semizoo.methods.Supervised` with the method's supervised loss."""
    from .methods import Supervised

    if method.supervised_fallback:
        return method
    return Supervised(method.network, sup_loss=method.sup_loss).train()


class PlainStep:
    """The optimisation calls a manual-optimization method makes, without events, checks or AMP."""

    def __init__(self, method: Any, optimizers: Mapping[str, torch.optim.Optimizer], set_to_none: bool) -> None:
        self.method, self.optimizers, self.set_to_none = method, optimizers, set_to_none
        self.optimized = False

    def _select(self, names: tuple[str, ...]) -> list[torch.optim.Optimizer]:
        return [self.optimizers[n] for n in names] if names else list(self.optimizers.values())

    def zero_grad(self, *names: str) -> None:
        """Zero the gradients of the named optimizers (all by default)."""
        for optimizer in self._select(names):
            optimizer.zero_grad(set_to_none=self.set_to_none)

    def loss_completed(self, terms: Mapping[str, torch.Tensor]) -> None:
        """Nothing to report in a plain loop."""

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``loss.backward(**kwargs)``."""
        loss.backward(**kwargs)

    def backward_completed(self) -> None:
        """``method.before_optimizer_step()``, once per step."""
        if not self.optimized:
            self.optimized = True
            self.method.before_optimizer_step()

    def step(self, *names: str) -> None:
        """Step the named optimizers (all by default), after :meth:`backward_completed`."""
        self.backward_completed()
        for optimizer in self._select(names):
            optimizer.step()


def plain_step(
    method: Any,
    optimizers: Mapping[str, torch.optim.Optimizer],
    labeled: Any,
    unlabeled: Any,
    set_to_none: bool = False,
    grad_clip_norm: float | None = None,
) -> dict[str, torch.Tensor]:
    """One plain-PyTorch training step (module docstring); returns the method's loss terms."""
    if method.manual_optimization:
        step = PlainStep(method, optimizers, set_to_none)
        terms = method.train_step(labeled, unlabeled, step=step)
        step.backward_completed()
    else:
        for optimizer in optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)
        terms = method.train_step(labeled, unlabeled)
        terms["loss"].backward()
        method.before_optimizer_step()
        if grad_clip_norm is not None:  # the trainer's option, mirrored so both compute the same update
            torch.nn.utils.clip_grad_norm_(method.network.parameters(), grad_clip_norm)
        for optimizer in optimizers.values():
            optimizer.step()
    method.after_optimizer_step()
    return terms


def plain_iteration(setup: Setup, labeled: Any, unlabeled: Any) -> dict[str, torch.Tensor]:
    """:func:`plain_step` with ``setup``'s optimizers and trainer flags, then ``setup.schedulers``' ``step()``."""
    terms = plain_step(setup.method, setup.optimizers, labeled, unlabeled, setup.set_to_none, setup.grad_clip_norm)
    for scheduler in setup.schedulers:
        scheduler.step()
    return terms


def plain_loop(setup: Setup, batches: Iterable[tuple[Any, Any]], start: int = 0) -> list[float]:
    """Run :func:`plain_iteration` over ``(labeled, unlabeled)`` batches, ``method.iteration`` counting from
    ``start``; returns the losses."""
    setup.method.train()
    losses = []
    for offset, (labeled, unlabeled) in enumerate(batches):
        setup.method.iteration = start + offset
        losses.append(float(plain_iteration(setup, labeled, unlabeled)["loss"].detach()))
    return losses


def _timed(device: torch.device, run: Callable[[], Any]) -> float:
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def _block_order(blocks: int, first: str, second: str) -> list[str]:
    """``first second second first first second ...``: each kind leads every other block."""
    return [kind for block in range(blocks) for kind in ((first, second) if block % 2 == 0 else (second, first))]


def time_steps(setup: Setup, iterations: int, warmup: int = 2, blocks: int = 2) -> dict[str, list[float]]:
    """Seconds of each method step and each labeled-only step, ``iterations`` per block, interleaved in ``blocks``."""
    method, supervised = setup.method, labeled_only(setup.method)
    method.train()
    runners = {"method": (method, setup.unlabeled), "labeled_only": (supervised, None)}

    def step(name: str) -> None:
        runner, unlabeled = runners[name]
        plain_step(runner, setup.optimizers, setup.labeled, unlabeled, setup.set_to_none, setup.grad_clip_norm)

    for _ in range(warmup):
        step("method")
        step("labeled_only")
    timings: dict[str, list[float]] = {"method": [], "labeled_only": []}
    for name in _block_order(blocks, "method", "labeled_only"):
        for _ in range(iterations):
            method.iteration += 1
            timings[name].append(_timed(setup.device, lambda: step(name)))
    return timings


def _block_medians(values: Any, per_block: int, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """Medians of ``n_resamples`` resamples of ``values`` that redraw steps with replacement inside each block."""
    steps = np.asarray(values, dtype=float)
    if per_block < 1 or steps.size == 0 or steps.size % per_block:
        raise ValueError(f"{steps.size} timings do not split into blocks of {per_block} steps.")
    blocks = steps.reshape(-1, per_block)
    picks = rng.integers(0, per_block, size=(n_resamples, *blocks.shape))
    resampled = np.take_along_axis(np.broadcast_to(blocks, picks.shape), picks, axis=2)
    return np.median(resampled.reshape(n_resamples, -1), axis=1)


def median_ratio_ci(
    numerator: Any, denominator: Any, per_block: int, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap ``level`` interval of ``median(numerator) / median(denominator) - 1`` (percentile method).

    Both lists hold step timings in block order (``per_block`` steps per block, as :func:`time_steps` and
    :func:`framework_overhead` record them). Each resample redraws steps with replacement inside each block, so every
    block keeps its share of steps and a slow drift of the machine, which the alternating blocks spread over both
    sides, does not widen the interval; the step-to-step scatter does.
    """
    rng = np.random.default_rng(seed)
    ratios = _block_medians(numerator, per_block, rng, n_resamples) / _block_medians(
        denominator, per_block, rng, n_resamples
    )
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(ratios - 1.0, [tail, 100 - tail])
    return float(low), float(high)


def framework_overhead(setup: Setup, iterations: int, warmup: int = 2, blocks: int = 2) -> dict[str, list[float]]:
    """Seconds per iteration of the bundle's trainer and of :func:`plain_step`, in alternating blocks.

    ``setup.trainer`` must run ``warmup + blocks * iterations`` iterations (:func:`semizoo.benchmark_build.build`
    with that ``trainer_iterations``). Plain blocks run inside a handler attached after the bundle's handlers, at the
    end of a trainer block; a trainer iteration is timed from the end of the previous one (or of the plain block run
    after it) to the end of its own ITERATION_COMPLETED handlers: loader, events, step and handlers.
    """
    from ignite.engine import Events

    trainer, device = setup.trainer, setup.device
    order = _block_order(blocks, "plain", "trainer")
    timings: dict[str, list[float]] = {"trainer": [], "plain": []}
    state = {"last": 0.0}

    def run_plain(count: int, record: bool, iteration: int) -> None:
        setup.method.train()
        for offset in range(count):
            setup.method.iteration = iteration + offset
            seconds = _timed(device, lambda: plain_iteration(setup, setup.labeled, setup.unlabeled))
            if record:
                timings["plain"].append(seconds)

    def run_pending_plain(iteration: int) -> None:
        while order and order[0] == "plain":
            order.pop(0)
            run_plain(iterations, True, iteration)

    def started(engine: Any) -> None:
        if warmup == 0:
            run_pending_plain(0)
        state["last"] = time.perf_counter()

    def completed(engine: Any) -> None:
        sync(device)
        now, done = time.perf_counter(), engine.state.iteration
        if done > warmup:
            timings["trainer"].append(now - state["last"])
        if done == warmup:
            run_plain(warmup, False, done)
            run_pending_plain(done)
        elif done > warmup and (done - warmup) % iterations == 0 and order:
            order.pop(0)  # a trainer block ended
            run_pending_plain(done)
        sync(device)
        state["last"] = time.perf_counter()

    trainer.add_event_handler(Events.STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    trainer.run()
    return timings
