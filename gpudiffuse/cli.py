"""The ``gpudiffuse`` command. Each subcommand parses, builds the step's parameters,
makes one library call and reports. No algorithm lives here."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .errors import GpudiffuseError, UsageError
from .cli_options import (COUNT, STEP_COMMANDS, absolute_parameters, add_geometry, add_out, add_output_options,
                          add_processing, bragg_mask_choice, engines, import_parameters, integration_parameters, merge_parameters,
                          peak_parameters, process_parameters, scale_options)
from .io.output_folder import OutputFolder

__all__ = ["build_parser", "main"]

logger = logging.getLogger("gpudiffuse")

DESCRIPTION = """\
gpudiffuse turns X-ray diffraction images of macromolecular crystals into corrected,
scaled, symmetry-merged 3-D maps of diffuse scattering, on a GPU or the CPU.

Typical use:
  gpudiffuse process --xds XDS_DIR -o out/ --ndiv 3 3 3 --dmin 1.6
  gpudiffuse process --expt indexed.expt -o out/
  gpudiffuse scale -o out/ --b-frames 2 --overwrite   # refit the scaling model,
  gpudiffuse merge -o out/; gpudiffuse map -o out/    # then rebuild merged.nxs and map.nxs
  gpudiffuse demo                      # simulate a dataset and process it
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpudiffuse", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gpudiffuse {__version__}")
    add_output_options(parser, False)
    # the same options after the subcommand (``gpudiffuse process ... --no-progress``)
    common = argparse.ArgumentParser(add_help=False)
    add_output_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_command(name, **kwargs):
        return sub.add_parser(name, parents=[common], **kwargs)

    p = add_command("simulate", help="write a simulated dataset with known truth",
                       description="Write CBF frames, XDS.INP, GXPARM.XDS, a DIALS .expt and truth.h5 to OUTDIR.")
    p.add_argument("outdir")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "scaling", "1m", "p6m", "absolute"],
                   help="tiny: 487x195, 12 frames; small: Pilatus 300K, 60 frames; scaling: two 40-frame sweeps "
                        "with absorption, module factors and an additive offset (DIALS .expt only); "
                        "1m: Pilatus 1M, 120 frames of 0.5°, P212121; p6m: Pilatus 6M, 50 frames of 0.1°; "
                        "absolute: 487x195, 60 frames of 1°, intensities in electron units per cell of the composition "
                        "C1950 N540 O600 S16 H3100 plus 50 %% bulk water (k = 1/8000)")
    p.add_argument("--frames", type=COUNT, help="number of frames (default from the preset)")
    p.add_argument("--format", default="cbf", choices=["cbf", "eiger"],
                   help="cbf: one Pilatus CBF per frame (default); eiger: an NXmx master file linking "
                        "bitshuffle-LZ4 data files of 10 frames, with pixel_mask, as an Eiger file writer does")
    p.add_argument("--ndiv", type=COUNT, nargs=3, default=[3, 3, 3], metavar="N", help="grid of the saved truth")
    p.add_argument("--seed", type=int, help="random seed (default from the preset)")

    p = add_command("import", help="read geometry and images, build the pixel mask, write experiment.nxs",
                       description="Read XDS or DIALS geometry, check the images, build the static pixel mask "
                                   "and write OUT/experiment.nxs with a readable summary.")
    add_geometry(p)
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/experiment.nxs")
    p = add_command("process", help="the whole pipeline: import, find-peaks, integrate, scale, merge, map",
                       description="Process a dataset end to end into OUT/: experiment.nxs, peaks.nxs, "
                                   "integrate.nxs, scale.nxs, merged.nxs (/entry/merged: h, k, l, intensity, sigma, "
                                   "n) and map.nxs (3-D NXdata). Each is also a subcommand of its own. A finished "
                                   "step is reused when its parameters and inputs are unchanged; one whose input "
                                   "files changed is run again.")
    add_geometry(p)
    add_processing(p)
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")

    for name, (target, summary, description, groups) in STEP_COMMANDS.items():
        p = add_command(name, help=summary, description=description)
        add_out(p, target)
        for add_group in groups:
            add_group(p)

    p = add_command("demo", help="simulate a dataset, process it and report accuracy against the truth",
                    description="Simulate the 'small' preset (Pilatus 300K, 60 frames) into OUTDIR/data, "
                                   "process it into OUTDIR/processed and compare the merged map with the truth.")
    p.add_argument("outdir", nargs="?", default="gpudiffuse_demo")
    p.add_argument("--preset", default="small", choices=["tiny", "small"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    return parser


def _run_process(args):
    from .pipeline import process  # noqa: PLC0415
    from .steps.merge import format_statistics  # noqa: PLC0415

    params = process_parameters(args)
    with OutputFolder(args.out, log=True):
        result = process(params, args.out, overwrite=args.overwrite, progress=not args.no_progress)
        if not args.no_report:
            from .steps.report import run_report  # noqa: PLC0415

            result["report"] = run_report(args.out, args.overwrite)
    _report(result, format_statistics)


def _report(result, format_statistics):
    model = result["peak_model"]
    if model is not None:
        _print_peak_model(model)
    fit = result.get("scale_fit")
    if fit is not None:
        print(fit.summary())
    print(f"merged {len(result['merged']['intensity'])} ASU voxels to {result['dmin']:.3f} Å "
          f"({result['rejected']} outlier observations rejected)")
    if result.get("absolute") is not None:
        from .steps.absolute import format_k_table  # noqa: PLC0415

        print(result["absolute"].inventory_summary)
        print(format_k_table(result["absolute"]))
    print(f"intensities in {result['units']}")
    print(format_statistics(result["statistics"]))
    print(f"written {result['out']}/merged.nxs and {result['out']}/map.nxs"
          + (f"; the report: {result['report']['html']}" if result.get("report") else ""))


def _print_peak_model(model):
    print(f"peak cloud: {model.n_hot} strong pixels, |r0| = {float((model.offset ** 2).sum() ** 0.5):.4f}, "
          f"widths {', '.join(f'{w:.4f}' for w in model.widths)} (fractional hkl)")
    for message in model.warnings:
        print(f"WARNING: {message}")


def _run_find_peaks(args):
    from .steps.find_peaks import run_find_peaks  # noqa: PLC0415

    with OutputFolder(args.out, log=True):
        search = run_find_peaks(args.out, peak_parameters(args), args.dmin, args.overwrite, not args.no_progress)
    _print_peak_model(search.model)
    print(f"written {os.path.join(args.out, 'peaks.nxs')}")


def _run_integrate(args):
    from .steps.integrate import IntegrateParameters, run_integrate  # noqa: PLC0415

    params = IntegrateParameters(integration_parameters(args), bragg_mask_choice(args), args.background)
    with OutputFolder(args.out, log=True):
        integration = run_integrate(args.out, params, engines(args), args.overwrite, not args.no_progress)
    print(f"{len(integration.diffuse.get('H', []))} diffuse and {len(integration.excluded.get('H', []))} excluded "
          f"voxel-wedge rows to {integration.dmin:.3f} Å")
    print(f"written {os.path.join(args.out, 'integrate.nxs')}")


def _run_scale(args):
    from .steps.importing import load_experiment  # noqa: PLC0415
    from .steps.integrate import load_integration  # noqa: PLC0415
    from .steps.scale import ScaleStepParameters, cc_half_before_after, run_scale  # noqa: PLC0415

    params = ScaleStepParameters(args.scale, args.min_pixels, args.min_counts, scale_options(args))
    with OutputFolder(args.out, log=True):
        experiment, integration = load_experiment(args.out), load_integration(args.out)
        result = run_scale(args.out, params, args.overwrite, not args.no_progress, experiment, integration)
    if result.fit is not None:
        print(result.fit.summary())
    print(cc_half_before_after(experiment, integration, result))
    print(f"written {os.path.join(args.out, 'scale.nxs')}; run `gpudiffuse merge -o {args.out}` and "
          f"`gpudiffuse map -o {args.out}` for the map")


def _run_absolute(args):
    from .steps.absolute import format_k_table, run_absolute  # noqa: PLC0415

    params = absolute_parameters(args)
    with OutputFolder(args.out, log=True):
        result = run_absolute(args.out, params, args.overwrite)
    print(result.inventory_summary)
    print(format_k_table(result).splitlines()[-1])  # the whole table is in the log
    print(f"written {os.path.join(args.out, 'absolute.nxs')}; run `gpudiffuse merge -o {args.out}` and "
          f"`gpudiffuse map -o {args.out}` for the map in electron units per unit cell")


def _run_merge(args):
    from .steps.merge import format_statistics, run_merge  # noqa: PLC0415

    with OutputFolder(args.out, log=True):
        result = run_merge(args.out, merge_parameters(args), args.overwrite)
    print(f"merged {len(result.merged['intensity'])} ASU voxels ({result.rejected} outlier observations rejected); "
          f"intensities in {result.units}")
    print(format_statistics(result.statistics))
    print(f"written {os.path.join(args.out, 'merged.nxs')}")


def _run_map(args):
    from .steps.map import run_map  # noqa: PLC0415

    with OutputFolder(args.out, log=True):
        path = run_map(args.out, args.overwrite)
    print(f"written {path}")


def _run_report(args):
    from .steps.report import run_report  # noqa: PLC0415

    with OutputFolder(args.out, log=True):
        written = run_report(args.out, args.overwrite)
    print(f"written {written['html']} and {written['pdf']} ({len(written['figures'])} figures in "
          f"{os.path.join(args.out, 'report')}, {written['seconds']:.1f} s)")


def _run_export(args):
    from .steps.export import ExportParameters, run_export  # noqa: PLC0415

    params = ExportParameters(args.format, args.source, args.unmeasured, args.file)
    with OutputFolder(args.out, log=True):
        path = run_export(args.out, params, args.overwrite)
    print(f"written {path}")


def _run_demo(args):
    from .demo import demo  # noqa: PLC0415
    from .simulate import PRESETS  # noqa: PLC0415
    from .steps.merge import format_statistics  # noqa: PLC0415

    from .steps.report import run_report  # noqa: PLC0415

    result, accuracy = demo(args.outdir, PRESETS[args.preset], device=args.device)
    result["report"] = run_report(result["out"], overwrite=True)
    _report(result, format_statistics)
    print("\naccuracy against the simulated truth (merged diffuse + isotropic vs voxel-averaged truth):")
    print(accuracy)


def _run_simulate(args):
    from .simulate import PRESETS, simulate_dataset  # noqa: PLC0415

    overrides = {}
    if args.frames:
        overrides["n_frames"] = args.frames
    if args.seed is not None:
        overrides["seed"] = args.seed
    if os.path.exists(os.path.join(args.outdir, "XDS.INP")):
        raise GpudiffuseError(f"{args.outdir} already holds a dataset; choose an empty folder")
    simulate_dataset(args.outdir, PRESETS[args.preset], ndiv=tuple(args.ndiv), image_format=args.format, **overrides)
    written = [name for name in ("XDS.INP", "GXPARM.XDS", "experiments.expt", "truth.h5")
               if os.path.exists(os.path.join(args.outdir, name))]
    print(f"simulated dataset written to {args.outdir} ({', '.join(written)}; {args.format} frames in frames/)")


def _run_import(args):
    from .experiment import summarise  # noqa: PLC0415
    from .steps.importing import run_import  # noqa: PLC0415

    with OutputFolder(args.out, log=True):
        experiment = run_import(import_parameters(args), args.out, overwrite=args.overwrite)
    print(summarise(experiment))
    print(f"written {os.path.join(args.out, 'experiment.nxs')}")


COMMANDS = {"simulate": _run_simulate, "import": _run_import, "find-peaks": _run_find_peaks,
            "integrate": _run_integrate, "scale": _run_scale, "absolute": _run_absolute, "merge": _run_merge, "map": _run_map,
            "export": _run_export, "report": _run_report,
            "process": _run_process, "demo": _run_demo}


def main(argv=None) -> int:
    from .io.nexus import set_command_line  # noqa: PLC0415

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    set_command_line(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:  # the terminal shows warnings and errors; OUT/gpudiffuse.log still gets everything
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:
                handler.setLevel(logging.WARNING)
    logging.getLogger("fabio").setLevel(logging.ERROR)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "Unable to initialize backend 'tpu'"
    if not args.command:
        parser.print_help()
        return 2
    if hasattr(args, "folder"):  # the step subcommands take OUT as -o OUT or as their first argument
        if args.folder and args.out and args.folder != args.out:
            parser.error(f"{args.command}: give the folder once (OUT or -o OUT), not {args.folder} and {args.out}")
        args.out = args.out or args.folder
        if not args.out:
            parser.error(f"{args.command}: name the processed folder (OUT or -o OUT)")
    try:
        COMMANDS[args.command](args)
    except GpudiffuseError as exc:
        print(f"gpudiffuse {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1  # 2: options that cannot work, 1: the data
    except BrokenPipeError:
        # the reader of stdout has gone (``| head``): stop as a Unix filter does, without a traceback
        # (the step being written cleans up as on any error); devnull takes the interpreter's last flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    return 0


if __name__ == "__main__":
    sys.exit(main())
