import math

import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointSaver, LrScheduleHandler, StatsHandler
from monai.utils import set_determinism
from semizoo.data import two_stream_loader
from semizoo.engines import SemiSupervisedTrainer
from semizoo.handlers import NaNGuard, NonFiniteLossError, ResumeHandler, RNGState, poly_scheduler
from semizoo.methods import MeanTeacher, Method, Supervised
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
    manual_optimization = True

    def __init__(self, network):
        super().__init__(network)
        self.received = None

    def train_step(self, labeled, unlabeled, optimizers=None):
        self.received = optimizers
        loss = self.network(labeled["image"]).pow(2).mean()
        optimizers["optimizer"].zero_grad()
        loss.backward()
        optimizers["optimizer"].step()
        return {"loss": loss.detach()}


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
    manual = _Manual(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = first.weight.detach().clone()
    SemiSupervisedTrainer("cpu", None, loader, net, manual, optimizer, max_iterations=1).run()
    assert manual.received == {"optimizer": optimizer}
    assert not torch.equal(before, first.weight)


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
