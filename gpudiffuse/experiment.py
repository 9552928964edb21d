"""The import step: geometry + images → ``experiment.nxs`` (sweeps, image index, pixel masks).

``ImportParameters`` is validated on construction so the CLI and library share one check.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

import h5py
import numpy as np

from .errors import GeometryError, MaskError, UsageError
from .geometry.dials import load_dials
from .geometry.model import Sweep
from .geometry.serialize import read_sweeps, write_sweep_group
from .geometry.vectors import edge_resolution
from .geometry.xds import find_xparm, load_xds
from .io.images import is_hdf5, read_image
from .io.nxmx import flag_value, open_master
from .io.nexus import atomic_nexus, create_step_entry
from .masking.layout import layout_for_size
from .masking.pixel import Beamstop, first_frame_source, mask_sources, usable_pixels

__all__ = ["ImportParameters", "Experiment", "load_geometry", "import_experiment", "read_experiment", "summarise",
           "cell_difference"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportParameters:
    """What to import.

    xds : XDS directory (XDS.INP + GXPARM.XDS/XPARM.XDS), or
    expt : DIALS ExperimentList files (one sweep or still per experiment).
    beamstop_disc "x,y,r", beamstop_rectangle "x0,x1,y0,y1", beamstop_polygon "x1,y1,...":
    0-based pixel coordinates. mask_chip_borders : also mask enlarged chip-border pixels.
    """

    xds: str | None = None
    expt: tuple[str, ...] = ()
    beamstop_disc: str | None = None
    beamstop_rectangle: str | None = None
    beamstop_polygon: str | None = None
    mask_chip_borders: bool = False

    def __post_init__(self):
        object.__setattr__(self, "expt", tuple(str(p) for p in self.expt))
        if bool(self.xds) == bool(self.expt):
            raise UsageError("give exactly one geometry source: --xds DIR or --expt FILE [FILE ...]")
        if self.xds and not os.path.isdir(self.xds):
            raise GeometryError(f"XDS directory {self.xds} does not exist")
        for path in self.expt:
            if os.path.isdir(path):
                raise GeometryError(f"--expt {path} is a folder: name the ExperimentList .expt/.json files in it")
            if not os.path.isfile(path):
                raise GeometryError(f"ExperimentList file {path} does not exist")
        self.beamstop()  # validates the strings

    def beamstop(self) -> Beamstop | None:
        if not (self.beamstop_disc or self.beamstop_rectangle or self.beamstop_polygon):
            return None
        return Beamstop.parse(self.beamstop_disc, self.beamstop_rectangle, self.beamstop_polygon)


@dataclass
class Experiment:
    """Imported sweeps with their static pixel masks (True = usable)."""

    sweeps: list[Sweep]
    masks: list[np.ndarray] = field(default_factory=list)
    mask_sources: list = field(default_factory=list)   # per sweep: (source, masked pixels), at import

    @property
    def space_group(self):
        return self.sweeps[0].crystal.space_group


def load_geometry(params: ImportParameters) -> list[Sweep]:
    """Sweeps from the geometry source, with batch ids 0, 1, … in order."""
    if params.xds:
        sweeps = _named(load_xds, params.xds, find_xparm(params.xds) or params.xds)
    else:
        seen = {}
        for path in params.expt:
            if os.path.abspath(path) in seen:
                raise GeometryError(f"{path} is given twice (also as {seen[os.path.abspath(path)]}): its frames "
                                    f"would be counted twice")
            seen[os.path.abspath(path)] = path
        sweeps = [s for path in params.expt for s in _named(load_dials, path, path)]
    _no_shared_frames(sweeps)
    sweeps = [s.with_batch(i) for i, s in enumerate(sweeps)]
    groups = {s.crystal.space_group.laue_str() for s in sweeps}
    if len(groups) > 1:
        raise GeometryError(f"sweeps disagree on the Laue group: {sorted(groups)}")
    check_cells(sweeps)
    return sweeps


def _named(loader, argument, source):
    """Run a geometry loader; a GeometryError that does not name its file gets ``source`` in front."""
    try:
        return loader(argument)
    except GeometryError as exc:
        if str(argument) in str(exc) or str(source) in str(exc):
            raise
        raise GeometryError(f"{source}: {exc}") from exc


def _no_shared_frames(sweeps) -> None:
    """The same image (file and frame) in two sweeps would be counted twice."""
    owner = {}
    for sweep in sweeps:
        indices = sweep.image_indices or (None,) * len(sweep.images)
        for image, index in zip(sweep.images, indices):
            key = (os.path.abspath(image), index)
            if key in owner and owner[key] is not sweep:
                raise GeometryError(f"{image} appears in two sweeps ({owner[key].source or 'sweep'} and "
                                    f"{sweep.source or 'sweep'}): its counts would be used twice")
            owner[key] = sweep


CELL_TOLERANCE = (0.02, 2.0)  # relative length, degrees


def cell_difference(cell, reference) -> tuple[float, float]:
    """(largest relative difference of a, b, c; largest difference of α, β, γ in degrees) between
    two cells given as (a, b, c, α, β, γ)."""
    cell, reference = np.asarray(cell, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return float(np.max(np.abs(cell[:3] / reference[:3] - 1))), float(np.max(np.abs(cell[3:] - reference[3:])))


def check_cells(sweeps) -> None:
    """Each sweep's cell must suit its space group (gemmi), and the sweeps' cells must agree within
    2 % in length and 2° in angle: they are merged into one map."""
    cells = []
    for sweep in sweeps:
        cell = sweep.crystal.unit_cell
        group = sweep.crystal.space_group
        if not cell.is_compatible_with_spacegroup(group, 1e-2):
            raise GeometryError(f"{sweep.source or 'sweep'}: the cell {_cell_text(cell)} does not suit space group "
                                f"{group.hm} ({group.number})")
        cells.append(np.array([cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma], dtype=np.float64))
    for sweep, cell in zip(sweeps[1:], cells[1:]):
        length, angle = cell_difference(cell, cells[0])
        if length > CELL_TOLERANCE[0] or angle > CELL_TOLERANCE[1]:
            raise GeometryError(f"{sweep.source or f'sweep {sweep.batch}'}: cell {np.round(cell, 2).tolist()} differs "
                                f"from the first sweep's {np.round(cells[0], 2).tolist()} by {100 * length:.1f} % / "
                                f"{angle:.1f}° (at most 2 % / 2° are merged together)")


def _cell_text(cell) -> str:
    return f"{cell.a:.2f} {cell.b:.2f} {cell.c:.2f} {cell.alpha:.1f} {cell.beta:.1f} {cell.gamma:.1f}"


def build_masks(sweeps: list[Sweep], params: ImportParameters) -> tuple[list[Sweep], list[np.ndarray], list[list]]:
    """Static pixel mask of each sweep, from its first frame and (Eiger/NXmx) the master's pixel_mask;
    checks image size and readability. Returns the sweeps (trusted range capped below the frames'
    flag value), the masks and, per sweep, the mask sources as (source, masked pixel count)."""
    masks, reports, checked = [], [], []
    beamstop = params.beamstop()
    static: dict = {}  # sweeps of one detector share their region and pixel_mask sources
    for sweep in sweeps:
        index = None if sweep.image_indices is None else sweep.image_indices[0]
        first = read_image(sweep.images[0], index)
        if first.shape != sweep.panel.shape:
            raise GeometryError(
                f"image {sweep.images[0]} is {first.shape[1]}x{first.shape[0]} pixels but the geometry "
                f"({sweep.source}) says NX x NY = {sweep.panel.image_size[0]}x{sweep.panel.image_size[1]}"
            )
        if first.dtype.kind == "f" and not np.all(np.isfinite(first)):
            raise MaskError(f"image {sweep.images[0]} contains NaN or infinite values")
        master = sweep.images[0] if is_hdf5(sweep.images[0]) else None
        key = (sweep.panel.image_size, sweep.untrusted, master)
        if key not in static:
            pixel_mask = None if master is None else open_master(master).pixel_mask
            static[key] = mask_sources(sweep.panel, None, sweep.untrusted, beamstop, params.mask_chip_borders,
                                       pixel_mask)
        flag = flag_value(first.dtype)
        if flag is not None and sweep.panel.trusted_range[1] > flag:
            # the largest value of the frames' type flags masked pixels (Eiger): never a count
            trusted = (sweep.panel.trusted_range[0], float(flag))
            sweep = replace(sweep, panel=replace(sweep.panel, trusted_range=trusted))
        sources = static[key] + [first_frame_source(sweep.panel, first)]
        mask = usable_pixels(sweep.panel.shape, sources)
        if not mask.any():
            raise MaskError(f"every pixel of {sweep.source} is masked")
        checked.append(sweep)
        masks.append(mask)
        reports.append([(name, int(masked.sum())) for name, masked in sources])
    return checked, masks, reports


def import_experiment(params: ImportParameters) -> Experiment:
    """Load geometry, check the images and build masks (the import step, ``steps.importing``,
    writes the result to experiment.nxs)."""
    sweeps, masks, sources = build_masks(load_geometry(params), params)
    return Experiment(sweeps, masks, sources)


def write_experiment(experiment: Experiment, path: str, parameters: dict, overwrite: bool = False):
    with atomic_nexus(path, overwrite) as handle:
        entry = create_step_entry(handle, "import", parameters)
        group = entry.create_group("experiment")
        for i, (sweep, mask) in enumerate(zip(experiment.sweeps, experiment.masks)):
            write_sweep_group(group, f"sweep_{i}", sweep, mask)
        entry["summary"] = summarise(experiment)


def read_experiment(path: str) -> Experiment:
    """Read an experiment.nxs written by the import step."""
    if not os.path.isfile(path):
        raise GeometryError(f"{path} does not exist (run `gpudiffuse import` first)")
    with h5py.File(path, "r") as handle:
        sweeps, masks = read_sweeps(handle)
    return Experiment(sweeps, masks)


def summarise(experiment: Experiment) -> str:
    """A readable multi-line summary of an imported experiment."""
    s0 = experiment.sweeps[0]
    cell = s0.crystal.unit_cell
    panel = s0.panel
    layout = layout_for_size(panel.image_size)
    d_corner, d_edge = edge_resolution(panel, s0.beam)
    n_frames = sum(s.scan.num_frames for s in experiment.sweeps)
    exposure = np.concatenate([s.scan.exposure_times for s in experiment.sweeps])
    masked = 1 - np.mean([m.mean() for m in experiment.masks])
    kind = "stills" if all(s.scan.is_still for s in experiment.sweeps) else "rotation"
    osc = s0.scan.oscillation
    lines = [
        f"sweeps        {len(experiment.sweeps)} ({kind}), {n_frames} frames",
        f"unit cell     {cell.a:.3f} {cell.b:.3f} {cell.c:.3f} Å  {cell.alpha:.2f} {cell.beta:.2f} {cell.gamma:.2f}°",
        f"space group   {s0.crystal.space_group.hm} (Laue {s0.crystal.space_group.laue_str()})",
        f"wavelength    {s0.beam.wavelength:.5f} Å",
        f"detector      {panel.image_size[0]} x {panel.image_size[1]} pixels of "
        f"{panel.pixel_size[0]:.4g} x {panel.pixel_size[1]:.4g} mm"
        + (f" ({layout.family} {layout.modules[0]}x{layout.modules[1]} modules)" if layout else ""),
        f"distance      {abs(np.dot(panel.origin, panel.normal)):.2f} mm",
        f"rotation      start {osc[0]:.3f}°, {osc[1]:.4f}° per frame",
        f"exposure      {exposure.min():.4g}–{exposure.max():.4g} s per frame",
        f"resolution    {d_corner:.3f} Å at the detector corner, {d_edge:.3f} Å at the nearest edge",
        f"masked        {100 * masked:.2f} % of pixels",
    ]
    for i, sources in enumerate(experiment.mask_sources):
        sources = [(name, count) for name, count in sources if count > 0]
        if not sources:
            lines.append(f"mask sources  {'sweep %d: ' % i if len(experiment.sweeps) > 1 else ''}nothing masked")
            continue
        n_pixels = experiment.masks[i].size
        lines.append(f"mask sources  sweep {i} (a pixel may have several):" if len(experiment.sweeps) > 1
                     else "mask sources  (a pixel may have several):")
        for name, count in sources:
            lines.append(f"  {count:9d} px {100 * count / n_pixels:7.3f} %  {name}")
    return "\n".join(lines)
