"""ACTION bundles: the official-code defaults and the paper/intent alternatives are runnable configs (action.md §7),
and the benchmark times every stage of a multi-stage bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from semizoo.benchmark import stage_configs, step_cost
from semizoo.stages import config_value

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
ACTION_BUNDLES = ["action_acdc_segmentation", "action_la_segmentation"]
PRETRAIN_STAGES = ["pretrain_encoder.json", "pretrain.json", "pretrain_actionpp.json"]


def _method(bundle: str, *configs: str, key: str):
    root = BUNDLES / bundle
    return config_value(root, [str(root / "configs" / c) for c in ("train.json", *configs)], {}, f"method#{key}")


@pytest.mark.parametrize("bundle", ACTION_BUNDLES)
def test_defaults_follow_the_official_code_and_intent_json_the_paper(bundle):
    """§7.7–7.9: window rows as the official reshapes lay them out, KL targets not detached, teacher in train mode,
    ACTION ACDC's discarded ISD call kept, ACTION++ centres from the official optimisation (§5); ``intent.json`` flips
    each one, in every stage that has it. §7.10: the
    default fixes the intensity quirks and ``official_intensity.json`` reproduces them."""
    for stage in PRETRAIN_STAGES:
        flags = ("patch_layout", "detach_teacher_targets", "teacher_eval_mode", "view_compat")
        assert [_method(bundle, stage, key=k) for k in flags] == ["official", False, False, "fixed"], stage
        assert [_method(bundle, "intent.json", stage, key=k) for k in flags] == ["aligned", True, True, "fixed"]
        assert _method(bundle, "official_intensity.json", stage, key="view_compat") == "official"
    official_isd = bundle == "action_acdc_segmentation"  # the discarded call exists only in ACTION's ACDC script
    assert _method(bundle, key="isd_side_effects") is official_isd
    assert _method(bundle, "intent.json", key="isd_side_effects") is False
    assert _method(bundle, "train_actionpp.json", key="isd_side_effects") is False
    assert _method(bundle, key="intensity_compat") == "fixed"
    assert _method(bundle, "official_intensity.json", key="intensity_compat") == "official"
    assert _method(bundle, "official_intensity.json", "train_actionpp.json", key="intensity_compat") == "official"
    # ACTION++'s class centres: the official optimisation by default, the exact regular simplex in intent.json
    assert _method(bundle, "train_actionpp.json", key="tsc_centre_method") == "optimised"
    assert _method(bundle, "intent.json", "train_actionpp.json", key="tsc_centre_method") == "simplex"


def test_benchmark_lists_each_stage_once_and_times_a_stage_at_its_own_batch(tmp_path):
    assert stage_configs("ssnet_acdc_segmentation") == [None]
    assert stage_configs("action_acdc_segmentation") == [
        "pretrain_encoder.json",
        "pretrain.json",
        None,
        "pretrain_actionpp.json",
        "train_actionpp.json",
    ]
    # the pre-training batch (3 + 3 here) differs from stage 3's (smoke: 2 + 2): the stage config sets what is timed
    batches = tmp_path / "batches.json"
    batches.write_text(json.dumps({"pretrain_batch_size": 6, "pretrain_unlabeled_batch_size": 3, "queue_size": 6}))
    overrides = ["smoke.json", str(batches), "pretrain_encoder.json"]
    result = step_cost("action_acdc_segmentation", overrides, iterations=1, warmup=1, blocks=2)
    assert result["batch"] == {"labeled": 3, "unlabeled": 3, "patch": [32, 32]}
    assert result["steps_timed"] == {"method": 2, "labeled_only": 2}
    stage3 = step_cost("action_acdc_segmentation", overrides[:2], iterations=1, warmup=1, blocks=2)
    assert stage3["batch"] == {"labeled": 2, "unlabeled": 2, "patch": [32, 32]}
