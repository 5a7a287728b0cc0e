"""Per-dataset transform pipelines that every bundle of a dataset references from its configs with ``_target_``.

Why factories: all bundles of one dataset must see the same data, so a dataset's pipeline is one function here,
changed in one place and pinned against the explicit MONAI transform sequence in ``tests/test_pipelines.py``, while
each bundle's JSON keeps what distinguishes it (network, method, schedule) and the IDs MONAI's tools read
(``train#preprocessing``, ``validate#preprocessing``, ``preprocessing``, ``postprocessing``). Bundles already import
``semizoo`` (networks, methods) and ``export-bundle`` vendors it, so each stays self-contained and runs with
``python -m monai.bundle run training --config_file configs/train.json`` from its own folder; layered config files
would instead need several ``--config_file`` arguments, ``%`` macros that resolve against the working directory, or
a shared JSON outside the bundle folder. The factories return plain MONAI ``Compose`` objects of MONAI (or
``semizoo.transforms``) dict transforms, so caching, ``set_random_state`` seeding and MONAI Label's filtering of
``Compose.transforms`` behave as with a ``Compose`` written out in JSON; ``inference.json`` keeps ``LoadImaged`` and
``SaveImaged`` as visible top-level transforms (MONAI Deploy strips those two) around the factory (``load=False``).

Pipelines (keys ``image``/``label``; the HDF5 files come from ``semizoo prepare``):

- ACDC train: ``LoadImaged`` per key (:func:`hdf5_load_transforms`), ``EnsureChannelFirstd(no_channel)``,
  ``SliceFirstd`` and ``RandVolumeSliced`` (both no-ops on the prepared 2D slices; a NIfTI volume from MONAI Label
  becomes one random slice), ``SSL4MISRandomGeneratord(output_size=patch_size)`` (SSL4MIS ``RandomGenerator``),
  ``EnsureTyped(track_meta=False)``; ACTION's resize variant has the same head.
- LA train: ``LoadImaged`` per key, ``EnsureChannelFirstd(no_channel)``, ``RandRotate90d(prob=0.75, max_k=3)`` and
  ``OneOf(Flipd(axis 0), Flipd(axis 1))`` (UA-MT ``RandomRotFlip``), ``UAMTRandCropd(roi_size=patch_size)``,
  ``EnsureTyped(track_meta=False)``.
- eval (validation, test, inference; both datasets): ``LoadImaged`` per key, ``EnsureChannelFirstd(no_channel)``,
  (ACDC: ``SliceFirstd``, which turns NIfTI ``(X, Y, Z)`` volumes into the HDF5 files' ``(Z, Y, X)``), ``EnsureTyped``
  (meta data kept for the reports and ``SaveImaged``).
- post: ``AsDiscreted(argmax)``; LA optionally ``KeepLargestConnectedComponentd`` (evaluation.md's LCC); ACDC at
  inference ``Invertd`` of the pipeline (predictions in the input file's layout).

``labeled=False`` (the unlabelled stream, inference) loads and types ``image`` only; the random spatial transforms
name both keys with ``allow_missing_keys`` in either stream (a missing label is skipped).
"""

from __future__ import annotations

from typing import Callable, Sequence

from monai.config import KeysCollection
from monai.transforms import (
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Flipd,
    Invertd,
    KeepLargestConnectedComponentd,
    LoadImaged,
    OneOf,
    RandRotate90d,
    Resized,
)
from monai.utils import ensure_tuple

from ..data.hdf5 import HDF5Reader
from .layout import RandVolumeSliced, SliceFirstd
from .spatial import SSL4MISRandomGeneratord, UAMTRandCropd

__all__ = [
    "flat_compose",
    "hdf5_load_transforms",
    "acdc_train_transforms",
    "acdc_resize_transforms",
    "acdc_eval_transforms",
    "acdc_post_transforms",
    "la_train_transforms",
    "la_eval_transforms",
    "la_post_transforms",
]

# the random spatial transforms name both keys in either stream; a missing label is skipped (allow_missing_keys)
_SPATIAL_KEYS = ["image", "label"]


def _keys(labeled: bool) -> list[str]:
    return ["image", "label"] if labeled else ["image"]


def _acdc_slices(keys: list[str]) -> list:
    """Prepared 2D slices pass; NIfTI volumes (MONAI Label) turn slice-first, then one random slice is drawn."""
    return [SliceFirstd(keys=keys), RandVolumeSliced(keys=_SPATIAL_KEYS)]


def flat_compose(transforms: Sequence[Callable]) -> Compose:
    """``Compose(transforms)`` with nested ``Compose`` objects (the factories here) flattened into one level.

    ``inference.json``'s ``preprocessing`` and ``postprocessing`` use it: MONAI Deploy's bundle operator strips
    ``LoadImage*``/``SaveImage*`` and applies the rest to the input dictionary only when the first remaining transform
    is a ``MapTransform``; a nested factory ``Compose`` would be first, and the pipeline would be applied to the bare
    image. MONAI Label and ``monai.bundle run`` see the same transforms either way.
    """
    return Compose(list(transforms)).flatten()


def hdf5_load_transforms(keys: KeysCollection = ("image", "label")) -> list[LoadImaged]:
    """One ``LoadImaged(keys=k, image_only=True)`` per key, in the order of ``keys``, with ``HDF5Reader(key=k)``
    registered.

    ``HDF5Reader`` reads the h5 dataset named like the key and claims only h5 suffixes, so NIfTI/PNG items (MONAI
    Label) go to MONAI's readers. It is registered rather than passed as ``reader=``: MONAI then picks readers by
    suffix and lets the reader's error (:class:`~semizoo.data.DataError`, naming the file and key) reach the user,
    instead of retrying ITK and PIL on an h5 file and reporting theirs.
    """
    loaders = []
    for key in ensure_tuple(keys):
        loader = LoadImaged(keys=key, image_only=True)
        loader.register(HDF5Reader(key=key))
        loaders.append(loader)
    return loaders


def acdc_train_transforms(patch_size: Sequence[int] = (256, 256), labeled: bool = True, load: bool = True) -> Compose:
    """ACDC 2D training slices: SSL4MIS ``RandomGenerator`` (rot90+flip or rotation, nearest resize to ``patch_size``).

    Args:
        patch_size: ``(H, W)`` after the resize (``@patch_size``).
        labeled: load and type ``label`` too (``False`` for the unlabelled stream).
        load: start with the HDF5 ``LoadImaged`` per key.
    """
    keys = _keys(labeled)
    return Compose(
        (hdf5_load_transforms(keys) if load else [])
        + [
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
            *_acdc_slices(keys),
            SSL4MISRandomGeneratord(keys=_SPATIAL_KEYS, output_size=patch_size, allow_missing_keys=True),
            EnsureTyped(keys=keys, track_meta=False),
        ]
    )


def acdc_resize_transforms(patch_size: Sequence[int] = (256, 256), labeled: bool = True, load: bool = True) -> Compose:
    """ACDC 2D training slices for ACTION: resized to ``patch_size`` (image bicubic, label nearest), no geometric
    augmentation in any stage (action.md §3; the official ACTION loaders only resize).

    Args:
        patch_size: ``(H, W)`` after the resize (``@patch_size``).
        labeled: load and type ``label`` too (``False`` for the unlabelled stream).
        load: start with the HDF5 ``LoadImaged`` per key.
    """
    keys = _keys(labeled)
    resize = [Resized(keys="image", spatial_size=tuple(patch_size), mode="bicubic", align_corners=False)]
    if labeled:
        resize.append(Resized(keys="label", spatial_size=tuple(patch_size), mode="nearest"))
    return Compose(
        (hdf5_load_transforms(keys) if load else [])
        + [EnsureChannelFirstd(keys=keys, channel_dim="no_channel")]
        + _acdc_slices(keys)
        + resize
        + [EnsureTyped(keys=keys, track_meta=False)]
    )


def la_train_transforms(patch_size: Sequence[int] = (112, 112, 80), labeled: bool = True, load: bool = True) -> Compose:
    """LA 3D training patches: UA-MT ``RandomRotFlip`` (rot90 in x/y, then a flip along x or y), UA-MT's random crop.

    Args:
        patch_size: crop ``(X, Y, Z)`` (``@patch_size``).
        labeled: load and type ``label`` too (``False`` for the unlabelled stream).
        load: start with the HDF5 ``LoadImaged`` per key.
    """
    keys = _keys(labeled)
    return Compose(
        (hdf5_load_transforms(keys) if load else [])
        + [
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
            RandRotate90d(keys=_SPATIAL_KEYS, prob=0.75, max_k=3, spatial_axes=[0, 1], allow_missing_keys=True),
            OneOf(
                transforms=[
                    Flipd(keys=_SPATIAL_KEYS, spatial_axis=0, allow_missing_keys=True),
                    Flipd(keys=_SPATIAL_KEYS, spatial_axis=1, allow_missing_keys=True),
                ]
            ),
            UAMTRandCropd(keys=_SPATIAL_KEYS, roi_size=patch_size, allow_missing_keys=True),
            EnsureTyped(keys=keys, track_meta=False),
        ]
    )


def _eval_transforms(labeled: bool, load: bool, slice_first: bool = False) -> Compose:
    keys = _keys(labeled)
    layout = [SliceFirstd(keys=keys)] if slice_first else []
    return Compose(
        (hdf5_load_transforms(keys) if load else [])
        + [EnsureChannelFirstd(keys=keys, channel_dim="no_channel")]
        + layout
        + [EnsureTyped(keys=keys)]
    )


def acdc_eval_transforms(labeled: bool = True, load: bool = True) -> Compose:
    """ACDC validation/test volumes (the slice-wise inferer resizes): load, add the channel, put NIfTI volumes
    slice-first (:class:`SliceFirstd`, as MONAI Label sends them), keep meta data.

    Args:
        labeled: load ``label`` too (``False`` for inference).
        load: start with the HDF5 ``LoadImaged`` per key (``inference.json`` writes its own, for MONAI Deploy).
    """
    return _eval_transforms(labeled, load, slice_first=True)


def la_eval_transforms(labeled: bool = True, load: bool = True) -> Compose:
    """LA validation/test volumes (the sliding-window inferer pads): load, add the channel, keep meta data.

    Args:
        labeled: load ``label`` too (``False`` for inference).
        load: start with the HDF5 ``LoadImaged`` per key (``inference.json`` writes its own, for MONAI Deploy).
    """
    return _eval_transforms(labeled, load)


def acdc_post_transforms(preprocessing: Compose | None = None) -> Compose:
    """ACDC predictions: ``AsDiscreted(pred, argmax)``; no post-processing (SSL4MIS).

    Args:
        preprocessing: the inference pipeline; when given, ``Invertd`` then puts each prediction back into its
            input file's layout (NIfTI inputs were made slice-first), as ``inference.json`` does before saving.
    """
    inverse = [] if preprocessing is None else [Invertd("pred", preprocessing, orig_keys="image", to_tensor=True)]
    return Compose([AsDiscreted(keys="pred", argmax=True), *inverse])


def la_post_transforms(largest_component: bool = False) -> Compose:
    """LA predictions: ``AsDiscreted(pred, argmax)``, then optionally the largest 3D connected component of the atrium.

    Args:
        largest_component: ``KeepLargestConnectedComponentd(applied_labels=[1], connectivity=3)`` (the papers'
            test-time LCC; training-time validation runs without it).
    """
    transforms = [AsDiscreted(keys="pred", argmax=True)]
    if largest_component:
        transforms.append(KeepLargestConnectedComponentd(keys="pred", applied_labels=[1], connectivity=3))
    return Compose(transforms)
