"""WSSDL-BUS model, training step, optimizer, pipeline and evaluation (wssdl.md §2-§4, §7; §8 items 7 and 9).

Expected values are re-derived here: py-faster-rcnn's anchor generation from its description, IoUs and box deltas of
hand-placed anchors, TensorFlow 1's Adam update written out in numpy, a grey PNG with a bright rectangle at known
rows/columns, and CorLoc/self-training outcomes counted by hand for fake detectors with fixed outputs. Networks are
CPU-sized (width 8, images ~100 px).
"""

from __future__ import annotations

import io
import json
import logging
import math

import numpy as np
import pytest
import torch
from monai.engines.utils import IterationEvents
from PIL import Image
from semizoo.engines import DetectionEvaluator, SemiSupervisedTrainer, pseudo_box_lists
from semizoo.handlers import CorLocMetric, DetectionReport, DetectionWriter
from semizoo.methods import WSSDL
from semizoo.methods import wssdl as wssdl_method
from semizoo.networks import WSSDLFasterRCNN
from semizoo.networks.faster_rcnn import OFFICIAL_ANCHOR_SIZES, inside_image, official_anchors
from semizoo.optim import TF1Adam, decay_weights_only
from semizoo.transforms import WSSDLAugmentd, wssdl_transforms
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread for these tiny networks (OpenMP spin-waiting on a shared 2-core machine made the training
    steps ~20× slower with two threads); the previous count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_net(seed: int = 0, **kwargs) -> WSSDLFasterRCNN:
    """The bundle's CPU smoke construction, smaller still (width 8, shorter side 96)."""
    torch.manual_seed(seed)
    settings = dict(
        width=8,
        anchor_scale=0.25,
        min_size=96,
        max_size=128,
        rpn_pre_nms_train=200,
        rpn_post_nms_train=32,
        rpn_pre_nms_test=100,
        rpn_post_nms_test=16,
        box_batch=16,
    )
    settings.update(kwargs)
    return WSSDLFasterRCNN(**settings)


def delta(box, anchor) -> list[float]:
    """Faster R-CNN regression target with weights (1, 1, 1, 1): centre offsets over anchor size, log size ratios."""
    aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
    gw, gh = box[2] - box[0], box[3] - box[1]
    ax, ay, gx, gy = anchor[0] + aw / 2, anchor[1] + ah / 2, box[0] + gw / 2, box[1] + gh / 2
    return [(gx - ax) / aw, (gy - ay) / ah, math.log(gw / aw), math.log(gh / ah)]


# --- §2 / §8 item 7: anchors --------------------------------------------------------------------------------------


def py_faster_rcnn_anchors() -> np.ndarray:
    """py-faster-rcnn's generate_anchors() from its description, converted to continuous edges (x2, y2 + 1)."""
    x_ctr = y_ctr = 7.5  # base box [0, 0, 15, 15] inclusive
    rows = []
    for ratio in (0.5, 1.0, 2.0):  # h/w, ratio-major
        ws = np.round(np.sqrt(256.0 / ratio))
        hs = np.round(ws * ratio)
        for scale in (8, 16, 32):
            w, h = ws * scale, hs * scale
            rows.append([x_ctr - 0.5 * (w - 1), y_ctr - 0.5 * (h - 1), x_ctr + 0.5 * (w - 1), y_ctr + 0.5 * (h - 1)])
    anchors = np.array(rows)
    anchors[:, 2:] += 1.0
    return anchors


def test_official_anchors_are_py_faster_rcnn_shifted_location_major():
    base = py_faster_rcnn_anchors()
    assert np.array_equal(base[:, 2:] - base[:, :2], np.array(OFFICIAL_ANCHOR_SIZES))
    assert np.array_equal((base[:, :2] + base[:, 2:]) / 2, np.full((9, 2), 8.0))
    expected = np.concatenate([base + 16.0 * np.array([x, y, x, y]) for y in range(2) for x in range(3)])
    anchors = official_anchors(2, 3)
    assert anchors.shape == (54, 4) and anchors.dtype == torch.float32
    assert np.allclose(anchors.numpy(), expected, atol=1e-5)


def test_anchor_scale_multiplies_the_sizes_and_keeps_the_centres():
    base = py_faster_rcnn_anchors()
    centres, sizes = (base[:, :2] + base[:, 2:]) / 2, base[:, 2:] - base[:, :2]
    expected = np.concatenate([centres - sizes * 0.125, centres + sizes * 0.125], axis=1) + np.array([16, 0, 16, 0])
    assert np.allclose(official_anchors(1, 2, scale=0.25)[9:].numpy(), expected, atol=1e-5)


def test_inside_image_means_fully_inside_with_continuous_edges():
    anchors = torch.tensor(
        [
            [0.0, 0.0, 30.0, 20.0],  # touches the right and bottom edges: inside
            [0.0, 0.0, 30.5, 20.0],  # past the right edge
            [0.0, -0.1, 10.0, 10.0],  # above the top edge
            [5.0, 5.0, 10.0, 20.5],  # past the bottom edge
            [-1.0, 2.0, 8.0, 9.0],  # left of the image
        ]
    )
    assert inside_image(anchors, 20, 30).tolist() == [True, False, False, False, False]
    assert inside_image(anchors, 30, 20).tolist() == [False, False, False, True, False]  # (height, width) order


# --- TorchScript (ckpt_export) -------------------------------------------------------------------------------------


def test_scripted_detector_equals_eager_and_compiles_no_training_path(tmp_path):
    """The scripted module detects exactly as the eager network. A 110×100 image resized to a 128 shorter side
    has scale 1.28: torchvision's transform computes it in float32 under TorchScript (127 columns instead of 128);
    the network's own resize keeps double precision in both."""
    torch.manual_seed(0)
    net = WSSDLFasterRCNN(width=8, anchor_scale=0.15, min_size=128, max_size=160, rpn_post_nms_test=32).eval()
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    scripted = torch.jit.load(str(path))
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 110, 100, generator=generator), torch.rand(1, 90, 120, generator=generator)]
    assert net._prepare_images(images)[0].image_sizes == [(140, 128), (120, 160)]
    eager, compiled = net(images), scripted(images)
    for mine, theirs in zip(eager, compiled):
        assert mine.keys() == theirs.keys() == {"boxes", "labels", "scores"} and len(mine["boxes"]) > 0
        for key in mine:
            assert torch.equal(mine[key], theirs[key]), key
            assert not theirs[key].requires_grad  # detection runs without autograd in both
    assert hasattr(scripted, "_proposals") and not hasattr(scripted, "_rpn_targets")  # training targets: not compiled


# --- §4 / §8 item 7: RPN targets ----------------------------------------------------------------------------------

G1, G2 = [20.0, 20.0, 60.0, 60.0], [80.0, 80.0, 100.0, 100.0]
RPN_ANCHORS = [
    [20.0, 20.0, 60.0, 60.0],  # 0: IoU 1 with G1 -> positive
    [22.0, 20.0, 62.0, 60.0],  # 1: IoU 38/42 = 0.905 with G1 -> positive
    [20.0, 20.0, 40.0, 60.0],  # 2: IoU 0.5 with G1 -> ignored
    [60.0, 60.0, 82.0, 82.0],  # 3: IoU 0 with G1, 4/880 with G2 -> negative, target towards G2
    [-5.0, 20.0, 35.0, 60.0],  # 4: IoU 0.23 with G1 but outside the image -> never sampled
    [80.0, 70.0, 100.0, 100.0],  # 5: IoU 2/3 with G2: G2's maximum (tie) -> positive
    [70.0, 80.0, 100.0, 100.0],  # 6: IoU 2/3 with G2: G2's maximum (tie) -> positive
    [80.0, 80.0, 100.0, 101.0],  # 7: IoU 0.95 with G2 but outside -> never sampled, not G2's maximum
    [0.0, 0.0, 10.0, 10.0],  # 8: IoU 0 with both -> negative
    [75.0, 75.0, 95.0, 95.0],  # 9: IoU 225/575 = 0.39 with G2 -> ignored
]


def rpn_targets(net, anchors, target, size=(100, 100)):
    torch.manual_seed(0)
    sampled, labels, targets = net._rpn_targets(torch.tensor(anchors), target, *size)
    order = sampled.argsort()
    return sampled[order].tolist(), labels[order].tolist(), targets[order]


def test_rpn_positives_ties_inside_rule_and_negative_targets():
    target = {"boxes": torch.tensor([G1, G2]), "labels": torch.tensor([1, 2])}
    sampled, labels, targets = rpn_targets(tiny_net(), RPN_ANCHORS, target)
    assert sampled == [0, 1, 3, 5, 6, 8]
    assert labels == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    expected = {0: G1, 1: G1, 3: G2, 5: G2, 6: G2}  # anchor 3 (negative): its max-IoU box is G2
    for row, index in enumerate(sampled):
        if index in expected:
            assert torch.allclose(targets[row], torch.tensor(delta(expected[index], RPN_ANCHORS[index])), atol=1e-5)
    assert torch.isfinite(targets).all()


BG_ANCHORS = [
    [20.0, 20.0, 60.0, 60.0],  # 0: IoU 1 with the lesion -> positive
    [0.0, 0.0, 10.0, 10.0],  # 1: IoU 0, outside every bg box -> ignored with background_boxes
    [5.0, 75.0, 25.0, 95.0],  # 2: fully inside the bg box -> negative
    [40.0, 75.0, 60.0, 95.0],  # 3: 50 % inside the bg box -> ignored
    [30.0, 75.0, 55.0, 95.0],  # 4: 80 % inside the bg box -> negative
    [-5.0, 75.0, 15.0, 95.0],  # 5: 75 % inside the bg box but outside the image -> never sampled
]


def test_background_box_negatives_only_where_a_bg_box_covers_70_percent():
    net = tiny_net(rpn_negatives="background_boxes")
    target = {"boxes": torch.tensor([G1]), "labels": torch.tensor([2]), "bg_boxes": torch.tensor([[0.0, 70, 50, 100]])}
    sampled, labels, targets = rpn_targets(net, BG_ANCHORS, target)
    assert sampled == [0, 2, 4] and labels == [1.0, 0.0, 0.0]
    assert torch.allclose(targets[1], torch.tensor(delta(G1, BG_ANCHORS[2])), atol=1e-5)
    # without bg boxes the same network falls back to IoU < 0.3 (anchor 1 and the partly covered ones negative)
    del target["bg_boxes"]
    sampled, labels, _ = rpn_targets(net, BG_ANCHORS, target)
    assert sampled == [0, 1, 2, 3, 4] and labels == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_rpn_negatives_auto_follows_the_presence_of_background_boxes():
    """The default ``"auto"`` uses the background-box rule exactly when a target has bg boxes (SNUBH, wssdl.md §4);
    ``"iou"`` ignores them."""
    target = {"boxes": torch.tensor([G1]), "labels": torch.tensor([2]), "bg_boxes": torch.tensor([[0.0, 70, 50, 100]])}
    assert rpn_targets(tiny_net(), BG_ANCHORS, target)[:2] == ([0, 2, 4], [1.0, 0.0, 0.0])
    assert rpn_targets(tiny_net(rpn_negatives="iou"), BG_ANCHORS, target)[:2] == ([0, 1, 2, 3, 4], [1.0] + [0.0] * 4)
    target["bg_boxes"] = torch.zeros(0, 4)
    assert rpn_targets(tiny_net(), BG_ANCHORS, target)[:2] == ([0, 1, 2, 3, 4], [1.0] + [0.0] * 4)


def test_rpn_targets_of_an_image_without_lesion_box_are_finite():
    """Every inside anchor is negative; the official box loss also counts negatives, so targets must be finite."""
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    net = tiny_net()
    sampled, labels, targets = rpn_targets(net, RPN_ANCHORS, target)
    assert sampled == [0, 1, 2, 3, 5, 6, 8, 9] and labels == [0.0] * 8
    assert torch.isfinite(targets).all()
    method = WSSDL(net)
    method.train()
    with torch.no_grad():
        terms = method.train_step([{**strong_record(), "box": torch.zeros(0, 4), "label": target["labels"]}], [])
    assert all(torch.isfinite(terms[name]) for name in (*STRONG_TERMS, "loss"))


# --- §4 / §8 item 9: phantom training step ------------------------------------------------------------------------


def phantom(height: int, width: int, box, seed: int) -> torch.Tensor:
    """(1, H, W) speckle in [0.1, 0.4] with a bright ellipse [0.7, 0.9] inscribed in ``box`` (x1, y1, x2, y2)."""
    g = torch.Generator().manual_seed(seed)
    image = 0.1 + 0.3 * torch.rand(1, height, width, generator=g)
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    x1, y1, x2, y2 = box
    inside = ((xs - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2 + ((ys - (y1 + y2) / 2) / ((y2 - y1) / 2)) ** 2 <= 1
    image[0][inside] = 0.7 + 0.2 * torch.rand(int(inside.sum()), generator=g)
    return image


def strong_record():
    box = [30.0, 24.0, 78.0, 64.0]
    return {"image": phantom(96, 96, box, 1), "box": torch.tensor([box]), "label": torch.tensor([2])}


def weak_records(seed: int = 2):
    return [
        {"image": phantom(96, 96, (20 + seed, 30, 60, 70), seed), "image_class": torch.tensor(2)},
        {"image": phantom(96, 96, (40, 40 - seed, 80, 76), seed + 100), "image_class": torch.tensor(1)},
    ]


STRONG_TERMS = ("loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls", "loss_rcnn_box")


def test_combined_step_terms_are_finite_and_alpha_follows_the_iteration():
    method = WSSDL(tiny_net(), alpha_step_size=1)
    method.train()
    method.iteration = 3
    terms = method.train_step([strong_record()], weak_records())
    for name in (*STRONG_TERMS, "loss_ws", "loss"):
        assert terms[name].ndim == 0 and torch.isfinite(terms[name]), name
    assert terms["loss_ws"] > 0
    assert torch.allclose(terms["loss"], sum(terms[name] for name in (*STRONG_TERMS, "loss_ws")), atol=1e-6)
    assert terms["alpha"].item() == pytest.approx(1 - 0.99 * 0.9**3, abs=1e-6)


def test_strong_terms_do_not_depend_on_the_weak_image_content():
    net = tiny_net()
    nn.init.normal_(net.cls_score.weight, std=0.5)  # RoI logits that visibly follow the content (init: ~uniform)
    method = WSSDL(net)
    method.train()
    results = []
    for seed in (2, 7):  # same weak sizes, other content
        torch.manual_seed(11)  # samplers (randperm) and dropout draw from the global RNG
        with torch.no_grad():
            results.append(method.train_step([strong_record()], weak_records(seed)))
    first, second = results
    for name in STRONG_TERMS:
        assert torch.allclose(first[name], second[name], rtol=1e-6, atol=1e-7), name
    assert abs(first["loss_ws"].item() - second["loss_ws"].item()) > 1e-3 * first["loss_ws"].item()


def test_the_mil_term_alone_reaches_conv5_3_but_not_the_rpn():
    net = tiny_net()
    method = WSSDL(net)
    method.train()
    terms = method.train_step([strong_record()], weak_records())
    assert terms["loss_ws"] > 0
    terms["loss_ws"].backward()
    conv5_3 = net.backbone[28]
    assert isinstance(conv5_3, nn.Conv2d) and conv5_3.out_channels == 8 * 8
    assert conv5_3.weight.grad is not None and torch.isfinite(conv5_3.weight.grad).all()
    assert conv5_3.weight.grad.abs().sum() > 0
    assert net.cls_score.weight.grad.abs().sum() > 0
    # proposals are detached: the RPN head and the box regressor get nothing from the MIL term
    assert all(p.grad is None for p in net.rpn_head.parameters())
    assert net.bbox_pred.weight.grad is None


def test_empty_weak_set_gives_exactly_zero_weak_loss():
    method = WSSDL(tiny_net())
    method.train()
    for weak in ([], None):
        terms = method.train_step([strong_record()], weak)
        assert terms["loss_ws"].item() == 0.0
        assert torch.isfinite(terms["loss"]) and terms["loss"] > 0


class CountingSGD(torch.optim.SGD):
    """SGD that counts its steps (which optimizer each iteration stepped)."""

    def __init__(self, params) -> None:
        super().__init__(params, lr=1e-4)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def test_alternating_steps_one_optimizer_each_and_counts_weak_steps_for_alpha(monkeypatch):
    net = tiny_net()
    method = WSSDL(net, batching="alternating", alpha_step_size=1)
    alphas = []
    original = wssdl_method.mil_weak_loss

    def spy(logits, labels, alpha, *args, **kwargs):
        alphas.append(float(alpha))
        return original(logits, labels, alpha, *args, **kwargs)

    monkeypatch.setattr(wssdl_method, "mil_weak_loss", spy)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizers = {"strong": CountingSGD(params), "weak": CountingSGD(params)}
    batches = [([strong_record()], weak_records())] * 4
    trainer = SemiSupervisedTrainer("cpu", None, batches, net, method, optimizers, max_iterations=4)
    log = []
    trainer.add_event_handler(
        IterationEvents.MODEL_COMPLETED,
        lambda engine: log.append(
            (optimizers["strong"].steps, optimizers["weak"].steps, sorted(engine.state.output[0]))
        ),
    )
    trainer.run()
    strong_keys, weak_keys = sorted(["loss", *STRONG_TERMS]), ["loss", "loss_ws"]
    assert log == [
        (1, 0, strong_keys),
        (1, 1, weak_keys),
        (2, 1, strong_keys),
        (2, 2, weak_keys),
    ]
    # weak steps t_w = 0, 1 at iterations 1, 3: alpha = 1 - 0.99 * 0.9^(t_w) with one iteration per alpha step
    # (0.01, 0.109; counting all iterations would give 1 - 0.99 * 0.9^3 = 0.278 at iteration 3)
    assert alphas == pytest.approx([0.01, 1 - 0.99 * 0.9], abs=1e-7)
    assert [method.alpha(k) for k in (0, 1, 2, 10)] == pytest.approx([1 - 0.99 * 0.9**k for k in (0, 1, 2, 10)])


# --- §4: TensorFlow-1 Adam ----------------------------------------------------------------------------------------

THETA0 = np.array([0.5, -1.0, 2.0, 0.0])
GRADS = [np.array([0.5, -0.02, 0.1, 1.0]), np.array([0.3, 0.05, -0.2, 1.0]), np.array([-0.4, 0.01, 0.3, -2.0])]


def tf1_adam(theta, grads, lr=0.1, beta1=0.9, beta2=0.999, eps=0.1, weight_decay=0.0) -> list[np.ndarray]:
    """TensorFlow 1 AdamOptimizer: ε on the uncorrected √v, bias correction folded into lr_t."""
    m, v, out = np.zeros_like(theta), np.zeros_like(theta), []
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        lr_t = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        theta = theta - lr_t * m / (np.sqrt(v) + eps)
        out.append(theta)
    return out


def run_optimizer(optimizer_cls, grads, **kwargs) -> list[np.ndarray]:
    param = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_cls([param], **kwargs)
    out = []
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        out.append(param.detach().numpy().copy())
    return out


def test_tf1_adam_first_steps_equal_tensorflow_and_differ_from_torch_eps():
    expected = tf1_adam(THETA0, GRADS)
    got = run_optimizer(TF1Adam, GRADS, lr=0.1, eps=0.1)
    for step_got, step_expected in zip(got, expected):
        assert np.allclose(step_got, step_expected, rtol=0, atol=1e-12)
    plain = run_optimizer(torch.optim.Adam, GRADS, lr=0.1, eps=0.1)
    assert np.abs(plain[0] - expected[0]).max() > 1e-2


def test_tf1_adam_weight_decay_is_l2_added_to_the_gradient():
    expected = tf1_adam(THETA0, GRADS, weight_decay=0.05)
    got = run_optimizer(TF1Adam, GRADS, lr=0.1, eps=0.1, weight_decay=0.05)
    assert all(np.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(got, expected))


def test_tf1_adam_state_dict_round_trip_keeps_the_step_count():
    expected = tf1_adam(THETA0, GRADS)
    param = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
    optimizer = TF1Adam([param], lr=0.1, eps=0.1)
    for g in GRADS[:2]:
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    reloaded_param = param.detach().clone().requires_grad_(True)
    reloaded = TF1Adam([reloaded_param], lr=0.1, eps=0.1)
    reloaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert reloaded.param_groups[0]["tf_step"] == 2
    for p, opt in ((param, optimizer), (reloaded_param, reloaded)):
        p.grad = torch.tensor(GRADS[2], dtype=torch.float64)
        opt.step()
    assert torch.equal(param, reloaded_param)
    assert np.allclose(reloaded_param.detach().numpy(), expected[2], rtol=0, atol=1e-12)


def test_decay_weights_only_groups():
    frozen = nn.Conv2d(1, 2, 3)
    frozen.requires_grad_(False)
    conv, bn, linear = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Linear(3, 2)
    model = nn.Sequential(frozen, conv, bn, linear)
    decayed, plain = decay_weights_only(model, 5e-4)
    assert decayed["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(conv.weight), id(linear.weight)}
    assert {id(p) for p in plain["params"]} == {id(conv.bias), id(bn.weight), id(bn.bias), id(linear.bias)}
    # the detector with conv1_x/conv2_x frozen: 13 - 4 backbone convs + 3 RPN convs + fc6, fc7, cls_score, bbox_pred
    net = tiny_net(freeze_early=True)
    decayed, plain = decay_weights_only(net, 5e-4)
    assert len(decayed["params"]) == 16 and len(plain["params"]) == 16
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    listed = {id(p) for group in (decayed, plain) for p in group["params"]}
    assert listed == {id(p) for p in net.parameters() if p.requires_grad}
    assert id(net.backbone[0].weight) not in listed and id(net.backbone[7].bias) not in listed  # conv1_1, conv2_2


# --- §3: data pipeline --------------------------------------------------------------------------------------------

HEIGHT, WIDTH, BOX = 40, 60, [30, 10, 50, 20]  # bright rows 10:20, columns 30:50


@pytest.fixture
def bright_png(tmp_path):
    array = np.full((HEIGHT, WIDTH), 50, dtype=np.uint8)
    x1, y1, x2, y2 = BOX
    array[y1:y2, x1:x2] = 230
    path = tmp_path / "bus.png"
    Image.fromarray(array, mode="L").save(path)
    return str(path)


def bright_box(image: torch.Tensor) -> list[int]:
    """[x1, y1, x2, y2] (x2, y2 exclusive) of the pixels brighter than halfway between the extremes."""
    mask = (image[0] > (image.max() + image.min()) / 2).numpy()
    rows, cols = np.where(mask.any(axis=1))[0], np.where(mask.any(axis=0))[0]
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


def test_eval_pipeline_keeps_rows_as_rows_and_scales_to_unit_range(bright_png):
    out = wssdl_transforms("eval")({"image": bright_png, "box": [BOX], "label": [2], "image_class": 2})
    image = out["image"]
    assert isinstance(image, torch.Tensor) and image.shape == (1, HEIGHT, WIDTH) and image.dtype == torch.float32
    x1, y1, x2, y2 = BOX
    assert torch.allclose(image[:, y1:y2, x1:x2], torch.tensor(230 / 255))
    background = image.clone()
    background[:, y1:y2, x1:x2] = 50 / 255
    assert torch.allclose(background, torch.tensor(50 / 255))
    assert out["box"].dtype == torch.float32 and out["box"].tolist() == [[float(v) for v in BOX]]
    assert out["label"].dtype == torch.int64 and out["label"].tolist() == [2]
    assert out["image_class"].dtype == torch.int64 and out["image_class"].ndim == 0 and int(out["image_class"]) == 2


def test_strong_augmentation_flip_moves_the_box_with_the_bright_region(bright_png):
    transform = wssdl_transforms("strong")
    augment = transform.transforms[-1]
    assert isinstance(augment, WSSDLAugmentd)
    augment.flip_prob = 1.0
    x1, y1, x2, y2 = BOX
    flipped = [WIDTH - x2, y1, WIDTH - x1, y2]
    for seed in range(3):
        transform.set_random_state(seed=seed)
        out = transform({"image": bright_png, "box": [BOX], "label": [1]})
        assert out["image"].shape == (1, HEIGHT, WIDTH)
        assert out["image"].min() >= 0 and out["image"].max() <= 1
        assert out["box"].tolist() == [[float(v) for v in flipped]]
        assert bright_box(out["image"]) == flipped


def test_weak_augmentation_crops_within_the_official_limits(bright_png):
    transform = wssdl_transforms("weak")
    cut_h, cut_w = math.floor(0.05 * HEIGHT), math.floor(0.05 * WIDTH)  # 2 and 3
    shapes = set()
    for seed in range(20):
        transform.set_random_state(seed=seed)
        out = transform({"image": bright_png, "image_class": 1})
        _, height, width = out["image"].shape
        assert HEIGHT - 2 * cut_h <= height <= HEIGHT - 1 and WIDTH - 2 * cut_w <= width <= WIDTH - 1
        assert out["image"].min() >= 0 and out["image"].max() <= 1
        assert out["image_class"].ndim == 0 and out["image_class"].dtype == torch.int64
        shapes.add((height, width))
    assert len(shapes) > 1


# --- §7: evaluation -----------------------------------------------------------------------------------------------


class FixedDetector(nn.Module):
    """Returns the detections listed for each image height; records train mode and the inputs' shapes."""

    def __init__(self, table: dict[int, dict]) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.table, self.calls = table, []

    def forward(self, images):
        self.calls.append((self.training, [tuple(image.shape) for image in images]))
        out = []
        for image in images:
            entry = self.table[int(image.shape[-2])]
            out.append(
                {
                    "boxes": torch.tensor(entry["boxes"], dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.tensor(entry["labels"], dtype=torch.int64),
                    "scores": torch.tensor(entry["scores"], dtype=torch.float32) * self.scale.detach(),
                }
            )
        return out


def record(name, height, boxes, labels, image_class):
    return {
        "id": name,
        "image": torch.zeros(1, height, 30),
        "box": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "label": torch.tensor(labels, dtype=torch.int64),
        "image_class": torch.tensor(image_class),
    }


def test_detection_evaluator_report_and_writer(tmp_path):
    table = {
        20: {"boxes": [[2, 2, 10, 10]], "labels": [1], "scores": [0.9]},  # a: benign hit
        22: {"boxes": [[0, 0, 8, 8]], "labels": [2], "scores": [0.4]},  # b: malignant, below 0.5 (top1 hit)
        24: {"boxes": [[12, 12, 20, 20], [12, 12, 20, 20]], "labels": [1, 2], "scores": [0.8, 0.7]},  # c
        26: {"boxes": [[1, 1, 5, 5], [6, 6, 9, 9]], "labels": [2, 1], "scores": [0.6, 0.3]},  # d: normal, one FP
        28: {"boxes": [[5, 5, 15, 15]], "labels": [1], "scores": [0.5]},  # e: benign hit at exactly 0.5
    }
    records = [
        record("a", 20, [[2, 2, 10, 10]], [1], 1),
        record("b", 22, [[0, 0, 8, 8]], [2], 2),
        record("c", 24, [[0, 0, 10, 10], [12, 12, 20, 20]], [1, 2], 2),
        record("d", 26, [], [], 0),
        record("e", 28, [[5, 5, 15, 15]], [1], 1),
    ]
    net = FixedDetector(table)
    report = DetectionReport(tmp_path / "eval", checkpoint=tmp_path / "model_final.pt", n_resamples=50, figures=1)
    writer = DetectionWriter(tmp_path / "dets", score_threshold=0.5)
    evaluator = DetectionEvaluator(
        "cpu",
        [records[:2], records[2:4], records[4:]],
        net,
        epoch_length=3,
        key_val_metric={"val_corloc": CorLocMetric()},
        val_handlers=[report, writer],
    )
    evaluator.run()
    # any: benign units a (hit), c (miss: its benign detection is on the malignant box), e (hit);
    # malignant units b (miss: score 0.4), c (hit) -> 3 / 5
    assert evaluator.state.metrics["val_corloc"] == pytest.approx(0.6)
    assert [training for training, _ in net.calls] == [False, False, False]
    assert net.calls[0][1] == [(1, 20, 30), (1, 22, 30)]
    metrics = json.loads((tmp_path / "eval" / "model_final" / "metrics.json").read_text())
    summary = metrics["summary"]
    assert summary["images"] == 5 and summary["lesion_images"] == 4
    assert summary["corloc_any"]["n"] == 5 and summary["corloc_any"]["mean"] == pytest.approx(0.6)
    assert summary["corloc_any"]["per_class"] == pytest.approx({"benign": 2 / 3, "malignant": 0.5})
    assert summary["corloc_any"]["ci_low"] <= 0.6 <= summary["corloc_any"]["ci_high"]
    # top1: a hit, b hit (no threshold), c miss (top is benign, on the malignant box), e hit -> 3 / 4
    assert summary["corloc_top1"]["n"] == 4 and summary["corloc_top1"]["mean"] == pytest.approx(0.75)
    assert summary["fp_per_normal_image"] == {"n": 1, "mean": 1.0}
    detections = json.loads((tmp_path / "eval" / "model_final" / "detections.json").read_text())
    assert [d["id"] for d in detections] == ["a", "b", "c", "d", "e"]
    assert detections[2]["labels"] == [1, 2] and detections[2]["scores"] == pytest.approx([0.8, 0.7])
    assert (tmp_path / "eval" / "model_final" / "detections.png").is_file()
    written = sorted(p.name for p in (tmp_path / "dets").iterdir())
    assert written == [f"{name}_det.json" for name in "abcde"]
    d = json.loads((tmp_path / "dets" / "d_det.json").read_text())
    assert d["id"] == "d" and d["boxes"] == [[1.0, 1.0, 5.0, 5.0]] and d["labels"] == [2]
    assert d["scores"] == pytest.approx([0.6])
    assert json.loads((tmp_path / "dets" / "b_det.json").read_text())["boxes"] == []


# --- §4 self-training ---------------------------------------------------------------------------------------------


def test_pseudo_box_lists_loads_the_checkpoint_and_moves_the_confident_agreeing_images(tmp_path):
    table = {
        10: {"boxes": [[0, 0, 4, 4], [1, 2, 5, 6]], "labels": [1, 2], "scores": [0.3, 0.9]},  # w0: agrees (2)
        11: {"boxes": [[0, 0, 4, 4]], "labels": [1], "scores": [0.8]},  # w1: class 2, detection benign
        12: {"boxes": [[2, 2, 6, 6]], "labels": [1], "scores": [0.6]},  # w2: agrees (1), lowest score
        13: {"boxes": [], "labels": [], "scores": []},  # w3: no detection
        14: {"boxes": [[3, 3, 9, 9]], "labels": [2], "scores": [0.95]},  # w4: agrees (2), best
    }
    classes = [2, 2, 1, 2, 2]
    weak = [{"id": f"w{i}", "image": f"/data/w{i}.png", "image_class": c, "h": 10 + i} for i, c in enumerate(classes)]
    strong = [{"id": "s0", "image": "/data/s0.png", "box": [[1, 1, 3, 3]], "label": [1], "image_class": 1}]
    trained = FixedDetector(table)
    with torch.no_grad():
        trained.scale.fill_(0.5)
    checkpoint = tmp_path / "models" / "model_final.pt"
    checkpoint.parent.mkdir()
    torch.save(trained.state_dict(), checkpoint)

    def transform(entry):
        return {**entry, "image": torch.zeros(1, entry["h"], 12)}

    fresh = FixedDetector(table)  # scale 1 until the checkpoint is loaded
    out_file = tmp_path / "lists" / "self_training.json"
    lists = pseudo_box_lists(fresh, checkpoint, strong, weak, 0.5, transform, out_file=out_file)
    assert [training for training, _ in fresh.calls] == [False] * 5
    assert [shape for _, shapes in fresh.calls for shape in shapes] == [(1, 10 + i, 12) for i in range(5)]
    # candidates w0 (0.45), w2 (0.30), w4 (0.475); floor(0.5 * 5) = 2 -> w4 and w0, in list order
    assert [e["id"] for e in lists["labeled"]] == ["s0", "w0", "w4"]
    assert [e["id"] for e in lists["unlabeled"]] == ["w1", "w2", "w3"]
    w0, w4 = lists["labeled"][1:]
    assert w0["box"] == [[1.0, 2.0, 5.0, 6.0]] and w0["label"] == [2] and w0["pseudo_score"] == pytest.approx(0.45)
    assert w4["box"] == [[3.0, 3.0, 9.0, 9.0]] and w4["pseudo_score"] == pytest.approx(0.475)
    assert w0["image"] == "/data/w0.png" and lists["labeled"][0] == strong[0]
    assert json.loads(out_file.read_text()) == json.loads(json.dumps(lists))
    with pytest.raises(FileNotFoundError, match="initial model"):
        pseudo_box_lists(fresh, tmp_path / "missing.pt", strong, weak, 0.5, transform)


def test_anchor_types_that_never_fit_the_resized_image_are_reported(caplog):
    """At 128-160 px, anchors ×0.25 include 184×96 and 88×176: never inside an image, so never trained (warned);
    ×0.15 and the official 600/1000 configuration fit."""
    with caplog.at_level(logging.WARNING, logger="semizoo.networks.faster_rcnn"):
        WSSDLFasterRCNN(width=8, anchor_scale=0.25, min_size=128, max_size=160)
    assert "(184.0, 96.0)" in caplog.text and "(88.0, 176.0)" in caplog.text and "lower anchor_scale" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="semizoo.networks.faster_rcnn"):
        WSSDLFasterRCNN(width=8, anchor_scale=0.15, min_size=128, max_size=160)
        WSSDLFasterRCNN(width=8)
    assert "never inside" not in caplog.text


def test_resnet_c4_option_trains_and_detects():
    """ResNet-18 C4 (stem...layer3 backbone with 256 channels, layer4 + average pooling as box head): one combined
    step back-propagates into layer4 and the RPN, and eval returns per-image detections in input coordinates."""
    net = tiny_net(backbone="resnet18")
    assert net.rpn_head.conv[0][0].in_channels == 256 and net.cls_score.in_features == 512
    method = WSSDL(net, alpha_step_size=1)
    method.train()
    terms = method.train_step([strong_record()], weak_records())
    assert all(torch.isfinite(terms[name]) for name in (*STRONG_TERMS, "loss_ws"))
    terms["loss"].backward()
    assert net.box_head.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert net.rpn_head.cls_logits.weight.grad.abs().sum() > 0
    net.eval()
    (detection,) = net([phantom(90, 120, (20, 20, 60, 50), 5)])
    assert set(detection) == {"boxes", "labels", "scores"}
    boxes = detection["boxes"]
    assert boxes.shape[1] == 4 and bool((boxes[:, 2] <= 120).all() and (boxes[:, 3] <= 90).all())
