"""The ``gpudiffuse`` command. Each subcommand parses, builds the step's parameters,
makes one library call and reports. No algorithm lives here."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .errors import GpudiffuseError
from .io.output_folder import OutputFolder
from .integration.pixels import DEFAULT_WEDGE_DEGREES

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


def _at_least(minimum, kind=int):
    """argparse type: a number of ``kind`` that is at least ``minimum`` (the message names the value;
    argparse adds the option and exits with status 2, before any work)."""
    noun = "an integer" if kind is int else "a number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not value >= minimum:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        return value

    return parse


def _positive(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


COUNT = _at_least(1)
NON_NEGATIVE = _at_least(0)


def _add_geometry(p):
    g = p.add_argument_group("geometry (one of)")
    g.add_argument("--xds", metavar="DIR", help="XDS folder with XDS.INP and GXPARM.XDS or XPARM.XDS")
    g.add_argument("--expt", metavar="FILE", nargs="+", default=[],
                   help="DIALS ExperimentList .expt/.json files (rotation sweeps or stills)")
    m = p.add_argument_group("pixel mask")
    m.add_argument("--beamstop-disc", metavar="X,Y,R", help="beamstop disc, 0-based pixel coordinates")
    m.add_argument("--beamstop-rectangle", metavar="X0,X1,Y0,Y1", help="beamstop arm rectangle (inclusive)")
    m.add_argument("--beamstop-polygon", metavar="X1,Y1,X2,Y2,...", help="beamstop shadow polygon")
    m.add_argument("--mask-chip-borders", action="store_true", help="also mask enlarged chip-border pixels")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpudiffuse", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gpudiffuse {__version__}")
    _add_output_options(parser, False)
    # the same options after the subcommand (``gpudiffuse process ... --no-progress``)
    common = argparse.ArgumentParser(add_help=False)
    _add_output_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_command(name, **kwargs):
        return sub.add_parser(name, parents=[common], **kwargs)

    p = add_command("simulate", help="write a simulated dataset with known truth",
                       description="Write CBF frames, XDS.INP, GXPARM.XDS, a DIALS .expt and truth.h5 to OUTDIR.")
    p.add_argument("outdir")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "scaling", "1m", "p6m"],
                   help="tiny: 487x195, 12 frames; small: Pilatus 300K, 60 frames; scaling: two 40-frame sweeps "
                        "with absorption, module factors and an additive offset (DIALS .expt only); "
                        "1m: Pilatus 1M, 120 frames of 0.5°, P212121; p6m: Pilatus 6M, 50 frames of 0.1°")
    p.add_argument("--frames", type=COUNT, help="number of frames (default from the preset)")
    p.add_argument("--format", default="cbf", choices=["cbf", "eiger"],
                   help="cbf: one Pilatus CBF per frame (default); eiger: an NXmx master file linking "
                        "bitshuffle-LZ4 data files of 10 frames, with pixel_mask, as an Eiger file writer does")
    p.add_argument("--ndiv", type=COUNT, nargs=3, default=[3, 3, 3], metavar="N", help="grid of the saved truth")
    p.add_argument("--seed", type=int, help="random seed (default from the preset)")

    p = add_command("import", help="read geometry and images, build the pixel mask, write experiment.nxs",
                       description="Read XDS or DIALS geometry, check the images, build the static pixel mask "
                                   "and write OUT/experiment.nxs with a readable summary.")
    _add_geometry(p)
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/experiment.nxs")
    p = add_command("process", help="the whole pipeline: import, find-peaks, integrate, scale, merge, map",
                       description="Process a dataset end to end into OUT/: experiment.nxs, peaks.nxs, "
                                   "integrate.nxs, scale.nxs, merged.nxs (/entry/merged: h, k, l, intensity, sigma, "
                                   "n) and map.nxs (3-D NXdata). Each is also a subcommand of its own. A finished "
                                   "step is reused when its parameters and inputs are unchanged; one whose input "
                                   "files changed is run again.")
    _add_geometry(p)
    _add_processing(p)
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")

    p = add_command("find-peaks", help="find Bragg peaks (pass 1) into OUT/peaks.nxs",
                       description="Read OUT/experiment.nxs and every frame, find strong pixels, fit the peak "
                                   "cloud and write OUT/peaks.nxs.")
    _add_out(p, "peaks.nxs")
    p.add_argument("--dmin", type=_positive, help="resolution limit in Å (default: the detector corner)")
    _add_peaks(p)

    p = add_command("integrate", help="integrate the frames (pass 2) into OUT/integrate.nxs",
                       description="Read OUT/experiment.nxs (and OUT/peaks.nxs unless --no-bragg-mask), stream the "
                                   "frames and write the raw voxel sums to OUT/integrate.nxs.")
    _add_out(p, "integrate.nxs")
    _add_integration(p)
    _add_engines(p)
    p.add_argument("--no-bragg-mask", action="store_true", help="do not mask Bragg peaks (no peaks.nxs needed)")

    p = add_command("scale", help="build the observation table and fit the scaling model into OUT/scale.nxs",
                       description="Fit I_obs ≈ a(ix,iy,z)·d(region)·[b(z)·I + c(|s|,z)] to the observation table of "
                                   "OUT/integrate.nxs and write OUT/scale.nxs (χ² before/after, the model); prints CC½ "
                                   "per shell before and after. Then `merge` and `map` make the new map.")
    _add_out(p, "scale.nxs")
    _add_table(p)
    _add_scaling(p)

    p = add_command("merge", help="merge the scaled observations into OUT/merged.nxs",
                       description="Apply OUT/scale.nxs to OUT/integrate.nxs, merge into the asymmetric unit and "
                                   "write OUT/merged.nxs with per-shell statistics.")
    _add_out(p, "merged.nxs")
    _add_merging(p)

    p = add_command("map", help="expand OUT/merged.nxs into the 3-D map OUT/map.nxs",
                       description="Expand the merged asymmetric unit to every symmetry mate on a dense h, k, l grid "
                                   "(NaN where unmeasured) and write OUT/map.nxs.")
    _add_out(p, "map.nxs")

    p = add_command("demo", help="simulate a dataset, process it and report accuracy against the truth",
                       description="Simulate the 'small' preset (Pilatus 300K, 60 frames) into OUTDIR/data, "
                                   "process it into OUTDIR/processed and compare the merged map with the truth.")
    p.add_argument("outdir", nargs="?", default="gpudiffuse_demo")
    p.add_argument("--preset", default="small", choices=["tiny", "small"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    return parser


def _add_out(p, name):
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="processed folder")
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace an OUT/{name} made with other parameters (and remove the files made from it)")


def _add_output_options(p, default):
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="warnings and errors only on the terminal (OUT/gpudiffuse.log still gets the whole log)")
    p.add_argument("--no-progress", action="store_true", default=default,
                   help="no progress bars (they are shown only on a terminal anyway)")


def _add_processing(p):
    _add_integration(p)
    p.add_argument("--no-scale", action="store_true", help="skip scaling (same as --scale none)")
    _add_table(p)
    _add_scaling(p)
    _add_engines(p)
    b = _add_peaks(p)
    b.add_argument("--no-bragg-mask", action="store_true", help="do not mask Bragg peaks")
    _add_merging(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs made with other parameters (and remove the files made from them)")


def _add_integration(p):
    g = p.add_argument_group("grid and integration")
    g.add_argument("--ndiv", type=COUNT, nargs=3, default=[3, 3, 3], metavar="N",
                   help="subdivisions per Miller index along a*, b*, c* (default 3 3 3)")
    g.add_argument("--dmin", type=_positive, help="resolution limit in Å (default: the detector corner)")
    g.add_argument("--background", metavar="TEMPLATE",
                   help="background frames without the crystal (template with ? or #), subtracted per voxel")
    g.add_argument("--frames", type=int, nargs=2, metavar=("FIRST", "LAST"), help="file numbers to process")
    g.add_argument("--wedge", type=_positive, default=DEFAULT_WEDGE_DEGREES, metavar="DEG",
                   help="rotation per wedge of observations, degrees (default %(default)g; stills: one wedge per "
                        "frame); observations of one voxel in different wedges are scaled separately")
    g.add_argument("--wedge-frames", type=COUNT, metavar="N", help="frames per wedge instead of --wedge")
    g.add_argument("--no-air", action="store_true", help="no air-attenuation correction")


def _add_table(p):
    g = p.add_argument_group("observation table")
    g.add_argument("--min-pixels", type=NON_NEGATIVE, default=1, help="drop observations with fewer pixel-frames")
    g.add_argument("--min-counts", type=NON_NEGATIVE, default=0, help="drop observations with fewer counts")
    g.add_argument("--scale", default="model", choices=["model", "isotropic", "none"],
                   help="model: fit a·d·(b·I + c) (default); isotropic: per-frame scale from the isotropic "
                        "scattering only; none")


def _add_engines(p):
    e = p.add_argument_group("engines and parallel runs")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                   help="auto: the GPU if CuPy finds one, else the CPU; gpu: fail without one")
    e.add_argument("--engine", choices=["numpy", "cpu", "cuda"],
                   help="integration engine (default from --device: cuda on a GPU, else cpu = compiled, "
                        "multi-threaded; numpy = the slow reference)")
    e.add_argument("--nproc", type=COUNT, metavar="N",
                   help="CPU threads of the cpu engine, or processes of the numpy engine (default: all cores)")
    e.add_argument("--scheduler", metavar="ADDRESS", help="run blocks of wedges on an existing Dask scheduler "
                   "(e.g. tcp://host:8786); workers read the frames themselves, so they need the same paths")
    e.add_argument("--dask-workers", type=COUNT, metavar="N", help="run blocks on a local Dask cluster of N processes")


def _add_peaks(p):
    b = p.add_argument_group("Bragg mask (peak-cloud model)")
    b.add_argument("--threshold", type=_positive, help="count threshold of strong pixels (default: automatic)")
    b.add_argument("--sigma-cutoff", type=_positive, default=3.0, help="mask radius in Mahalanobis units (default 3)")
    return b


def _add_merging(p):
    m = p.add_argument_group("merging")
    m.add_argument("--outlier-k", type=_at_least(0, float), default=5.0, help="reject |I − <I>|/σ > k·rms (0: off; default 5)")
    m.add_argument("--shells", type=COUNT, default=10, help="resolution shells in the statistics")
    m.add_argument("--anomalous", action="store_true", help="keep Friedel mates apart")


def _add_scaling(p):
    s = p.add_argument_group("scaling model (DESIGN §10)")
    s.add_argument("--scale-method", default="joint", choices=["joint", "lbfgs", "alternating"],
                   help="joint: all components at once by Gauss-Newton with the merged intensities eliminated "
                        "(default; converges in a few iterations, gives uncertainties); lbfgs: all at once with "
                        "optax L-BFGS; alternating: one component at a time by linear least squares (the "
                        "mdx-lib/mdx2 baseline)")
    s.add_argument("--b-frames", type=COUNT, default=5, help="frames between control points of b (default 5)")
    s.add_argument("--c-nodes", type=COUNT, default=6, metavar="NS", help="control points of c along |s| (default 6)")
    s.add_argument("--c-frames", type=COUNT, default=20,
                   help="frames between control points of c, over the longest sweep (default 20)")
    s.add_argument("--a-nodes", type=COUNT, nargs=2, default=[5, 5], metavar=("NX", "NY"),
                   help="control points of a across the detector (default 5 5)")
    s.add_argument("--a-frames", type=COUNT, default=20,
                   help="frames between control points of a, over the longest sweep (default 20)")
    s.add_argument("--scale-iterations", type=COUNT, default=500,
                   help="iteration limit per fit round (default 500; Gauss-Newton needs a handful)")
    s.add_argument("--pin-c", action="store_true",
                   help="fix the offset shared by c and the merged intensities by pinning one node of c instead of "
                        "removing c's frame-independent part (use when b changes faster than c's frame nodes follow)")


def _scale_options(args):
    from .scaling import ScaleOptions  # noqa: PLC0415

    return ScaleOptions(frames_per_b_node=args.b_frames, c_nodes=(args.c_nodes, None), frames_per_c_node=args.c_frames,
                        a_nodes=(*args.a_nodes, None), frames_per_a_node=args.a_frames,
                        max_iterations=args.scale_iterations, method=args.scale_method, centre_c=not args.pin_c)


def _integration_parameters(args):
    from .integration import IntegrationParameters  # noqa: PLC0415

    return IntegrationParameters(ndiv=tuple(args.ndiv), dmin=args.dmin, wedge_degrees=args.wedge,
                                 wedge_frames=args.wedge_frames, frames=tuple(args.frames) if args.frames else None,
                                 air=not args.no_air)


def _peak_parameters(args):
    from .masking.peaks import PeakParameters  # noqa: PLC0415

    return PeakParameters(threshold=args.threshold, sigma_cutoff=args.sigma_cutoff)


def _merge_parameters(args):
    from .merge import MergeParameters  # noqa: PLC0415

    return MergeParameters(outlier_k=args.outlier_k or None, n_shells=args.shells, anomalous=args.anomalous)


def _engines(args):
    from .steps.integrate import EngineChoice  # noqa: PLC0415

    return EngineChoice(args.device, args.engine, args.nproc, args.scheduler, args.dask_workers)


def _process_parameters(args):
    from .pipeline import ProcessParameters  # noqa: PLC0415

    return ProcessParameters(
        geometry=_import_parameters(args), integration=_integration_parameters(args), peaks=_peak_parameters(args),
        merging=_merge_parameters(args), scaling=_scale_options(args), device=args.device,
        background=args.background, engine=args.engine, nproc=args.nproc, scheduler=args.scheduler,
        dask_workers=args.dask_workers, bragg_mask=not args.no_bragg_mask,
        scale="none" if args.no_scale else args.scale, min_pixels=args.min_pixels, min_counts=args.min_counts)


def _run_process(args):
    from .pipeline import process  # noqa: PLC0415
    from .steps.merge import format_statistics  # noqa: PLC0415

    params = _process_parameters(args)
    with OutputFolder(args.out, log=True):
        result = process(params, args.out, overwrite=args.overwrite, progress=not args.no_progress)
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
    print(format_statistics(result["statistics"]))
    print(f"written {result['out']}/merged.nxs and {result['out']}/map.nxs")


def _print_peak_model(model):
    print(f"peak cloud: {model.n_hot} strong pixels, |r0| = {float((model.offset ** 2).sum() ** 0.5):.4f}, "
          f"widths {', '.join(f'{w:.4f}' for w in model.widths)} (fractional hkl)")
    for message in model.warnings:
        print(f"WARNING: {message}")


def _run_find_peaks(args):
    from .steps.find_peaks import run_find_peaks  # noqa: PLC0415

    with OutputFolder(args.out, log=True):
        search = run_find_peaks(args.out, _peak_parameters(args), args.dmin, args.overwrite, not args.no_progress)
    _print_peak_model(search.model)
    print(f"written {os.path.join(args.out, 'peaks.nxs')}")


def _run_integrate(args):
    from .steps.integrate import IntegrateParameters, run_integrate  # noqa: PLC0415

    params = IntegrateParameters(_integration_parameters(args), not args.no_bragg_mask, args.background)
    with OutputFolder(args.out, log=True):
        integration = run_integrate(args.out, params, _engines(args), args.overwrite, not args.no_progress)
    print(f"{len(integration.diffuse.get('H', []))} diffuse and {len(integration.excluded.get('H', []))} excluded "
          f"voxel-wedge rows to {integration.dmin:.3f} Å")
    print(f"written {os.path.join(args.out, 'integrate.nxs')}")


def _run_scale(args):
    from .steps.importing import load_experiment  # noqa: PLC0415
    from .steps.integrate import load_integration  # noqa: PLC0415
    from .steps.scale import ScaleStepParameters, cc_half_before_after, run_scale  # noqa: PLC0415

    params = ScaleStepParameters(args.scale, args.min_pixels, args.min_counts, _scale_options(args))
    with OutputFolder(args.out, log=True):
        experiment, integration = load_experiment(args.out), load_integration(args.out)
        result = run_scale(args.out, params, args.overwrite, not args.no_progress, experiment, integration)
    if result.fit is not None:
        print(result.fit.summary())
    print(cc_half_before_after(experiment, integration, result))
    print(f"written {os.path.join(args.out, 'scale.nxs')}; run `gpudiffuse merge -o {args.out}` and "
          f"`gpudiffuse map -o {args.out}` for the map")


def _run_merge(args):
    from .steps.merge import format_statistics, run_merge  # noqa: PLC0415

    with OutputFolder(args.out, log=True):
        result = run_merge(args.out, _merge_parameters(args), args.overwrite)
    print(f"merged {len(result.merged['intensity'])} ASU voxels ({result.rejected} outlier observations rejected)")
    print(format_statistics(result.statistics))
    print(f"written {os.path.join(args.out, 'merged.nxs')}")


def _run_map(args):
    from .steps.map import run_map  # noqa: PLC0415

    with OutputFolder(args.out, log=True):
        path = run_map(args.out, args.overwrite)
    print(f"written {path}")


def _run_demo(args):
    from .simulate import PRESETS, demo  # noqa: PLC0415
    from .steps.merge import format_statistics  # noqa: PLC0415

    result, accuracy = demo(args.outdir, PRESETS[args.preset], device=args.device)
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


def _import_parameters(args):
    from .experiment import ImportParameters  # noqa: PLC0415

    return ImportParameters(xds=args.xds, expt=tuple(args.expt), beamstop_disc=args.beamstop_disc,
                            beamstop_rectangle=args.beamstop_rectangle, beamstop_polygon=args.beamstop_polygon,
                            mask_chip_borders=args.mask_chip_borders)


def _run_import(args):
    from .experiment import summarise  # noqa: PLC0415
    from .steps.importing import run_import  # noqa: PLC0415

    with OutputFolder(args.out, log=True):
        experiment = run_import(_import_parameters(args), args.out, overwrite=args.overwrite)
    print(summarise(experiment))
    print(f"written {os.path.join(args.out, 'experiment.nxs')}")


COMMANDS = {"simulate": _run_simulate, "import": _run_import, "find-peaks": _run_find_peaks,
            "integrate": _run_integrate, "scale": _run_scale, "merge": _run_merge, "map": _run_map,
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
    try:
        COMMANDS[args.command](args)
    except GpudiffuseError as exc:
        print(f"gpudiffuse {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
