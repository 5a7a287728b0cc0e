"""``python -m semizoo <command>``: phantoms, prepare, validate, diagnostics and the quick start (fire CLI)."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

from .data.errors import DataError
from .data.prepare import PrepareError

__all__ = ["Commands", "main"]


class Commands:
    """semizoo command line: `python -m semizoo COMMAND --help` for the arguments of each command."""

    def phantoms(
        self,
        dataset: str,
        out: str,
        cases: int | None = None,
        seed: int = 0,
        preset: str = "test",
        size: int | None = None,
    ) -> str:
        """Write deterministic phantom data of DATASET (acdc | la) in its raw public layout to OUT."""
        from .data.phantoms import generate

        kwargs: dict[str, Any] = {"size": size} if size is not None else {}
        manifest = generate(dataset, out, cases=cases, seed=seed, preset=preset, **kwargs)
        return f"wrote {dataset} phantoms to {out} ({json.dumps(manifest.get('arguments', manifest))})"

    def prepare(
        self,
        dataset: str,
        src: str,
        out: str,
        layout: str = "auto",
        split: str = "auto",
        split_seed: int = 0,
        setting: str | None = None,
        la_crop: str = "label",
        overwrite: bool = False,
    ) -> str:
        """Convert SRC (a public layout of DATASET: acdc | la) into OUT with datalists per setting."""
        from .data.prepare import prepare

        report = prepare(dataset, src, out, layout, split, split_seed, setting, la_crop, overwrite)
        return json.dumps(report["counts"], indent=4)

    def validate(self, datalist: str) -> str:
        """Check that every file of DATALIST exists and reads, and that the lists are patient-disjoint."""
        from .data.validate import validate_datalist

        return validate_datalist(datalist)

    def convert_official(self, checkpoint: str, bundle: str, out: str | None = None) -> str:
        """Load an official UA-MT/SSL4MIS/SS-Net CHECKPOINT into BUNDLE's network and write models/model.pt."""
        from .convert import bundle_path, convert_official_checkpoint

        target = out or str(bundle_path(bundle) / "models" / "model.pt")
        return f"wrote {convert_official_checkpoint(checkpoint, bundle, target)}"

    def benchmark(
        self,
        bundles: Sequence[str] | str = ("meanteacher_acdc_segmentation", "ssnet_acdc_segmentation"),
        overrides: Sequence[str] | str = ("configs/quickstart.json",),
        out: str | None = None,
        iterations: int = 10,
    ) -> None:
        """Seconds per training step of each bundle's method vs its labeled-only step (same batch), side by side."""
        from .benchmark import run_benchmark

        bundles = (bundles,) if isinstance(bundles, str) else tuple(bundles)
        overrides = (overrides,) if isinstance(overrides, str) else tuple(overrides)
        run_benchmark(bundles, [o.removeprefix("configs/") for o in overrides], out=out, iterations=iterations)

    def teacher_bias(
        self,
        checkpoint: str,
        datalist: str,
        bundle: str = "meanteacher_acdc_segmentation",
        key: str = "unlabeled",
        size: Sequence[int] | int | None = None,
        batch_size: int = 4,
        draws: int = 1,
        limit: int | None = None,
        out: str | None = None,
    ) -> str:
        """Per-class predicted area of CHECKPOINT on DATALIST's KEY slices (resized to SIZE, default the bundle's
        patch_size): eval mode, train mode, and the Mean Teacher target's view (train mode + input noise); with
        reference labels when the slices have them. DRAWS > 1 averages that many dropout/noise draws (the expected
        target)."""
        from .diagnostics import teacher_bias_report

        size = (size, size) if isinstance(size, int) else size
        report = teacher_bias_report(bundle, checkpoint, datalist, key, size, batch_size, limit, draws=draws)
        text = json.dumps(report, indent=4)
        if out:
            with open(out, "w") as handle:
                handle.write(text + "\n")
        return text

    def quickstart(
        self,
        out: str = "runs/quickstart",
        seeds: Sequence[int] | int = (0,),
        iterations: int = 2000,
        cases: int = 40,
        size: int = 64,
        setting: str = "lab3",
        bundle: str = "meanteacher_acdc_segmentation",
        method: str = "mean_teacher",
    ) -> None:
        """Phantom ACDC: labeled-only vs a bundle's method (Mean Teacher by default), trained and evaluated through
        the bundle runner; prints a results table."""
        from .quickstart import run_quickstart

        seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
        run_quickstart(out, seeds, iterations, cases, size, setting, method=method, bundle=bundle)


def main(argv: Sequence[str] | None = None) -> int:
    import fire

    try:
        fire.Fire(Commands, command=list(argv) if argv is not None else None, name="semizoo")
    except (DataError, PrepareError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
