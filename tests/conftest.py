"""Shared test settings: CPU only, small thread count, deterministic seeds."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
