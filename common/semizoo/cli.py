"""``python -m semizoo <command>``: phantoms, prepare, validate, diagnostics and the quick start (fire CLI).

The commands are the public methods of :class:`Commands`; fire parses their arguments. ``--help`` (top level and per
command) is printed here from the methods' signatures and docstrings (Google-style ``Args:``), never through a pager.
"""

from __future__ import annotations

import difflib
import inspect
import json
import sys
import textwrap
from typing import Any, Callable, Sequence, TextIO

from .data.errors import DataError
from .data.prepare import PrepareError
from .fetch import WeightsError

__all__ = ["Commands", "main", "commands", "command_help", "top_level_help"]

PROG = "python -m semizoo"
HELP_FLAGS = ("-h", "--help")
WIDTH = 120
DESCRIPTION = (
    "semizoo is the shared library of a MONAI Bundle model zoo of semi-supervised medical image segmentation "
    "methods (Mean Teacher, SS-Net, ...). Its commands generate deterministic phantom data, convert public datasets "
    "(ACDC, LA) into prepared folders with datalists, validate datalists, load official checkpoints into bundles, "
    "benchmark and diagnose the methods, run the quick start and reproduce the results tables. Arguments go in "
    "order or as flags (--name=value); lists as --name=a,b or --name='[a,b]'."
)


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
        """Write deterministic phantom data of DATASET (acdc | la | mnms | busi | udiat | snubh | bus) to OUT.

        Each dataset comes in its raw public layout; files are byte-identical across runs; OUT/semizoo_phantom.json
        records the arguments.

        Args:
            dataset: which dataset to imitate: acdc (raw CREATIS layout), la (LA 2018 nrrd layout), mnms (the
                OpenDataset release with its information CSV), busi (Dataset_BUSI_with_GT), udiat (UDIAT Dataset B:
                original/, GT/, DatasetB.xlsx), snubh (SNUBH-style VOC: TIFFImages/, Annotations/, ImageSets/Main/)
                or bus (busi, udiat and snubh in OUT/busi, OUT/udiat, OUT/snubh).
            out: output folder; created if missing. A folder of an earlier phantom run is regenerated; any other
                non-empty folder is refused.
            cases: number of patients; None: the preset's (acdc: test 10, bench 100; la: test 12, bench 100; udiat:
                10, 163; mnms: 16, 126, busi: 24, 300 and snubh: 24, 300, each preset's fixed plan; bus: None only).
            seed: non-negative base seed; case k depends only on (seed, dataset, k).
            preset: test (small and fast) or bench (the sizes of the difficulty report).
            size: acdc only: in-plane matrix (the preset's field of view is kept, so the spacing changes); None:
                the preset's (test 48, bench 128).
        """
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
        mnms_extra_unlabeled: bool = False,
        labeled_selection: str = "first",
        mask_threshold: float | None = None,
    ) -> str:
        """Convert SRC (a public layout of DATASET: acdc | la | mnms | busi | udiat | snubh) into OUT with datalists.

        Prints the number of cases per list.

        Args:
            dataset: acdc, la, mnms (the OpenDataset release + information CSV), busi or busi-detection
                (Dataset_BUSI_with_GT: segmentation and detection lists from the same split), udiat
                (UDIAT Dataset B: original/, GT/, DatasetB.xlsx; detection) or snubh, alias voc (SNUBH-style VOC:
                TIFFImages/, Annotations/, ImageSets/Main/; detection).
            src: the downloaded (or phantom) data folder.
            out: the prepared folder to write (volumes, slices, one datalist per setting, prepare_report.json).
            layout: layout of SRC: auto (detected from marker files), or raw | ssl4mis (acdc), raw | uamt (la).
            split: standard (the frozen public lists; fails naming missing IDs), scaled (a seeded split keeping the
                standard proportions) or auto (scaled for phantoms, else standard).
            split_seed: seed of scaled splits and of the LA crop margins.
            setting: the default datalist (datalist.json): acdc lab3 | lab7 | full, la lab4 | lab8 | full, busi
                seg_lab{5,10,25,50}pct | seg_full | det_lab{5,10,20}pct | det_s10 | det_s50 | det_full, udiat
                det_paper | test, snubh s_full | s<N>; None: lab3 (acdc), lab4 (la), seg_lab25pct (busi),
                det_lab20pct (busi-detection), det_paper (udiat), s_full (snubh).
            la_crop: la only: label (UA-MT's crop around the ground-truth box) or none.
            overwrite: replace a non-empty OUT that holds something other than semizoo output.
            mnms_extra_unlabeled: mnms only: add the 25 unlabelled vendor-C training cases to the unlabelled lists.
            labeled_selection: mnms only: first (EPL: the first patients by code) or random (seeded by split_seed).
            mask_threshold: busi and udiat only: binarise masks at > T instead of requiring values in {0, 255}.
        """
        from .data.prepare import prepare

        report = prepare(
            dataset,
            src,
            out,
            layout,
            split,
            split_seed,
            setting,
            la_crop,
            overwrite,
            extra_unlabeled=mnms_extra_unlabeled,
            labeled_selection=labeled_selection,
            mask_threshold=mask_threshold,
        )
        return json.dumps(report["counts"], indent=4)

    def validate(self, datalist: str, bundle: str | None = None) -> str:
        """Check DATALIST before training: files read, shapes/spacing/labels/intensities sane, splits disjoint.

        Prints a one-line summary, or fails (exit code 2) listing every problem, each naming its file or list.

        Args:
            datalist: a datalist JSON written by `prepare` (lists labeled, unlabeled, validation, test).
            bundle: a bundle folder or name (e.g. ssnet_acdc_segmentation): check its class set and labeled batch
                size too; without it the datalist's own `classes` are used.
        """
        from .data.validate import validate_datalist

        return validate_datalist(datalist, bundle=bundle)

    def convert_official(self, checkpoint: str, bundle: str, out: str | None = None) -> str:
        """Load an official UA-MT/SSL4MIS/SS-Net CHECKPOINT into BUNDLE's network and write models/model.pt.

        Bad or missing keys are listed before anything is loaded; the state_dict is written atomically.

        Args:
            checkpoint: the official checkpoint file (.pth).
            bundle: a bundle folder, or the name of one under bundles/ (e.g. ssnet_acdc_segmentation).
            out: where to write the converted state_dict; None: BUNDLE/models/model.pt.
        """
        from .bundle_paths import bundle_path
        from .convert import convert_official_checkpoint

        target = out or str(bundle_path(bundle) / "models" / "model.pt")
        return f"wrote {convert_official_checkpoint(checkpoint, bundle, target)}"

    def fetch_weights(self, bundle: str, setting: str | None = None, timeout: float = 60) -> str:
        """Download BUNDLE's released weights (large_files.yml), verify each hash, write atomically.

        A truncated, corrupted or wrong download is refused and nothing is written. SS-Net's official checkpoints
        (checked against their git blob ids) are converted into models/model.pt for the bundle's setting.

        Args:
            bundle: a bundle folder, or the name of one under bundles/ (e.g. ssnet_la_segmentation).
            setting: the datalist setting whose official checkpoint becomes models/model.pt (e.g. lab8); None: the
                bundle's default (configs/train.json).
            timeout: seconds to wait for the server.
        """
        from .fetch import fetch_weights

        return "\n".join(fetch_weights(bundle, setting=setting, timeout=timeout))

    def export_bundle(self, bundle: str, out: str, overwrite: bool = False) -> str:
        """Write BUNDLE with the semizoo package vendored inside to OUT: runnable where semizoo is not installed.

        MONAI puts the bundle root on sys.path, so the configs' semizoo imports resolve to OUT/semizoo; the exported
        metadata pins only PyPI packages. MONAI Label, MONAI Deploy and zoo-style downloads use this form.

        Args:
            bundle: a bundle folder, or the name of one under bundles/.
            out: the folder to write (must not exist or be empty).
            overwrite: replace a non-empty OUT.
        """
        from .export import export_bundle

        return f"wrote {export_bundle(bundle, out, overwrite=overwrite)}"

    def usage(self, bundle: str) -> str:
        """Print BUNDLE's "Use it" commands: N GPUs, several nodes, weights, export, MONAI Deploy, MONAI Label.

        The same Markdown section is in the bundle's docs/README.md, and the test it names under each command runs
        that command (semizoo.usage builds both).

        Args:
            bundle: a bundle folder, or the name of one under bundles/ (e.g. ssnet_la_segmentation).
        """
        from .bundle_paths import bundle_path
        from .usage import use_it_section

        return use_it_section(bundle_path(bundle))

    def benchmark(
        self,
        bundles: Sequence[str] | str | None = None,
        overrides: Sequence[str] | str = (),
        out: str | None = None,
        iterations: int = 10,
        shapes: Sequence[str] | str = ("cpu", "paper"),
        paper_iterations: int = 3,
        warmup: int = 2,
        blocks: int = 2,
        memory: bool = True,
        framework: bool = True,
        data_wait: bool = True,
        inference: bool = True,
        overlaps: Sequence[float] | float = (0.5, 0.25),
        ckpt: str | None = None,
        phantoms: str | None = None,
        threads: int | None = None,
    ) -> None:
        """Cost of each bundle's training iteration and of LA inference, every ratio measured side by side in one run.

        Per bundle, stage and shape: median seconds per iteration of the method's step and of the labeled-only step
        of the same network and batch (random tensors) and their ratio, the peak memory of each, the bundle's own
        trainer vs a plain PyTorch loop calling the same method step (framework overhead), and the share of each
        iteration spent waiting for the bundle's train loader on phantom data. For bundles with a 3D sliding-window
        test inferer (LA): seconds per phantom volume with the paper's strides and with faster overlaps, and the
        Dice between the predictions. Prints Markdown tables; writes benchmark.json and benchmark.md to OUT.

        Args:
            bundles: bundle names under bundles/ or folders, one or a list (e.g. --bundles='[a,b]'); None: every
                bundle folder with configs/train.json, every stage of a multi-stage bundle.
            overrides: config files merged over each shape's configs in every shape (names under the bundle's
                configs/ or paths), one or a list.
            out: folder to write benchmark.json and benchmark.md to (and the phantoms, reused); None: print only.
            iterations: timed steps per block at the cpu shape (two interleaved blocks per kind by default).
            shapes: cpu (train.json + quickstart.json, else smoke.json) and/or paper (train.json alone).
            paper_iterations: timed steps per block at the paper shape (slow on a CPU, hence fewer).
            warmup: untimed steps of each kind before the timed blocks.
            blocks: alternating timed blocks per kind (A B B A ...).
            memory: measure peak memory (CUDA: max allocated; CPU: peak RSS of a fresh process per step kind).
            framework: time the bundle's trainer against the plain loop.
            data_wait: measure the data-wait share on phantom data (generates and prepares phantoms once).
            inference: time sliding-window inference of 3D bundles at the paper's strides and the faster overlaps.
            overlaps: the faster window overlaps, one or a list.
            ckpt: network weights for inference: a path relative to each bundle folder (e.g. models/model.pt) or
                absolute; None or a missing file: the network's random initialisation (stated in the output).
            phantoms: folder for the prepared phantoms; None: OUT/phantoms, or a temporary folder without OUT.
            threads: torch CPU threads (recorded in the output); None: torch's default (one per core). On a busy
                machine fewer threads than cores time more steadily.
        """
        from .benchmark import run_benchmark

        def names(value: Sequence[str] | str | None) -> tuple[str, ...] | None:
            if value is None:
                return None
            items = value.strip("[]()").split(",") if isinstance(value, str) else value
            return tuple(str(item).strip().strip("'\"") for item in items if str(item).strip())

        run_benchmark(
            names(bundles) or None,
            [o.removeprefix("configs/") for o in names(overrides) or ()],
            out=out,
            iterations=iterations,
            shapes=names(shapes) or (),
            paper_iterations=paper_iterations,
            warmup=warmup,
            blocks=blocks,
            memory=memory,
            framework=framework,
            data_wait=data_wait,
            inference=inference,
            overlaps=(float(overlaps),) if isinstance(overlaps, (int, float)) else tuple(float(o) for o in overlaps),
            ckpt=ckpt,
            phantoms=phantoms,
            threads=threads,
        )

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
        """Per-class predicted area of CHECKPOINT on DATALIST's slices: eval, train and Mean Teacher target views.

        The target view is train mode + input noise; reference labels are reported when the slices have them.
        Prints the report as JSON.

        Args:
            checkpoint: a state_dict of BUNDLE's network (e.g. a run's models/model_final.pt).
            datalist: a prepared datalist JSON of 2D slices.
            bundle: bundle folder or name under bundles/ whose configs/inference.json builds the network.
            key: the datalist list to read: labeled, unlabeled, validation or test.
            size: slices are resized to SIZE (one int for square, or H,W); None: the bundle's patch_size.
            batch_size: slices per forward pass.
            draws: number of dropout/noise draws averaged (> 1 estimates the expected target).
            limit: read at most LIMIT slices of the list; None: all.
            out: also write the JSON report to this file; None: print only.
        """
        from .diagnostics import teacher_bias_report

        size = (size, size) if isinstance(size, int) else size
        report = teacher_bias_report(bundle, checkpoint, datalist, key, size, batch_size, limit, draws=draws)
        text = json.dumps(report, indent=4)
        if out:
            with open(out, "w") as handle:
                handle.write(text + "\n")
        return text

    def stages(
        self,
        bundle: str,
        variant: str = "action",
        dataset_dir: str | None = None,
        override: Sequence[str] | str = (),
        force: bool = False,
        evaluate: bool = True,
    ) -> str:
        """Run a multi-stage bundle's stages in order (configs/stages.json), then evaluate the final model.

        A stage whose output file exists is skipped, so an interrupted chain continues where it stopped.

        Args:
            bundle: the bundle folder or name under bundles/ (e.g. action_acdc_segmentation).
            variant: key of the bundle's configs/stages.json (e.g. action or actionpp).
            dataset_dir: prepared data folder; default the bundle's dataset_dir.
            override: config files of the bundle merged after train.json in every stage (e.g. configs/smoke.json).
            force: retrain stages whose output exists.
            evaluate: evaluate the last stage's model on the test split with evaluate.json.
        """
        from .bundle_paths import bundle_path
        from .stages import run_stages

        override = (override,) if isinstance(override, str) else tuple(override)
        outputs = run_stages(bundle_path(bundle), variant, override, dataset_dir, force, evaluate)
        return "stage outputs:\n" + "\n".join(str(o) for o in outputs)

    def quickstart(
        self,
        out: str = "runs/quickstart",
        seeds: Sequence[int] | int = (0,),
        iterations: int = 400,
        cases: int | None = None,
        size: int = 64,
        setting: str | None = None,
        methods: Sequence[str] | str | None = None,
        dataset: str = "acdc",
    ) -> None:
        """The quick start: phantom data, labeled-only vs semi-supervised methods; prints the results table.

        Each method's bundle is trained (every stage of a multi-stage method such as ACTION) and so is its
        labeled-only bound with the same recipe; both are evaluated through the bundle runner on the test split.
        A progress bar shows the whole job. Finished runs under OUT are reused.

        Args:
            out: run folder (phantom data, prepared data, one folder per model and seed, results).
            seeds: training seeds, one or a list (e.g. --seeds='[0,1,2]').
            iterations: training iterations per run (per stage); schedules scale with it (evaluation.md's
                compression rule). A multi-stage method's labeled-only bound gets as many iterations as the
                method's stages that use labels.
            cases: number of phantom patients (default: acdc 40, la 24, mnms 16: the test preset's vendor plan).
            size: ACDC only: in-plane matrix of the phantom slices.
            setting: labelled-data setting of the prepared datalists (default 5 %: acdc lab3, la lab4, mnms
                targetD_5pct: vendor D held out).
            methods: methods to compare with their labeled-only bounds (acdc: ssnet, mean_teacher, action,
                actionpp; la: action_la, actionpp_la; mnms: epl, epl_dual); default acdc: ssnet and mean_teacher,
                la: both ACTIONs, mnms: both EPLs.
            dataset: acdc, la, mnms (EPL's leave-one-vendor-out setting) or busi; detection (bus) is in reproduce.
        """
        from .quickstart import run_quickstart

        seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
        methods = (methods,) if isinstance(methods, str) else (None if methods is None else tuple(methods))
        run_quickstart(out, seeds, iterations, cases, size, setting, methods=methods, dataset=dataset)

    def reproduce(
        self,
        dataset: str = "acdc",
        fractions: Sequence[float] | float = (0.05, 0.1),
        budget: str = "cpu",
        data_dir: str | None = None,
        out: str | None = None,
        seeds: Sequence[int] | int = (0,),
        methods: Sequence[str] | str | None = None,
        iterations: int = 400,
        cases: int | None = None,
        overrides: dict | None = None,
    ) -> None:
        """Learning-efficiency table: labeled-only and fully supervised bounds and every method, evaluated on test.

        Per labelled fraction, every semi-supervised method declared for the dataset (bundles' configs/methods.json)
        trains beside its bundle's labeled-only bound on the same split and budget; the fully supervised bound
        trains on all labels. Writes reproduce.json, reproduce.md (Dice with bootstrap 95 % CIs, paired difference
        to labeled-only, fraction of the lower-to-upper gap closed) and PNGs (bars with CIs, learning curves).

        Args:
            dataset: acdc, la, mnms (vendor D held out), busi, or bus (WSSDL detection on the BUSI phantoms' box
                lists, scored by CorLoc against the strong-only bound).
            fractions: nominal labelled shares, one or a list (acdc/la: 0.05, 0.1; mnms: 0.02, 0.05, 0.1; busi:
                0.05, 0.1, 0.25, 0.5; bus: 0.05, 0.1, 0.2 of the lesion images box-labelled), each mapped to its
                datasets.md setting (acdc 0.05 = lab3).
            budget: cpu (configs/quickstart.json with `iterations` per stage) or paper (the bundles' schedules).
            data_dir: a prepared dataset (python -m semizoo prepare); default: phantoms generated under `out`.
            out: run folder (default runs/reproduce/DATASET); finished runs in it are reused.
            seeds: training seeds, one or a list.
            methods: method keys (default: all of the dataset's), one or a list.
            iterations: cpu budget: iterations per model and stage.
            cases: phantom patients (default: the quick start's for the dataset).
            overrides: config values for every run, as a dict (e.g. --overrides "{'patch_size': [64, 64, 48],
                'val_strides': [32, 32, 24]}" for real LA volumes on a CPU); the tables state them.
        """
        from .reproduce import run_reproduce

        fractions = (fractions,) if isinstance(fractions, (int, float)) else tuple(fractions)
        seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
        methods = (methods,) if isinstance(methods, str) else (None if methods is None else tuple(methods))
        run_reproduce(dataset, fractions, budget, data_dir, out, seeds, methods, iterations, cases, overrides)


def dashed(name: str) -> str:
    """The command or flag name users type: underscores become dashes (fire accepts both)."""
    return name.replace("_", "-")


def commands() -> dict[str, Callable[..., Any]]:
    """Dashed command name -> method of :class:`Commands`, in definition order."""
    return {dashed(name): member for name, member in vars(Commands).items() if _is_command(name, member)}


def _is_command(name: str, member: object) -> bool:
    return not name.startswith("_") and inspect.isfunction(member)


def summary(method: Callable[..., Any]) -> str:
    """First line of a method's docstring ("" when it has none)."""
    return ((inspect.getdoc(method) or "").strip().splitlines() or [""])[0]


def parse_docstring(method: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """(description, {argument: description}) of a Google-style docstring; other sections are dropped."""
    lines = (inspect.getdoc(method) or "").splitlines()
    description: list[str] = []
    arguments: dict[str, list[str]] = {}
    section, current = "", ""
    for line in lines:
        stripped = line.strip()
        if line and not line[0].isspace() and stripped.endswith(":") and " " not in stripped:
            section, current = stripped[:-1].lower(), ""
        elif section == "":
            description.append(line)
        elif section in ("args", "arguments") and stripped:
            name, colon, text = stripped.partition(":")
            if line.startswith(" " * 8) or not colon or " " in name:
                if current:
                    arguments[current].append(stripped)
            else:
                current = name.strip("*")
                arguments[current] = [text.strip()]
    return "\n".join(description).strip(), {name: " ".join(text) for name, text in arguments.items()}


def _annotation(parameter: inspect.Parameter) -> str:
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        return ""
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _paragraphs(text: str, indent: str = "") -> str:
    blocks = [" ".join(block.split()) for block in text.split("\n\n") if block.strip()]
    return "\n\n".join(textwrap.fill(b, WIDTH, initial_indent=indent, subsequent_indent=indent) for b in blocks)


def _parameters(method: Callable[..., Any]) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(method).parameters.values() if p.name != "self"]


def command_help(name: str) -> str:
    """Help of one command: usage, description, then each argument with its type, default and description."""
    method = commands()[name]
    description, documented = parse_docstring(method)
    parameters = _parameters(method)
    required = [p for p in parameters if p.default is inspect.Parameter.empty]
    optional = [p for p in parameters if p.default is not inspect.Parameter.empty]
    usage = " ".join([f"usage: {PROG} {name}"] + [p.name.upper() for p in required] + (["[flags]"] if optional else []))
    out = [usage, "", _paragraphs(description)]
    if required:
        out += ["", "arguments (in this order, or as flags, e.g. --NAME=VALUE):"]
        for p in required:
            kind = ", ".join(filter(None, [_annotation(p), "required"]))
            out += [f"  {p.name.upper()} (--{dashed(p.name)})  ({kind})", _describe(documented.get(p.name))]
    if optional:
        out += ["", "flags:"]
        for p in optional:
            if isinstance(p.default, bool):
                flag = f"--{dashed(p.name)} | --no{dashed(p.name)}"
            else:
                flag = f"--{dashed(p.name)}={p.name.upper()}"
            kind = ", ".join(filter(None, [_annotation(p), f"default: {p.default!r}"]))
            out += [f"  {flag}  ({kind})", _describe(documented.get(p.name))]
    return "\n".join(out) + "\n"


def _describe(text: str | None) -> str:
    return _paragraphs(text or "(undocumented)", indent=" " * 6)


def _command_list() -> list[str]:
    table = commands()
    width = max(map(len, table)) + 2
    return [f"  {name:<{width}}{summary(method)}" for name, method in table.items()]


def top_level_help() -> str:
    """Usage, what semizoo is, every command with its one-line purpose, and how to get a command's arguments."""
    lines = [f"usage: {PROG} COMMAND [ARGUMENTS] [--FLAG=VALUE ...]", "", _paragraphs(DESCRIPTION), "", "commands:"]
    lines += _command_list()
    lines += ["", f"Run `{PROG} COMMAND --help` for a command's arguments, their defaults and what they mean."]
    return "\n".join(lines) + "\n"


def unknown_command(name: str, stream: TextIO) -> int:
    """Name the unknown command, suggest a close one, list the valid commands; exit code 2."""
    close = difflib.get_close_matches(dashed(name), list(commands()), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    print(f"error: unknown command '{name}'{hint}. Valid commands:", file=stream)
    print("\n".join(_command_list()), file=stream)
    print(f"Run `{PROG} --help` for more, `{PROG} COMMAND --help` for a command's arguments.", file=stream)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in HELP_FLAGS or (args[0] == "--" and any(a in HELP_FLAGS for a in args[1:])):
        sys.stdout.write(top_level_help())
        return 0
    name = dashed(args[0])
    if args[0] != "--" and name not in commands():
        return unknown_command(args[0], sys.stderr)
    if args[0] != "--" and any(a in HELP_FLAGS for a in args[1:]):
        sys.stdout.write(command_help(name))
        return 0

    import fire

    try:
        fire.Fire(Commands, command=args, name="semizoo")
    except fire.core.FireExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except (DataError, PrepareError, WeightsError, FileExistsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
