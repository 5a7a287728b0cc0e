"""ACTION / ACTION++ heads and the window and row layouts of the pre-training step (action.md §2, §4, §13).

Papers: You et al., "Bootstrapping semi-supervised medical image segmentation with anatomical-aware contrastive
distillation" (ACTION, IPMI 2023) and "ACTION++: improving semi-supervised medical image segmentation with adaptive
anatomical contrast" (MICCAI 2023). Official code charlesyou999648/ACTION @77730a7 (read, never copied):
``code/model.py`` (``ISD``, ``MLP``, ``ProjectionHead``, ``RepresentationHead``; ACDC) and ``code/model_3D.py``
(``ISD_3d``, ``MLP_3d``, ``ProjectionHead_3d``, ``RepresentationHead_3d``; LA), ``code/train_{2D,3D}_action.py``
(the pyramid concat fed to the representation head).

- :class:`ActionDistillHeads`: the six heads of the distillation stages (``k_latent``, ``q_latent``,
  ``latent_predictor``, ``k_out``, ``q_out``, ``out_predictor``), behind one ``forward`` (DDP rule).
- :func:`window_starts`, :func:`num_windows`, :func:`logit_windows`: logit windows in raster order.
- :func:`window_rows`, :func:`window_queue_entries`, :func:`queue_rows`: the ``patch_layout`` of §4.
- :class:`RepresentationHead` and :func:`pyramid_features`: the fine-tuning representation head and its input.

Heads are training-only (not TorchScript-compiled) but typed.
"""

from __future__ import annotations

import itertools
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ActionDistillHeads",
    "RepresentationHead",
    "PATCH_LAYOUTS",
    "WINDOW_ENDS",
    "window_starts",
    "num_windows",
    "logit_windows",
    "window_rows",
    "window_queue_entries",
    "queue_rows",
    "pyramid_features",
]

PATCH_LAYOUTS = ("official", "aligned")
WINDOW_ENDS = ("exclusive", "inclusive")
BRANCHES = ("student", "teacher")

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_INTERP = {2: "bilinear", 3: "trilinear"}


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    return int(spatial_dims)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return value


# ----------------------------------------------------------------------------------------------------------------
# windows and layouts (§4)
# ----------------------------------------------------------------------------------------------------------------


def window_starts(n: int, size: int, step: int, end: str = "exclusive") -> List[int]:
    """Start offsets of the windows along one axis of ``n`` voxels.

    - ``end="exclusive"``: ``range(0, n - size, step)``, the ACDC rule of the official ``model.py`` ``ISD.forward``:
      the last start ``n - size`` is excluded, so 256 voxels with size 64, step 32 give 6 starts
      ``0, 32, ..., 160`` (the bottom/right 32 voxels are never seen).
    - ``end="inclusive"``: ``range(0, n - size + 1, step)``, the LA rule of ``model_3D.py`` ``ISD_3d.forward``:
      112 with size 20, step 10 give 10 starts, 80 gives 7.

    Raises:
        ValueError: ``size`` or ``step`` not positive, ``size > n``, or an unknown ``end``.
    """
    _check_choice("end", end, WINDOW_ENDS)
    if size <= 0 or step <= 0:
        raise ValueError(f"window size and step must be positive, got size={size}, step={step}.")
    if size > n:
        raise ValueError(f"window size {size} exceeds the axis length {n}.")
    stop = n - size + (1 if end == "inclusive" else 0)
    return list(range(0, stop, step))


def num_windows(spatial_shape: Sequence[int], size: int, step: int, end: str = "exclusive") -> int:
    """``P``, the number of windows of :func:`logit_windows` (ACDC 256² → 36, LA 112×112×80 → 700).

    Raises:
        ValueError: as :func:`window_starts`, or no window fits (``end="exclusive"`` with ``size == n``).
    """
    count = 1
    for n in spatial_shape:
        count *= len(window_starts(int(n), size, step, end))
    if count == 0:
        raise ValueError(f"no {end} window of size {size}, step {step} fits in {list(spatial_shape)}.")
    return count


def logit_windows(logits: Tensor, size: int, step: int, end: str = "exclusive") -> Tensor:
    """Cut ``logits`` ``(B, C, *spatial)`` into cubic windows of edge ``size`` in raster order (last axis fastest).

    The windows are concatenated along the batch axis, window-major as the official ``torch.cat`` of the per-window
    list: row ``w * B + b`` is window ``w`` of sample ``b``. Returns ``(P·B, C, size, ..., size)``.

    Raises:
        ValueError: ``logits`` not 4D/5D, or the window rules of :func:`window_starts` / :func:`num_windows`.
    """
    if logits.dim() not in (4, 5):
        raise ValueError(f"logits must be (B, C, H, W) or (B, C, H, W, D), got shape {list(logits.shape)}.")
    spatial = logits.shape[2:]
    num_windows(spatial, size, step, end)  # validates and rejects empty grids
    axes = [window_starts(int(n), size, step, end) for n in spatial]
    windows = []
    for starts in itertools.product(*axes):
        index = (slice(None), slice(None)) + tuple(slice(s, s + size) for s in starts)
        windows.append(logits[index])
    return torch.cat(windows, dim=0)


def _split(outputs: Tensor, windows: int) -> Tuple[int, int]:
    """``(B, F)`` of window outputs ``(P·B, C, *pool)``."""
    if outputs.dim() < 2 or windows <= 0 or outputs.shape[0] % windows != 0:
        raise ValueError(
            f"window outputs of shape {list(outputs.shape)} do not hold a whole number of batches of {windows} windows."
        )
    features = 1
    for s in outputs.shape[1:]:
        features *= int(s)
    return outputs.shape[0] // windows, features


def window_rows(outputs: Tensor, windows: int, layout: str = "official") -> Tensor:
    """Rows ``(B·F, P)`` of window outputs ``A`` ``(P·B, C, *pool)`` for the output-level logits, ``F = C·pool^n``.

    - ``"official"``: ``A`` reshaped row-major to ``(-1, P)`` (the official double reshape of ``ISD.forward``), so a
      row mixes windows, samples and channels (action.md §7.7).
    - ``"aligned"``: ``A.view(P, B, F).permute(1, 2, 0)``: row ``b·F + f`` holds the ``P`` window values of cell
      ``f`` of sample ``b``.

    Raises:
        ValueError: unknown ``layout``, or ``A.shape[0]`` not a multiple of ``windows``.
    """
    _check_choice("patch_layout", layout, PATCH_LAYOUTS)
    batch, features = _split(outputs, windows)
    if layout == "official":
        return outputs.reshape(-1, windows)
    return outputs.reshape(windows, batch, features).permute(1, 2, 0).reshape(-1, windows)


def window_queue_entries(outputs: Tensor, windows: int, layout: str = "official") -> Tensor:
    """The ``B`` queue entries ``(B, P, F)`` of teacher window outputs ``A`` ``(P·B, C, *pool)``.

    ``"official"``: ``A`` reshaped row-major to ``(B, P, F)``; ``"aligned"``: ``A.view(P, B, F).permute(1, 0, 2)``
    (entry ``b`` holds the ``P`` windows of sample ``b``).

    Raises:
        ValueError: as :func:`window_rows`.
    """
    _check_choice("patch_layout", layout, PATCH_LAYOUTS)
    batch, features = _split(outputs, windows)
    if layout == "official":
        return outputs.reshape(batch, windows, features)
    return outputs.reshape(windows, batch, features).permute(1, 0, 2)


def queue_rows(queue: Tensor, layout: str = "official") -> Tensor:
    """Rows ``(K·F, P)`` of the output queue ``(K, P, F)``.

    ``"official"``: the first two axes swapped, then reshaped row-major to ``(-1, P)``; ``"aligned"``:
    ``queue.permute(0, 2, 1)`` reshaped, so row ``k·F + f`` holds the ``P`` window values of cell ``f`` of entry
    ``k`` (the same layout as the ``"aligned"`` :func:`window_rows`).

    Raises:
        ValueError: unknown ``layout`` or a queue that is not 3D.
    """
    _check_choice("patch_layout", layout, PATCH_LAYOUTS)
    if queue.dim() != 3:
        raise ValueError(f"the output queue must be (K, P, F), got shape {list(queue.shape)}.")
    windows = queue.shape[1]
    if layout == "official":
        return queue.transpose(0, 1).reshape(-1, windows)
    return queue.permute(0, 2, 1).reshape(-1, windows)


# ----------------------------------------------------------------------------------------------------------------
# heads
# ----------------------------------------------------------------------------------------------------------------


def _latent_projection(spatial_dims: int, channels: int, dim: int) -> nn.Sequential:
    """Global average pool → flatten → Linear(C, C) → Linear(C, d) (official ``MLP``/``MLP_3d``, pooling size 1)."""
    return nn.Sequential(_POOL[spatial_dims](1), nn.Flatten(1), nn.Linear(channels, channels), nn.Linear(channels, dim))


def _window_projection(spatial_dims: int, channels: int, pool: int) -> nn.Sequential:
    """AdaptiveAvgPool(pool) → Conv1(C, 2C) → Conv1(2C, C) (official ``ProjectionHead``, ``proj='convmlp'``)."""
    conv = _CONV[spatial_dims]
    return nn.Sequential(
        _POOL[spatial_dims](pool),
        conv(channels, 2 * channels, kernel_size=1),
        conv(2 * channels, channels, kernel_size=1),
    )


class ActionDistillHeads(nn.Module):
    """The six distillation heads of ACTION's pre-training (action.md §2, §4), without norms or activations.

    - ``q_latent``, ``k_latent``: global average pool → Linear(Cin, Cin) → Linear(Cin, d) on the backbone ``latent``
      ``(B, Cin, *s)``; ``latent_predictor``: Linear(d, d) → Linear(d, d) (student only).
    - ``q_out``, ``k_out``: AdaptiveAvgPool(pool) → Conv1(C, 2C) → Conv1(2C, C) on logit windows ``(N, C, *win)``;
      ``out_predictor``: Conv1(C, C) → Conv1(C, C) (student only). 2D or 3D layers by ``spatial_dims``.

    Created in the official order (``k_latent``, ``q_latent``, ``latent_predictor``, ``k_out``, ``q_out``,
    ``out_predictor``; official ``ISD.__init__``) with PyTorch's default init.

    Every trainable use goes through :meth:`forward` (DDP rule, architecture.md §7):
    ``forward(latent=..., windows=..., branch="student" | "teacher")`` returns a dict with ``latent`` (``zs`` or
    ``zt``, ``(B, d)``) and/or ``windows`` (``(N, C, *pool)``) for the inputs given. The teacher branch uses the
    ``k_*`` heads with gradients enabled (the official ``k`` heads are trained through the KL targets); wrap the
    call in ``torch.no_grad()`` to freeze them.

    Args:
        spatial_dims: 2 (ACDC U-Net) or 3 (LA V-Net).
        n_classes: ``C``, logit channels.
        latent_channels: ``Cin``, channels of the backbone ``latent`` (U-Net 256, V-Net 128).
        latent_dim: ``d`` (ACDC 512, LA 128).
        pool: pooled window edge (ACDC 8, LA 4).

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3, or a non-positive size.
    """

    def __init__(self, spatial_dims: int, n_classes: int, latent_channels: int, latent_dim: int, pool: int) -> None:
        super().__init__()
        self.spatial_dims = _check_dims(spatial_dims)
        if min(n_classes, latent_channels, latent_dim, pool) <= 0:
            raise ValueError(
                "n_classes, latent_channels, latent_dim and pool must be positive, got "
                f"{n_classes}, {latent_channels}, {latent_dim}, {pool}."
            )
        self.n_classes, self.latent_channels = int(n_classes), int(latent_channels)
        self.latent_dim, self.pool = int(latent_dim), int(pool)
        conv = _CONV[self.spatial_dims]
        self.k_latent = _latent_projection(self.spatial_dims, self.latent_channels, self.latent_dim)
        self.q_latent = _latent_projection(self.spatial_dims, self.latent_channels, self.latent_dim)
        self.latent_predictor = nn.Sequential(
            nn.Linear(self.latent_dim, self.latent_dim), nn.Linear(self.latent_dim, self.latent_dim)
        )
        self.k_out = _window_projection(self.spatial_dims, self.n_classes, self.pool)
        self.q_out = _window_projection(self.spatial_dims, self.n_classes, self.pool)
        self.out_predictor = nn.Sequential(
            conv(self.n_classes, self.n_classes, kernel_size=1), conv(self.n_classes, self.n_classes, kernel_size=1)
        )

    @property
    def features(self) -> int:
        """``F = C·pool^n``, the cells of one pooled window."""
        return self.n_classes * self.pool**self.spatial_dims

    def query_key_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        """``[(q_latent, k_latent), (q_out, k_out)]``: the heads the LA EMA moves ``k <- m·k + (1-m)·q`` (§4)."""
        return [(self.q_latent, self.k_latent), (self.q_out, self.k_out)]

    def _check_latent(self, latent: Tensor) -> None:
        if latent.dim() != self.spatial_dims + 2 or latent.shape[1] != self.latent_channels:
            raise ValueError(
                f"latent must be (B, {self.latent_channels}, *spatial) with {self.spatial_dims} spatial dims, "
                f"got shape {list(latent.shape)}."
            )

    def _check_windows(self, windows: Tensor) -> None:
        if windows.dim() != self.spatial_dims + 2 or windows.shape[1] != self.n_classes:
            raise ValueError(
                f"windows must be (N, {self.n_classes}, *window) with {self.spatial_dims} spatial dims, "
                f"got shape {list(windows.shape)}."
            )

    def student_latent(self, latent: Tensor) -> Tensor:
        """``zs = latent_predictor(q_latent(latent))``, ``(B, d)``."""
        self._check_latent(latent)
        return self.latent_predictor(self.q_latent(latent))

    def teacher_latent(self, latent: Tensor) -> Tensor:
        """``zt = k_latent(latent)``, ``(B, d)``."""
        self._check_latent(latent)
        return self.k_latent(latent)

    def student_windows(self, windows: Tensor) -> Tensor:
        """``out_predictor(q_out(windows))``: ``(N, C, *win)`` → ``(N, C, *pool)``."""
        self._check_windows(windows)
        return self.out_predictor(self.q_out(windows))

    def teacher_windows(self, windows: Tensor) -> Tensor:
        """``k_out(windows)``: ``(N, C, *win)`` → ``(N, C, *pool)``."""
        self._check_windows(windows)
        return self.k_out(windows)

    def forward(
        self, latent: Optional[Tensor] = None, windows: Optional[Tensor] = None, branch: str = "student"
    ) -> Dict[str, Tensor]:
        """Dispatch to the student (``q`` heads + predictors) or teacher (``k`` heads) projections.

        Args:
            latent: backbone ``latent`` ``(B, Cin, *s)``, or None.
            windows: logit windows ``(N, C, *win)`` from :func:`logit_windows`, or None.
            branch: ``"student"`` or ``"teacher"``.

        Returns:
            ``{"latent": (B, d)}`` and/or ``{"windows": (N, C, *pool)}`` for the inputs given.

        Raises:
            ValueError: unknown ``branch`` or wrongly shaped inputs.
        """
        _check_choice("branch", branch, BRANCHES)
        out: Dict[str, Tensor] = {}
        student = branch == "student"
        if latent is not None:
            out["latent"] = self.student_latent(latent) if student else self.teacher_latent(latent)
        if windows is not None:
            out["windows"] = self.student_windows(windows) if student else self.teacher_windows(windows)
        return out


def pyramid_features(pyramid: Sequence[Tensor], size: Optional[Sequence[int]] = None) -> Tensor:
    """Channel concat of the ``pyramid`` maps resized to ``size`` (bi/trilinear, ``align_corners=True``).

    The input of :class:`RepresentationHead` (official ``train_2D_action.py`` / ``train_3D_action.py``: every
    feature map interpolated to the logits' size, then ``torch.concat`` in pyramid order). U-Net ``[x4, u1, u2, u3,
    u4]`` gives 496 channels, V-Net ``[u5, u6, u7, u8, x9]`` 256.

    Args:
        pyramid: maps ``(B, C_i, *s_i)``, all 2D or all 3D.
        size: output spatial size; default the size of the last (finest) map, i.e. the input size.

    Raises:
        ValueError: an empty pyramid, mixed ranks, different batch sizes or a ``size`` of the wrong length.
    """
    maps = list(pyramid)
    if not maps:
        raise ValueError("pyramid is empty.")
    dims = maps[0].dim() - 2
    if dims not in (2, 3) or any(m.dim() != dims + 2 or m.shape[0] != maps[0].shape[0] for m in maps):
        raise ValueError(
            f"pyramid maps must share the batch and be all 2D or all 3D, got {[list(m.shape) for m in maps]}."
        )
    target = tuple(int(s) for s in (maps[-1].shape[2:] if size is None else size))
    if len(target) != dims:
        raise ValueError(f"size {list(target)} does not match {dims} spatial dims.")
    resized = [
        m if tuple(m.shape[2:]) == target else F.interpolate(m, size=target, mode=_INTERP[dims], align_corners=True)
        for m in maps
    ]
    return torch.cat(resized, dim=1)


class RepresentationHead(nn.Module):
    """ACTION's representation head: Conv3 (pad 1, no bias) → Conv1 (official ``RepresentationHead[_3d]``).

    ``forward(features)`` takes the concat of :func:`pyramid_features` ``(B, in_channels, *s)``, or the pyramid list
    itself (concatenated at the finest map's size, or at ``size``), and returns ``(B, out_channels, *s)``.
    ACDC 496 → 512 (ACTION) / 496 (ACTION++); LA 256 → 128.

    Args:
        in_channels: channels of the concatenated pyramid.
        out_channels: representation channels.
        spatial_dims: 2 or 3.

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3, or input channels other than ``in_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = _check_dims(spatial_dims)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        conv = _CONV[self.spatial_dims]
        self.proj = nn.Sequential(
            conv(self.in_channels, self.out_channels, kernel_size=3, padding=1, bias=False),
            conv(self.out_channels, self.out_channels, kernel_size=1),
        )

    def forward(self, features: Union[Tensor, Sequence[Tensor]], size: Optional[Sequence[int]] = None) -> Tensor:
        x = features if isinstance(features, Tensor) else pyramid_features(features, size)
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"RepresentationHead expects (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial dims, "
                f"got shape {list(x.shape)}."
            )
        return self.proj(x)
