"""Data-parallel parity of the semi-supervised methods: one script, two uses.

Under ``torchrun --nproc_per_node=2`` (CPU, gloo) each rank trains a DDP-wrapped network with
:class:`semizoo.engines.SemiSupervisedTrainer` on its half of every batch and saves its loss terms and final
parameters. :func:`emulate` computes, in one process, what correct data parallelism must give: two replicas of the
method sharing one network, each on its half batch with its own RNG stream (both seeded alike, as the ranks are), the
mean of their gradients, one optimizer step; BatchNorm buffers follow rank 0, which DDP broadcasts at every forward.
Losses that pool over a batch (Dice, SS-Net's class separation) and BatchNorm statistics are per rank under DDP, so
this, not a single process on the whole batch, is the exact reference.

Everything random in a step (dropout, the detector's anchor and RoI samplers, which draw ``torch.randperm`` from the
global generator) is reproduced because each emulated replica resumes its rank's RNG stream: the ranks and the
emulation start from the same seed and draw in the same order. Methods that optimise by hand (two optimizers) get an
emulated :class:`semizoo.engines.ManualStep` whose ``backward`` halves the loss and whose zeroing and stepping happen
once around the two replicas, as DDP's all-reduce makes them happen once on the averaged gradients.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

STEPS = 3
HALF_LABELED, HALF_UNLABELED, SIZE, CLASSES = 2, 2, 32, 3
WSSDL_STRONG, WSSDL_WEAK = 1, 2  # per rank, as the bundle's combined 1 strong + 2 weak mini-batch
#: loss terms that must be non-zero at some step on every rank, so that the comparison covers every path
ACTIVE_TERMS = {
    "wssdl": ("loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_box", "loss_ws"),
    "wssdl_alternating": ("loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_box", "loss_ws"),
}


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


def wssdl_batches() -> list[tuple[list[dict], list[dict]]]:
    """``STEPS`` whole WSSDL batches: lists of records (``no_collation``), per rank ``WSSDL_STRONG`` box-labelled and
    ``WSSDL_WEAK`` image-labelled images, deterministic (one generator, built identically by every rank and by the
    emulation, so each rank's records are the same tensors in both). A dark rectangle (the lesion, its box) on a
    bright speckled background; grey (1, H, W) in [0, 1] of two sizes (the detector pads them to one canvas)."""
    generator = torch.Generator().manual_seed(11)

    def record(index: int, weak: bool) -> dict:
        height, width = (64, 80) if index % 2 == 0 else (72, 64)
        image = (0.7 + 0.1 * torch.randn(1, height, width, generator=generator)).clamp(0, 1)
        side_y, side_x = torch.randint(18, 30, (2,), generator=generator).tolist()
        y = int(torch.randint(2, height - side_y - 2, (1,), generator=generator))
        x = int(torch.randint(2, width - side_x - 2, (1,), generator=generator))
        image[:, y : y + side_y, x : x + side_x] *= 0.3
        label = 1 + index % 2  # benign / malignant: both weak classes weigh 0.5
        if weak:
            return {"image": image, "image_class": torch.tensor(label)}
        box = torch.tensor([[x, y, x + side_x, y + side_y]], dtype=torch.float32)
        return {"image": image, "box": box, "label": torch.tensor([label])}

    return [
        (
            [record(i, weak=False) for i in range(2 * WSSDL_STRONG)],
            [record(i, weak=True) for i in range(2 * WSSDL_WEAK)],
        )
        for _ in range(STEPS)
    ]


def data(method_name: str) -> list[tuple[Any, Any]]:
    """The whole batches of ``method_name``'s run (the same for every rank; :func:`half` picks each rank's part)."""
    return wssdl_batches() if method_name.startswith("wssdl") else batches()


def half(batch: tuple[Any, Any], rank: int) -> tuple[Any, Any]:
    labeled, unlabeled = batch
    if isinstance(labeled, list):  # lists of records (WSSDL): 1 strong + 2 weak per rank
        return (
            labeled[rank * WSSDL_STRONG : (rank + 1) * WSSDL_STRONG],
            unlabeled[rank * WSSDL_WEAK : (rank + 1) * WSSDL_WEAK],
        )
    pick = slice(rank * HALF_LABELED, (rank + 1) * HALF_LABELED)
    pick_u = slice(rank * HALF_UNLABELED, (rank + 1) * HALF_UNLABELED)
    return {k: v[pick] for k, v in labeled.items()}, {k: v[pick_u] for k, v in unlabeled.items()}


def build(method_name: str) -> tuple[torch.nn.Module, dict[str, torch.nn.Module], Any]:
    """The network, the method's other trainable modules (heads, wrapped like the network under DDP) and the method
    factory ``make(network, extras)``; seeded, so every rank and the emulation build the same initial state."""
    from semizoo.methods import EPL, WSSDL, Action, ActionPretrain, MeanTeacher, SSNet
    from semizoo.networks import (
        ActionDistillHeads,
        NetworkPair,
        RepresentationHead,
        SSL4MISUNet,
        SSNetNetwork,
        WSSDLFasterRCNN,
    )

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
    if method_name in ("wssdl", "wssdl_alternating"):
        # CPU-sized detector. Its training forward returns a dict of tensors, an int (num_rois) and a list of
        # tensors (weak_logits): DDP returns a forward's output unchanged (it flattens it, as a pytree that takes
        # dicts, lists and ints, only with find_unused_parameters or static_graph), so nothing needs wrapping.
        # Dropout (fc6/fc7) and the anchor/RoI samplers (torch.randperm) draw from the global RNG: reproduced by the
        # per-rank RNG streams of emulate(). α is static (0.5) and both weak classes weigh 0.5, so the weak MIL term
        # is active from the first step. Every parameter must get a gradient every step (DDP waits for all of them):
        # the weak-only steps of "alternating" leave the RPN head and bbox_pred out of the graph, and without the
        # method's zero_gradient_anchor() DDP stops at the next step ("Expected to have finished reduction").
        detector = WSSDLFasterRCNN(
            width=8,
            anchor_scale=0.25,
            min_size=96,
            max_size=128,
            rpn_pre_nms_train=200,
            rpn_post_nms_train=32,
            rpn_pre_nms_test=100,
            rpn_post_nms_test=16,
            box_batch=16,
        )
        batching = "alternating" if method_name == "wssdl_alternating" else "combined"
        return (
            detector,
            {},
            lambda net, extras: WSSDL(net, batching=batching, alpha_schedule="static", class_weights=(0.0, 0.5, 0.5)),
        )
    raise ValueError(f"unknown method {method_name!r}")


def optimizer_of(
    method_name: str, network: torch.nn.Module, extras: dict[str, torch.nn.Module]
) -> torch.optim.Optimizer | dict[str, torch.optim.Optimizer]:
    """The trainer's optimizer(s): SGD, or WSSDL's TF1 Adam (weight decay on conv/linear weights, as the bundle;
    alternating: a second, undecayed one over every trainable parameter for the weak steps, as alternating.json).

    WSSDL's lr 5e-4 and ε 0.1 would move the tiny detector's backbone by less than the tolerances (ε dominates its
    small gradients), so that dropping a rank's gradient passed unnoticed for most tensors; lr 1e-2 and ε 1e-6 move
    every tensor far beyond them (dropping rank 1's gradient changes all 40 tensors and the third loss by ~0.04).
    """
    if method_name.startswith("wssdl"):
        from semizoo.optim import TF1Adam, decay_weights_only

        plain = getattr(network, "module", network)
        strong = TF1Adam(decay_weights_only(plain, 5e-4), lr=1e-2, eps=1e-6)
        if method_name != "wssdl_alternating":
            return strong
        weak = TF1Adam([p for p in plain.parameters() if p.requires_grad], lr=1e-2, eps=1e-6)
        return {"strong": strong, "weak": weak}
    parameters = list(network.parameters()) + [p for module in extras.values() for p in module.parameters()]
    return torch.optim.SGD(parameters, lr=0.05, momentum=0.9)


class EmulatedStep:
    """:class:`semizoo.engines.ManualStep` for one emulated rank of a manual-optimization method.

    ``backward`` back-propagates half the loss (DDP's mean over 2 ranks); the first rank's ``zero_grad`` zeroes (the
    second rank's must not: its gradients add to the first's, as DDP's all-reduce adds them); ``step`` only records the
    names, stepped once by :func:`emulate` after both replicas.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], first: bool) -> None:
        self.optimizers, self.first = optimizers, first
        self.stepped: list[tuple[str, ...]] = []
        self.loss_reported = False

    def select(self, names: tuple[str, ...]) -> list[torch.optim.Optimizer]:
        return [self.optimizers[name] for name in names] if names else list(self.optimizers.values())

    def zero_grad(self, *names: str) -> None:
        if self.first:
            for optimizer in self.select(names):
                optimizer.zero_grad()

    def loss_completed(self, terms: dict) -> None:
        self.loss_reported = True

    def backward(self, loss: torch.Tensor) -> None:
        assert self.loss_reported, "loss_completed(terms) must come before backward (as ManualStep requires)"
        (loss / 2).backward()

    def step(self, *names: str) -> None:
        self.stepped.append(names)


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
    optimizer = optimizer_of(method_name, network, extras)
    optimizers = optimizer if isinstance(optimizer, dict) else {"optimizer": optimizer}
    losses: list[list[dict]] = [[], []]
    for step, batch in enumerate(data(method_name)):
        if not methods[0].manual_optimization:
            for each in optimizers.values():
                each.zero_grad()
        rank0_buffers = {k: v.clone() for k, v in network.named_buffers()}
        manual = []
        for rank, method in enumerate(methods):
            network.load_state_dict({**network.state_dict(), **rank0_buffers})
            torch.set_rng_state(rng[rank])  # this rank's stream: dropout masks and sampler permutations as on it
            method.iteration = step
            method.train()
            if method.manual_optimization:
                manual.append(EmulatedStep(optimizers, first=rank == 0))
                terms = method.train_step(*half(batch, rank), step=manual[-1])
                assert manual[-1].loss_reported, "a manual-optimization step must report its loss"
            else:
                terms = method.train_step(*half(batch, rank))
                (terms["loss"] / 2).backward()  # DDP averages the ranks' gradients
            rng[rank] = torch.get_rng_state()
            losses[rank].append({k: float(v.detach()) for k, v in terms.items()})
            if rank == 0:
                after_rank0 = {k: v.clone() for k, v in network.named_buffers()}
        network.load_state_dict({**network.state_dict(), **after_rank0})
        if manual:  # both ranks step the same optimizers (else they diverge), once on the averaged gradients
            assert manual[0].stepped == manual[1].stepped, (manual[0].stepped, manual[1].stepped)
            for names in manual[0].stepped:
                for each in manual[0].select(names):
                    each.step()
        else:
            for each in optimizers.values():
                each.step()
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
    loader = [half(batch, rank) for batch in data(method_name)]  # the records of the emulation's replica `rank`
    optimizer = optimizer_of(method_name, ddp, wrapped)
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
