"""Peak memory of one training step kind (the method's, or the labeled-only one) for ``python -m semizoo benchmark``.

- CUDA: in the benchmark's process, ``torch.cuda.max_memory_allocated()`` over the steps (peak statistics reset just
  before them) minus the memory allocated before them (model, optimizer state, batch).
- CPU: a fresh process per measurement (``python -m semizoo.benchmark_memory SPEC``) builds the bundle, runs one
  warm-up step (kernels loaded, gradients and optimizer state allocated), returns freed heap pages to the system
  (``malloc_trim``), reads its resident set size (RSS), resets the kernel's peak-RSS mark (``/proc/self/clear_refs``),
  runs the steps and reports the peak RSS (``VmHWM`` of ``/proc/self/status``) minus that RSS: the steps' transient
  memory, like the CUDA figure. ``resource.getrusage(...).ru_maxrss`` is not used: it also keeps the mark of exited
  threads, so the reset does not clear it. Where the mark cannot be reset the peak is the process's lifetime peak
  (``peak_reset`` is then false).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from .benchmark_build import Setup, build
from .benchmark_steps import labeled_only, plain_step, sync

__all__ = ["KINDS", "cuda_peak", "cpu_peak", "run_steps"]

KINDS = ("method", "labeled_only")
MIB = 1024.0 * 1024.0


def run_steps(setup: Setup, kind: str, steps: int) -> None:
    """``steps`` plain steps of ``kind``: ``method`` (labelled + unlabelled batch) or ``labeled_only``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    runner = setup.method if kind == "method" else labeled_only(setup.method)
    unlabeled = setup.unlabeled if kind == "method" else None
    setup.method.train()
    for _ in range(steps):
        plain_step(runner, setup.optimizers, setup.labeled, unlabeled, setup.set_to_none, setup.grad_clip_norm)
    sync(setup.device)


def cuda_peak(setup: Setup, kind: str, steps: int = 2) -> dict[str, Any]:
    """Peak CUDA memory of ``steps`` steps of ``kind`` above what was allocated before them (MiB)."""
    device = setup.device
    sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run_steps(setup, kind, steps)
    peak = torch.cuda.max_memory_allocated(device)
    return {
        "measure": "cuda max_memory_allocated above allocation before the steps",
        "peak_mib": round((peak - before) / MIB, 1),
        "allocated_before_mib": round(before / MIB, 1),
        "steps": steps,
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """The kernel's peak RSS mark of this process (``VmHWM``; ``ru_maxrss`` where ``/proc`` lacks it)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> bool:
    """Return freed heap pages to the system (glibc ``malloc_trim``), so that RSS tracks live memory."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def measure_here(spec: dict[str, Any]) -> dict[str, Any]:
    """The child's measurement (module docstring) for ``spec`` (keys of :func:`cpu_peak`'s JSON)."""
    torch.set_num_threads(int(spec["threads"]))
    setup = build(Path(spec["bundle"]), spec["configs"], Path(spec["workdir"]), earlier=spec.get("earlier", ()))
    run_steps(setup, spec["kind"], 1)  # warm-up: kernels loaded, gradients and optimizer state allocated
    trimmed = _release_free_memory()
    before = _rss_bytes()
    reset = _reset_peak_rss()
    run_steps(setup, spec["kind"], int(spec["steps"]))
    peak = _peak_rss_bytes()
    return {
        "measure": "peak RSS of a fresh process during the steps above its RSS before them (after a warm-up step)",
        "peak_mib": round((peak - before) / MIB, 1),
        "rss_before_mib": round(before / MIB, 1),
        "peak_rss_mib": round(peak / MIB, 1),
        "peak_reset": reset,
        "malloc_trim": trimmed,
        "steps": int(spec["steps"]),
    }


def cpu_peak(
    bundle: Path,
    configs: Sequence[str],
    kind: str,
    workdir: Path,
    steps: int = 2,
    earlier: Sequence[Sequence[str]] = (),
    timeout: float = 3600,
) -> dict[str, Any]:
    """Peak RSS of ``steps`` steps of ``kind`` in a fresh process (module docstring), with this process's threads."""
    spec = {
        "bundle": str(bundle),
        "configs": list(configs),
        "kind": kind,
        "workdir": str(workdir),
        "steps": int(steps),
        "earlier": [list(c) for c in earlier],
        "threads": torch.get_num_threads(),
    }
    command = [sys.executable, "-m", "semizoo.benchmark_memory", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {bundle.name} ({kind}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure_here(json.loads(sys.argv[1]))))
