"""Data: two-stream samplers and loaders (readers, datalists and phantoms arrive with the data issue)."""

from .loaders import TwoStreamCollate, TwoStreamLoader, two_stream_loader
from .samplers import (
    DistributedTwoStreamBatchSampler,
    IndependentTwoStreamBatchSampler,
    SingleStreamBatchSampler,
    TwoStreamBatchSampler,
)

__all__ = [
    "TwoStreamBatchSampler",
    "DistributedTwoStreamBatchSampler",
    "IndependentTwoStreamBatchSampler",
    "SingleStreamBatchSampler",
    "TwoStreamCollate",
    "TwoStreamLoader",
    "two_stream_loader",
]
