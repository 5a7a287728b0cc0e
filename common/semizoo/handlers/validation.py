"""``ScheduledValidationHandler``: MONAI's ``ValidationHandler`` that starts at a given iteration.

UA-MT and SS-Net validate LA every 200 iterations from iteration 2000 on (ssnet.md, evaluation.md); MONAI's handler
only knows an interval. Earlier validations cost time and, with ``save_key_metric``, only pick checkpoints that the
reference code never considers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.handlers import ValidationHandler

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    from monai.utils import optional_import

    Engine, _ = optional_import("ignite.engine", name="Engine")

__all__ = ["ScheduledValidationHandler"]


class ScheduledValidationHandler(ValidationHandler):
    """Run ``validator`` every ``interval`` iterations (or epochs) once the counter has reached ``start``.

    Args:
        interval: iterations (or epochs with ``epoch_level``) between validations.
        validator: the MONAI evaluator to run.
        start: first iteration (epoch) that may validate; validations happen at multiples of ``interval``
            that are >= ``start`` (``start=2000, interval=200``: 2000, 2200, ...).
        epoch_level, exec_at_start: as MONAI's ``ValidationHandler``.
    """

    def __init__(
        self,
        interval: int,
        validator=None,
        start: int = 0,
        epoch_level: bool = False,
        exec_at_start: bool = False,
    ) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}.")
        super().__init__(interval=interval, validator=validator, epoch_level=epoch_level, exec_at_start=exec_at_start)
        self.start = int(start)
        self.epoch_level = bool(epoch_level)

    def __call__(self, engine: Engine) -> None:
        counter = engine.state.epoch if self.epoch_level else engine.state.iteration
        if counter >= self.start:
            super().__call__(engine)
