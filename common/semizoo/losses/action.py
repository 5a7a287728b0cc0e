"""ACTION / ACTION++ losses (You et al., IPMI 2023 and MICCAI 2023; action.md §4-§5, §13).

Functional cores, read from charlesyou999648/ACTION @ 77730a7 (read, never copied):

- ``queue_logits``: cosine similarities of anchors to a queue of past teacher embeddings over a temperature
  (``code/model.py``, ``compute_logits``), the soft labels of pre-training stages 1-2.
- ``soft_label_kl``: ``KL(softmax(teacher) ‖ softmax(student))``, batchmean (``KLD`` of
  ``code/train_2D_pretrain.py``).
- ``weighted_pseudo_label_ce``: fine-tuning CE on teacher pseudo-labels, weighted per sample by the fraction of
  confident pixels (``compute_unsupervised_loss`` of ``code/train_2D_action.py``); 0 instead of NaN when no pixel
  has a positive CE (action.md §7.13).
- ``reco_loss``: the ReCo-style "anatomical contrast" on hard pixels of the representation head
  (``compute_reco_loss`` / ``negative_index_sampler`` of ``code/train_2D_action.py``; Liu et al., ReCo, ICLR 2022),
  vectorised, with every random draw taken from one ``torch.Generator``.

Each comes with a thin ``nn.Module`` that stores the hyperparameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "queue_logits",
    "soft_label_kl",
    "weighted_pseudo_label_ce",
    "reco_loss",
    "SoftLabelKLLoss",
    "WeightedPseudoLabelCE",
    "ReCoLoss",
]

_COS_EPS = 1e-8  # eps of ``torch.cosine_similarity``, used by the official ReCo code


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")


def queue_logits(anchors: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """Cosine similarity of every anchor to every queue entry over a temperature (action.md §4, ``ql``).

    ``norm_rows(anchors) · norm_rows(queue)ᵀ / temperature``, rows L2-normalised as ``F.normalize(·, dim=1)``
    (official ``code/model.py`` ``compute_logits`` @ 77730a7). Gradients reach ``anchors`` and ``queue``.

    Args:
        anchors: ``(N, D)`` embeddings (latent vectors, or rows of pooled logit windows).
        queue: ``(K, D)`` stored teacher embeddings, as they were before this step's enqueue.
        temperature: positive divisor (ACTION ``Ts`` for the student, ``Tt`` for the teacher).

    Returns:
        ``(N, K)`` logits.

    Raises:
        ValueError: when either input is not 2-D, their feature sizes differ (both shapes named), or the
            temperature is not positive.
    """
    if anchors.dim() != 2 or queue.dim() != 2 or anchors.shape[1] != queue.shape[1]:
        raise ValueError(
            "anchors must be (N, D) and queue (K, D) with the same D, got "
            f"{tuple(anchors.shape)} and {tuple(queue.shape)}."
        )
    _check_temperature(temperature)
    return F.normalize(anchors, dim=1) @ F.normalize(queue, dim=1).t() / temperature


def soft_label_kl(student: Tensor, teacher: Tensor) -> Tensor:
    """``KL(softmax(teacher) ‖ softmax(student))`` over the last axis, averaged over rows (action.md §4).

    ``(1/R) Σ_r Σ_k p_rk (log p_rk - log q_rk)`` with ``p = softmax(teacher)``, ``q = softmax(student)``: PyTorch's
    ``kl_div(..., reduction="batchmean")``, as the official ``KLD`` (``code/train_2D_pretrain.py`` @ 77730a7).
    The teacher logits are **not** detached here, as in the official code (the k heads learn through them);
    callers detach them for ``detach_teacher_targets=true`` (action.md §7.8).

    Args:
        student: ``(R, K)`` student logits, e.g. ``queue_logits(zs, Q, Ts)``.
        teacher: ``(R, K)`` teacher logits, e.g. ``queue_logits(zt, Q, Tt)``.

    Returns:
        Scalar loss.

    Raises:
        ValueError: when the shapes differ or are not 2-D (both shapes named).
    """
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(
            "student and teacher logits must both be (R, K), got " f"{tuple(student.shape)} and {tuple(teacher.shape)}."
        )
    return F.kl_div(
        F.log_softmax(student, dim=1), F.log_softmax(teacher, dim=1), reduction="batchmean", log_target=True
    )


def _drop_channel(x: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """``(B, 1, *spatial)`` → ``(B, *spatial)``; other shapes are returned unchanged (checked by the caller)."""
    if x.dim() == len(spatial) + 2 and x.shape[1] == 1:
        return x[:, 0]
    return x


def weighted_pseudo_label_ce(logits: Tensor, pseudo: Tensor, conf: Tensor, strong_threshold: float = 0.97) -> Tensor:
    """Confidence-weighted cross-entropy on pseudo-labels (ACTION stage 3, action.md §5 ``lu``).

    Per sample ``b``, ``w_b = #{conf_b ≥ strong_threshold} / #{pseudo_b ≥ 0}`` (both counted over all pixels of the
    sample); per pixel ``ℓ_i = CE(logits_i, pseudo_i)``, 0 where ``pseudo_i = -1`` (ignored, e.g. cut out). Then

        ``L = Σ_{i: ℓ_i > 0} w_b(i) ℓ_i / #{i: ℓ_i > 0}``,

    as ``compute_unsupervised_loss`` (``code/train_2D_action.py`` @ 77730a7), except that ``L = 0`` (a zero still
    attached to ``logits``' graph) when no pixel has ``ℓ_i > 0``, where the official code gives NaN (action.md §7.13).

    Args:
        logits: ``(B, C, *spatial)`` student logits on the strongly augmented mixed images.
        pseudo: ``(B, *spatial)`` or ``(B, 1, *spatial)`` integer pseudo-labels in ``{-1, 0, …, C-1}``.
        conf: teacher confidences, ``(B, *spatial)`` or ``(B, 1, *spatial)``.
        strong_threshold: confidence counted as strong (δs, 0.97).

    Returns:
        Scalar loss.

    Raises:
        ValueError: when ``pseudo`` or ``conf`` does not match ``logits``' batch and spatial shape (shapes named).
    """
    if logits.dim() < 3:
        raise ValueError(f"logits must be (B, C, *spatial), got {tuple(logits.shape)}.")
    expected = (logits.shape[0], *logits.shape[2:])
    target = _drop_channel(pseudo, tuple(logits.shape[2:]))
    weights = _drop_channel(conf, tuple(logits.shape[2:]))
    for name, value, original in (("pseudo", target, pseudo), ("conf", weights, conf)):
        if tuple(value.shape) != expected:
            raise ValueError(
                f"{name} must be (B, *spatial) or (B, 1, *spatial) for logits {tuple(logits.shape)}, "
                f"got {tuple(original.shape)}."
            )
    batch = logits.shape[0]
    target = target.long()
    strong = (weights.reshape(batch, -1) >= strong_threshold).sum(1)
    valid = (target.reshape(batch, -1) >= 0).sum(1)
    # a sample without valid pixels has ℓ = 0 everywhere, so its (guarded) weight is never used
    w = strong.to(logits.dtype) / valid.clamp_min(1).to(logits.dtype)
    loss = F.cross_entropy(logits, target, reduction="none", ignore_index=-1)  # (B, *spatial)
    positive = loss > 0
    weighted = w.view(batch, *([1] * (loss.dim() - 1))) * loss
    return torch.where(positive, weighted, torch.zeros_like(weighted)).sum() / positive.sum().clamp_min(1)


def _unit(x: Tensor) -> Tensor:
    """``x / max(‖x‖, 1e-8)`` along the last axis, so dot products are ``torch.cosine_similarity``'s cosines."""
    return F.normalize(x, dim=-1, eps=_COS_EPS)


def reco_loss(
    rep: Tensor,
    label_onehot: Tensor,
    mask: Tensor,
    prob: Tensor,
    strong_threshold: float,
    temperature: float,
    num_queries: int,
    num_negatives: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ReCo-style anatomical contrast on hard pixels (ACTION stage 3, action.md §5 ``reco_loss``).

    With pixels ``i`` of every sample and ``V_c = {i: onehot_ci · mask_i ≠ 0}``, the present classes ``𝒞`` are those
    with ``|V_c| > 0`` in increasing ``c``; ``|𝒞| ≤ 1`` gives 0. Prototypes ``μ_c = mean_{i ∈ V_c} r_i`` (raw
    features) and hard sets ``H_c = V_c ∩ {prob_ci < strong_threshold}``. For each ``c ∈ 𝒞`` with ``H_c ≠ ∅``:

    1. ``num_queries`` anchors ``a_q`` drawn uniformly with replacement from ``H_c`` (these carry the gradient);
    2. without gradient, the other present classes ``j`` in cyclic order after ``c`` get
       ``π = softmax_j(cos(μ_c, μ_j) / τ)``; each anchor draws ``num_negatives`` classes from ``π`` and, for each
       draw, a negative uniformly from ``V_j``; negatives are grouped by class (in the cyclic order);
    3. keys ``[μ_c, negatives]`` (detached), ``L_c = mean_q CE(cos(a_q, keys) / τ, target 0)``.

    ``L = Σ_c L_c / |𝒞|``: a class skipped for lack of hard pixels still counts in the denominator. This follows
    ``compute_reco_loss`` / ``negative_index_sampler`` (``code/train_2D_action.py`` @ 77730a7; Liu et al., ReCo,
    ICLR 2022), vectorised over anchors and negatives. Cosines use ``x / max(‖x‖, 1e-8)``.

    Randomness: every draw comes from ``generator`` (the global CPU generator when ``None``), on the generator's
    device (CPU in ACTION), per class in the order anchors, class draws, negatives; indices are then moved to
    ``rep``'s device, so a seeded generator makes the same draws whatever the device of ``rep``.

    Args:
        rep: ``(B, D, *spatial)`` representation-head features (labelled and unlabelled batches concatenated).
        label_onehot: ``(B, C, *spatial)`` one-hot labels / pseudo-labels.
        mask: ``(B, 1, *spatial)`` pixel validity (1 for labelled pixels, ``conf ≥ δw`` for unlabelled ones).
        prob: ``(B, C, *spatial)`` detached class probabilities of the student.
        strong_threshold: ``prob_c`` below which a pixel of class ``c`` is hard (δs, 0.97).
        temperature: τ of both the class distribution and the contrastive logits (0.5; ACTION++ schedules it).
        num_queries: anchors per class (Q, 256).
        num_negatives: negatives per anchor (N, 512).
        generator: source of all random draws.

    Returns:
        Scalar loss; the zero results (``|𝒞| ≤ 1``, or no class with hard pixels) stay attached to ``rep``'s graph.

    Raises:
        ValueError: when the layouts disagree (shapes named), or for a non-positive temperature or count.
    """
    if rep.dim() < 3:
        raise ValueError(f"rep must be (B, D, *spatial), got {tuple(rep.shape)}.")
    batch, spatial = rep.shape[0], tuple(rep.shape[2:])
    if label_onehot.dim() != rep.dim() or label_onehot.shape[0] != batch or tuple(label_onehot.shape[2:]) != spatial:
        raise ValueError(
            f"label_onehot must be (B, C, *spatial) for rep {tuple(rep.shape)}, got {tuple(label_onehot.shape)}."
        )
    if prob.shape != label_onehot.shape:
        raise ValueError(f"prob must have label_onehot's shape {tuple(label_onehot.shape)}, got {tuple(prob.shape)}.")
    if tuple(mask.shape) != (batch, 1, *spatial):
        raise ValueError(f"mask must be (B, 1, *spatial) for rep {tuple(rep.shape)}, got {tuple(mask.shape)}.")
    _check_temperature(temperature)
    if num_queries < 1 or num_negatives < 1:
        raise ValueError(f"num_queries and num_negatives must be positive, got {num_queries} and {num_negatives}.")

    feat_dim, num_classes = rep.shape[1], label_onehot.shape[1]
    feats = rep.movedim(1, -1).reshape(-1, feat_dim)  # (P, D), pixels in (b, *spatial) raster order
    valid = ((label_onehot != 0) & (mask != 0)).movedim(1, -1).reshape(-1, num_classes)  # (P, C)
    hard = valid & (prob.movedim(1, -1).reshape(-1, num_classes) < strong_threshold)
    present = valid.any(0).nonzero().squeeze(1).tolist()  # 𝒞, increasing c
    total = feats.sum() * 0.0  # a zero on rep's graph
    if len(present) <= 1:
        return total

    members = [valid[:, c].nonzero().squeeze(1) for c in present]  # V_c as pixel indices
    hard_members = [hard[:, c].nonzero().squeeze(1) for c in present]
    sizes = torch.tensor([len(m) for m in members])
    with torch.no_grad():
        feats_fixed = feats.detach()
        sums = valid[:, present].float().t() @ feats_fixed.float()  # float32 sums, also under autocast
        protos_unit = _unit((sums / sizes.to(sums)[:, None]).to(feats_fixed.dtype))  # μ_c / ‖μ_c‖, (|𝒞|, D)
    draw_device = generator.device if generator is not None else torch.device("cpu")

    for i, hard_c in enumerate(hard_members):
        if len(hard_c) == 0:  # every pixel of this class is easy: skipped, still in the denominator
            continue
        # 1. anchors, uniform with replacement from H_c
        pick = torch.randint(len(hard_c), (num_queries,), generator=generator, device=draw_device)
        anchors = _unit(feats[hard_c[pick.to(hard_c.device)]])  # (Q, D), with grad
        with torch.no_grad():
            others = [(i + k) % len(present) for k in range(1, len(present))]  # cyclic order after c
            # 2. class draws from π = softmax(cos(μ_c, μ_j) / τ), grouped by class
            pi = torch.softmax(protos_unit[others] @ protos_unit[i] / temperature, dim=0)
            cls = torch.multinomial(
                pi.float().to(draw_device), num_queries * num_negatives, replacement=True, generator=generator
            )
            cls = cls.view(num_queries, num_negatives).sort(dim=1).values
            # 3. a negative drawn uniformly from V_j for each class draw
            u = torch.rand(num_queries, num_negatives, generator=generator, device=draw_device, dtype=torch.float64)
            other_sizes = sizes[others].to(draw_device)
            local = torch.minimum((u * other_sizes[cls]).long(), other_sizes[cls] - 1)
            starts = torch.cumsum(other_sizes, 0) - other_sizes
            pool = torch.cat([members[j] for j in others])
            negatives = feats_fixed[pool[(starts[cls] + local).to(pool.device)]]  # (Q, N, D)
            keys = torch.cat([protos_unit[i].expand(num_queries, 1, feat_dim), _unit(negatives)], dim=1)
        logits = torch.einsum("qd,qkd->qk", anchors, keys) / temperature  # (Q, 1 + N)
        target = torch.zeros(num_queries, dtype=torch.long, device=logits.device)
        total = total + F.cross_entropy(logits, target)
    return total / len(present)


class SoftLabelKLLoss(nn.Module):
    """Module form of :func:`soft_label_kl`: ``forward(student, teacher)``."""

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return soft_label_kl(student, teacher)


class WeightedPseudoLabelCE(nn.Module):
    """Module form of :func:`weighted_pseudo_label_ce` with a stored ``strong_threshold`` (δs)."""

    def __init__(self, strong_threshold: float = 0.97) -> None:
        super().__init__()
        self.strong_threshold = float(strong_threshold)

    def forward(self, logits: Tensor, pseudo: Tensor, conf: Tensor) -> Tensor:
        return weighted_pseudo_label_ce(logits, pseudo, conf, self.strong_threshold)


class ReCoLoss(nn.Module):
    """Module form of :func:`reco_loss`; defaults are ACTION's (δs 0.97, τ 0.5, Q 256, N 512; action.md §6).

    ``forward(rep, label_onehot, mask, prob, generator=None, temperature=None)``: ``temperature`` overrides the
    stored τ for one call (ACTION++'s cosine schedule, ``semizoo.schedules.cosine_temperature``).
    """

    def __init__(
        self,
        strong_threshold: float = 0.97,
        temperature: float = 0.5,
        num_queries: int = 256,
        num_negatives: int = 512,
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        if num_queries < 1 or num_negatives < 1:
            raise ValueError(f"num_queries and num_negatives must be positive, got {num_queries} and {num_negatives}.")
        self.strong_threshold = float(strong_threshold)
        self.temperature = float(temperature)
        self.num_queries = int(num_queries)
        self.num_negatives = int(num_negatives)

    def forward(
        self,
        rep: Tensor,
        label_onehot: Tensor,
        mask: Tensor,
        prob: Tensor,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
    ) -> Tensor:
        return reco_loss(
            rep,
            label_onehot,
            mask,
            prob,
            self.strong_threshold,
            self.temperature if temperature is None else float(temperature),
            self.num_queries,
            self.num_negatives,
            generator=generator,
        )
