from pathlib import Path

import numpy as np
import pytest
from fire.parser import DefaultParseValue
from semizoo.handlers import SegmentationReport
from semizoo.quickstart import (
    METHODS,
    cli_value,
    per_class_table,
    plan_runs,
    results_table,
    run_quickstart,
    short_table,
)


def _report(tmp_path, name, shrink_rv: bool, seed: int = 0) -> dict:
    """Three 2-class cases: the reference has an 8x8 'rv' and 8x8 'lv'; the prediction keeps or halves 'rv'."""
    report = SegmentationReport(tmp_path / name, {"1": "rv", "2": "lv"}, figures=False, settings={"seed": seed})
    for index in range(3):
        ref = np.zeros((2, 24, 24), np.int64)
        ref[:, 2:10, 2:10], ref[:, 12:20, 12:20] = 1, 2
        pred = ref.copy()
        if shrink_rv:
            pred[:, 2:10, 2:6] = 0
        report.add_case(f"case{index}", pred, ref, (5.0, 1.5, 1.5))
    return report.write()


def test_results_table_reports_paired_difference_and_per_class_volumes(tmp_path):
    lower, method = _report(tmp_path, "lo", shrink_rv=False), _report(tmp_path, "mt", shrink_rv=True)
    results = {
        "setting": "lab3",
        "iterations": 10,
        "cases": 3,
        "size": 24,
        "runs": {"labeled_only": {"model.pt": [lower]}, "mean_teacher": {"model.pt": [method]}},
        "pairs": {"mean_teacher": "labeled_only"},
    }
    table = results_table(results) + "\n" + "\n".join(per_class_table(results))
    # halving the rv: Dice 2*32/(64+32) = 2/3 per slice, volume ratio 0.5; lv untouched
    assert "| mean_teacher | 0 | model.pt | 66.7 / 0.50 | 100.0 / 1.00 |" in table
    assert "| labeled_only | 0 | model.pt | 100.0 / 1.00 | 100.0 / 1.00 |" in table
    # class-mean Dice drops by (1 - 2/3) / 2 on every case: the paired difference is exact, its CI degenerate
    expected = 100 * (1 - 2 / 3) / 2
    assert f"mean_teacher − labeled_only, seed 0, model.pt: {-expected:+.2f} Dice points" in table
    assert lower["confusion"]["per_class"]["rv"]["volume_ratio"] == pytest.approx(1.0)


def test_short_table_pairs_each_method_with_its_own_bound(tmp_path):
    lower, method = _report(tmp_path, "lo", shrink_rv=False), _report(tmp_path, "mt", shrink_rv=True)
    ss_lower, ss = _report(tmp_path, "lo2", shrink_rv=True), _report(tmp_path, "ss", shrink_rv=False)
    results = {
        "setting": "lab3",
        "iterations": 10,
        "cases": 3,
        "size": 24,
        "labels": {"mt_lo": "labeled-only (MT)", "mt": "Mean Teacher", "ss_lo": "labeled-only (SS)", "ss": "SS-Net"},
        "pairs": {"mt": "mt_lo", "ss": "ss_lo"},
        "runs": {
            "mt_lo": {"model_final.pt": [lower]},
            "mt": {"model_final.pt": [method]},
            "ss_lo": {"model_final.pt": [ss_lower]},
            "ss": {"model_final.pt": [ss]},
        },
    }
    lines = [line for line in short_table(results).splitlines() if line.startswith("| ")]
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if " | last | " in line}
    assert len(rows) == 4
    delta = 100 * (1 - 2 / 3) / 2
    assert rows["Mean Teacher"].endswith(f"| {-delta:+.2f} ({-delta:+.2f} to {-delta:+.2f}) |")
    assert rows["SS-Net"].endswith(f"| {delta:+.2f} ({delta:+.2f} to {delta:+.2f}) |")
    assert rows["labeled-only (MT)"].endswith("| (bound) |")
    # Dice of the halved-rv model: class mean (2/3 + 1) / 2 on every case, so the CI is degenerate
    assert f"| {100 * (2 / 3 + 1) / 2:.2f} ({100 * (2 / 3 + 1) / 2:.2f}–" in rows["Mean Teacher"]


@pytest.mark.parametrize(
    "value", [False, True, None, 0.001, [64, 64, 48], {"use": False, "keep": None}, "$@max_iterations // 3"]
)
def test_overrides_reach_monai_bundle_run_with_their_python_type(value):
    # monai.bundle run parses its command line with Fire; JSON's "false" would arrive as a (truthy) string.
    assert DefaultParseValue(cli_value(value)) == value
    assert type(DefaultParseValue(cli_value(value))) is type(value)


def test_a_tuple_override_arrives_as_a_list():
    assert DefaultParseValue(cli_value((64, 48))) == [64, 48]


def test_plan_runs_pairs_bounds_with_methods_and_rejects_unknown_ones():
    runs = plan_runs(["ssnet", "mean_teacher"])
    assert [r.key for r in runs] == ["ssnet_labeled_only", "ssnet", "mean_teacher_labeled_only", "mean_teacher"]
    assert runs[1].baseline == "ssnet_labeled_only" and runs[0].stages == (("labeled_only.json",),)
    assert runs[1].stages == ((),) and runs[0].iterations_scale == runs[1].iterations_scale == 1
    assert {r.bundle for r in runs} == {METHODS["ssnet"].bundle, METHODS["mean_teacher"].bundle}
    with pytest.raises(ValueError, match="choose from"):
        plan_runs(["fixmatch"])


def test_multi_stage_methods_share_one_bound_with_as_many_supervised_iterations():
    """ACTION and ACTION++ train three stages of one bundle; their single labeled-only bound gets 2 x N iterations
    (stages 2 and 3 use the labels), and a method of another dataset is refused."""
    runs = plan_runs(["action", "actionpp"], dataset="acdc")
    assert [r.key for r in runs] == ["action_labeled_only", "action", "actionpp"]
    bound, action, actionpp = runs
    assert bound.iterations_scale == 2 and action.iterations_scale == actionpp.iterations_scale == 1
    assert action.baseline == actionpp.baseline == "action_labeled_only"
    assert action.stages == (("pretrain_encoder.json",), ("pretrain.json",), ())
    assert actionpp.stages[1:] == (("pretrain_actionpp.json",), ("train_actionpp.json",))
    assert len(action.step_seconds) == len(action.stages)
    assert {r.bundle for r in plan_runs(["action_la"], dataset="la")} == {"action_la_segmentation"}
    with pytest.raises(ValueError, match="trains on la, not acdc"):
        plan_runs(["action_la"], dataset="acdc")


def test_every_quick_start_stage_config_exists():
    for method in METHODS.values():
        configs = Path(__file__).resolve().parents[1] / "bundles" / method.bundle / "configs"
        for name in ["quickstart.json", method.lower_bound, *(c for stage in method.stages for c in stage)]:
            assert (configs / name).is_file(), f"{method.bundle}: configs/{name} missing"


@pytest.mark.slow
def test_the_readme_quick_start_runs_end_to_end_for_a_single_stage_bundle(tmp_path):
    """The README's main command, shrunk: phantom data, SS-Net and its labeled-only bound, training and evaluation
    through the bundle runner (single-stage bundles define no ``stage_output``; the quick start must not need it)."""
    results = run_quickstart(tmp_path / "qs", seeds=(0,), iterations=2, cases=10, methods=("ssnet",))
    assert set(results["runs"]) == {"ssnet_labeled_only", "ssnet"}
    for key in results["runs"]:
        for checkpoint in ("model_final.pt", "model.pt"):
            report = results["runs"][key][checkpoint][0]
            assert report["summary"]["voxel"]["dice"]["n"] + report["summary"]["voxel"]["dice"]["n_undefined"] > 0
    table = (tmp_path / "qs" / "results.md").read_text()
    assert "| SS-Net | 0 | last |" in table
