import random

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from semizoo.handlers import RNGState, latest_checkpoint


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    random.gauss(0, 1)
    torch.save({"rng": RNGState().state_dict()}, tmp_path / "c.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    RNGState().load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1).item())
    assert got == expected


def test_latest_checkpoint_picks_highest_iteration(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for name in ["checkpoint_iteration=200.pt", "checkpoint_iteration=1000.pt", "checkpoint_iteration=400.pt"]:
        (tmp_path / name).write_bytes(b"x")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_iteration=1000.pt")


def test_atomic_checkpoint_saver_writes_complete_readable_files(tmp_path):
    from semizoo.handlers import AtomicCheckpointSaver

    net = torch.nn.Linear(3, 2)
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(
        str(tmp_path),
        {"model": net},
        save_final=True,
        final_filename="model_final.pt",
        save_interval=2,
        epoch_level=False,
        n_saved=1,
    )
    saver.attach(engine)
    engine.run([0, 1, 2, 3], max_epochs=1)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model_final.pt", "model_iteration=4.pt"]  # no temporary files left, old interval removed
    state = torch.load(tmp_path / "model_final.pt", weights_only=True)
    assert torch.equal(state["weight"], net.weight)
    assert (tmp_path / "model_final.pt").stat().st_mode & 0o777 == 0o644
    for checkpoint in (saver._final_checkpoint, saver._interval_checkpoint):
        assert checkpoint.save_handler._atomic


def test_every_filters_events():
    from semizoo.handlers import every

    keep = every(50)
    assert [i for i in range(1, 201) if keep(None, i)] == [50, 100, 150, 200]
    with pytest.raises(ValueError, match="interval"):
        every(0)


def test_scheduled_validation_starts_at_start_then_every_interval():
    from semizoo.handlers import ScheduledValidationHandler

    validator_runs = []

    class _Validator:
        def run(self, epoch):
            validator_runs.append(trainer.state.iteration)

    trainer = Engine(lambda e, b: None)
    handler = ScheduledValidationHandler(interval=200, start=2000)
    handler.validator = _Validator()  # a stand-in for a MONAI Evaluator (the setter checks the type)
    handler.attach(trainer)
    trainer.run(range(2500), max_epochs=1)  # iterations 1..2500
    assert validator_runs == [2000, 2200, 2400]
    validator_runs.clear()
    short = Engine(lambda e, b: None)
    handler = ScheduledValidationHandler(interval=200, start=2000)
    handler.validator = _Validator()
    handler.attach(short)
    trainer = short
    short.run(range(50), max_epochs=1)  # never reached 2000: validates once at the end
    assert validator_runs == [50]
    with pytest.raises(ValueError, match="start"):
        ScheduledValidationHandler(interval=2, start=-1)


def test_main_process_handlers_keeps_all_without_ddp_and_drops_writers_on_other_ranks(monkeypatch):
    from monai.handlers import CheckpointSaver, LrScheduleHandler, StatsHandler, TensorBoardStatsHandler
    from semizoo.handlers import AtomicCheckpointSaver, NaNGuard, TrainingCheckpointer, main_process_handlers

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    keep = [
        NaNGuard(),
        LrScheduleHandler(torch.optim.lr_scheduler.StepLR(optimizer, 1), print_lr=False),
        TrainingCheckpointer("/nonexistent", {}),
    ]
    writers = [
        StatsHandler(),
        TensorBoardStatsHandler.__new__(TensorBoardStatsHandler),
        CheckpointSaver("/nonexistent", {"x": optimizer}),
        AtomicCheckpointSaver("/nonexistent", {"x": optimizer}),
    ]
    handlers = [writers[0], keep[0], writers[1], keep[1], writers[2], keep[2], writers[3]]
    assert main_process_handlers(handlers) == handlers and main_process_handlers(None) == []
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    assert main_process_handlers(handlers) == keep
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    assert main_process_handlers(handlers) == handlers


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


@pytest.mark.parametrize("teacher_from", ["teacher", "student"])
def test_stage_loader_chains_student_and_teacher(tmp_path, teacher_from):
    from semizoo.handlers import StageLoader

    student_saved, teacher_saved = _net(1), _net(2)
    torch.save({"student": student_saved.state_dict(), "teacher": teacher_saved.state_dict()}, tmp_path / "s.pt")
    student, teacher = _net(3), _net(4)
    weight = student[0].weight
    engine = Engine(lambda e, b: None)
    StageLoader(tmp_path / "s.pt", torch.nn.DataParallel(student), teacher, teacher_from=teacher_from).attach(engine)
    assert not torch.equal(student[0].weight, student_saved[0].weight)  # nothing happens before STARTED
    engine.run([0], max_epochs=1)
    assert student[0].weight is weight  # in place: an optimizer built on it keeps working
    assert torch.equal(student[0].weight, student_saved[0].weight)
    source = teacher_saved if teacher_from == "teacher" else student_saved
    assert torch.equal(teacher[0].weight, source[0].weight)


def test_stage_loader_fails_early_naming_the_missing_file(tmp_path):
    from semizoo.handlers import StageLoader

    with pytest.raises(FileNotFoundError, match="stage1.pt"):
        StageLoader(tmp_path / "stage1.pt", _net(0))
    StageLoader(None, _net(0)).attach(Engine(lambda e, b: None))  # disabled: random initialisation
    assert StageLoader(tmp_path / "stage1.pt", _net(0), missing_ok=True).path is None
    torch.save({"model": _net(0).state_dict()}, tmp_path / "model.pt")
    with pytest.raises(KeyError, match="stage file"):
        StageLoader(tmp_path / "model.pt", _net(0))()
