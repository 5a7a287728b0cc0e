"""Data: readers, datalists, ``prepare`` and phantoms, and the two-stream samplers and loaders."""

from .busi import ImagePool, balance_malignant
from .cine import LoadCined, SlicePool, read_cine
from .datalist import find_prepared_root, load_split
from .errors import DataError
from .hdf5 import HDF5Reader
from .loaders import SeededItems, TwoStreamCollate, TwoStreamLoader, two_stream_loader
from .samplers import (
    DistributedTwoStreamBatchSampler,
    IndependentTwoStreamBatchSampler,
    SingleStreamBatchSampler,
    TwoStreamBatchSampler,
)
from .self_training import select_pseudo_boxes
from .validate import DatalistError, check_training_data, validate_datalist

__all__ = [
    "DatalistError",
    "check_training_data",
    "validate_datalist",
    "DataError",
    "HDF5Reader",
    "load_split",
    "find_prepared_root",
    "TwoStreamBatchSampler",
    "DistributedTwoStreamBatchSampler",
    "IndependentTwoStreamBatchSampler",
    "SingleStreamBatchSampler",
    "TwoStreamCollate",
    "TwoStreamLoader",
    "two_stream_loader",
    "SeededItems",
    "LoadCined",
    "SlicePool",
    "read_cine",
    "ImagePool",
    "balance_malignant",
    "select_pseudo_boxes",
]
