"""SS-Net losses (Wu et al., MICCAI 2022; ycwu1997/SS-Net @c0a8bf6, read not copied; ssnet.md §5).

- ``binary_dice_loss``: ``1 - (2Σpy + ε)/(Σp + Σy + ε)`` (LA supervised loss and LA VAT distance).
- ``soft_dice_loss``: ``1/C Σ_c [1 - (2Σ p̂_c p_c + s)/(Σ p̂_c² + Σ p_c² + s)]`` (ACDC VAT distance).
- ``vat_lds_loss``: local distributional smoothness with one power iteration (Miyato et al., VAT, TPAMI 2019)
  and a Dice distance; BatchNorm running statistics are untouched by the perturbed passes.
- ``class_separation_loss``: queries pulled towards per-class prototype memories, with learned weights.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "binary_dice_loss",
    "soft_dice_loss",
    "ForegroundDiceLoss",
    "vat_lds_loss",
    "class_separation_loss",
    "frozen_batchnorm_stats",
]


def binary_dice_loss(probs: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - (2Σpy + eps)/(Σp + Σy + eps)`` pooled over every element (not squared; SS-Nets binary Dice)."""
    if probs.shape != target.shape:
        raise ValueError(f"probs and target differ in shape: {tuple(probs.shape)} vs {tuple(target.shape)}.")
    target = target.to(probs.dtype)
    intersection = (probs * target).sum()
    return 1.0 - (2.0 * intersection + eps) / (probs.sum() + target.sum() + eps)


def soft_dice_loss(probs: Tensor, target_probs: Tensor, smooth: float = 1e-10) -> Tensor:
    """Mean over classes of ``1 - (2Σ p̂_c p_c + s)/(Σ p̂_c² + Σ p_c² + s)``; sums over batch and voxels.

    Args:
        probs: ``(B, C, *spatial)`` probabilities.
        target_probs: same shape (soft or one-hot targets).
    """
    if probs.shape != target_probs.shape:
        raise ValueError(f"probs and target differ in shape: {tuple(probs.shape)} vs {tuple(target_probs.shape)}.")
    dims = [0] + list(range(2, probs.dim()))
    intersection = (probs * target_probs).sum(dims)
    denominator = (probs * probs).sum(dims) + (target_probs * target_probs).sum(dims)
    return (1.0 - (2.0 * intersection + smooth) / (denominator + smooth)).mean()


class ForegroundDiceLoss(nn.Module):
    """SS-Net's LA supervised loss on logits: ``binary_dice_loss(softmax(logits)[:, 1], label == 1)``."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        probs = torch.softmax(logits, dim=1)[:, 1]
        return binary_dice_loss(probs, (labels[:, 0] if labels.dim() == logits.dim() else labels) == 1, self.eps)


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers use batch statistics without updating their running statistics."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    previous = [m.track_running_stats for m in layers]
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer, track in zip(layers, previous):
            layer.track_running_stats = track


def _per_sample_unit(d: Tensor) -> Tensor:
    """``d / (‖d_b‖₂ + 1e-8)`` per sample over all non-batch dimensions."""
    norms = d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1)))
    return d / (norms + 1e-8)


def vat_lds_loss(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    distance: Callable[[Tensor, Tensor], Tensor],
    xi: float = 10.0,
    eps: float = 6.0,
    n_power: int = 1,
    generator: torch.Generator | None = None,
    return_perturbation: bool = False,
    target_probs: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Virtual-adversarial smoothness ``D(softmax f(x + r), p)`` with ``r`` the adversarial direction of norm ``eps``.

    ``p = softmax f(x)`` from a separate no-grad forward in the current mode (train mode: BN statistics updated
    once), unless ``target_probs`` is given (SS-Net's ``lds_clean_from_main_forward``). ``d₀ ~ U(-½, ½)`` is drawn
    on the CPU (``generator``), unit-normalised per sample; ``n_power`` times ``d ← unit(∂D(softmax f(x + ξd), p)/∂d)``
    (``torch.autograd.grad`` w.r.t. ``d`` only: no parameter ``.grad``); ``r = eps · d``. The perturbed forwards run
    with BatchNorm running statistics frozen. Gradients of the result reach the parameters only.

    Args:
        model: maps ``(B, ...)`` images to logits ``(B, C, ...)``.
        x: the images.
        distance: ``D(probs, target_probs)`` (e.g. :func:`soft_dice_loss`).
        xi, eps, n_power: VAT's finite-difference step, perturbation norm and power iterations.
        generator: CPU generator of ``d₀``.
        return_perturbation: also return ``r``.
        target_probs: the clean prediction, detached; ``None`` runs the separate clean forward.
    """
    if target_probs is None:
        with torch.no_grad():
            target_probs = torch.softmax(model(x), dim=1)
    target_probs = target_probs.detach()
    d = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype) - 0.5
    d = _per_sample_unit(d)
    module = model if isinstance(model, nn.Module) else nn.Module()
    with frozen_batchnorm_stats(module):
        for _ in range(n_power):
            d = d.detach().requires_grad_(True)
            adversarial = distance(torch.softmax(model(x.detach() + xi * d), dim=1), target_probs)
            (gradient,) = torch.autograd.grad(adversarial, d, allow_unused=True)
            d = _per_sample_unit(torch.zeros_like(d) if gradient is None else gradient.detach())
        perturbation = (eps * d).detach()
        loss = distance(torch.softmax(model(x.detach() + perturbation), dim=1), target_probs)
    return (loss, perturbation) if return_perturbation else loss


def class_separation_loss(
    queries: Tensor,
    labels: Tensor,
    memory: Sequence[Tensor | None],
    selectors: Sequence[nn.Module],
    memory_selectors: Sequence[nn.Module],
    n_classes: int,
) -> Tensor:
    """SS-Net's class-separation term (ssnet.md §5).

    For each class c with a memory of ``N_c > 1`` rows and ``M_c > 1`` queries labelled c:
    ``d_ij = 1 - ẑ_i·m̂_j``, ``a_i = σ(selector_c(z_i.detach()))``, ``b_j = σ(memory_selector_c(m̂_j))``,
    ``w_ij = (M_c a_i / Σa)(N_c b_j / Σb)``, ``L_c = Σ_ij w_ij d_ij / (M_c N_c)``; returns ``Σ_c L_c / n_classes``.

    Args:
        queries: ``(V, D)`` predicted features of every voxel.
        labels: ``(V,)`` class of every voxel (ground truth or pseudo-label).
        memory: per class ``(N_c, D)`` detached prototypes (``None`` or 0 rows when empty).
        selectors, memory_selectors: per class modules mapping ``(n, D)`` to ``(n, 1)`` logits.
        n_classes: classes, background included (the divisor, as the official code).
    """
    if queries.dim() != 2 or labels.shape != queries.shape[:1]:
        raise ValueError(f"queries (V, D) and labels (V,) expected, got {tuple(queries.shape)}, {tuple(labels.shape)}.")
    total = queries.new_zeros(())
    for c in range(n_classes):
        rows = memory[c] if c < len(memory) else None
        if rows is None or rows.shape[0] <= 1:
            continue
        mask = labels == c
        n_queries, n_rows = int(mask.sum()), rows.shape[0]
        if n_queries <= 1:
            continue
        z = queries[mask]
        z_unit, m_unit = F.normalize(z, dim=1), F.normalize(rows.detach(), dim=1)
        dist = 1.0 - z_unit @ m_unit.t()
        a = torch.sigmoid(selectors[c](z.detach()))
        b = torch.sigmoid(memory_selectors[c](m_unit))
        weights = (n_queries * a / a.sum()) @ (n_rows * b / b.sum()).t()
        total = total + (weights * dist).sum() / (n_queries * n_rows)
    return total / n_classes
