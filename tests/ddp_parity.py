"""Data-parallel parity of the semi-supervised methods: one script, two uses.

Under ``torchrun --nproc_per_node=2`` (CPU, gloo) each rank trains a DDP-wrapped network with
:class:`semizoo.engines.SemiSupervisedTrainer` on its half of every batch and saves its loss terms and final
parameters. :func:`emulate` computes, in one process, what correct data parallelism must give: two replicas of the
method sharing one network, each on its half batch with its own RNG stream (both seeded alike, as the ranks are), the
mean of their gradients, one optimizer step; BatchNorm buffers follow rank 0, which DDP broadcasts at every forward.
Losses that pool over a batch (Dice, SS-Net's class separation) and BatchNorm statistics are per rank under DDP, so
this, not a single process on the whole batch, is the exact reference.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

STEPS = 3
HALF_LABELED, HALF_UNLABELED, SIZE, CLASSES = 2, 2, 32, 3


def batches() -> list[tuple[dict, dict]]:
    """``STEPS`` whole batches (2 ranks × half), deterministic: squares of classes 1 and 2 on noise."""
    generator = torch.Generator().manual_seed(7)
    out = []
    for _ in range(STEPS):
        labels = torch.zeros(2 * HALF_LABELED, 1, SIZE, SIZE, dtype=torch.long)
        for i in range(2 * HALF_LABELED):
            y, x = torch.randint(0, SIZE - 12, (2,), generator=generator).tolist()
            labels[i, :, y : y + 12, x : x + 12] = 1
            labels[i, :, y + 3 : y + 9, x + 3 : x + 9] = 2
        images = labels.float() / 2 + 0.3 * torch.randn(labels.shape, generator=generator)
        unlabeled = torch.rand(2 * HALF_UNLABELED, 1, SIZE, SIZE, generator=generator)
        twins = unlabeled + 0.1 * torch.randn(unlabeled.shape, generator=generator)  # EPL's Fourier twins
        out.append(({"image": images, "label": labels}, {"image": unlabeled, "image_fourier": twins}))
    return out


def half(batch: tuple[dict, dict], rank: int) -> tuple[dict, dict]:
    labeled, unlabeled = batch
    pick = slice(rank * HALF_LABELED, (rank + 1) * HALF_LABELED)
    pick_u = slice(rank * HALF_UNLABELED, (rank + 1) * HALF_UNLABELED)
    return {k: v[pick] for k, v in labeled.items()}, {k: v[pick_u] for k, v in unlabeled.items()}


def build(method_name: str) -> tuple[torch.nn.Module, dict[str, torch.nn.Module], Any]:
    """The network, the method's other trainable modules (heads, wrapped like the network under DDP) and the method
    factory ``make(network, extras)``; seeded, so every rank and the emulation build the same initial state."""
    from semizoo.methods import EPL, Action, ActionPretrain, MeanTeacher, SSNet
    from semizoo.networks import ActionDistillHeads, NetworkPair, RepresentationHead, SSL4MISUNet, SSNetNetwork

    torch.manual_seed(0)
    backbone = SSL4MISUNet(1, CLASSES)
    if method_name == "mean_teacher":
        return backbone, {}, lambda net, extras: MeanTeacher(net, consistency_start=0, consistency_rampup=0)
    if method_name == "ssnet":
        network = SSNetNetwork(backbone, CLASSES)
        return network, {}, lambda net, extras: SSNet(net, CLASSES, lam_max=1.0, rampup_length=0, elements_per_class=8)
    if method_name == "action_pretrain":  # stage 2: latent and output distillation + supervised loss
        heads = {"heads": ActionDistillHeads(2, CLASSES, latent_channels=256, latent_dim=16, pool=2)}
        return (
            backbone,
            heads,
            lambda net, extras: ActionPretrain(
                net, extras["heads"], (SIZE, SIZE), stage="full", queue_size=8, window_size=16, window_step=8, seed=0
            ),
        )
    if method_name == "actionpp":  # stage 3 with ACTION++'s TSC: pseudo-labels, ReCo, targeted supervised contrast
        heads = {"rep_head": RepresentationHead(496, 496, spatial_dims=2)}
        return (
            backbone,
            heads,
            lambda net, extras: Action(
                net,
                extras["rep_head"],
                CLASSES,
                num_queries=8,
                num_negatives=16,
                strong_threshold=0.4,  # low thresholds: every term is active from the first step
                weak_threshold=0.3,
                tsc_weight=0.01,
                tsc_queue_size=48,
                tsc_queries_per_class=8,
                tsc_centre_steps=20,
                max_iterations=STEPS,
                seed=0,
            ),
        )
    if method_name == "epl":  # two networks, CutMix of the two unlabelled halves, dual-level term: every path runs
        pair = NetworkPair(backbone, SSL4MISUNet(1, CLASSES))
        return pair, {}, lambda net, extras: EPL(net, dual_level=True)
    raise ValueError(f"unknown method {method_name!r}")


def optimizer_of(network: torch.nn.Module, extras: dict[str, torch.nn.Module]) -> torch.optim.Optimizer:
    parameters = list(network.parameters()) + [p for module in extras.values() for p in module.parameters()]
    return torch.optim.SGD(parameters, lr=0.05, momentum=0.9)


def result(network: torch.nn.Module, method: Any, losses: list[dict]) -> dict:
    plain = getattr(network, "module", network)  # the DDP-wrapped network
    return {
        "losses": losses,
        "parameters": {k: v.detach().clone() for k, v in plain.named_parameters()},
        "method": {k: v.detach().clone() for k, v in method.named_parameters()},
    }


def emulate(method_name: str) -> list[dict]:
    """One process, two method replicas on the two halves; returns each replica's :func:`result`."""
    network, extras, make = build(method_name)
    after_build = torch.get_rng_state()
    methods, rng = [], []
    for _ in range(2):  # each rank makes its method from the same RNG state (a TSC memory draws its queue)
        torch.set_rng_state(after_build)
        methods.append(make(network, extras))
        rng.append(torch.get_rng_state())
    optimizer = optimizer_of(network, extras)
    losses: list[list[dict]] = [[], []]
    for step, batch in enumerate(batches()):
        optimizer.zero_grad()
        rank0_buffers = {k: v.clone() for k, v in network.named_buffers()}
        for rank, method in enumerate(methods):
            network.load_state_dict({**network.state_dict(), **rank0_buffers})
            torch.set_rng_state(rng[rank])
            method.iteration = step
            method.train()
            terms = method.train_step(*half(batch, rank))
            (terms["loss"] / 2).backward()  # DDP averages the ranks' gradients
            rng[rank] = torch.get_rng_state()
            losses[rank].append({k: float(v) for k, v in terms.items()})
            if rank == 0:
                after_rank0 = {k: v.clone() for k, v in network.named_buffers()}
        network.load_state_dict({**network.state_dict(), **after_rank0})
        optimizer.step()
        for method in methods:
            method.after_optimizer_step()
    return [result(network, method, losses[rank]) for rank, method in enumerate(methods)]


def run_rank(method_name: str, out_dir: str) -> None:
    """The torchrun worker: DDP network, the trainer on this rank's halves, results to ``out_dir/rank{r}.pt``."""
    import torch.distributed as dist
    from ignite.engine import Events
    from semizoo.engines import SemiSupervisedTrainer

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    network, extras, make = build(method_name)
    ddp = torch.nn.parallel.DistributedDataParallel(network)
    wrapped = {name: torch.nn.parallel.DistributedDataParallel(module) for name, module in extras.items()}
    method = make(ddp, wrapped)
    loader = [half(batch, rank) for batch in batches()]
    optimizer = optimizer_of(ddp, wrapped)
    trainer = SemiSupervisedTrainer("cpu", None, loader, ddp, method, optimizer, max_iterations=STEPS)
    losses: list[dict] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append({k: float(v) for k, v in e.state.output[0].items()})
    )
    trainer.run()
    torch.save(result(ddp, method, losses), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    run_rank(sys.argv[1], sys.argv[2])
