"""Deterministic phantoms in the raw public layout of each dataset (datasets.md §4).

``generate("acdc", out)`` writes ``out/database/training/patientNNN/…``; ``generate("la", out)`` writes
``out/<ID>/lgemri.nrrd`` and ``laendo.nrrd``; ``generate("mnms", out)`` writes ``out/OpenDataset/…`` with the
information CSV; ``generate("busi", out)`` writes ``out/Dataset_BUSI_with_GT/…``; ``generate("udiat", out)`` writes
``out/original``, ``out/GT`` and ``out/DatasetB.xlsx``; ``generate("snubh", out)`` writes the VOC layout
(``TIFFImages``, ``Annotations``, ``ImageSets/Main``); ``generate("bus", out)`` writes the three breast ultrasound
phantoms under ``out/busi``, ``out/udiat`` and ``out/snubh`` (each a complete phantom folder). Case ``k`` draws from
``Generator(PCG64(SeedSequence([seed, DATASET_CODES[dataset], k])))``, so it does not depend on the number of cases,
and files are byte-identical across runs. ``out/semizoo_phantom.json`` records the arguments and the generator
version; a non-empty ``out`` without it is refused so that user data is never overwritten.
"""

from __future__ import annotations

import json
import numbers
import os
import shutil
from pathlib import Path

from . import acdc, busi, la, mnms, snubh, udiat
from .common import DATASET_CODES

__all__ = ["generate", "DATASETS", "BUS_PARTS", "PRESETS", "MANIFEST", "GENERATOR_VERSION", "DATASET_CODES"]

#: Bumped whenever the output of a given (dataset, preset, seed, cases) changes.
GENERATOR_VERSION = "1.0"
MANIFEST = "semizoo_phantom.json"
DATASETS = {"acdc": acdc, "la": la, "mnms": mnms, "busi": busi, "udiat": udiat, "snubh": snubh}
#: ``bus`` writes these phantoms side by side, each in its own sub-folder.
BUS_PARTS = ("busi", "udiat", "snubh")
PRESETS = ("test", "bench")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _prepare_out(out: Path) -> None:
    """Create ``out``, or clear what an earlier phantom run wrote there; refuse a foreign non-empty directory."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if not out.exists():
        out.mkdir(parents=True)
        return
    manifest = out / MANIFEST
    if not manifest.is_file():
        if any(out.iterdir()):
            raise ValueError(f"{out}: directory is not empty and has no {MANIFEST}; refusing to write phantoms into it")
        return
    try:
        previous = json.loads(manifest.read_text())
        entries = [str(e) for e in previous.get("entries", [])]
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{out / MANIFEST}: unreadable phantom manifest ({err})") from err
    for entry in entries:
        path = out / entry
        if Path(entry).is_absolute() or ".." in Path(entry).parts or path.parent != out:
            raise ValueError(f"{manifest}: refusing to remove entry {entry!r} outside {out}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    manifest.unlink()


def generate(
    dataset: str,
    out: str | os.PathLike,
    cases: int | None = None,
    seed: int = 0,
    preset: str = "test",
    size: int | None = None,
) -> dict:
    """Write ``cases`` phantom cases of ``dataset`` in its raw public layout under ``out``.

    Args:
        dataset: ``"acdc"``, ``"la"``, ``"mnms"``, ``"busi"``, ``"udiat"``, ``"snubh"`` or ``"bus"`` (busi, udiat
            and snubh in sub-folders of ``out``, each with its preset's cases; ``cases`` must be None).
        out: output directory; created if missing. A directory holding a previous phantom run (it has
            ``semizoo_phantom.json``) is cleared of that run's entries and regenerated.
        cases: number of cases (patients); default the preset's (acdc: test 10, bench 100; la: test 12, bench 100;
            mnms: the preset's vendor plan, test 16, bench 126; busi: the class plan, test 24, bench 300; udiat: test
            10, bench 163; snubh: the split plan, test 24, bench 300).
        seed: non-negative base seed.
        preset: ``"test"`` (small, fast: < 2 s, < 5 MB) or ``"bench"`` (sizes for the difficulty report).
        size: ACDC only: in-plane matrix (keeps the preset field of view, so the spacing changes).

    Returns:
        The manifest dict also written to ``out/semizoo_phantom.json``: ``generator``, ``version``, ``dataset``,
        ``arguments`` (dataset, cases, seed, preset, size, layout), case ``ids``, ``shape``, ``spacing`` and the
        top-level ``entries`` written (removed again when the directory is regenerated).

    Raises:
        ValueError: unknown dataset or preset, bad ``cases``/``seed``/``size``, or a non-empty foreign ``out``.
    """
    if dataset not in DATASETS and dataset != "bus":
        raise ValueError(f"unknown phantom dataset {dataset!r}; choose one of {sorted(DATASETS) + ['bus']}")
    if preset not in PRESETS:
        raise ValueError(f"unknown phantom preset {preset!r}; choose one of {list(PRESETS)}")
    if dataset == "bus":
        return _generate_bus(Path(out), cases, seed, preset, size)
    module = DATASETS[dataset]
    n_cases = module.PRESETS[preset]["cases"] if cases is None else cases
    if not _is_int(n_cases) or n_cases < 1:
        raise ValueError(f"cases must be a positive integer, got {cases!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if size is not None and dataset != "acdc":
        raise ValueError(f"size is only supported for acdc, not {dataset!r}")
    if size is not None and not _is_int(size):
        raise ValueError(f"size must be an integer, got {size!r}")
    n_cases, seed, size = int(n_cases), int(seed), (None if size is None else int(size))
    if dataset == "acdc" and n_cases > 999:
        raise ValueError(f"acdc phantoms name patients patient001..patient999, got cases={n_cases}")
    out = Path(out)
    if dataset == "acdc":
        acdc.layout(preset, size)  # validate before touching the disk
    if dataset == "mnms":
        mnms.check_cases(preset, n_cases)
    if dataset == "busi" and n_cases != len(busi.plan(preset)):
        raise ValueError(f"busi phantoms follow preset {preset!r}'s class plan: cases must be {len(busi.plan(preset))}")
    if dataset == "snubh" and n_cases != len(snubh.plan(preset)):
        raise ValueError(
            f"snubh phantoms follow preset {preset!r}'s split plan: cases must be {len(snubh.plan(preset))}"
        )
    _prepare_out(out)
    kwargs = {"size": size} if dataset == "acdc" else {}
    written = module.generate(out, n_cases, seed, preset, **kwargs)
    arguments = {"dataset": dataset, "cases": n_cases, "seed": seed, "preset": preset, "size": size, "layout": "raw"}
    manifest = {
        "generator": "semizoo.data.phantoms",
        "version": GENERATOR_VERSION,
        "dataset": dataset,
        "arguments": arguments,
        **written,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _generate_bus(out: Path, cases: int | None, seed: int, preset: str, size: int | None) -> dict:
    """``bus``: the busi, udiat and snubh phantoms under ``out/<name>``, plus a manifest listing the three."""
    if cases is not None:
        raise ValueError(
            f"bus writes each part's preset plan ({', '.join(BUS_PARTS)}): cases must be None, got {cases!r}"
        )
    if size is not None:
        raise ValueError("size is only supported for acdc, not 'bus'")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _prepare_out(out)
    parts = {name: generate(name, out / name, seed=int(seed), preset=preset) for name in BUS_PARTS}
    manifest = {
        "generator": "semizoo.data.phantoms",
        "version": GENERATOR_VERSION,
        "dataset": "bus",
        "arguments": {
            "dataset": "bus",
            "cases": None,
            "seed": int(seed),
            "preset": preset,
            "size": None,
            "layout": "raw",
        },
        "ids": [f"{name}/{case}" for name, part in parts.items() for case in part["ids"]],
        "parts": {name: {"cases": part["arguments"]["cases"]} for name, part in parts.items()},
        "entries": list(BUS_PARTS),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
