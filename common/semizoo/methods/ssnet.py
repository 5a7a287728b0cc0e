"""``SSNet``: Wu et al., "Exploring Smoothness and Class-Separation for Semi-supervised Medical Image
Segmentation", MICCAI 2022 (ycwu1997/SS-Net @c0a8bf6, ``train_ss_2d.py`` / ``train_ss_3d.py``; read, not copied).

One forward of ``[labelled; unlabelled]``, then (ssnet.md §4)::

    loss = L_sup + ce_weight·CE + λ(t)·(L_lds + 0.1·(L_cs,labelled + L_cs,unlabelled))
    λ(t) = lam_max · sigmoid_rampup((t + offset) // 150, R)

with the maths in :mod:`semizoo.losses.ssnet`. The prototype memory (:class:`PrototypeMemory`) is refilled every
step from correctly predicted labelled foreground voxels, ranked by the learned selector. The network must be
:class:`semizoo.networks.SSNetNetwork` (backbone + heads): ``forward(x, features=True)`` gives the embedding and
``forward(embedding, class_sep_labels=..., memory=...)`` the class-separation term, so every trainable call passes
through the (DDP-wrapped) forward; the memory is filled without gradient from the raw heads.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..losses.ssnet import soft_dice_loss, vat_lds_loss
from ..networks.utils import unwrap
from ..schedules import stepped_sigmoid_rampup
from .base import Method, register, zero_like

__all__ = ["PrototypeMemory", "SSNet", "KEEP_RULES"]

KEEP_RULES = ("lowest", "highest")


class PrototypeMemory(nn.Module):
    """Per-class memory of at most ``elements_per_class`` projected features (ssnet.md §5, "Memory").

    For each class with new rows: ≤ ``elements_per_class`` rows are kept verbatim; more are ranked by
    ``σ(score)`` ascending and the first (``keep="lowest"``, the official behaviour) or last (``"highest"``, the
    paper's wording) ``elements_per_class`` kept. Memory rows are **replaced**, never accumulated; a class without
    new rows keeps its rows; class 0 (background) is never filled. Rows are buffers (checkpointed, on the model's
    device); an empty class is a ``0 × dim`` tensor.
    """

    def __init__(self, n_classes: int, dim: int = 32, elements_per_class: int = 32, keep: str = "lowest") -> None:
        super().__init__()
        if keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}.")
        self.n_classes, self.dim, self.elements_per_class, self.keep = (
            int(n_classes),
            int(dim),
            int(elements_per_class),
            keep,
        )
        for c in range(self.n_classes):
            self.register_buffer(f"class_{c}", torch.zeros(0, self.dim))

    def __getitem__(self, c: int) -> Tensor:
        return getattr(self, f"class_{c}")

    def rows(self) -> list[Tensor]:
        """The memory of every class, in class order."""
        return [self[c] for c in range(self.n_classes)]

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor, score: Callable[[int, Tensor], Tensor]) -> None:
        """Replace the memory of every foreground class present in ``labels`` with its selected ``features`` rows.

        Args:
            features: ``(K, dim)`` projected features.
            labels: ``(K,)`` their classes.
            score: ``score(c, rows)`` -> ``(n, 1)`` or ``(n,)`` ranking logits (SS-Net: ``selector[c]``).
        """
        for c in range(1, self.n_classes):
            rows = features[labels == c].detach()
            if rows.shape[0] == 0:
                continue
            if rows.shape[0] > self.elements_per_class:
                order = torch.argsort(torch.sigmoid(score(c, rows)).flatten(), stable=True)
                chosen = (
                    order[: self.elements_per_class] if self.keep == "lowest" else order[-self.elements_per_class :]
                )
                rows = rows[chosen]
            setattr(self, f"class_{c}", rows.clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for c in range(self.n_classes):  # rows vary in number: take the saved shape before loading
            key = f"{prefix}class_{c}"
            if key in state_dict:
                setattr(self, f"class_{c}", torch.zeros_like(state_dict[key], device=self[c].device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _channels_last(t: Tensor) -> Tensor:
    """``(B, C, *spatial)`` -> ``(B·Π spatial, C)``."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


@register("ssnet")
class SSNet(Method):
    """SS-Net method plugin.

    Args:
        network: :class:`semizoo.networks.SSNetNetwork` (possibly DDP-wrapped).
        n_classes: classes, background included.
        lam_max, rampup_length, rampup_offset, rampup_period: λ(t) (ACDC 0.1, 200, 0; LA 1.0, 40, 1; period 150).
        memory_keep: ``"lowest"`` (official) or ``"highest"`` (paper).
        ce_weight: weight of the cross-entropy that the official code computes but does not use (0).
        lds_clean_from_main_forward: use the main softmax as the VAT target instead of a separate clean forward.
        xi, eps, n_power: VAT settings (ACDC ε 6, LA ε 10; ξ 10; one power iteration).
        use_lds, use_class_sep: ablations.
        sup_loss: loss of logits and labels (ACDC: 4-class squared Dice, LA: :class:`ForegroundDiceLoss`).
        distance: VAT distance (ACDC :func:`soft_dice_loss`, LA :func:`binary_dice_loss`).
        class_sep_weight: weight of the class-separation terms inside λ(t)(...) (0.1).
        elements_per_class: memory rows per class (32).
    """

    def __init__(
        self,
        network: nn.Module,
        n_classes: int,
        lam_max: float = 0.1,
        rampup_length: float = 200.0,
        rampup_offset: int = 0,
        rampup_period: int = 150,
        memory_keep: str = "lowest",
        ce_weight: float = 0.0,
        lds_clean_from_main_forward: bool = False,
        xi: float = 10.0,
        eps: float = 6.0,
        n_power: int = 1,
        use_lds: bool = True,
        use_class_sep: bool = True,
        sup_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        distance: Callable[[Tensor, Tensor], Tensor] = soft_dice_loss,
        class_sep_weight: float = 0.1,
        elements_per_class: int = 32,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__(network, image_key=image_key, label_key=label_key)
        heads = getattr(unwrap(network), "heads", None)
        if heads is None:
            raise TypeError("SSNet needs a network with `heads` (semizoo.networks.SSNetNetwork).")
        if sup_loss is None:
            from monai.losses import DiceLoss

            sup_loss = DiceLoss(
                to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=1e-10, smooth_dr=1e-10, batch=True
            )
        self.n_classes = int(n_classes)
        self.lam_max, self.rampup_length = float(lam_max), float(rampup_length)
        self.rampup_offset, self.rampup_period = int(rampup_offset), int(rampup_period)
        self.ce_weight, self.lds_clean_from_main_forward = float(ce_weight), bool(lds_clean_from_main_forward)
        self.xi, self.eps, self.n_power = float(xi), float(eps), int(n_power)
        self.use_lds, self.use_class_sep = bool(use_lds), bool(use_class_sep)
        self.sup_loss, self.distance, self.class_sep_weight = sup_loss, distance, float(class_sep_weight)
        self.memory = PrototypeMemory(
            self.n_classes, heads.projection[-1].out_features, elements_per_class, memory_keep
        )
        self.generator = torch.Generator().manual_seed(torch.initial_seed() % (2**63))

    def get_extra_state(self) -> dict[str, Tensor]:
        """The VAT noise generator's state, so a resumed run draws the same perturbations."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])

    @property
    def heads(self) -> nn.Module:
        return unwrap(self.network).heads

    def lam(self, iteration: int) -> float:
        """λ(iteration) = lam_max · sigmoid_rampup((iteration + offset) // period, R)."""
        return stepped_sigmoid_rampup(
            iteration, self.lam_max, self.rampup_length, self.rampup_period, self.rampup_offset
        )

    def _update_memory(self, embedding_l: Tensor, labels: Tensor, predicted: Tensor) -> None:
        """Refill the memory from correctly predicted labelled foreground voxels (no gradient, so the raw heads)."""
        keep = (predicted == labels) & (predicted > 0)
        if not bool(keep.any()):
            return
        heads = self.heads
        was_training = heads.projection.training
        heads.projection.eval()
        with torch.no_grad():
            rows = heads.projection(embedding_l[keep])
        heads.projection.train(was_training)
        self.memory.update(rows, labels[keep], lambda c, r: heads.selector[c](r))

    def _class_sep(self, embedding: Tensor, labels: Tensor) -> Tensor:
        """The class-separation term through the network's forward (DDP synchronises the heads' gradients)."""
        return self.network(embedding, class_sep_labels=labels, memory=self.memory.rows())

    def train_step(self, labeled: Mapping[str, Tensor], unlabeled: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        images_l = self.batch_item(labeled, self.image_key, "labeled")
        labels = self.batch_item(labeled, self.label_key, "labeled").long()
        images = (
            images_l
            if unlabeled is None
            else torch.cat([images_l, self.batch_item(unlabeled, self.image_key, "unlabeled")])
        )
        n_labeled = images_l.shape[0]
        out: Any = self.network(images, features=True)
        logits = out["logits"]
        probs = torch.softmax(logits, dim=1)
        predicted = probs.argmax(dim=1)
        embedding = _channels_last(out["embedding"])
        voxels_l = labels[:, 0].numel() if labels.dim() == logits.dim() else labels.numel()
        flat_labels = labels.reshape(-1)
        flat_predicted = predicted.reshape(-1)

        loss_sup = self.sup_loss(logits[:n_labeled], labels)
        loss_ce = nn.functional.cross_entropy(logits[:n_labeled], labels.reshape(predicted[:n_labeled].shape))
        zero = zero_like(loss_sup)
        loss_cs_l, loss_cs_u, loss_lds = zero, zero.clone(), zero.clone()
        if self.use_class_sep:
            self._update_memory(embedding[:voxels_l], flat_labels, flat_predicted[:voxels_l])
            loss_cs_l = self._class_sep(embedding[:voxels_l], flat_labels)
            if unlabeled is not None:
                loss_cs_u = self._class_sep(embedding[voxels_l:], flat_predicted[voxels_l:])
        if self.use_lds:
            target = probs.detach() if self.lds_clean_from_main_forward else None
            loss_lds = vat_lds_loss(
                self.network,
                images,
                self.distance,
                self.xi,
                self.eps,
                self.n_power,
                self.generator,
                target_probs=target,
            )
        lam = self.lam(self.iteration)
        loss = loss_sup + self.ce_weight * loss_ce + lam * (loss_lds + self.class_sep_weight * (loss_cs_l + loss_cs_u))
        loss = loss + self.zero_gradient_anchor()  # selectors of classes without memory rows get no gradient
        return {
            "loss": loss,
            "loss_sup": loss_sup,
            "loss_ce": loss_ce,
            "loss_lds": loss_lds,
            "loss_cs_l": loss_cs_l,
            "loss_cs_u": loss_cs_u,
            "lam": torch.tensor(lam, device=loss.device),
        }
