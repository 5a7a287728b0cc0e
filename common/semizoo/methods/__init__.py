"""Semi-supervised methods as plugins of :class:`semizoo.engines.SemiSupervisedTrainer` (architecture.md)."""

from .action import Action
from .action_pretrain import ActionPretrain
from .base import Method, create, register, registered
from .epl import EPL
from .mean_teacher import MeanTeacher
from .ssnet import SSNet
from .supervised import Supervised
from .wssdl import WSSDL

__all__ = [
    "Method",
    "create",
    "register",
    "registered",
    "MeanTeacher",
    "SSNet",
    "Supervised",
    "ActionPretrain",
    "Action",
    "EPL",
    "WSSDL",
]
