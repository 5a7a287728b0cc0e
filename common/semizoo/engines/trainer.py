"""``SemiSupervisedTrainer``: MONAI's ``Trainer`` driving a method plugin on ``(labeled, unlabeled)`` batches.

One iteration, with MONAI ``SupervisedTrainer``'s events at the same points (architecture.md, "Trainer and method
contract"), so MONAI/ignite handlers (gradient clipping, NaN checks, logging) attach where they expect:

    move both batches to the device, set ``method.iteration``, ``method.train()``, zero the gradients
    terms = method.train_step(labeled, unlabeled)       -> FORWARD_COMPLETED, LOSS_COMPLETED  (NaNGuard raises here)
    terms["loss"].backward(); method.before_optimizer_step()
                                                        -> BACKWARD_COMPLETED (gradients set, nothing stepped yet)
    step every optimizer; method.after_optimizer_step() -> MODEL_COMPLETED

A method with ``manual_optimization = True`` gets a :class:`ManualStep` instead and runs the same sequence itself:
``step.loss_completed(terms)`` fires FORWARD/LOSS_COMPLETED before it may step (so a non-finite loss stops the
iteration before any optimizer moves), ``step.backward(loss)``, then ``step.step(...)`` fires BACKWARD_COMPLETED
once, before its first optimizer step. ``engine.state.output`` is ``[terms]`` (detached after the step), so
MONAI's stock handlers log every term with ``output_transform=lambda x: x[0]``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from torch.optim import Optimizer

from ..methods.base import Method

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    from monai.utils import optional_import

    Engine, _ = optional_import("ignite.engine", name="Engine")

__all__ = ["SemiSupervisedTrainer", "ManualStep", "OptimizerDict", "to_device"]


def to_device(data: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """Move every tensor in nested dicts/lists/tuples to ``device``; other values are returned unchanged."""
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=non_blocking)
    if isinstance(data, Mapping):
        return {key: to_device(value, device, non_blocking) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(to_device(value, device, non_blocking) for value in data)
    return data


def _optimizer_dict(optimizer: Optimizer | Mapping[str, Optimizer]) -> dict[str, Optimizer]:
    if isinstance(optimizer, Optimizer):
        return {"optimizer": optimizer}
    if isinstance(optimizer, Mapping) and optimizer and all(isinstance(o, Optimizer) for o in optimizer.values()):
        return dict(optimizer)
    raise TypeError(f"optimizer must be a torch Optimizer or a non-empty dict of them, got {type(optimizer).__name__}.")


class OptimizerDict(dict):
    """A trainer's named optimizers (``engine.optimizer`` of a multi-optimizer method).

    ``param_groups`` lists every group of every optimizer in order, for handlers written for one optimizer (MONAI's
    ``MLFlowHandler`` logs each group's ``lr`` as ``lr_group_<i>``).
    """

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.values() for group in optimizer.param_groups]


class ManualStep:
    """One iteration's optimisation steps with the trainer's events, in MONAI ``SupervisedTrainer``'s order.

    The trainer runs every step through one of these; a manual-optimization method receives it as
    ``train_step(labeled, unlabeled, step=...)`` and calls, in this order: :meth:`zero_grad`,
    :meth:`loss_completed` with its loss terms (FORWARD/LOSS_COMPLETED: the NaN guard raises here, before anything
    is stepped), :meth:`backward`, :meth:`step` (BACKWARD_COMPLETED before the first optimizer step). Stepping
    before reporting the loss raises, so no handler can be bypassed.

    Attributes:
        optimizers: the trainer's optimizers by name (``{"optimizer": opt}`` for a single one).
    """

    def __init__(self, engine: SemiSupervisedTrainer) -> None:
        self.engine = engine
        self.optimizers = engine.optimizers
        self.scaler = engine.scaler if (engine.amp and engine.state.device.type == "cuda") else None
        self.loss_reported = False
        self._backward_fired = False
        self._stepped: set[str] = set()

    def _select(self, names: tuple[str, ...]) -> dict[str, Optimizer]:
        unknown = [name for name in names if name not in self.optimizers]
        if unknown:
            raise KeyError(f"unknown optimizer(s) {unknown}; the trainer has {sorted(self.optimizers)}.")
        return {name: self.optimizers[name] for name in names} if names else self.optimizers

    def zero_grad(self, *names: str) -> None:
        """Zero the gradients of the named optimizers (all by default)."""
        for optimizer in self._select(names).values():
            optimizer.zero_grad(set_to_none=self.engine.optim_set_to_none)

    def loss_completed(self, terms: Mapping[str, torch.Tensor]) -> None:
        """Publish ``terms`` as ``engine.state.output = [terms]`` and fire FORWARD_COMPLETED and LOSS_COMPLETED."""
        if self._stepped:
            raise RuntimeError("loss_completed must come before any optimizer step.")
        SemiSupervisedTrainer._check_terms(terms)
        self.engine.state.output = [dict(terms)]
        self.loss_reported = True
        self.engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        self.engine.fire_event(IterationEvents.LOSS_COMPLETED)

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``loss.backward(**kwargs)``, scaled under AMP."""
        if not self.loss_reported:
            raise RuntimeError("call loss_completed(terms) before backward: the NaN/inf check runs there.")
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward(**kwargs)

    def backward_completed(self) -> None:
        """Unscale AMP gradients, ``method.before_optimizer_step()``, clip, fire BACKWARD_COMPLETED (once)."""
        if self._backward_fired:
            return
        self._backward_fired = True
        engine = self.engine
        if self.scaler is not None:
            for optimizer in self.optimizers.values():
                self.scaler.unscale_(optimizer)
        engine.method.before_optimizer_step()
        if engine.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(engine.network.parameters(), engine.grad_clip_norm)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)

    def step(self, *names: str) -> None:
        """Step the named optimizers (all by default); the first call fires BACKWARD_COMPLETED before stepping."""
        if not self.loss_reported:
            raise RuntimeError("call loss_completed(terms) before stepping: the NaN/inf check runs there.")
        self.backward_completed()
        for name, optimizer in self._select(names).items():
            if self.scaler is not None:
                self.scaler.step(optimizer)
            else:
                optimizer.step()
            self._stepped.add(name)

    def update_scaler(self) -> None:
        """End of iteration: update the AMP loss scale if anything was stepped."""
        if self.scaler is not None and self._stepped:
            self.scaler.update()


class SemiSupervisedTrainer(Trainer):
    """Semi-supervised trainer: one registered method plugin computes the step, this class runs it.

    Args:
        device: where batches, network and method live.
        max_epochs: epochs of ``epoch_length`` iterations; ``None`` with ``max_iterations`` gives enough epochs.
        train_data_loader: iterable of ``(labeled, unlabeled)`` batches (:func:`semizoo.data.two_stream_loader`);
            ``unlabeled`` may be ``None``.
        network: the student (possibly DDP-wrapped); put in train mode every iteration.
        method: the :class:`semizoo.methods.Method` plugin.
        optimizer: an optimizer or a dict of named optimizers (all stepped, unless the method optimizes itself).
        max_iterations: stop after this many iterations in total, even mid-epoch.
        epoch_length: iterations per epoch; defaults to ``len(train_data_loader)``.
        non_blocking: non-blocking host-to-device copies.
        inferer: the training inferer (``train#inferer``, a required bundle ID; ``SimpleInferer`` by default). Methods
            call the network themselves, through its ``forward`` (the DDP rule of :class:`semizoo.methods.Method`).
        train_handlers: MONAI/ignite handlers to attach.
        amp: autocast the step and scale the loss (CUDA only; a manual-optimization method autocasts itself and
            back-propagates through :meth:`ManualStep.backward`, which scales).
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        grad_clip_norm: clip the global gradient norm of the network after BACKWARD_COMPLETED, before stepping
            (``None``: off).
        kwargs: passed to ``monai.engines.Trainer`` (``key_train_metric``, ``postprocessing``, ...).

    Raises:
        ValueError: when neither ``max_epochs`` nor ``max_iterations`` is given, or the loader has no length and
            no ``epoch_length``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int | None,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        method: Method,
        optimizer: Optimizer | Mapping[str, Optimizer],
        max_iterations: int | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        inferer: Inferer | None = None,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        optim_set_to_none: bool = False,
        grad_clip_norm: float | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(method, Method):
            raise TypeError(f"method must be a semizoo.methods.Method, got {type(method).__name__}.")
        if epoch_length is None:
            try:
                epoch_length = len(train_data_loader)  # type: ignore[arg-type]
            except TypeError as error:
                raise ValueError("train_data_loader has no length: set epoch_length.") from error
        if max_epochs is None and max_iterations is None:
            raise ValueError("set max_epochs or max_iterations (or both: training stops at the first reached).")
        if max_iterations is not None:
            needed = math.ceil(int(max_iterations) / max(int(epoch_length), 1))
            max_epochs = needed if max_epochs is None else min(int(max_epochs), needed)
        super().__init__(
            device=device,
            max_epochs=int(max_epochs),  # type: ignore[arg-type]
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            handlers=train_handlers,
            amp=amp,
            decollate=False,
            **kwargs,
        )
        self.network = network
        self.method = method.to(self.state.device)
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.optimizers = _optimizer_dict(optimizer)
        self.optimizer = optimizer if isinstance(optimizer, Optimizer) else OptimizerDict(self.optimizers)
        self.max_iterations = None if max_iterations is None else int(max_iterations)
        self.optim_set_to_none = optim_set_to_none
        self.grad_clip_norm = grad_clip_norm
        if self.max_iterations is not None:
            self.add_event_handler(IterationEvents.MODEL_COMPLETED, self._stop_at_max_iterations)

    def _stop_at_max_iterations(self, engine: Engine) -> None:
        if engine.state.iteration >= self.max_iterations:
            engine.terminate()

    def _iteration(self, engine: SemiSupervisedTrainer, batchdata: Any) -> list[dict[str, torch.Tensor]]:
        if not isinstance(batchdata, (tuple, list)) or len(batchdata) != 2:
            raise ValueError(
                "SemiSupervisedTrainer expects (labeled, unlabeled) batches from semizoo.data.two_stream_loader, "
                f"got {type(batchdata).__name__}."
            )
        device, non_blocking = engine.state.device, engine.non_blocking
        labeled = to_device(batchdata[0], device, non_blocking)
        unlabeled = None if batchdata[1] is None else to_device(batchdata[1], device, non_blocking)
        engine.state.batch = (labeled, unlabeled)
        method = engine.method
        method.iteration = engine.state.iteration - 1
        method.train()

        step = ManualStep(engine)
        if method.manual_optimization:
            terms = method.train_step(labeled, unlabeled, step=step)
            if not step.loss_reported:
                raise RuntimeError(
                    f"{type(method).__name__} is a manual-optimization method: its train_step must call "
                    "step.loss_completed(terms) before stepping (the NaN/inf check runs there)."
                )
            self._check_terms(terms)
        else:
            step.zero_grad()
            with self._autocast(device):
                terms = method.train_step(labeled, unlabeled)
            step.loss_completed(terms)
            step.backward(terms["loss"])
            step.step()
        step.backward_completed()  # fires only if the method stepped nothing (each event once per iteration)
        step.update_scaler()
        method.after_optimizer_step()
        engine.state.output = [{name: value.detach() for name, value in terms.items()}]
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def _autocast(self, device: torch.device):
        enabled = bool(self.amp) and device.type == "cuda"
        return torch.autocast(device_type=device.type, enabled=enabled, **self.amp_kwargs)

    @staticmethod
    def _check_terms(terms: Any) -> None:
        if not isinstance(terms, Mapping) or "loss" not in terms:
            raise ValueError(f"train_step must return a dict with a 'loss' entry, got {terms!r}.")
        for name, value in terms.items():
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise ValueError(f"loss term {name!r} must be a one-element tensor, got {value!r}.")
