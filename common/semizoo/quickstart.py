"""The README quick start: phantom data, semi-supervised methods against their labeled-only bounds, in minutes.

``run_quickstart`` generates phantom ACDC (raw CREATIS layout; or LA with ``dataset="la"``, M&Ms with ``"mnms"``),
prepares it, then for
each method (SS-Net and the classic Mean Teacher by default) trains its bundle through ``python -m monai.bundle run
training``: once with the bundle's method (every stage in order for a multi-stage method such as ACTION) and once
labeled-only (``configs/labeled_only.json``: same network, supervised loss and schedule, no unlabelled data), all
with the bundle's ``configs/quickstart.json`` (evaluation.md's budget-compression rule: N iterations per stage, a
CPU-sized patch and batch, ramp-ups and gates scaled with N). Each model is evaluated on the test split with
``configs/evaluate.json`` (best-on-validation and last checkpoints). It prints a short table (Dice and HD95 with
bootstrap 95 % CIs, paired Dice difference against the method's own labeled-only bound) and writes the full tables
(Jaccard, ASD, mm, per class) to ``results.md``. A progress bar shows the whole job with an ETA.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .metrics.bootstrap import bootstrap_ci_diff

__all__ = [
    "run_quickstart",
    "short_table",
    "results_table",
    "per_class_table",
    "plan_runs",
    "phantom_data",
    "QuickMethod",
    "QuickRun",
    "discover_methods",
    "METHODS",
    "DATASETS",
    "REPO_ROOT",
]

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ("model_final.pt", "model.pt")
CHECKPOINT_NAMES = {"model_final.pt": "last", "model.pt": "best on validation"}
CHECKPOINT_KEYS = {"model_final.pt": "final_model_file", "model.pt": "model_file"}


@dataclass(frozen=True)
class QuickMethod:
    """A semi-supervised method the quick start can compare with its labeled-only bound.

    ``stages`` are the override configs of each training stage in order (``()`` = the bundle's ``train.json``
    alone); ``stage_seconds`` their seconds per iteration on 2 CPU cores (progress-bar weights, measured with
    ``python -m semizoo benchmark``); ``supervised_stages`` how many stages train on the labels, so that the
    labeled-only bound gets as many supervised iterations (ACTION: stages 2 and 3); ``lower_bound`` the
    override config of that bound (detection: ``strong_only.json``).
    """

    bundle: str
    label: str
    dataset: str
    stages: tuple[tuple[str, ...], ...] = ((),)
    stage_seconds: tuple[float, ...] = (0.1,)
    supervised_stages: int = 1
    lower_bound: str = "labeled_only.json"


def _stage_list(bundle: Path, value: Any, where: str) -> tuple[tuple[str, ...], ...]:
    """``stages`` of a methods.json entry: a list of override lists, or the name of a ``configs/stages.json``
    variant (whose ``train.json`` is the bundle's own config, i.e. no override)."""
    if isinstance(value, str):
        from .stages import stage_plan

        return tuple(() if name == "train.json" else (name,) for name in stage_plan(bundle, value))
    if not isinstance(value, list) or not all(
        isinstance(s, list) and all(isinstance(c, str) for c in s) for s in value
    ):
        raise ValueError(f"{where}: 'stages' must be a list of lists of config names or a stages.json variant name")
    return tuple(tuple(stage) for stage in value)


def discover_methods(bundles_root: str | os.PathLike | None = None) -> dict[str, QuickMethod]:
    """The semi-supervised methods every bundle declares in ``configs/methods.json`` (a bundle added later takes part
    in the quick start and ``reproduce`` by shipping that file). An entry::

        "ssnet": {"label": "SS-Net", "dataset": "acdc", "seconds_per_iteration": [0.42]}

    with optional ``stages`` (override lists per stage, or a ``configs/stages.json`` variant name),
    ``supervised_stages`` and ``lower_bound`` (see :class:`QuickMethod`).

    Raises:
        ValueError: naming the file, for a malformed entry or a method key that two bundles declare.
    """
    root = Path(bundles_root) if bundles_root is not None else REPO_ROOT / "bundles"
    methods: dict[str, QuickMethod] = {}
    for path in sorted(root.glob("*/configs/methods.json")):
        bundle = path.parents[1]
        try:
            entries = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        for key, entry in entries.items():
            where = f"{path}: method {key!r}"
            missing = [k for k in ("label", "dataset", "seconds_per_iteration") if k not in entry]
            if missing:
                raise ValueError(f"{where} lacks {', '.join(missing)}")
            if key in methods:
                raise ValueError(f"{where} is also declared by bundle {methods[key].bundle}")
            stages = _stage_list(bundle, entry.get("stages", [[]]), where)
            seconds = tuple(float(s) for s in entry["seconds_per_iteration"])
            if len(seconds) != len(stages):
                raise ValueError(f"{where}: {len(seconds)} seconds_per_iteration for {len(stages)} stages")
            supervised = int(entry.get("supervised_stages", 1))
            lower = str(entry.get("lower_bound", "labeled_only.json"))
            methods[key] = QuickMethod(
                bundle.name, entry["label"], entry["dataset"], stages, seconds, supervised, lower
            )
    return methods


METHODS: dict[str, QuickMethod] = discover_methods()
# dataset -> phantom cases, default labelled setting (5 %), default methods, labeled-only seconds per iteration
DATASETS: dict[str, dict[str, Any]] = {
    "acdc": {"name": "ACDC", "cases": 40, "setting": "lab3", "methods": ("ssnet", "mean_teacher"), "bound": 0.09},
    "la": {"name": "LA", "cases": 24, "setting": "lab4", "methods": ("action_la", "actionpp_la"), "bound": 0.17},
    "mnms": {"name": "M&Ms", "cases": 16, "setting": "targetD_5pct", "methods": ("epl", "epl_dual"), "bound": 0.3},
    "busi": {
        "name": "BUSI",
        "cases": 24,
        "setting": "seg_lab25pct",
        "methods": ("epl_busi", "epl_busi_dual"),
        "bound": 0.3,
    },
    # WSSDL-BUS detection (reproduce only; scored by CorLoc): the BUSI phantoms' box-labelled lists
    "bus": {
        "name": "BUS detection",
        "cases": 24,
        "setting": "det_lab10pct",
        "methods": ("wssdl",),
        "bound": 0.2,
        "phantom": "busi",
        "detection": True,
    },
}
# seconds of the fixed stages on 2 CPU cores (progress-bar weights only)
DATA_SECONDS, START_SECONDS, EVALUATE_SECONDS = 10.0, 5.0, 8.0
_ITERATION_LOG = re.compile(r"Epoch: (\d+)/\d+, Iter: (\d+)/(\d+)")


@dataclass(frozen=True)
class QuickRun:
    """One model of the quick start: a bundle trained through its stages (override configs per stage), paired with
    a baseline run; ``iterations_scale`` multiplies the iteration budget (the labeled-only bound of a multi-stage
    method)."""

    key: str
    label: str
    bundle: str
    stages: tuple[tuple[str, ...], ...]
    step_seconds: tuple[float, ...]
    baseline: str | None = None
    iterations_scale: int = 1


def plan_runs(methods: Sequence[str], dataset: str | None = None) -> list[QuickRun]:
    """Each method's labeled-only bound (same bundle, ``configs/labeled_only.json``; one per bundle), then the method.

    Raises:
        ValueError: for a method the quick start does not know (listing the known ones), or one of another dataset.
    """
    runs: list[QuickRun] = []
    bounds: dict[str, str] = {}
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown quick-start method {method!r}; choose from {sorted(METHODS)}.")
        spec = METHODS[method]
        if dataset is not None and spec.dataset != dataset:
            known = sorted(k for k, m in METHODS.items() if m.dataset == dataset)
            raise ValueError(f"quick-start method {method!r} trains on {spec.dataset}, not {dataset}; choose {known}.")
        if spec.bundle not in bounds:
            bounds[spec.bundle] = f"{method}_labeled_only"
            label = f"{Path(spec.lower_bound).stem.replace('_', '-')} ({spec.label} recipe)"  # labeled-only
            seconds = (DATASETS[spec.dataset]["bound"],)
            bound = QuickRun(
                bounds[spec.bundle],
                label,
                spec.bundle,
                ((spec.lower_bound,),),
                seconds,
                None,
                spec.supervised_stages,
            )
            runs.append(bound)
        runs.append(
            QuickRun(method, spec.label, spec.bundle, spec.stages, spec.stage_seconds, baseline=bounds[spec.bundle])
        )
    return runs


def _run_work(run: QuickRun, iterations: int) -> float:
    train = sum(run.step_seconds) * iterations * run.iterations_scale
    return START_SECONDS * len(run.stages) + train + 2 * EVALUATE_SECONDS


def _bundle_dir(bundle: str) -> Path:
    path = Path(bundle)
    return path if path.is_dir() else REPO_ROOT / "bundles" / bundle


class _Progress:
    """One bar for the whole job, in estimated seconds of work, so its ETA covers every remaining stage."""

    def __init__(self, total: float) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=round(total),
            unit="s",
            bar_format="{l_bar}{bar}| [{elapsed}<{remaining}] {postfix}",
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self.done = 0.0

    def stage(self, text: str) -> None:
        self.bar.set_description(text)

    def advance_to(self, done: float) -> None:
        done = min(done, self.bar.total)
        if done > self.done:
            self.bar.update(round(done) - round(self.done))
            self.done = done

    def close(self) -> None:
        self.advance_to(self.bar.total)
        self.bar.close()


def cli_value(value: Any) -> str:
    """``value`` as ``monai.bundle run`` reads a command-line override: strings as they are, anything else as a Python
    literal (Fire parses ``False``, ``None`` and ``[1, 2]``; JSON's ``false`` and ``null`` would arrive as strings)."""
    return value if isinstance(value, str) else repr(json.loads(json.dumps(value)))


def _monai_run(
    run_id: str,
    bundle: Path,
    configs: list[str],
    overrides: dict[str, Any],
    log: Path,
    on_iteration=None,
) -> float:
    """``python -m monai.bundle run RUN_ID`` from the log's folder; calls ``on_iteration(i)`` as it logs iterations."""
    files = [str(bundle / "configs" / c) for c in configs]
    command = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", json.dumps(files)]
    command += ["--bundle_root", str(bundle), "--meta_file", str(bundle / "configs/metadata.json")]
    command += ["--logging_file", str(bundle / "configs/logging.conf")]
    for key, value in overrides.items():
        command += [f"--{key}", cli_value(value)]
    start = time.time()
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(log.parent), text=True, bufsize=1
        )
        assert process.stdout is not None
        for line in process.stdout:
            handle.write(line)
            match = _ITERATION_LOG.search(line)
            if match and on_iteration is not None:
                epoch, iteration, length = (int(g) for g in match.groups())
                on_iteration((epoch - 1) * length + iteration)
        returncode = process.wait()
    if returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {returncode}); see {log}")
    return time.time() - start


def phantom_data(dataset: str, out: Path, cases: int, size: int | None = None) -> Path:
    """Generate (``test`` preset) and prepare phantom ``dataset`` under ``out`` unless done; the prepared folder."""
    from .data.phantoms import generate
    from .data.prepare import prepare

    dataset = DATASETS.get(dataset, {}).get("phantom", dataset)  # BUSI detection: the BUSI phantoms' det lists
    raw, prepared = out / f"phantom_{dataset}", out / f"{dataset}_prepared"
    if not (raw / "semizoo_phantom.json").is_file():
        generate(dataset, raw, cases=cases, seed=0, preset="test", **({"size": size} if dataset == "acdc" else {}))
    if not (prepared / "prepare_report.json").is_file():
        prepare(dataset, raw, prepared)
    return prepared


def run_quickstart(
    out: str | os.PathLike = "runs/quickstart",
    seeds: Sequence[int] = (0,),
    iterations: int = 400,
    cases: int | None = None,
    size: int = 64,
    setting: str | None = None,
    methods: Sequence[str] | None = None,
    dataset: str = "acdc",
) -> dict[str, Any]:
    """Phantom data -> train each method and its labeled-only bound per seed -> evaluate on test -> tables.

    ``dataset`` is ``acdc`` (``size`` sets the phantom slices' matrix) or ``la``; ``cases``, ``setting`` and
    ``methods`` default to the dataset's (``DATASETS``). Finished runs and evaluations under ``out`` are reused, so
    an interrupted quick start continues where it stopped. Returns the results (also written to
    ``out/results.json``).

    Raises:
        ValueError: unknown dataset, or a method of another dataset.
    """
    segmentation = sorted(k for k, v in DATASETS.items() if not v.get("detection"))
    if dataset not in segmentation:
        hint = " (detection: python -m semizoo reproduce --dataset bus)" if dataset in DATASETS else ""
        raise ValueError(f"unknown quick-start dataset {dataset!r}; choose from {segmentation}{hint}.")
    defaults = DATASETS[dataset]
    cases = defaults["cases"] if cases is None else cases
    setting = defaults["setting"] if setting is None else setting
    runs = plan_runs(defaults["methods"] if methods is None else methods, dataset)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_interval = max(1, iterations // 40)
    work_per_run = [_run_work(run, iterations) for run in runs]
    progress = _Progress(DATA_SECONDS + len(seeds) * sum(work_per_run))
    started = time.time()
    progress.stage("phantom data")
    prepared = phantom_data(dataset, out, cases, size)
    done = DATA_SECONDS
    progress.advance_to(done)
    results: dict[str, Any] = {
        "dataset": dataset,
        "setting": setting,
        "iterations": iterations,
        "cases": cases,
        "size": size if dataset == "acdc" else None,
        "labels": {run.key: run.label for run in runs},
        "pairs": {run.key: run.baseline for run in runs if run.baseline},
        "iterations_per_run": {run.key: iterations * run.iterations_scale for run in runs},
        "runs": {},
        "train_seconds": {},
    }
    try:
        for seed in seeds:
            for run, work in zip(runs, work_per_run):
                _train_and_evaluate(
                    run, seed, out, prepared, setting, iterations, log_interval, progress, done, results
                )
                done += work
                progress.advance_to(done)
    finally:
        progress.close()
    results["wall_seconds"] = round(time.time() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=4) + "\n")
    full = results_table(results) + "\n\n" + "\n".join(per_class_table(results))
    (out / "results.md").write_text(short_table(results) + "\n\n" + full + "\n")
    print(short_table(results))
    minutes = results["wall_seconds"] / 60
    print(f"\nwall time {minutes:.1f} min; full tables (Jaccard, ASD, mm, per class): {out}/results.md")
    print(f"overlays: {out}/<model>_seed<k>/eval/<checkpoint>/overlays.png")
    return results


def _config_value_or(bundle: Path, configs: Sequence[str], overrides: dict[str, Any], key: str, default: str) -> str:
    """``key`` of the merged bundle config (multi-stage bundles name their outputs, e.g. ACTION++'s
    ``model_actionpp*.pt``), or ``default`` when the bundle does not define it (single-stage bundles)."""
    from .stages import config_value

    try:
        return str(config_value(bundle, configs, overrides, key))
    except KeyError:
        return default


def _train_and_evaluate(
    run: QuickRun,
    seed: int,
    out: Path,
    prepared: Path,
    setting: str,
    iterations: int,
    log_interval: int,
    progress: _Progress,
    done: float,
    results: dict[str, Any],
    budget: Sequence[str] = ("quickstart.json",),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Train ``run``'s stages in order (a stage whose output exists is skipped), then evaluate both checkpoints.

    ``budget`` are the override configs of every stage (the CPU budget: ``quickstart.json``; ``()`` keeps the
    bundle's own, paper, schedule and then ``iterations`` is only the progress bar's estimate); ``extra`` are
    config values for every training and evaluation run. Returns the run's folder.
    """
    bundle = _bundle_dir(run.bundle)
    run_dir = out / f"{run.key}_seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    iterations = iterations * run.iterations_scale
    overrides = {
        "dataset_dir": str(prepared),
        "ckpt_dir": str(run_dir / "models"),
        "output_dir": str(run_dir / "eval"),
        "setting": setting,
        "seed": seed,
    }
    if budget:
        overrides.update({"max_iterations": iterations, "log_interval": log_interval})
    overrides.update(extra or {})
    timing = run_dir / "train_seconds.txt"
    seconds, start = 0.0, done
    for index, (stage, step_seconds) in enumerate(zip(run.stages, run.step_seconds)):
        configs = ["train.json", *budget, *stage]
        paths = [str(bundle / "configs" / c) for c in configs]
        default_output = str(Path(overrides["ckpt_dir"]) / "model_final.pt")  # single-stage bundles
        output = Path(_config_value_or(bundle, paths, overrides, "stage_output", default_output))
        begin = start + START_SECONDS
        if not output.is_file():
            progress.stage(
                f"{run.label}, seed {seed}: training" + (f" stage {index + 1}" if len(run.stages) > 1 else "")
            )
            log = run_dir / ("train.log" if len(run.stages) == 1 else f"train_stage{index + 1}.log")
            seconds += _monai_run(
                "training",
                bundle,
                configs,
                overrides,
                log,
                on_iteration=lambda i, begin=begin, step=step_seconds: progress.advance_to(begin + step * i),
            )
            if not output.is_file():
                raise RuntimeError(f"{run.label} stage {index + 1} finished without writing {output}; see {log}")
        start = begin + step_seconds * iterations
        progress.advance_to(start)
    if seconds:
        timing.write_text(f"{seconds:.1f}\n")
    results["train_seconds"].setdefault(run.key, []).append(float(timing.read_text()) if timing.is_file() else None)
    for index, checkpoint in enumerate(CHECKPOINTS):
        progress.stage(f"{run.label}, seed {seed}: evaluating ({CHECKPOINT_NAMES[checkpoint]})")
        model = Path(_config_value_or(bundle, paths, overrides, CHECKPOINT_KEYS[checkpoint], checkpoint))
        metrics = run_dir / "eval" / model.stem / "metrics.json"  # SegmentationReport: output_dir/<checkpoint stem>
        if not metrics.is_file():
            eval_overrides = {**overrides, "ckpt_file": str(run_dir / "models" / model.name)}
            log = run_dir / f"evaluate_{model.stem}.log"
            _monai_run("evaluating", bundle, configs + ["evaluate.json"], eval_overrides, log)
        results["runs"].setdefault(run.key, {}).setdefault(checkpoint, []).append(json.loads(metrics.read_text()))
        progress.advance_to(start + (index + 1) * EVALUATE_SECONDS)
    return run_dir


def _fmt(stats: dict, scale: float = 1.0, digits: int = 2) -> str:
    if stats["n"] == 0:
        return "n/a"
    mean, low, high = (stats[k] * scale for k in ("mean", "ci_low", "ci_high"))
    text = f"{mean:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"
    return text + (f" [{stats['n_undefined']} undef.]" if stats["n_undefined"] else "")


def _case_dice(report: dict) -> np.ndarray:
    return np.array([c["voxel"]["mean"]["dice"] for c in sorted(report["cases"], key=lambda c: c["case"])])


def _pairs(results: dict[str, Any]) -> dict[str, str]:
    return {run: base for run, base in results.get("pairs", {}).items() if run in results["runs"] and base}


def _paired_difference(report: dict, base: dict) -> str:
    diff, low, high = bootstrap_ci_diff(_case_dice(report), _case_dice(base))
    return f"{100 * diff:+.2f} ({100 * low:+.2f} to {100 * high:+.2f})"


def _caption(results: dict[str, Any]) -> str:
    dataset = results.get("dataset", "acdc")
    first = next((reports[0] for by in results["runs"].values() for reports in by.values() if reports), None)
    classes = ", ".join(first["per_class"]) if first else "foreground classes"
    size = results.get("size")
    matrix = f" at {size}x{size}" if dataset == "acdc" and size else ""
    longer = sorted(set(results.get("iterations_per_run", {}).values()) - {results["iterations"]})
    bound = f" (labeled-only bound of a multi-stage method: {', '.join(map(str, longer))})" if longer else ""
    return (
        f"Phantom {DATASETS[dataset]['name']}, setting {results['setting']}, {results['iterations']} iterations per "
        f"model and stage{bound}, {results['cases']} phantom patients{matrix}; test split, class mean ({classes}); "
        "mean over cases with bootstrap 95% CI."
    )


def short_table(results: dict[str, Any], checkpoints: Sequence[str] = CHECKPOINTS) -> str:
    """The quick start's headline: per model, seed and checkpoint, Dice and HD95 (voxel) with bootstrap 95 % CIs and
    the paired Dice difference against the model's own labeled-only bound (same checkpoint rule, same test cases)."""
    pairs, labels = _pairs(results), results.get("labels", {})
    lines = [
        _caption(results),
        "",
        "| model | seed | checkpoint | Dice % | HD95 (voxel) | Dice − labeled-only (paired) |",
        "|---|---|---|---|---|---|",
    ]
    for key, by_checkpoint in results["runs"].items():
        for checkpoint in checkpoints:
            for index, report in enumerate(by_checkpoint.get(checkpoint, [])):
                voxel = report["summary"]["voxel"]
                base = pairs.get(key)
                diff = _paired_difference(report, results["runs"][base][checkpoint][index]) if base else "(bound)"
                seed = report["settings"].get("seed")
                name = CHECKPOINT_NAMES.get(checkpoint, checkpoint)
                row = [labels.get(key, key), str(seed), name, _fmt(voxel["dice"], 100), _fmt(voxel["hd95"]), diff]
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def results_table(results: dict[str, Any]) -> str:
    """Markdown table: one row per model, seed and checkpoint; then paired Dice differences vs labeled-only."""
    lines = [
        _caption(results),
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
    pairs = _pairs(results)
    if pairs:
        lines += ["", "Paired difference of per-case Dice vs labeled-only (same test cases; bootstrap 95% CI):", ""]
        for model, base in pairs.items():
            for checkpoint, reports in results["runs"][model].items():
                for report, base_report in zip(reports, results["runs"][base][checkpoint]):
                    seed = report["settings"].get("seed")
                    diff, low, high = bootstrap_ci_diff(_case_dice(report), _case_dice(base_report))
                    lines.append(
                        f"- {model} − {base}, seed {seed}, {checkpoint}: "
                        f"{100 * diff:+.2f} Dice points (95% CI {100 * low:+.2f} to {100 * high:+.2f})"
                    )
    return "\n".join(lines)


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
