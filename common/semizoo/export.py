"""``python -m semizoo export-bundle BUNDLE --out DIR``: a self-contained bundle with ``semizoo`` vendored inside.

semizoo is not on PyPI, so a bundle that imports it runs only where the repository is installed. The export copies
the bundle (configs, docs, license, ``large_files.yml``, whatever ``models/`` holds) and the ``semizoo`` package
into ``DIR/semizoo``; ``python -m monai.bundle run`` puts the bundle root on ``sys.path``, so the configs'
``$import semizoo`` and ``semizoo.*`` targets resolve to the vendored copy (bundle-checklist.md §7). MONAI does so
only in ``run``, after ``initialize``, and the configs' imports are bound at the first expression evaluated, so each
exported config's ``initialize`` expressions move to the front of its run lists (``run``, ``training``,
``evaluating``, ``inferring``): the first expression is then evaluated with the bundle root already on the path.
The exported ``metadata.json`` pins only PyPI packages (``semizoo`` is dropped, ``torchvision`` added for the
networks that use it) and records the vendored revision. MONAI Label, MONAI Deploy and zoo-style downloads use this
form.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import metadata as package_metadata
from pathlib import Path

from .bundle_paths import bundle_path

__all__ = ["export_bundle"]

SKIPPED = ("__pycache__", "*.pyc", "eval", "checkpoints", "*.part", ".*.tmp")
RUN_LISTS = ("run", "training", "evaluating", "inferring")


def _initialize_at_run(config: Path) -> None:
    """Move ``config``'s ``initialize`` expressions to the front of its run lists (module docstring)."""
    content = json.loads(config.read_text())
    steps = content.get("initialize") or []
    runs = [key for key in RUN_LISTS if isinstance(content.get(key), list)]
    if not steps or not runs:
        return
    for key in runs:
        content[key] = list(steps) + content[key]
    content["initialize"] = []
    config.write_text(json.dumps(content, indent=4) + "\n")


def _revision(package: Path) -> str:
    """The git commit of the repository holding ``package`` (with ``-dirty`` for local changes), else ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=package, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def export_bundle(bundle: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``bundle`` with ``semizoo`` vendored to ``out``; returns ``out``.

    Raises:
        FileExistsError: ``out`` exists and is not empty (unless ``overwrite``).
    """
    import semizoo

    source, out = bundle_path(bundle), Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    package = Path(semizoo.__file__).resolve().parent
    staging = out.with_name(f".{out.name}.export-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(*SKIPPED))
        shutil.copytree(package, staging / "semizoo", ignore=shutil.ignore_patterns(*SKIPPED))
        revision = _revision(package)
        (staging / "semizoo" / "VENDORED").write_text(
            f"semizoo {semizoo.__version__} vendored from revision {revision} by `python -m semizoo export-bundle`.\n"
        )
        for config in sorted((staging / "configs").glob("*.json")):
            _initialize_at_run(config)
        meta_path = staging / "configs" / "metadata.json"
        meta = json.loads(meta_path.read_text())
        packages = {k: v for k, v in meta.get("required_packages_version", {}).items() if k != "semizoo"}
        packages.setdefault("torchvision", package_metadata.version("torchvision"))
        meta["required_packages_version"] = packages
        meta["semizoo_vendored"] = f"{semizoo.__version__} ({revision})"
        meta_path.write_text(json.dumps(meta, indent=4) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
