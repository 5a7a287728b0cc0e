"""``python -m semizoo benchmark``: what a training iteration and an LA inference cost, measured side by side.

For every bundle (default: every folder of ``bundles/`` with ``configs/train.json``), every stage config of a
multi-stage bundle, and each shape (``cpu``: ``train.json`` + ``quickstart.json``, else ``smoke.json``; ``paper``:
``train.json`` alone), built by :mod:`semizoo.benchmark_build`:

- **step cost** (:func:`semizoo.benchmark_steps.time_steps`): median seconds of the method's step and of the
  labeled-only step of the same network and batch (a WSSDL joint step vs its strong-only step), in alternating
  blocks after warm-up, and their ratio; peak memory of each (:mod:`semizoo.benchmark_memory`);
- **framework overhead** (:func:`semizoo.benchmark_steps.framework_overhead`): the bundle's own trainer vs a plain
  PyTorch loop calling the same method step, in alternating blocks: ``trainer / plain - 1``, with a bootstrap 95 %
  interval over the steps (:func:`semizoo.benchmark_steps.median_ratio_ci`);
- **data wait** (cpu shape, :mod:`semizoo.benchmark_data`): the share of each iteration blocked in ``next(loader)``
  of the bundle's own train loader on prepared phantoms;
- **inference** (bundles whose test inferer is a 3D sliding window, :mod:`semizoo.benchmark_inference`): seconds per
  case of one LA phantom volume with the paper's strides and faster overlaps, and the Dice between them.

Random tensors of the configured sizes stand in for data in the step and overhead figures. Results go to
``benchmark.json`` (every raw timing) and ``benchmark.md`` (tables whose captions name the machine).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .benchmark_build import SHAPES, Setup, build, config_files, discover_bundles
from .benchmark_build import stage_configs as _stage_configs
from .bundle_paths import BUNDLES_DIR, bundle_path

__all__ = ["step_cost", "stage_configs", "run_benchmark", "discover_bundles", "SHAPES"]

logger = logging.getLogger(__name__)
MEMORY_STEPS = 2


def stage_configs(bundle: str | Path) -> list[str | None]:
    """The distinct stage configs of a multi-stage bundle in first-use order (``None`` for ``train.json`` itself);
    ``[None]`` for a single-stage bundle."""
    return _stage_configs(bundle_path(bundle))


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _step_figures(setup: Setup, iterations: int, warmup: int, blocks: int) -> dict[str, Any]:
    from .benchmark_steps import time_steps

    timings = time_steps(setup, iterations, warmup=warmup, blocks=blocks)
    median = {name: _median(values) for name, values in timings.items()}
    return {
        "device": str(setup.device),
        "threads": torch.get_num_threads(),
        "batch": setup.batch,
        "seconds_per_step": median,
        "overhead_ratio": median["method"] / median["labeled_only"],
        "steps_timed": {name: len(values) for name, values in timings.items()},
        "step_seconds": timings,
    }


def step_cost(
    bundle: str, overrides: Sequence[str] = (), iterations: int = 10, warmup: int = 2, blocks: int = 2
) -> dict[str, Any]:
    """Median seconds per step of the bundle's method and of its labeled-only step, interleaved in ``blocks``, for
    ``train.json`` + ``overrides`` (names under the bundle's ``configs/`` or paths)."""
    root = bundle_path(bundle)
    with tempfile.TemporaryDirectory(prefix="semizoo-bench-") as scratch:
        setup = build(root, config_files(root, None, overrides), Path(scratch))
        return {"bundle": root.name, "overrides": list(overrides), **_step_figures(setup, iterations, warmup, blocks)}


def _attempt(what: str, run: Callable[[], Any]) -> Any:
    """``run()``, or ``{"error": ...}`` (logged with its traceback) so one failure does not end the benchmark."""
    try:
        return run()
    except Exception as error:  # noqa: BLE001 - reported in the results and the log
        logger.warning("benchmark: %s failed:\n%s", what, traceback.format_exc())
        return {"error": f"{type(error).__name__}: {error}"}


def _framework(setup: Setup, iterations: int, warmup: int, blocks: int) -> dict[str, Any]:
    from .benchmark_steps import framework_overhead, median_ratio_ci

    timings = framework_overhead(setup, iterations, warmup=warmup, blocks=blocks)
    trainer, plain = _median(timings["trainer"]), _median(timings["plain"])
    return {
        "trainer_seconds": trainer,
        "plain_seconds": plain,
        "overhead": trainer / plain - 1.0,
        "overhead_ci": list(median_ratio_ci(timings["trainer"], timings["plain"], iterations)),
        "handlers": setup.handlers,
        "step_seconds": timings,
    }


def _memory(setup: Setup, configs: list[str], workdir: Path, earlier: list[list[str]]) -> dict[str, Any]:
    from .benchmark_memory import KINDS, cpu_peak, cuda_peak

    if setup.device.type == "cuda":
        return {kind: _attempt(f"memory {kind}", lambda: cuda_peak(setup, kind, MEMORY_STEPS)) for kind in KINDS}
    return {
        kind: _attempt(
            f"memory {kind}", lambda: cpu_peak(setup.bundle, configs, kind, workdir, MEMORY_STEPS, earlier=earlier)
        )
        for kind in KINDS
    }


def _training_record(
    root: Path, stage: str | None, shape: str, options: dict[str, Any], workdir: Path, earlier: list[list[str]]
) -> dict[str, Any]:
    """Every training figure of one bundle, stage and shape."""
    configs = config_files(root, shape, options["overrides"], stage)
    iterations = options["iterations"] if shape == "cpu" else options["paper_iterations"]
    warmup, blocks = options["warmup"], options["blocks"]
    record: dict[str, Any] = {
        "bundle": root.name,
        "stage": stage or "train.json",
        "shape": shape,
        "configs": [Path(c).name for c in configs],
        "iterations": {"warmup": warmup, "per_block": iterations, "blocks": blocks},
    }
    trainer_iterations = warmup + blocks * iterations if options["framework"] else None
    setup = _attempt(
        f"{root.name} {record['stage']} {shape}",
        lambda: build(root, configs, workdir, None, trainer_iterations, earlier),
    )
    if isinstance(setup, dict):
        return {**record, **setup}
    steps = _attempt(f"{root.name} steps", lambda: _step_figures(setup, iterations, warmup, blocks))
    if "error" in steps:
        return {**record, **steps}
    record.update(steps)
    if options["framework"]:
        record["framework"] = _attempt(f"{root.name} framework", lambda: _framework(setup, iterations, warmup, blocks))
    if options["memory"]:
        record["memory"] = _memory(setup, configs, workdir, earlier)
    if options["data_wait"] and shape == "cpu":
        from .benchmark_data import measure_data_wait

        record["data_wait"] = _attempt(
            f"{root.name} data wait",
            lambda: measure_data_wait(root, configs, options["phantoms"], workdir / "data", iterations, 1, earlier),
        )
    return record


def _inference_record(root: Path, shape: str, options: dict[str, Any], workdir: Path) -> dict[str, Any] | None:
    from .benchmark_inference import measure_inference

    evaluate = root / "configs" / "evaluate.json"
    if not evaluate.is_file():
        return None
    configs = config_files(root, shape, options["overrides"]) + [str(evaluate)]
    checkpoint = None
    if options["ckpt"]:
        candidate = Path(options["ckpt"]) if Path(options["ckpt"]).is_absolute() else root / options["ckpt"]
        checkpoint = candidate if candidate.is_file() else None
    result = _attempt(
        f"{root.name} inference",
        lambda: measure_inference(root, configs, options["phantoms"], workdir, options["overlaps"], checkpoint),
    )
    return None if result is None else {"bundle": root.name, "shape": shape, **result}


def _resolve(name: str | Path, bundles_root: Path | None) -> Path:
    if bundles_root is not None and (Path(bundles_root) / str(name) / "configs").is_dir():
        return Path(bundles_root) / str(name)
    return bundle_path(name)


def run_benchmark(
    bundles: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    iterations: int = 10,
    shapes: Sequence[str] = SHAPES,
    paper_iterations: int = 3,
    warmup: int = 2,
    blocks: int = 2,
    memory: bool = True,
    framework: bool = True,
    data_wait: bool = True,
    inference: bool = True,
    overlaps: Sequence[float] = (0.5, 0.25),
    ckpt: str | None = None,
    phantoms: str | Path | None = None,
    bundles_root: str | Path | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark (module docstring); print the Markdown, write ``benchmark.json``/``benchmark.md`` to ``out``.

    Args:
        bundles: bundle names or folders; ``None``: every bundle under ``bundles_root``.
        overrides: config files merged after each shape's configs (before a stage's), in every shape.
        out: output folder; ``None``: print only.
        iterations, paper_iterations: timed steps per block at the cpu and at the paper shape.
        shapes: ``cpu`` and/or ``paper``.
        warmup, blocks: untimed steps per kind before the blocks; alternating blocks per kind.
        memory, framework, data_wait, inference: which figures to measure.
        overlaps: the faster sliding-window overlaps compared with the paper's strides.
        ckpt: a network checkpoint for inference, relative to each bundle folder (e.g. ``models/model.pt``) or
            absolute; bundles without that file use their random initialisation.
        phantoms: folder for the prepared phantom datasets (reused); ``None``: ``out/phantoms``, else a temporary one.
        bundles_root: where bundles are discovered (default the repository's ``bundles/``).
        threads: torch CPU threads (``torch.set_num_threads``); ``None``: torch's default.
    """
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; choose from {SHAPES}.")
    if threads is not None:
        torch.set_num_threads(int(threads))
    root_dir = Path(bundles_root) if bundles_root is not None else BUNDLES_DIR
    roots = [_resolve(b, root_dir) for b in bundles] if bundles else discover_bundles(root_dir)
    settings = {
        "bundles": [r.name for r in roots],
        "overrides": list(overrides),
        "shapes": list(shapes),
        "iterations": iterations,
        "paper_iterations": paper_iterations,
        "warmup": warmup,
        "blocks": blocks,
        "memory_steps": MEMORY_STEPS,
        "overlaps": list(overlaps),
        "ckpt": ckpt,
    }
    results: dict[str, Any] = {"machine": _machine(), "settings": settings, "training": [], "inference": []}
    results["complete"] = False  # the files in ``out`` are rewritten after every record, so a killed run keeps them
    with tempfile.TemporaryDirectory(prefix="semizoo-bench-") as scratch:
        phantom_root = Path(phantoms) if phantoms else (Path(out) / "phantoms" if out else Path(scratch) / "phantoms")
        options = {**settings, "framework": framework, "memory": memory, "data_wait": data_wait}
        options.update(phantoms=phantom_root)
        for root in roots:
            stages = _stage_configs(root)
            for shape in shapes:
                workdir = Path(scratch) / root.name / shape
                for index, stage in enumerate(stages):
                    earlier = [config_files(root, shape, overrides, s) for s in stages[:index]]
                    _progress(f"{root.name}, stage {stage or 'train.json'}, {shape} shape")
                    results["training"].append(_training_record(root, stage, shape, options, workdir, earlier))
                    _save(results, out)
                if inference:
                    _progress(f"{root.name}, inference, {shape} shape")
                    record = _inference_record(root, shape, options, workdir / "inference")
                    if record is not None:
                        results["inference"].append(record)
                        _save(results, out)
    results["complete"] = True
    print(_save(results, out))
    return results


def _progress(text: str) -> None:
    print(f"benchmark: {text}", file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    from .benchmark_report import machine

    return machine()


def _save(results: dict[str, Any], out: str | Path | None) -> str:
    """Write ``benchmark.json`` and ``benchmark.md`` to ``out`` (each atomically, via a temporary file); the table."""
    from .benchmark_report import markdown

    table = markdown(results)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("benchmark.json", json.dumps(results, indent=4, default=str) + "\n"),
            ("benchmark.md", table),
        ):
            partial = Path(out) / f".{name}.partial"
            partial.write_text(text)
            os.replace(partial, Path(out) / name)
    return table
