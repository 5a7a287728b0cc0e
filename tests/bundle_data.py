"""Prepared phantom datasets shared by the bundle harness (session-scoped, built once per test run), and scratch
bundles with random weights for the ecosystem tests (MONAI Label, MONAI Deploy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, SaveImaged
from semizoo.data.phantoms import generate
from semizoo.data.prepare import prepare

REPO = Path(__file__).resolve().parents[1]

# bundle name prefix -> dataset
DATASET_OF_BUNDLE = {"_acdc_": "acdc", "_la_": "la", "_mnms_": "mnms", "_busi_": "busi", "_bus_": "busi"}


def dataset_of(bundle: str) -> str:
    for marker, dataset in DATASET_OF_BUNDLE.items():
        if marker in f"_{bundle}_":
            return dataset
    raise KeyError(f"no phantom dataset known for bundle {bundle!r}; extend DATASET_OF_BUNDLE")


def prepared_phantoms(root: Path, dataset: str) -> Path:
    """Generate the ``test`` preset phantoms of ``dataset`` and prepare them under ``root``."""
    raw, out = root / f"{dataset}_raw", root / f"{dataset}_prepared"
    if not (out / "prepare_report.json").is_file():
        generate(dataset, raw, seed=0, preset="test")
        prepare(dataset, raw, out)
    return out


def scratch_bundle(name: str, root: Path) -> Path:
    """A copy of bundle ``name`` under ``root`` with the smoke values of ``smoke.json`` written into its inference
    and training configs (as a user edits a bundle) and seeded random weights of ``network_def`` in model.pt."""
    bundle = root / name
    shutil.copytree(REPO / "bundles" / name, bundle, ignore=shutil.ignore_patterns("eval", "*.pt", "*.ts"))
    smoke = json.loads((bundle / "configs" / "smoke.json").read_text())
    for config in ("inference.json", "train.json"):
        path = bundle / "configs" / config
        content = json.loads(path.read_text())
        content.update({k: v for k, v in smoke.items() if "#" not in k and k in content})
        path.write_text(json.dumps(content, indent=4) + "\n")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle


def bundle_prediction(bundle: Path, image: str | Path) -> np.ndarray:
    """The bundle's own inference pipeline (inference.json without SaveImaged, models/model.pt) on ``image``: the
    label map without its channel axis."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"], parser["device"] = str(bundle), "$torch.device('cpu')"
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    network.eval()
    item = parser.get_parsed_content("preprocessing")({"image": str(image)})
    with torch.no_grad():
        item["pred"] = parser.get_parsed_content("inferer")(item["image"][None], network)[0]
    post = parser.get_parsed_content("postprocessing")
    post = Compose([t for t in post.transforms if not isinstance(t, SaveImaged)])
    return np.asarray(post(item)["pred"])[0]


def rank_states_config(path: Path) -> Path:
    """An override config (at ``path``) whose ``finalize`` saves each DDP rank's network as ``rank<r>.pt``."""
    finalize = [
        "$torch.save(@network_def.state_dict(), @bundle_root + f'/rank{dist.get_rank()}.pt')",
        "$dist.is_initialized() and dist.destroy_process_group()",
    ]
    path.write_text(json.dumps({"finalize": finalize}))
    return path


def assert_ranks_in_step(root: Path, ranks: int = 2) -> None:
    """Every rank's ``rank<r>.pt`` under ``root`` holds the same parameters (DDP averaged every gradient);
    batch-norm buffers are per rank under DDP and are not compared."""
    states = [torch.load(root / f"rank{r}.pt", weights_only=True) for r in range(ranks)]
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    parameters = [key for key in states[0] if not key.endswith(statistics)]
    assert parameters and all(state.keys() == states[0].keys() for state in states)
    for rank, state in enumerate(states[1:], start=1):
        differ = [key for key in parameters if not torch.equal(states[0][key], state[key])]
        assert not differ, f"rank 0 and rank {rank} differ in {differ[:5]}"
