"""Where a bundle lives: a folder path, or a bundle name under the repository's ``bundles/``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["bundle_path", "BUNDLES_DIR"]

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"


def bundle_path(bundle: str | os.PathLike) -> Path:
    """A bundle folder (one holding ``configs/``) from a path or a name under ``bundles/``.

    Raises:
        FileNotFoundError: naming ``bundle`` when it is neither.
    """
    path = Path(bundle)
    if (path / "configs").is_dir():
        return path
    candidate = BUNDLES_DIR / os.fspath(bundle)
    if (candidate / "configs").is_dir():
        return candidate
    raise FileNotFoundError(f"{bundle}: not a bundle folder nor a bundle name under bundles/")
