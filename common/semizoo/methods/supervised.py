"""``Supervised``: labeled-only training, the lower bound (few labels) and upper bound (all labels) of every table."""

from __future__ import annotations

from typing import Callable, Mapping

from torch import Tensor, nn

from ..losses.segmentation import dice_ce_loss
from .base import Method, register

__all__ = ["Supervised"]


@register("supervised")
class Supervised(Method):
    """Train on the labeled batch only; the unlabeled batch, if any, is ignored.

    Args:
        network: the segmentation network (logits ``(B, C, *spatial)``).
        sup_loss: loss of logits and label maps; default :func:`semizoo.losses.dice_ce_loss` (SSL4MIS/UA-MT).
        image_key, label_key: batch keys.
    """

    def __init__(
        self,
        network: nn.Module,
        sup_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__(network, image_key=image_key, label_key=label_key)
        self.sup_loss = dice_ce_loss() if sup_loss is None else sup_loss

    def train_step(self, labeled: Mapping[str, Tensor], unlabeled: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        images = self.batch_item(labeled, self.image_key, "labeled")
        labels = self.batch_item(labeled, self.label_key, "labeled")
        loss = self.sup_loss(self.network(images), labels)
        return {"loss": loss, "loss_sup": loss}

    def extra_repr(self) -> str:
        return f"sup_loss={type(self.sup_loss).__name__}"
