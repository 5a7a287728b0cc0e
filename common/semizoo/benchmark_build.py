"""Build a bundle's training objects for ``python -m semizoo benchmark`` from its configs, on random batches.

:func:`build` merges the bundle's config files with MONAI's ``ConfigParser`` (later files override earlier ones, as
``monai.bundle run`` does) and returns the network, method and optimizer(s) the bundle trains with, a fixed random
batch of the configured sizes and, on request, the bundle's own trainer (``train#trainer``) reading that batch from
an in-memory loader. Without a ``dataset_dir`` no data is read: ``semizoo.data.load_split`` returns empty lists while
the configs are parsed, and train handlers that need data (they reach a datalist) or the disk (a ``*dir``/``*path``/
``*file`` argument) are dropped; the others (NaN guard, LR schedule, logging, ...) are kept. ``bundle_root`` points
to a scratch folder, so nothing is written into the bundle.

A bundle is described by its folder; the benchmark's shapes are ``paper`` (``configs/train.json`` alone) and ``cpu``
(plus ``configs/quickstart.json``, else ``configs/smoke.json``); a multi-stage bundle (``configs/stages.json``) is
built once per stage config (:func:`stage_configs`).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

__all__ = [
    "SHAPES",
    "Setup",
    "RepeatBatches",
    "build",
    "config_files",
    "discover_bundles",
    "optimizer_dict",
    "shape_configs",
    "stage_configs",
]

SHAPES = ("cpu", "paper")
#: the first of these a bundle has makes its ``cpu`` shape
CPU_SHAPE_CONFIGS = ("quickstart.json", "smoke.json")
#: text in a config entry that means "reads the dataset"
DATA_MARKERS = ("load_split", "@datalist", "@dataset_dir")
#: handler arguments that mean "reads or writes files"
DISK_ARGUMENT = re.compile(r"(dir|path|file|filename|uri)$", re.IGNORECASE)
REFERENCE = re.compile(r"[@%]([A-Za-z_][A-Za-z0-9_]*(?:#[A-Za-z0-9_]+)*)")


def discover_bundles(root: Path) -> list[Path]:
    """Every folder under ``root`` with ``configs/train.json``, sorted by name."""
    return sorted(p for p in Path(root).iterdir() if (p / "configs" / "train.json").is_file())


def stage_configs(bundle: Path) -> list[str | None]:
    """The distinct stage configs of a multi-stage bundle in first-use order (``None`` for ``train.json`` itself);
    ``[None]`` for a single-stage bundle."""
    plan = Path(bundle) / "configs" / "stages.json"
    if not plan.is_file():
        return [None]
    stages: list[str | None] = []
    for files in json.loads(plan.read_text()).values():
        for name in files:
            stage = None if name == "train.json" else name
            if stage not in stages:
                stages.append(stage)
    return stages


def shape_configs(bundle: Path, shape: str | None) -> list[str]:
    """Config files that make ``shape``: ``[]`` for ``paper`` (or ``None``), the CPU-sized override for ``cpu``."""
    if shape in (None, "paper"):
        return []
    if shape != "cpu":
        raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}.")
    return [name for name in CPU_SHAPE_CONFIGS if (Path(bundle) / "configs" / name).is_file()][:1]


def _config_path(bundle: Path, name: str) -> Path:
    path = Path(name)
    if path.is_absolute():
        return path
    return bundle / path if (bundle / path).is_file() else bundle / "configs" / path


def config_files(bundle: Path, shape: str | None, overrides: Sequence[str] = (), stage: str | None = None) -> list[str]:
    """``train.json``, the shape's config, ``overrides`` (relative to the bundle or its ``configs/``, or absolute),
    then the stage config, as absolute paths in merge order."""
    names = ["train.json", *shape_configs(bundle, shape), *overrides, *([stage] if stage else [])]
    return [str(_config_path(Path(bundle), name)) for name in names]


def optimizer_dict(optimizer: Any) -> dict[str, torch.optim.Optimizer]:
    """The trainer's view of ``optimizer``: ``{"optimizer": opt}`` for one, the dict itself for several."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return {"optimizer": optimizer}
    return dict(optimizer)


class RepeatBatches:
    """An endless iterable of one ``(labeled, unlabeled)`` batch; a config parse keeps it (no deep copy)."""

    def __init__(self, labeled: Any, unlabeled: Any) -> None:
        self.labeled, self.unlabeled = labeled, unlabeled

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        while True:
            yield self.labeled, self.unlabeled

    def __deepcopy__(self, memo: dict) -> RepeatBatches:
        return self


@dataclass
class Setup:
    """What :func:`build` made of a bundle: its parser, device, method, optimizers, random batch and trainer (with the
    LR schedulers its handlers step every iteration)."""

    bundle: Path
    configs: list[str]
    parser: Any
    device: torch.device
    method: Any
    optimizers: dict[str, torch.optim.Optimizer]
    sizes: dict[str, Any]
    labeled: Any
    unlabeled: Any
    trainer: Any = None
    handlers: dict[str, list[str]] = field(default_factory=dict)
    set_to_none: bool = False
    grad_clip_norm: float | None = None
    schedulers: list[Any] = field(default_factory=list)

    @property
    def batch(self) -> dict[str, Any]:
        """Batch sizes (labelled, unlabelled) and the patch (segmentation) or image size (detection)."""
        return {k: v for k, v in self.sizes.items() if k in ("labeled", "unlabeled", "patch", "image_size")}


@contextlib.contextmanager
def _without_data(active: bool) -> Iterator[None]:
    """While active, ``semizoo.data.load_split`` returns ``[]`` (configs parse without a dataset)."""
    if not active:
        yield
        return
    from unittest import mock

    from . import data

    with mock.patch.object(data, "load_split", lambda *args, **kwargs: []):
        yield


def _is_clean(name: str, clean: set[str]) -> bool:
    return any(name == c or name.startswith(c + "#") for c in clean)


def _reaches_data(parser: Any, name: str, clean: set[str], seen: set[str]) -> bool:
    """Whether config entry ``name`` reads the dataset, directly or through the entries it references."""
    if _is_clean(name, clean) or name in seen or name not in parser:
        return False
    seen.add(name)
    text = json.dumps(parser.get(name), default=str)
    if any(marker in text for marker in DATA_MARKERS):
        return True
    return any(_reaches_data(parser, ref, clean, seen) for ref in REFERENCE.findall(text))


def _handler_name(raw: Any) -> str:
    return str(raw.get("_target_", "?")) if isinstance(raw, Mapping) else str(raw)[:60]


def _filter_handlers(parser: Any, clean: set[str]) -> dict[str, list[str]]:
    """Keep the train handlers that need neither data nor disk, and give the trainer only those; returns their names,
    kept and dropped."""
    raw = parser.get("train#handlers") if "train#handlers" in parser else []
    if not isinstance(raw, list):
        parser["train#handlers"] = []
        return {"kept": [], "dropped": [f"{_handler_name(raw)} (not a list)"]}
    kept, names = [], {"kept": [], "dropped": []}
    for index, handler in enumerate(raw):
        disk = isinstance(handler, Mapping) and any(DISK_ARGUMENT.search(str(key)) for key in handler)
        reads = _reaches_data(parser, f"train#handlers#{index}", clean, set())
        if disk or reads:
            names["dropped"].append(f"{_handler_name(handler)} ({'disk' if disk else 'data'})")
        else:
            kept.append(handler)
            names["kept"].append(_handler_name(handler))
    parser["train#handlers"] = kept
    if "train#trainer#train_handlers" in parser:  # an expression may add handlers (the training figures read the
        parser["train#trainer#train_handlers"] = "@train#handlers"  # validation data and write files): keep none
    return names


def _iteration_schedulers(handlers: Sequence[Any]) -> list[Any]:
    """The LR schedulers that the trainer's ``LrScheduleHandler``s step every iteration."""
    from monai.handlers import LrScheduleHandler

    return [h.lr_scheduler for h in handlers if isinstance(h, LrScheduleHandler) and not h.epoch_level]


def batch_sizes(parser: Any) -> dict[str, Any]:
    """Labelled/unlabelled batch sizes and the sample layout (patch or detection image size) of the train loader."""
    total = int(parser.get_parsed_content("train#dataloader#batch_size"))
    unlabeled = int(parser.get_parsed_content("train#dataloader#secondary_batch_size"))
    sizes: dict[str, Any] = {"labeled": total - unlabeled, "unlabeled": unlabeled}
    collate = json.dumps(parser.get("train#dataloader#collate_fn")) if "train#dataloader#collate_fn" in parser else ""
    if "no_collation" in collate:  # detection: lists of records, images resized by the network to min_size
        defaults = {"min_size": 600, "max_size": 1000, "num_classes": 3}  # torchvision's / BUS's when not configured
        value = {
            k: parser.get_parsed_content(f"network_def#{k}") if f"network_def#{k}" in parser else v
            for k, v in defaults.items()
        }
        side = int(value["min_size"])
        sizes.update(image_size=[side, min(int(value["max_size"]), round(1.25 * side))], records=True)
        sizes["classes"] = int(value["num_classes"])
        return sizes
    patch = parser.get_parsed_content("patch_size") if "patch_size" in parser else [parser["crop_size"]] * 2
    sizes.update(patch=[int(p) for p in patch], classes=int(parser.get_parsed_content("num_classes")), records=False)
    return sizes


def random_batches(sizes: Mapping[str, Any], device: torch.device, seed: int = 0) -> tuple[Any, Any]:
    """One random ``(labeled, unlabeled)`` batch of ``sizes`` (``unlabeled`` is ``None`` when its size is 0).

    Segmentation: ``image``/``label`` tensors, unlabelled ``image`` and ``image_fourier`` (EPL's Fourier twins; other
    methods ignore it). Detection: lists of records, a strong ``image`` with one ``box``/``label`` and ``image_class``,
    a weak ``image`` with ``image_class``.
    """
    generator = torch.Generator().manual_seed(seed)
    n_labeled, n_unlabeled, classes = int(sizes["labeled"]), int(sizes["unlabeled"]), int(sizes["classes"])
    if sizes.get("records"):
        height, width = sizes["image_size"]
        box = torch.tensor([[width / 4, height / 4, 3 * width / 4, 3 * height / 4]], device=device)

        def image() -> torch.Tensor:
            return torch.rand(1, height, width, generator=generator).to(device)

        def label(i: int) -> torch.Tensor:
            return torch.tensor(1 + i % (classes - 1), device=device)

        strong = [
            {"image": image(), "box": box, "label": label(i)[None], "image_class": label(i)} for i in range(n_labeled)
        ]
        weak = [{"image": image(), "image_class": label(i)} for i in range(n_unlabeled)]
        return strong, (weak or None)
    patch = sizes["patch"]
    labeled = {
        "image": torch.rand(n_labeled, 1, *patch, generator=generator).to(device),
        "label": torch.randint(0, classes, (n_labeled, 1, *patch), generator=generator).to(device),
    }
    if not n_unlabeled:
        return labeled, None
    unlabeled = {
        key: torch.rand(n_unlabeled, 1, *patch, generator=generator).to(device) for key in ("image", "image_fourier")
    }
    return labeled, unlabeled


def _stand_in_stage_outputs(bundle: Path, earlier: Sequence[Sequence[str]], workdir: Path, network: Any) -> None:
    """Write ``network``'s state dict where an earlier stage would have left its output (``stage_output``), so a
    stage that starts from it (e.g. self-training from the first model) builds; existing files are kept."""
    from monai.bundle import ConfigParser

    for configs in earlier:
        parser = ConfigParser()
        parser.read_config(list(configs))
        parser["bundle_root"] = str(workdir)
        if "stage_output" not in parser:
            continue
        path = Path(parser.get_parsed_content("stage_output", instantiate=False))
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(network.state_dict(), path)


def build(
    bundle: Path,
    configs: Sequence[str],
    workdir: Path,
    dataset_dir: str | Path | None = None,
    trainer_iterations: int | None = None,
    earlier: Sequence[Sequence[str]] = (),
    seed: int = 0,
) -> Setup:
    """Network, method, optimizers, a random batch and (with ``trainer_iterations``) the trainer of ``configs``.

    Args:
        bundle: the bundle folder.
        configs: config files in merge order (:func:`config_files`).
        workdir: scratch folder used as ``bundle_root`` (outputs, stand-ins for earlier stages' models).
        dataset_dir: a prepared dataset; ``None``: build without data (see the module docstring).
        trainer_iterations: build ``train#trainer`` to run exactly this many iterations on the random batch.
        earlier: config lists of the stages before this one (their outputs get stand-ins, see
            :func:`_stand_in_stage_outputs`).
        seed: seed of the random batch (the network is initialised by the bundle's ``initialize``).
    """
    from monai.bundle import ConfigParser

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    parser = ConfigParser()
    parser.read_config(list(configs))
    parser["bundle_root"] = str(workdir)
    parser["device"] = "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')"
    clean = {"bundle_root", "device"}
    if dataset_dir is not None:
        parser["dataset_dir"] = str(dataset_dir)
    elif "iters_per_epoch" in parser:  # derived from the dataset's length in the bundle; no data is read here
        parser["iters_per_epoch"] = 100
        clean.add("iters_per_epoch")
    with _without_data(dataset_dir is None):
        if "initialize" in parser and not _reaches_data(parser, "initialize", clean, set()):
            parser.get_parsed_content("initialize")  # the bundle's seeding (set_determinism)
        device = parser.get_parsed_content("device")
        sizes = batch_sizes(parser)
        labeled, unlabeled = random_batches(sizes, device, seed)
        handlers: dict[str, list[str]] = {}
        if trainer_iterations is not None:
            parser["train#dataloader"] = RepeatBatches(labeled, unlabeled)
            parser["train#trainer#max_iterations"] = int(trainer_iterations)
            parser["train#trainer#max_epochs"] = 1
            parser["train#trainer#epoch_length"] = int(trainer_iterations)
            handlers = _filter_handlers(parser, clean | {"train#dataloader"})
        if earlier:
            _stand_in_stage_outputs(Path(bundle), earlier, workdir, parser.get_parsed_content("network_def"))
        method = parser.get_parsed_content("method")
        name = "train#trainer#optimizer" if "train#trainer#optimizer" in parser else "optimizer"
        optimizers = optimizer_dict(parser.get_parsed_content(name))
        trainer = schedulers = None
        if trainer_iterations is not None:
            trainer = parser.get_parsed_content("train#trainer")
            schedulers = _iteration_schedulers(parser.get_parsed_content("train#handlers"))
        flags = {
            k: parser.get_parsed_content(f"train#trainer#{k}")
            for k in ("optim_set_to_none", "grad_clip_norm")
            if f"train#trainer#{k}" in parser
        }
    return Setup(
        bundle=Path(bundle),
        configs=list(configs),
        parser=parser,
        device=device,
        method=method,
        optimizers=optimizers,
        sizes=sizes,
        labeled=labeled,
        unlabeled=unlabeled,
        trainer=trainer,
        handlers=handlers,
        set_to_none=bool(flags.get("optim_set_to_none", False)),
        grad_clip_norm=flags.get("grad_clip_norm"),
        schedulers=schedulers or [],
    )
