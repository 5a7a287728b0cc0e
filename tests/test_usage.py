"""Each bundle's "Use it" section (issue 12): the docs carry exactly what semizoo.usage renders, every test the
section names exists, and the several-node command trains (two torchrun agents meeting at a c10d rendezvous)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_data import assert_ranks_in_step, prepared_phantoms, rank_states_config
from semizoo import usage
from semizoo.cli import Commands

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def _section(readme: str) -> str:
    start = readme.index("## Use it\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end + 1] if end >= 0 else readme[start:]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_every_bundle_readme_carries_its_use_it_section(bundle):
    readme = (bundle / "docs" / "README.md").read_text()
    assert _section(readme) == usage.use_it_section(bundle), f"regenerate with `python -m semizoo usage {bundle.name}`"
    assert Commands().usage(bundle.name) == usage.use_it_section(bundle)


def test_every_test_a_section_names_exists():
    named = set()
    for bundle in BUNDLES:
        named |= set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", usage.use_it_section(bundle)))
    assert len({path for path, _ in named}) >= 5  # multi-GPU, several nodes, weights, export, Deploy: all referenced
    for path, name in sorted(named):
        tree = ast.parse((REPO / path).read_text())
        functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"{path} has no {name}"


def test_commands_render_as_shell_lines_that_keep_the_placeholders():
    line = usage.shell(usage.torchrun_single_node("$B", "$D", "$N"))
    assert line == (
        "torchrun --standalone --nproc_per_node=$N -m monai.bundle run training --config_file "
        "\"['$B/configs/train.json','$B/configs/multi_gpu_train.json']\" --bundle_root $B --dataset_dir $D"
    )
    assert usage.shell(usage.export_bundle("$B", "my out")) == 'python -m semizoo export-bundle $B --out "my out"'


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_node_rendezvous_trains(tmp_path):
    """The several-node command, as two nodes of one process each on this machine: both agents meet at the c10d
    rendezvous on 127.0.0.1, train two iterations in step (DDP over gloo), and only the first rank writes models."""
    data = prepared_phantoms(tmp_path / "phantoms", "acdc")
    root = tmp_path / "bundle"
    shutil.copytree(REPO / "bundles" / "meanteacher_acdc_segmentation" / "configs", root / "configs")
    (root / "models").mkdir()
    extra = [root / "configs" / "smoke.json", rank_states_config(tmp_path / "save_ranks.json")]
    launcher = [sys.executable, "-m", "torch.distributed.run"]
    endpoint = f"127.0.0.1:{_free_port()}"
    command = usage.torchrun_multi_node(root, data, 2, 1, endpoint, launcher=launcher, extra_configs=extra)
    command += ["--max_iterations", "2"]
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    nodes = []
    for node in range(2):
        log = open(tmp_path / f"node{node}.log", "w")
        nodes.append((subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    for process, log in nodes:
        process.wait(timeout=900)
        log.close()
    logs = [(tmp_path / f"node{node}.log").read_text() for node in range(2)]
    assert [process.returncode for process, _ in nodes] == [0, 0], "\n".join(text[-3000:] for text in logs)
    assert_ranks_in_step(root)
    assert sorted(p.name for p in (root / "models").iterdir()) == ["model.pt", "model_final.pt"]
