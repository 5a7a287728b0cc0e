"""Reference architectures of the methods (ssnet.md §2), the loader of official checkpoints and network helpers."""

from .action import ActionDistillHeads, RepresentationHead, logit_windows, pyramid_features
from .deeplab import DeepLabV3Plus, ResNet50V1c
from .faster_rcnn import WSSDLFasterRCNN
from .official import load_official_weights, official_to_semizoo_key
from .pair import NetworkPair
from .ssnet import SSNetHeads, SSNetNetwork
from .unet2d import SSL4MISUNet
from .utils import ema_decay, ema_update_, frozen_copy, load_weights, read_state_dict, unwrap
from .vnet import UAMTVNet

__all__ = [
    "SSL4MISUNet",
    "UAMTVNet",
    "SSNetHeads",
    "SSNetNetwork",
    "load_official_weights",
    "official_to_semizoo_key",
    "unwrap",
    "frozen_copy",
    "ema_decay",
    "ema_update_",
    "load_weights",
    "read_state_dict",
    "ActionDistillHeads",
    "RepresentationHead",
    "logit_windows",
    "pyramid_features",
    "DeepLabV3Plus",
    "ResNet50V1c",
    "NetworkPair",
    "WSSDLFasterRCNN",
]
