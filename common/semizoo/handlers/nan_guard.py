"""Stop training at the first non-finite loss term, naming the iteration and the terms."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Callable

from monai.engines.utils import IterationEvents
from monai.utils import optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")

__all__ = ["NonFiniteLossError", "NaNGuard"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became nan or inf."""


class NaNGuard:
    """Raise :class:`NonFiniteLossError` when a loss term is not finite, before backward and the optimizer step.

    Attached to ``IterationEvents.LOSS_COMPLETED``, so the weights are never updated from a non-finite loss and
    the last checkpoint stays valid; the message lists every term with its value.

    Args:
        output_transform: maps ``engine.state.output`` to the dict of terms (default: the first item).
    """

    def __init__(self, output_transform: Callable[[Any], dict] = lambda output: output[0]) -> None:
        self.output_transform = output_transform
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        terms = self.output_transform(engine.state.output)
        values = {name: float(value.detach()) for name, value in terms.items()}
        bad = sorted(name for name, value in values.items() if not math.isfinite(value))
        if bad:
            listed = ", ".join(f"{name}={value:.6g}" for name, value in values.items())
            message = f"non-finite loss term(s) {bad} at iteration {engine.state.iteration}: {listed}."
            self.logger.error(message)
            raise NonFiniteLossError(message)
