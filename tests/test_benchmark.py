"""``python -m semizoo benchmark``: the plain loop computes what the trainer computes, every requested bundle, stage
and shape is reported, the data-wait share reacts to a slow loader, and identical inference settings agree.

Timings are never asserted (machines vary); what the figures are made of is.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from ignite.engine import Events
from semizoo.benchmark import run_benchmark
from semizoo.benchmark_build import build, config_files, discover_bundles, stage_configs
from semizoo.benchmark_data import data_wait, measure_data_wait
from semizoo.benchmark_inference import compare_settings, dice, measure_inference, with_overlap
from semizoo.benchmark_memory import cpu_peak
from semizoo.benchmark_steps import median_ratio_ci, plain_loop
from semizoo.bundle_paths import BUNDLES_DIR
from semizoo.engines import StridedSlidingWindowInferer

MEAN_TEACHER = BUNDLES_DIR / "meanteacher_acdc_segmentation"
WSSDL = BUNDLES_DIR / "wssdl_bus_detection"


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the timings here share the machine with other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("benchmark_phantoms")


def _weights(setup: Any) -> dict[str, torch.Tensor]:
    state = {f"network.{k}": v.clone() for k, v in setup.method.network.state_dict().items()}
    state.update({f"method.{k}": v.clone() for k, v in setup.method.state_dict().items()})
    return state


@pytest.mark.parametrize(
    "bundle, configs",
    [
        (MEAN_TEACHER, ["smoke.json"]),  # EMA teacher and input noise: after_optimizer_step and the RNG matter
        (BUNDLES_DIR / "epl_mnms_segmentation", []),  # two networks, two optimizers
        (WSSDL, ["alternating.json"]),  # manual optimization: two optimizers stepped by the method
    ],
    ids=["mean_teacher", "epl", "wssdl_alternating"],
)
def test_plain_loop_computes_the_trainers_losses_and_weights(tmp_path, bundle, configs):
    """From the same initialisation, RNG state and batches, the bundle's trainer and the plain loop give the same loss
    at every step and the same weights (network, teacher, memories) after it: the overhead compares equal work."""
    steps = 3
    files = config_files(bundle, "cpu", configs)
    trainer_side = build(bundle, files, tmp_path / "trainer", trainer_iterations=steps)
    plain_side = build(bundle, files, tmp_path / "plain", trainer_iterations=steps)  # its trainer is not run
    before = _weights(plain_side)
    assert all(torch.equal(before[k], v) for k, v in _weights(trainer_side).items())
    losses = []
    trainer_side.trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"]))
    )
    torch.manual_seed(5)
    trainer_side.trainer.run()
    torch.manual_seed(5)
    plain = plain_loop(plain_side, [(plain_side.labeled, plain_side.unlabeled)] * steps)
    assert len(losses) == steps
    assert plain == pytest.approx(losses, rel=1e-5, abs=1e-6)
    after_trainer, after_plain = _weights(trainer_side), _weights(plain_side)
    assert after_trainer.keys() == after_plain.keys()
    moved = [k for k, v in after_plain.items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert moved  # the steps did train something
    for key, value in after_plain.items():
        torch.testing.assert_close(after_trainer[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_benchmark_reports_every_discovered_bundle_stage_and_shape(tmp_path):
    """Bundles are discovered from the bundles folder (a new one needs no code change; a folder without
    configs/train.json is no bundle), every stage of a multi-stage bundle and each shape has a row, in the JSON and
    the Markdown, with its ratios; the detection bundle's labeled-only step is its strong-only step."""
    root = tmp_path / "bundles"
    shutil.copytree(MEAN_TEACHER, root / "newmethod_acdc_segmentation")
    shutil.copytree(WSSDL, root / "wssdl_bus_detection")
    (root / "notes" / "configs").mkdir(parents=True)
    assert [p.name for p in discover_bundles(root)] == ["newmethod_acdc_segmentation", "wssdl_bus_detection"]
    results = run_benchmark(
        bundles_root=root,
        overrides=["smoke.json"],  # tiny shapes in both shapes: this checks the report, not the speed
        out=tmp_path / "out",
        iterations=1,
        paper_iterations=1,
        warmup=1,
        blocks=2,
        memory=False,
        data_wait=False,
        inference=False,
    )
    expected = {("newmethod_acdc_segmentation", "train.json", shape) for shape in ("cpu", "paper")}
    expected |= {
        ("wssdl_bus_detection", s or "train.json", shape) for s in stage_configs(WSSDL) for shape in ("cpu", "paper")
    }
    assert len(expected) == 8
    saved = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    table = (tmp_path / "out" / "benchmark.md").read_text()
    for report in (results, saved):
        assert {(r["bundle"], r["stage"], r["shape"]) for r in report["training"]} == expected
        assert report["machine"]["threads"] == 1 and report["settings"]["paper_iterations"] == 1
    for record in results["training"]:
        assert "error" not in record, record
        seconds = record["seconds_per_step"]
        assert record["overhead_ratio"] == pytest.approx(seconds["method"] / seconds["labeled_only"])
        assert record["steps_timed"] == {"method": 2, "labeled_only": 2}
        framework = record["framework"]
        assert len(framework["step_seconds"]["trainer"]) == len(framework["step_seconds"]["plain"]) == 2
        assert framework["overhead"] == pytest.approx(framework["trainer_seconds"] / framework["plain_seconds"] - 1)
        low, high = framework["overhead_ci"]
        assert low <= high
        assert f"({100 * low:+.1f} to {100 * high:+.1f})" in table
        assert "semizoo.handlers.NaNGuard" in framework["handlers"]["kept"]
        assert any(h.startswith("ValidationHandler") for h in framework["handlers"]["dropped"])
        assert record["configs"][-1] == (record["stage"] if record["stage"] != "train.json" else "smoke.json")
        row = f"| {record['bundle']} | {record['stage']} | {record['shape']} |"
        assert sum(line.startswith(row) for line in table.splitlines()) == 1
    wssdl = next(r for r in results["training"] if r["bundle"] == "wssdl_bus_detection")
    assert set(wssdl["batch"]) == {"labeled", "unlabeled", "image_size"}  # record lists: strong and weak images
    assert wssdl["batch"]["labeled"] >= 1 and wssdl["batch"]["unlabeled"] >= 1
    assert "Machine:" in table and "framework overhead" in table


def test_overhead_interval_resamples_inside_blocks_and_separates_a_real_overhead_from_scatter():
    """The bootstrap interval of median(a) / median(b) - 1 (``framework_overhead``'s blocks of steps)."""
    rng = np.random.default_rng(1)
    # two blocks at different machine speeds, the same on both sides: the interval is exactly 0 because each block
    # keeps its count of steps (resampling across blocks would move the median between the two levels)
    drifting = [1.0] * 30 + [2.0] * 30
    assert median_ratio_ci(drifting, drifting, per_block=30) == (0.0, 0.0)
    low, high = median_ratio_ci(drifting, drifting, per_block=60)  # one block: the two levels mix
    assert low < -0.1 and high > 0.1
    noisy = rng.normal(1.0, 0.02, size=60)
    low, high = median_ratio_ci(noisy, noisy, per_block=30)
    assert low == pytest.approx(0.0, abs=0.02) and high > low
    # 10 % scatter per step, 60 steps a side: a 20 % overhead is resolved, a zero one is not mistaken for one
    base = rng.normal(0.1, 0.01, size=(2, 60))
    low, high = median_ratio_ci(base[0] * 1.2, base[1], per_block=10)
    assert 0.1 < low < 0.2 < high < 0.3
    low, high = median_ratio_ci(base[0], base[1], per_block=10)
    assert low < 0 < high and high - low < 0.1
    with pytest.raises(ValueError, match="blocks of 7"):
        median_ratio_ci(noisy, noisy, per_block=7)


class _SlowLoader:
    """A loader whose every batch takes ``delay`` seconds to arrive."""

    def __init__(self, batch: Any, delay: float, length: int = 2) -> None:
        self.batch, self.delay, self.length = batch, delay, length

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.length):
            time.sleep(self.delay)
            yield self.batch


def test_data_wait_is_a_share_and_grows_with_a_slow_loader(tmp_path):
    setup = build(MEAN_TEACHER, config_files(MEAN_TEACHER, "cpu", ["smoke.json"]), tmp_path)
    batch = (setup.labeled, setup.unlabeled)
    fast = data_wait(setup, _SlowLoader(batch, 0.0), iterations=3)
    slow = data_wait(setup, _SlowLoader(batch, 0.2), iterations=3)
    for result in (fast, slow):
        assert 0.0 <= result["fraction"] <= 1.0
        assert result["fraction"] == pytest.approx(result["wait_seconds"] / result["iteration_seconds"])
    assert slow["wait_seconds"] >= 0.2 > fast["wait_seconds"]
    assert slow["fraction"] > fast["fraction"]


@pytest.mark.slow
def test_data_wait_reads_the_bundles_own_loader_on_phantoms(tmp_path, phantom_root):
    result = measure_data_wait(
        MEAN_TEACHER, config_files(MEAN_TEACHER, "cpu", ["smoke.json"]), phantom_root, tmp_path, iterations=2
    )
    assert result["dataset"] == "acdc" and Path(result["dataset_dir"]).parent == phantom_root
    assert 0.0 < result["fraction"] < 1.0 and result["num_workers"] == 0 and result["iterations"] == 2


def test_identical_inference_settings_agree_and_fewer_windows_cost_less():
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    image = torch.rand(1, 1, 20, 20, 12)
    label = (image[0] > 0.5).long()
    paper = StridedSlidingWindowInferer([8, 8, 8], [2, 2, 2])
    settings = {"configured": paper, "same": with_overlap(paper, 1 - 2 / 8), "overlap 0": with_overlap(paper, 0.0)}
    assert settings["same"].strides == [2, 2, 2] and settings["overlap 0"].strides == [8, 8, 8]
    results = compare_settings(settings, network, image, label, 2, lambda out: out[0].argmax(0, keepdim=True))
    assert results["configured"]["dice_vs_configured"] == results["same"]["dice_vs_configured"] == 1.0
    assert results["overlap 0"]["windows"] < results["same"]["windows"] == results["configured"]["windows"]
    assert 0.0 <= results["overlap 0"]["dice_vs_label"] <= 1.0
    a, b = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 1])
    assert dice(a, b, 2) == pytest.approx(0.5) and dice(a * 0, b * 0, 2) == 1.0


@pytest.mark.slow
def test_la_inference_compares_the_bundles_strides_with_faster_ones(tmp_path, phantom_root):
    from monai.bundle import ConfigParser

    bundle = BUNDLES_DIR / "ssnet_la_segmentation"
    configs = config_files(bundle, "cpu", ["configs/evaluate.json"])
    parser = ConfigParser()
    parser.read_config(configs)
    roi, strides = [int(v) for v in parser["patch_size"]], [int(v) for v in parser["val_strides"]]
    result = measure_inference(bundle, configs, phantom_root, tmp_path, overlaps=(0.0,))
    assert result["weights"].startswith("random") and result["roi"] == roi
    assert all(v >= r for v, r in zip(result["volume"], result["roi"]))
    configured, fast = result["settings"]["configured"], result["settings"]["overlap 0"]
    assert configured["strides"] == strides and fast["strides"] == roi
    assert configured["dice_vs_configured"] == 1.0 and 0.0 <= fast["dice_vs_configured"] <= 1.0
    assert fast["windows"] < configured["windows"] and "dice_vs_label" in fast
    acdc = config_files(MEAN_TEACHER, "cpu", ["configs/evaluate.json"])
    assert measure_inference(MEAN_TEACHER, acdc, phantom_root, tmp_path) is None  # slice-wise: no 3D window


@pytest.mark.slow
def test_cpu_peak_memory_comes_from_fresh_processes_and_sees_the_bigger_step(tmp_path):
    """Each kind is measured in its own process; Mean Teacher's step (twice the batch, plus a teacher pass) needs more
    transient memory than its labeled-only step."""
    configs = config_files(MEAN_TEACHER, "cpu", [])
    peaks = {kind: cpu_peak(MEAN_TEACHER, configs, kind, tmp_path, steps=1) for kind in ("method", "labeled_only")}
    for result in peaks.values():
        assert result["peak_reset"] is True and result["steps"] == 1
        assert 0 < result["peak_mib"] <= result["peak_rss_mib"] and result["rss_before_mib"] > 0
    assert peaks["method"]["peak_mib"] > peaks["labeled_only"]["peak_mib"], peaks


def test_a_stopped_benchmark_keeps_the_records_it_finished(tmp_path, monkeypatch):
    """Results are written after every record, so a run killed midway (here: the second record fails hard) leaves
    the first one in benchmark.json/benchmark.md, marked partial."""
    import semizoo.benchmark as benchmark

    calls = []

    def record(root, stage, shape, *args):
        calls.append(shape)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"bundle": root.name, "stage": stage or "train.json", "shape": shape, "error": "not measured here"}

    monkeypatch.setattr(benchmark, "_training_record", record)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(bundles=[str(MEAN_TEACHER)], out=tmp_path / "out", inference=False)
    saved = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert saved["complete"] is False and [r["shape"] for r in saved["training"]] == ["cpu"]
    assert (tmp_path / "out" / "benchmark.md").read_text().startswith("**Partial:**")
    assert not list((tmp_path / "out").glob(".*.partial"))
