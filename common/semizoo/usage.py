"""The "Use it" commands of every bundle (issue 12): one builder per task, shared by the docs and the tests.

Each builder returns the argv of one command. :func:`use_it_section` renders them with shell placeholders (``$B``
the bundle folder, ``$D`` the prepared dataset, ``$N`` GPUs per node, ``$HOST`` the rendezvous node, ``$OUT`` and
``$CASE``) into the Markdown section that each bundle's docs/README.md carries verbatim (tests/test_usage.py checks
it; ``python -m semizoo usage BUNDLE`` prints it). The tests that run a command call the same builder with real paths
and add only test-sized overrides (smoke.json, a scratch datalist), so a command shown in a README is the command a
test ran; the section names that test.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Sequence, Union

import yaml

__all__ = [
    "config_list",
    "torchrun_single_node",
    "torchrun_multi_node",
    "fetch_weights",
    "export_torchscript",
    "export_bundle",
    "deploy",
    "monai_label_server",
    "monai_label_trains",
    "use_it_section",
]

PathLike = Union[str, os.PathLike]
TORCHRUN = ("torchrun",)
PYTHON = "python"
DEPLOY_PYTHON = ".venv-deploy/bin/python"
DEPLOY_APP = "scripts/deploy_app.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
EXEMPTIONS_FILE = REPO_ROOT / "tests" / "bundle_exemptions.yml"


def config_list(paths: Sequence[PathLike]) -> str:
    """MONAI's ``--config_file`` value for several files: a Python list literal, which fire parses."""
    return "[" + ",".join(f"'{os.fspath(p)}'" for p in paths) + "]"


def _training(bundle: PathLike, dataset_dir: PathLike, extra_configs: Sequence[PathLike]) -> list[str]:
    configs = [f"{os.fspath(bundle)}/configs/{name}" for name in ("train.json", "multi_gpu_train.json")]
    return [
        *("-m", "monai.bundle", "run", "training", "--config_file", config_list([*configs, *extra_configs])),
        *("--bundle_root", os.fspath(bundle), "--dataset_dir", os.fspath(dataset_dir)),
    ]


def torchrun_single_node(
    bundle: PathLike,
    dataset_dir: PathLike,
    nproc: int | str,
    launcher: Sequence[str] = TORCHRUN,
    extra_configs: Sequence[PathLike] = (),
) -> list[str]:
    """``multi_gpu_train.json`` on ``nproc`` processes of one node (one per GPU; gloo on CPU)."""
    return [*launcher, "--standalone", f"--nproc_per_node={nproc}", *_training(bundle, dataset_dir, extra_configs)]


def torchrun_multi_node(
    bundle: PathLike,
    dataset_dir: PathLike,
    nnodes: int | str,
    nproc: int | str,
    endpoint: str,
    launcher: Sequence[str] = TORCHRUN,
    extra_configs: Sequence[PathLike] = (),
    rdzv_id: str = "semizoo",
) -> list[str]:
    """The same run over ``nnodes`` nodes: every node starts this command; c10d rendezvous at ``endpoint``."""
    return [
        *launcher,
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={endpoint}",
        f"--rdzv_id={rdzv_id}",
        *_training(bundle, dataset_dir, extra_configs),
    ]


def fetch_weights(bundle: PathLike, python: str = PYTHON) -> list[str]:
    """Download the bundle's released weights (large_files.yml), verify their hashes, write models/model.pt."""
    return [python, "-m", "semizoo", "fetch-weights", os.fspath(bundle)]


def export_torchscript(bundle: PathLike, python: str = PYTHON) -> list[str]:
    """``models/model.pt`` to ``models/model.ts`` with the metadata and inference config embedded."""
    b = os.fspath(bundle)
    return [
        *(python, "-m", "monai.bundle", "ckpt_export", "network_def", "--bundle_root", b),
        *("--filepath", f"{b}/models/model.ts", "--ckpt_file", f"{b}/models/model.pt"),
        *("--meta_file", f"{b}/configs/metadata.json", "--config_file", f"{b}/configs/inference.json"),
    ]


def export_bundle(bundle: PathLike, out: PathLike, python: str = PYTHON) -> list[str]:
    """The bundle with semizoo vendored inside, runnable where semizoo is not installed."""
    return [python, "-m", "semizoo", "export-bundle", os.fspath(bundle), "--out", os.fspath(out)]


def deploy(
    bundle: PathLike, image: PathLike, out: PathLike, python: str = DEPLOY_PYTHON, app: PathLike = DEPLOY_APP
) -> list[str]:
    """The example MONAI Deploy application on one NIfTI volume (needs models/model.ts)."""
    return [
        python,
        os.fspath(app),
        "--bundle",
        os.fspath(bundle),
        "--input",
        os.fspath(image),
        "--output",
        os.fspath(out),
    ]


def monai_label_server(app: PathLike, studies: PathLike, name: str) -> list[str]:
    """MONAI Label's server with the monaibundle app serving bundle ``name`` from the app's model folder."""
    return [
        "monailabel",
        "start_server",
        "--app",
        os.fspath(app),
        "--studies",
        os.fspath(studies),
        "--conf",
        "models",
        name,
    ]


# why MONAI Label's BundleTrainTask, which trains from a datastore's image/label pairs alone, cannot train a bundle
MONAI_LABEL_TRAINING_GAPS = {
    "action_": "training is not tested: train.json is ACTION's last stage and starts from the pre-training checkpoints",
    "epl_": "training is not: EPL needs its datalist (the Fourier target pool), which MONAI Label does not give",
    "wssdl_": "detection",
}


def monai_label_trains(name: str) -> bool:
    """Whether MONAI Label's ``BundleTrainTask`` can train bundle ``name`` (:data:`MONAI_LABEL_TRAINING_GAPS`)."""
    return not name.startswith(tuple(MONAI_LABEL_TRAINING_GAPS))


def shell(argv: Sequence[str]) -> str:
    """One command line; arguments with quotes or brackets are double-quoted so that ``$B`` still expands."""
    parts = []
    for arg in argv:
        if any(c in arg for c in "'[] ") and '"' not in arg:
            parts.append(f'"{arg}"')
        elif arg.startswith("$") or arg.startswith("--") or "$" in arg:
            parts.append(arg)
        else:
            parts.append(shlex.quote(arg))
    return " ".join(parts)


def _exemptions(name: str) -> dict[str, str]:
    if not EXEMPTIONS_FILE.is_file():
        return {}
    return (yaml.safe_load(EXEMPTIONS_FILE.read_text()) or {}).get(name, {}) or {}


def _block(*commands: list[str]) -> list[str]:
    return ["```bash", *(shell(c) for c in commands), "```"]


def use_it_section(bundle: PathLike) -> str:
    """The "Use it" Markdown section of ``bundle`` (a folder under bundles/), ending with a newline."""
    bundle = Path(bundle)
    name = bundle.name
    exempt = _exemptions(name)
    weights = (bundle / "large_files.yml").is_file() and bool(
        (yaml.safe_load((bundle / "large_files.yml").read_text()) or {}).get("large_files")
    )
    lines = [
        "## Use it",
        "",
        f"`B=bundles/{name}` (or an `export-bundle` copy of it) and `D` the prepared dataset, as in Training. "
        "Generated by `python -m semizoo usage " + name + "`; the test named under each command runs that command.",
        "",
        "**N GPUs on one node** (NCCL on GPUs, gloo on CPU; only rank 0 logs and writes checkpoints); "
        "`tests/test_bundles.py::test_torchrun_two_ranks_train_in_step`:",
        "",
        *(
            [
                "This bundle trains in stages (`configs/stages.json`, see Training): the commands below run the last "
                "one; for an earlier stage, put its config between `train.json` and `multi_gpu_train.json`.",
                "",
            ]
            if (bundle / "configs" / "stages.json").is_file()
            else []
        ),
        *_block(torchrun_single_node("$B", "$D", "$N")),
        "",
        "**Several nodes**: the same command on every node, `$HOST` being the first; "
        "`tests/test_usage.py::test_two_node_rendezvous_trains`:",
        "",
        *_block(torchrun_multi_node("$B", "$D", 2, "$N", "$HOST:29500")),
        "",
    ]
    if weights:
        lines += [
            "**Released weights** (hash-checked, written atomically, converted into `models/model.pt`); "
            "`tests/test_fetch.py::test_fetch_weights_command_downloads_verifies_and_converts`:",
            "",
            *_block(fetch_weights("$B")),
            "",
        ]
    else:
        lines += ["**Released weights**: none published for this method; train with the commands above.", ""]
    if "torchscript" in exempt:
        lines += [f"**TorchScript**: not supported: {exempt['torchscript'].strip()}.", ""]
    else:
        lines += [
            "**TorchScript** (`models/model.ts`); the bundle harness "
            "(`tests/test_bundles.py::test_train_evaluate_infer_export`):",
            "",
            *_block(export_torchscript("$B")),
            "",
        ]
    lines += [
        "**Self-contained bundle** (semizoo vendored; what MONAI Label and MONAI Deploy load); "
        "`tests/test_export.py::test_exported_bundle_runs_its_smoke_chain_without_semizoo`:",
        "",
        *_block(export_bundle("$B", "$OUT")),
        "",
    ]
    if "monai_deploy" in exempt or "torchscript" in exempt:
        reason = exempt.get("monai_deploy", "the application runs models/model.ts, which this bundle cannot export")
        lines += [f"**MONAI Deploy**: not supported: {reason.strip()}.", ""]
    else:
        lines += [
            "**MONAI Deploy** (after the TorchScript export; `bash scripts/setup_venv.sh` builds `.venv-deploy`); "
            "`tests/test_deploy.py::test_deploy_app_writes_the_bundle_pipeline_prediction`:",
            "",
            *_block(deploy("$B", "$CASE.nii.gz", "$OUT")),
            "",
        ]
    if "monai_label" in exempt:
        lines += [f"**MONAI Label**: not supported: {exempt['monai_label'].strip()}.", ""]
    else:
        tasks = "`BundleInferTask` and `BundleTrainTask` run" if monai_label_trains(name) else "`BundleInferTask` runs"
        gap = next((text for prefix, text in MONAI_LABEL_TRAINING_GAPS.items() if name.startswith(prefix)), None)
        trains = f"; {gap}" if gap else ""
        lines += [
            "**MONAI Label**: export into the `monaibundle` app's model folder and serve it. MONAI Label's "
            f"task classes for `--conf models` ({tasks} on this bundle in `tests/test_monailabel.py`"
            f"{trains}); the tests do not install the server (its requirements pin numpy < 2):",
            "",
            *_block(
                export_bundle("$B", f"apps/monaibundle/model/{name}"),
                monai_label_server("apps/monaibundle", "$STUDIES", name),
            ),
            "",
        ]
    lines += [
        "**Tracking**: TensorBoard logs go to `eval/tensorboard`; add `--tracking mlflow` to a training command for "
        "MLflow (MONAI's default store `eval/mlruns.db`; `pip install -e .[tracking]`). A progress bar with the loss "
        "terms and the time left shows on a terminal (`SEMIZOO_PROGRESS=1`/`0` forces it), and training ends with "
        "`eval/learning_curves.png` and `eval/sample_predictions.png`; the bundle harness runs all of them.",
        "",
    ]
    return "\n".join(lines)
