"""ACTION pre-training (stages 1-2): EMA, queues, stage composition and gradients (action.md §4, §11)."""

from __future__ import annotations

import pytest
import torch
from semizoo.engines import SemiSupervisedTrainer
from semizoo.losses import queue_logits, soft_label_kl
from semizoo.methods import create
from semizoo.methods.action_pretrain import ActionPretrain
from semizoo.networks import ActionDistillHeads, SSL4MISUNet, UAMTVNet


def _acdc(stage="full", queue_size=4, **kwargs):
    torch.manual_seed(0)
    network = SSL4MISUNet(1, 4)
    heads = ActionDistillHeads(2, 4, 256, 16, 2)
    method = ActionPretrain(
        network, heads, (32, 32), stage=stage, queue_size=queue_size, window_size=16, window_step=8, **kwargs
    )
    return network, heads, method.train()


def _batches(n_labeled=2, n_unlabeled=2, size=(32, 32)):
    generator = torch.Generator().manual_seed(3)
    labeled = {
        "image": torch.rand(n_labeled, 1, *size, generator=generator),
        "label": torch.randint(0, 4, (n_labeled, 1, *size), generator=generator),
    }
    return labeled, {"image": torch.rand(n_unlabeled, 1, *size, generator=generator)}


def test_registered_and_rejects_bad_settings():
    network, heads, _ = _acdc()
    created = create("action_pretrain", network=network, heads=heads, patch_size=(256, 256))
    assert isinstance(created, ActionPretrain) and created.windows == 36  # ACDC: 6 x 6 windows of 64, step 32
    with pytest.raises(ValueError, match="stage"):
        ActionPretrain(network, heads, (32, 32), stage="decoder")
    with pytest.raises(ValueError, match="spatial dimensions"):
        ActionPretrain(network, heads, (32, 32, 16))


def test_queue_pointer_wraps_and_holds_the_teacher_keys():
    network, heads, method = _acdc(queue_size=8)
    labeled, unlabeled = _batches()  # batch 4: the pointer goes 0 -> 4 -> 0
    keys = []
    hook = heads.k_latent.register_forward_hook(lambda module, args, out: keys.append(out.detach().clone()))
    for expected_pointer in (4, 0):
        method.train_step(labeled, unlabeled)
        assert int(method.queue_pointer) == expected_pointer
    hook.remove()
    assert torch.equal(method.queue_latent[:4], keys[0]) and torch.equal(method.queue_latent[4:], keys[1])
    _, _, odd = _acdc(queue_size=6)
    with pytest.raises(ValueError, match="multiple of the batch size"):
        odd.train_step(labeled, unlabeled)


def test_teacher_is_moved_by_ema_at_the_start_of_the_step():
    network, _, method = _acdc(ema_decay=0.9)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.5)
    teacher_before = {k: v.clone() for k, v in method.teacher.named_parameters()}
    student = {k: v.clone() for k, v in network.named_parameters()}
    method.train_step(*_batches())
    for name, value in method.teacher.named_parameters():
        assert torch.allclose(value, 0.9 * teacher_before[name] + 0.1 * student[name]), name
        assert not value.requires_grad


def test_la_moves_the_key_heads_towards_the_query_heads():
    torch.manual_seed(0)
    network = UAMTVNet(1, 2, has_dropout=True)
    heads = ActionDistillHeads(3, 2, 128, 8, 2)
    method = ActionPretrain(
        network, heads, (32, 32, 16), spatial_dims=3, queue_size=2, window_size=8, window_step=4,
        window_end="inclusive", ema_key_heads=True, ema_decay=0.5, queue_norm_dim=-1,
    ).train()  # fmt: skip
    key_before = heads.k_latent[2].weight.detach().clone()
    query = heads.q_latent[2].weight.detach().clone()
    generator = torch.Generator().manual_seed(0)
    labeled = {"image": torch.rand(1, 1, 32, 32, 16, generator=generator), "label": torch.ones(1, 1, 32, 32, 16)}
    terms = method.train_step(labeled, {"image": torch.rand(1, 1, 32, 32, 16, generator=generator)})
    assert torch.allclose(heads.k_latent[2].weight, 0.5 * key_before + 0.5 * query)
    assert all(torch.isfinite(v) for v in terms.values())


def test_stage_one_trains_the_encoder_only_and_stage_two_adds_the_output_branch():
    network, heads, method = _acdc(stage="encoder")
    terms = method.train_step(*_batches())
    assert terms["loss_output"] == 0 and terms["loss_sup"] == 0
    assert terms["loss"].item() == pytest.approx(terms["loss_latent"].item())
    terms["loss"].backward()
    decoder = [p.grad for p in network.decoder.parameters()] + [p.grad for p in heads.q_out.parameters()]
    assert all(g is not None and not g.any() for g in decoder)  # anchored (DDP), but zero
    assert any(p.grad.abs().sum() > 0 for p in network.encoder.parameters())
    network, heads, method = _acdc(stage="full", latent_weight=2.0, output_weight=3.0)
    terms = method.train_step(*_batches())
    assert terms["loss_output"] > 0 and terms["loss_sup"] > 0
    recomposed = terms["loss_sup"] + 2.0 * terms["loss_latent"] + 3.0 * terms["loss_output"]
    assert terms["loss"].item() == pytest.approx(recomposed.item(), rel=1e-6)


def test_latent_loss_is_the_kl_of_queue_logits_before_the_enqueue():
    network, heads, method = _acdc(stage="encoder")
    queue = method.queue_latent.clone()
    captured = {}
    heads.register_forward_hook(
        lambda m, args, kwargs, out: captured.setdefault(kwargs["branch"], out), with_kwargs=True
    )
    terms = method.train_step(*_batches())
    expected = soft_label_kl(
        queue_logits(captured["student"]["latent"], queue, 0.1),
        queue_logits(captured["teacher"]["latent"], queue, 0.01),
    )
    assert terms["loss_latent"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("detach, key_grad", [(False, True), (True, False)], ids=["official", "detached"])
def test_detaching_the_teacher_targets_stops_the_key_heads_learning(detach, key_grad):
    _, heads, method = _acdc(stage="full", detach_teacher_targets=detach)
    method.train_step(*_batches())["loss"].backward()
    assert bool(heads.k_latent[2].weight.grad.abs().sum() > 0) is key_grad
    assert bool(heads.k_out[1].weight.grad.abs().sum() > 0) is key_grad


def test_actionpp_temperatures_follow_the_cosine_schedule():
    _, _, method = _acdc(temperature_period_frac=0.1, iters_per_epoch=10, max_iterations=990)
    assert method.temperatures(0) == pytest.approx((1.0, 1.0))  # e = 0: t_high
    half_period = int(0.05 * (990 // 10 + 1)) * 10  # epoch 5 of a 10-epoch period
    assert method.temperatures(half_period) == pytest.approx((0.1, 0.01))
    _, _, plain = _acdc()
    assert plain.temperatures(500) == (0.1, 0.01)


def test_state_round_trip_restores_queues_teacher_and_views(tmp_path):
    network, heads, method = _acdc()
    method.train_step(*_batches())
    rng = torch.get_rng_state()  # dropout draws (RNGState handles this in training checkpoints)
    torch.save({"method": method.state_dict(), "network": network.state_dict()}, tmp_path / "c.pt")
    following = method.train_step(*_batches())
    network2, heads2, method2 = _acdc()
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    network2.load_state_dict(state["network"])
    method2.load_state_dict(state["method"])
    torch.set_rng_state(rng)
    again = method2.train_step(*_batches())
    for name in following:
        assert torch.allclose(following[name], again[name]), name
    assert torch.equal(method.queue_output, method2.queue_output)


def test_trains_in_the_trainer_with_heads_in_the_optimizer():
    network, heads, method = _acdc()
    labeled, unlabeled = _batches()
    loader = [(labeled, unlabeled)] * 2
    optimizer = torch.optim.SGD(list(network.parameters()) + list(heads.parameters()), lr=0.01, momentum=0.9)
    before = heads.q_latent[2].weight.detach().clone()
    trainer = SemiSupervisedTrainer("cpu", None, loader, network, method, optimizer, max_iterations=2)
    trainer.run()
    assert trainer.state.iteration == 2 and not torch.equal(before, heads.q_latent[2].weight)
    assert set(trainer.state.output[0]) >= {"loss", "loss_sup", "loss_latent", "loss_output"}
