"""The ``gpudiffuse`` command. Each subcommand parses, builds the step's parameters,
makes one library call and reports. No algorithm lives here."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys

from . import __version__
from .errors import GpudiffuseError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("gpudiffuse")

DESCRIPTION = """\
gpudiffuse turns X-ray diffraction images of macromolecular crystals into corrected,
scaled, symmetry-merged 3-D maps of diffuse scattering, on a GPU or the CPU.

Typical use:
  gpudiffuse process --xds XDS_DIR -o out/ --ndiv 3 3 3 --dmin 1.6
  gpudiffuse process --expt indexed.expt -o out/
  gpudiffuse demo                      # simulate a dataset and process it
"""


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
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("simulate", help="write a simulated dataset with known truth",
                       description="Write CBF frames, XDS.INP, GXPARM.XDS, a DIALS .expt and truth.h5 to OUTDIR.")
    p.add_argument("outdir")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "p6m"],
                   help="tiny: 487x195, 12 frames; small: Pilatus 300K, 60 frames; p6m: Pilatus 6M, 50 frames")
    p.add_argument("--frames", type=int, help="number of frames (default from the preset)")
    p.add_argument("--ndiv", type=int, nargs=3, default=[3, 3, 3], metavar="N", help="grid of the saved truth")
    p.add_argument("--seed", type=int, help="random seed (default from the preset)")

    p = sub.add_parser("import", help="read geometry and images, build the pixel mask, write experiment.nxs",
                       description="Read XDS or DIALS geometry, check the images, build the static pixel mask "
                                   "and write OUT/experiment.nxs with a readable summary.")
    _add_geometry(p)
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/experiment.nxs")
    return parser


def _run_simulate(args):
    from .simulate import PRESETS, simulate_dataset  # noqa: PLC0415

    overrides = {}
    if args.frames:
        overrides["n_frames"] = args.frames
    if args.seed is not None:
        overrides["seed"] = args.seed
    if os.path.exists(os.path.join(args.outdir, "XDS.INP")):
        raise GpudiffuseError(f"{args.outdir} already holds a dataset; choose an empty folder")
    simulate_dataset(args.outdir, PRESETS[args.preset], ndiv=tuple(args.ndiv), **overrides)
    print(f"simulated dataset written to {args.outdir} (XDS.INP, GXPARM.XDS, experiments.expt, truth.h5)")


def _import_parameters(args):
    from .experiment import ImportParameters  # noqa: PLC0415

    return ImportParameters(xds=args.xds, expt=tuple(args.expt), beamstop_disc=args.beamstop_disc,
                            beamstop_rectangle=args.beamstop_rectangle, beamstop_polygon=args.beamstop_polygon,
                            mask_chip_borders=args.mask_chip_borders)


def _run_import(args):
    from .experiment import import_experiment, summarise  # noqa: PLC0415

    params = _import_parameters(args)
    out_path = os.path.join(args.out, "experiment.nxs")
    with _cleanup_on_error(args.out):
        experiment = import_experiment(params, out_path, overwrite=args.overwrite)
    print(summarise(experiment))
    print(f"written {out_path}")


class _cleanup_on_error:
    """Remove the output folder if this run created it and then failed (no partial output)."""

    def __init__(self, folder):
        self.folder = folder
        self.created = not os.path.exists(folder)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.created and os.path.isdir(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)
        return False


COMMANDS = {"simulate": _run_simulate, "import": _run_import}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fabio").setLevel(logging.ERROR)
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
