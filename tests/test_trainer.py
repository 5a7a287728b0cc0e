import ast
import math
import os
import pickle
import signal
from pathlib import Path

import pytest
import semizoo
import torch
from ignite.engine import Events
from monai.handlers import CheckpointSaver, LrScheduleHandler, StatsHandler
from monai.utils import set_determinism
from semizoo.data import two_stream_loader
from semizoo.engines import SemiSupervisedTrainer
from semizoo.handlers import (
    NaNGuard,
    NonFiniteLossError,
    ResumeHandler,
    RNGState,
    TrainingCheckpointer,
    TrainingInterrupted,
)
from semizoo.methods import MeanTeacher, Method, Supervised
from semizoo.schedules import poly_scheduler
from toy import SquaresDataset, tiny_net


def _setup(method_name="mean_teacher", unlabeled=True, seed=0, **method_kwargs):
    set_determinism(seed)
    net = tiny_net()
    if method_name == "mean_teacher":
        method = MeanTeacher(net, consistency_start=0, consistency_rampup=0, **method_kwargs)
    else:
        method = Supervised(net)
    loader = two_stream_loader(
        SquaresDataset(12, True), SquaresDataset(24, False, seed=1) if unlabeled else None, 8, 4, seed=seed
    )
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    return net, method, loader, optimizer


@pytest.mark.parametrize("method_name", ["supervised", "mean_teacher"])
def test_trainer_learns_the_toy_task(method_name):
    net, method, loader, optimizer = _setup(method_name)
    losses = []
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, method, optimizer, max_iterations=60)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output[0]["loss"].item()))
    trainer.run()
    assert trainer.state.iteration == 60 and len(losses) == 60
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first
    if method_name == "mean_teacher":
        assert set(trainer.state.output[0]) == {"loss", "loss_sup", "loss_cons", "cons_weight"}


def test_output_is_a_one_item_list_that_stats_handler_logs(capfd):
    net, method, loader, optimizer = _setup()
    handler = StatsHandler(name="semizoo.test", output_transform=lambda x: x[0], iteration_log=True)
    trainer = SemiSupervisedTrainer(
        "cpu", None, loader, net, method, optimizer, max_iterations=2, train_handlers=[handler]
    )
    trainer.run()
    logged = "".join(capfd.readouterr())
    assert isinstance(trainer.state.output, list) and len(trainer.state.output) == 1
    assert not any(v.requires_grad for v in trainer.state.output[0].values())
    assert "loss_cons:" in logged and "cons_weight:" in logged and "loss_sup:" in logged


def test_max_iterations_stops_mid_epoch_and_max_epochs_alone():
    net, method, loader, optimizer = _setup()
    assert len(loader) == 3
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, method, optimizer, max_iterations=7)
    trainer.run()
    assert trainer.state.iteration == 7
    net, method, loader, optimizer = _setup()
    trainer = SemiSupervisedTrainer("cpu", 2, loader, net, method, optimizer)
    trainer.run()
    assert trainer.state.iteration == 6
    trainer = SemiSupervisedTrainer("cpu", 1, loader, net, method, optimizer, max_iterations=100)
    trainer.run()
    assert trainer.state.iteration == 3  # whichever comes first
    with pytest.raises(ValueError, match="max_epochs or max_iterations"):
        SemiSupervisedTrainer("cpu", None, loader, net, method, optimizer)


def test_method_iteration_and_teacher_ema_follow_the_trainer():
    net, method, loader, optimizer = _setup()
    seen = []
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, method, optimizer, max_iterations=1)
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(method.iteration))
    trainer.run()
    # alpha = min(1 - 1/1, 0.99) = 0 after the first step: the teacher equals the student
    for teacher_p, student_p in zip(method.teacher.parameters(), net.parameters()):
        assert torch.equal(teacher_p, student_p)
    before = [p.detach().clone() for p in method.teacher.parameters()]
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, method, optimizer, max_iterations=2)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(method.iteration))
    trainer.run()
    assert seen[-1] == 1
    # second run: iteration 0 again (fresh trainer) -> alpha 0 again; check the formula on a manual step instead
    method.iteration = 1
    student_now = [p.detach().clone() for p in net.parameters()]
    teacher_now = [p.detach().clone() for p in method.teacher.parameters()]
    method.after_optimizer_step()
    for t_old, s, t_new in zip(teacher_now, student_now, method.teacher.parameters()):
        assert torch.allclose(t_new, 0.5 * t_old + 0.5 * s)
    assert before  # teacher existed before


def test_supervised_fallback_in_the_trainer():
    net, method, loader, optimizer = _setup(unlabeled=False)
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, method, optimizer, max_iterations=3)
    trainer.run()
    assert trainer.state.output[0]["loss_cons"].item() == 0.0
    assert trainer.state.batch[1] is None and trainer.state.batch[0]["image"].shape[0] == 4


class _NaNAt(Method):
    def __init__(self, network, at):
        super().__init__(network)
        self.at = at

    def train_step(self, labeled, unlabeled):
        out = self.network(labeled["image"]).mean()
        bad = out * float("nan") if self.iteration == self.at else out
        return {"loss": bad, "loss_sup": out, "loss_extra": out * 2}


def test_nan_guard_stops_before_the_step_naming_iteration_and_terms():
    net, _, loader, optimizer = _setup("supervised")
    method = _NaNAt(net, at=2)
    snapshot = {}
    trainer = SemiSupervisedTrainer(
        "cpu", None, loader, net, method, optimizer, max_iterations=10, train_handlers=[NaNGuard()]
    )
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: snapshot.update({k: v.clone() for k, v in net.named_parameters()})
    )
    with pytest.raises(NonFiniteLossError, match=r"\['loss'\] at iteration 3: loss=nan, loss_sup=.*loss_extra="):
        trainer.run()
    assert trainer.state.iteration == 3
    for key, value in net.named_parameters():  # weights of iteration 2 untouched by the nan step
        assert torch.equal(value, snapshot[key]), key


class _TwoOptimizers(Method):
    def train_step(self, labeled, unlabeled):
        return {"loss": self.network(labeled["image"]).pow(2).mean()}


class _Manual(Method):
    """Two networks, two optimizers, stepped by the method (the shape of EPL's cross pseudo supervision)."""

    manual_optimization = True

    def __init__(self, network, other, nan_at=-1):
        super().__init__(network)
        self.other, self.nan_at, self.received = other, nan_at, None

    def train_step(self, labeled, unlabeled, step=None):
        self.received = step.optimizers
        step.zero_grad()
        loss_a = self.network(labeled["image"]).pow(2).mean()
        loss_b = self.other(labeled["image"]).pow(2).mean()
        if self.iteration == self.nan_at:
            loss_b = loss_b * float("nan")
        step.loss_completed({"loss": loss_a + loss_b, "loss_a": loss_a, "loss_b": loss_b})
        step.backward(loss_a + loss_b)
        step.step("a")
        step.step("b")
        return {"loss": (loss_a + loss_b).detach(), "loss_a": loss_a.detach(), "loss_b": loss_b.detach()}


def _two_networks():
    net, _, loader, _ = _setup("supervised")
    other = tiny_net()
    optimizers = {
        "a": torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        "b": torch.optim.Adam(other.parameters(), lr=0.1),
    }
    return net, other, loader, optimizers


def test_several_optimizers_are_all_stepped_and_manual_methods_get_them():
    net, _, loader, _ = _setup("supervised")
    first, second = net[0], net[4]
    optimizers = {
        "a": torch.optim.SGD(first.parameters(), lr=0.1),
        "b": torch.optim.SGD(second.parameters(), lr=0.1),
    }
    before = (first.weight.detach().clone(), second.weight.detach().clone())
    SemiSupervisedTrainer("cpu", None, loader, net, _TwoOptimizers(net), optimizers, max_iterations=1).run()
    assert not torch.equal(before[0], first.weight) and not torch.equal(before[1], second.weight)
    net, other, loader, optimizers = _two_networks()
    manual = _Manual(net, other)
    before = (net[0].weight.detach().clone(), other[0].weight.detach().clone())
    SemiSupervisedTrainer("cpu", None, loader, net, manual, optimizers, max_iterations=1).run()
    assert manual.received == optimizers
    assert not torch.equal(before[0], net[0].weight) and not torch.equal(before[1], other[0].weight)


def test_engine_optimizer_of_several_optimizers_keeps_names_and_lists_every_group():
    """MONAI's MLFlowHandler logs ``engine.optimizer.param_groups``: every optimizer's groups, in order."""
    net, other, loader, optimizers = _two_networks()
    optimizers["b"].param_groups[0]["lr"] = 0.5
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, _Manual(net, other), optimizers, max_iterations=1)
    assert trainer.optimizer["a"] is optimizers["a"] and trainer.optimizer["b"] is optimizers["b"]
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [0.1, 0.5]
    single = torch.optim.SGD(net.parameters(), lr=0.1)
    assert (
        SemiSupervisedTrainer("cpu", None, loader, net, _Manual(net, other), single, max_iterations=1).optimizer
        is single
    )


class _EventRecorder:
    """Records IterationEvents and, at each, whether the weights already moved and whether gradients exist."""

    EVENTS = ("FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED")

    def __init__(self, trainer, network):
        from monai.engines.utils import IterationEvents

        self.seen, self.network = [], network
        self.start = None
        trainer.add_event_handler(Events.ITERATION_STARTED, self._snapshot)
        for name in self.EVENTS:
            trainer.add_event_handler(getattr(IterationEvents, name), self._record, name)

    def _snapshot(self, engine):
        self.start = [p.detach().clone() for p in self.network.parameters()]

    def _record(self, engine, name):
        moved = any(not torch.equal(a, p) for a, p in zip(self.start, self.network.parameters()))
        has_grad = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in self.network.parameters())
        self.seen.append((name, moved, has_grad))


def test_events_fire_in_monai_order_for_automatic_and_manual_methods():
    expected = [
        ("FORWARD_COMPLETED", False, False),
        ("LOSS_COMPLETED", False, False),
        ("BACKWARD_COMPLETED", False, True),  # gradients set, parameters not yet stepped
        ("MODEL_COMPLETED", True, True),
    ]
    net, method, loader, optimizer = _setup("supervised")
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, method, optimizer, max_iterations=2)
    recorder = _EventRecorder(trainer, net)
    trainer.run()
    assert recorder.seen == expected * 2
    net, other, loader, optimizers = _two_networks()
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, _Manual(net, other), optimizers, max_iterations=2)
    recorder = _EventRecorder(trainer, net)
    trainer.run()
    assert recorder.seen == expected * 2


def _state(*objects):
    """Copies of the parameters of modules (a method's include its teacher) and of optimizers' full state.

    BatchNorm running statistics are left out: the forward of the failing step has run, as in MONAI.
    """
    import copy

    return [
        (
            {k: v.detach().clone() for k, v in o.named_parameters()}
            if isinstance(o, torch.nn.Module)
            else copy.deepcopy(o.state_dict())
        )
        for o in objects
    ]


def _assert_same_state(before, after):
    def walk(a, b, where):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), where
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for key in a:
                walk(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{where}[{i}]")
        else:
            assert a == b, where

    for i, (a, b) in enumerate(zip(before, after)):
        walk(a, b, f"object {i}")


class _MeanTeacherNaN(MeanTeacher):
    def train_step(self, labeled, unlabeled):
        terms = super().train_step(labeled, unlabeled)
        if self.iteration == 2:
            terms["loss_cons"] = terms["loss_cons"] * float("nan")
            terms["loss"] = terms["loss"] + terms["loss_cons"]
        return terms


def test_nan_loss_leaves_weights_optimizer_state_and_teacher_unchanged_automatic():
    net, _, loader, optimizer = _setup()
    method = _MeanTeacherNaN(net, consistency_start=0, consistency_rampup=0)
    trainer = SemiSupervisedTrainer(
        "cpu", None, loader, net, method, optimizer, max_iterations=10, train_handlers=[NaNGuard()]
    )
    snapshots = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: snapshots.append(_state(net, optimizer, method)))
    with pytest.raises(NonFiniteLossError, match="loss_cons"):
        trainer.run()
    assert trainer.state.iteration == 3 and len(snapshots) == 2
    _assert_same_state(snapshots[-1], _state(net, optimizer, method))  # method parameters = the EMA teacher
    assert any(name.startswith("teacher.") for name, _ in method.named_parameters())
    assert optimizer.state_dict()["state"]  # momentum buffers exist, and are unchanged


def test_nan_loss_leaves_both_networks_and_optimizers_unchanged_manual():
    net, other, loader, optimizers = _two_networks()
    method = _Manual(net, other, nan_at=2)
    trainer = SemiSupervisedTrainer(
        "cpu", None, loader, net, method, optimizers, max_iterations=10, train_handlers=[NaNGuard()]
    )
    objects = (net, other, optimizers["a"], optimizers["b"])
    snapshots = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: snapshots.append(_state(*objects)))
    with pytest.raises(NonFiniteLossError, match="loss_b"):
        trainer.run()
    assert trainer.state.iteration == 3 and len(snapshots) == 2
    _assert_same_state(snapshots[-1], _state(*objects))


class _SkipsTheCheck(_Manual):
    def train_step(self, labeled, unlabeled, step=None):
        loss = self.network(labeled["image"]).pow(2).mean()
        step.backward(loss)
        return {"loss": loss.detach()}


def test_a_manual_method_cannot_step_or_backprop_before_the_loss_check():
    net, other, loader, optimizers = _two_networks()
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, _SkipsTheCheck(net, other), optimizers, max_iterations=1)
    with pytest.raises(RuntimeError, match="loss_completed"):
        trainer.run()


def _run_with_checkpoints(tmp_path, max_iterations, resume):
    net, method, loader, optimizer = _setup(seed=3)
    scheduler = poly_scheduler(optimizer, max_iterations=8)
    save_dict = {
        "network": net,
        "method": method,
        "optimizer": optimizer,
        "lr_scheduler": scheduler,
        "loader": loader,
        "rng": RNGState(),
    }
    lr_handler = LrScheduleHandler(scheduler, epoch_level=False, print_lr=False)
    trainer = SemiSupervisedTrainer(
        "cpu", None, loader, net, method, optimizer, max_iterations=max_iterations, train_handlers=[lr_handler]
    )
    save_dict["trainer"] = trainer
    ResumeHandler(tmp_path, save_dict, enabled=resume).attach(trainer)
    CheckpointSaver(str(tmp_path), save_dict, save_interval=2, epoch_level=False, n_saved=None).attach(trainer)
    trainer.run()
    return net, method


def test_resume_is_bit_exact(tmp_path):
    continuous, continuous_method = _run_with_checkpoints(tmp_path / "a", 8, resume=False)
    _run_with_checkpoints(tmp_path / "b", 4, resume=False)  # interrupted after 4 of 8 iterations
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "checkpoint_iteration=2.pt",
        "checkpoint_iteration=4.pt",
    ]
    resumed, resumed_method = _run_with_checkpoints(tmp_path / "b", 8, resume=True)
    for (key, value), other in zip(continuous.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(value, other), key
    for value, other in zip(continuous_method.state_dict().values(), resumed_method.state_dict().values()):
        assert torch.equal(value, other)


def test_model_pt_is_a_plain_state_dict_of_the_network(tmp_path):
    net, method, loader, optimizer = _setup()
    saver = CheckpointSaver(str(tmp_path), {"model": net}, save_final=True, final_filename="model.pt")
    SemiSupervisedTrainer("cpu", None, loader, net, method, optimizer, max_iterations=2, train_handlers=[saver]).run()
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert list(state) == list(net.state_dict())
    fresh = tiny_net()
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))


def test_trainer_rejects_bad_inputs():
    net, method, loader, optimizer = _setup()
    with pytest.raises(TypeError, match="semizoo.methods.Method"):
        SemiSupervisedTrainer("cpu", 1, loader, net, object(), optimizer)
    with pytest.raises(TypeError, match="optimizer"):
        SemiSupervisedTrainer("cpu", 1, loader, net, method, "sgd")
    trainer = SemiSupervisedTrainer("cpu", 1, [{"image": torch.zeros(1)}], net, method, optimizer)
    with pytest.raises(ValueError, match="expects \\(labeled, unlabeled\\) batches"):
        trainer.run()


def test_sigint_checkpoints_the_completed_iteration_stops_and_restores_the_handler(tmp_path):
    net, method, loader, optimizer = _setup()
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, method, optimizer, max_iterations=10)
    # registered first, so the signal arrives before the checkpointer's end-of-iteration check
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda engine: os.kill(os.getpid(), signal.SIGINT))
    TrainingCheckpointer(tmp_path, {"network": net, "optimizer": optimizer}, save_interval=100).attach(trainer)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match=r"SIGINT at iteration 3: checkpoint .*checkpoint_iteration=3\.pt"):
        trainer.run()
    assert signal.getsignal(signal.SIGINT) is before
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoint_iteration=3.pt"]
    saved = torch.load(tmp_path / "checkpoint_iteration=3.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == 3
    assert all(torch.equal(saved["network"][k], v) for k, v in net.state_dict().items())


def _torch_loads(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
        if isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
    ]


def test_every_checkpoint_load_is_weights_only():
    """Library code and bundle configs load checkpoints with ``weights_only=True`` (no pickled code runs)."""
    package = Path(semizoo.__file__).parent
    unsafe, found = [], 0
    for path in sorted(package.rglob("*.py")):
        for call in _torch_loads(ast.parse(path.read_text())):
            found += 1
            flags = {k.arg: k.value for k in call.keywords}
            if not (isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True):
                unsafe.append(f"{path.name}:{call.lineno}")
    bundles = Path(__file__).resolve().parents[1] / "bundles"
    for config in sorted(bundles.glob("*/configs/*.json")):
        for line in config.read_text().splitlines():
            if "torch.load(" in line and "weights_only=True" not in line:
                unsafe.append(f"{config.parent.parent.name}/{config.name}")
    assert found >= 5, "the scan must see the library's checkpoint loads"
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


class _Payload:
    """Anything but tensors and containers: ``weights_only`` loading must refuse it."""


def test_resume_refuses_a_checkpoint_that_carries_pickled_objects(tmp_path):
    net, method, loader, optimizer = _setup()
    torch.save({"network": net.state_dict(), "extra": _Payload()}, tmp_path / "checkpoint_iteration=2.pt")
    trainer = SemiSupervisedTrainer("cpu", None, loader, net, method, optimizer, max_iterations=3)
    ResumeHandler(tmp_path, {"network": net}).attach(trainer)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        trainer.run()
