"""The README quick start and ``reproduce``-style comparisons on phantom ACDC.

``run_quickstart`` generates phantom ACDC (raw CREATIS layout), prepares it, then for each model (the labeled-only
lower bound and Mean Teacher) and seed trains ``bundles/meanteacher_acdc_segmentation`` through
``python -m monai.bundle run training`` with the quick-start override (evaluation.md's budget-compression rule:
N = 2000 iterations, 64×64 slices, batch 4+4), evaluates both checkpoints on the test split with ``evaluate.json``
and prints a Markdown results table with bootstrap CIs, the paired CI of the Dice difference and a per-class table
(Dice and predicted/reference volume).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .metrics.bootstrap import bootstrap_ci_diff

__all__ = ["run_quickstart", "results_table", "per_class_table", "REPO_ROOT"]

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = "meanteacher_acdc_segmentation"
LOWER_BOUND = "labeled_only"


def _bundle_dir(bundle: str) -> Path:
    path = Path(bundle)
    return path if path.is_dir() else REPO_ROOT / "bundles" / bundle


def _monai_run(run_id: str, bundle: Path, configs: list[str], overrides: dict[str, Any], log: Path) -> float:
    files = [str(bundle / c) for c in configs]
    command = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", json.dumps(files)]
    command += ["--bundle_root", str(bundle), "--meta_file", str(bundle / "configs/metadata.json")]
    command += ["--logging_file", str(bundle / "configs/logging.conf")]
    for key, value in overrides.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    start = time.time()
    with open(log, "w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=str(log.parent))
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {result.returncode}); see {log}")
    return time.time() - start


def run_quickstart(
    out: str | os.PathLike = "runs/quickstart",
    seeds: Sequence[int] = (0,),
    iterations: int = 2000,
    cases: int = 40,
    size: int = 64,
    setting: str = "lab3",
    method: str = "mean_teacher",
    bundle: str = BUNDLE,
) -> dict[str, Any]:
    """Phantom data -> train each model and seed -> evaluate on test -> results table; returns the results.

    The models are the bundle's labeled-only bound (``configs/labeled_only.json``) and its own method (``method``
    names it in the table), both with the bundle's ``configs/quickstart.json``.
    """
    from .data.phantoms import generate
    from .data.prepare import prepare

    out = Path(out).resolve()
    raw, prepared = out / "phantom_acdc", out / "acdc_prepared"
    if not (raw / "semizoo_phantom.json").is_file():
        generate("acdc", raw, cases=cases, seed=0, preset="test", size=size)
    if not (prepared / "prepare_report.json").is_file():
        prepare("acdc", raw, prepared)
    bundle_dir = _bundle_dir(bundle)
    configs = ["configs/train.json", "configs/quickstart.json"]
    results: dict[str, Any] = {"setting": setting, "iterations": iterations, "cases": cases, "size": size, "runs": {}}
    overlays = {LOWER_BOUND: ["configs/labeled_only.json"], method: []}
    for model, model_configs in overlays.items():
        for seed in seeds:
            run_dir = out / f"{model}_seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            overrides = {
                "dataset_dir": str(prepared),
                "ckpt_dir": str(run_dir / "models"),
                "output_dir": str(run_dir / "eval"),
                "setting": setting,
                "seed": seed,
                "max_iterations": iterations,
            }
            train_configs = configs + model_configs
            if not (run_dir / "models" / "model_final.pt").is_file():
                seconds = _monai_run("training", bundle_dir, train_configs, overrides, run_dir / "train.log")
                (run_dir / "train_seconds.txt").write_text(f"{seconds:.1f}\n")
            for checkpoint in ("model.pt", "model_final.pt"):
                metrics = run_dir / "eval" / Path(checkpoint).stem / "metrics.json"
                if not metrics.is_file():
                    eval_overrides = {**overrides, "ckpt_file": str(run_dir / "models" / checkpoint)}
                    _monai_run(
                        "evaluating",
                        bundle_dir,
                        train_configs + ["configs/evaluate.json"],
                        eval_overrides,
                        run_dir / f"evaluate_{Path(checkpoint).stem}.log",
                    )
                results["runs"].setdefault(model, {}).setdefault(checkpoint, []).append(json.loads(metrics.read_text()))
    table = results_table(results)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=4) + "\n")
    print(table)
    print(f"\nwritten: {out / 'results.md'}; overlays: {out}/<model>_seed<k>/eval/<checkpoint>/overlays.png")
    return results


def _fmt(stats: dict, scale: float = 1.0, digits: int = 2) -> str:
    if stats["n"] == 0:
        return "n/a"
    mean, low, high = (stats[k] * scale for k in ("mean", "ci_low", "ci_high"))
    text = f"{mean:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"
    return text + (f" [{stats['n_undefined']} undef.]" if stats["n_undefined"] else "")


def _case_dice(report: dict) -> np.ndarray:
    return np.array([c["voxel"]["mean"]["dice"] for c in sorted(report["cases"], key=lambda c: c["case"])])


def results_table(results: dict[str, Any]) -> str:
    """Markdown table: one row per model, seed and checkpoint; then paired Dice differences vs labeled-only."""
    lines = [
        f"Phantom ACDC, setting {results['setting']}, {results['iterations']} iterations per model, "
        f"{results['cases']} phantom patients at {results['size']}x{results['size']}; test split, class mean "
        "(RV, myocardium, LV); mean over cases with bootstrap 95% CI.",
        "",
        "| model | seed | checkpoint | Dice % | Jaccard % | HD95 (voxel) | ASD (voxel) | HD95 (mm) | ASD (mm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, by_checkpoint in results["runs"].items():
        for checkpoint, reports in by_checkpoint.items():
            for report in reports:
                seed = report["settings"].get("seed")
                voxel, mm = report["summary"]["voxel"], report["summary"].get("mm")
                row = [
                    model,
                    str(seed),
                    checkpoint,
                    _fmt(voxel["dice"], 100),
                    _fmt(voxel["jaccard"], 100),
                    _fmt(voxel["hd95"]),
                    _fmt(voxel["asd"]),
                ]
                row += [_fmt(mm["hd95"]), _fmt(mm["asd"])] if mm else ["n/a", "n/a"]
                lines.append("| " + " | ".join(row) + " |")
    runs = results["runs"]
    if LOWER_BOUND in runs and len(runs) > 1:
        lines += ["", "Paired difference of per-case Dice vs labeled-only (same test cases; bootstrap 95% CI):", ""]
        for model in runs:
            if model == LOWER_BOUND:
                continue
            for checkpoint, reports in runs[model].items():
                for report, base in zip(reports, runs[LOWER_BOUND][checkpoint]):
                    diff, low, high = bootstrap_ci_diff(_case_dice(report), _case_dice(base))
                    seed = report["settings"].get("seed")
                    lines.append(
                        f"- {model} − labeled_only, seed {seed}, {checkpoint}: "
                        f"{100 * diff:+.2f} Dice points (95% CI {100 * low:+.2f} to {100 * high:+.2f})"
                    )
    return "\n".join(lines + [""] + per_class_table(results))


def per_class_table(results: dict[str, Any]) -> list[str]:
    """Per-class Dice and predicted/reference volume (pooled voxels): where a class-mean difference comes from."""
    first = next(iter(next(iter(results["runs"].values())).values()))[0]
    names = list(first["per_class"])
    lines = [
        "Per class: mean Dice % over test cases / predicted÷reference volume (voxels pooled over the test cases; "
        "< 1 = under-segmented).",
        "",
        "| model | seed | checkpoint | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for model, by_checkpoint in results["runs"].items():
        for checkpoint, reports in by_checkpoint.items():
            for report in reports:
                cells = []
                for name in names:
                    dice = 100 * report["per_class"][name]["voxel"]["dice"]["mean"]
                    volume = report.get("confusion", {}).get("per_class", {}).get(name, {}).get("volume_ratio")
                    cells.append(f"{dice:.1f} / " + ("n/a" if volume is None else f"{volume:.2f}"))
                seed = report["settings"].get("seed")
                lines.append(f"| {model} | {seed} | {checkpoint} | " + " | ".join(cells) + " |")
    return lines
