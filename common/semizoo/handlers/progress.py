"""``ProgressBar``: a tqdm bar over an engine's run, with the loss terms of a trainer and the time left.

ignite's own ``ProgressBar`` counts one epoch at a time; semizoo's trainers count iterations across epochs
(``max_iterations``), so this bar spans the whole run: iterations done out of the total, rate and ETA, and for a
trainer the terms of ``engine.state.output`` (``[terms]``, semizoo.engines.trainer). A run resumed at iteration ``k``
starts the bar at ``k``. An evaluator gets a bar over its cases; a validation inside training clears its bar when it
ends, leaving only the training bar on screen.

The bar shows on an interactive terminal only (redirected logs keep the StatsHandler lines);
``SEMIZOO_PROGRESS=1`` or ``0`` forces it on or off.
"""

from __future__ import annotations

import math
import os
import sys
from typing import IO, TYPE_CHECKING, Any, Mapping

import torch
from monai.engines import Trainer
from monai.utils import optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["ProgressBar", "progress_enabled", "loss_terms"]

ENVIRONMENT_SWITCH = "SEMIZOO_PROGRESS"


def progress_enabled(stream: IO[str] | None = None) -> bool:
    """``SEMIZOO_PROGRESS`` when set (``1``/``0``), otherwise whether ``stream`` (stderr) is a terminal."""
    value = os.environ.get(ENVIRONMENT_SWITCH, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def loss_terms(output: Any) -> dict[str, float]:
    """The scalar terms of a trainer's ``[terms]`` output as floats; ``{}`` for any other output."""
    if isinstance(output, (list, tuple)) and len(output) == 1:
        output = output[0]
    if not isinstance(output, Mapping):
        return {}
    terms = {}
    for name, value in output.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            terms[str(name)] = float(value.detach())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            terms[str(name)] = float(value)
        else:
            return {}  # an evaluator's case dict (pred, label, ...): no terms
    return terms


class ProgressBar:
    """A tqdm bar of one engine's run (module docstring).

    Args:
        description: the bar's label (default: ``train`` for a MONAI ``Trainer``, else ``evaluate``).
        enabled: show the bar; ``None`` follows :func:`progress_enabled`.
        stream: where the bar is drawn (stderr).
        mininterval: seconds between redraws.
    """

    open_bars = 0  # bars of all ProgressBar handlers now drawn: an evaluation inside training draws a nested one

    def __init__(
        self,
        description: str | None = None,
        enabled: bool | None = None,
        stream: IO[str] | None = None,
        mininterval: float = 0.5,
    ) -> None:
        self.description = description
        self.stream = stream
        self.enabled = progress_enabled(stream) if enabled is None else bool(enabled)
        self.mininterval = float(mininterval)
        self.bar = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.COMPLETED, self.close)
        engine.add_event_handler(Events.TERMINATE, self.close)

    @staticmethod
    def total(engine: Engine) -> int | None:
        """Iterations of the whole run: ``max_iterations`` when it stops first, else epochs × epoch length."""
        length, epochs = engine.state.epoch_length, engine.state.max_epochs
        planned = None if length is None or epochs is None else int(length) * int(epochs)
        limit = getattr(engine, "max_iterations", None)
        if limit is not None:
            planned = int(limit) if planned is None else min(planned, int(limit))
        return planned

    def update(self, engine: Engine) -> None:
        """Advance to the engine's iteration and show its loss terms."""
        if self.bar is None:
            self._open(engine)
        assert self.bar is not None
        terms = loss_terms(engine.state.output)
        if terms:
            self.bar.set_postfix({k: _short(v) for k, v in terms.items()}, refresh=False)
        self.bar.update(engine.state.iteration - self.bar.n)

    def close(self, engine: Engine | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            ProgressBar.open_bars -= 1

    def _open(self, engine: Engine) -> None:
        from tqdm import tqdm

        training = isinstance(engine, Trainer)
        self.bar = tqdm(
            total=self.total(engine),
            initial=engine.state.iteration - 1,
            desc=self.description or ("train" if training else "evaluate"),
            unit="it",
            file=self.stream or sys.stderr,
            mininterval=self.mininterval,
            dynamic_ncols=True,
            leave=training or ProgressBar.open_bars == 0,  # a validation's bar disappears when it ends
        )
        ProgressBar.open_bars += 1


def _short(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)
