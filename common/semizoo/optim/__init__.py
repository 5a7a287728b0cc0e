"""Optimizers the methods' official code relies on and torch lacks: TensorFlow-1 Adam (WSSDL) and parameter groups."""

from .tf_adam import TF1Adam, decay_weights_only

__all__ = ["TF1Adam", "decay_weights_only"]
