"""MONAI-style dict transforms that MONAI lacks (reference augmentations of the methods), and the per-dataset
pipelines (``Compose`` factories) that the bundle configs reference with ``_target_``."""

from .action import ActionStrongAug, AdvMorph, action_pretrain_views, mix_unlabeled
from .epl import (
    ConditionalFlipd,
    EPLGeometryd,
    EPLIntensityd,
    FourierTwind,
    ProbabilityThresholdd,
    RandGaussianBlurd,
    epl_busi_eval_transforms,
    epl_busi_train_transforms,
    epl_eval_transforms,
    epl_post_transforms,
    epl_train_transforms,
    match_histogram,
    percentile_min_max,
)
from .fourier import FourierAmplitudeSwapd, cutmix_box_mask, fourier_amplitude_swap
from .layout import RandVolumeSliced, SliceFirstd
from .pipelines import (
    acdc_eval_transforms,
    acdc_post_transforms,
    acdc_resize_transforms,
    acdc_train_transforms,
    flat_compose,
    hdf5_load_transforms,
    la_eval_transforms,
    la_post_transforms,
    la_train_transforms,
)
from .spatial import SSL4MISRandomGeneratord, UAMTRandCropd
from .wssdl import BoxesToTensord, WSSDLAugmentd, wssdl_transforms

__all__ = [
    "SliceFirstd",
    "RandVolumeSliced",
    "SSL4MISRandomGeneratord",
    "UAMTRandCropd",
    "flat_compose",
    "hdf5_load_transforms",
    "acdc_train_transforms",
    "acdc_resize_transforms",
    "acdc_eval_transforms",
    "acdc_post_transforms",
    "la_train_transforms",
    "la_eval_transforms",
    "la_post_transforms",
    "action_pretrain_views",
    "mix_unlabeled",
    "ActionStrongAug",
    "AdvMorph",
    "fourier_amplitude_swap",
    "FourierAmplitudeSwapd",
    "cutmix_box_mask",
    "match_histogram",
    "percentile_min_max",
    "EPLIntensityd",
    "EPLGeometryd",
    "FourierTwind",
    "RandGaussianBlurd",
    "ProbabilityThresholdd",
    "epl_train_transforms",
    "epl_eval_transforms",
    "epl_post_transforms",
    "ConditionalFlipd",
    "epl_busi_train_transforms",
    "epl_busi_eval_transforms",
    "BoxesToTensord",
    "WSSDLAugmentd",
    "wssdl_transforms",
]
