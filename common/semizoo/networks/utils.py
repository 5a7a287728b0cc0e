"""Network helpers shared by methods, handlers and tools: DDP unwrapping, frozen copies, EMA updates and reading
weights files.

They live here, below ``methods`` and ``handlers``, so both import them without a cycle. ``ema_update_`` is the
update of SSL4MIS/UA-MT ``update_ema_variables`` (Tarvainen & Valpola 2017, arXiv:1703.01780): parameters only
(buffers such as BatchNorm statistics are not averaged) with the warm-up decay ``min(1 - 1/(step + 1), decay)``,
so the teacher equals the student after the first step.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Optional, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["unwrap", "frozen_copy", "ema_decay", "ema_update_", "read_state_dict", "load_weights"]

NetworkT = TypeVar("NetworkT", bound=nn.Module)


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside DDP/DataParallel wrappers (``network.module``), else ``network``."""
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


def frozen_copy(network: nn.Module) -> nn.Module:
    """A deep copy of the unwrapped ``network`` whose parameters need no gradient (e.g. an EMA teacher)."""
    copied = copy.deepcopy(unwrap(network))
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    return copied


def ema_decay(step: int, decay: float) -> float:
    """Warm-up decay ``min(1 - 1/(step + 1), decay)`` for the 0-based ``step`` just taken."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}.")
    return float(min(1.0 - 1.0 / (int(step) + 1), decay))


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """In place: ``θ_teacher ← α θ_teacher + (1 - α) θ_student`` for every parameter (not buffers).

    Raises:
        ValueError: when the two networks' parameter names differ.
    """
    student = unwrap(student)
    teacher_params = dict(teacher.named_parameters())
    student_params = dict(student.named_parameters())
    if teacher_params.keys() != student_params.keys():
        diff = sorted(set(teacher_params) ^ set(student_params))
        raise ValueError(f"teacher and student parameters differ: {diff[:10]}.")
    for name, teacher_param in teacher_params.items():
        teacher_param.mul_(alpha).add_(student_params[name].detach(), alpha=1.0 - alpha)


def read_state_dict(
    state_dict_or_path: Mapping[str, Tensor] | str | os.PathLike, what: str = "checkpoint"
) -> dict[str, Tensor]:
    """The state dict in a weights file (``torch.load`` with ``weights_only=True``) or mapping: a wrapping
    ``"state_dict"``/``"model"``/``"net"`` entry is unwrapped and a DDP ``"module."`` prefix stripped.

    Raises:
        FileNotFoundError: naming ``what`` and the missing file.
        ValueError: the file holds no mapping of tensors.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        path = os.fspath(state_dict_or_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} {path!r} does not exist.")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        state = state_dict_or_path
    if not isinstance(state, Mapping):
        raise ValueError(f"the {what} must hold a state_dict, got {type(state).__name__}.")
    for wrapper in ("state_dict", "model", "net"):  # tolerate a wrapping dict
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def load_weights(network: NetworkT, path: Optional[str | os.PathLike]) -> NetworkT:
    """``network`` with every tensor loaded from the state dict at ``path`` (e.g. another run's
    ``models/model_final.pt``, to start training from it); ``None`` returns it unchanged.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: listing the missing and unexpected keys and the shape mismatches, before anything is loaded.
    """
    if path is None:
        return network
    state, own = read_state_dict(path, "initial weights file"), unwrap(network).state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(v.shape)} vs network {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"initial weights {os.fspath(path)!r} do not fit {type(unwrap(network)).__name__}: missing "
            f"{missing[:5] or 'none'}{' ...' if len(missing) > 5 else ''}; unexpected {unexpected[:5] or 'none'}"
            f"{' ...' if len(unexpected) > 5 else ''}; shape mismatches {shapes[:5] or 'none'}."
        )
    unwrap(network).load_state_dict(state, strict=True)
    return network
