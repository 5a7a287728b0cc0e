"""EPL's DeepLabv3+ (epl.md §2): output stride 16 with multi-grid dilations, bias-free convs, backbone loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from semizoo.networks import DeepLabV3Plus, ResNet50V1c


def test_logits_at_input_size_with_stride_4_and_16_features():
    torch.manual_seed(0)
    net = DeepLabV3Plus(in_channels=1, num_classes=4).eval()
    x = torch.randn(2, 1, 64, 96)
    low, high = net.backbone(x)
    assert low.shape == (2, 256, 16, 24) and high.shape == (2, 2048, 4, 6)
    with torch.no_grad():
        assert net(x).shape == (2, 4, 64, 96)


def test_backbone_layout_is_resnet50_v1c_with_dilated_stage_4():
    backbone = ResNet50V1c(1)
    assert [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    stem = [m for m in backbone.conv1 if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.stride) for m in stem] == [
        (1, 64, (2, 2)),
        (64, 64, (1, 1)),
        (64, 128, (1, 1)),
    ]
    assert [block.conv2.dilation for block in backbone.layer4] == [(2, 2), (4, 4), (8, 8)]
    assert all(block.conv2.stride == (1, 1) for block in backbone.layer4)
    assert backbone.layer2[0].conv2.stride == (2, 2) and backbone.layer3[0].conv2.stride == (2, 2)
    assert backbone.layer2[0].conv1.stride == (1, 1)  # the stride sits on the 3x3 conv
    net = DeepLabV3Plus(1, 2)
    biased = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert biased == ["classifier"]
    assert net.classifier.out_channels == 2 and net.reduce[0].out_channels == 48


def test_load_backbone_copies_shape_matching_tensors_only(tmp_path):
    torch.manual_seed(1)
    imagenet = ResNet50V1c(in_channels=3)
    state = {"backbone." + k: v for k, v in imagenet.state_dict().items()}
    path = tmp_path / "resnet50_v1c.pth"
    torch.save({"state_dict": state}, path)
    torch.manual_seed(2)
    net = DeepLabV3Plus(1, 4)
    first_conv = net.backbone.conv1[0].weight.clone()
    head = net.classifier.weight.clone()
    loaded = net.load_backbone(path)
    assert "conv1.0.weight" not in loaded  # 3 input channels vs 1: kept at its own initialisation
    assert len(loaded) == len(imagenet.state_dict()) - 1
    assert torch.equal(net.backbone.conv1[0].weight, first_conv)
    assert torch.equal(net.backbone.layer4[2].conv3.weight, imagenet.layer4[2].conv3.weight)
    assert torch.equal(net.classifier.weight, head)
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no tensor matches"):
        net.load_backbone(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        DeepLabV3Plus(1, 4, pretrained=str(tmp_path / "missing.pth"))
