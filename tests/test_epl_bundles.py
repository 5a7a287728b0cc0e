"""EPL bundles: every variant config reaches the method with the flags it names and trains end to end through the
bundle runner on phantom data (epl.md §6, §9); the M&Ms bundle reads the datalist of its target vendor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bundle_data import prepared_phantoms
from semizoo.stages import config_value

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
VARIANTS = {
    "epl_mnms_segmentation": {
        "train.json": {"cutmix": True, "dual_level": False, "per_pixel": False},
        "no_cutmix.json": {"cutmix": False, "dual_level": False},
        "dual_level.json": {"cutmix": False, "dual_level": True},
        "paper.json": {"per_pixel": True, "ce_on": "ensemble", "pseudo_from": "probs"},
        "lab2pct.json": {"cutmix": True},
    },
    "epl_busi_segmentation": {
        "train.json": {"cutmix": True, "dual_level": False},
        "train_dual.json": {"cutmix": False, "dual_level": True, "gamma": 1.0},
        "no_cutmix.json": {"cutmix": False, "dual_level": False},
        "paper.json": {"per_pixel": True, "ce_on": "ensemble", "pseudo_from": "probs"},
        "lab50pct.json": {"cutmix": True},
    },
}


def _value(bundle: str, config: str, key: str, **overrides):
    root = BUNDLES / bundle
    configs = [str(root / "configs" / "train.json")] + (
        [str(root / "configs" / config)] if config != "train.json" else []
    )
    return config_value(root, configs, overrides, key)


@pytest.mark.parametrize("bundle", sorted(VARIANTS))
def test_variant_flags_reach_the_method(bundle):
    for config, flags in VARIANTS[bundle].items():
        for key, value in flags.items():
            assert _value(bundle, config, f"method#{key}") == value, (config, key)
    assert _value("epl_mnms_segmentation", "train.json", "setting") == "targetD_5pct"
    assert _value("epl_mnms_segmentation", "lab2pct.json", "setting", target_vendor="A") == "targetA_2pct"
    assert _value("epl_busi_segmentation", "lab50pct.json", "setting") == "seg_lab50pct"
    # with CutMix the unlabelled batch holds u0 and u1; without it only u0 is loaded
    assert _value("epl_mnms_segmentation", "train.json", "unlabeled_batch_size") == 64
    assert _value("epl_mnms_segmentation", "no_cutmix.json", "unlabeled_batch_size") == 32


@pytest.mark.parametrize("bundle", sorted(VARIANTS))
def test_initial_weights_start_both_networks_from_a_saved_pair(bundle, tmp_path):
    """``initial_weights`` (e.g. the labelled-only pair's ``models/model_final.pt``) is what training starts from:
    every tensor of the built pair equals the file's; unset, the pair keeps its own initialisation."""
    from monai.bundle import ConfigParser

    def built_network(**overrides):
        parser = ConfigParser()
        parser.read_config([str(BUNDLES / bundle / "configs" / c) for c in ("train.json", "smoke.json")])
        parser.update({"bundle_root": str(BUNDLES / bundle), "device": "$torch.device('cpu')", **overrides})
        return parser.get_parsed_content("network")

    torch.manual_seed(1)
    saved = built_network().state_dict()
    torch.save(saved, tmp_path / "model_final.pt")
    torch.manual_seed(2)
    started = built_network(initial_weights=str(tmp_path / "model_final.pt")).state_dict()
    assert started.keys() == saved.keys() and all(torch.equal(started[k], saved[k]) for k in saved)
    torch.manual_seed(2)
    fresh = built_network().state_dict()
    assert not torch.equal(fresh["left.classifier.weight"], saved["left.classifier.weight"])


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(VARIANTS))
def test_every_variant_trains_through_the_bundle_runner(bundle, tmp_path_factory):
    data = prepared_phantoms(tmp_path_factory.getbasetemp() / "phantoms", "mnms" if "mnms" in bundle else "busi")
    for config in VARIANTS[bundle]:
        work = tmp_path_factory.mktemp(config.replace(".json", ""))
        root = work / bundle
        shutil.copytree(BUNDLES / bundle, root)
        configs = [str(root / "configs" / c) for c in dict.fromkeys(["train.json", config, "smoke.json"])]
        command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(configs)]
        command += ["--bundle_root", str(root), "--dataset_dir", str(data), "--network_width", "8"]
        command += ["--max_iterations", "1", "--val_interval", "1"]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        result = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, f"{config}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        state = torch.load(root / "models" / "model_final.pt", weights_only=True)
        assert any(k.startswith("left.") for k in state) and any(k.startswith("right.") for k in state)
        shutil.rmtree(work)
