"""ACTION++ targeted supervised contrast (TSC): the loss on sampled rows and the uniform class centres (action.md §5).

You et al., "ACTION++: Improving Semi-supervised Medical Image Segmentation with Adaptive Anatomical Contrast",
MICCAI 2023 (arXiv:2304.02689), the adaptive supervised contrastive loss; official code charlesyou999648/ACTION
@77730a7, ``code/TSC.py`` (``TSC.forward`` for the loss, the ``__main__`` block for the centres; read, not copied).

- :func:`tsc_loss`: supervised contrast of sampled labelled pixels against a FIFO queue of teacher keys and a set of
  fixed class centres, each class pulled towards the centre the Hungarian matching assigned to it.
- :func:`uniform_hypersphere_centres`: ``n`` points spread uniformly on the unit sphere of ``R^dim`` by minimising a
  log-sum-exp uniformity energy (computed once, offline in the paper).
- :func:`load_or_create_centres`: the same, cached as ``tsc_centres_{n}x{dim}.npy`` in a directory (action.md §7.1:
  the official ``optimal_{n}_{dim}.npy`` files are not published, so they are made at first use).

The stateful parts (pixel sampling, class centroids, Hungarian matching, the queue) live in
:class:`semizoo.methods.action.TSCMemory`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "tsc_loss",
    "uniform_hypersphere_centres",
    "regular_simplex_centres",
    "load_or_create_centres",
    "centres_cache_path",
]


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def tsc_loss(
    feat_s: Tensor,
    feat_t: Tensor,
    labels: Tensor,
    queue: Tensor,
    queue_labels: Tensor,
    centres: Tensor,
    assignment: Tensor,
    temperature: float,
    target_weight: float,
    return_parts: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Targeted supervised contrastive loss of ACTION++ on already sampled rows (action.md §5, ``TSC.forward``).

    Logits, all divided by ``T = temperature``, have ``1 + K + n_cls`` columns per row ``n``::

        column 0         s_n · t_n        (the teacher view of the same pixel)
        columns 1..K     s_n · q_k        (queue of past teacher keys)
        column K+1+j     s_n · g_j        (class centre j, j < n_cls)

    With ``lp = log_softmax(logits)`` and the positive set ``P_n = {0} ∪ {k : queue_labels[k] = y_n} ∪
    {K+1+π(y_n)}`` (``π = assignment``)::

        L_class  = -(1/N) Σ_n (lp[n, 0] + Σ_{queue k ∈ P_n} lp[n, k]) / |P_n|
        L_target = -(1/N) Σ_n lp[n, K+1+π(y_n)] / |P_n|
        loss     = L_class + target_weight · L_target

    ``|P_n|`` counts the centre column, so ``target_weight`` rescales the centre term only, not the normaliser
    (as the official ``mask_pos_view``). Empty queue slots carry label ``-1`` and are never positives; the other
    classes' centres are negatives. ``feat_t``, ``queue`` and ``centres`` are detached: only ``feat_s`` gets
    gradients. Logits are computed in at least float32.

    Args:
        feat_s: ``(N, D)`` student rows, L2-normalised.
        feat_t: ``(N, D)`` teacher rows of the same pixels, L2-normalised.
        labels: ``(N,)`` integer classes in ``[0, n_cls)``.
        queue: ``(D, K)`` past teacher keys (columns), as before this step's enqueue.
        queue_labels: ``(K,)`` their classes, ``-1`` for an empty slot.
        centres: ``(n_cls, D)`` fixed class centres ``g``.
        assignment: ``(n_cls,)`` integer permutation: class ``c`` is pulled to centre row ``assignment[c]``.
        temperature: ``T`` (ACTION++: 0.07, cosine-scheduled on ACDC).
        target_weight: ``tw`` (official ACDC 0.1, LA 0.2).
        return_parts: also return ``L_class`` and the unweighted ``L_target``.

    Returns:
        The 0-d loss, or ``(loss, L_class, L_target)`` if ``return_parts``.

    Raises:
        ValueError: inconsistent shapes (named in the message), labels outside ``[0, n_cls)``, ``temperature <= 0``.
    """
    if feat_s.dim() != 2 or feat_t.shape != feat_s.shape:
        raise ValueError(f"feat_s and feat_t must both be (N, D), got {_shape(feat_s)} and {_shape(feat_t)}.")
    n, d = feat_s.shape
    if n == 0:
        raise ValueError("tsc_loss needs at least one row, got feat_s of shape (0, D).")
    if labels.shape != (n,):
        raise ValueError(f"labels must be (N,) = ({n},) to match feat_s {_shape(feat_s)}, got {_shape(labels)}.")
    if queue.dim() != 2 or queue.shape[0] != d:
        raise ValueError(f"queue must be (D, K) with D = {d} (feat_s {_shape(feat_s)}), got {_shape(queue)}.")
    k = queue.shape[1]
    if queue_labels.shape != (k,):
        raise ValueError(
            f"queue_labels must be (K,) = ({k},) to match queue {_shape(queue)}, got {_shape(queue_labels)}."
        )
    if centres.dim() != 2 or centres.shape[1] != d:
        raise ValueError(f"centres must be (n_cls, D) with D = {d} (feat_s {_shape(feat_s)}), got {_shape(centres)}.")
    n_cls = centres.shape[0]
    if assignment.shape != (n_cls,):
        raise ValueError(
            f"assignment must be (n_cls,) = ({n_cls},) to match centres {_shape(centres)}, got {_shape(assignment)}."
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    labels = labels.long()
    if bool(((labels < 0) | (labels >= n_cls)).any()):
        raise ValueError(f"labels must lie in [0, {n_cls}) (n_cls from centres {_shape(centres)}).")

    dtype = torch.promote_types(feat_s.dtype, torch.float32)
    s = feat_s.to(dtype)
    t = feat_t.detach().to(dtype)
    q = queue.detach().to(device=s.device, dtype=dtype)
    g = centres.detach().to(device=s.device, dtype=dtype)

    logits = torch.cat([(s * t).sum(1, keepdim=True), s @ q, s @ g.t()], dim=1) / temperature  # (N, 1+K+n_cls)
    lp = F.log_softmax(logits, dim=1)

    queue_pos = (labels[:, None] == queue_labels.to(labels.device).long()[None, :]).to(dtype)  # (N, K)
    target_col = 1 + k + assignment.to(labels.device).long()[labels]  # (N,)
    n_pos = 2.0 + queue_pos.sum(1)  # |P_n| = view + queue positives + centre
    loss_class = -((lp[:, 0] + (queue_pos * lp[:, 1 : 1 + k]).sum(1)) / n_pos).mean()
    loss_target = -(lp.gather(1, target_col[:, None])[:, 0] / n_pos).mean()
    loss = loss_class + target_weight * loss_target
    if return_parts:
        return loss, loss_class, loss_target
    return loss


def _uniformity(x_hat: Tensor, t: float) -> Tensor:
    """``mean_i log Σ_j exp(x̂_i · x̂_j / t)`` (the official ``uniform_loss``; ``j = i`` included)."""
    return torch.logsumexp(x_hat @ x_hat.t() / t, dim=1).mean()


def uniform_hypersphere_centres(
    n: int, dim: int, steps: int = 10000, lr: float = 1e-3, t: float = 0.07, seed: int = 0
) -> Tensor:
    """``n`` class centres spread uniformly on the unit sphere of ``R^dim`` (ACTION++ "optimal class centres").

    ``x ~ N(0, 1)`` of shape ``(n, dim)`` from a ``torch.Generator`` seeded with ``seed``; ``steps`` Adam steps
    (learning rate ``lr``, default betas/eps) on ``mean_i log Σ_j exp(x̂_i · x̂_j / t)`` with ``x̂`` the row-normalised
    ``x``; the loss is evaluated before each step and the lowest-loss ``x̂`` seen is returned (official
    ``code/TSC.py`` ``__main__`` @77730a7). For ``n <= dim + 1`` the minimiser is a regular simplex (pairwise
    cosine ``-1/(n-1)``) at any ``t``.

    The optimisation runs in float64 so that "lowest loss" is meaningful: at ``t = 0.07`` the loss sits near
    ``1/t ≈ 14.29`` and improvements fall below float32 resolution, which would freeze the official float32 tracking
    on an early iterate. Note that with ``t = 0.07`` the gradients ``∝ exp((c - 1)/t)`` fall below Adam's ``eps``
    once the pairwise cosines ``c`` approach about ``-0.45``: two centres then stop short of antipodal; a larger
    ``t`` or ``lr`` converges faster (the tests use ``t = 0.5``).

    Args:
        n: number of centres (classes), >= 1.
        dim: embedding dimension, >= 1.
        steps: Adam steps (official 10000; smoke configs fewer), >= 1.
        lr: Adam learning rate (official 1e-3).
        t: temperature of the uniformity energy (official 0.07).
        seed: seed of the initial draw.

    Returns:
        ``(n, dim)`` float32 CPU tensor with unit rows.

    Raises:
        ValueError: ``n``, ``dim`` or ``steps`` < 1, or ``t``/``lr`` not positive.
    """
    if n < 1 or dim < 1 or steps < 1:
        raise ValueError(f"n, dim and steps must be >= 1, got n={n}, dim={dim}, steps={steps}.")
    if t <= 0 or lr <= 0:
        raise ValueError(f"t and lr must be positive, got t={t}, lr={lr}.")
    generator = torch.Generator().manual_seed(int(seed))
    x = torch.randn(n, dim, generator=generator).double().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    best_loss, best = float("inf"), None
    with torch.enable_grad():
        for _ in range(steps):
            x_hat = F.normalize(x, dim=1)
            loss = _uniformity(x_hat, t)
            if loss.item() < best_loss:
                best_loss, best = loss.item(), x_hat.detach().clone()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return best.float()


def centres_cache_path(n: int, dim: int, directory: str | os.PathLike) -> Path:
    """``directory / "tsc_centres_{n}x{dim}.npy"`` (action.md §5)."""
    return Path(directory) / f"tsc_centres_{int(n)}x{int(dim)}.npy"


def regular_simplex_centres(n: int, dim: int, seed: int = 0) -> Tensor:
    """``n`` unit class centres with every pairwise cosine ``-1/(n-1)``: the minimiser that
    :func:`uniform_hypersphere_centres` approximates (ACTION++'s "uniformly distributed" centres), in closed form.

    The vertices ``e_i - 1/n`` of the regular simplex in ``R^n``, normalised, are embedded in ``R^dim`` by a seeded
    random orthonormal basis (QR of a Gaussian ``(dim, n)`` matrix), so the centres point in random directions like
    the optimised ones. The official optimisation at ``t = 0.07`` stops short of this configuration (two centres end
    near cosine -0.5 instead of -1, see :func:`uniform_hypersphere_centres`); this is the intent alternative.

    Args:
        n: number of centres, 1 <= n <= dim (a single centre is a random unit vector).
        dim: embedding dimension.
        seed: seed of the random basis.

    Returns:
        ``(n, dim)`` float32 CPU tensor with unit rows.

    Raises:
        ValueError: ``n < 1`` or ``n > dim``.
    """
    if not 1 <= n <= dim:
        raise ValueError(f"a regular simplex of n centres needs 1 <= n <= dim, got n={n}, dim={dim}.")
    generator = torch.Generator().manual_seed(int(seed))
    basis, _ = torch.linalg.qr(torch.randn(dim, n, generator=generator, dtype=torch.float64))
    if n == 1:
        return basis.t().float()
    vertices = torch.eye(n, dtype=torch.float64) - 1.0 / n
    vertices = vertices / vertices.norm(dim=1, keepdim=True)
    return (vertices @ basis.t()).float()


def load_or_create_centres(
    n: int,
    dim: int,
    directory: str | os.PathLike,
    steps: int = 10000,
    lr: float = 1e-3,
    t: float = 0.07,
    seed: int = 0,
) -> Tensor:
    """Centres from ``tsc_centres_{n}x{dim}.npy`` in ``directory``, made and cached atomically if missing.

    An existing file is loaded (``allow_pickle=False``) and reused whatever ``steps``/``lr``/``t``/``seed`` say: the
    name encodes only ``n`` and ``dim``. Otherwise :func:`uniform_hypersphere_centres` is computed, written to
    a temporary file in the same directory, flushed and ``os.replace``-d onto the final name, so a reader (another
    rank or run) never sees a partial file; concurrent writers of the same seed write identical bytes.

    Args:
        n, dim: shape of the centres.
        directory: cache folder (created if missing; bundles use ``models/``).
        steps, lr, t, seed: as :func:`uniform_hypersphere_centres`, used only when the file is missing.

    Returns:
        ``(n, dim)`` float32 CPU tensor.

    Raises:
        ValueError: the cached array is not ``(n, dim)``.
    """
    path = centres_cache_path(n, dim, directory)
    if path.is_file():
        array = np.load(path, allow_pickle=False)
        if array.shape != (n, dim):
            raise ValueError(f"cached centres {path} have shape {array.shape}, expected ({n}, {dim}).")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    centres = uniform_hypersphere_centres(n, dim, steps=steps, lr=lr, t=t, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, centres.numpy())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return centres
