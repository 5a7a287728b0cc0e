"""Event filters for MONAI handlers configured from JSON (a lambda in a config cannot see other config IDs)."""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["every"]


def every(interval: int) -> Callable[[Any, int], bool]:
    """A ``filter(engine, event) -> bool`` true every ``interval`` events (e.g. ``StatsHandler.iteration_log``)."""
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}.")

    def _filter(engine: Any, event: int) -> bool:
        return event % interval == 0

    return _filter
