"""``export-bundle`` (bundle-checklist.md §7): an exported bundle runs its smoke chain where semizoo is not installed.

The test builds a virtual environment that sees the project's third-party packages (torch, MONAI, ...) but not
semizoo: the project venv's site-packages is added as a plain path, so its ``.pth`` files (semizoo's editable
install among them) are not processed. In it, ``import semizoo`` fails, and the exported bundle trains, evaluates
and infers from another directory with the vendored copy.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_data import prepared_phantoms
from semizoo import usage
from semizoo.export import export_bundle

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BUNDLE = "meanteacher_acdc_segmentation"


@pytest.fixture(scope="module")
def python_without_semizoo(tmp_path_factory) -> str:
    venv = tmp_path_factory.mktemp("venv") / "plain"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(target) / "project_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return str(python)


def _run(python: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([python, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900)


def test_exported_bundle_runs_its_smoke_chain_without_semizoo(python_without_semizoo, tmp_path, tmp_path_factory):
    python = python_without_semizoo
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    absent = _run(python, "-c", "import monai, torch; import semizoo", cwd=elsewhere)
    assert absent.returncode != 0 and "No module named 'semizoo'" in absent.stderr, absent.stderr[-2000:]

    out = tmp_path / "exported" / BUNDLE
    command = usage.export_bundle(REPO / "bundles" / BUNDLE, out, python=sys.executable)  # the "Use it" command
    exported = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0 and exported.stdout.strip() == f"wrote {out}", exported.stderr[-2000:]
    assert (out / "semizoo" / "__init__.py").is_file() and (out / "semizoo" / "data" / "splits").is_dir()
    assert not list(out.rglob("__pycache__"))
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert "semizoo" not in meta["required_packages_version"] and "torchvision" in meta["required_packages_version"]
    assert meta["semizoo_vendored"].startswith("0.")

    data = prepared_phantoms(tmp_path_factory.mktemp("phantoms"), "acdc")
    common = ["--bundle_root", str(out), "--meta_file", str(out / "configs" / "metadata.json")]
    common += ["--logging_file", str(out / "configs" / "logging.conf"), "--dataset_dir", str(data)]
    configs = [str(out / "configs" / name) for name in ("train.json", "smoke.json")]
    steps = [
        ("training", configs),
        ("evaluating", configs + [str(out / "configs" / "evaluate.json")]),
    ]
    for run_id, files in steps:
        result = _run(
            python, "-m", "monai.bundle", "run", run_id, "--config_file", json.dumps(files), *common, cwd=elsewhere
        )
        assert result.returncode == 0, f"{run_id}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert (out / "models" / "model.pt").is_file()
    where = _run(
        python,
        "-c",
        f"import sys; sys.path.insert(1, {str(out)!r}); import semizoo; print(semizoo.__file__)",
        cwd=elsewhere,
    )
    assert where.stdout.strip() == str(out / "semizoo" / "__init__.py")


def test_export_refuses_a_non_empty_target(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("keep")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        export_bundle(BUNDLE, tmp_path / "taken")
    assert (tmp_path / "taken" / "file").read_text() == "keep"
