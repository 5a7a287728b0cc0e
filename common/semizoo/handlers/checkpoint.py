"""Pieces of a resumable training checkpoint (architecture.md, principle 8).

MONAI's ``CheckpointSaver`` writes (atomically, through ignite's ``DiskSaver``) every object of its
``save_dict`` that has ``state_dict``; ``CheckpointLoader`` restores them with ``weights_only=True``. The
training checkpoint of a bundle therefore holds the network, the method (teachers, heads, memories), the
optimizer(s), the LR scheduler, the trainer (iteration, epoch), the data loader's sampler position and an
:class:`RNGState`; all of these are tensors or primitive containers.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")

__all__ = [
    "RNGState",
    "latest_checkpoint",
    "ResumeHandler",
    "TrainingCheckpointer",
    "AtomicCheckpointSaver",
    "StageLoader",
]

logger = logging.getLogger(__name__)


class _AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` writing to a temporary file then renaming it (atomic), with an optional fixed name.

    ignite's atomic mode creates the file with mode 0600; it is widened to 0644 (what MONAI's non-atomic saver
    gives) so that other users and services (MONAI Label) can read ``models/*.pt``.
    """

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        name = self.filename or filename
        super().__call__(checkpoint, name, metadata)
        path = os.path.join(self.dirname, name)
        if os.path.exists(path):  # only rank 0 writes under DDP
            os.chmod(path, 0o644)

    def remove(self, filename: str) -> None:
        super().remove(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` whose files are written atomically (a crash never leaves a truncated ``.pt``).

    MONAI's saver writes in place (``atomic=False``); this subclass swaps in :class:`_AtomicDiskSaver` for the
    final, key-metric and interval checkpoints and keeps every other behaviour and argument.
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, fixed)


class RNGState:
    """``state_dict``/``load_state_dict`` of the global torch (CPU and CUDA), numpy and ``random`` generators."""

    def state_dict(self) -> dict[str, Any]:
        version, mt_state, gauss = random.getstate()
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "python_version": int(version),
            "python_state": torch.tensor(mt_state, dtype=torch.int64),
            "python_gauss": [] if gauss is None else [float(gauss)],
            "numpy_name": str(np_name),
            "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "numpy_pos": int(np_pos),
            "numpy_has_gauss": int(np_has_gauss),
            "numpy_gauss": float(np_gauss),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"].to(torch.uint8))
        gauss = state["python_gauss"]
        mt_state = tuple(int(v) for v in state["python_state"].tolist())
        random.setstate((int(state["python_version"]), mt_state, float(gauss[0]) if gauss else None))
        np.random.set_state(
            (
                state["numpy_name"],
                state["numpy_keys"].numpy().astype(np.uint32),
                int(state["numpy_pos"]),
                int(state["numpy_has_gauss"]),
                float(state["numpy_gauss"]),
            )
        )
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(directory: str | os.PathLike, pattern: str = "*.pt") -> str | None:
    """The checkpoint in ``directory`` with the highest trailing iteration number.

    MONAI's ``CheckpointSaver`` names them ``checkpoint_iteration=1200.pt`` (``checkpoint_epoch=3.pt`` per epoch).

    Files without a number rank by modification time below numbered ones; ``None`` when there is none.
    """
    paths = glob.glob(os.path.join(os.fspath(directory), pattern))
    if not paths:
        return None

    def rank(path: str) -> tuple[int, float]:
        match = re.search(r"(\d+)\.pt$", os.path.basename(path))
        return (int(match[1]) if match else -1, os.path.getmtime(path))

    return max(paths, key=rank)


class ResumeHandler:
    """Restore ``load_dict`` from the latest checkpoint of ``directory`` when ``enabled`` (config ID ``resume``).

    With no checkpoint there yet the run starts fresh and says so; with ``enabled=False`` nothing happens.

    Args:
        directory: where the training ``CheckpointSaver`` writes (``@output_dir + '/checkpoints'``).
        load_dict: the same objects as the saver's ``save_dict``.
        enabled: usually ``@resume``.
        map_location: forwarded to ``CheckpointLoader``.
    """

    def __init__(
        self, directory: str | os.PathLike, load_dict: Mapping[str, Any], enabled: bool = True, map_location=None
    ) -> None:
        self.directory, self.load_dict, self.enabled, self.map_location = (
            directory,
            dict(load_dict),
            enabled,
            map_location,
        )
        self.path: str | None = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        self.path = latest_checkpoint(self.directory)
        if self.path is None:
            logger.warning("resume requested but %s holds no checkpoint: starting from scratch.", self.directory)
            return
        logger.info("resuming from %s", self.path)
        CheckpointLoader(load_path=self.path, load_dict=self.load_dict, map_location=self.map_location).attach(engine)


class TrainingCheckpointer:
    """Resumable training checkpoints of a trainer: MONAI ``CheckpointSaver`` plus, with ``resume``, a load at start.

    The trainer itself is added to ``save_dict`` (as ``trainer_key``) when the handler is attached, so configs need
    no circular reference from the trainer's handlers to the trainer.

    Args:
        save_dir: where checkpoints go (``@output_dir + '/checkpoints'``; never ``models/``).
        save_dict: objects with ``state_dict`` (network, method, optimizer, scheduler, loader, :class:`RNGState`).
        save_interval: iterations between checkpoints.
        n_saved: checkpoints kept.
        resume: restore the latest checkpoint of ``save_dir`` before training (config ID ``resume``).
        map_location: forwarded to ``CheckpointLoader``.
        trainer_key: name of the trainer in the checkpoint.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        save_interval: int = 1000,
        n_saved: int | None = 2,
        resume: bool = False,
        map_location=None,
        trainer_key: str = "trainer",
    ) -> None:
        self.save_dir, self.save_dict = os.fspath(save_dir), dict(save_dict)
        self.save_interval, self.n_saved, self.resume = int(save_interval), n_saved, bool(resume)
        self.map_location, self.trainer_key = map_location, trainer_key

    def attach(self, engine: Engine) -> None:
        objects = {**self.save_dict, self.trainer_key: engine}
        ResumeHandler(self.save_dir, objects, enabled=self.resume, map_location=self.map_location).attach(engine)
        AtomicCheckpointSaver(
            self.save_dir, objects, save_interval=self.save_interval, epoch_level=False, n_saved=self.n_saved
        ).attach(engine)


class StageLoader:
    """Initialise a stage from the previous stage's file ``{"student": state_dict, "teacher": state_dict}``.

    Multi-stage methods (ACTION: encoder pre-training, full pre-training, fine-tuning; action.md §8) chain their
    stages through such files. The file is checked when the handler is built, so a missing one fails before any
    training with a message naming it. At ``STARTED`` the weights are copied in place (the optimizer keeps its
    parameter objects); attach it before :class:`TrainingCheckpointer`, whose resume then takes precedence.

    Args:
        path: the previous stage's file; ``None`` or ``""`` disables the handler (random initialisation).
        student: the network that receives ``state["student"]`` (DDP wrappers are unwrapped).
        teacher: optional network that receives ``state[teacher_from]``.
        teacher_from: ``"teacher"`` (stage 2 loads both stage-1 nets) or ``"student"`` (stage 3 starts student and
            teacher from the stage-2 student).
        strict: forwarded to ``load_state_dict``.
        missing_ok: a missing file only warns and leaves the initialisation random (smoke runs of one stage).

    Raises:
        FileNotFoundError: when ``path`` is set but does not exist (and not ``missing_ok``).
        ValueError: for an unknown ``teacher_from``.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        student: torch.nn.Module,
        teacher: torch.nn.Module | None = None,
        teacher_from: str = "teacher",
        strict: bool = True,
        missing_ok: bool = False,
    ) -> None:
        if teacher_from not in ("teacher", "student"):
            raise ValueError(f"teacher_from must be 'teacher' or 'student', got {teacher_from!r}.")
        self.path = os.fspath(path) if path else None
        if self.path is not None and not os.path.isfile(self.path) and missing_ok:
            logger.warning("previous stage checkpoint %s does not exist: starting from random weights.", self.path)
            self.path = None
        if self.path is not None and not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"previous stage checkpoint {self.path} does not exist: run the earlier stage first "
                "(`python -m semizoo stages BUNDLE` runs them in order) or set pretrained_checkpoint."
            )
        self.student, self.teacher, self.teacher_from, self.strict = student, teacher, teacher_from, bool(strict)

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.path is not None:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Copy the stage's weights into the student (and teacher)."""
        from ..networks.utils import unwrap

        state = torch.load(self.path, map_location="cpu", weights_only=True)
        required = ["student"] + ([self.teacher_from] if self.teacher is not None else [])
        missing = [key for key in required if key not in state]
        if missing:
            raise KeyError(f"{self.path} holds {sorted(state)}, not {missing}: is it a stage file of this bundle?")
        unwrap(self.student).load_state_dict(state["student"], strict=self.strict)
        if self.teacher is not None:
            unwrap(self.teacher).load_state_dict(state[self.teacher_from], strict=self.strict)
        logger.info("initialised from %s (teacher from its %s)", self.path, self.teacher_from)
