"""Load checkpoints saved by the official UA-MT, SSL4MIS and SS-Net code into semizoo's networks.

The official scripts save ``model.state_dict()`` directly (no wrapper dict, no ``module.`` prefix). Their
key names (facts read from the official sources) are renamed to semizoo's:

============================================================  ==============================================
official (UA-MT ``code/networks/vnet.py`` @88ed29a)             semizoo ``UAMTVNet``
============================================================  ==============================================
``block_{one..nine}.conv.{i}``                                  ``stage{1..9}.{i}``
``block_{one..four}_dw.conv.{i}``                               ``down{1..4}.{i}``
``block_{five..eight}_up.conv.{i}``                             ``up{5..8}.{i}``
``out_conv``                                                    ``head``
SS-Net LA (``code/networks/VNet.py`` @c0a8bf6): the same under ``encoder.``/``decoder.``
============================================================  ==============================================

==============================================================  ============================================
official (SSL4MIS ``code/networks/unet.py`` @06df604)             semizoo ``SSL4MISUNet``
==============================================================  ============================================
``encoder.in_conv.conv_conv.{0,1,4,5}``                           ``encoder.0.{conv1,norm1,conv2,norm2}``
``encoder.down{k}.maxpool_conv.1.conv_conv.{0,1,4,5}``            ``encoder.{k}.block.{conv1,norm1,conv2,norm2}``
``decoder.up{k}.conv1x1``                                         ``decoder.{k-1}.reduce``
``decoder.up{k}.conv.conv_conv.{0,1,4,5}``                        ``decoder.{k-1}.block.{conv1,norm1,conv2,norm2}``
``decoder.out_conv``                                              ``head``
==============================================================  ============================================

SS-Net's heads (``projection_head``, ``prediction_head``, ``contrastive_class_selector_{c}``,
``contrastive_class_selector_memory{c}``) become ``heads.projection``, ``heads.prediction``,
``heads.selector.{c}`` and ``heads.memory_selector.{c}`` of a model that has ``heads`` (its backbone then
lives under ``backbone.``); a model without heads ignores them.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from typing import Callable, Mapping

from torch import Tensor, nn

from .utils import read_state_dict

__all__ = ["load_official_weights", "official_to_semizoo_key"]

logger = logging.getLogger(__name__)

_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
_UNET_CONV_BLOCK = {"0": "conv1", "1": "norm1", "4": "conv2", "5": "norm2"}

_HEAD_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"^projection_head\.(.+)$"), lambda m: f"projection.{m[1]}"),
    (re.compile(r"^prediction_head\.(.+)$"), lambda m: f"prediction.{m[1]}"),
    (re.compile(r"^contrastive_class_selector_memory(\d+)\.(.+)$"), lambda m: f"memory_selector.{m[1]}.{m[2]}"),
    (re.compile(r"^contrastive_class_selector_(\d+)\.(.+)$"), lambda m: f"selector.{m[1]}.{m[2]}"),
]


def _vnet_rule(m: re.Match) -> str:
    number, kind, rest = _NUMBERS[m[1]], m[2], m[3]
    prefix = {"": "stage", "_dw": "down", "_up": "up"}[kind or ""]
    return f"{prefix}{number}.{rest}"


def _unet_block(index: str, tail: str) -> str:
    if index not in _UNET_CONV_BLOCK:
        raise KeyError(index)
    return f"{_UNET_CONV_BLOCK[index]}.{tail}"


_BACKBONE_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"^(?:encoder\.|decoder\.)?block_(\w+?)(_dw|_up)?\.conv\.(.+)$"), _vnet_rule),
    (re.compile(r"^(?:encoder\.|decoder\.)?out_conv\.(.+)$"), lambda m: f"head.{m[1]}"),
    (re.compile(r"^encoder\.in_conv\.conv_conv\.(\d+)\.(.+)$"), lambda m: f"encoder.0.{_unet_block(m[1], m[2])}"),
    (
        re.compile(r"^encoder\.down(\d)\.maxpool_conv\.1\.conv_conv\.(\d+)\.(.+)$"),
        lambda m: f"encoder.{m[1]}.block.{_unet_block(m[2], m[3])}",
    ),
    (re.compile(r"^decoder\.up(\d)\.conv1x1\.(.+)$"), lambda m: f"decoder.{int(m[1]) - 1}.reduce.{m[2]}"),
    (
        re.compile(r"^decoder\.up(\d)\.conv\.conv_conv\.(\d+)\.(.+)$"),
        lambda m: f"decoder.{int(m[1]) - 1}.block.{_unet_block(m[2], m[3])}",
    ),
]


def official_to_semizoo_key(key: str) -> tuple[str, str] | None:
    """``(part, name)`` for an official key: part ``"backbone"`` or ``"heads"``; ``None`` when unknown."""
    for rules, part in ((_BACKBONE_RULES, "backbone"), (_HEAD_RULES, "heads")):
        for pattern, rename in rules:
            match = pattern.match(key)
            if match:
                try:
                    return part, rename(match)
                except KeyError:
                    return None
    return None


def load_official_weights(model: nn.Module, state_dict_or_path: Mapping[str, Tensor] | str | os.PathLike) -> nn.Module:
    """Load an official UA-MT/SSL4MIS/SS-Net checkpoint into ``model`` (renaming keys as the module doc says).

    Args:
        model: ``SSL4MISUNet``/``UAMTVNet``, or a module with ``backbone`` (one of those) and optional ``heads``.
        state_dict_or_path: the official ``state_dict`` or the path of a ``.pth`` file holding one.

    Returns:
        ``model``, loaded in place.

    Raises:
        ValueError: listing the model keys the checkpoint lacks, the checkpoint keys the model cannot take and
            shape mismatches, before anything is loaded. Heads in the checkpoint are skipped (with a log line)
            when the model has none; ``num_batches_tracked`` buffers absent from PyTorch 0.4.0 files are kept.
    """
    official = read_state_dict(state_dict_or_path, "official checkpoint")
    has_heads = isinstance(getattr(model, "heads", None), nn.Module)
    backbone_prefix = "backbone." if isinstance(getattr(model, "backbone", None), nn.Module) else ""
    target = model.state_dict()
    mapped: "OrderedDict[str, Tensor]" = OrderedDict()
    unexpected, skipped_heads = [], 0
    for key, value in official.items():
        renamed = official_to_semizoo_key(key)
        if renamed is None:
            unexpected.append(key)
            continue
        part, name = renamed
        if part == "heads":
            if not has_heads:
                skipped_heads += 1
                continue
            name = f"heads.{name}"
        else:
            name = backbone_prefix + name
        if name not in target:
            unexpected.append(key)
            continue
        mapped[name] = value
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in mapped.items()
        if tuple(v.shape) != tuple(target[k].shape)
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"cannot load the official checkpoint into {type(model).__name__}: "
            f"missing {missing or 'none'}; unexpected {unexpected or 'none'}; shape mismatches {shapes or 'none'}."
        )
    for key in target:  # keep the model's counters where an old checkpoint has none
        mapped.setdefault(key, target[key])
    model.load_state_dict(mapped, strict=True)
    if skipped_heads:
        logger.info("skipped %d SS-Net head tensors: %s has no heads.", skipped_heads, type(model).__name__)
    return model
