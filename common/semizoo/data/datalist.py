"""Datalist JSON files written by ``python -m semizoo prepare``: reading one list with absolute paths."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .errors import DataError

__all__ = ["load_split", "find_prepared_root", "REPORT_NAME", "PATH_KEYS"]

logger = logging.getLogger(__name__)
REPORT_NAME = "prepare_report.json"
PATH_KEYS = ("image", "label")


def find_prepared_root(datalist: str | os.PathLike) -> Path:
    """The prepared DIR of ``datalist``: the nearest parent folder holding ``prepare_report.json``."""
    path = Path(datalist).resolve()
    for parent in path.parents:
        if (parent / REPORT_NAME).is_file():
            return parent
    raise DataError(datalist, f"no {REPORT_NAME} in any parent folder; pass base_dir or run `semizoo prepare`")


def load_split(
    datalist: str | os.PathLike, key: str, base_dir: str | os.PathLike | None = None, missing_ok: bool = False
) -> list[dict[str, Any]]:
    """Entries of list ``key`` of ``datalist`` with ``image``/``label`` joined to ``base_dir``.

    Args:
        datalist: a ``datalists/<setting>.json`` (or ``datalist.json``) file.
        key: ``labeled``, ``unlabeled``, ``validation`` or ``test``.
        base_dir: folder the relative paths start from; ``None``: the folder holding ``prepare_report.json``.
        missing_ok: return ``[]`` with a WARNING when the list or the datalist file is absent (no unlabeled data;
            MONAI Label, which overrides ``train#dataset#data`` and has no datalist file).

    Raises:
        DataError: unreadable datalist, missing list (unless ``missing_ok``), or an entry without ``image``.
    """
    path = Path(datalist)
    if missing_ok and not path.exists():
        logger.warning("%s does not exist: no %r list, using none.", path, key)
        return []
    try:
        content = json.loads(path.read_text())
    except OSError as error:
        raise DataError(path, f"cannot read datalist ({error.strerror})") from error
    except ValueError as error:
        raise DataError(path, f"not valid JSON ({error})") from error
    if key not in content or content[key] is None:
        if missing_ok:
            logger.warning("%s has no %r list: using none.", path, key)
            return []
        raise DataError(
            path, f"no {key!r} list (lists: {sorted(k for k, v in content.items() if isinstance(v, list))})"
        )
    root = Path(base_dir) if base_dir is not None else find_prepared_root(path)
    entries = []
    for index, entry in enumerate(content[key]):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(path, f"entry {index} of {key!r} has no 'image'")
        entry = dict(entry)
        for name in PATH_KEYS:
            if isinstance(entry.get(name), str):
                entry[name] = str(root / entry[name])
        entries.append(entry)
    return entries
