"""``python -m semizoo fetch-weights BUNDLE``: a bundle's released weights, hash-checked and written atomically.

``BUNDLE/large_files.yml`` lists the files in the format of MONAI's ``download_large_files`` (``path``, ``url``,
``hash_val``, ``hash_type``); a bundle that publishes no weights has no such file. Each file is streamed into a
temporary file beside its target, its length checked against ``Content-Length`` and its hash against ``hash_val``,
and only then renamed into place: a truncated, corrupted or wrong download is refused with a message naming the URL
and the problem, and nothing is written. A file already present with the right hash is kept.

Hash types: ``md5``, ``sha1``, ``sha256``, ``sha512`` (MONAI's) and ``git-blob-sha1``, the id git gives a file
(sha1 of ``"blob <size>\\0"`` + its bytes). SS-Net's authors publish their checkpoints in their GitHub repository,
so the blob ids of that tree are the hashes they publish (bundle-checklist.md §4); MONAI's downloader does not know
this type, ``fetch-weights`` does.

An optional ``official_checkpoints: {setting: path}`` mapping names, per datalist setting, the official checkpoint
that :func:`semizoo.convert.convert_official_checkpoint` turns into ``models/model.pt`` (the bundle's default
setting unless ``setting`` is given).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .bundle_paths import bundle_path

__all__ = ["WeightsError", "file_hash", "download_verified", "fetch_weights", "read_large_files"]

logger = logging.getLogger(__name__)

HASH_TYPES = ("md5", "sha1", "sha256", "sha512", "git-blob-sha1")
CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """A weight file that cannot be fetched or does not verify; the message names the file or URL."""


def _hasher(hash_type: str, size: int) -> Any:
    if hash_type == "git-blob-sha1":
        hasher = hashlib.sha1()
        hasher.update(f"blob {size}\0".encode())
        return hasher
    return hashlib.new(hash_type)


def file_hash(path: str | os.PathLike, hash_type: str) -> str:
    """Hex digest of ``path`` with ``hash_type`` (one of :data:`HASH_TYPES`)."""
    hasher = _hasher(hash_type, os.path.getsize(path))
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def read_large_files(bundle: str | os.PathLike) -> tuple[Path, list[dict[str, str]], dict[str, str]]:
    """``(bundle folder, entries, official_checkpoints)`` of ``BUNDLE/large_files.yml``, each entry checked.

    Raises:
        WeightsError: no such file (the bundle publishes no weights), or an entry without a field, with an unknown
            hash type or with a path outside the bundle.
    """
    import yaml

    root = bundle_path(bundle)
    listing = root / "large_files.yml"
    if not listing.is_file():
        raise WeightsError(
            f"{root.name}: publishes no weights (no large_files.yml); train it (docs/README.md) or place a "
            "state_dict of network_def at models/model.pt"
        )
    try:
        content = yaml.safe_load(listing.read_text()) or {}
    except yaml.YAMLError as error:
        raise WeightsError(f"{listing}: not valid YAML ({error})") from error
    entries = content.get("large_files") or []
    for entry in entries:
        missing = [key for key in ("path", "url", "hash_val", "hash_type") if not entry.get(key)]
        if missing:
            raise WeightsError(f"{listing}: entry {entry.get('path')!r} lacks {missing}")
        if entry["hash_type"] not in HASH_TYPES:
            raise WeightsError(f"{listing}: {entry['path']}: hash_type {entry['hash_type']!r} not in {HASH_TYPES}")
        if not (root / entry["path"]).resolve().is_relative_to(root.resolve()):
            raise WeightsError(f"{listing}: {entry['path']} lies outside the bundle")
    official = dict(content.get("official_checkpoints") or {})
    unknown = sorted(set(official.values()) - {entry["path"] for entry in entries})
    if unknown:
        raise WeightsError(f"{listing}: official_checkpoints name files not in large_files: {unknown}")
    return root, entries, official


def download_verified(url: str, target: str | os.PathLike, hash_val: str, hash_type: str, timeout: float = 60) -> bool:
    """Download ``url`` to ``target`` if it is not already there with ``hash_val``; ``True`` when downloaded.

    Raises:
        WeightsError: unreachable URL, truncated transfer or hash mismatch; ``target`` is then left as it was.
    """
    target = Path(target)
    if target.is_file() and file_hash(target, hash_type) == hash_val.lower():
        logger.info("%s: present, %s verified", target, hash_type)
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            received, expected = _stream(url, out, timeout)
        if expected is not None and received != expected:
            raise WeightsError(f"{url}: truncated download ({received} of {expected} bytes); nothing written")
        actual = file_hash(temporary, hash_type)
        if actual != hash_val.lower():
            raise WeightsError(
                f"{url}: {hash_type} {actual} != expected {hash_val} (corrupted or wrong file, {received} bytes); "
                f"refused, nothing written to {target}"
            )
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    logger.info("%s: downloaded from %s, %s verified", target, url, hash_type)
    return True


def _stream(url: str, out: Any, timeout: float) -> tuple[int, int | None]:
    """Copy ``url`` into ``out``; ``(bytes received, Content-Length or None)``."""
    received, expected = 0, None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None else None
            while True:
                try:
                    chunk = response.read(CHUNK)
                except http.client.IncompleteRead as error:  # the server closed before Content-Length
                    out.write(error.partial)
                    received += len(error.partial)
                    break
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise WeightsError(f"{url}: download failed ({error}); nothing written") from error
    return received, expected


def fetch_weights(bundle: str | os.PathLike, setting: str | None = None, timeout: float = 60) -> list[str]:
    """Fetch every file of ``bundle``'s ``large_files.yml``; convert the setting's official checkpoint if listed.

    Returns one line per file (downloaded or already present) and, with ``official_checkpoints``, the written
    ``models/model.pt``.
    """
    root, entries, official = read_large_files(bundle)
    lines = []
    for entry in entries:
        fetched = download_verified(entry["url"], root / entry["path"], entry["hash_val"], entry["hash_type"], timeout)
        lines.append(f"{entry['path']}: {'downloaded' if fetched else 'present'}, {entry['hash_type']} verified")
    if official:
        if setting is None:
            setting = json.loads((root / "configs" / "train.json").read_text()).get("setting")
        if setting not in official:
            raise WeightsError(f"{root.name}: no official checkpoint for setting {setting!r} (has {sorted(official)})")
        from .convert import convert_official_checkpoint

        written = convert_official_checkpoint(root / official[setting], root, root / "models" / "model.pt")
        lines.append(f"{written.relative_to(root)}: converted from {official[setting]} (setting {setting})")
    return lines
