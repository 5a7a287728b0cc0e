"""The method plugin contract and its registry (architecture.md, "Trainer and method contract").

A method is an ``nn.Module`` that computes one training step: ``train_step(labeled, unlabeled)``
returns a dict of named loss terms whose ``"loss"`` entry the trainer back-propagates. Teachers,
heads and memories are submodules or buffers of the method, so ``method.state_dict()`` checkpoints
them; the student network is held by reference only and is saved once, as ``network_def``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import Tensor, nn

from ..networks.utils import frozen_copy

__all__ = ["Method", "register", "create", "registered", "zero_like"]

_REGISTRY: dict[str, type] = {}
M = TypeVar("M", bound=type)


def zero_like(reference: Tensor) -> Tensor:
    """A 0-d zero on ``reference``'s device and dtype (for loss terms a step does not compute)."""
    return torch.zeros((), device=reference.device, dtype=reference.dtype)


def register(name: str) -> Callable[[M], M]:
    """Class decorator registering a :class:`Method` under ``name``; a second class with the same name raises."""

    def decorator(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} is already registered by {_REGISTRY[name].__qualname__}.")
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"only Method subclasses can be registered, got {cls!r}.")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorator


def registered() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_REGISTRY)


def create(name: str, **kwargs: Any) -> "Method":
    """Instantiate the method registered as ``name`` with ``kwargs``.

    Raises:
        KeyError: for an unknown name, listing the registered ones.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(registered())}.")
    return _REGISTRY[name](**kwargs)


class Method(nn.Module):
    """Base class of semi-supervised method plugins.

    Subclasses implement :meth:`train_step`. The trainer sets ``iteration`` (0-based) before each step, calls
    ``train()``, then back-propagates ``"loss"`` and steps the optimizer(s), calling
    :meth:`before_optimizer_step` (after backward) and :meth:`after_optimizer_step` (after the step). A method that
    sets ``manual_optimization = True`` receives a :class:`semizoo.engines.ManualStep` as
    ``train_step(..., step=...)`` and must call ``step.loss_completed(terms)`` (the NaN/inf check) before
    ``step.backward(...)`` and ``step.step(...)``.

    Distributed data parallel (DDP) rules, for every method:

    1. Every call that involves trainable parameters goes through the (possibly DDP-wrapped) ``self.network``'s
       ``forward`` -- e.g. ``self.network(x, features=True)`` for features, ``self.network(z, head="...")`` for
       heads -- never through ``unwrap(self.network).submodule(...)``: DDP synchronises what its forward reaches.
    2. Every trainable parameter of the network receives a gradient at every step (possibly zero): DDP without
       ``find_unused_parameters`` waits for all of them. A step that skips a parameter adds
       :meth:`zero_gradient_anchor` to its loss.
    3. Teachers, memories and queues live in the method (never in the DDP-wrapped network) and are updated
       identically on every rank.

    Plain ``forward(x)`` of the network stays a segmenter (logits) for inferers, TorchScript and MONAI Label.

    Args:
        network: the student network (possibly DDP-wrapped); held by reference, not saved in ``state_dict``.
        image_key, label_key: keys of the image and the label in the batch dicts.
    """

    name: str = ""
    manual_optimization: bool = False
    #: ``train_step(labeled, None)`` is this method's own labelled-only bound (e.g. EPL: both networks supervised);
    #: the benchmark then times it instead of :class:`semizoo.methods.Supervised` on ``network(x)``.
    supervised_fallback: bool = False

    def __init__(self, network: nn.Module, image_key: str = "image", label_key: str = "label") -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        # a plain attribute keeps the student out of this module's parameters and state_dict
        self.__dict__["network"] = network
        self.image_key, self.label_key = image_key, label_key
        self.iteration = 0

    def train_step(self, labeled: Mapping[str, Tensor], unlabeled: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """Loss terms of one step; ``"loss"`` is back-propagated, the others are logged."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_step.")

    def before_optimizer_step(self) -> None:
        """Called after backward, before the optimizer step (e.g. gradient clipping)."""

    def after_optimizer_step(self) -> None:
        """Called after the optimizer step (e.g. EMA teacher update, queue push)."""

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        self.network.train(mode)
        return self

    def zero_gradient_anchor(self, *modules: nn.Module) -> Tensor:
        """``0 · Σ θ`` over the trainable parameters of ``modules`` (default: the network).

        Adds nothing to the loss but gives each parameter a (zero) gradient, so DDP's all-reduce never waits for a
        parameter that this step did not use (e.g. heads of classes without memory, a decoder frozen in a stage).
        """
        parameters = [p for m in (modules or (self.network,)) for p in m.parameters() if p.requires_grad]
        return sum((p.sum() for p in parameters), torch.zeros(())) * 0.0

    def copy_network(self) -> nn.Module:
        """A frozen copy of the unwrapped student (no gradients), e.g. to start an EMA teacher."""
        return frozen_copy(self.network)

    def batch_item(self, batch: Mapping[str, Any], key: str, stream: str) -> Tensor:
        """``batch[key]`` as a tensor, with an error naming the stream and the keys present when missing."""
        if key not in batch:
            raise KeyError(f"the {stream} batch has no {key!r}; its keys are {sorted(batch)}.")
        value = batch[key]
        return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
