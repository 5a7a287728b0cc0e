"""``python -m semizoo benchmark``: training-step cost of each bundle's method against the labeled-only step.

For every bundle, the network, method and optimizer are built from the bundle's ``configs/train.json`` (plus an
optional override such as ``configs/quickstart.json``); a labeled-only step (:class:`semizoo.methods.Supervised`
with the method's supervised loss, same network, same labelled batch) and the method's step (labelled +
unlabelled batch) are timed **in alternating blocks in one process**, so the ratio is measured side by side
(evaluation.md, "Benchmarks"). Random tensors of the configured patch and batch sizes stand in for data, so the
figures are the model's cost without the data pipeline.

A multi-stage bundle (``configs/stages.json``, e.g. ACTION's pre-training and fine-tuning) is timed once per distinct
stage config, each against the labeled-only step at that stage's batch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from .bundle_paths import bundle_path

__all__ = ["step_cost", "stage_configs", "run_benchmark"]


def _build(bundle: Path, overrides: Sequence[str]) -> tuple[Any, Any, dict]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json")] + [str(bundle / "configs" / o) for o in overrides])
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')"
    if "iters_per_epoch" in parser:  # derived from the dataset's length in the bundle; no data is read here
        parser["iters_per_epoch"] = 100
    method = parser.get_parsed_content("method")
    names = ["optimizer"] if "optimizer" in parser else sorted(k for k in parser.config if k.startswith("optimizer_"))
    optimizer = _Optimizers([parser.get_parsed_content(name) for name in names])  # EPL: one per network
    patch = parser.get_parsed_content("patch_size") if "patch_size" in parser else [parser["crop_size"]] * 2
    sizes = {
        "patch": [int(p) for p in patch],
        "batch": int(parser.get_parsed_content("train#dataloader#batch_size")),  # labelled + unlabelled
        "unlabeled": int(parser.get_parsed_content("train#dataloader#secondary_batch_size")),
        "classes": int(parser.get_parsed_content("num_classes")),
    }
    return method, optimizer, sizes


class _Optimizers(list):
    """Several optimizers stepped together (a method with one optimizer per network)."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self:
            optimizer.step()


def _step(method, optimizer, labeled, unlabeled) -> None:
    optimizer.zero_grad(set_to_none=True)
    terms = method.train_step(labeled, unlabeled)
    terms["loss"].backward()
    method.before_optimizer_step()
    optimizer.step()
    method.after_optimizer_step()


def step_cost(
    bundle: str, overrides: Sequence[str] = (), iterations: int = 10, warmup: int = 2, blocks: int = 2
) -> dict:
    """Seconds per step of the bundle's method and of the labeled-only step, interleaved in ``blocks``."""
    from .methods import Supervised

    root = bundle_path(bundle)
    method, optimizer, sizes = _build(root, overrides)
    device = next(method.network.parameters()).device
    method.train()
    # a method whose step without unlabelled data is its own labelled-only bound (EPL: both networks) times that
    supervised = method if method.supervised_fallback else Supervised(method.network, sup_loss=method.sup_loss).train()
    n_labeled = sizes["batch"] - sizes["unlabeled"]
    generator = torch.Generator().manual_seed(0)
    labeled = {
        "image": torch.rand(n_labeled, 1, *sizes["patch"], generator=generator).to(device),
        "label": torch.randint(0, sizes["classes"], (n_labeled, 1, *sizes["patch"]), generator=generator).to(device),
    }
    unlabeled = {
        key: torch.rand(sizes["unlabeled"], 1, *sizes["patch"], generator=generator).to(device)
        for key in ("image", "image_fourier")  # EPL's Fourier twins; other methods ignore the key
    }
    timings: dict[str, list[float]] = {"method": [], "labeled_only": []}
    for _ in range(warmup):
        _step(method, optimizer, labeled, unlabeled)
        _step(supervised, optimizer, labeled, None)
    for block in range(blocks):
        for name in ("method", "labeled_only") if block % 2 == 0 else ("labeled_only", "method"):
            runner, batch_u = (method, unlabeled) if name == "method" else (supervised, None)
            for _ in range(iterations):
                method.iteration += 1
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                _step(runner, optimizer, labeled, batch_u)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                timings[name].append(time.perf_counter() - start)
    mean = {k: sum(v) / len(v) for k, v in timings.items()}
    return {
        "bundle": root.name,
        "overrides": list(overrides),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": {"labeled": n_labeled, "unlabeled": sizes["unlabeled"], "patch": sizes["patch"]},
        "seconds_per_step": mean,
        "overhead_ratio": mean["method"] / mean["labeled_only"],
        "steps_timed": {k: len(v) for k, v in timings.items()},
    }


def stage_configs(bundle: str) -> list[str | None]:
    """The distinct stage configs of a multi-stage bundle in first-use order (``None`` for ``train.json`` itself);
    ``[None]`` for a single-stage bundle."""
    plan = bundle_path(bundle) / "configs" / "stages.json"
    if not plan.is_file():
        return [None]
    stages: list[str | None] = []
    for files in json.loads(plan.read_text()).values():
        for name in files:
            stage = None if name == "train.json" else name
            if stage not in stages:
                stages.append(stage)
    return stages


def run_benchmark(bundles: Sequence[str], overrides: Sequence[str] = (), out: str | None = None, iterations: int = 10):
    """Time every bundle (every stage of a multi-stage one); print a Markdown table and write ``benchmark.json`` to
    ``out`` when given."""
    results = [
        step_cost(b, [*overrides, *([stage] if stage else [])], iterations=iterations)
        for b in bundles
        for stage in stage_configs(b)
    ]
    lines = [
        "| bundle | stage | device | batch L+U, patch | method s/step | labeled-only s/step | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b, s = r["batch"], r["seconds_per_step"]
        patch = "x".join(map(str, b["patch"]))
        stage = next((o for o in r["overrides"] if o not in overrides), "train.json")
        lines.append(
            f"| {r['bundle']} | {stage} | {r['device']} ({r['threads']} threads) | {b['labeled']}+{b['unlabeled']}, "
            f"{patch} | {s['method']:.3f} | {s['labeled_only']:.3f} | {r['overhead_ratio']:.2f} |"
        )
    table = "\n".join(lines)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "benchmark.json").write_text(json.dumps(results, indent=4) + "\n")
        (Path(out) / "benchmark.md").write_text(table + "\n")
    print(table)
    return results
