"""Runs survive being killed (issue 13 item 3): SIGKILL at a random iteration + ``resume`` = the uninterrupted run.

Each bundle trains its smoke config on phantom data three times through ``python -m monai.bundle run``: once
uninterrupted, once killed with SIGKILL right after the checkpoint of a randomly drawn iteration, and once resumed
from what the killed run left. Every tensor of the final training checkpoint (network, method state, optimizer,
scheduler, loader position, RNG states) and the final model must be bit-identical. SIGTERM must stop a run after a
checkpoint of the last completed iteration, with a message naming it, and resume from there just as exactly.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from bundle_data import dataset_of, prepared_phantoms

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MAX_ITERATIONS = 12
# one 2D and one 3D bundle (issue 13): random crops, two streams, a teacher or a memory and validation in between
BUNDLES = ["meanteacher_acdc_segmentation", "ssnet_la_segmentation"]


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("phantoms")


def _command(bundle: str, root: Path, data: Path, *extra: str) -> list[str]:
    configs = str([f"configs/{name}" for name in ("train.json", "smoke.json")])
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        configs,
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(data),
        "--max_iterations",
        str(MAX_ITERATIONS),
        *extra,
    ]


def _start(bundle: str, root: Path, data: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with open(root.parent / f"{root.name}.log", "a") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            _command(bundle, root, data, *extra),
            cwd=REPO / "bundles" / bundle,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _log(root: Path) -> str:
    return (root.parent / f"{root.name}.log").read_text()


def _finish(process: subprocess.Popen, root: Path) -> None:
    assert process.wait(timeout=900) == 0, _log(root)[-4000:]


def _wait_for(process: subprocess.Popen, path: Path, root: Path) -> None:
    while not path.exists():
        assert process.poll() is None, f"the run ended before writing {path.name}:\n{_log(root)[-4000:]}"
        time.sleep(0.005)


def _tensors(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor (and number) of a nested checkpoint, by path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _tensors(item, f"{prefix}/{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in _tensors(item, f"{prefix}/{i}").items()}
    if isinstance(value, (int, float)):
        return {prefix: torch.tensor(value)}
    return {prefix: value} if isinstance(value, torch.Tensor) else {}


def _assert_same_run(reference: Path, other: Path) -> None:
    final = f"eval/checkpoints/checkpoint_iteration={MAX_ITERATIONS}.pt"
    for name in ("models/model_final.pt", final):
        expected = _tensors(torch.load(reference / name, weights_only=True))
        actual = _tensors(torch.load(other / name, weights_only=True))
        assert sorted(expected) == sorted(actual), name
        differ = [key for key in expected if not torch.equal(expected[key], actual[key])]
        assert not differ, f"{name}: {len(differ)} of {len(expected)} entries differ, e.g. {differ[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, phantom_root) -> Callable[[str], tuple[Path, Path]]:
    """``bundle -> (run folder, data)`` of the bundle's uninterrupted run, trained once per module."""
    runs: dict[str, tuple[Path, Path]] = {}

    def run(bundle: str) -> tuple[Path, Path]:
        if bundle not in runs:
            data = prepared_phantoms(phantom_root, dataset_of(bundle))
            root = tmp_path_factory.mktemp(bundle) / "uninterrupted"
            _finish(_start(bundle, root, data, "--checkpoint_interval", "1"), root)
            runs[bundle] = root, data
        return runs[bundle]

    return run


@pytest.mark.parametrize("bundle", BUNDLES)
def test_sigkill_at_a_random_iteration_then_resume_matches_the_uninterrupted_run(bundle, uninterrupted, tmp_path):
    reference, data = uninterrupted(bundle)
    kill_after = random.randint(2, MAX_ITERATIONS // 2)
    root = tmp_path / "killed"
    process = _start(bundle, root, data, "--checkpoint_interval", "1")
    _wait_for(process, root / "eval" / "checkpoints" / f"checkpoint_iteration={kill_after}.pt", root)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (root / "models" / "model_final.pt").exists(), "the killed run got to its end: draw an earlier kill"
    _finish(_start(bundle, root, data, "--checkpoint_interval", "1", "--resume", "true"), root)
    assert "resuming from" in _log(root), "the second run did not resume"
    _assert_same_run(reference, root)


def test_sigterm_checkpoints_the_last_iteration_and_resume_matches(uninterrupted, tmp_path):
    bundle = BUNDLES[0]  # the SIGTERM path is bundle-independent
    reference, data = uninterrupted(bundle)
    root = tmp_path / "terminated"
    # checkpoints every 5 iterations: the one SIGTERM writes is usually off that schedule
    process = _start(bundle, root, data, "--checkpoint_interval", "5")
    _wait_for(process, root / "eval" / "checkpoints" / "checkpoint_iteration=5.pt", root)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) != 0
    log = _log(root)
    saved = sorted((root / "eval" / "checkpoints").glob("checkpoint_iteration=*.pt"))
    assert saved, log[-4000:]
    stopped_at = max(int(path.stem.split("=")[1]) for path in saved)
    assert stopped_at < MAX_ITERATIONS
    assert f"SIGTERM at iteration {stopped_at}: checkpoint " in log
    assert f"checkpoint_iteration={stopped_at}.pt written; run again with resume=true" in log
    _finish(_start(bundle, root, data, "--checkpoint_interval", "5", "--resume", "true"), root)
    final = _tensors(torch.load(root / "models" / "model_final.pt", weights_only=True))
    expected = _tensors(torch.load(reference / "models" / "model_final.pt", weights_only=True))
    assert all(torch.equal(final[key], expected[key]) for key in expected)
