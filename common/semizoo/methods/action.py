"""ACTION and ACTION++: You et al., "Bootstrapping Semi-supervised Medical Image Segmentation with Anatomical-aware
Contrastive Distillation" (ACTION), IPMI 2023, and "ACTION++: Improving Semi-supervised Medical Image Segmentation
with Adaptive Anatomical Contrast", MICCAI 2023 (arXiv:2304.02689); official code charlesyou999648/ACTION @77730a7
(read, not copied; action.md).

Student + EMA teacher in three stages: contrastive distillation over queues of teacher embeddings (stages 1-2),
then fine-tuning with pseudo-labels and ReCo-style anatomical contrast (stage 3). ACTION++ adds cosine temperature
schedules and a targeted supervised contrast (TSC) pulling labelled features to fixed, uniformly spread class centres
matched to classes by the Hungarian algorithm.

This module holds :class:`TSCMemory`, the state of the TSC term (queue, class centroids, centres); its maths is
:func:`semizoo.losses.tsc.tsc_loss`; and :class:`Action` (registered as ``"action"``), the stage-3 fine-tuning plugin
of both papers (official ``code/train_2D_action.py``, ``train_2D_action++.py``, ``train_3D_action.py``,
``train_3D_action++.py`` @77730a7; action.md §5-§7). One fine-tuning step::

    no grad: P = softmax(teacher(x_u));  c, ŷ = max(P), argmax(P)
    x_m, y_m, c_m = mix(x_u, ŷ, c);  x_a, y_m, c_m = strong_aug(x_m, y_m, c_m)
    o_l = student(x_l);  o_u = student(x_a);  r_l = rep(o_l.pyramid);  r_u = rep(o_u.pyramid)
    loss = ½(CE + Dice)(o_l, y_l) + L_u(o_u, y_m, c_m) + 0.01·ReCo([r_l; r_u]) (+ 0.01·TSC(r_l, f_t, y_l))
    after the optimizer step: θ_t ← 0.99 θ_t + 0.01 θ_s  (LA ACTION++ also k_rep ← 0.99 k_rep + 0.01 rep)

with ``L_u`` = :func:`semizoo.losses.weighted_pseudo_label_ce`, ReCo = :func:`semizoo.losses.reco_loss`, TSC =
:class:`TSCMemory`, mixing and strong view from :mod:`semizoo.transforms.action`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..losses.action import reco_loss, weighted_pseudo_label_ce
from ..losses.tsc import load_or_create_centres, tsc_loss, uniform_hypersphere_centres
from ..networks.action import pyramid_features
from ..networks.utils import ema_update_, frozen_copy, unwrap
from ..schedules import cosine_temperature
from ..transforms.action import MIX_MODES, ActionStrongAug, mix_unlabeled
from .action_pretrain import action_sup_loss
from .base import Method, register, zero_like

__all__ = ["TSCMemory", "Action", "TSC_TEACHER_FEATURES"]

TSC_TEACHER_FEATURES = ("pyramid", "k_rep")


class TSCMemory(nn.Module):
    """State and step of ACTION++'s targeted supervised contrast (action.md §5; official ``TSC`` / ``TSC_3d`` in
    ``code/TSC.py`` @77730a7).

    One :meth:`forward` on a labelled batch:

    1. :meth:`sample`: per class present in ``labels``, ``queries_per_class`` pixels drawn uniformly with replacement
       among that class's pixels, concatenated in increasing class order, then randomly permuted; with at most one
       class present, ``queries_per_class`` pixels uniformly over all pixels, unpermuted (action.md §7.6: the official
       code crashes there). Student and teacher rows are then L2-normalised (per pixel, so the same as normalising
       the channel dimension of the maps first).
    2. :meth:`update_centroids` (no grad): ``m_c <- norm(m * m_c + (1 - m) * norm(mean_{y_n = c} s_n))`` for each
       sampled class, ``m = centroid_momentum`` (0.9).
    3. :meth:`assign`: Hungarian matching ``π`` maximising ``Σ_c m_c · g_π(c)`` over all classes (scipy).
    4. :func:`~semizoo.losses.tsc.tsc_loss` against the queue as it was before this step.
    5. :meth:`enqueue`: FIFO write of the teacher rows and their labels at the pointer, wrapping around ``K``.

    All state is in buffers (checkpointed with the method, tensors only: ``torch.load(weights_only=True)`` reads
    the state dict): ``queue`` ``(D, K)`` randn with unit columns, ``queue_labels`` ``(K,)`` = -1, ``queue_ptr``
    (0-d), ``centroids`` ``(n_cls, D)`` randn with unit rows, ``centres`` ``(n_cls, D)``, ``assignment``
    ``(n_cls,)`` (the last matching; identity before the first step). Initial draws use the global torch RNG.

    Args:
        n_cls: classes, background included.
        dim: feature channels ``D`` (ACDC 496, LA 128).
        K: queue length (12288 = 256·3·4·4; smoke 96).
        centres: ``(n_cls, D)`` unit-row class centres; ``None`` computes
            :func:`~semizoo.losses.tsc.uniform_hypersphere_centres` ``(n_cls, dim, steps=centre_steps)``, cached
            in ``centre_cache_dir`` when given (:func:`~semizoo.losses.tsc.load_or_create_centres`).
        temperature: ``T`` (0.07; the ACDC method overwrites ``self.temperature`` with its cosine schedule).
        target_weight: ``tw`` (0.1 = official ACDC parser default; LA uses 0.2, set by config).
        queries_per_class: pixels drawn per present class, and in the fallback (256; smoke 8).
        centroid_momentum: ``m`` of the centroid update (0.9).
        centre_steps: Adam steps when the centres are made here (10000; smoke 200).
        centre_cache_dir: folder of the ``tsc_centres_{n}x{dim}.npy`` cache, or ``None`` for no cache.

    Raises:
        ValueError: non-positive sizes, or ``centres`` not ``(n_cls, dim)``.
    """

    def __init__(
        self,
        n_cls: int,
        dim: int,
        K: int = 12288,
        centres: Tensor | np.ndarray | None = None,
        temperature: float = 0.07,
        target_weight: float = 0.1,
        queries_per_class: int = 256,
        centroid_momentum: float = 0.9,
        centre_steps: int = 10000,
        centre_cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if n_cls < 1 or dim < 1 or K < 1 or queries_per_class < 1:
            raise ValueError(
                f"n_cls, dim, K and queries_per_class must be >= 1, got {n_cls}, {dim}, {K}, {queries_per_class}."
            )
        self.n_cls, self.dim, self.K = int(n_cls), int(dim), int(K)
        self.temperature, self.target_weight = float(temperature), float(target_weight)
        self.queries_per_class, self.centroid_momentum = int(queries_per_class), float(centroid_momentum)
        if centres is None:
            if centre_cache_dir is not None:
                centres = load_or_create_centres(self.n_cls, self.dim, centre_cache_dir, steps=centre_steps)
            else:
                centres = uniform_hypersphere_centres(self.n_cls, self.dim, steps=centre_steps)
        centres = torch.as_tensor(centres, dtype=torch.float32)
        if centres.shape != (self.n_cls, self.dim):
            raise ValueError(f"centres must be (n_cls, dim) = ({self.n_cls}, {self.dim}), got {tuple(centres.shape)}.")
        self.register_buffer("centres", centres.clone())
        self.register_buffer("queue", F.normalize(torch.randn(self.dim, self.K), dim=0))
        self.register_buffer("queue_labels", torch.full((self.K,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("centroids", F.normalize(torch.randn(self.n_cls, self.dim), dim=1))
        self.register_buffer("assignment", torch.arange(self.n_cls))

    def extra_repr(self) -> str:
        return (
            f"n_cls={self.n_cls}, dim={self.dim}, K={self.K}, temperature={self.temperature}, "
            f"target_weight={self.target_weight}, queries_per_class={self.queries_per_class}"
        )

    def _check_maps(self, feat_s: Tensor, feat_t: Tensor, labels: Tensor) -> Tensor:
        """Validate ``(B, D, *spatial)`` maps and ``(B[, 1], *spatial)`` labels; return labels as ``(B, P)`` long."""
        if feat_s.dim() < 3 or feat_s.shape != feat_t.shape or feat_s.shape[1] != self.dim:
            raise ValueError(
                f"feat_s and feat_t must both be (B, D={self.dim}, *spatial), got {tuple(feat_s.shape)} and "
                f"{tuple(feat_t.shape)}."
            )
        spatial = feat_s.shape[2:]
        if labels.dim() == feat_s.dim() and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.shape != (feat_s.shape[0], *spatial):
            raise ValueError(
                f"labels must be (B, *spatial) or (B, 1, *spatial) matching features {tuple(feat_s.shape)}, "
                f"got {tuple(labels.shape)}."
            )
        labels = labels.reshape(labels.shape[0], -1).long()
        if labels.numel() == 0:
            raise ValueError(f"no pixels to sample: features {tuple(feat_s.shape)}.")
        if bool(((labels < 0) | (labels >= self.n_cls)).any()):
            raise ValueError(f"labels must lie in [0, n_cls={self.n_cls}).")
        return labels

    def sample(
        self, feat_s: Tensor, feat_t: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw the contrast pixels (step 1; the official ``find_hard_sampling`` with ``random=True``).

        Index draws are made on the CPU (``generator`` or the global CPU RNG): per present class ``c`` in increasing
        order ``torch.randint(n_c, (Q,))`` over that class's pixels, then ``torch.randperm(N)``; with at most one
        class present a single ``torch.randint(B·P, (Q,))`` over all pixels.

        Args:
            feat_s, feat_t: ``(B, D, *spatial)`` student / teacher maps (rows are returned as given, not normalised).
            labels: ``(B, *spatial)`` or ``(B, 1, *spatial)`` integer classes in ``[0, n_cls)``.
            generator: CPU generator for the draws.

        Returns:
            ``(s, t, y)``: ``(N, D)``, ``(N, D)``, ``(N,)`` with ``N = Q · #present classes`` (``Q`` in the fallback).
        """
        flat_labels = self._check_maps(feat_s, feat_t, labels).reshape(-1)
        pixels = feat_s[0, 0].numel()
        q = self.queries_per_class
        present = torch.unique(flat_labels).tolist()
        if len(present) <= 1:
            index = torch.randint(flat_labels.numel(), (q,), generator=generator).to(flat_labels.device)
        else:
            chosen = []
            for c in present:
                where = torch.nonzero(flat_labels == c, as_tuple=True)[0]
                draws = torch.randint(where.numel(), (q,), generator=generator).to(where.device)
                chosen.append(where[draws])
            index = torch.cat(chosen)
            index = index[torch.randperm(index.numel(), generator=generator).to(index.device)]
        batch, pixel = index // pixels, index % pixels
        s = feat_s.flatten(2)[batch, :, pixel]  # (N, D)
        t = feat_t.flatten(2)[batch, :, pixel]
        return s, t, flat_labels[index]

    @torch.no_grad()
    def update_centroids(self, feats: Tensor, labels: Tensor) -> None:
        """Step 2: ``m_c <- norm(m·m_c + (1-m)·norm(mean_{labels = c} feats))`` for each class in ``labels``.

        Args:
            feats: ``(N, D)`` normalised student rows (used detached).
            labels: ``(N,)`` their classes.
        """
        feats = feats.detach().to(self.centroids.dtype)
        m = self.centroid_momentum
        for c in torch.unique(labels).tolist():
            batch_centroid = F.normalize(feats[labels == c].mean(0), dim=0)
            self.centroids[c] = F.normalize(m * self.centroids[c] + (1.0 - m) * batch_centroid, dim=0)

    @torch.no_grad()
    def assign(self) -> Tensor:
        """Step 3: Hungarian matching of classes to centres maximising ``Σ_c m_c · g_π(c)``; stored and returned.

        Returns:
            ``(n_cls,)`` long permutation ``π`` (class ``c`` uses centre row ``π[c]``).
        """
        similarity = (self.centroids @ self.centres.t()).double().cpu().numpy()
        rows, cols = linear_sum_assignment(similarity, maximize=True)
        assignment = torch.empty(self.n_cls, dtype=torch.long)
        assignment[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
        self.assignment.copy_(assignment)
        return self.assignment.clone()

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor) -> None:
        """Step 5: write ``keys`` ``(N, D)`` as queue columns ``ptr, ptr+1, ...`` (mod ``K``) with ``labels`` ``(N,)``;
        ``ptr <- (ptr + N) mod K``. With ``N > K`` only the last ``K`` keys survive, as in a sequential FIFO."""
        if keys.dim() != 2 or keys.shape[1] != self.dim or labels.shape != (keys.shape[0],):
            raise ValueError(
                f"keys must be (N, D={self.dim}) and labels (N,), got {tuple(keys.shape)} and {tuple(labels.shape)}."
            )
        n = keys.shape[0]
        ptr = int(self.queue_ptr)
        offset = max(n - self.K, 0)
        slots = (ptr + offset + torch.arange(n - offset, device=self.queue.device)) % self.K
        self.queue[:, slots] = keys[offset:].detach().to(self.queue).t()
        self.queue_labels[slots] = labels[offset:].to(self.queue_labels)
        self.queue_ptr.fill_((ptr + n) % self.K)

    def forward(
        self,
        feat_s: Tensor,
        feat_t: Tensor,
        labels: Tensor,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        return_parts: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """One TSC step (sample, centroids, matching, loss, enqueue) on a labelled batch.

        Args:
            feat_s: ``(B, D, *spatial)`` student representation (raw; normalised here), with gradient.
            feat_t: ``(B, D, *spatial)`` teacher features (raw; ACDC raw teacher pyramid, LA ``k_rep``), detached.
            labels: ``(B, *spatial)`` or ``(B, 1, *spatial)`` classes in ``[0, n_cls)``.
            temperature: overrides ``self.temperature`` for this call.
            generator: CPU generator for :meth:`sample`.
            return_parts: return ``(loss, L_class, L_target)`` as :func:`~semizoo.losses.tsc.tsc_loss`.

        Returns:
            The 0-d TSC loss (or its parts).
        """
        s, t, y = self.sample(feat_s, feat_t, labels, generator)
        s, t = F.normalize(s, dim=1), F.normalize(t.detach(), dim=1)
        self.update_centroids(s, y)
        assignment = self.assign()
        out = tsc_loss(
            s,
            t,
            y,
            self.queue.clone(),
            self.queue_labels.clone(),
            self.centres,
            assignment,
            self.temperature if temperature is None else temperature,
            self.target_weight,
            return_parts=return_parts,
        )
        self.enqueue(t, y)
        return out
