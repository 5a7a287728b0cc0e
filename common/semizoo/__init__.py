"""semizoo: semi-supervised medical image analysis as MONAI bundles, on one shared library."""

from . import data, engines, handlers, losses, methods, metrics, networks, schedules, transforms

__version__ = "0.1.0"

__all__ = [
    "data",
    "engines",
    "handlers",
    "losses",
    "methods",
    "metrics",
    "networks",
    "schedules",
    "transforms",
    "__version__",
]
