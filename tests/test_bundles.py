"""Bundle harness: every folder under bundles/ is checked and smoke-run on phantom data (bundle-checklist.md).

Per bundle, on a scratch copy: train (a few iterations, semi-supervised), evaluate (metrics and figures, model.pt
unchanged) and inference through ``python -m monai.bundle run`` in subprocesses started from another directory;
``ConfigWorkflow.check_properties()`` for train, train+evaluate, inference and every variant config; metadata against
the vendored schema; ``verify_net_in_out``; ``ckpt_export`` followed by ``torch.jit.load``; JSON and logging style.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from bundle_data import assert_ranks_in_step, dataset_of, prepared_phantoms, rank_states_config
from monai.bundle import ConfigWorkflow, verify_metadata
from semizoo import usage

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
SCHEMA = Path(__file__).parent / "schemas" / "meta_schema_20240725.json"
MAIN_CONFIGS = {"train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "smoke.json", "metadata.json"}
MAIN_CONFIGS |= {"stages.json", "methods.json"}  # stage order, declared methods (quick start, reproduce): not configs
EXEMPTIONS = yaml.safe_load((Path(__file__).parent / "bundle_exemptions.yml").read_text()) or {}


def exempt(name: str, check: str) -> bool:
    """Whether ``name`` skips ``check`` (tests/bundle_exemptions.yml gives the reason)."""
    return check in EXEMPTIONS.get(name, {})


pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("phantoms")


@pytest.fixture(scope="module", params=BUNDLES)
def bundle(request, tmp_path_factory, phantom_root):
    """(scratch bundle copy, prepared data dir, smoke-trained flag) for one bundle."""
    name = request.param
    scratch = tmp_path_factory.mktemp(name) / name
    shutil.copytree(REPO / "bundles" / name, scratch)
    yield name, scratch, prepared_phantoms(phantom_root, dataset_of(name))
    shutil.rmtree(scratch.parent, ignore_errors=True)  # checkpoints of 3D/two-network bundles fill CI's disk otherwise


def _configs(bundle_dir: Path, *names: str) -> str:
    return json.dumps([str(bundle_dir / "configs" / n) for n in names])


def _run(
    bundle_dir: Path, run_id: str, configs: str, data: Path, cwd: Path, *extra: str, progress: bool = False
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", configs]
    command += ["--bundle_root", str(bundle_dir), "--meta_file", str(bundle_dir / "configs" / "metadata.json")]
    command += ["--logging_file", str(bundle_dir / "configs" / "logging.conf"), "--dataset_dir", str(data), *extra]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SEMIZOO_PROGRESS"] = "1" if progress else "0"  # the bar draws on terminals only unless told
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _smoke_overrides(bundle_dir: Path, config: str) -> list[str]:
    """The smoke values of the top-level IDs that ``config`` defines (e.g. patch_size for inference.json)."""
    smoke = json.loads((bundle_dir / "configs" / "smoke.json").read_text())
    ids = json.loads((bundle_dir / "configs" / config).read_text())
    args = []
    for key, value in smoke.items():
        if "#" not in key and key in ids:
            args += [f"--{key}", json.dumps(value)]
    return args


def test_train_evaluate_infer_export(bundle, tmp_path):
    name, bundle_dir, data = bundle
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    configs = _configs(bundle_dir, "train.json", "smoke.json")
    result = _run(bundle_dir, "training", configs, data, elsewhere, "--tracking", "mlflow", progress=True)
    assert any(term in result.stdout for term in ("loss_cons", "loss_sup", "loss_ws"))  # the StatsHandler logged terms
    _check_tracking_and_feedback(bundle_dir, result.stderr)
    models = bundle_dir / "models"
    assert (models / "model.pt").is_file() and (models / "model_final.pt").is_file()
    assert list((bundle_dir / "eval" / "checkpoints").glob("checkpoint_iteration=*.pt"))
    assert not list(elsewhere.iterdir())  # nothing written where the command ran
    state = torch.load(models / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)

    before = _sha(models / "model.pt")
    configs = _configs(bundle_dir, "train.json", "smoke.json", "evaluate.json")
    result = _run(bundle_dir, "evaluating", configs, data, elsewhere, progress=True)
    assert _sha(models / "model.pt") == before
    assert re.search(r"evaluate: 100%\|[^|]*\| (\d+)/\1 \[", result.stderr)  # the evaluation's progress bar
    if exempt(name, "segmentation_report"):
        _check_detection_outputs(bundle_dir, data, elsewhere)
    else:
        report_dir = bundle_dir / "eval" / "model"
        report = json.loads((report_dir / "metrics.json").read_text())
        dice = report["summary"]["voxel"]["dice"]
        assert dice["n"] + dice["n_undefined"] == len(report["cases"])
        assert "mm" in report["summary"] and (report_dir / "metrics.csv").is_file()
        assert (report_dir / "overlays.png").stat().st_size > 0 and (report_dir / "boxplot_dice.png").is_file()
        smoke = _smoke_overrides(bundle_dir, "inference.json")
        _run(bundle_dir, "run", _configs(bundle_dir, "inference.json"), data, elsewhere, *smoke)
        assert list((bundle_dir / "eval" / "inference").glob("*_seg.nii.gz"))

    # the smoke values of inference.json's IDs (e.g. EPL's network_width) build the network that smoke training saved
    smoke = _smoke_overrides(bundle_dir, "inference.json")
    meta = ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", *smoke]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    commands = [[*usage.export_torchscript(bundle_dir, python=sys.executable), *smoke]]  # the "Use it" command
    if not exempt(name, "verify_net_in_out"):
        commands.insert(0, [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", *meta])
    for command in commands:
        result = subprocess.run(command, cwd=bundle_dir, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(models / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] and json.loads(extra["inference.json"])
    assert isinstance(scripted, torch.jit.ScriptModule)
    if exempt(name, "verify_net_in_out"):  # no fixed output shape to verify: the scripted detector must equal eager
        _check_scripted_detector(bundle_dir, scripted)


def _check_scripted_detector(bundle_dir: Path, scripted: torch.jit.ScriptModule) -> None:
    """The TorchScript detector returns the eager network's boxes, labels and scores on images of two sizes."""
    workflow = ConfigWorkflow(
        config_file=str(bundle_dir / "configs" / "inference.json"),
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        workflow_type="infer",
        **{k.lstrip("-"): json.loads(v) for k, v in zip(*[iter(_smoke_overrides(bundle_dir, "inference.json"))] * 2)},
    )
    network = workflow.parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle_dir / "models" / "model.pt", weights_only=True))
    network.eval()
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 90, 120, generator=generator), torch.rand(1, 110, 100, generator=generator)]
    eager, compiled = network(images), scripted(images)
    assert len(eager) == len(compiled) == 2
    for mine, theirs in zip(eager, compiled):
        assert mine.keys() == theirs.keys() == {"boxes", "labels", "scores"}
        for key in mine:
            torch.testing.assert_close(mine[key], theirs[key])


def _check_tracking_and_feedback(bundle_dir: Path, stderr: str) -> None:
    """Issue 12, item 6, for a smoke training run with ``--tracking mlflow`` and the progress bar on: the bar over
    every iteration with its ETA and loss terms, MLflow's record in MONAI's default store (eval/mlruns.db), the
    learning curves and the sample predictions."""
    from mlflow.tracking import MlflowClient

    train = json.loads((bundle_dir / "configs" / "train.json").read_text())
    smoke = json.loads((bundle_dir / "configs" / "smoke.json").read_text())
    iterations = smoke.get("max_iterations", train["max_iterations"])
    bar = rf"train: 100%\|[^|]*\| {iterations}/{iterations} \[[0-9:]+<[0-9:]+, [^]]*loss="
    assert re.search(bar, stderr), stderr[-2000:]

    key_metric = next(iter(train["validate"]["key_metric"]))
    client = MlflowClient(f"sqlite:///{bundle_dir / 'eval' / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("monai_experiment").experiment_id])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == list(range(1, iterations + 1))
    assert key_metric in run.data.metrics
    assert any(a.path.startswith("config_") for a in client.list_artifacts(run.info.run_id))

    history = json.loads((bundle_dir / "eval" / "learning_curves.json").read_text())
    assert history["loss"]["loss"][-1][0] == iterations and history["validation"][key_metric]
    for figure in ("learning_curves.png", "sample_predictions.png"):
        assert (bundle_dir / "eval" / figure).stat().st_size > 0


def _check_detection_outputs(bundle_dir: Path, data: Path, elsewhere: Path) -> None:
    """Detection bundles: the CorLoc report of the evaluated checkpoint and one boxes file per inferred image."""
    evaluate = json.loads((bundle_dir / "configs" / "evaluate.json").read_text())
    stem = evaluate["ckpt_file"].split("/")[-1].split(".")[0]
    report = json.loads((bundle_dir / "eval" / stem / "metrics.json").read_text())
    summary = report["summary"]
    assert summary["corloc_any"]["n"] >= 1 and 0.0 <= summary["corloc_any"]["mean"] <= 1.0
    assert summary["corloc_top1"]["n"] == summary["lesion_images"]
    assert (bundle_dir / "eval" / stem / "detections.png").stat().st_size > 0
    detections = json.loads((bundle_dir / "eval" / stem / "detections.json").read_text())
    assert len(detections) == summary["images"]
    _run(
        bundle_dir,
        "run",
        _configs(bundle_dir, "inference.json"),
        data,
        elsewhere,
        *_smoke_overrides(bundle_dir, "inference.json"),
    )
    written = sorted((bundle_dir / "eval" / "inference").glob("*_det.json"))
    assert len(written) == summary["images"]
    for path in written:
        record = json.loads(path.read_text())
        assert len(record["boxes"]) == len(record["labels"]) == len(record["scores"])
        assert all(label in (1, 2) for label in record["labels"])


def _workflow(bundle_dir: Path, data: Path, workflow_type: str, *configs: str, **override) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=[str(bundle_dir / "configs" / c) for c in configs],
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        logging_file=str(bundle_dir / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle_dir),
        dataset_dir=str(data),
        **override,
    )
    workflow.initialize()
    return workflow


def test_check_properties_of_every_config(bundle):
    name, bundle_dir, data = bundle
    cases = [("train", ("train.json", "smoke.json")), ("train", ("train.json", "smoke.json", "evaluate.json"))]
    cases += [("infer", ("inference.json",))]
    variants = sorted(p.name for p in (bundle_dir / "configs").glob("*.json") if p.name not in MAIN_CONFIGS)
    assert variants, f"{name} ships no variant configs (labeled-only / fully supervised bounds)"
    cases += [("train", ("train.json", "smoke.json", variant)) for variant in variants]
    _train_previous_stages(bundle_dir, data, variants)
    for workflow_type, configs in cases:
        workflow = _workflow(bundle_dir, data, workflow_type, *configs)
        assert workflow.check_properties() in ([], None), (configs, workflow.check_properties())


def _train_previous_stages(bundle_dir: Path, data: Path, variants: list[str]) -> None:
    """A later stage's config may read what the stages before it wrote (WSSDL self-training detects with the initial
    model while its data lists are built): train those stages (smoke) when their output is missing."""
    from semizoo.stages import config_value

    stages_file = bundle_dir / "configs" / "stages.json"
    plans = json.loads(stages_file.read_text()).values() if stages_file.is_file() else []
    for plan in plans:
        for index, stage in enumerate(plan[1:], start=1):
            if stage not in variants:
                continue
            for previous in plan[:index]:
                configs = ["train.json", "smoke.json"] + ([] if previous == "train.json" else [previous])
                paths = [str(bundle_dir / "configs" / c) for c in configs]
                output = Path(config_value(bundle_dir, paths, {"dataset_dir": str(data)}, "stage_output"))
                if not output.is_file():
                    _run(bundle_dir, "training", json.dumps(paths), data, bundle_dir)


def test_labeled_only_fallback_trains(bundle, tmp_path):
    """MONAI Label trains with labeled data only: an empty unlabeled list must fall back to supervised steps."""
    name, bundle_dir, data = bundle
    workflow = _workflow(
        bundle_dir,
        data,
        "train",
        "train.json",
        "smoke.json",
        **{
            "train#unlabeled_dataset#data": [],
            "ckpt_dir": str(tmp_path / "models"),
            "output_dir": str(tmp_path / "eval"),
            "max_iterations": 2,
        },
    )
    workflow.run()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 2
    assert trainer.state.batch[1] is None
    assert (tmp_path / "models" / "model_final.pt").is_file()


def test_metadata_and_style(bundle, tmp_path):
    name, bundle_dir, _ = bundle
    schema = tmp_path / "schema.json"
    shutil.copy(SCHEMA, schema)
    verify_metadata(meta_file=str(bundle_dir / "configs" / "metadata.json"), filepath=str(schema))
    meta = json.loads((bundle_dir / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert list(meta["network_data_format"]["inputs"]) == ["image"] and list(
        meta["network_data_format"]["outputs"]
    ) == ["pred"]
    for path in (bundle_dir / "configs").glob("*.json"):
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=4) + "\n", f"{path.name} is not 4-space formatted JSON"
    from monai.bundle.workflows import _reject_executable_logging_config

    _reject_executable_logging_config(str(bundle_dir / "configs" / "logging.conf"))
    for required in ("LICENSE", "docs/README.md", "docs/data_license.txt", "models/.gitkeep"):
        assert (REPO / "bundles" / name / required).is_file(), required
    train = json.loads((bundle_dir / "configs" / "train.json").read_text())
    assert "'test'" not in json.dumps(train), "train.json must never read the test split"
    assert train["training"] == train["run"]


def test_multi_stage_bundles_chain_their_stages(bundle, tmp_path):
    """``python -m semizoo stages`` trains every stage of every variant in order, each from the previous output."""
    name, _, data = bundle
    bundle_dir = tmp_path / name  # a fresh copy: the module's scratch copy already holds smoke outputs
    shutil.copytree(REPO / "bundles" / name, bundle_dir)
    stages_file = bundle_dir / "configs" / "stages.json"
    if not stages_file.is_file():
        assert name.split("_")[0] not in {"action"}, f"{name} is a multi-stage method but has no configs/stages.json"
        return
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outputs = {}
    for variant in json.loads(stages_file.read_text()):
        command = [sys.executable, "-m", "semizoo", "stages", str(bundle_dir), "--variant", variant]
        command += ["--override", "configs/smoke.json", "--dataset_dir", str(data)]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
        outputs[variant] = [line for line in result.stdout.splitlines() if line.startswith("/")]
        log = result.stdout + result.stderr
        # every stage after the first starts from the previous one: its weights, or its pseudo boxes (self-training)
        assert log.count("initialised from") + log.count("pseudo boxes from") == len(outputs[variant]) - 1, log[-3000:]
        assert all(Path(path).is_file() for path in outputs[variant])
    shared_first = {tuple(paths[:1]) for paths in outputs.values()}
    assert len(shared_first) == 1  # variants share stage 1, trained once
    final = {paths[-1] for paths in outputs.values()}
    assert len(final) == len(outputs)  # each variant writes its own model
    for path in final:
        state = torch.load(path, weights_only=True)
        assert not any(k.startswith("module.") for k in state)


def _two_rank_la_datalist(data: Path, tmp_path: Path) -> Path:
    """The LA test phantoms' ``lab4`` with a second labelled volume and a second validation case.

    Two ranks need a global labelled batch of two (the data check refuses fewer: tests/test_validate.py) and at least
    one validation case each (MONAI's ``DistributedSampler``); the phantom's ``lab4`` has one of each. The UA-MT h5
    files hold the label of every case, so an unlabelled case is promoted and a test case becomes a validation one.
    """
    content = json.loads((data / "datalists" / "lab4.json").read_text())
    absolute = [
        [{**entry, **{k: str(data / entry[k]) for k in ("image", "label") if k in entry}} for entry in content[split]]
        for split in ("labeled", "unlabeled", "validation", "test")
    ]
    labeled, unlabeled, validation, test = absolute
    labeled.append({**unlabeled[0], "label": unlabeled[0]["image"]})
    content.update(labeled=labeled, unlabeled=unlabeled[1:], validation=validation + test[:1], test=test[1:])
    (tmp_path / "prepare_report.json").write_text("{}")  # marks the folder the (absolute) paths start from
    datalist = tmp_path / "two_rank_lab4.json"
    datalist.write_text(json.dumps(content))
    return datalist


def test_torchrun_two_ranks_train_in_step(bundle, tmp_path):
    """``multi_gpu_train.json`` under ``torchrun --nproc_per_node 2`` on CPU (gloo), launched with the command of
    the bundle's "Use it" section (semizoo.usage): both ranks train the same parameters (DDP averages every gradient),
    only rank 0 writes the model and checkpoint files."""
    name, bundle_dir, data = bundle
    root = tmp_path / "ddp_bundle"
    shutil.copytree(bundle_dir / "configs", root / "configs")
    (root / "models").mkdir()
    extra = [root / "configs" / "smoke.json", rank_states_config(tmp_path / "save_ranks.json")]
    launcher = [sys.executable, "-m", "torch.distributed.run"]  # the `torchrun` entry point of this venv
    command = usage.torchrun_single_node(root, data, 2, launcher=launcher, extra_configs=extra)
    command += ["--max_iterations", "2"]
    if dataset_of(name) == "la":
        command += ["--datalist", str(_two_rank_la_datalist(data, tmp_path))]
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert any(term in result.stdout for term in ("loss_cons", "loss_sup", "loss_ws"))  # rank 0 logged its steps
    assert_ranks_in_step(root)
    assert sorted(p.name for p in (root / "models").iterdir()) == ["model.pt", "model_final.pt"]
    assert len(list((root / "eval" / "tensorboard").glob("events.*"))) == 1  # one writer: rank 0
