"""Engines: the semi-supervised trainer (MONAI ``Trainer`` subclass)."""

from .trainer import SemiSupervisedTrainer, to_device

__all__ = ["SemiSupervisedTrainer", "to_device"]
