"""Reference architectures of the methods (ssnet.md §2) and the loader of official checkpoints."""

from .official import load_official_weights, official_to_semizoo_key
from .ssnet import SSNetHeads, SSNetNetwork
from .unet2d import SSL4MISUNet
from .vnet import UAMTVNet

__all__ = ["SSL4MISUNet", "UAMTVNet", "SSNetHeads", "SSNetNetwork", "load_official_weights", "official_to_semizoo_key"]
