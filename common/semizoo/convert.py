"""``python -m semizoo convert-official CKPT --bundle B --out B/models/model.pt``: official weights into a bundle.

Builds the bundle's ``network_def`` from ``configs/inference.json``, loads an official UA-MT/SSL4MIS/SS-Net
checkpoint into it with :func:`semizoo.networks.load_official_weights` (which lists bad keys before loading
anything), and writes a plain ``state_dict`` atomically, as training would.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .bundle_paths import bundle_path
from .networks.official import load_official_weights

__all__ = ["convert_official_checkpoint"]


def convert_official_checkpoint(
    checkpoint: str | os.PathLike, bundle: str | os.PathLike, out: str | os.PathLike
) -> Path:
    """Load ``checkpoint`` into ``bundle``'s ``network_def`` and save its ``state_dict`` to ``out``; returns ``out``."""
    from monai.bundle import ConfigParser

    root = bundle_path(bundle)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["bundle_root"] = str(root)
    network = parser.get_parsed_content("network_def", instantiate=True)
    load_official_weights(network, checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(network.state_dict(), temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, out)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return out
