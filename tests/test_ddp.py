"""``torchrun --nproc_per_node=2`` on CPU (gloo) trains exactly as data parallelism must (tests/ddp_parity.py).

Each method's every trainable call goes through the DDP-wrapped forward and every parameter gets a gradient each
step (the rules of :class:`semizoo.methods.Method`); otherwise gradients are not averaged (parameters drift from the
reference) or DDP stops at the second step waiting for a parameter that never got one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import ddp_parity  # noqa: E402

pytestmark = pytest.mark.slow


def _torchrun(method_name: str, out: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [str(Path(ddp_parity.__file__)), method_name, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def _close(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), f"{what}: {key} differs"


@pytest.mark.parametrize(
    "method_name",
    ["mean_teacher", "ssnet", "action_pretrain", "actionpp", "epl", "wssdl", "wssdl_alternating"],
)
def test_two_process_ddp_matches_the_data_parallel_reference(method_name, tmp_path):
    _torchrun(method_name, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.set_num_threads(1)
    reference = ddp_parity.emulate(method_name)
    for rank, (got, expected) in enumerate(zip(ranks, reference)):
        assert len(got["losses"]) == ddp_parity.STEPS
        for step, (terms, expected_terms) in enumerate(zip(got["losses"], expected["losses"])):
            assert terms.keys() == expected_terms.keys()
            for name in terms:
                assert terms[name] == pytest.approx(expected_terms[name], rel=1e-4, abs=1e-6), (rank, step, name)
        _close(got["parameters"], expected["parameters"], f"rank {rank} parameters")
        _close(got["method"], expected["method"], f"rank {rank} method state (teacher)")
        for name in ddp_parity.ACTIVE_TERMS.get(method_name, ()):  # the comparison covers every loss path
            assert any(terms.get(name, 0.0) > 0 for terms in got["losses"]), f"rank {rank}: {name} never active"
    _close(ranks[0]["parameters"], ranks[1]["parameters"], "rank 0 vs rank 1")
    initial = dict(ddp_parity.build(method_name)[0].named_parameters())
    assert any(not torch.equal(value, initial[key]) for key, value in ranks[0]["parameters"].items())
