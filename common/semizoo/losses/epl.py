"""EPL's losses (Yao et al., AAAI 2022; epl.md §4-§6): confidence-aware cross pseudo supervision.

- :func:`kl_variance`: ``V = KL(q || p)`` per pixel between a network's prediction ``q`` on the Fourier view and
  ``p`` on the original view (the paper's variance estimate, Eq. 5).
- :func:`confidence_aware_cps_loss`: cross pseudo supervision weighted by ``e^{-V}`` plus the ``V`` penalties
  (Eq. 6); the official batch-mean weighting by default, the paper's per-pixel one with ``per_pixel=True``.
- :func:`dual_level_kl`: the symmetric KL between the two networks' view-averaged predictions (BUSI reproduction's
  "dual-level" term).
- :func:`cps_pseudo_labels`: the hard labels of one network from its four no-grad passes, mixed by the CutMix mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kl_variance", "confidence_aware_cps_loss", "dual_level_kl", "cps_pseudo_labels"]


def _check_logits(*logits: Tensor) -> None:
    shape = tuple(logits[0].shape)
    if len(shape) < 3 or any(tuple(t.shape) != shape for t in logits):
        raise ValueError(f"logits must share one shape (B, K, *S), got {[tuple(t.shape) for t in logits]}.")


def _view_average_log_probs(logits: Tensor, logits_fourier: Tensor) -> Tensor:
    """``log((softmax(logits) + softmax(logits_fourier)) / 2)``, computed stably."""
    return torch.logaddexp(F.log_softmax(logits, dim=1), F.log_softmax(logits_fourier, dim=1)) - math.log(2.0)


def kl_variance(logits: Tensor, logits_fourier: Tensor) -> Tensor:
    """``V = Σ_c q_c (log q_c - log p_c)`` per pixel, ``q = softmax(logits_fourier)``, ``p = softmax(logits)``.

    Class dimension 1; returns ``(B, *S)`` in the input dtype, unreduced, with gradients to both arguments.
    """
    _check_logits(logits, logits_fourier)
    log_q = F.log_softmax(logits_fourier, dim=1)
    return (log_q.exp() * (log_q - F.log_softmax(logits, dim=1))).sum(dim=1)


def confidence_aware_cps_loss(
    logits_l: Tensor,
    logits_l_fourier: Tensor,
    logits_r: Tensor,
    logits_r_fourier: Tensor,
    pseudo_l: Tensor,
    pseudo_r: Tensor,
    per_pixel: bool = False,
    ignore_index: int = 255,
    ce_on: str = "original",
) -> Tensor:
    """Confidence-aware CPS between networks ``l`` and ``r`` (epl.md §5), a 0-d tensor before the weight β.

    ``V_l = kl_variance(logits_l, logits_l_fourier)``, likewise ``V_r``; ``pseudo_k`` is network ``k``'s hard label.

    - ``per_pixel=False`` (official code): ``mean(e^{-V_r}) · CE_mean(logits_l, pseudo_r) + mean(e^{-V_l}) ·
      CE_mean(logits_r, pseudo_l) + mean(V_l) + mean(V_r)``, ``CE_mean`` over the non-ignored pixels.
    - ``per_pixel=True`` (paper, Eq. 6): ``mean_i(e^{-V_r,i} CE_i(logits_l, pseudo_r)) + mean_i(e^{-V_l,i}
      CE_i(logits_r, pseudo_l)) + mean V_l + mean V_r``, ``CE_i = 0`` at ignored pixels, means over all pixels.

    ``ce_on="original"`` (official) takes the CE of the student's logits on the original view; ``"ensemble"`` (paper)
    of the view-averaged probabilities, ``CE_i = -log((p + q) / 2)_{Y_i}``.

    Nothing is detached. Raises ``ValueError`` for mismatched logits or pseudo-label shapes or an unknown ``ce_on``.
    """
    if ce_on not in ("original", "ensemble"):
        raise ValueError(f"ce_on must be 'original' or 'ensemble', got {ce_on!r}.")
    _check_logits(logits_l, logits_l_fourier, logits_r, logits_r_fourier)
    expected = (logits_l.shape[0], *logits_l.shape[2:])
    if tuple(pseudo_l.shape) != expected or tuple(pseudo_r.shape) != expected:
        raise ValueError(
            f"pseudo labels must be (B, *S) = {expected}, got {tuple(pseudo_l.shape)} and {tuple(pseudo_r.shape)}."
        )
    v_l, v_r = kl_variance(logits_l, logits_l_fourier), kl_variance(logits_r, logits_r_fourier)
    if ce_on == "ensemble":
        log_l, log_r = _view_average_log_probs(logits_l, logits_l_fourier), _view_average_log_probs(
            logits_r, logits_r_fourier
        )
    else:
        log_l, log_r = F.log_softmax(logits_l, dim=1), F.log_softmax(logits_r, dim=1)
    if per_pixel:
        ce_l = F.nll_loss(log_l, pseudo_r, ignore_index=ignore_index, reduction="none")
        ce_r = F.nll_loss(log_r, pseudo_l, ignore_index=ignore_index, reduction="none")
        cps = (torch.exp(-v_r) * ce_l).mean() + (torch.exp(-v_l) * ce_r).mean()
    else:
        ce_l = F.nll_loss(log_l, pseudo_r, ignore_index=ignore_index)
        ce_r = F.nll_loss(log_r, pseudo_l, ignore_index=ignore_index)
        cps = torch.exp(-v_r).mean() * ce_l + torch.exp(-v_l).mean() * ce_r
    return cps + v_l.mean() + v_r.mean()


def dual_level_kl(logits_l: Tensor, logits_l_fourier: Tensor, logits_r: Tensor, logits_r_fourier: Tensor) -> Tensor:
    """Symmetric KL between the two networks' view-averaged predictions (epl.md §4, BUSI reproduction).

    ``log P̄_k = logaddexp(log_softmax(s_k), log_softmax(g_k)) - log 2``; returns ``mean_i Σ_c P̄_l (log P̄_l - log
    P̄_r) + mean_i Σ_c P̄_r (log P̄_r - log P̄_l)``: 0-d, ≥ 0, symmetric in ``l`` and ``r``, 0 when they agree.
    """
    _check_logits(logits_l, logits_l_fourier, logits_r, logits_r_fourier)
    log_l = _view_average_log_probs(logits_l, logits_l_fourier)
    log_r = _view_average_log_probs(logits_r, logits_r_fourier)
    difference = log_l - log_r
    return (log_l.exp() * difference).sum(dim=1).mean() - (log_r.exp() * difference).sum(dim=1).mean()


def cps_pseudo_labels(
    u0: Tensor, f0: Tensor, u1: Tensor, f1: Tensor, mask: Tensor, pseudo_from: str = "logits"
) -> Tensor:
    """One network's hard labels for the mixed batch (epl.md §4): ``argmax_c(e0 (1 - M) + e1 M)``.

    ``u0, f0, u1, f1``: the network's logits on the two unlabelled batches and their Fourier twins, ``(B, K, *S)``;
    ``mask``: the CutMix mask ``(B, 1, *S)``. ``pseudo_from="logits"`` (official) averages the logits of each image
    and its twin, ``e = (a + b) / 2``; ``"probs"`` (paper) averages their softmax probabilities.

    Returns ``(B, *S)`` int64. Raises ``ValueError`` for an unknown ``pseudo_from`` or mismatched shapes.
    """
    _check_logits(u0, f0, u1, f1)
    if pseudo_from == "logits":
        e0, e1 = (u0 + f0) / 2, (u1 + f1) / 2
    elif pseudo_from == "probs":
        e0 = (u0.softmax(dim=1) + f0.softmax(dim=1)) / 2
        e1 = (u1.softmax(dim=1) + f1.softmax(dim=1)) / 2
    else:
        raise ValueError(f"pseudo_from must be 'logits' or 'probs', got {pseudo_from!r}.")
    if mask.shape[0] != u0.shape[0] or mask.shape[1] != 1 or mask.shape[2:] != u0.shape[2:]:
        raise ValueError(f"mask must be (B, 1, *S) for logits {tuple(u0.shape)}, got {tuple(mask.shape)}.")
    return (e0 * (1 - mask) + e1 * mask).argmax(dim=1)
