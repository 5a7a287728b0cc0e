"""The progress bar and the end-of-training figures (issue 12, item 6): what they count, average, record and resume.

Every bundle's training run shows both through the bundle runner in tests/test_bundles.py; here toy ignite engines
pin the arithmetic against values written out by hand.
"""

import io
import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from matplotlib.image import imread
from monai.data import MetaTensor
from semizoo.handlers import ProgressBar, TrainingFigures
from semizoo.handlers.progress import loss_terms, progress_enabled
from semizoo.handlers.report import overlay_slices


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_terminals_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("SEMIZOO_PROGRESS", raising=False)
    assert progress_enabled(_Terminal()) and not progress_enabled(io.StringIO())
    monkeypatch.setenv("SEMIZOO_PROGRESS", "0")
    assert not progress_enabled(_Terminal())
    monkeypatch.setenv("SEMIZOO_PROGRESS", "1")
    assert progress_enabled(io.StringIO())


def test_loss_terms_reads_a_trainers_terms_and_nothing_else():
    assert loss_terms([{"loss": torch.tensor(0.25), "lam": 0.5}]) == {"loss": 0.25, "lam": 0.5}
    cases = [{"pred": torch.zeros(2, 4, 4), "label": torch.zeros(1, 4, 4)}]
    assert loss_terms(cases) == {} and loss_terms(None) == {}


def _trainer(max_iterations: int) -> Engine:
    """An ignite engine that stops after ``max_iterations`` like semizoo's trainer; output ``[terms]``."""

    def step(engine, batch):
        return [
            {"loss": torch.tensor(float(engine.state.iteration)), "aux": torch.tensor(2.0 * engine.state.iteration)}
        ]

    engine = Engine(step)
    engine.max_iterations = max_iterations

    @engine.on(Events.ITERATION_COMPLETED)
    def _stop(engine):
        if engine.state.iteration >= max_iterations:
            engine.terminate()

    return engine


def test_progress_bar_spans_the_whole_run_and_shows_the_terms():
    stream = io.StringIO()
    engine = _trainer(max_iterations=5)
    ProgressBar("train", enabled=True, stream=stream, mininterval=0).attach(engine)
    engine.run(range(4), max_epochs=3)  # 12 planned iterations, max_iterations stops at 5
    text = stream.getvalue()
    assert "| 5/5 [" in text and "/12" not in text
    assert "loss=5, aux=10" in text  # the last iteration's terms


def test_progress_bar_of_a_resumed_run_starts_at_the_checkpointed_iteration():
    stream = io.StringIO()
    engine = _trainer(max_iterations=6)
    ProgressBar("train", enabled=True, stream=stream, mininterval=0).attach(engine)
    engine.load_state_dict({"iteration": 3, "epoch_length": 4, "max_epochs": 2})
    engine.run(range(4))
    text = stream.getvalue()
    assert "| 6/6 [" in text and "| 1/6 [" not in text and "| 4/6 [" in text


def test_a_disabled_progress_bar_attaches_nothing():
    engine = _trainer(max_iterations=2)
    ProgressBar(enabled=False, stream=io.StringIO()).attach(engine)
    assert len(engine._event_handlers[Events.ITERATION_COMPLETED]) == 1  # only the stop rule


def _case(index: int, size: int = 8) -> dict:
    label = MetaTensor(torch.zeros(1, size, size), meta={"filename_or_obj": f"/data/case{index}.h5"})
    label[0, 2:5, 2:5] = 1
    return {"image": torch.rand(1, size, size), "label": label, "pred": torch.stack([1 - label[0], label[0]])}


def _validator(figures_of_trainer: list) -> Engine:
    """Three cases per run; its metric is 0.1 × the trainer's iteration (set before TrainingFigures reads it)."""
    validator = Engine(lambda engine, batch: [batch])

    @validator.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics["val_mean_dice"] = 0.1 * figures_of_trainer[0].state.iteration

    return validator


def _run_with_figures(tmp_path, iterations: int, stop_at: int | None = None, state: dict | None = None, at: int = 0):
    holder: list = []
    validator = _validator(holder)
    trainer = _trainer(max_iterations=iterations)
    holder.append(trainer)

    @trainer.on(Events.ITERATION_COMPLETED(every=2))
    def _validate(engine):
        validator.run([_case(i) for i in range(3)])

    figures = TrainingFigures(tmp_path, validator=validator, interval=3, samples=2)
    if state is not None:
        figures.load_state_dict(state)
    figures.attach(trainer)
    if stop_at is not None:  # killed right after the checkpoint of `stop_at`, which comes after the figures' record

        def _kill(engine):
            raise _Killed

        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), _kill)
    if state is not None:
        trainer.load_state_dict({"iteration": at, "epoch_length": 10, "max_epochs": 1})
        trainer.run(range(10))
    elif stop_at is not None:
        with pytest.raises(_Killed):
            trainer.run(range(10), max_epochs=1)
    else:
        trainer.run(range(10), max_epochs=1)
    return figures, trainer


class _Killed(Exception):
    pass


def test_training_figures_are_written_after_every_other_completed_handler(tmp_path):
    """A validation at COMPLETED (ScheduledValidationHandler's final one) is in the written curves."""
    trainer = _trainer(max_iterations=2)
    validator = Engine(lambda engine, batch: [batch])
    figures = TrainingFigures(tmp_path, validator=validator, samples=0)
    figures.attach(trainer)

    @trainer.on(Events.COMPLETED)
    def _final_validation(engine):
        validator.run([_case(0)])
        validator.state.metrics["val_mean_dice"] = 0.5  # after the run: recorded below by hand, as a metric would be
        figures.record_validation(validator)

    trainer.run(range(2), max_epochs=1)
    saved = json.loads((tmp_path / "learning_curves.json").read_text())
    assert saved["validation"]["val_mean_dice"] == [[2.0, 0.5]]


def test_training_figures_average_windows_and_record_validations(tmp_path):
    figures, _ = _run_with_figures(tmp_path, iterations=7)
    # loss = iteration: windows {1,2,3}, {4,5,6}, then the partial {7} flushed at the end
    assert figures.loss["loss"] == [[3.0, 2.0], [6.0, 5.0], [7.0, 7.0]]
    assert figures.loss["aux"] == [[3.0, 4.0], [6.0, 10.0], [7.0, 14.0]]
    assert np.allclose(figures.validation["val_mean_dice"], [[2.0, 0.2], [4.0, 0.4], [6.0, 0.6]])
    saved = json.loads((tmp_path / "learning_curves.json").read_text())
    assert saved["loss"] == figures.loss and saved["interval"] == 3
    curves, samples = imread(tmp_path / "learning_curves.png"), imread(tmp_path / "sample_predictions.png")
    assert curves.shape[1] > curves.shape[0] and samples.shape[0] > 0
    assert [name for _, (name, _) in figures._sample_items] == ["case0", "case1"]  # the first `samples` cases


def test_training_figures_resume_to_the_same_history(tmp_path):
    whole, _ = _run_with_figures(tmp_path / "whole", iterations=7)
    first, trainer = _run_with_figures(tmp_path / "first", iterations=7, stop_at=4)
    assert not (tmp_path / "first" / "learning_curves.json").exists()
    torch.save({"figures": first.state_dict()}, tmp_path / "checkpoint.pt")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["figures"]
    resumed, _ = _run_with_figures(tmp_path / "resumed", iterations=7, state=state, at=4)
    assert resumed.loss == whole.loss and resumed.validation == whole.validation


def test_overlay_slices_picks_the_slice_with_most_reference_foreground():
    ref = np.zeros((6, 6, 5), dtype=np.int64)
    ref[1:3, 1:3, 1] = 1
    ref[1:5, 1:5, 3] = 2
    image, pred = np.random.rand(6, 6, 5), np.zeros_like(ref)
    pred[..., 3] = 7
    sliced = overlay_slices(image, ref, pred, axis=2)
    assert np.array_equal(sliced[0], image[..., 3]) and np.array_equal(sliced[1], ref[..., 3])
    assert (sliced[2] == 7).all()
    two_d = overlay_slices(image[..., 0], ref[..., 0], pred[..., 0], axis=2)
    assert two_d[0] is image[..., 0] or np.array_equal(two_d[0], image[..., 0])
