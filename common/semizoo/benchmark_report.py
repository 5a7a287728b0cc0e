"""Machine description and the Markdown tables of ``python -m semizoo benchmark`` (``benchmark.md``)."""

from __future__ import annotations

import os
import platform
from typing import Any, Mapping, Sequence

import torch

__all__ = ["machine", "markdown"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, logical CPUs, torch threads, device, and the versions that matter for the timings."""
    import monai

    cuda = torch.cuda.is_available()
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
    }


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:+.1f} %"


def _overhead(framework: Mapping[str, Any]) -> str:
    """``+2.4 % (-1.0 to +5.9)``: the overhead with its bootstrap interval where the run recorded one."""
    text, interval = _pct(framework.get("overhead")), framework.get("overhead_ci")
    if interval is None or framework.get("overhead") is None:
        return text
    return f"{text} ({100 * interval[0]:+.1f} to {100 * interval[1]:+.1f})"


def _batch(batch: Mapping[str, Any]) -> str:
    size = batch.get("patch") or batch.get("image_size") or []
    return f"{batch['labeled']}+{batch['unlabeled']}, " + "x".join(map(str, size))


def _memory(record: Mapping[str, Any], kind: str) -> str:
    value = (record.get("memory") or {}).get(kind) or {}
    return "err" if "error" in value else _f(value.get("peak_mib"), 0)


def _caption(info: Mapping[str, Any]) -> str:
    return (
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['threads']} torch threads, device "
        f"{info['device']}; torch {info['torch']}, MONAI {info['monai']}."
    )


def _training_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| bundle | stage | shape | batch L+U, patch | method s/it | labeled-only s/it | ratio | method MiB | "
        "labeled-only MiB | trainer s/it | plain loop s/it | framework overhead | data wait | steps timed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        head = f"| {r['bundle']} | {r['stage']} | {r['shape']} |"
        if "error" in r:
            lines.append(f"{head} error: {r['error'][:100]} |" + " |" * 10)
            continue
        s, fw, wait, it = r["seconds_per_step"], r.get("framework") or {}, r.get("data_wait") or {}, r["iterations"]
        lines.append(
            f"{head} {_batch(r['batch'])} | {_f(s['method'])} | {_f(s['labeled_only'])} | "
            f"{_f(r['overhead_ratio'], 2)} | "
            f"{_memory(r, 'method')} | {_memory(r, 'labeled_only')} | {_f(fw.get('trainer_seconds'))} | "
            f"{_f(fw.get('plain_seconds'))} | {_overhead(fw)} | "
            f"{'err' if 'error' in wait else _pct(wait.get('fraction')).lstrip('+')} | "
            f"{it['blocks']}x{it['per_block']} (+{it['warmup']} warm-up) |"
        )
    return lines


def _inference_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| bundle | shape | roi | volume | setting | strides | windows | s/case | Dice vs configured | Dice vs label |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        head = f"| {r['bundle']} | {r['shape']} |"
        if "error" in r:
            lines.append(f"{head} error: {r['error'][:100]} |" + " |" * 7)
            continue
        roi, volume = "x".join(map(str, r["roi"])), "x".join(map(str, r["volume"]))
        for name, s in r["settings"].items():
            strides = "x".join(map(str, s.get("strides", []))) or str(s.get("overlap"))
            lines.append(
                f"{head} {roi} | {volume} | {name} | {strides} | {s['windows']} | {_f(s['seconds_per_case'], 2)} | "
                f"{_f(s.get('dice_vs_configured'))} | {_f(s.get('dice_vs_label'))} |"
            )
    return lines


def markdown(results: Mapping[str, Any]) -> str:
    """The training-step table (and the inference table when measured), each with its caption."""
    info, cuda = results["machine"], results["machine"]["device"] != "cpu"
    memory = (
        "torch.cuda.max_memory_allocated over 2 steps minus the memory allocated before them"
        if cuda
        else "peak RSS of a fresh process over 2 steps (after a warm-up step and malloc_trim; peak mark reset) minus "
        "its RSS just before them"
    )
    partial = [] if results.get("complete", True) else ["**Partial:** the run had not finished (or was stopped).", ""]
    lines = partial + [
        "Training step, side by side in one process: median seconds per iteration after warm-up on one fixed random "
        "batch; ratio = method / labeled-only step (same network and batch); MiB = " + memory + "; framework "
        "overhead = the bundle's trainer (handlers that need neither data nor disk kept) / a plain PyTorch loop "
        "calling the same method step (and stepping the same LR schedule) - 1, with a bootstrap 95 % interval that "
        "resamples steps inside each timed block; data wait = share of each "
        "iteration blocked in next(loader) with the bundle's own train loader on phantoms (cpu shape). "
        + _caption(info),
        "",
        *_training_table(results["training"]),
    ]
    if results.get("inference"):
        lines += [
            "",
            "Inference of one phantom LA test volume (resized to the volume shown) with the bundle's test inferer "
            "(configured: its roi and strides, at the paper shape the paper's) and faster overlaps (same roi, strides "
            "roi x (1 - overlap)); seconds per case include the test post-processing; "
            "Dice = mean foreground Dice of the predictions. Weights: "
            + "; ".join(sorted({f"{r['bundle']}: {r.get('weights', '–')}" for r in results["inference"]}))
            + ". "
            + _caption(info),
            "",
            *_inference_table(results["inference"]),
        ]
    return "\n".join(lines) + "\n"
