"""``ScheduledValidationHandler``: MONAI's ``ValidationHandler`` that starts at a given iteration.

UA-MT and SS-Net validate LA every 200 iterations from iteration 2000 on (ssnet.md, evaluation.md); MONAI's handler
only knows an interval. Earlier validations cost time and, with ``save_key_metric``, only pick checkpoints that the
reference code never considers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.handlers import ValidationHandler

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    from monai.utils import optional_import

    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["ScheduledValidationHandler"]


class ScheduledValidationHandler(ValidationHandler):
    """Run ``validator`` every ``interval`` iterations (or epochs) once the counter has reached ``start``.

    Args:
        interval: iterations (or epochs with ``epoch_level``) between validations.
        validator: the MONAI evaluator to run.
        start: first iteration (epoch) that may validate; validations happen at multiples of ``interval``
            that are >= ``start`` (``start=2000, interval=200``: 2000, 2200, ...).
        epoch_level, exec_at_start: as MONAI's ``ValidationHandler``.
        final_if_none: validate once when training completes without having validated (a short run, e.g. MONAI
            Label's few epochs, still selects and writes ``model.pt``).
    """

    def __init__(
        self,
        interval: int,
        validator=None,
        start: int = 0,
        epoch_level: bool = False,
        exec_at_start: bool = False,
        final_if_none: bool = True,
    ) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}.")
        super().__init__(interval=interval, validator=validator, epoch_level=epoch_level, exec_at_start=exec_at_start)
        self.start, self.final_if_none, self.validations = int(start), bool(final_if_none), 0

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if self.final_if_none:
            engine.add_event_handler(Events.COMPLETED, self._final)

    def __call__(self, engine: Engine) -> None:
        counter = engine.state.epoch if self.epoch_level else engine.state.iteration
        if counter >= self.start:
            self.validations += 1
            super().__call__(engine)

    def _final(self, engine: Engine) -> None:
        if self.validations == 0:
            self.validations += 1
            super().__call__(engine)
