"""``python -m semizoo reproduce``: the learning-efficiency table of one dataset (evaluation.md, "Benchmarks").

For each labelled fraction (a datasets.md setting of that nominal share, ``FRACTIONS``), every semi-supervised method
that a bundle declares for the dataset (``configs/methods.json``, see :func:`semizoo.quickstart.discover_methods`) is
trained beside its own bundle's bounds on the same split and iteration budget:

- the **labeled-only lower bound**: ``configs/labeled_only.json`` (same network, supervised loss and schedule, no
  unlabelled data) on the fraction's labelled list;
- the **fully supervised upper bound**: the same config on every training label (the dataset's ``full`` setting),
  trained once per seed.

Every model is evaluated on the test split with the bundle's ``configs/evaluate.json`` (best-on-validation and last
checkpoints). The table gives Dice with bootstrap 95 % CIs over test cases (per-case Dice averaged over seeds), the
paired difference against the lower bound, and the fraction of the lower→upper gap the method closes:
``(Dice_method − Dice_lower) / (Dice_upper − Dice_lower)``. PNGs: a bar chart with the CIs and the validation Dice
learning curves parsed from the training logs.

``--budget cpu`` trains every stage with the bundle's ``configs/quickstart.json`` (the budget-compression rule,
``iterations`` per stage); ``--budget paper`` keeps the bundles' own schedules. Data: phantoms (``test`` preset)
unless ``data_dir`` names a prepared dataset (``python -m semizoo prepare``).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .metrics.bootstrap import bootstrap_ci, bootstrap_ci_diff
from .quickstart import (
    CHECKPOINT_NAMES,
    CHECKPOINTS,
    DATA_SECONDS,
    DATASETS,
    METHODS,
    QuickRun,
    _bundle_dir,
    _config_value_or,
    _Progress,
    _run_work,
    _train_and_evaluate,
    phantom_data,
    plan_runs,
)

__all__ = [
    "run_reproduce",
    "reproduce_table",
    "gap_closed",
    "learning_curve",
    "data_label",
    "FRACTIONS",
    "FULL_SETTING",
]

# nominal labelled share -> datasets.md setting, per dataset
FRACTIONS: dict[str, dict[float, str]] = {
    "acdc": {0.05: "lab3", 0.1: "lab7"},
    "la": {0.05: "lab4", 0.1: "lab8"},
    "mnms": {0.02: "targetD_2pct", 0.05: "targetD_5pct", 0.1: "targetD_10pct"},
    "busi": {0.05: "seg_lab5pct", 0.1: "seg_lab10pct", 0.25: "seg_lab25pct", 0.5: "seg_lab50pct"},
    "bus": {0.05: "det_lab5pct", 0.1: "det_lab10pct", 0.2: "det_lab20pct"},  # WSSDL: box-labelled lesion images
}
FULL_SETTING = {"acdc": "full", "la": "full", "mnms": "targetD_full", "busi": "seg_full", "bus": "det_full"}
BUDGETS = {"cpu": ("quickstart.json",), "paper": ()}
_METRICS_LOG = re.compile(r"Metrics -- .*?val_(?:mean_dice|corloc): ([0-9.eE+-]+)")
_ITERATION_LOG = re.compile(r"Epoch: (\d+)/\d+, Iter: (\d+)/(\d+)")


def gap_closed(method: float, lower: float, upper: float) -> float | None:
    """Share of the lower→upper bound gap a method closes; ``None`` when the upper bound is not above the lower."""
    return None if upper <= lower else (method - lower) / (upper - lower)


def learning_curve(log_text: str, val_interval: int) -> list[tuple[int, float]]:
    """``(iteration, validation Dice)`` pairs from a bundle training log.

    MONAI's ``StatsHandler`` prints ``Metrics -- val_mean_dice: D`` after each validation, without the iteration;
    the iteration is the last logged training iteration rounded up to the validation interval (the iteration log
    may fire after the validation at the same iteration).
    """
    curve, last = [], 0
    for line in log_text.splitlines():
        match = _ITERATION_LOG.search(line)
        if match:
            epoch, iteration, length = (int(g) for g in match.groups())
            last = (epoch - 1) * length + iteration
            continue
        match = _METRICS_LOG.search(line)
        if match:
            curve.append((math.ceil(max(last, 1) / val_interval) * val_interval, float(match.group(1))))
    return curve


def _case_scores(report: dict) -> dict[str, float]:
    """Per test case: class-mean Dice (segmentation report), or the CorLoc hit of each (class, image) unit in
    the detection report's fixed unit order."""
    if "cases" in report:
        return {c["case"]: c["voxel"]["mean"]["dice"] for c in report["cases"]}
    return {f"unit{i:05d}": float(hit) for i, hit in enumerate(report["summary"]["corloc_any"]["hits"])}


def _seed_mean_dice(reports: Sequence[dict]) -> tuple[list[str], np.ndarray]:
    """Per-case score averaged over seeds (the same test cases in every seed)."""
    per_seed = [_case_scores(r) for r in reports]
    cases = sorted(per_seed[0])
    return cases, np.array([[d[c] for c in cases] for d in per_seed]).mean(axis=0)


def _per_seed(reports: Sequence[dict]) -> list[float]:
    """Each seed's score: the mean over its test units."""
    return [float(np.mean(list(_case_scores(r).values()))) for r in reports]


def _hd95(reports: Sequence[dict]) -> float:
    if "voxel" not in reports[0]["summary"]:  # detection
        return float("nan")
    values = [r["summary"]["voxel"]["hd95"]["mean"] for r in reports if r["summary"]["voxel"]["hd95"]["n"]]
    return float(np.mean(values)) if values else float("nan")


def _summaries(results: dict[str, Any], checkpoint: str) -> list[dict[str, Any]]:
    """One row per (setting, model): seed-mean Dice with CI, paired difference to the lower bound, gap closed."""
    rows = []
    upper_runs = results["upper"]["runs"]
    for setting, block in results["settings"].items():
        runs = block["runs"]
        for key, by_checkpoint in runs.items():
            reports = by_checkpoint[checkpoint]
            cases, dice = _seed_mean_dice(reports)
            mean, low, high = bootstrap_ci(dice)
            row = {"setting": setting, "model": key, "label": results["labels"][key], "role": "method"}
            row.update({"dice": mean, "dice_ci": [low, high], "hd95": _hd95(reports), "per_seed": _per_seed(reports)})
            lower = results["lower_of"].get(key)
            if lower is None:
                row["role"] = "lower bound"
            else:
                _, base = _seed_mean_dice(runs[lower][checkpoint])
                diff, d_low, d_high = bootstrap_ci_diff(dice, base)
                row["diff_vs_lower"] = [diff, d_low, d_high]
                upper = upper_runs[results["upper_of"][key]][checkpoint]
                row["gap_closed"] = gap_closed(mean, float(base.mean()), float(_seed_mean_dice(upper)[1].mean()))
            rows.append({**row, "seeds": len(reports)})
    for key, by_checkpoint in upper_runs.items():
        _, dice = _seed_mean_dice(by_checkpoint[checkpoint])
        mean, low, high = bootstrap_ci(dice)
        row = {"setting": results["full_setting"], "model": key, "label": results["labels"][key], "role": "upper bound"}
        row.update({"dice": mean, "dice_ci": [low, high], "hd95": _hd95(by_checkpoint[checkpoint])})
        rows.append({**row, "per_seed": _per_seed(by_checkpoint[checkpoint]), "seeds": len(by_checkpoint[checkpoint])})
    return rows


def _metric(results: dict[str, Any]) -> str:
    return "CorLoc" if results["dataset"] == "bus" else "Dice"


def reproduce_table(results: dict[str, Any], checkpoint: str = "model.pt") -> str:
    """Markdown learning-efficiency table for one checkpoint rule (caption states data, budget and protocol)."""
    rows = _summaries(results, checkpoint)
    metric = _metric(results)
    scores = (
        "CorLoc (any): per (class, lesion image) unit, hits averaged over seeds"
        if metric == "CorLoc"
        else "Dice: class mean, per-case Dice averaged over seeds"
    )
    surfaces = metric == "Dice"  # HD95 is a segmentation metric; detection tables drop its column
    seeds = len(results["seeds"]) > 1  # several seeds: each seed's score too (the spread a CI over units hides)
    lines = [
        f"{DATASETS[results['dataset']]['name']}, {results['data']}; budget {results['budget']} "
        f"({results['iterations_text']}); seeds {', '.join(map(str, results['seeds']))}; test split, "
        f"checkpoint: {CHECKPOINT_NAMES.get(checkpoint, checkpoint)}. {scores}, mean with bootstrap 95% CI over "
        "test units" + ("; HD95 in voxels (mean over seeds)." if surfaces else "."),
        "",
        f"| labelled | model | role | {metric} % |"
        + (" HD95 (voxel) |" if surfaces else "")
        + (f" {metric} % per seed |" if seeds else "")
        + f" {metric} − lower bound (paired) | gap closed |",
        "|---|---|---|---|" + ("---|" if surfaces else "") + ("---|" if seeds else "") + "---|---|",
    ]
    for row in rows:
        low, high = (100 * v for v in row["dice_ci"])
        dice = f"{100 * row['dice']:.2f} ({low:.2f}–{high:.2f})"
        diff = row.get("diff_vs_lower")
        diff_text = f"{100 * diff[0]:+.2f} ({100 * diff[1]:+.2f} to {100 * diff[2]:+.2f})" if diff else ""
        gap = row.get("gap_closed", "")
        gap_text = "n/a (upper ≤ lower)" if gap is None else (f"{100 * gap:.0f} %" if gap != "" else "")
        fraction = results["fractions"].get(row["setting"])
        labelled = row["setting"] + (f" ({100 * fraction:g} %)" if fraction else " (all)")
        hd95 = ["n/a" if math.isnan(row["hd95"]) else f"{row['hd95']:.2f}"] if surfaces else []
        per_seed = [" / ".join(f"{100 * v:.2f}" for v in row["per_seed"])] if seeds else []
        cells = [labelled, row["label"], row["role"], dice, *hd95, *per_seed, diff_text, gap_text]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _legend(row: dict[str, Any]) -> str:
    return row["label"] if row["role"] == "method" else f"{row['label']} ({row['role']})"


def _plot(results: dict[str, Any], out: Path, checkpoint: str = "model.pt") -> list[Path]:
    """``dice_bars.png`` (Dice with 95 % CIs per setting and model) and ``learning_curves.png`` (validation Dice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _summaries(results, checkpoint)
    settings = list(results["settings"]) + [results["full_setting"]]
    models = list(dict.fromkeys(_legend(r) for r in rows))
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(settings) * max(1, len(models)) / 3), 4))
    width = 0.8 / max(1, len(models))
    for index, model in enumerate(models):
        xs, ys, errors = [], [], [[], []]
        for position, setting in enumerate(settings):
            for row in (r for r in rows if r["setting"] == setting and _legend(r) == model):
                xs.append(position + (index - (len(models) - 1) / 2) * width)
                ys.append(100 * row["dice"])
                errors[0].append(100 * (row["dice"] - row["dice_ci"][0]))
                errors[1].append(100 * (row["dice_ci"][1] - row["dice"]))
        axis.bar(xs, ys, width, yerr=errors, capsize=3, label=model)
    axis.set_xticks(range(len(settings)), settings)
    axis.set_ylabel(f"test {_metric(results)} % (95% CI)")
    axis.set_title(f"{DATASETS[results['dataset']]['name']}: {CHECKPOINT_NAMES.get(checkpoint, checkpoint)}")
    axis.legend(fontsize=7)
    figure.tight_layout()
    bars = out / "dice_bars.png"
    figure.savefig(bars, dpi=80)
    plt.close(figure)

    curves = results.get("curves", {})
    figure, axes = plt.subplots(1, len(curves), figsize=(4.5 * max(1, len(curves)), 3.5), squeeze=False)
    for axis, (setting, by_model) in zip(axes[0], curves.items()):
        for key, curve in by_model.items():
            if curve:
                axis.plot(*zip(*curve), marker="o", label=results["labels"][key])
        axis.set_title(setting)
        axis.set_xlabel("iteration (last stage)")
        axis.set_ylabel(f"validation {_metric(results)}")
        axis.legend(fontsize=7)
    figure.tight_layout()
    learning = out / "learning_curves.png"
    figure.savefig(learning, dpi=80)
    plt.close(figure)
    return [bars, learning]


def _upper_run(lower: QuickRun) -> QuickRun:
    key = lower.key.replace("_labeled_only", "_fully_supervised")
    label = "fully supervised (" + lower.label.split(" (", 1)[-1]
    return replace(lower, key=key, label=label)


def _curve(run_dir: Path, run: QuickRun, overrides: dict[str, Any], budget: Sequence[str]) -> list:
    log = run_dir / ("train.log" if len(run.stages) == 1 else f"train_stage{len(run.stages)}.log")
    if not log.is_file():
        return []
    bundle = _bundle_dir(run.bundle)
    paths = [str(bundle / "configs" / c) for c in ["train.json", *budget, *run.stages[-1]]]
    interval = int(_config_value_or(bundle, paths, overrides, "val_interval", "1"))
    return learning_curve(log.read_text(), interval)


def _settings(dataset: str, fractions: Sequence[float]) -> dict[str, float]:
    known = FRACTIONS[dataset]
    settings = {}
    for fraction in fractions:
        match = next((s for f, s in known.items() if math.isclose(f, float(fraction))), None)
        if match is None:
            raise ValueError(f"{dataset} has no labelled setting of {fraction}; choose fractions from {sorted(known)}.")
        settings[match] = float(fraction)
    return settings


def data_label(prepared: Path) -> str:
    """How the tables name a prepared ``data_dir``: phantom data (its ``prepare_report.json`` says so, e.g. the bench
    preset prepared by hand) or real data."""
    report = prepared / "prepare_report.json"
    phantom = report.is_file() and bool(json.loads(report.read_text()).get("phantom"))
    return f"{'phantom' if phantom else 'real'} data from {prepared}"


def run_reproduce(
    dataset: str = "acdc",
    fractions: Sequence[float] = (0.05, 0.1),
    budget: str = "cpu",
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    seeds: Sequence[int] = (0,),
    methods: Sequence[str] | None = None,
    iterations: int = 400,
    cases: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train bounds and methods per fraction and seed, evaluate on test, write tables and plots to ``out``.

    ``methods`` default to every method declared for ``dataset``. Finished runs under ``out`` are reused (an
    interrupted reproduction continues). ``overrides`` are config values given to every training and evaluation
    run (e.g. a patch and sliding-window stride sized for real volumes on a CPU); the tables state them. Returns the
    results (also ``out/reproduce.json``).

    Raises:
        ValueError: unknown dataset, budget or fraction, a method of another dataset, or a ``data_dir`` without
            the settings' datalists.
    """
    if dataset not in FRACTIONS:
        raise ValueError(f"reproduce knows the datasets {sorted(FRACTIONS)}, not {dataset!r}.")
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {sorted(BUDGETS)}, not {budget!r}.")
    settings = _settings(dataset, fractions)
    full = FULL_SETTING[dataset]
    chosen = [k for k, m in METHODS.items() if m.dataset == dataset] if methods is None else list(methods)
    runs = plan_runs(chosen, dataset)
    lowers = [run for run in runs if run.baseline is None]
    uppers = {lower.key: _upper_run(lower) for lower in lowers}
    if data_dir is not None:
        prepared = Path(data_dir).resolve()
        missing = [s for s in [*settings, full] if not (prepared / "datalists" / f"{s}.json").is_file()]
        if missing:
            raise ValueError(f"{prepared}: no datalists/{{{','.join(missing)}}}.json; prepare the dataset first.")
        data = data_label(prepared)
    out = Path(out if out is not None else f"runs/reproduce/{dataset}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        cases = DATASETS[dataset]["cases"] if cases is None else cases
        prepared = phantom_data(dataset, out, cases, 64 if dataset == "acdc" else None)
        data = f"phantom data (test preset, {cases} cases)"
    budget_configs = BUDGETS[budget]
    overrides = dict(overrides or {})
    log_interval = max(1, iterations // 40)
    work = sum(_run_work(r, iterations) for r in runs) * len(settings) + sum(_run_work(r, iterations) for r in lowers)
    progress = _Progress(DATA_SECONDS + len(seeds) * work)
    results: dict[str, Any] = {
        "dataset": dataset,
        "budget": budget,
        "iterations": iterations if budget_configs else None,
        "iterations_text": (f"{iterations} iterations per model and stage" if budget_configs else "paper schedules")
        + "".join(f", {key} {json.dumps(value)}" for key, value in overrides.items()),
        "overrides": overrides,
        "seeds": list(seeds),
        "data": data,
        "fractions": settings,
        "full_setting": full,
        "labels": {**{r.key: r.label for r in runs}, **{u.key: u.label for u in uppers.values()}},
        "lower_of": {r.key: r.baseline for r in runs if r.baseline},
        "upper_of": {r.key: uppers[r.baseline].key for r in runs if r.baseline},
        "settings": {s: {"runs": {}, "train_seconds": {}} for s in settings},
        "upper": {"runs": {}, "train_seconds": {}},
        "curves": {},
    }
    started, done = time.time(), DATA_SECONDS
    try:
        for seed in seeds:
            plan = [(s, run) for s in settings for run in runs] + [(full, u) for u in uppers.values()]
            for setting, run in plan:
                block = results["upper"] if setting == full else results["settings"][setting]
                run_dir = _train_and_evaluate(
                    run,
                    seed,
                    out / setting,
                    prepared,
                    setting,
                    iterations,
                    log_interval,
                    progress,
                    done,
                    block,
                    budget_configs,
                    overrides,
                )
                done += _run_work(run, iterations)
                progress.advance_to(done)
                if seed == seeds[0]:
                    values = {**overrides, "dataset_dir": str(prepared), "setting": setting, "seed": seed}
                    if budget_configs:
                        values["max_iterations"] = iterations * run.iterations_scale
                    curve = _curve(run_dir, run, values, budget_configs)
                    results["curves"].setdefault(setting, {})[run.key] = curve
    finally:
        progress.close()
    results["wall_seconds"] = round(time.time() - started, 1)
    (out / "reproduce.json").write_text(json.dumps(results, indent=4) + "\n")
    tables = [reproduce_table(results, checkpoint) for checkpoint in CHECKPOINTS[::-1]]
    (out / "reproduce.md").write_text("\n\n".join(tables) + "\n")
    results["plots"] = [str(p) for p in _plot(results, out)]
    print(tables[0])
    print(f"\nwall time {results['wall_seconds'] / 60:.1f} min; tables: {out}/reproduce.md; plots: {out}/*.png")
    return results
