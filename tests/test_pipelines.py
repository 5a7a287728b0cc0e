"""Per-dataset pipeline factories (``semizoo.transforms.pipelines``) and the bundle configs that reference them.

The factories are pinned against the explicit MONAI transform sequences the bundle JSON used to spell out (same
transforms, same arguments, same random draws on a phantom HDF5 file). The config tests catch drift: every bundle of
one dataset references the same factories, and two bundles of one dataset differ only in the IDs that distinguish
them (network, method, optimizer, schedule).
"""

from __future__ import annotations

import fnmatch
import json
from itertools import combinations
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from bundle_data import dataset_of
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import (
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Flipd,
    KeepLargestConnectedComponentd,
    LoadImaged,
    MapTransform,
    OneOf,
    RandRotate90d,
    Resized,
)
from semizoo.data import HDF5Reader
from semizoo.transforms import (
    RandVolumeSliced,
    SliceFirstd,
    SSL4MISRandomGeneratord,
    UAMTRandCropd,
    acdc_eval_transforms,
    acdc_post_transforms,
    acdc_resize_transforms,
    acdc_train_transforms,
    hdf5_load_transforms,
    la_eval_transforms,
    la_post_transforms,
    la_train_transforms,
)

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
# the training pipeline of a bundle, when it is not its dataset's ``{ds}_train_transforms`` (ACTION only resizes)
TRAIN_PIPELINE = {"action_acdc_segmentation": "acdc_resize_transforms"}
# datasets whose pipelines are pinned against explicit MONAI sequences below; EPL's datasets (mnms, busi) are pinned by
# their own wiring test here and by tests/test_epl_data.py and tests/test_busi_data.py
EXPLICIT_DATASETS = ("acdc", "la")
EXPLICIT_BUNDLES = [b for b in BUNDLES if dataset_of(b) in EXPLICIT_DATASETS]
# EPL bundles: dataset -> (train factory, eval factory, inference loader)
EPL_PIPELINES = {
    "mnms": ("epl_train_transforms", "epl_eval_transforms", "semizoo.data.LoadCined"),
    "busi": ("epl_busi_train_transforms", "epl_busi_eval_transforms", "LoadImaged"),
}


def _train_pipeline(bundle: str) -> str:
    return TRAIN_PIPELINE.get(bundle, "{ds}_train_transforms")


def _layout(bundle: str) -> str:
    """Bundles are compared within a dataset and a layout: single-stage, or multi-stage (``configs/stages.json``)."""
    return "stages" if (REPO / "bundles" / bundle / "configs" / "stages.json").is_file() else "single"


DRAWS = 12  # random draws compared per pipeline


# ---------------------------------------------------------------------------------------------------------------------
# the explicit sequences (what train.json / inference.json / evaluate.json of bundle version 0.1.x wrote out)


def _load(*keys):
    return [LoadImaged(keys=k, reader=HDF5Reader(key=k), image_only=True) for k in keys]


def explicit_acdc_train(patch_size, labeled):
    keys = ["image", "label"] if labeled else "image"
    return Compose(
        _load(*(["image", "label"] if labeled else ["image"]))
        + [
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
            SliceFirstd(keys=keys),
            RandVolumeSliced(keys=["image", "label"]),
            SSL4MISRandomGeneratord(keys=["image", "label"], output_size=patch_size, allow_missing_keys=True),
            EnsureTyped(keys=keys, track_meta=False),
        ]
    )


def explicit_acdc_resize(patch_size, labeled):
    """ACTION's ACDC slices: resize only (image bicubic, label nearest), no geometric augmentation."""
    keys = ["image", "label"] if labeled else "image"
    resize = [Resized(keys="image", spatial_size=tuple(patch_size), mode="bicubic", align_corners=False)]
    if labeled:
        resize.append(Resized(keys="label", spatial_size=tuple(patch_size), mode="nearest"))
    return Compose(
        _load(*(["image", "label"] if labeled else ["image"]))
        + [EnsureChannelFirstd(keys=keys, channel_dim="no_channel"), SliceFirstd(keys=keys)]
        + [RandVolumeSliced(keys=["image", "label"])]
        + resize
        + [EnsureTyped(keys=keys, track_meta=False)]
    )


def explicit_la_train(patch_size, labeled):
    keys = ["image", "label"] if labeled else "image"
    both = ["image", "label"]
    return Compose(
        _load(*(["image", "label"] if labeled else ["image"]))
        + [
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
            RandRotate90d(keys=both, prob=0.75, max_k=3, spatial_axes=[0, 1], allow_missing_keys=True),
            OneOf(
                transforms=[
                    Flipd(keys=both, spatial_axis=0, allow_missing_keys=True),
                    Flipd(keys=both, spatial_axis=1, allow_missing_keys=True),
                ]
            ),
            UAMTRandCropd(keys=both, roi_size=patch_size, allow_missing_keys=True),
            EnsureTyped(keys=keys, track_meta=False),
        ]
    )


def explicit_eval(labeled, slice_first=False):
    keys = ["image", "label"] if labeled else "image"
    layout = [SliceFirstd(keys=keys)] if slice_first else []
    return Compose(
        _load(*(["image", "label"] if labeled else ["image"]))
        + [EnsureChannelFirstd(keys=keys, channel_dim="no_channel"), *layout, EnsureTyped(keys=keys)]
    )


def explicit_post(largest_component):
    transforms = [AsDiscreted(keys="pred", argmax=True)]
    if largest_component:
        transforms.append(KeepLargestConnectedComponentd(keys="pred", applied_labels=[1], connectivity=3))
    return Compose(transforms)


# ---------------------------------------------------------------------------------------------------------------------
# phantom data and comparison helpers


def _h5(path: Path, shape, seed: int, classes: int) -> Path:
    rng = np.random.default_rng(seed)
    image = rng.random(shape).astype(np.float32)
    label = (image * classes).astype(np.uint8).clip(0, classes - 1)
    with h5py.File(path, "w") as handle:
        handle["image"], handle["label"] = image, label
        handle.attrs["spacing"] = np.ones(len(shape))
    return path


@pytest.fixture
def acdc_slice(tmp_path):
    path = str(_h5(tmp_path / "patient001_frame01_slice_1.h5", (40, 36), 0, 4))
    return {"image": path, "label": path, "patient": "patient001"}


@pytest.fixture
def la_volume(tmp_path):
    path = str(_h5(tmp_path / "la.h5", (30, 28, 20), 1, 2))
    return {"image": path, "label": path, "patient": "LA001"}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], (torch.Tensor, np.ndarray)):
            assert type(a[key]) is type(b[key]), key
            assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
        else:
            assert a[key] == b[key], key


def _compare(factory: Compose, explicit: Compose, item: dict, draws: int = DRAWS) -> list[dict]:
    assert [type(t) for t in factory.transforms] == [type(t) for t in explicit.transforms]
    factory.set_random_state(seed=7)
    explicit.set_random_state(seed=7)
    outputs = []
    for _ in range(draws):
        a, b = factory(dict(item)), explicit(dict(item))
        _same(a, b)
        outputs.append(a)
    return outputs


# ---------------------------------------------------------------------------------------------------------------------
# factories == explicit sequences


def test_hdf5_load_transforms_has_one_loader_per_key():
    loaders = hdf5_load_transforms(["image", "label"])
    assert [type(t) for t in loaders] == [LoadImaged, LoadImaged]
    assert [list(t.keys) for t in loaders] == [["image"], ["label"]]
    readers = [t._loader.readers[-1] for t in loaders]  # the user reader is tried first (last in the list)
    assert all(isinstance(r, HDF5Reader) for r in readers) and [r.key for r in readers] == ["image", "label"]
    assert all(t._loader.image_only for t in loaders)
    assert [list(t.keys) for t in hdf5_load_transforms("image")] == [["image"]]


@pytest.mark.parametrize("labeled", [True, False], ids=["labeled", "unlabeled"])
def test_acdc_resize_transforms_equal_the_explicit_sequence(acdc_slice, labeled):
    item = acdc_slice if labeled else {k: v for k, v in acdc_slice.items() if k != "label"}
    (out,) = _compare(
        acdc_resize_transforms([32, 24], labeled=labeled), explicit_acdc_resize([32, 24], labeled), item, 1
    )
    assert out["image"].shape == (1, 32, 24) and ("label" in out) == labeled
    if labeled:  # nearest: only label values of the class range, no interpolated ones
        assert set(out["label"].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}


@pytest.mark.parametrize("labeled", [True, False])
def test_acdc_train_transforms_equal_the_explicit_sequence(acdc_slice, labeled):
    item = acdc_slice if labeled else {k: v for k, v in acdc_slice.items() if k != "label"}
    outputs = _compare(acdc_train_transforms([32, 24], labeled=labeled), explicit_acdc_train([32, 24], labeled), item)
    for out in outputs:
        assert out["image"].shape == (1, 32, 24) and not isinstance(out["image"], MetaTensor)
        assert ("label" in out) == labeled
    # the draws differ (rotation/flip/none), so the comparison above is not of one fixed output
    assert len({out["image"].numpy().tobytes() for out in outputs}) > 1


@pytest.mark.parametrize("labeled", [True, False])
def test_la_train_transforms_equal_the_explicit_sequence(la_volume, labeled):
    item = la_volume if labeled else {k: v for k, v in la_volume.items() if k != "label"}
    outputs = _compare(la_train_transforms([16, 16, 8], labeled=labeled), explicit_la_train([16, 16, 8], labeled), item)
    for out in outputs:
        assert out["image"].shape == (1, 16, 16, 8) and not isinstance(out["image"], MetaTensor)
        assert ("label" in out) == labeled
    assert len({out["image"].numpy().tobytes() for out in outputs}) > 1


@pytest.mark.parametrize("factory, slice_first", [(acdc_eval_transforms, True), (la_eval_transforms, False)])
@pytest.mark.parametrize("labeled", [True, False])
def test_eval_transforms_equal_the_explicit_sequence(la_volume, factory, slice_first, labeled):
    item = la_volume if labeled else {"image": la_volume["image"]}
    (out,) = _compare(factory(labeled=labeled), explicit_eval(labeled, slice_first), item, draws=1)
    assert isinstance(out["image"], MetaTensor) and out["image"].shape == (1, 30, 28, 20)  # meta kept for reports
    assert ("label" in out) == labeled


@pytest.mark.parametrize("factory, slice_first", [(acdc_eval_transforms, True), (la_eval_transforms, False)])
def test_eval_transforms_without_load_follow_an_explicit_loader(la_volume, factory, slice_first):
    """inference.json: a visible LoadImaged (MONAI Deploy strips it), then the factory with ``load=False``."""
    tail = factory(labeled=False, load=False)
    assert type(tail.transforms[0]) is EnsureChannelFirstd
    nested = Compose([*_load("image"), tail])
    _same(nested({"image": la_volume["image"]}), explicit_eval(False, slice_first)({"image": la_volume["image"]}))
    tail = acdc_train_transforms([8, 8], load=False)
    assert not any(isinstance(t, LoadImaged) for t in tail.transforms)


@pytest.mark.parametrize(
    "factory, explicit",
    [
        (acdc_post_transforms(), explicit_post(False)),
        (la_post_transforms(), explicit_post(False)),
        (la_post_transforms(largest_component=True), explicit_post(True)),
    ],
)
def test_post_transforms_equal_the_explicit_sequence(factory, explicit):
    logits = torch.zeros(2, 12, 12, 6)
    logits[1, 1:4, 1:4, 1:3] = 1.0  # two foreground blobs, the second one larger
    logits[1, 6:11, 6:11, 1:5] = 1.0
    (out,) = _compare(factory, explicit, {"pred": logits}, draws=1)
    assert out["pred"].shape == (1, 12, 12, 6)
    assert int(out["pred"].sum()) == (100 if len(explicit.transforms) == 2 else 18 + 100)


# ---------------------------------------------------------------------------------------------------------------------
# bundle configs: factories wired as before, no drift between bundles of one dataset

# IDs (``#`` paths, fnmatch patterns) in which two bundles of one dataset may differ: what distinguishes them
DISTINGUISHING = {
    "train.json": ["network_def", "network_def#*", "method", "method#*", "optimizer#*", "lr_scheduler#*"]
    + ["max_iterations", "lr_step"],
    "inference.json": ["network_def", "network_def#*"],
    "evaluate.json": ["validate#handlers#*#empty"],  # empty-case convention of the method's paper
    "multi_gpu_train.json": [],
    "smoke.json": ["method#*"],
}
PIPELINE_IDS = {
    "train.json": {
        "train#preprocessing": {"_target_": "semizoo.transforms.{train}", "patch_size": "@patch_size"},
        "train#unlabeled_preprocessing": {
            "_target_": "semizoo.transforms.{train}",
            "patch_size": "@patch_size",
            "labeled": False,
        },
        "validate#preprocessing": {"_target_": "semizoo.transforms.{ds}_eval_transforms"},
        "validate#postprocessing": {"_target_": "semizoo.transforms.{ds}_post_transforms"},
    },
    "inference.json": {
        "preprocessing#transforms#1": {
            "_target_": "semizoo.transforms.{ds}_eval_transforms",
            "labeled": False,
            "load": False,
        },
        "postprocessing#transforms#0#_target_": "semizoo.transforms.{ds}_post_transforms",
    },
    "evaluate.json": {"validate#postprocessing#_target_": "semizoo.transforms.{ds}_post_transforms"},
}


def _config(bundle: str, name: str) -> dict:
    return json.loads((REPO / "bundles" / bundle / "configs" / name).read_text())


def _get(config: dict, path: str):
    parts = path.split("#")
    for n in range(len(parts), 0, -1):  # override files use "a#b" keys
        head = "#".join(parts[:n])
        if head in config:
            node = config[head]
            for part in parts[n:]:
                node = node[int(part)] if isinstance(node, list) else node[part]
            return node
    raise KeyError(path)


def _flatten(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict) and node:
        items = node.items()
    elif isinstance(node, list) and node:
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        return {prefix: node}
    flat = {}
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}#{key}" if prefix else key))
    return flat


def _distinguishing(name: str, path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in DISTINGUISHING[name])


def _groups() -> list[tuple[str, list[str]]]:
    by_dataset: dict[str, list[str]] = {}
    for bundle in BUNDLES:
        by_dataset.setdefault(f"{dataset_of(bundle)} ({_layout(bundle)})", []).append(bundle)
    return sorted(by_dataset.items())


@pytest.mark.parametrize("bundle", EXPLICIT_BUNDLES)
def test_bundles_reference_their_dataset_pipelines(bundle):
    ds = dataset_of(bundle)
    for name, ids in PIPELINE_IDS.items():
        config = _config(bundle, name)
        for path, expected in ids.items():
            text = json.dumps(expected).replace("{train}", _train_pipeline(bundle))
            expected = json.loads(text.replace("{ds}", ds))
            assert _get(config, path) == expected, (bundle, name, path)
    inference = _config(bundle, "inference.json")  # MONAI Deploy strips a visible LoadImaged / SaveImaged
    assert inference["preprocessing"]["transforms"][0]["_target_"] == "LoadImaged"
    assert inference["postprocessing"]["transforms"][-1]["_target_"] == "SaveImaged"


@pytest.mark.parametrize("name", sorted(DISTINGUISHING))
def test_bundles_of_one_dataset_differ_only_in_what_distinguishes_them(name):
    """Shared sections (handlers, trainer, validation, pipelines, schedules of evaluation) are pinned equal."""
    for dataset, bundles in _groups():
        for a, b in combinations(bundles, 2):
            config_a, config_b = _config(a, name), _config(b, name)
            shared_a, shared_b = ([k for k in c if not _distinguishing(name, k)] for c in (config_a, config_b))
            assert shared_a == shared_b, f"{a} and {b}: the shared IDs of {name} differ or are ordered differently"
            flat_a, flat_b = _flatten(config_a), _flatten(config_b)
            differing = {k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k, KeyError) != flat_b.get(k, KeyError)}
            drift = sorted(k for k in differing if not _distinguishing(name, k))
            assert not drift, f"{dataset}: {a} and {b} differ in shared IDs of {name}: {drift}"


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if b.startswith("epl_") and dataset_of(b) in EPL_PIPELINES])
def test_epl_bundles_reference_their_dataset_pipelines(bundle):
    """Train, validation and inference of an EPL bundle use its dataset's factories; the probabilities are inverted
    through the validation preprocessing; inference keeps its loader first and ``SaveImaged`` last."""
    train_factory, eval_factory, loader = EPL_PIPELINES[dataset_of(bundle)]
    train, inference = _config(bundle, "train.json"), _config(bundle, "inference.json")
    assert train["train"]["preprocessing"]["_target_"] == f"semizoo.transforms.{train_factory}"
    assert train["train"]["preprocessing"]["labeled"] is True
    assert train["train"]["unlabeled_preprocessing"]["_target_"] == f"semizoo.transforms.{train_factory}"
    assert train["train"]["unlabeled_preprocessing"]["labeled"] is False
    assert train["train"]["unlabeled_preprocessing"]["fourier_pool"] == "@fourier_pool"
    assert train["validate"]["preprocessing"]["_target_"] == f"semizoo.transforms.{eval_factory}"
    post = train["validate"]["postprocessing"]
    assert post == {"_target_": "semizoo.transforms.epl_post_transforms", "preprocessing": "@validate#preprocessing"}
    transforms = inference["preprocessing"]["transforms"]
    assert transforms[0]["_target_"] == loader and transforms[-1]["_target_"] == f"semizoo.transforms.{eval_factory}"
    assert transforms[-1]["load"] is False and transforms[-1]["labeled"] is False
    assert inference["postprocessing"]["transforms"][0]["_target_"] == "semizoo.transforms.epl_post_transforms"
    assert inference["postprocessing"]["transforms"][-1]["_target_"] == "SaveImaged"


@pytest.mark.parametrize("bundle", EXPLICIT_BUNDLES)
def test_bundle_pipelines_instantiate_to_the_explicit_sequences(bundle, acdc_slice, la_volume):
    """The JSON wiring (patch size, labeled flag) gives the explicit sequences' outputs."""
    ds = dataset_of(bundle)
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    patch = [32, 24] if ds == "acdc" else [16, 16, 8]
    parser["patch_size"] = patch
    explicit_train = {
        "acdc_train_transforms": explicit_acdc_train,
        "acdc_resize_transforms": explicit_acdc_resize,
        "la_train_transforms": explicit_la_train,
    }[_train_pipeline(bundle).replace("{ds}", ds)]
    item = acdc_slice if ds == "acdc" else la_volume
    unlabeled = {k: v for k, v in item.items() if k != "label"}
    _compare(parser.get_parsed_content("train#preprocessing"), explicit_train(patch, True), item, draws=4)
    _compare(parser.get_parsed_content("train#unlabeled_preprocessing"), explicit_train(patch, False), unlabeled, 4)
    validation = explicit_eval(True, slice_first=ds == "acdc")
    _compare(parser.get_parsed_content("validate#preprocessing"), validation, la_volume, draws=1)


# LA validation schedule (val_interval, val_start): SS-Net's official one, unless the method's spec sets another
LA_VALIDATION = {"action_la_segmentation": (1000, 0)}  # action.md §9: every 1000 iterations


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if dataset_of(b) == "la"])
def test_la_bundles_validate_on_their_schedule(bundle):
    """Every 200 iterations from 2000 (SS-Net's official LA schedule) unless ``LA_VALIDATION`` says otherwise;
    smoke.json validates within its few iterations."""
    train, smoke = _config(bundle, "train.json"), _config(bundle, "smoke.json")
    assert (train["val_interval"], train["val_start"]) == LA_VALIDATION.get(bundle, (200, 2000))
    (handler,) = [h for h in train["train"]["handlers"] if "validator" in h]
    assert handler["_target_"] == "semizoo.handlers.ScheduledValidationHandler"
    assert (handler["interval"], handler["start"], handler["epoch_level"]) == ("@val_interval", "@val_start", False)
    assert smoke["val_start"] <= smoke["val_interval"] <= smoke["max_iterations"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_multi_gpu_ranks_select_handlers_by_type(bundle):
    """Under DDP the trainer gets the one-process run's handlers (train#handlers and the training figures), filtered
    by type on ranks > 0."""
    multi, train = _config(bundle, "multi_gpu_train.json"), _config(bundle, "train.json")
    handlers = train["train"]["trainer"]["train_handlers"]
    assert handlers == "$[@train#figures] + @train#handlers"  # first: a checkpoint of iteration k records k
    assert multi["train#trainer#train_handlers"] == f"$semizoo.handlers.main_process_handlers({handlers[1:]})"


# ---------------------------------------------------------------------------------------------------------------------
# NIfTI volumes (MONAI Label, MONAI Deploy) in the ACDC bundles' slice-first layout, and back


def _acdc_inference() -> Compose:
    """inference.json's pipeline: a visible LoadImaged (HDF5Reader registered; MONAI's readers for NIfTI)."""
    return Compose([*_load("image"), acdc_eval_transforms(labeled=False, load=False)])


def test_nifti_volumes_become_slice_first_like_the_hdf5_files(tmp_path):
    zyx = np.random.default_rng(3).random((4, 9, 7)).astype(np.float32)  # prepared ACDC h5: (Z, Y, X)
    h5 = tmp_path / "case.h5"
    with h5py.File(h5, "w") as handle:
        handle["image"] = zyx
    nifti = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0), np.diag([1.5, 1.25, 8.0, 1.0])), str(nifti))  # (X, Y, Z)
    from_h5 = _acdc_inference()({"image": str(h5)})["image"]
    from_nifti = _acdc_inference()({"image": str(nifti)})["image"]
    assert from_h5.shape == from_nifti.shape == (1, 4, 9, 7)
    assert torch.equal(torch.as_tensor(from_h5), torch.as_tensor(from_nifti))


@pytest.mark.parametrize("suffix", [".nii.gz", ".h5"])
def test_acdc_inference_predictions_return_to_the_input_layout(tmp_path, suffix):
    """``acdc_post_transforms(preprocessing)`` inverts the layout: a prediction saved for a NIfTI input is (X, Y, Z)."""
    shape = (5, 6, 3) if suffix == ".nii.gz" else (3, 6, 5)
    path = tmp_path / f"case{suffix}"
    if suffix == ".h5":
        with h5py.File(path, "w") as handle:
            handle["image"] = np.zeros(shape, np.float32)
    else:
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    preprocessing = _acdc_inference()
    item = preprocessing({"image": str(path)})
    assert item["image"].shape[1:] == (3, 6, 5)  # slice-first either way
    logits = torch.zeros(4, 3, 6, 5)
    logits[2, 0, 1:3, 2:4] = 1.0  # class 2 in slice 0, rows 1-2, columns 2-3 of the (Z, Y, X) layout
    item["pred"] = logits
    pred = acdc_post_transforms(preprocessing)(item)["pred"]
    assert tuple(pred.shape[1:]) == shape
    expected = torch.zeros(3, 6, 5)
    expected[0, 1:3, 2:4] = 2
    expected = expected.permute(2, 1, 0) if suffix == ".nii.gz" else expected
    assert torch.equal(torch.as_tensor(pred[0]), expected)


@pytest.mark.parametrize("factory", [acdc_train_transforms, acdc_resize_transforms])
def test_acdc_training_takes_one_random_slice_of_a_nifti_volume(tmp_path, factory):
    """MONAI Label trains 2D bundles on volumes: each draw is one slice z of the (Z, Y, X) volume, image and label
    from the same z; the prepared 2D slice of that z gives the same item (shown with one slice per volume)."""
    zyx = np.stack([np.full((9, 7), z + 1, np.float32) for z in range(4)])  # slice z holds the value z + 1
    image, label = tmp_path / "case.nii.gz", tmp_path / "case_gt.nii.gz"
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0), np.eye(4)), str(image))
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0).astype(np.uint8), np.eye(4)), str(label))
    pipeline = factory([9, 7])
    pipeline.set_random_state(seed=0)
    drawn = set()
    for _ in range(12):
        out = pipeline({"image": str(image), "label": str(label)})
        assert out["image"].shape == out["label"].shape == (1, 9, 7)
        values = set(np.unique(np.asarray(out["image"])).tolist()) - {0.0}  # rotations may fill zeros
        assert len(values) == 1 and values == set(np.unique(np.asarray(out["label"])).tolist()) - {0}
        drawn |= values
    assert drawn == {1.0, 2.0, 3.0, 4.0}


EXEMPT = yaml.safe_load((Path(__file__).parent / "bundle_exemptions.yml").read_text()) or {}


@pytest.mark.parametrize(
    "bundle", [b for b in BUNDLES if b.endswith("_segmentation") and "monai_deploy" not in EXEMPT.get(b, {})]
)
def test_inference_pipelines_are_flat_dict_pipelines_for_monai_deploy(bundle):
    """MONAI Deploy's bundle operator drops transforms named LoadImage*/SaveImage* and applies the rest to the input
    dictionary only if the first one left is a MapTransform (else to the bare image): every step must be one."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    for key in ("preprocessing", "postprocessing"):
        steps = [
            t for t in parser.get_parsed_content(key).transforms if not type(t).__name__.startswith(("Load", "Save"))
        ]
        assert steps and all(isinstance(t, MapTransform) for t in steps), (bundle, key, [type(t) for t in steps])
