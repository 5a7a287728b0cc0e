"""semizoo: semi-supervised medical image analysis as MONAI bundles, on one shared library.

Subpackages load on first use (PEP 562), so ``import semizoo.losses`` loads the losses and what they need, not the
whole library; ``import semizoo`` followed by ``semizoo.data.load_split(...)`` (as bundle configs do) still works.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

SUBPACKAGES = (
    "data",
    "engines",
    "handlers",
    "losses",
    "methods",
    "metrics",
    "networks",
    "optim",
    "schedules",
    "transforms",
)

__all__ = [*SUBPACKAGES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBPACKAGES))
