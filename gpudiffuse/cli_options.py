"""The command line's options: argparse types that check ranges before any work, the option
groups the subcommands share, and the step parameters built from parsed arguments."""

from __future__ import annotations

import argparse
import logging

from .errors import UsageError
from .integration.pixels import DEFAULT_WEDGE_DEGREES


def at_least(minimum, kind=int):
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


def positive(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


COUNT = at_least(1)


NON_NEGATIVE = at_least(0)


def add_geometry(p):
    g = p.add_argument_group("geometry (one of)")
    g.add_argument("--xds", metavar="DIR", help="XDS folder with XDS.INP and GXPARM.XDS or XPARM.XDS")
    g.add_argument("--expt", metavar="FILE", nargs="+", default=[],
                   help="DIALS ExperimentList .expt/.json files (rotation sweeps or stills)")
    m = p.add_argument_group("pixel mask")
    m.add_argument("--beamstop-disc", metavar="X,Y,R", help="beamstop disc, 0-based pixel coordinates")
    m.add_argument("--beamstop-rectangle", metavar="X0,X1,Y0,Y1", help="beamstop arm rectangle (inclusive)")
    m.add_argument("--beamstop-polygon", metavar="X1,Y1,X2,Y2,...", help="beamstop shadow polygon")
    m.add_argument("--mask-chip-borders", action="store_true", help="also mask enlarged chip-border pixels")


def add_out(p, name):
    """The processed folder, as ``-o OUT`` like ``process`` or as the first argument."""
    p.add_argument("folder", nargs="?", metavar="OUT", help="processed folder (or -o OUT)")
    p.add_argument("-o", "--out", metavar="OUT", help="processed folder")
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace an OUT/{name} made with other parameters (and remove the files made from it)")


def add_output_options(p, default):
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="warnings and errors only on the terminal (OUT/gpudiffuse.log still gets the whole log)")
    p.add_argument("--no-progress", action="store_true", default=default,
                   help="no progress bars (they are shown only on a terminal anyway)")


def add_processing(p):
    p.add_argument("--no-report", action="store_true", help="do not write OUT/report.html and OUT/report.pdf at the end")
    add_integration(p)
    p.add_argument("--no-scale", action="store_true", help="skip scaling (same as --scale none)")
    add_table(p)
    add_scaling(p)
    add_engines(p)
    add_bragg_mask(p)
    add_peaks(p)
    add_merging(p)
    add_absolute(p, required=False)
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs made with other parameters (and remove the files made from them)")


def add_integration(p):
    g = p.add_argument_group("grid and integration")
    g.add_argument("--ndiv", type=COUNT, nargs=3, default=[3, 3, 3], metavar="N",
                   help="subdivisions per Miller index along a*, b*, c* (default 3 3 3)")
    g.add_argument("--dmin", type=positive, help="resolution limit in Å (default: the detector corner)")
    g.add_argument("--background", metavar="TEMPLATE",
                   help="background frames without the crystal (template with ? or #), subtracted per voxel")
    g.add_argument("--frames", type=int, nargs=2, metavar=("FIRST", "LAST"), help="file numbers to process")
    g.add_argument("--wedge", type=positive, default=DEFAULT_WEDGE_DEGREES, metavar="DEG",
                   help="rotation per wedge of observations, degrees (default %(default)g; stills: one wedge per "
                        "frame); observations of one voxel in different wedges are scaled separately")
    g.add_argument("--wedge-frames", type=COUNT, metavar="N", help="frames per wedge instead of --wedge")
    g.add_argument("--no-air", action="store_true", help="no air-attenuation correction")


def add_table(p):
    g = p.add_argument_group("observation table")
    g.add_argument("--min-pixels", type=NON_NEGATIVE, default=1, help="drop observations with fewer pixel-frames")
    g.add_argument("--min-counts", type=NON_NEGATIVE, default=0, help="drop observations with fewer counts")
    g.add_argument("--scale", default="model", choices=["model", "isotropic", "none"],
                   help="model: fit a·d·(b·I + c) (default); isotropic: per-frame scale from the isotropic "
                        "scattering only; none")


def add_engines(p):
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


def add_peaks(p):
    b = p.add_argument_group("Bragg mask (peak-cloud model)")
    b.add_argument("--threshold", type=positive, help="count threshold of strong pixels (default: automatic)")
    b.add_argument("--sigma-cutoff", type=positive, default=3.0, help="mask radius in Mahalanobis units (default 3)")
    return b


def add_merging(p):
    m = p.add_argument_group("merging")
    m.add_argument("--outlier-k", type=at_least(0, float), default=5.0, help="reject |I − <I>|/σ > k·rms (0: off; default 5)")
    m.add_argument("--shells", type=COUNT, default=10, help="resolution shells in the statistics")
    m.add_argument("--anomalous", action="store_true", help="keep Friedel mates apart")


def add_scaling(p):
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


def add_absolute(p, required=True):
    g = p.add_argument_group("absolute scale (DESIGN §12)" + ("" if required else
                             ": with --model or --composition, intensities in electron units per unit cell"))
    g.add_argument("--model", metavar="FILE",
                   help="PDB or mmCIF model of the crystal: its atoms (occupancies, all copies in the cell, "
                        "hydrogens added from the residue table) and ordered waters; its cell and Laue group must "
                        "agree with the data's (3 %% / 3°)")
    g.add_argument("--composition", metavar="FORMULA",
                   help='atoms per copy, e.g. "C1500 N400 O450 S10 H2400" (added to --model\'s atoms if both)')
    g.add_argument("--copies", type=positive, default=1.0, help="copies of --composition per unit cell (default 1)")
    g.add_argument("--solvent-fraction", type=float, metavar="F",
                   help="volume fraction of the cell filled with bulk water, 0 to <1 (default: 1 − 1.23/V_M from "
                        "the mass of the inventory, Matthews; the model's ordered waters are part of it)")
    g.add_argument("--s-cutoff", type=positive, metavar="S",
                   help="S_c in 1/Å (s = 2 sin θ / λ) up to which the sum rule is integrated (default 0.7 or "
                        "the data limit if lower)")


def absolute_parameters(args, required=True):
    """AbsoluteParameters, or None when neither --model nor --composition was given (process)."""
    from .steps.absolute import AbsoluteParameters  # noqa: PLC0415

    if not required and not args.model and not args.composition:
        for option in ("copies", "solvent_fraction", "s_cutoff"):
            if getattr(args, option) not in (None, 1.0):
                raise UsageError(f"--{option.replace('_', '-')} needs --model or --composition")
        return None
    return AbsoluteParameters(args.model, args.composition, args.copies, args.solvent_fraction, args.s_cutoff)


def scale_options(args):
    from .scaling import ScaleOptions  # noqa: PLC0415

    return ScaleOptions(frames_per_b_node=args.b_frames, c_nodes=(args.c_nodes, None), frames_per_c_node=args.c_frames,
                        a_nodes=(*args.a_nodes, None), frames_per_a_node=args.a_frames,
                        max_iterations=args.scale_iterations, method=args.scale_method, centre_c=not args.pin_c)


def integration_parameters(args):
    from .integration import IntegrationParameters  # noqa: PLC0415

    filter_options = getattr(args, "filter_max_count", None) is not None or getattr(args, "filter_ndiv", None)
    if filter_options and bragg_mask_choice(args) not in ("statistical", "both"):
        logging.getLogger("gpudiffuse").warning("--filter-max-count and --filter-ndiv apply to --bragg-mask "
                                                "statistical or both; ignored with --bragg-mask %s",
                                                bragg_mask_choice(args))

    return IntegrationParameters(ndiv=tuple(args.ndiv), dmin=args.dmin, wedge_degrees=args.wedge,
                                 wedge_frames=args.wedge_frames, frames=tuple(args.frames) if args.frames else None,
                                 air=not args.no_air, histogram_max=getattr(args, "filter_max_count", None),
                                 filter_ndiv=tuple(args.filter_ndiv) if getattr(args, "filter_ndiv", None) else None)


def peak_parameters(args):
    from .masking.peaks import PeakParameters  # noqa: PLC0415

    return PeakParameters(threshold=args.threshold, sigma_cutoff=args.sigma_cutoff)


def merge_parameters(args):
    from .merge import MergeParameters  # noqa: PLC0415

    return MergeParameters(outlier_k=args.outlier_k or None, n_shells=args.shells, anomalous=args.anomalous)


def engines(args):
    from .steps.integrate import EngineChoice  # noqa: PLC0415

    return EngineChoice(args.device, args.engine, args.nproc, args.scheduler, args.dask_workers)


def process_parameters(args):
    from .pipeline import ProcessParameters  # noqa: PLC0415

    return ProcessParameters(
        geometry=import_parameters(args), integration=integration_parameters(args), peaks=peak_parameters(args),
        merging=merge_parameters(args), scaling=scale_options(args), device=args.device,
        background=args.background, engine=args.engine, nproc=args.nproc, scheduler=args.scheduler,
        dask_workers=args.dask_workers, bragg_mask=bragg_mask_choice(args),
        scale="none" if args.no_scale else args.scale, min_pixels=args.min_pixels, min_counts=args.min_counts,
        absolute=absolute_parameters(args, required=False))


def import_parameters(args):
    from .experiment import ImportParameters  # noqa: PLC0415

    return ImportParameters(xds=args.xds, expt=tuple(args.expt), beamstop_disc=args.beamstop_disc,
                            beamstop_rectangle=args.beamstop_rectangle, beamstop_polygon=args.beamstop_polygon,
                            mask_chip_borders=args.mask_chip_borders)


def add_find_peaks_options(p):
    p.add_argument("--dmin", type=positive, help="resolution limit in Å (default: the detector corner)")
    add_peaks(p)


def add_bragg_mask(p):
    g = p.add_argument_group("Bragg mask")
    g.add_argument("--bragg-mask", choices=["peak-cloud", "statistical", "both", "none"], default="peak-cloud",
                   help="peak-cloud: mask the pixels near allowed reflections of the peak model fitted in "
                        "find-peaks (default); statistical: exclude whole voxels whose pixel counts do not look "
                        "Poisson next to their neighbours (DESIGN §7; needs no peak model and no indexing of "
                        "strong pixels; voxels of --filter-ndiv, windows of radius 2 voxels, counts "
                        "0-20 histogrammed; made for photon-counting data of a few counts per pixel); both; none")
    g.add_argument("--filter-max-count", type=COUNT, metavar="C",
                   help="statistical filter: histogram pixel counts 0…C per voxel (default 20); voxels with a count "
                        "above C are excluded, so C must lie above the diffuse counts per pixel-frame")
    g.add_argument("--filter-ndiv", type=COUNT, nargs=3, metavar="N",
                   help="statistical filter: its grid, subdivisions per Miller index (default 3 3 3, the "
                        "integration grid at the default --ndiv). It must nest with --ndiv on each axis, one the other "
                        "times an odd factor: with a finer --ndiv (9 9 9) the histograms of its voxels are pooled "
                        "onto the filter grid; with a coarser one (1 1 1) the pass runs on the filter grid and is "
                        "added up onto --ndiv")
    g.add_argument("--no-bragg-mask", action="store_true", help="the same as --bragg-mask none")
    return g


def bragg_mask_choice(args) -> str:
    return "none" if args.no_bragg_mask else args.bragg_mask


def add_export_options(p):
    g = p.add_argument_group("export")
    g.add_argument("--format", required=True, choices=["ccp4", "mrc", "vtk", "mtz", "hdf5"],
                   help="ccp4/mrc: the map as a reciprocal-space density map (gemmi; h, k, l = 0 at the origin, "
                        "1 Å on screen = 1 Å⁻¹); vtk: legacy structured points in r.l.u. (ParaView); mtz: the "
                        "voxels at integer h, k, l with σ and n (gemmi); hdf5: plain 3-D arrays with attributes")
    g.add_argument("--source", default="diffuse", choices=["diffuse", "bragg"],
                   help="mtz only: the merged diffuse voxels (default) or the merged excluded (Bragg) pixels")
    g.add_argument("--unmeasured", type=float, metavar="VALUE",
                   help="value of unmeasured voxels (default: 0 in ccp4/mrc, which viewers need finite; NaN in "
                        "vtk and hdf5)")
    g.add_argument("--file", metavar="PATH", help="file to write (default: OUT/map.<format>, OUT/<source>.mtz)")


# the subcommands of single steps: name → (file, one-line help, description, option groups)
STEP_COMMANDS = {
    "find-peaks": ("peaks.nxs", "find Bragg peaks (pass 1) into OUT/peaks.nxs",
                   "Read OUT/experiment.nxs and every frame, find strong pixels, fit the peak cloud and write "
                   "OUT/peaks.nxs.", (add_find_peaks_options,)),
    "integrate": ("integrate.nxs", "integrate the frames (pass 2) into OUT/integrate.nxs",
                  "Read OUT/experiment.nxs (and OUT/peaks.nxs unless --no-bragg-mask), stream the frames and write "
                  "the raw voxel sums to OUT/integrate.nxs.", (add_integration, add_engines, add_bragg_mask)),
    "scale": ("scale.nxs", "build the observation table and fit the scaling model into OUT/scale.nxs",
              "Fit I_obs ≈ a(ix,iy,z)·d(region)·[b(z)·I + c(|s|,z)] to the observation table of OUT/integrate.nxs "
              "and write OUT/scale.nxs (χ² before/after, the model); prints CC½ per shell before and after. Then "
              "`merge` and `map` make the new map.", (add_table, add_scaling)),
    "absolute": ("absolute.nxs", "put the scaled intensities on an absolute scale (electron units per cell)",
                 "From the unit-cell contents (--model and/or --composition, plus bulk water) and the sum rule of "
                 "total scattering, find k = I_theo(S_c)/I_obs(S_c) from the scaled diffuse and Bragg intensities "
                 "of OUT and write OUT/absolute.nxs (k against S_c, the shell profiles, the inventory). `merge` "
                 "then writes k·I − I_inc(|s|) in electron units per unit cell; delete absolute.nxs to go back to "
                 "relative units.", (add_absolute,)),
    "merge": ("merged.nxs", "merge the scaled observations into OUT/merged.nxs",
              "Apply OUT/scale.nxs to OUT/integrate.nxs, merge into the asymmetric unit and write OUT/merged.nxs "
              "with per-shell statistics.", (add_merging,)),
    "map": ("map.nxs", "expand OUT/merged.nxs into the 3-D map OUT/map.nxs",
            "Expand the merged asymmetric unit to every symmetry mate on a dense h, k, l grid (NaN where unmeasured) "
            "and write OUT/map.nxs.", ()),
    "report": ("report.html", "draw the figures of a processed folder into OUT/report.html and OUT/report.pdf",
               "Draw map sections (total and anisotropic), the radial profile, the statistics per shell, the scaling "
               "model and the masks on one frame into OUT/report/ (PNG, and the profile as CSV), OUT/report.html and "
               "OUT/report.pdf, with a summary of inputs, parameters, device and time per step.", ()),
    "export": ("export file", "write the map (or integer-hkl values) as CCP4/MRC, VTK, MTZ or HDF5",
               "Export OUT/map.nxs as a CCP4/MRC map, VTK structured points or a plain HDF5 array, or the merged "
               "voxels at integer h, k, l of OUT/merged.nxs as MTZ.", (add_export_options,)),
}
