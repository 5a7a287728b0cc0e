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
from ..losses.tsc import load_or_create_centres, regular_simplex_centres, tsc_loss, uniform_hypersphere_centres
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
        centre_method: how centres are made when not given: ``"optimised"`` (official, default) or ``"simplex"``
            (:func:`~semizoo.losses.tsc.regular_simplex_centres`, the exact optimum; not cached, it is closed-form).

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
        centre_method: str = "optimised",
    ) -> None:
        super().__init__()
        if centre_method not in ("optimised", "simplex"):
            raise ValueError(f"centre_method must be 'optimised' or 'simplex', got {centre_method!r}.")
        if n_cls < 1 or dim < 1 or K < 1 or queries_per_class < 1:
            raise ValueError(
                f"n_cls, dim, K and queries_per_class must be >= 1, got {n_cls}, {dim}, {K}, {queries_per_class}."
            )
        self.n_cls, self.dim, self.K = int(n_cls), int(dim), int(K)
        self.temperature, self.target_weight = float(temperature), float(target_weight)
        self.queries_per_class, self.centroid_momentum = int(queries_per_class), float(centroid_momentum)
        if centres is None and centre_method == "simplex":
            centres = regular_simplex_centres(self.n_cls, self.dim)
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


@register("action")
class Action(Method):
    """ACTION / ACTION++ fine-tuning plugin, stage 3 (action.md §5; official ``train_{2D,3D}_action[++].py`` @77730a7).

    One :meth:`train_step` on a labelled batch ``x_l`` ``(B, C_in, *spatial)``, ``y_l`` ``(B[, 1], *spatial)`` and an
    unlabelled batch ``x_u`` (same spatial size; ``spatial`` = H, W or H, W, D):

    1. Teacher pseudo-labels without gradient: ``P = softmax(teacher(x_u))`` ``(B, C, *spatial)``, ``c, ŷ`` = max and
       argmax over classes; :func:`~semizoo.transforms.mix_unlabeled` (``mix_mode``) then the strong view
       (:class:`~semizoo.transforms.ActionStrongAug`) give ``x_a``, ``y_m`` ``(B, *spatial)``, ``c_m``.
    2. ACTION++ only: the TSC teacher feature ``f_t`` of ``x_l`` without gradient, before the student forwards (the
       official order): ``"pyramid"`` = the channel concat of the teacher's raw ``pyramid`` at the input size (ACDC,
       496 channels), ``"k_rep"`` = ``k_rep`` of that concat, ``k_rep`` an EMA copy of the representation head (LA).
    3. Two student forwards, ``self.network(x_l, features=True)`` then ``self.network(x_a, features=True)`` (two
       separate forwards as in the official code, so BatchNorm normalises each batch on its own), and the
       representation head on each concatenated pyramid (:func:`~semizoo.networks.pyramid_features`): ``r_l``,
       ``r_u`` ``(B, D, *spatial)``.
    4. ``loss = sup + lu + reco_weight·reco (+ tsc_weight·tsc)`` with ``sup = ½(CE + Dice)(o_l, y_l)``,
       ``lu`` = :func:`~semizoo.losses.weighted_pseudo_label_ce` ``(o_u, y_m, c_m, δs)``, ``reco`` =
       :func:`~semizoo.losses.reco_loss` on ``[r_l; r_u]`` with one-hot ``[y_l; relu(y_m)]``, mask ``[1; c_m ≥ δw]``
       and the detached student probabilities, ``tsc`` = :class:`TSCMemory` ``(r_l, f_t, y_l)``.
    5. ``isd_side_effects`` (ACTION on ACDC, action.md §7.9): the official script calls the pre-training ``ISD``
       module once per step and discards the result; its lasting effects are kept: a no-grad student forward on the
       raw ``x_u`` (in train mode: BatchNorm running statistics move) and one extra EMA update of the teacher. They
       run inside :meth:`train_step`, after the loss terms and before the trainer's backward, where the official call
       sits: the BatchNorm updates come in the official order (``x_l``, ``x_a``, ``x_u``), the extra EMA update sees
       the student before the optimizer step, and under AMP the forward is autocast like the others. Skipped without
       an unlabelled batch.
    6. :meth:`after_optimizer_step`: ``θ_t ← m·θ_t + (1 - m)·θ_s`` (parameters only, fixed ``m``: the official
       ``_momentum_update_key_encoder`` has no warm-up); with ``k_rep`` also ``k_rep ← m·k_rep + (1 - m)·rep``.

    Without an unlabelled batch: ``lu = 0``, ReCo on the labelled pixels only, TSC on the labelled batch as always.

    Temperatures (ACTION++): with ``e = iteration // iters_per_epoch``, ``E = max_iterations // iters_per_epoch + 1``,
    a cosine-scheduled temperature is :func:`~semizoo.schedules.cosine_temperature` ``(e, E, t_low,
    temperature_high, period_frac)`` (``temperature_high`` at ``e = 0``, ``t_low`` half a period later); otherwise
    the fixed value.

    State: the teacher (a frozen copy of the unwrapped student, made here: load the stage-2 student into the network
    before building the method), the representation head, ``k_rep`` and the TSC memory are submodules, so
    ``state_dict()`` checkpoints them (the student is held by reference, as in :class:`Method`); the CPU generator of
    every random draw of the method (mixing boxes/classes, strong view, ReCo and TSC sampling) is saved through
    :meth:`get_extra_state`. Dropout draws use torch's global RNG.

    DDP (architecture.md, principle 7): every trainable call goes through a forward that DDP sees: the student's
    ``self.network(...)`` and the given ``rep_head`` object's ``forward`` (kept as ``call_rep_head``); the unwrapped
    head is the ``rep_head`` submodule (checkpoint keys without ``module.``, so checkpoints move between world sizes;
    give the optimizer ``method.rep_head.parameters()``). :meth:`Method.zero_gradient_anchor` over the student and the
    head is added to the loss so every parameter gets a gradient at every step.

    Args:
        network: the student (:class:`~semizoo.networks.SSL4MISUNet` for ACDC, :class:`~semizoo.networks.UAMTVNet`
            for LA; possibly DDP-wrapped) with ``forward(x, features=True)`` returning ``logits`` and ``pyramid``.
        rep_head: :class:`~semizoo.networks.RepresentationHead` (possibly DDP-wrapped) on the concatenated pyramid:
            ACDC 496→512 (ACTION) / 496→496 (ACTION++), LA 256→128 (action.md §2).
        n_classes: classes, background included (ACDC 4, LA 2).
        spatial_dims: 2 (ACDC) or 3 (LA); selects the strong view.
        ema_decay: ``m`` of the teacher and ``k_rep`` EMA (0.99, §6).
        mix_mode: ``"cutmix"`` (ACDC, default), ``"classmix"`` (LA) or ``"cutout"`` (§6, §7.11: the scripts' choice).
        intensity_compat: ``"fixed"`` (default) or ``"official"`` intensity handling of the strong view (§3, §7.10).
        adv_morph_prob: per-batch probability of :class:`~semizoo.transforms.AdvMorph` in the strong view (0.0: the
            official module is missing, §7.2; official 0.5); 2D only.
        strong_aug: a callable ``(image, pseudo, conf, generator) -> (image, pseudo, conf)`` replacing the default
            ``ActionStrongAug(spatial_dims, intensity_compat, adv_morph_prob)`` (e.g. the identity in tests); then
            ``intensity_compat`` and ``adv_morph_prob`` must keep their defaults.
        strong_threshold: δs, confidence counted as strong in ``lu`` and ReCo's hard-pixel threshold (0.97, §6).
        weak_threshold: δw, teacher confidence from which an unlabelled pixel enters ReCo (0.7, §6).
        num_queries, num_negatives: ReCo Q and N (256, 512, §6; smoke 8, 16).
        reco_weight: weight of the ReCo term (0.01, §6; official ``k1`` / literal 0.01).
        reco_temperature: ReCo τ (ACTION 0.5, §6); with ``reco_cosine`` the low end of its schedule (ACTION++ 0.1).
        reco_cosine: cosine-schedule τ (ACTION++ "ATS", both datasets; default False = ACTION).
        reco_period_frac: period fraction of the ReCo schedule (0.1; LA's undefined ``args.T`` read as 0.1, §7.4).
        temperature_high: high end of both cosine schedules (1.0, §6).
        tsc_weight: weight of the TSC term; 0 (default) is ACTION without TSC, 0.01 is ACTION++ (§6).
        tsc_temperature: TSC ``T`` (0.07, §6); with ``tsc_cosine`` the low end of its schedule.
        tsc_cosine: cosine-schedule ``T`` (ACDC ACTION++ True; LA fixed, default False).
        tsc_period_frac: period fraction of the TSC schedule (0.1, §6).
        tsc_target_weight: ``tw`` (ACDC 0.1 parser default, LA 0.2 ``TSC_3d`` default; §7.11).
        tsc_queue_size: TSC queue length K (12288 = 256·3·4·4, §6; smoke 96).
        tsc_queries_per_class: pixels drawn per class (256; smoke 8).
        tsc_teacher_feature: ``"pyramid"`` (ACDC: raw teacher pyramid; needs the head's in = out channels) or
            ``"k_rep"`` (LA: EMA copy of the head), §5-§6.
        tsc_centre_steps: Adam steps of the class centres when made here (10000, §5; smoke 200).
        tsc_centre_cache_dir: folder of the ``tsc_centres_{n}x{dim}.npy`` cache (bundles: ``models/``); ``None`` makes
            the centres without caching.
        tsc_centre_method: ``"optimised"`` (official procedure, default) or ``"simplex"`` (exact regular simplex,
            the intent: the official optimisation stops short of it, notably for LA's two classes).
        iters_per_epoch: iterations per schedule "epoch" (⌊n_unlabelled / B⌋, §3; default 1).
        max_iterations: iterations of the stage (30000, §6); sets ``E``.
        isd_side_effects: keep the side effects of the official discarded ``ISD`` call (True = official ACTION on
            ACDC, the default; False for LA and ACTION++, whose scripts have no such call), §5, §7.9.
        teacher_eval_mode: teacher in eval mode (intent); the official teacher always runs in train mode (dropout,
            batch statistics), the default False (§2, §7.8).
        sup_loss: loss of logits and labels (default ``½(CE + Dice)`` with MONAI ``DiceLoss(to_onehot_y=True,
            softmax=True, squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)``, §4 "Stage-2/3 Dice").
        seed: seed of the method's CPU generator; ``None`` (default) takes ``torch.initial_seed()``, so runs seeded
            differently (``set_determinism``) draw differently.
        image_key, label_key: batch keys.

    Raises:
        ValueError: an unknown choice, a value out of range, ``"pyramid"`` TSC features with a head whose input and
            output channels differ, or ``strong_aug`` together with non-default strong-view options.
        TypeError: a ``rep_head`` without ``out_channels`` when the TSC term is on.
    """

    def __init__(
        self,
        network: nn.Module,
        rep_head: nn.Module,
        n_classes: int,
        spatial_dims: int = 2,
        ema_decay: float = 0.99,
        mix_mode: str = "cutmix",
        intensity_compat: str = "fixed",
        adv_morph_prob: float = 0.0,
        strong_aug: Callable[..., tuple[Tensor, Tensor, Tensor]] | None = None,
        strong_threshold: float = 0.97,
        weak_threshold: float = 0.7,
        num_queries: int = 256,
        num_negatives: int = 512,
        reco_weight: float = 0.01,
        reco_temperature: float = 0.5,
        reco_cosine: bool = False,
        reco_period_frac: float = 0.1,
        temperature_high: float = 1.0,
        tsc_weight: float = 0.0,
        tsc_temperature: float = 0.07,
        tsc_cosine: bool = False,
        tsc_period_frac: float = 0.1,
        tsc_target_weight: float = 0.1,
        tsc_queue_size: int = 12288,
        tsc_queries_per_class: int = 256,
        tsc_teacher_feature: str = "pyramid",
        tsc_centre_steps: int = 10000,
        tsc_centre_cache_dir: str | os.PathLike | None = None,
        tsc_centre_method: str = "optimised",
        iters_per_epoch: int = 1,
        max_iterations: int = 30000,
        isd_side_effects: bool = True,
        teacher_eval_mode: bool = False,
        sup_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        seed: int | None = None,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__(network, image_key=image_key, label_key=label_key)
        if not isinstance(rep_head, nn.Module):
            raise TypeError(f"rep_head must be a torch.nn.Module, got {type(rep_head).__name__}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if mix_mode not in MIX_MODES:
            raise ValueError(f"mix_mode must be one of {MIX_MODES}, got {mix_mode!r}.")
        if tsc_teacher_feature not in TSC_TEACHER_FEATURES:
            raise ValueError(f"tsc_teacher_feature must be one of {TSC_TEACHER_FEATURES}, got {tsc_teacher_feature!r}.")
        if int(n_classes) < 2 or not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"need n_classes >= 2 and 0 <= ema_decay <= 1, got {n_classes} and {ema_decay}.")
        if min(reco_weight, tsc_weight) < 0 or min(num_queries, num_negatives, iters_per_epoch, max_iterations) < 1:
            raise ValueError(
                "need reco_weight, tsc_weight >= 0 and num_queries, num_negatives, iters_per_epoch, max_iterations "
                f">= 1; got {reco_weight}, {tsc_weight}, {num_queries}, {num_negatives}, {iters_per_epoch}, "
                f"{max_iterations}."
            )
        if min(reco_temperature, tsc_temperature, temperature_high, reco_period_frac, tsc_period_frac) <= 0:
            raise ValueError(
                "temperatures and period fractions must be positive, got "
                f"reco_temperature={reco_temperature}, tsc_temperature={tsc_temperature}, "
                f"temperature_high={temperature_high}, reco_period_frac={reco_period_frac}, "
                f"tsc_period_frac={tsc_period_frac}."
            )
        if strong_aug is not None and (intensity_compat != "fixed" or adv_morph_prob != 0.0):
            raise ValueError(
                "strong_aug replaces ActionStrongAug: leave intensity_compat ('fixed') and adv_morph_prob (0.0) at "
                f"their defaults, got {intensity_compat!r} and {adv_morph_prob}."
            )
        plain = unwrap(rep_head)
        self.rep_head = plain  # checkpointed without DDP's "module." prefix
        self.__dict__["call_rep_head"] = rep_head  # the (possibly DDP-wrapped) module whose forward every call uses
        self.n_classes, self.spatial_dims, self.ema_decay = int(n_classes), int(spatial_dims), float(ema_decay)
        self.mix_mode = mix_mode
        self.strong_aug = (
            ActionStrongAug(self.spatial_dims, intensity_compat, adv_morph_prob) if strong_aug is None else strong_aug
        )
        self.strong_threshold, self.weak_threshold = float(strong_threshold), float(weak_threshold)
        self.num_queries, self.num_negatives = int(num_queries), int(num_negatives)
        self.reco_weight, self.reco_temperature = float(reco_weight), float(reco_temperature)
        self.reco_cosine, self.reco_period_frac = bool(reco_cosine), float(reco_period_frac)
        self.temperature_high = float(temperature_high)
        self.tsc_weight, self.tsc_temperature = float(tsc_weight), float(tsc_temperature)
        self.tsc_cosine, self.tsc_period_frac = bool(tsc_cosine), float(tsc_period_frac)
        self.tsc_teacher_feature = tsc_teacher_feature
        self.iters_per_epoch, self.max_iterations = int(iters_per_epoch), int(max_iterations)
        self.isd_side_effects, self.teacher_eval_mode = bool(isd_side_effects), bool(teacher_eval_mode)
        self.sup_loss = action_sup_loss() if sup_loss is None else sup_loss
        self.teacher = self.copy_network()
        self.tsc: TSCMemory | None = None
        self.k_rep: nn.Module | None = None
        if self.tsc_weight > 0:
            dim = getattr(plain, "out_channels", None)
            if dim is None:
                raise TypeError(
                    "the TSC term needs a rep_head with `out_channels` (semizoo.networks.RepresentationHead)."
                )
            if tsc_teacher_feature == "pyramid" and getattr(plain, "in_channels", dim) != dim:
                raise ValueError(
                    "tsc_teacher_feature='pyramid' compares the head's output with the raw teacher pyramid: the head "
                    f"must keep its channels (ACTION++ ACDC 496 -> 496), got {plain.in_channels} -> {dim}."
                )
            self.tsc = TSCMemory(
                self.n_classes,
                int(dim),
                K=tsc_queue_size,
                temperature=self.tsc_temperature,
                target_weight=tsc_target_weight,
                queries_per_class=tsc_queries_per_class,
                centre_steps=tsc_centre_steps,
                centre_cache_dir=tsc_centre_cache_dir,
                centre_method=tsc_centre_method,
            )
            if tsc_teacher_feature == "k_rep":
                self.k_rep = frozen_copy(plain)
        seed = torch.initial_seed() % (2**63) if seed is None else int(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> dict[str, Tensor]:
        """The generator's state, so a resumed run draws the same mixing, augmentation and contrast samples."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def train(self, mode: bool = True) -> "Action":
        super().train(mode)
        self.call_rep_head.train(mode)
        self.teacher.train(mode and not self.teacher_eval_mode)
        return self

    def temperatures(self, iteration: int) -> tuple[float, float]:
        """``(τ_ReCo, T_TSC)`` at ``iteration``: fixed, or the ACTION++ cosine schedules (class docstring)."""
        epoch, epochs = int(iteration) // self.iters_per_epoch, self.max_iterations // self.iters_per_epoch + 1
        t_reco, t_tsc = self.reco_temperature, self.tsc_temperature
        if self.reco_cosine:
            t_reco = cosine_temperature(epoch, epochs, t_reco, self.temperature_high, self.reco_period_frac)
        if self.tsc_cosine:
            t_tsc = cosine_temperature(epoch, epochs, t_tsc, self.temperature_high, self.tsc_period_frac)
        return t_reco, t_tsc

    @torch.no_grad()
    def update_teacher(self) -> None:
        """``θ_t ← m θ_t + (1 - m) θ_s`` (parameters only); with ``k_rep`` also ``k_rep ← m k_rep + (1 - m) rep``."""
        ema_update_(self.teacher, self.network, self.ema_decay)
        if self.k_rep is not None:
            ema_update_(self.k_rep, self.rep_head, self.ema_decay)

    def after_optimizer_step(self) -> None:
        self.update_teacher()

    def _rep(self, out: Mapping[str, Any]) -> Tensor:
        """The representation head (through ``call_rep_head``'s forward) on the pyramid resized to the logits."""
        return self.call_rep_head(pyramid_features(out["pyramid"], out["logits"].shape[2:]))

    @torch.no_grad()
    def _pseudo_view(self, images_u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher pseudo-labels of ``x_u``, mixed and strongly augmented: ``(x_a, y_m, c_m)`` (steps 1)."""
        probs = torch.softmax(self.teacher(images_u), dim=1)
        conf, pseudo = probs.max(dim=1)
        mixed, pseudo, conf = mix_unlabeled(images_u, pseudo, conf, self.mix_mode, self.generator)
        return self.strong_aug(mixed, pseudo, conf, self.generator)

    @torch.no_grad()
    def _teacher_feature(self, images_l: Tensor) -> Tensor:
        """``f_t`` of the TSC term: the raw teacher pyramid (ACDC) or ``k_rep`` of it (LA), ``(B, D, *spatial)``."""
        out: Any = self.teacher(images_l, features=True)
        feature = pyramid_features(out["pyramid"], out["logits"].shape[2:])
        return feature if self.k_rep is None else self.k_rep(feature)

    @torch.no_grad()
    def _isd_side_effects(self, images_u: Tensor) -> None:
        """The lasting effects of the official discarded ``ISD`` call: a student forward on the raw ``x_u`` (BatchNorm
        running statistics move in train mode; output unused) and one extra teacher EMA update."""
        self.network(images_u)
        ema_update_(self.teacher, self.network, self.ema_decay)

    def train_step(self, labeled: Mapping[str, Tensor], unlabeled: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        images_l = self.batch_item(labeled, self.image_key, "labeled")
        labels_l = self.batch_item(labeled, self.label_key, "labeled")
        labels_l = (labels_l[:, 0] if labels_l.dim() == images_l.dim() else labels_l).long()  # (B, *spatial)
        t_reco, t_tsc = self.temperatures(self.iteration)
        images_u = None if unlabeled is None else self.batch_item(unlabeled, self.image_key, "unlabeled")
        if images_u is not None:
            images_a, pseudo_m, conf_m = self._pseudo_view(images_u)
        feature_t = self._teacher_feature(images_l) if self.tsc is not None else None

        out_l: Any = self.network(images_l, features=True)
        out_u: Any = None if images_u is None else self.network(images_a, features=True)
        rep_l = self._rep(out_l)
        loss_sup = self.sup_loss(out_l["logits"], labels_l)
        zero = zero_like(loss_sup)

        # ReCo over [labelled; unlabelled] pixels: one-hot [y_l; relu(y_m)], mask [1; c_m >= δw]
        reps, logits, targets, masks = [rep_l], [out_l["logits"]], [labels_l], [(labels_l >= 0).float()]
        loss_unsup = zero
        if out_u is not None:
            loss_unsup = weighted_pseudo_label_ce(out_u["logits"], pseudo_m, conf_m, self.strong_threshold)
            reps.append(self._rep(out_u))
            logits.append(out_u["logits"])
            targets.append(pseudo_m.long().clamp_min(0))
            masks.append((conf_m >= self.weak_threshold).float())
        rep = torch.cat(reps)
        with torch.no_grad():
            onehot = F.one_hot(torch.cat(targets), self.n_classes).movedim(-1, 1).to(rep.dtype)
            mask = torch.cat(masks).unsqueeze(1).to(rep.dtype)
            prob = torch.softmax(torch.cat(logits), dim=1)
        loss_reco = reco_loss(
            rep,
            onehot,
            mask,
            prob,
            self.strong_threshold,
            t_reco,
            self.num_queries,
            self.num_negatives,
            generator=self.generator,
        )
        loss_tsc = zero.clone()
        if self.tsc is not None:
            loss_tsc = self.tsc(rep_l, feature_t, labels_l, temperature=t_tsc, generator=self.generator)
        if self.isd_side_effects and images_u is not None:
            self._isd_side_effects(images_u)

        loss = loss_sup + loss_unsup + self.reco_weight * loss_reco + self.tsc_weight * loss_tsc
        loss = loss + self.zero_gradient_anchor(self.network, self.call_rep_head)
        return {
            "loss": loss,
            "loss_sup": loss_sup,
            "loss_unsup": loss_unsup,
            "loss_reco": loss_reco,
            "loss_tsc": loss_tsc,
            "t_reco": torch.tensor(t_reco, device=loss.device),
            "t_tsc": torch.tensor(t_tsc, device=loss.device),
        }
