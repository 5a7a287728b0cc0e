"""``WSSDLFasterRCNN``: the Faster R-CNN of WSSDL-BUS (Shin et al., IEEE TMI 2019; wssdl.md §2) on torchvision parts.

Built from torchvision's components (``GeneralizedRCNNTransform``, ``RPNHead``, ``BoxCoder``, ``Matcher``,
``BalancedPositiveNegativeSampler``, ``RoIPool``/``RoIAlign``, ``batched_nms``) with the official configuration: one
stride-16 feature map (VGG16 conv5_3), the nine official anchors, RoI pooling 7×7, 512-unit fc6/fc7 and three classes
(background, benign, malignant). Only what the official code does differently from torchvision's ``FasterRCNN`` is
written here: anchors fully inside the image, RPN targets for every sampled anchor (the official box loss uses
negatives too), a minimum proposal side that scales with the resize, and the RoI head run on every proposal of a
weakly labelled image for the multiple-instance loss.

One ``forward`` serves every use, so DDP synchronises all trainable calls (the method contract):

- eval: ``network(images)`` -> per image ``{"boxes", "labels", "scores"}`` in input pixel coordinates;
- training: ``network(images, targets, num_strong=k)`` -> the raw tensors of every loss term (strong = the first
  ``k`` images, with ``targets``; the rest are weak); the losses themselves are functions in
  :mod:`semizoo.losses.wssdl`, computed by :class:`semizoo.methods.WSSDL`;
- TorchScript (``torch.jit.script``, MONAI's ``ckpt_export``): ``forward(images: List[Tensor])`` detects only; the
  training path is ``@torch.jit.unused`` and raises in the scripted module.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import FrozenBatchNorm2d, RoIAlign, RoIPool, batched_nms, box_iou, clip_boxes_to_image, nms

from .utils import read_state_dict

logger = logging.getLogger(__name__)

__all__ = ["WSSDLFasterRCNN", "OFFICIAL_ANCHOR_SIZES", "official_anchors", "inside_image"]

#: (width, height) of the nine official anchors: base 16 × scales 8/16/32 × h/w ratios 0.5/1/2 with py-faster-rcnn's
#: rounding (wssdl.md §2), ratio-major as the official ``generate_anchors``.
OFFICIAL_ANCHOR_SIZES = (
    (184.0, 96.0),
    (368.0, 192.0),
    (736.0, 384.0),
    (128.0, 128.0),
    (256.0, 256.0),
    (512.0, 512.0),
    (88.0, 176.0),
    (176.0, 352.0),
    (352.0, 704.0),
)
#: BUS intensity mean/std over 255 (official ResNet path: 68.274, 52.802), wssdl.md §2.
BUS_MEAN, BUS_STD = 68.274 / 255.0, 52.802 / 255.0
_RESNETS = {"resnet18": 256, "resnet34": 256, "resnet50": 1024, "resnet101": 1024}


def official_anchors(
    height: int, width: int, stride: int = 16, scale: float = 1.0, device: Optional[torch.device] = None
) -> Tensor:
    """``(height·width·9, 4)`` xyxy anchors in continuous pixels, location-major (row, column), anchor-minor.

    Every location (x, y) of the stride-16 map is centred at (8 + 16x, 8 + 16y): the official inclusive-pixel centre
    7.5 plus the half pixel of the continuous convention. ``scale`` multiplies the nine sizes (1 = official; CPU
    configurations that resize to ~150 px instead of 600 use 0.25 so that anchors still fit inside the images).
    """
    sizes = torch.tensor(OFFICIAL_ANCHOR_SIZES, dtype=torch.float32, device=device) * scale
    return _grid_anchors(sizes, height, width, stride)


def _grid_anchors(sizes: Tensor, height: int, width: int, stride: int) -> Tensor:
    """Anchors of ``sizes`` ((A, 2) width, height) centred on every location of a ``height × width`` stride map."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=sizes.device),
        torch.arange(width, dtype=torch.float32, device=sizes.device),
        indexing="ij",
    )
    centres = torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2) * stride + stride / 2.0
    return torch.cat([centres - sizes / 2.0, centres + sizes / 2.0], dim=-1).reshape(-1, 4)


def inside_image(anchors: Tensor, height: int, width: int) -> Tensor:
    """Boolean mask of the anchors lying fully inside a ``height × width`` image (official RPN target rule)."""
    return (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= width) & (anchors[:, 3] <= height)


def _vgg16_backbone(pretrained: Optional[str], width: int = 64) -> nn.Module:
    """conv1_1 ... conv5_3 + ReLU (stride 16, pool5 dropped); torchvision's layer indices, channels × width/64."""
    if width == 64:
        weights = "IMAGENET1K_V1" if pretrained == "imagenet" else None
        return torchvision.models.vgg16(weights=weights).features[:30]
    layers: list[nn.Module] = []
    channels = 3
    for item in (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8):
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        conv = nn.Conv2d(channels, item * width, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision VGG's init
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        channels = item * width
    return nn.Sequential(*layers)


class _VGGBoxHead(nn.Module):
    """flatten (512·7·7) -> fc6 -> ReLU -> Dropout 0.5 -> fc7 -> ReLU -> Dropout 0.5 (512 units, official)."""

    def __init__(self, in_features: int = 512 * 7 * 7, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        self.fc6, self.fc7 = nn.Linear(in_features, hidden), nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.out_features = hidden

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(torch.relu(self.fc6(x.flatten(1))))
        return self.drop(torch.relu(self.fc7(x)))


class _ResNetBoxHead(nn.Module):
    """torchvision C4 head: ``layer4`` on the pooled RoIs, then global average pooling."""

    def __init__(self, layer4: nn.Module, out_features: int) -> None:
        super().__init__()
        self.layer4, self.out_features = layer4, out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(x).mean(dim=(2, 3))


def _resnet_parts(name: str, pretrained: Optional[str]) -> tuple[nn.Module, nn.Module, int]:
    weights = "IMAGENET1K_V1" if pretrained == "imagenet" else None
    net = getattr(torchvision.models, name)(weights=weights, norm_layer=FrozenBatchNorm2d)
    backbone = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
    return backbone, _ResNetBoxHead(net.layer4, net.fc.in_features), _RESNETS[name]


def _truncated_normal_(weight: Tensor, std: float) -> None:
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)  # tf.truncated_normal_initializer


class WSSDLFasterRCNN(nn.Module):
    """Faster R-CNN of WSSDL-BUS (wssdl.md §2): stride-16 backbone, official anchors, RoI pooling, 512-unit head.

    Args:
        backbone: ``"vgg16"`` (official) or ``"resnet18/34/50/101"`` (torchvision C4, frozen batch norm).
        num_classes: classes including background (3: background, benign, malignant).
        pretrained: ``None`` (random init), ``"imagenet"`` (torchvision weights from the torch hub cache; a missing
            file is a clear error) or the path of a state dict of this network.
        anchors: ``"official"`` (the nine anchors of :data:`OFFICIAL_ANCHOR_SIZES`) or ``"torchvision"``
            (``AnchorGenerator(((128, 256, 512),), ((0.5, 1, 2),))``).
        width: VGG16 conv1 width (64 official; every conv and fc6/fc7 scale with it; other widths are for CPU
            budgets and load no ImageNet weights).
        anchor_scale: multiplies every anchor size (1 = official; 0.25 for CPU configurations resized to ~150 px).
        roi_op: ``"pool"`` (RoIPool 7×7, official) or ``"align"`` (RoIAlign).
        freeze_early: freeze conv1_x, conv2_x of VGG16 (official); ``None``: only when ImageNet weights are loaded.
        min_size, max_size: resize of the shorter/longer side (official 600/1000).
        pixel_mean, pixel_std: normalisation of the [0, 1] grey input (default: BUS statistics; ``pixel_mean =
            68.274/255, pixel_std = 1/255`` gives the official VGG ``x·255 − 68.274``).
        rpn_pre_nms_train, rpn_post_nms_train, rpn_pre_nms_test, rpn_post_nms_test: proposals kept before/after NMS.
        rpn_nms: NMS IoU of the proposals; ``rpn_min_side``: minimum proposal side in input pixels (× resize scale).
        rpn_batch, rpn_positive_fraction, rpn_fg_iou, rpn_bg_iou: RPN anchor sampling (256, 0.5, 0.7, 0.3).
        rpn_negatives: ``"auto"`` (``"background_boxes"`` for images whose target has ``bg_boxes``, else ``"iou"``;
            wssdl.md §4), ``"iou"`` (IoU < rpn_bg_iou with every lesion box) or ``"background_boxes"`` (SNUBH: only
            anchors with |a ∩ g| / |a| ≥ 0.7 for an annotated background box ``g``; images without ``bg_boxes``
            fall back to ``"iou"``).
        box_batch, box_positive_fraction, box_fg_iou: RoI sampling (128, 0.25, 0.5; background IoU in [0, fg_iou)).
        score_thresh, box_nms, detections_per_image: test-time output (0.05, 0.3, 300).
        clip_to: ``"image"`` (each image's own size, default) or ``"batch"`` (the padded canvas, official combined
            script) for RPN anchor targets and proposal clipping.
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        num_classes: int = 3,
        pretrained: Optional[str] = None,
        anchors: str = "official",
        anchor_scale: float = 1.0,
        width: int = 64,
        roi_op: str = "pool",
        freeze_early: Optional[bool] = None,
        min_size: int = 600,
        max_size: int = 1000,
        pixel_mean: float = BUS_MEAN,
        pixel_std: float = BUS_STD,
        rpn_pre_nms_train: int = 12000,
        rpn_post_nms_train: int = 2000,
        rpn_pre_nms_test: int = 6000,
        rpn_post_nms_test: int = 300,
        rpn_nms: float = 0.7,
        rpn_min_side: float = 16.0,
        rpn_batch: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_fg_iou: float = 0.7,
        rpn_bg_iou: float = 0.3,
        rpn_negatives: str = "auto",
        box_batch: int = 128,
        box_positive_fraction: float = 0.25,
        box_fg_iou: float = 0.5,
        score_thresh: float = 0.05,
        box_nms: float = 0.3,
        detections_per_image: int = 300,
        clip_to: str = "image",
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("anchors", anchors, ("official", "torchvision")),
            ("roi_op", roi_op, ("pool", "align")),
            ("rpn_negatives", rpn_negatives, ("auto", "iou", "background_boxes")),
            ("clip_to", clip_to, ("image", "batch")),
            ("backbone", backbone, ("vgg16", *_RESNETS)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
        weights_path = None if pretrained in (None, "imagenet") else pretrained
        hub = None if weights_path is not None else pretrained
        if hub == "imagenet":
            _check_hub_weights(backbone)
        if hub == "imagenet" and width != 64:
            raise ValueError(f"ImageNet weights exist for width 64 only, got width={width}.")
        if backbone == "vgg16":
            self.backbone = _vgg16_backbone(hub, width)
            channels = 8 * width
            self.box_head: nn.Module = _VGGBoxHead(channels * 49, 8 * width)
            if freeze_early if freeze_early is not None else hub == "imagenet":
                for layer in list(self.backbone)[:10]:  # conv1_1 ... conv2_2 (+ ReLUs and pool1/pool2)
                    layer.requires_grad_(False)
        else:
            self.backbone, self.box_head, channels = _resnet_parts(backbone, hub)
        self.num_classes = int(num_classes)
        self.transform = GeneralizedRCNNTransform(min_size, max_size, [pixel_mean] * 3, [pixel_std] * 3)
        self.anchor_kind = anchors
        sizes = tuple(round(size * anchor_scale) for size in (128, 256, 512))
        self.anchor_generator = AnchorGenerator((sizes,), ((0.5, 1.0, 2.0),))  # used with anchors="torchvision"
        self.anchor_scale = float(anchor_scale)
        self.official_anchor_sizes = [list(size) for size in OFFICIAL_ANCHOR_SIZES]  # a list: TorchScript reads it
        if anchors == "official":
            _warn_unfit_anchors(self.anchor_scale, min_size, max_size)
        self.rpn_head = RPNHead(channels, 9)  # 3×3 conv + ReLU, 1×1 objectness (9), 1×1 deltas (36); N(0, 0.01)
        self.roi_pool: nn.Module = RoIPool(7, 1 / 16) if roi_op == "pool" else RoIAlign(7, 1 / 16, sampling_ratio=2)
        self.cls_score = nn.Linear(self.box_head.out_features, self.num_classes)
        self.bbox_pred = nn.Linear(self.box_head.out_features, 4 * self.num_classes)
        for layer in ([self.box_head.fc6, self.box_head.fc7] if backbone == "vgg16" else []) + [self.cls_score]:
            _truncated_normal_(layer.weight, 0.01)
            nn.init.zeros_(layer.bias)
        _truncated_normal_(self.bbox_pred.weight, 0.001)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.rpn_matcher = Matcher(rpn_fg_iou, rpn_bg_iou, allow_low_quality_matches=True)
        self.rpn_sampler = BalancedPositiveNegativeSampler(rpn_batch, rpn_positive_fraction)
        self.box_matcher = Matcher(box_fg_iou, box_fg_iou, allow_low_quality_matches=False)
        self.box_sampler = BalancedPositiveNegativeSampler(box_batch, box_positive_fraction)
        self.rpn_top_train, self.rpn_top_test = (rpn_pre_nms_train, rpn_post_nms_train), (
            rpn_pre_nms_test,
            rpn_post_nms_test,
        )
        self.rpn_nms, self.rpn_min_side, self.rpn_negatives = rpn_nms, rpn_min_side, rpn_negatives
        self.score_thresh, self.box_nms, self.detections_per_image = score_thresh, box_nms, detections_per_image
        self.clip_to = clip_to
        if weights_path is not None:
            self.load_state_dict(read_state_dict(weights_path, "pretrained weights file"))

    # -- shared parts -------------------------------------------------------------------------------------------
    def _prepare(self, images: Sequence[Tensor] | Tensor, targets: Optional[list[dict[str, Tensor]]] = None):
        """Grey [0, 1] images -> 3-channel, normalised, resized, batched (boxes resized alike)."""
        image_list, original = self._prepare_images(_image_list(images))
        resized = []
        for target, before, after in zip(targets or [], original, image_list.image_sizes):
            target = dict(target)
            for key in ("boxes", "bg_boxes"):
                if target.get(key) is not None:
                    target[key] = resize_boxes(target[key].to(torch.float32).reshape(-1, 4), before, after)
            resized.append(target)
        return image_list, resized, original

    def _prepare_images(self, images: List[Tensor]) -> Tuple[ImageList, List[Tuple[int, int]]]:
        """3-channel, normalised, resized, batched images and each image's (height, width) before resizing."""
        if len(images) == 0:
            raise ValueError("images is empty.")
        rgb = [image.expand(3, -1, -1) if image.shape[0] == 1 else image for image in images]
        original = [(int(image.shape[-2]), int(image.shape[-1])) for image in rgb]
        resized = [self._resize(self.transform.normalize(image)) for image in rgb]
        sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in resized]
        return ImageList(self.transform.batch_images(resized, self.transform.size_divisible), sizes), original

    def _resize(self, image: Tensor) -> Tensor:
        """torchvision's ``GeneralizedRCNNTransform`` resize, with the scale in double precision also under
        TorchScript (torchvision computes it in float32 there, so a scripted model could differ by one pixel)."""
        if self.training:  # torchvision draws the training min size (one choice here) per image: keep the RNG stream
            torch.empty(1).uniform_(0.0, float(len(self.transform.min_size)))
        height, width = image.shape[-2], image.shape[-1]
        scale = min(
            float(self.transform.min_size[-1]) / min(height, width), float(self.transform.max_size) / max(height, width)
        )
        resized = nn.functional.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )
        return resized[0]

    def _anchors(self, image_list: ImageList, features: Tensor) -> Tensor:
        if self.anchor_kind == "official":
            sizes = torch.tensor(self.official_anchor_sizes, dtype=torch.float32, device=features.device)
            return _grid_anchors(sizes * self.anchor_scale, features.shape[-2], features.shape[-1], 16)
        return self.anchor_generator(image_list, [features])[0]

    def _rpn_outputs(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        """RPN objectness ``(B, H·W·A)`` and deltas ``(B, H·W·A, 4)``, location-major like the anchors."""
        objectness, deltas = self.rpn_head([features])
        batch, height, width = features.shape[0], features.shape[-2], features.shape[-1]
        objectness = objectness[0].permute(0, 2, 3, 1).reshape(batch, -1)
        deltas = deltas[0].view(batch, 9, 4, height, width).permute(0, 3, 4, 1, 2).reshape(batch, -1, 4)
        return objectness, deltas

    def _limits(self, image_list: ImageList) -> List[Tuple[int, int]]:
        """(height, width) each image's anchors and proposals are limited to (own size or the padded canvas)."""
        if self.clip_to == "batch":
            canvas = (int(image_list.tensors.shape[-2]), int(image_list.tensors.shape[-1]))
            return [canvas] * len(image_list.image_sizes)
        return [(int(h), int(w)) for h, w in image_list.image_sizes]

    def _proposals(
        self, anchors: Tensor, objectness: Tensor, deltas: Tensor, limits: List[Tuple[int, int]], scales: List[float]
    ) -> List[Tensor]:
        """Detached proposals per image: top-k by objectness, decode, clip, drop sides < min·s, NMS, top-k."""
        pre_nms, post_nms = self.rpn_top_train if self.training else self.rpn_top_test
        proposals: List[Tensor] = []
        for i, (height, width) in enumerate(limits):
            scores, boxes = objectness[i].detach(), deltas[i].detach()
            top = scores.topk(min(pre_nms, scores.numel())).indices
            boxes = self.box_coder.decode_single(boxes[top], anchors[top])
            boxes = clip_boxes_to_image(boxes, (height, width))
            scores = scores[top]
            side = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            keep = torch.where(side >= self.rpn_min_side * scales[i])[0]
            boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes, scores, self.rpn_nms)[:post_nms]
            proposals.append(boxes[keep])
        return proposals

    def _roi_features(self, features: Tensor, boxes: List[Tensor]) -> Tensor:
        return self.box_head(self.roi_pool(features, boxes))

    # -- training targets -----------------------------------------------------------------------------------
    def _rpn_targets(self, anchors: Tensor, target: dict[str, Tensor], height: int, width: int):
        """Sampled anchors of one strong image: indices, labels (1/0), regression targets (to the max-IoU box)."""
        gt = target["boxes"]
        labels = torch.full((anchors.shape[0],), -1.0, device=anchors.device)
        inside = inside_image(anchors, height, width)
        matched = anchors  # no lesion box: zero regression targets (a zero-size box would encode to log 0 = -inf)
        if gt.numel() == 0:
            labels[inside] = 0.0
        else:
            iou = box_iou(gt, anchors)
            iou[:, ~inside] = -1.0  # outside anchors are neither matched nor counted in the per-box maxima
            index = self.rpn_matcher(iou)  # >= fg: positive, < bg: -1, between: -2, low-quality maxima kept
            best = iou.argmax(dim=0)
            matched = gt[best]
            labels[inside & (index >= 0)] = 1.0
            negative = inside & (index == Matcher.BELOW_LOW_THRESHOLD)
            if self.rpn_negatives != "iou" and target.get("bg_boxes") is not None and target["bg_boxes"].numel():
                negative = inside & _covered(anchors, target["bg_boxes"], 0.7) & (labels != 1.0)
            labels[negative] = 0.0
        positive, negative = self.rpn_sampler([labels.long().clamp(min=-1)])
        sampled = torch.where(positive[0] | negative[0])[0]
        return sampled, labels[sampled], self.box_coder.encode_single(matched[sampled], anchors[sampled])

    def _box_targets(self, proposals: Tensor, target: dict[str, Tensor]):
        """Sampled RoIs of one strong image (proposals + GT boxes): boxes, class labels, regression targets."""
        gt, gt_labels = target["boxes"], target["labels"]
        rois = torch.cat([proposals, gt]) if gt.numel() else proposals
        if gt.numel() == 0:
            labels = torch.zeros(rois.shape[0], dtype=torch.int64, device=rois.device)
            matched = rois
        else:
            index = self.box_matcher(box_iou(gt, rois))
            labels = gt_labels[index.clamp(min=0)].to(torch.int64)
            labels[index < 0] = 0
            matched = gt[index.clamp(min=0)]
        positive, negative = self.box_sampler([labels])
        sampled = torch.where(positive[0] | negative[0])[0]
        return rois[sampled], labels[sampled], self.box_coder.encode_single(matched[sampled], rois[sampled])

    # -- forward --------------------------------------------------------------------------------------------
    def forward(
        self,
        images: List[Tensor],
        targets: Optional[List[Dict[str, Tensor]]] = None,
        num_strong: Optional[int] = None,
    ) -> List[Dict[str, Tensor]]:
        """Detections (eval, ``targets`` None) or the raw tensors of every training loss term.

        Under TorchScript (``ckpt_export``) the module detects only: the training path is not compiled.

        Args:
            images: grey or RGB images in [0, 1], ``(B, C, H, W)`` or a list of ``(C, H, W)`` of any sizes.
            targets: for the first ``num_strong`` images: ``boxes`` (G, 4) xyxy, ``labels`` (G,) in {1, 2},
                optional ``bg_boxes``; in input pixels.
            num_strong: number of leading box-labelled images (default ``len(targets)``); the rest are weak.

        Returns:
            eval: a list of ``{"boxes" (D, 4), "labels" (D,), "scores" (D,)}`` in input coordinates.
            training: a dict with ``rpn_logits``/``rpn_labels`` (sampled anchors of the strong images),
            ``rpn_deltas``/``rpn_targets``/``rpn_positive``, ``rcnn_logits``/``rcnn_labels`` (sampled RoIs),
            ``rcnn_deltas`` (of each RoI's own class)/``rcnn_targets``/``rcnn_foreground``, ``num_rois``, and
            ``weak_logits``: one ``(P_i, num_classes)`` tensor per weak image (its RoI head on every proposal).
        """
        if torch.jit.is_scripting():
            with torch.no_grad():
                detections = self._detect(images)
            return detections
        return self._eager_forward(images, targets, num_strong)

    @torch.jit.unused
    def _eager_forward(
        self, images: Any, targets: Optional[List[Dict[str, Tensor]]], num_strong: Optional[int]
    ) -> List[Dict[str, Tensor]]:  # training returns the dict of loss-term tensors; TorchScript never compiles this
        if targets is None and self.training and num_strong:
            raise ValueError("training with strong images needs targets.")
        if targets is None:
            return self.detect(images)
        num_strong = len(targets) if num_strong is None else int(num_strong)
        if num_strong != len(targets):
            raise ValueError(f"num_strong={num_strong} but {len(targets)} targets were given.")
        image_list, resized, original = self._prepare(images, targets)
        # 1. backbone on the padded batch canvas; RPN head on its stride-16 map
        features = self.backbone(image_list.tensors)
        objectness, deltas = self._rpn_outputs(features)
        anchors = self._anchors(image_list, features)
        limits = self._limits(image_list)
        scales = [size[0] / o[0] for size, o in zip(image_list.image_sizes, original)]
        # 2. RPN targets and sampled anchors of the strong images
        rpn = [self._rpn_targets(anchors, resized[i], *limits[i]) for i in range(num_strong)]
        # 3. proposals of every image (detached)
        proposals = self._proposals(anchors, objectness, deltas, limits, scales)
        # 4. R-CNN on sampled RoIs of the strong images
        sampled = [self._box_targets(proposals[i], resized[i]) for i in range(num_strong)]
        strong_feats = features[:num_strong]
        rcnn_logits = rcnn_deltas = torch.zeros(0, device=features.device)
        if num_strong:
            head = self._roi_features(strong_feats, [s[0] for s in sampled])
            rcnn_logits = self.cls_score(head)
            labels = torch.cat([s[1] for s in sampled])
            rcnn_deltas = self.bbox_pred(head).view(-1, self.num_classes, 4)
            rcnn_deltas = rcnn_deltas[torch.arange(labels.numel(), device=labels.device), labels]
        # 5. weak images: the RoI head on every proposal (dropout active, as the official code)
        weak_logits = []
        if features.shape[0] > num_strong:
            weak_boxes = proposals[num_strong:]
            weak_scores = self.cls_score(self._roi_features(features[num_strong:], weak_boxes))
            weak_logits = list(weak_scores.split([b.shape[0] for b in weak_boxes]))
        empty = torch.zeros(0, device=features.device)
        return {
            "rpn_logits": _cat([objectness[i][s[0]] for i, s in enumerate(rpn)], empty),
            "rpn_labels": _cat([s[1] for s in rpn], empty),
            "rpn_deltas": _cat([deltas[i][s[0]] for i, s in enumerate(rpn)], empty.view(0, 4)),
            "rpn_targets": _cat([s[2] for s in rpn], empty.view(0, 4)),
            "rpn_positive": _cat([s[1] > 0 for s in rpn], empty.bool()),
            "rcnn_logits": rcnn_logits.view(-1, self.num_classes),
            "rcnn_labels": _cat([s[1] for s in sampled], empty.long()),
            "rcnn_deltas": rcnn_deltas.view(-1, 4),
            "rcnn_targets": _cat([s[2] for s in sampled], empty.view(0, 4)),
            "rcnn_foreground": _cat([s[1] > 0 for s in sampled], empty.bool()),
            "num_rois": sum(s[0].shape[0] for s in sampled),
            "weak_logits": weak_logits,
        }

    @torch.jit.unused
    def detect(self, images: Any) -> List[Dict[str, Tensor]]:
        """Per-class score > thresh, class-wise NMS, top ``detections_per_image``, in input coordinates; ``images``
        is ``(B, C, H, W)`` or a list of ``(C, H, W)``."""
        with torch.no_grad():
            return self._detect(_image_list(images))

    def _detect(self, images: List[Tensor]) -> List[Dict[str, Tensor]]:
        image_list, original = self._prepare_images(images)
        features = self.backbone(image_list.tensors)
        objectness, deltas = self._rpn_outputs(features)
        anchors = self._anchors(image_list, features)
        scales = [size[0] / o[0] for size, o in zip(image_list.image_sizes, original)]
        proposals = self._proposals(anchors, objectness, deltas, self._limits(image_list), scales)
        head = self._roi_features(features, proposals)
        probabilities = torch.softmax(self.cls_score(head), dim=-1).split([p.shape[0] for p in proposals])
        box_deltas = self.bbox_pred(head).split([p.shape[0] for p in proposals])
        detections: List[Dict[str, Tensor]] = []
        for i, boxes in enumerate(proposals):
            decoded = self.box_coder.decode_single(
                box_deltas[i].reshape(-1, 4), boxes.repeat_interleave(self.num_classes, 0)
            )
            decoded = clip_boxes_to_image(decoded, image_list.image_sizes[i]).view(-1, self.num_classes, 4)[:, 1:]
            scores = probabilities[i][:, 1:]
            labels = torch.arange(1, self.num_classes, device=scores.device).expand_as(scores)
            decoded, scores, labels = decoded.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            decoded, scores, labels = decoded[keep], scores[keep], labels[keep]
            keep = batched_nms(decoded, scores, labels, self.box_nms)[: self.detections_per_image]
            detections.append({"boxes": decoded[keep], "labels": labels[keep], "scores": scores[keep]})
        for detection, resized, size in zip(detections, image_list.image_sizes, original):  # back to input pixels
            detection["boxes"] = resize_boxes(detection["boxes"], [resized[0], resized[1]], [size[0], size[1]])
        return detections


def _image_list(images: Any) -> List[Tensor]:
    """``(B, C, H, W)`` or a sequence of ``(C, H, W)`` -> a list of ``(C, H, W)``."""
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W) or a list of (C, H, W), got shape {tuple(images.shape)}.")
        return list(images)
    return list(images)


def _cat(parts: list[Tensor], empty: Tensor) -> Tensor:
    """``torch.cat(parts)``, or ``empty`` (right dtype and trailing shape) when there is no part (no strong image)."""
    return torch.cat(parts) if parts else empty


def _warn_unfit_anchors(scale: float, min_size: int, max_size: int) -> None:
    """Warn about anchor types that can never lie inside a resized image: they never get an RPN target, keep their
    initial objectness (sigmoid 0.5) and, clipped to the image, crowd out the trained proposals at test time."""
    unfit = [(w * scale, h * scale) for w, h in OFFICIAL_ANCHOR_SIZES if min(w, h) * scale > min_size]
    unfit += [(w * scale, h * scale) for w, h in OFFICIAL_ANCHOR_SIZES if max(w, h) * scale > max_size]
    if unfit:
        logger.warning(
            "anchors %s (anchor_scale %.3g) are larger than a %d-pixel shorter side: they are never inside an image, "
            "never trained, and dominate the proposals at test time; lower anchor_scale.",
            sorted(set(unfit)),
            scale,
            min_size,
        )


def _covered(anchors: Tensor, regions: Tensor, fraction: float) -> Tensor:
    """Anchors whose intersection with some region covers at least ``fraction`` of the anchor's area."""
    if regions.numel() == 0:
        return torch.zeros(anchors.shape[0], dtype=torch.bool, device=anchors.device)
    low = torch.maximum(anchors[:, None, :2], regions[None, :, :2])
    high = torch.minimum(anchors[:, None, 2:], regions[None, :, 2:])
    intersection = (high - low).clamp(min=0).prod(dim=-1)
    area = (anchors[:, 2:] - anchors[:, :2]).prod(dim=-1)
    return (intersection / area[:, None] >= fraction).any(dim=1)


def _check_hub_weights(backbone: str) -> None:
    """Fail early, naming the file and the command, when torchvision's ImageNet weights are not cached."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(backbone).IMAGENET1K_V1
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ImageNet weights for {backbone} are not in the torch hub cache ({path}); run `python -m semizoo "
            "fetch-weights wssdl_bus_detection` on a machine with internet access, or set pretrained=None."
        )
