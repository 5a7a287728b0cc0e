"""``python -m semizoo stages``: run a multi-stage bundle's stages in order, then evaluate (action.md §8).

A bundle with ``configs/stages.json`` (``{"variant": ["stage1.json", "stage2.json", "train.json"]}``) trains each
stage with ``python -m monai.bundle run training`` over ``[train.json, *overrides, stage.json]`` (``train.json``
alone for itself). Each stage config defines ``stage_output``, the file it writes; a stage whose output exists is
skipped unless ``force``, so an interrupted chain continues where it stopped. The next stage initialises from the
previous one's output (:class:`semizoo.handlers.StageLoader`), and ``evaluate.json`` finally scores the last stage's
model on the test split.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["stage_plan", "run_stages", "config_value"]

logger = logging.getLogger(__name__)


def stage_plan(bundle: Path, variant: str) -> list[str]:
    """The stage config files of ``variant`` from ``configs/stages.json``.

    Raises:
        FileNotFoundError: the bundle has no ``configs/stages.json``.
        KeyError: unknown variant (the message lists the known ones).
    """
    path = bundle / "configs" / "stages.json"
    if not path.is_file():
        raise FileNotFoundError(f"{bundle} has no configs/stages.json: it is a single-stage bundle.")
    plan = json.loads(path.read_text())
    if variant not in plan:
        raise KeyError(f"unknown variant {variant!r} of {bundle.name}; choose from {sorted(plan)}.")
    return list(plan[variant])


def config_value(bundle: Path, configs: Sequence[str], overrides: Mapping[str, Any], key: str) -> Any:
    """``key`` of the bundle config merged from ``configs`` with ``overrides``, evaluated without instantiating."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(configs))
    parser["bundle_root"] = str(bundle)
    for name, value in overrides.items():
        parser[name] = value
    return parser.get_parsed_content(key, instantiate=False)


def _run(run_id: str, bundle: Path, configs: list[str], overrides: dict[str, str]) -> None:
    command = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", json.dumps(configs)]
    command += ["--bundle_root", str(bundle), "--meta_file", str(bundle / "configs" / "metadata.json")]
    command += ["--logging_file", str(bundle / "configs" / "logging.conf")]
    for key, value in overrides.items():
        command += [f"--{key}", value]
    logger.info("running %s", " ".join(command))
    subprocess.run(command, check=True)


def run_stages(
    bundle: str | os.PathLike,
    variant: str,
    overrides: Sequence[str] = (),
    dataset_dir: str | None = None,
    force: bool = False,
    evaluate: bool = True,
) -> list[Path]:
    """Train every stage of ``variant`` not yet done, in order, then evaluate; returns the stage outputs."""
    bundle = Path(bundle).resolve()
    extra = [str(bundle / "configs" / Path(o).name) for o in overrides]
    values = {} if dataset_dir is None else {"dataset_dir": str(Path(dataset_dir).resolve())}
    outputs, configs = [], []
    for stage in stage_plan(bundle, variant):
        configs = [str(bundle / "configs" / "train.json"), *extra]
        if stage != "train.json":
            configs.append(str(bundle / "configs" / stage))
        output = Path(config_value(bundle, configs, values, "stage_output"))
        if output.is_file() and not force:
            logger.info("stage %s: %s exists, skipped", stage, output)
        else:
            _run("training", bundle, configs, values)
            if not output.is_file():
                raise RuntimeError(f"stage {stage} finished without writing {output}.")
        outputs.append(output)
    if evaluate:
        _run("evaluating", bundle, configs + [str(bundle / "configs" / "evaluate.json")], values)
    return outputs
