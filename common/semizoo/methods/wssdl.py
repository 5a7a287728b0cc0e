"""``WSSDL``: joint weakly and semi-supervised detection of WSSDL-BUS (Shin et al., IEEE TMI 2019; wssdl.md §4).

Strong images (boxes + classes) train the Faster R-CNN with its four standard losses; weak images (image class
only) add the multiple-instance loss on one "mass of interest" RoI per image, scaled by the staircase α(t)::

    combined (default): loss = L_rpn_cls + L_rpn_box + L_rcnn_cls + L_rcnn_box + mil_weak_loss(weak RoIs, α(t))
    alternating:        even iterations: the strong loss, optimizer "strong";
                        odd iterations:  the weak loss with α(t_w), optimizer "weak" (t_w counts weak steps only)

Batches are lists of records (``no_collation``): ``image`` (1, H, W) in [0, 1], strong ``box`` (G, 4) xyxy and
``label`` (G,), weak ``image_class``. Every trainable call goes through the network's forward (DDP rule).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses.wssdl import mil_weak_loss, official_rcnn_box_loss, official_rpn_box_loss
from ..schedules import wssdl_alpha
from .base import Method, register, zero_like

__all__ = ["WSSDL"]


def _as_list(batch: Any) -> list[Mapping[str, Any]]:
    if batch is None:
        return []
    if isinstance(batch, Mapping):
        raise TypeError("WSSDL expects lists of records (collate_fn=monai.data.utils.no_collation), got one dict.")
    return list(batch)


@register("wssdl")
class WSSDL(Method):
    """WSSDL-BUS training step on :class:`semizoo.networks.WSSDLFasterRCNN`.

    Args:
        network: the detector (possibly DDP-wrapped).
        batching: ``"combined"`` (1 strong + 2 weak in one step, default) or ``"alternating"`` (manual optimization
            with optimizers ``"strong"`` and ``"weak"``).
        alpha_schedule: ``"gradual"`` (:func:`semizoo.schedules.wssdl_alpha`) or ``"static"`` (0.5).
        alpha_step_size: iterations per α step (2000 official; shorter budgets compress it, evaluation.md).
        class_weights: weak CE weights (background, benign, malignant); ``(0, 1, 1)`` is the paper's unweighted CE.
        rule, by: mass-of-interest rule and score (:func:`semizoo.losses.select_mass_of_interest`).
        loss_style: ``"official"`` (odd RPN smooth-L1, R-CNN L1) or ``"torchvision"`` (smooth-L1 β = 1/9, torchvision's
            normalisation).
        image_key, box_key, label_key, class_key: record keys.
    """

    #: ``train_step(strong, None)`` is the strong-only bound (no weak loss): the benchmark times it as labeled-only.
    supervised_fallback = True

    def __init__(
        self,
        network: nn.Module,
        batching: str = "combined",
        alpha_schedule: str = "gradual",
        alpha_step_size: int = 2000,
        class_weights: Sequence[float] = (0.0, 0.2209, 0.7791),
        rule: str = "most_malignant",
        by: str = "logit",
        loss_style: str = "official",
        image_key: str = "image",
        box_key: str = "box",
        label_key: str = "label",
        class_key: str = "image_class",
    ) -> None:
        super().__init__(network, image_key=image_key, label_key=label_key)
        for name, value, allowed in (
            ("batching", batching, ("combined", "alternating")),
            ("alpha_schedule", alpha_schedule, ("gradual", "static")),
            ("loss_style", loss_style, ("official", "torchvision")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
        if int(alpha_step_size) < 1:
            raise ValueError(f"alpha_step_size must be >= 1, got {alpha_step_size}.")
        self.batching, self.alpha_schedule, self.alpha_step_size = batching, alpha_schedule, int(alpha_step_size)
        self.manual_optimization = batching == "alternating"
        self.class_weights = tuple(float(w) for w in class_weights)
        self.rule, self.by, self.loss_style = rule, by, loss_style
        self.box_key, self.class_key = box_key, class_key

    # -- pieces -------------------------------------------------------------------------------------------------
    def alpha(self, weak_step: int) -> float:
        """α after ``weak_step`` weak-loss updates (the staircase on a compressed clock, or 0.5)."""
        if self.alpha_schedule == "static":
            return 0.5
        return wssdl_alpha(int(weak_step) * 2000 // self.alpha_step_size)

    def _images(self, records: list[Mapping[str, Any]], stream: str) -> list[Tensor]:
        return [self.batch_item(r, self.image_key, stream).float() for r in records]

    def _targets(self, records: list[Mapping[str, Any]]) -> list[dict[str, Tensor]]:
        targets = []
        for record in records:
            boxes = self.batch_item(record, self.box_key, "strong").float().reshape(-1, 4)
            labels = self.batch_item(record, self.label_key, "strong").long().reshape(-1)
            if labels.numel() != boxes.shape[0]:
                raise ValueError(f"a strong record has {boxes.shape[0]} boxes but {labels.numel()} labels.")
            target = {"boxes": boxes, "labels": labels}
            if record.get("bg_box") is not None:
                target["bg_boxes"] = self.batch_item(record, "bg_box", "strong").float().reshape(-1, 4)
            targets.append(target)
        return targets

    def strong_losses(self, out: Mapping[str, Any]) -> dict[str, Tensor]:
        """The four Faster R-CNN terms from the network's training outputs (wssdl.md §4)."""
        rpn_logits, rpn_labels = out["rpn_logits"], out["rpn_labels"]
        rcnn_logits, rcnn_labels = out["rcnn_logits"], out["rcnn_labels"]
        zero = zero_like(rcnn_logits if rcnn_logits.numel() else rpn_logits)
        rpn_cls = F.binary_cross_entropy_with_logits(rpn_logits, rpn_labels) if rpn_logits.numel() else zero
        rcnn_cls = F.cross_entropy(rcnn_logits, rcnn_labels) if rcnn_logits.numel() else zero
        if self.loss_style == "official":
            rpn_box = official_rpn_box_loss(out["rpn_deltas"], out["rpn_targets"], out["rpn_positive"])
            rcnn_box = official_rcnn_box_loss(
                out["rcnn_deltas"], out["rcnn_targets"], out["rcnn_foreground"], max(int(out["num_rois"]), 1)
            )
        else:  # torchvision's fastrcnn_loss / RPN box loss normalisation
            positive, foreground = out["rpn_positive"], out["rcnn_foreground"]
            rpn_box = F.smooth_l1_loss(
                out["rpn_deltas"][positive], out["rpn_targets"][positive], beta=1 / 9, reduction="sum"
            ) / max(rpn_logits.numel(), 1)
            rcnn_box = F.smooth_l1_loss(
                out["rcnn_deltas"][foreground], out["rcnn_targets"][foreground], beta=1 / 9, reduction="sum"
            ) / max(rcnn_labels.numel(), 1)
        return {"loss_rpn_cls": rpn_cls, "loss_rpn_box": rpn_box, "loss_rcnn_cls": rcnn_cls, "loss_rcnn_box": rcnn_box}

    def weak_loss(self, out: Mapping[str, Any], weak: list[Mapping[str, Any]], weak_step: int) -> Tensor:
        labels = [int(self.batch_item(r, self.class_key, "weak").reshape(-1)[0]) for r in weak]
        if not weak:
            return zero_like(out["rcnn_logits"])
        return mil_weak_loss(out["weak_logits"], labels, self.alpha(weak_step), self.class_weights, self.rule, self.by)

    # -- steps --------------------------------------------------------------------------------------------------
    def _forward(self, strong: list, weak: list) -> dict[str, Any]:
        images = self._images(strong, "strong") + self._images(weak, "weak")
        return self.network(images, self._targets(strong), num_strong=len(strong))

    def train_step(self, labeled: Any, unlabeled: Any, step: Optional[Any] = None) -> dict[str, Tensor]:
        strong, weak = _as_list(labeled), _as_list(unlabeled)
        if self.batching == "combined":
            out = self._forward(strong, weak)
            terms = self.strong_losses(out)
            terms["loss_ws"] = self.weak_loss(out, weak, self.iteration)
            loss = sum(terms.values()) + self.zero_gradient_anchor()
            return {"loss": loss, **terms, "alpha": torch.tensor(self.alpha(self.iteration))}
        return self._alternating_step(strong, weak, step)

    def _alternating_step(self, strong: list, weak: list, step: Any) -> dict[str, Tensor]:
        """Even iterations update on the strong batch, odd ones on the weak batch (two optimizers)."""
        weak_turn = self.iteration % 2 == 1 and bool(weak)
        name = "weak" if weak_turn else "strong"
        step.zero_grad(name)
        out = self._forward([] if weak_turn else strong, weak if weak_turn else [])
        if weak_turn:
            terms = {"loss_ws": self.weak_loss(out, weak, self.iteration // 2)}
        else:
            terms = self.strong_losses(out)
        loss = sum(terms.values()) + self.zero_gradient_anchor()
        terms = {"loss": loss, **terms}
        step.loss_completed(terms)
        step.backward(loss)
        step.step(name)
        return terms

    def extra_repr(self) -> str:
        return (
            f"batching={self.batching!r}, alpha_schedule={self.alpha_schedule!r}, alpha_step_size="
            f"{self.alpha_step_size}, class_weights={self.class_weights}, rule={self.rule!r}, by={self.by!r}"
        )
