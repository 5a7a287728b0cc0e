"""``ActionPretrain``: contrastive-distillation pre-training of ACTION / ACTION++, stages 1 and 2 (action.md §4).

You et al., "Bootstrapping Semi-supervised Medical Image Segmentation with Anatomical-aware Contrastive
Distillation", IPMI 2023, and "ACTION++", MICCAI 2023; charlesyou999648/ACTION @ 77730a7 (``train_2D_pretrain.py``,
``train_3D_pretrain.py``, ``model.py``; read, never copied). One step::

    θ_t ← m θ_t + (1 - m) θ_s                   (at the start of the step; LA also k heads ← m k + (1 - m) q)
    x_s, x_t = views(x);  o_s = f_s(x_s);  o_t = f_t(x_t) (no grad)
    L_lat = KL(ql(k_latent(o_t.latent), Q_lat, T_t) ‖ ql(pred(q_latent(o_s.latent)), Q_lat, T_s))
    L_out = the same on pooled logit windows against Q_out                      (stage 2, "full")
    loss  = [½(CE + Dice)(o_s.logits_l, y)] + k1 · L_lat + k2 · L_out;  then enqueue the teacher keys

``ql`` = :func:`semizoo.losses.queue_logits`, ``KL`` = :func:`semizoo.losses.soft_label_kl`. The queues hold the
teacher keys of earlier steps (K = 36). The distillation heads (:class:`semizoo.networks.ActionDistillHeads`) are a
module of their own, passed in (DDP-wrapped in multi-GPU configs) and called only through their ``forward``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..losses.action import queue_logits, soft_label_kl
from ..networks.action import logit_windows, num_windows, queue_rows, window_queue_entries, window_rows
from ..networks.utils import ema_update_, unwrap
from ..schedules import cosine_temperature
from ..transforms.action import action_pretrain_views
from .base import Method, register, zero_like

__all__ = ["ActionPretrain", "action_sup_loss", "STAGES"]

STAGES = ("encoder", "full")


def action_sup_loss() -> Callable[[Tensor, Tensor], Tensor]:
    """``½ (CE + Dice)`` of stages 2-3: MONAI ``DiceLoss`` with the ACDC flags of ssnet.md §5, smooth 1e-5 (§4)."""
    from monai.losses import DiceLoss

    dice = DiceLoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)

    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        target = labels[:, 0] if labels.dim() == logits.dim() else labels
        ce = nn.functional.cross_entropy(logits, target.long())
        return 0.5 * (ce + dice(logits, target.unsqueeze(1)))

    return loss


@register("action_pretrain")
class ActionPretrain(Method):
    """ACTION pre-training plugin: stage 1 (``stage="encoder"``, latent distillation) or 2 (``"full"``).

    Args:
        network: the student backbone (``SSL4MISUNet`` / ``UAMTVNet``, possibly DDP-wrapped).
        heads: :class:`semizoo.networks.ActionDistillHeads`, possibly DDP-wrapped: called through this object's
            ``forward``; the unwrapped module is the method's ``heads`` submodule (checkpointed with the method).
        patch_size: spatial size of the training images (sets the number of windows P of ``Q_out``).
        stage: ``"encoder"`` (stage 1: ``k1 · L_lat``) or ``"full"`` (stage 2: adds ``½(CE + Dice)``, ``k2 · L_out``).
        queue_size: K (36); must be a multiple of the batch size.
        ema_decay: m of the teacher (0.99), applied at the start of every step.
        student_temperature, teacher_temperature: T_s, T_t (ACDC 0.1 / 0.01, LA 0.1 / 0.6).
        temperature_period_frac: ACTION++ stage 2: T_s and T_t follow ``cosine_temperature`` from their values to 1.0
            with this period fraction (ACDC 0.1, LA 1.0); ``None`` keeps them fixed (ACTION).
        iters_per_epoch, max_iterations: epochs of the cosine schedule (e = iteration // iters_per_epoch,
            E = max_iterations // iters_per_epoch + 1; iters_per_epoch = ⌊N_labelled / labelled batch⌋).
        window_size, window_step, window_end: logit windows (ACDC 64, 32, ``"exclusive"``; LA 20, 10, ``"inclusive"``).
        patch_layout: ``"official"`` rows (action.md §7.7) or ``"aligned"``.
        latent_weight, output_weight: k1, k2 (1, 1).
        spatial_dims: 2 (ACDC) or 3 (LA).
        queue_norm_dim: axis along which the initial random queues are L2-normalised (ACDC 0, LA -1).
        ema_key_heads: LA: also move the k heads towards the q heads at every step.
        detach_teacher_targets: detach the KL targets (intent); the official code trains the k heads through them.
        teacher_eval_mode: teacher in eval mode (intent); the official teacher runs in train mode.
        view_compat: intensity handling of the views (``"fixed"`` or ``"official"``, action.md §3).
        sup_loss: supervised loss of stage 2 (default :func:`action_sup_loss`).
        seed: seed of the generator of the views (checkpointed).
    """

    def __init__(
        self,
        network: nn.Module,
        heads: nn.Module,
        patch_size: Sequence[int],
        stage: str = "full",
        queue_size: int = 36,
        ema_decay: float = 0.99,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.01,
        temperature_period_frac: float | None = None,
        iters_per_epoch: int = 1,
        max_iterations: int = 30000,
        window_size: int = 64,
        window_step: int = 32,
        window_end: str = "exclusive",
        patch_layout: str = "official",
        latent_weight: float = 1.0,
        output_weight: float = 1.0,
        spatial_dims: int = 2,
        queue_norm_dim: int = 0,
        ema_key_heads: bool = False,
        detach_teacher_targets: bool = False,
        teacher_eval_mode: bool = False,
        view_compat: str = "fixed",
        sup_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        seed: int = 0,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__(network, image_key=image_key, label_key=label_key)
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
        if len(patch_size) != spatial_dims:
            raise ValueError(f"patch_size {list(patch_size)} does not have {spatial_dims} spatial dimensions.")
        if not 0.0 <= ema_decay <= 1.0 or queue_size <= 0 or iters_per_epoch <= 0:
            raise ValueError(
                "need 0 <= ema_decay <= 1, queue_size > 0 and iters_per_epoch > 0; "
                f"got {ema_decay}, {queue_size} and {iters_per_epoch}."
            )
        plain = unwrap(heads)
        self.heads = plain  # checkpointed without DDP's "module." prefix, so checkpoints move between world sizes
        self.__dict__["call_heads"] = heads  # the (possibly DDP-wrapped) module whose forward every call goes through
        self.stage, self.spatial_dims, self.ema_decay = stage, int(spatial_dims), float(ema_decay)
        self.student_temperature, self.teacher_temperature = float(student_temperature), float(teacher_temperature)
        self.temperature_period_frac = None if temperature_period_frac is None else float(temperature_period_frac)
        self.iters_per_epoch, self.max_iterations = int(iters_per_epoch), int(max_iterations)
        self.window_size, self.window_step, self.window_end = int(window_size), int(window_step), window_end
        self.patch_layout = patch_layout
        self.latent_weight, self.output_weight = float(latent_weight), float(output_weight)
        self.ema_key_heads, self.detach_teacher_targets = bool(ema_key_heads), bool(detach_teacher_targets)
        self.teacher_eval_mode, self.view_compat = bool(teacher_eval_mode), view_compat
        self.sup_loss = action_sup_loss() if sup_loss is None else sup_loss
        self.windows = num_windows(patch_size, self.window_size, self.window_step, window_end)
        self.teacher = self.copy_network()
        generator = torch.Generator().manual_seed(int(seed))
        latent = torch.randn(int(queue_size), plain.latent_dim, generator=generator)
        output = torch.randn(int(queue_size), self.windows, plain.features, generator=generator)
        self.register_buffer("queue_latent", nn.functional.normalize(latent, dim=queue_norm_dim))
        self.register_buffer("queue_output", nn.functional.normalize(output, dim=queue_norm_dim))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        self.generator = generator

    def get_extra_state(self) -> dict[str, Tensor]:
        """The views' generator state, so a resumed run draws the same augmentations."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def train(self, mode: bool = True) -> "ActionPretrain":
        super().train(mode)
        self.teacher.train(mode and not self.teacher_eval_mode)
        return self

    def temperatures(self, iteration: int) -> tuple[float, float]:
        """``(T_s, T_t)`` at ``iteration``: fixed (ACTION) or the ACTION++ cosine schedule to 1.0."""
        if self.temperature_period_frac is None:
            return self.student_temperature, self.teacher_temperature
        epoch, epochs = iteration // self.iters_per_epoch, self.max_iterations // self.iters_per_epoch + 1
        return (
            cosine_temperature(epoch, epochs, self.student_temperature, 1.0, self.temperature_period_frac),
            cosine_temperature(epoch, epochs, self.teacher_temperature, 1.0, self.temperature_period_frac),
        )

    @torch.no_grad()
    def update_teacher(self) -> None:
        """``θ_t ← m θ_t + (1 - m) θ_s`` (parameters only); with ``ema_key_heads`` also ``k ← m k + (1 - m) q``."""
        ema_update_(self.teacher, self.network, self.ema_decay)
        if self.ema_key_heads:
            for query, key in self.heads.query_key_pairs():
                ema_update_(key, query, self.ema_decay)

    @torch.no_grad()
    def _enqueue(self, latent_keys: Tensor, output_keys: Tensor | None) -> None:
        batch, size = latent_keys.shape[0], self.queue_latent.shape[0]
        if size % batch != 0:
            raise ValueError(f"queue_size {size} must be a multiple of the batch size {batch} (action.md §4).")
        start = int(self.queue_pointer)
        self.queue_latent[start : start + batch] = latent_keys.detach()
        if output_keys is not None:
            self.queue_output[start : start + batch] = output_keys.detach()
        self.queue_pointer.fill_((start + batch) % size)

    def train_step(self, labeled: Mapping[str, Tensor], unlabeled: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        images_l = self.batch_item(labeled, self.image_key, "labeled")
        images = images_l
        if unlabeled is not None:
            images = torch.cat([images_l, self.batch_item(unlabeled, self.image_key, "unlabeled")])
        self.update_teacher()
        student_view, teacher_view = action_pretrain_views(
            images, self.spatial_dims, self.view_compat, generator=self.generator
        )
        t_s, t_t = self.temperatures(self.iteration)
        out_s: Any = self.network(student_view, features=True)
        with torch.no_grad():
            out_t: Any = self.teacher(teacher_view, features=True)
        full = self.stage == "full"
        windows_s = (
            logit_windows(out_s["logits"], self.window_size, self.window_step, self.window_end) if full else None
        )
        windows_t = (
            logit_windows(out_t["logits"], self.window_size, self.window_step, self.window_end) if full else None
        )
        student = self.call_heads(latent=out_s["latent"], windows=windows_s, branch="student")
        teacher = self.call_heads(latent=out_t["latent"], windows=windows_t, branch="teacher")
        targets = {k: (v.detach() if self.detach_teacher_targets else v) for k, v in teacher.items()}

        loss_latent = soft_label_kl(
            queue_logits(student["latent"], self.queue_latent.clone(), t_s),
            queue_logits(targets["latent"], self.queue_latent.clone(), t_t),
        )
        zero = zero_like(loss_latent)
        loss_output, loss_sup = zero, zero.clone()
        if full:
            queue = queue_rows(self.queue_output.clone(), self.patch_layout)
            loss_output = soft_label_kl(
                queue_logits(window_rows(student["windows"], self.windows, self.patch_layout), queue, t_s),
                queue_logits(window_rows(targets["windows"], self.windows, self.patch_layout), queue, t_t),
            )
            labels = self.batch_item(labeled, self.label_key, "labeled")
            loss_sup = self.sup_loss(out_s["logits"][: images_l.shape[0]], labels)
        loss = loss_sup + self.latent_weight * loss_latent + self.output_weight * loss_output
        loss = loss + self.zero_gradient_anchor(self.network, self.call_heads)  # stage 1 leaves the decoder unused
        output_keys = window_queue_entries(teacher["windows"], self.windows, self.patch_layout) if full else None
        self._enqueue(teacher["latent"], output_keys)
        return {
            "loss": loss,
            "loss_sup": loss_sup,
            "loss_latent": loss_latent,
            "loss_output": loss_output,
            "t_student": torch.tensor(t_s, device=loss.device),
            "t_teacher": torch.tensor(t_t, device=loss.device),
        }
