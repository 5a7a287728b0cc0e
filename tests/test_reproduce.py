"""``python -m semizoo reproduce``: bounds, gap fraction, learning curves, method discovery, a shrunk end-to-end run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from semizoo.handlers import SegmentationReport
from semizoo.quickstart import discover_methods, phantom_data, plan_runs, run_quickstart
from semizoo.reproduce import data_label, gap_closed, learning_curve, reproduce_table, run_reproduce

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def _report(tmp_path: Path, name: str, keep: float, seed: int = 0) -> dict:
    """Two cases of a 2-class slice stack: 'lv' exact, 'rv' (8 columns) predicted on its first ``keep`` share."""
    report = SegmentationReport(tmp_path / name, {"1": "rv", "2": "lv"}, figures=False, settings={"seed": seed})
    for index in range(2):
        ref = np.zeros((2, 24, 24), np.int64)
        ref[:, 2:10, 2:10], ref[:, 12:20, 12:20] = 1, 2
        pred = ref.copy()
        pred[:, 2:10, 2 + round(8 * keep) : 10] = 0
        report.add_case(f"case{index}", pred, ref, (5.0, 1.5, 1.5))
    return report.write()


def _results(lower: dict, method: dict, upper: dict) -> dict:
    runs = lambda report: {"model.pt": [report], "model_final.pt": [report]}  # noqa: E731
    return {
        "dataset": "acdc",
        "budget": "cpu",
        "iterations_text": "10 iterations",
        "seeds": [0],
        "data": "phantom data",
        "fractions": {"lab3": 0.05},
        "full_setting": "full",
        "labels": {"lo": "labeled-only", "m": "Method", "up": "fully supervised"},
        "lower_of": {"m": "lo"},
        "upper_of": {"m": "up"},
        "settings": {"lab3": {"runs": {"lo": runs(lower), "m": runs(method)}}},
        "upper": {"runs": {"up": runs(upper)}},
    }


def test_gap_closed_is_the_share_of_the_bound_gap():
    assert gap_closed(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert gap_closed(0.5, 0.6, 1.0) == pytest.approx(-0.25)  # worse than the lower bound: negative
    assert gap_closed(0.7, 0.6, 0.6) is None  # no gap to close


def test_table_rows_paired_difference_and_gap_from_the_reports(tmp_path):
    lower, method, upper = _report(tmp_path, "lo", 0.5), _report(tmp_path, "m", 0.75), _report(tmp_path, "up", 1.0)
    table = reproduce_table(_results(lower, method, upper))
    # rv Dice = 2k/(1+k) for a prediction covering the first k of it; lv is exact, so the class mean is (rv + 1)/2
    dice = {k: (2 * k / (1 + k) + 1) / 2 for k in (0.5, 0.75, 1.0)}
    gap = (dice[0.75] - dice[0.5]) / (dice[1.0] - dice[0.5])
    assert f"| lab3 (5 %) | Method | method | {100 * dice[0.75]:.2f} " in table
    assert f"| {100 * gap:.0f} % |" in table
    diff = 100 * (dice[0.75] - dice[0.5])
    assert f"{diff:+.2f} ({diff:+.2f} to {diff:+.2f})" in table  # identical cases: a degenerate CI
    assert "| full (all) | fully supervised | upper bound | 100.00 (100.00–100.00) |" in table
    assert "| lab3 (5 %) | labeled-only | lower bound |" in table


def test_detection_table_scores_corloc_hits_and_has_no_surface_column():
    detection = lambda hits: {"summary": {"corloc_any": {"hits": hits}}}  # noqa: E731
    results = {**_results(detection([0, 0, 1, 0]), detection([1, 0, 1, 1]), detection([1, 1, 1, 1])), "dataset": "bus"}
    table = reproduce_table(results)
    lines = table.splitlines()
    assert "CorLoc (any)" in lines[0] and "HD95" not in table
    assert lines[2] == "| labelled | model | role | CorLoc % | CorLoc − lower bound (paired) | gap closed |"
    method = next(line for line in lines if "| Method |" in line)
    # 3 of 4 units hit against 1 of 4; the gap to the upper bound's 4 of 4: (0.75 - 0.25) / (1 - 0.25)
    assert method.startswith("| lab3 (5 %) | Method | method | 75.00 (") and "| +50.00 (" in method
    assert method.endswith("| 67 % |")
    assert len(method.split("|")) == len(lines[2].split("|"))


def test_several_seeds_average_per_case_and_each_seed_gets_its_own_score():
    detection = lambda hits: {"summary": {"corloc_any": {"hits": hits}}}  # noqa: E731
    results = _results(detection([0, 0, 1, 0]), detection([1, 0, 1, 1]), detection([1, 1, 1, 1]))
    results["dataset"], results["seeds"] = "bus", [0, 1]
    runs = results["settings"]["lab3"]["runs"]
    runs["m"]["model.pt"] = [detection([1, 0, 1, 1]), detection([0, 0, 1, 1])]  # seed 1 hits 2 of 4
    runs["lo"]["model.pt"] = [detection([0, 0, 1, 0]), detection([0, 0, 1, 0])]
    results["upper"]["runs"]["up"]["model.pt"] = [detection([1, 1, 1, 1])] * 2
    lines = reproduce_table(results).splitlines()
    assert lines[2] == (
        "| labelled | model | role | CorLoc % | CorLoc % per seed | CorLoc − lower bound (paired) | gap closed |"
    )
    method = next(line for line in lines if "| Method |" in line)
    # seed means 75 and 50; per unit (1, 0, 1, 1) and (0, 0, 1, 1) average to (0.5, 0, 1, 1): 62.50
    assert method.startswith("| lab3 (5 %) | Method | method | 62.50 (") and "| 75.00 / 50.00 | +37.50 (" in method
    lower = next(line for line in lines if "| lower bound |" in line)
    assert "| lower bound | 25.00 (" in lower and lower.endswith("| 25.00 / 25.00 |  |  |")
    assert len(method.split("|")) == len(lines[2].split("|"))
    results["seeds"] = [0]  # one seed: no per-seed column (the tables above)
    assert "per seed" not in reproduce_table(results, "model_final.pt")


def test_learning_curve_reads_validations_in_either_log_order():
    log = "\n".join(
        [
            "Epoch: 1/100, Iter: 10/40 -- loss: 1.0",
            "INFO Epoch[1] Metrics -- val_mean_dice: 0.2500 ",  # validation logged after its iteration's line
            "Epoch: 1/100, Iter: 30/40 -- loss: 0.9",
            "INFO Epoch[1] Metrics -- val_mean_dice: 0.5000 ",  # validation at 40 logged before iteration 40's line
            "Epoch: 1/100, Iter: 40/40 -- loss: 0.8",
            "Epoch: 2/100, Iter: 20/40 -- loss: 0.7",
            "INFO Epoch[2] Metrics -- val_mean_dice: 0.7500 ",
        ]
    )
    assert learning_curve(log, val_interval=10) == [(10, 0.25), (30, 0.5), (60, 0.75)]
    assert learning_curve(log, val_interval=20) == [(20, 0.25), (40, 0.5), (60, 0.75)]


def test_unknown_fraction_dataset_and_missing_datalists_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"acdc has no labelled setting of 0.2; choose fractions from \[0.05, 0.1\]"):
        run_reproduce("acdc", fractions=(0.2,), out=tmp_path)
    with pytest.raises(ValueError, match="reproduce knows the datasets"):
        run_reproduce("ixi", out=tmp_path)
    (tmp_path / "data" / "datalists").mkdir(parents=True)
    (tmp_path / "data" / "datalists" / "lab3.json").write_text("{}")
    with pytest.raises(ValueError, match=r"no datalists/\{full\}\.json"):
        run_reproduce("acdc", fractions=(0.05,), data_dir=tmp_path / "data", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_detection_reproduces_on_the_busi_phantoms_detection_lists_and_the_quick_start_points_there(tmp_path):
    runs = plan_runs(["wssdl"], "bus")
    assert [(r.key, r.stages, r.baseline) for r in runs] == [
        ("wssdl_labeled_only", (("strong_only.json",),), None),
        ("wssdl", ((),), "wssdl_labeled_only"),
    ]
    prepared = phantom_data("bus", tmp_path / "data", 24)
    strong = json.loads((prepared / "datalists" / "det_lab10pct.json").read_text())
    assert strong["labeled"] and strong["unlabeled"] and strong["test"]
    assert all("box" in item for item in strong["labeled"]) and all("box" not in item for item in strong["unlabeled"])
    with pytest.raises(ValueError, match=r"choose from \['acdc', 'busi', 'la', 'mnms'\].*reproduce --dataset bus"):
        run_quickstart(out=tmp_path / "qs", dataset="bus")
    assert not (tmp_path / "qs").exists()


def test_a_bundle_shipping_methods_json_takes_part_without_code_changes(tmp_path):
    root = tmp_path / "bundles"
    shutil.copytree(BUNDLES / "meanteacher_acdc_segmentation", root / "meanteacher_acdc_segmentation")
    shutil.copytree(BUNDLES / "action_acdc_segmentation", root / "action_acdc_segmentation")
    new = root / "newmethod_acdc_segmentation" / "configs"
    new.mkdir(parents=True)
    (new / "methods.json").write_text(
        json.dumps({"newmethod": {"label": "New", "dataset": "acdc", "seconds_per_iteration": [0.1]}})
    )
    methods = discover_methods(root)
    assert set(methods) == {"mean_teacher", "action", "actionpp", "newmethod"}
    assert methods["newmethod"].bundle == "newmethod_acdc_segmentation" and methods["newmethod"].stages == ((),)
    # a stages.json variant expands into its stage overrides; the bundle's train.json is the last, override-free one
    assert methods["actionpp"].stages == (
        ("pretrain_encoder.json",),
        ("pretrain_actionpp.json",),
        ("train_actionpp.json",),
    )
    assert methods["action"].stages[-1] == () and methods["action"].supervised_stages == 2

    (new / "methods.json").write_text(
        json.dumps({"mean_teacher": {"label": "X", "dataset": "acdc", "seconds_per_iteration": [1]}})
    )
    with pytest.raises(
        ValueError, match="method 'mean_teacher' is also declared by bundle meanteacher_acdc_segmentation"
    ):
        discover_methods(root)
    (new / "methods.json").write_text(
        json.dumps({"x": {"label": "X", "dataset": "acdc", "stages": [["a.json"], []], "seconds_per_iteration": [1]}})
    )
    with pytest.raises(
        ValueError,
        match=r"newmethod_acdc_segmentation/configs/methods.json: method 'x': 1 seconds_per_iteration for 2 stages",
    ):
        discover_methods(root)
    (new / "methods.json").write_text(json.dumps({"x": {"dataset": "acdc"}}))
    with pytest.raises(ValueError, match="method 'x' lacks label, seconds_per_iteration"):
        discover_methods(root)


def test_every_bundle_with_a_labeled_only_config_declares_its_methods():
    """A semi-supervised segmentation bundle without methods.json would silently drop out of the results tables."""
    declared = {m.bundle for m in discover_methods().values()}
    with_bound = {p.parents[1].name for p in BUNDLES.glob("*/configs/labeled_only.json")}
    assert with_bound <= declared


@pytest.mark.slow
def test_reproduce_trains_both_bounds_and_the_method_then_tabulates(tmp_path):
    results = run_reproduce("acdc", fractions=(0.05,), out=tmp_path, iterations=2, cases=10, methods=("mean_teacher",))
    assert set(results["settings"]["lab3"]["runs"]) == {"mean_teacher_labeled_only", "mean_teacher"}
    assert set(results["upper"]["runs"]) == {"mean_teacher_fully_supervised"}
    # the upper bound trained on the full list: every training patient is labelled there
    full = json.loads((tmp_path / "acdc_prepared" / "datalists" / "full.json").read_text())
    lab3 = json.loads((tmp_path / "acdc_prepared" / "datalists" / "lab3.json").read_text())
    assert len(full["labeled"]) > len(lab3["labeled"]) and not full["unlabeled"]
    table = (tmp_path / "reproduce.md").read_text()
    assert "| lab3 (5 %) | Mean Teacher | method |" in table and "| full (all) | fully supervised" in table
    for name in ("dice_bars.png", "learning_curves.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    # the validation curve of the two-iteration run: one validation (quickstart.json validates at max(1, N // 4))
    curve = results["curves"]["lab3"]["mean_teacher"]
    assert curve and all(0.0 <= dice <= 1.0 for _, dice in curve) and curve[-1][0] <= 2
    # a rerun reuses every finished model: nothing trains again
    before = {p: p.stat().st_mtime for p in tmp_path.glob("*/*/models/*.pt")}
    run_reproduce("acdc", fractions=(0.05,), out=tmp_path, iterations=2, cases=10, methods=("mean_teacher",))
    assert before and before == {p: p.stat().st_mtime for p in tmp_path.glob("*/*/models/*.pt")}


def test_a_prepared_data_dir_is_named_phantom_when_its_report_says_so(tmp_path):
    """``--data_dir`` of phantoms prepared by hand (e.g. the bench preset) must not be labelled real data."""
    phantom, real, bare = tmp_path / "phantom", tmp_path / "real", tmp_path / "bare"
    for folder, report in ((phantom, {"phantom": True}), (real, {"phantom": False}), (bare, None)):
        folder.mkdir()
        if report is not None:
            (folder / "prepare_report.json").write_text(json.dumps({"dataset": "busi", **report}))
    assert data_label(phantom) == f"phantom data from {phantom}"
    assert data_label(real) == f"real data from {real}"
    assert data_label(bare) == f"real data from {bare}"
