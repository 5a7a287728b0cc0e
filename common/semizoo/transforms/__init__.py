"""MONAI-style dict transforms that MONAI lacks (reference augmentations of the methods)."""

from .spatial import SSL4MISRandomGeneratord, UAMTRandCropd

__all__ = ["SSL4MISRandomGeneratord", "UAMTRandCropd"]
