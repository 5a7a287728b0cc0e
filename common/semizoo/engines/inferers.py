"""Inferers that reproduce the papers' test-time protocols (evaluation.md, ssnet.md §9).

- ``strided_sliding_window_inferer(roi_size, strides)``: UA-MT/SS-Net's LA protocol. Windows of ``roi_size`` start
  at ``min(i·s, S - p)`` for ``i < ceil((S - p)/s) + 1`` per axis; volumes smaller than the window are zero-padded
  centred (left = diff // 2) and cropped back; the per-window **softmax** is averaged over windows. This is MONAI's
  ``SlidingWindowInferer(mode="constant")`` with ``overlap = 1 - (s + 0.5)/p`` applied to softmax outputs.
- ``slice_wise_inferer(size)``: SSL4MIS/SS-Net's ACDC protocol. Each slice (last-but-two spatial axis of
  ``(B, C, Z, Y, X)``) is nearest-resized (``scipy.ndimage.zoom(order=0)``) to ``size``, segmented (argmax), and the
  label map is resized back with ``order=0``. Returns the one-hot label volume ``(B, n_classes, Z, Y, X)``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from monai.inferers import Inferer, SlidingWindowInferer
from scipy import ndimage

__all__ = ["StridedSlidingWindowInferer", "strided_sliding_window_inferer", "SliceWiseInferer", "slice_wise_inferer"]


class StridedSlidingWindowInferer(SlidingWindowInferer):
    """``SlidingWindowInferer`` averaging softmax probabilities over windows placed at fixed strides."""

    def __init__(self, roi_size: Sequence[int], strides: Sequence[int], sw_batch_size: int = 1, **kwargs: Any) -> None:
        roi, steps = [int(r) for r in roi_size], [int(s) for s in strides]
        if len(roi) != len(steps) or any(s < 1 or s > r for s, r in zip(steps, roi)):
            raise ValueError(f"strides {steps} must be positive and at most roi_size {roi} per axis.")
        overlap = [1.0 - (s + 0.5) / r for s, r in zip(steps, roi)]
        super().__init__(
            roi,
            sw_batch_size=sw_batch_size,
            overlap=overlap,
            mode="constant",
            padding_mode="constant",
            cval=0.0,
            **kwargs,
        )
        self.strides = steps

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        def probabilities(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return torch.softmax(network(x, *a, **k), dim=1)

        return super().__call__(inputs, probabilities, *args, **kwargs)


def strided_sliding_window_inferer(
    roi_size: Sequence[int] = (112, 112, 80),
    strides: Sequence[int] = (18, 18, 4),
    sw_batch_size: int = 1,
    **kwargs: Any,
) -> StridedSlidingWindowInferer:
    """The LA test protocol of UA-MT/SS-Net: 112×112×80 windows at strides 18×18×4, averaged softmax."""
    return StridedSlidingWindowInferer(roi_size, strides, sw_batch_size=sw_batch_size, **kwargs)


class SliceWiseInferer(Inferer):
    """Segment a volume slice by slice at a fixed in-plane size (nearest resize there and back).

    Args:
        size: in-plane size the network sees, ``(H, W)``.
        n_classes: output classes; ``None`` reads them from the first network output.
        slice_batch_size: slices per network call.
    """

    def __init__(self, size: Sequence[int] = (256, 256), n_classes: int | None = None, slice_batch_size: int = 16):
        super().__init__()
        self.size = tuple(int(s) for s in size)
        self.n_classes, self.slice_batch_size = n_classes, int(slice_batch_size)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        if inputs.dim() == 4:  # a single 2D slice batch (B, C, H, W): treat it as Z = 1
            return self(inputs.unsqueeze(2), network, *args, **kwargs)[:, :, 0]
        if inputs.dim() != 5:
            raise ValueError(f"slice_wise_inferer expects (B, C, Z, Y, X) volumes, got shape {tuple(inputs.shape)}.")
        batch, channels, depth, height, width = inputs.shape
        volume = inputs.detach().cpu().numpy() if hasattr(inputs, "detach") else np.asarray(inputs)
        factors = (self.size[0] / height, self.size[1] / width)
        planes = [
            np.stack([ndimage.zoom(volume[b, c, z], factors, order=0) for c in range(channels)])
            for b in range(batch)
            for z in range(depth)
        ]
        labels = []
        for start in range(0, len(planes), self.slice_batch_size):
            chunk = torch.as_tensor(np.stack(planes[start : start + self.slice_batch_size]), device=inputs.device)
            logits = network(chunk.float(), *args, **kwargs)
            if self.n_classes is None:
                self.n_classes = int(logits.shape[1])
            labels.append(logits.argmax(dim=1).cpu().numpy())
        label_planes = np.concatenate(labels)
        back = (height / self.size[0], width / self.size[1])
        restored = np.stack([ndimage.zoom(plane, back, order=0) for plane in label_planes]).reshape(
            batch, depth, height, width
        )
        onehot = torch.nn.functional.one_hot(torch.as_tensor(restored, dtype=torch.long), self.n_classes)
        return onehot.permute(0, 4, 1, 2, 3).to(device=inputs.device, dtype=torch.float32)


def slice_wise_inferer(size: Sequence[int] = (256, 256), n_classes: int | None = None) -> SliceWiseInferer:
    """The ACDC test protocol of SSL4MIS/SS-Net: per-slice 256×256 nearest resize, argmax, resize back."""
    return SliceWiseInferer(size, n_classes=n_classes)
