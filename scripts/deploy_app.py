"""Example MONAI Deploy application: one semizoo segmentation bundle on one NIfTI volume.

    .venv-deploy/bin/python scripts/deploy_app.py --bundle DIR --input CASE.nii.gz --output OUT_DIR

``DIR`` is a bundle folder whose ``models/model.ts`` was written by ``python -m monai.bundle ckpt_export`` (an
``export-bundle`` copy where semizoo is not installed: its vendored package is imported from the bundle folder).
The application is three operators (MONAI Deploy App SDK >= 3, on Holoscan):

1. ``NiftiVolumeLoader`` (here): the volume as an SDK ``Image`` in the NIfTI's (X, Y, Z) order, with the
   ``spacing``/``original_affine``/``filename_or_obj`` meta data MONAI's own NIfTI loading would give;
2. ``MonaiBundleInferenceOperator`` (the SDK's): ``inference.json``'s ``preprocessing``, ``inferer`` and
   ``postprocessing`` without ``LoadImaged``/``SaveImaged``, on ``models/model.ts``; it returns the label map as an
   ``Image`` in the SDK's (Z, Y, X) convention. The 2D ACDC bundles segment the volume slice by slice;
3. ``NiftiSegmentationWriter`` (here): ``<case>_seg.nii.gz`` (uint8) with the input's affine.

``tests/test_deploy.py`` runs this application on a 2D (ACDC) and a 3D (LA) bundle.
"""

from __future__ import annotations

import argparse
import logging
import pkgutil
import sys
from pathlib import Path

import monai
import nibabel as nib
import numpy as np

# The SDK installs into the ``monai`` package (``monai.deploy``). semizoo keeps it in .venv-deploy, a venv layered on
# .venv (scripts/setup_venv.sh), where the ``monai`` imported is .venv's: add the SDK's part to its search path.
monai.__path__ = pkgutil.extend_path(monai.__path__, monai.__name__)

from monai.deploy.core import AppContext, Application, Fragment, Image, IOType, Operator, OperatorSpec  # noqa: E402
from monai.deploy.operators.monai_bundle_inference_operator import IOMapping, MonaiBundleInferenceOperator  # noqa: E402

logger = logging.getLogger("semizoo.deploy_app")


class NiftiVolumeLoader(Operator):
    """Emit the volume of ``input_path`` as an ``Image`` (float32, X-Y-Z order) with MONAI-style meta data."""

    def __init__(self, fragment: Fragment, *args, input_path: Path, **kwargs) -> None:
        self.input_path = Path(input_path)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("image")

    def compute(self, op_input, op_output, context) -> None:
        volume = nib.load(str(self.input_path))
        array = np.asarray(volume.dataobj, dtype=np.float32)
        if array.ndim != 3:
            raise ValueError(f"{self.input_path}: expected a 3-D NIfTI volume, got shape {array.shape}")
        meta = {
            "filename_or_obj": str(self.input_path),
            "spacing": np.asarray(volume.header.get_zooms()[:3], dtype=float),
            "original_affine": volume.affine.copy(),
            "affine": volume.affine.copy(),
            "spatial_shape": np.asarray(array.shape),
            "original_channel_dim": "no_channel",
        }
        op_output.emit(Image(array, metadata=meta), "image")


class NiftiSegmentationWriter(Operator):
    """Write the label map ``Image`` (Z, Y, X) as ``<case>_seg.nii.gz`` in ``output_dir`` with the input's affine."""

    def __init__(self, fragment: Fragment, *args, output_dir: Path, **kwargs) -> None:
        self.output_dir = Path(output_dir)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("seg_image")

    def compute(self, op_input, op_output, context) -> None:
        image = op_input.receive("seg_image")
        meta = image.metadata()
        labels = np.swapaxes(np.asarray(image.asnumpy()), 0, 2).astype(np.uint8)  # (Z, Y, X) -> (X, Y, Z)
        name = Path(str(meta["filename_or_obj"])).name.removesuffix(".gz").removesuffix(".nii")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{name}_seg.nii.gz"
        nib.save(nib.Nifti1Image(labels, np.asarray(meta["original_affine"])), str(path))
        logger.info("wrote %s", path)


class BundleSegmentationApp(Application):
    """NIfTI volume → semizoo bundle (``models/model.ts``) → NIfTI label map."""

    def __init__(self, *args, bundle: Path, input_path: Path, output_dir: Path, **kwargs) -> None:
        self.bundle, self.input_path, self.output_dir = Path(bundle), Path(input_path), Path(output_dir)
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        from holoscan.conditions import CountCondition

        if str(self.bundle) not in sys.path:  # an exported bundle's vendored semizoo, for inference.json's targets
            sys.path.insert(0, str(self.bundle))
        # the SDK's model factory loads models/model.ts; the operator reads the configs embedded in it
        model = self.bundle / "models" / "model.ts"
        app_context = AppContext({"model": str(model), "input": str(self.input_path), "output": str(self.output_dir)})
        loader = NiftiVolumeLoader(self, CountCondition(self, 1), input_path=self.input_path, name="loader")
        inference = MonaiBundleInferenceOperator(
            self,
            app_context=app_context,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            bundle_path=model,
            name="bundle_inference",
        )
        writer = NiftiSegmentationWriter(self, output_dir=self.output_dir, name="writer")
        self.add_flow(loader, inference, {("image", "image")})
        self.add_flow(inference, writer, {("pred", "seg_image")})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path, help="bundle folder with models/model.ts")
    parser.add_argument("--input", required=True, type=Path, help="a 3-D NIfTI volume")
    parser.add_argument("--output", required=True, type=Path, help="folder for <case>_seg.nii.gz")
    args = parser.parse_args(argv)
    if not (args.bundle / "models" / "model.ts").is_file():
        parser.error(
            f"{args.bundle / 'models' / 'model.ts'} is missing: run `python -m monai.bundle ckpt_export` first"
        )
    if not args.input.is_file():
        parser.error(f"{args.input}: no such file")
    logging.basicConfig(level=logging.INFO)
    BundleSegmentationApp(bundle=args.bundle, input_path=args.input, output_dir=args.output).run()


if __name__ == "__main__":
    main()
