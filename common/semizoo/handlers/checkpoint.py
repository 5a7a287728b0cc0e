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
import signal
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

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
    "TrainingInterrupted",
    "StopOnSignal",
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


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint of the last completed iteration."""


class StopOnSignal:
    """On SIGTERM or SIGINT (Ctrl-C), finish the current iteration, save a checkpoint, then stop with an error.

    The signal only sets a flag; at the end of the iteration ``save(engine)`` writes a checkpoint of a consistent
    state (never one from the middle of an optimizer step) and :class:`TrainingInterrupted` names it, so the run
    exits non-zero and ``resume`` continues from there. A second signal falls back to the default behaviour (stop
    at once). Under DDP the flag is all-reduced every iteration so that all ranks stop at the same iteration.
    Handlers are installed at ``STARTED`` (main thread only) and the previous ones restored at ``COMPLETED`` or at
    the first signal (not on other exceptions: an ``EXCEPTION_RAISED`` handler would stop MONAI's final save).

    Args:
        save: writes the checkpoint of ``engine``'s current iteration (skipped when ``already_saved`` says so).
        already_saved: whether the regular schedule wrote this iteration's checkpoint already.
        save_dir: where ``save`` writes (named in the message).
        signals: the signals handled.
    """

    def __init__(
        self,
        save: Callable[[Engine], None],
        already_saved: Callable[[Engine], bool] = lambda engine: False,
        save_dir: str | os.PathLike | None = None,
        signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        self.save, self.already_saved, self.signals = save, already_saved, tuple(signals)
        self.save_dir = save_dir
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._install)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)
        engine.add_event_handler(Events.COMPLETED, self._restore)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        self._restore()  # a second signal acts at once
        logger.warning("%s received: stopping after the current iteration.", signal.Signals(signum).name)

    def _install(self, engine: Engine) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("training runs outside the main thread: SIGTERM/SIGINT are not turned into checkpoints.")
            return
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.signals}

    def _restore(self, engine: Engine | None = None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _stop_requested(self) -> bool:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.received is not None
        flag = torch.tensor([0 if self.received is None else 1], device=_collective_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _check(self, engine: Engine) -> None:
        if not self._stop_requested():
            return
        if not self.already_saved(engine):
            self.save(engine)
        _barrier()  # rank 0 writes: the other ranks name the file only once it exists
        name = signal.Signals(self.received).name if self.received is not None else "a signal on another rank"
        saved = latest_checkpoint(self.save_dir) if self.save_dir is not None else None
        raise TrainingInterrupted(
            f"{name} at iteration {engine.state.iteration}: checkpoint {saved or 'saved'} written; run again with "
            "resume=true (`--resume true`) to continue from it."
        )


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _collective_device() -> torch.device:
    """The device of collectives: the current CUDA device with NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


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
        save_on_signal: on SIGTERM/SIGINT, checkpoint the last completed iteration and stop (:class:`StopOnSignal`).
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
        save_on_signal: bool = True,
    ) -> None:
        self.save_dir, self.save_dict = os.fspath(save_dir), dict(save_dict)
        self.save_interval, self.n_saved, self.resume = int(save_interval), n_saved, bool(resume)
        self.map_location, self.trainer_key, self.save_on_signal = map_location, trainer_key, bool(save_on_signal)

    def attach(self, engine: Engine) -> None:
        objects = {**self.save_dict, self.trainer_key: engine}
        ResumeHandler(self.save_dir, objects, enabled=self.resume, map_location=self.map_location).attach(engine)
        saver = AtomicCheckpointSaver(
            self.save_dir, objects, save_interval=self.save_interval, epoch_level=False, n_saved=self.n_saved
        )
        saver.attach(engine)
        if self.save_on_signal:
            interval = self.save_interval
            StopOnSignal(
                saver.interval_completed, lambda trained: trained.state.iteration % interval == 0, self.save_dir
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
