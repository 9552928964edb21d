"""The integrate step (pass 2, DESIGN §8): one streaming pass over the frames → the raw
accumulator rows of the diffuse and the excluded (Bragg) pixels, and the per-frame isotropic
profile, in ``integrate.nxs``.

The file holds the raw sums (the schema of ``integration.record``), so that row filters, the
background subtraction and the isotropic frame scale — applied when the observation table is
built (:func:`observation_tables`) — can change without reading a frame again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace

import h5py
import numpy as np

from ..errors import DeviceError, GridError
from ..grid import VoxelGrid, coarser_voxels, nested_grids
from ..integration import IntegrationParameters
from ..integration.blocks import Execution
from ..integration.record import DEFAULT_HISTOGRAM_MAX, FIELDS, AccumulatorRecord
from ..io.deflate import write_compressed
from ..io.nexus import atomic_nexus, create_step_entry
from ..masking.peaks import absent_table
from ..merge import equal_volume_edges, voxel_s
from ..observations import observation_table
from .importing import load_experiment
from .keys import cached_step, make_key, stored_digest, step_path

__all__ = ["IntegrateParameters", "EngineChoice", "Integration", "run_integrate", "read_integration",
           "load_integration", "observation_tables", "load_observations"]

logger = logging.getLogger(__name__)


BRAGG_MASKS = ("peak-cloud", "statistical", "both", "none")
DEFAULT_FILTER_NDIV = (3, 3, 3)  # DESIGN §7


def bragg_mask_method(value) -> str:
    """The Bragg-mask method: one of BRAGG_MASKS (True means peak-cloud, False none)."""
    if value is True or value is False:
        return "peak-cloud" if value else "none"
    if value not in BRAGG_MASKS:
        raise GridError(f"--bragg-mask {value}: unknown (one of {', '.join(BRAGG_MASKS)})")
    return value


@dataclass(frozen=True)
class IntegrateParameters:
    """What the streaming pass computes: the grid and wedges (``IntegrationParameters``), the Bragg
    mask (``peak-cloud``: the model of ``peaks.nxs`` applied per pixel; ``statistical``: the count
    filter of DESIGN §7 on its own grid, ``integration.filter_ndiv`` (default 3 3 3), after the
    pass; ``both``; ``none``), and an optional background run (image template)."""

    integration: IntegrationParameters = field(default_factory=IntegrationParameters)
    bragg_mask: str = "peak-cloud"
    background: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "bragg_mask", bragg_mask_method(self.bragg_mask))
        integration = self.integration
        if self.statistical:  # the filter needs the histograms, and its grid
            if integration.histogram_max is None:
                integration = replace(integration, histogram_max=DEFAULT_HISTOGRAM_MAX)
            if integration.filter_ndiv is None:
                integration = replace(integration, filter_ndiv=default_filter_ndiv(integration.ndiv))
        else:  # nothing would use them
            integration = replace(integration, histogram_max=None, filter_ndiv=None)
        object.__setattr__(self, "integration", integration)

    @property
    def peak_cloud(self) -> bool:
        return self.bragg_mask in ("peak-cloud", "both")

    @property
    def statistical(self) -> bool:
        return self.bragg_mask in ("statistical", "both")

    def key_parameters(self) -> dict:
        integration = asdict(self.integration)
        if integration["filter_ndiv"] is None:  # keys of runs without the filter stay as they were
            del integration["filter_ndiv"]
        return {"integration": integration, "bragg_mask": self.bragg_mask,
                "background": os.path.abspath(self.background) if self.background else None}


def default_filter_ndiv(ndiv) -> tuple:
    """ndiv 3 3 3 (DESIGN §7; the integration grid itself at the default --ndiv), when it nests with
    the integration grid (--ndiv 1, 3, 9, 15, … per axis); refused, with what to do, otherwise."""
    if all(nested_grids(n, m) for n, m in zip(ndiv, DEFAULT_FILTER_NDIV)):
        return DEFAULT_FILTER_NDIV
    raise GridError(f"--bragg-mask statistical: the filter's default grid, ndiv 3 3 3, does not nest with the "
                    f"integration grid --ndiv {' '.join(map(str, ndiv))} (one must be the other times an odd factor "
                    "on each axis); integrate at --ndiv 1, 3 or 9 per axis, or give --filter-ndiv")


@dataclass(frozen=True)
class EngineChoice:
    """Where the pass runs (not part of the cache key: every engine gives the same sums).
    device auto|cpu|gpu; engine numpy|cpu|cuda (None: cuda on a GPU, else cpu); nproc; Dask
    scheduler address or local dask_workers."""

    device: str = "auto"
    engine: str | None = None
    nproc: int | None = None
    scheduler: str | None = None
    dask_workers: int | None = None

    def execution(self, backend) -> Execution:
        """``engine``, else ``cuda`` on a GPU and ``cpu`` (numba) otherwise; refused if it cannot run here."""
        from ..integration.engines import engine_class  # noqa: PLC0415

        engine = self.engine or ("cuda" if backend.device == "gpu" else "cpu")
        if not engine_class(engine).available():
            raise DeviceError(f"--engine {engine} cannot run on this machine"
                              + (" (no usable GPU)" if engine == "cuda" else " (numba is not installed)"))
        return Execution(engine, self.nproc, self.scheduler, self.dask_workers)


@dataclass
class Integration:
    """The raw result of the pass. ``diffuse``/``excluded``: accumulator rows (columns of the
    record schema, canonical key order); ``profiles``: batch → {"counts", "kt"} (n_frames, bins);
    ``zingers``: pixel-frames dropped; ``ndiv``; ``dmin``: the resolution limit used (Å);
    ``bragg_filter``: what the statistical filter moved (None when it did not run);
    ``filter_flags``: the filter's per-wedge flags from the pass, until the rows are moved."""

    diffuse: dict
    excluded: dict
    profiles: dict
    zingers: int
    ndiv: tuple
    dmin: float
    bragg_filter: dict | None = None
    filter_flags: dict | None = None


def run_integrate(out: str, params: IntegrateParameters, engines: EngineChoice = EngineChoice(),
                  overwrite: bool = False, progress: bool = True, experiment=None, search=None,
                  backend=None) -> Integration:
    """Integrate ``OUT/experiment.nxs`` (masking the peaks of ``OUT/peaks.nxs`` when
    ``params.bragg_mask``) into ``OUT/integrate.nxs``, or reuse that file. ``experiment`` and
    ``search``, when given, are those files already loaded."""
    from ..backend import resolve_device  # noqa: PLC0415
    from .find_peaks import load_peaks  # noqa: PLC0415
    from .limits import check_background, resolve_dmin  # noqa: PLC0415

    if experiment is None:
        experiment = load_experiment(out, check_inputs=True)
    reads = {"import": stored_digest(out, "import"),
             "find_peaks": stored_digest(out, "find_peaks") if params.peak_cloud else None}
    key = make_key("integrate", params.key_parameters(), reads)
    backend = backend or resolve_device(engines.device)
    execution = engines.execution(backend)

    def compute():  # checked here, not when the file is reused: the background check reads its frames
        dmin = resolve_dmin(experiment, params.integration.dmin)
        if params.background:
            check_background(params.background, experiment)
        peaks = (search or load_peaks(out)) if params.peak_cloud else None
        integration = _integrate(experiment, peaks, dmin, params, execution, progress)
        if params.statistical:
            _filter(integration, experiment, params.integration.filter_ndiv, params.integration.histogram_max)
            _coarsen(integration, params.integration.ndiv)
        return integration

    return cached_step(out, "integrate", key, overwrite, compute,
                       lambda path, result, k: write_integration(path, result, k, backend), read_integration)


def _integrate(experiment, search, dmin, params, execution, progress) -> Integration:
    from ..integration.blocks import BlockTask, run_blocks  # noqa: PLC0415
    from ..integration.driver import wedge_blocks  # noqa: PLC0415
    from ..progress import progress_bar  # noqa: PLC0415

    crystal = experiment.sweeps[0].crystal
    # the filter's grid when it is finer than --ndiv: its voxels are added up onto --ndiv afterwards
    integration = replace(params.integration, ndiv=params.integration.pass_ndiv)
    grid = VoxelGrid.for_crystal(crystal.real_space_axes, dmin * 0.98, integration.ndiv)
    absent = absent_table(crystal.space_group, grid.hmax) if search is not None else None
    logger.info("integration engine: %s", execution.engine)
    tasks = []
    for i, (sweep, mask) in enumerate(zip(experiment.sweeps, experiment.masks)):
        threshold = None
        if search is not None:
            mask = mask & ~search.hot_pixels[i]
            threshold = search.thresholds[i]
        for frames in wedge_blocks(sweep, integration, execution.blocks_per_sweep):
            tasks.append(BlockTask(sweep, mask, dmin, grid, integration, frames, execution.engine, threshold,
                                   None if search is None else search.model, absent, params.background))
    bar = progress_bar(progress, total=sum(len(t.frames) for t in tasks), desc="integrate", unit="frame")
    result = run_blocks(tasks, execution, bar)
    bar.close()
    if result.zingers:
        logger.info("dropped %d zinger pixel-frames (strong pixels far from any allowed reflection)", result.zingers)
    profiles = {batch: {"counts": result.profile_counts[batch], "kt": result.profile_kt[batch]}
                for batch in result.profile_counts}
    return Integration(result.diffuse.rows(), result.excluded.rows(), profiles, int(result.zingers),
                       tuple(integration.ndiv), float(dmin), filter_flags=result.filter_flags)


def _coarsen(integration: Integration, ndiv) -> None:
    """Add the rows of a pass on a finer (nested) grid up onto ``ndiv``, in place: every field is a
    sum over pixel-frames, so this is what a pass on ``ndiv`` gives (integers exactly)."""
    if tuple(integration.ndiv) == tuple(ndiv):
        return
    ratio = np.asarray(integration.ndiv) // np.asarray(ndiv)
    for name in ("diffuse", "excluded"):
        rows = dict(getattr(integration, name))
        if rows.get("H") is not None and len(rows["H"]):
            voxels = coarser_voxels(np.column_stack([rows[c] for c in ("H", "K", "L")]), ratio)
            rows["H"], rows["K"], rows["L"] = voxels.T
            rows = AccumulatorRecord.from_columns(rows).rows()
        setattr(integration, name, rows)
    integration.ndiv = tuple(int(n) for n in ndiv)


def _filter(integration: Integration, experiment, filter_ndiv, c_max: int) -> None:
    """The statistical filter, in place: excluded rows move to the excluded table."""
    from ..integration.bragg_filter import move_flagged  # noqa: PLC0415

    rows = integration.diffuse
    diffuse, excluded, summary = move_flagged(rows, integration.excluded, integration.ndiv, integration.filter_flags,
                                              filter_ndiv)
    integration.filter_flags = None
    overflowing = sum(w["overflow"] for w in summary["per_wedge"].values())
    filter_voxels = sum(w["filter_voxels"] for w in summary["per_wedge"].values())
    if filter_voxels and overflowing > 0.5 * filter_voxels:
        mean = float(rows["counts"].sum() / max(rows["pixels"].sum(), 1))
        # more than half the map would be lost (SNase's CCD stills: 4 rows of 456 069 left): refuse
        grid = " ".join(map(str, summary["filter_ndiv"]))
        raise GridError(f"the statistical Bragg filter found counts above c_max = {c_max} in {overflowing} of the "
                        f"{filter_voxels} voxel-wedges of its grid (ndiv {grid}); this data has {mean:.3g} counts per "
                        "pixel-frame on average, and the filter is made for low-count (photon-counting) data: use "
                        "--bragg-mask peak-cloud, or a --filter-max-count above the diffuse counts per pixel-frame")
    crystal = experiment.sweeps[0].crystal
    metric = crystal.reciprocal_metric
    summary["shells"] = _moved_per_shell(integration.diffuse, summary["moved_keys"], metric, integration.ndiv)
    for d_max, d_min, fraction in zip(*(summary["shells"][k] for k in ("d_max", "d_min", "fraction_moved"))):
        logger.info("statistical filter: %6.2f–%5.2f Å: %5.2f %% of voxel-wedge rows excluded", d_max, d_min,
                    100 * fraction)
    integration.diffuse, integration.excluded, integration.bragg_filter = diffuse, excluded, summary


def _moved_per_shell(rows: dict, moved: dict, metric, ndiv, n_shells: int = 10) -> dict:
    """Fraction of the voxel-wedge rows moved, per shell of equal reciprocal volume."""
    s_all = voxel_s(np.column_stack([rows["H"], rows["K"], rows["L"]]), ndiv, metric)
    s_moved = voxel_s(np.column_stack([moved["H"], moved["K"], moved["L"]]), ndiv, metric) if moved else np.zeros(0)
    edges = equal_volume_edges(0.0, s_all.max(), n_shells) if len(s_all) else np.zeros(2)
    total = np.histogram(s_all, edges)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.histogram(s_moved, edges)[0] / total
    with np.errstate(divide="ignore"):
        return {"d_max": 1 / edges[:-1], "d_min": 1 / edges[1:], "fraction_moved": fraction}


_UNITS = {f.name: f.unit for f in FIELDS}


def write_integration(path: str, integration: Integration, key: dict, backend=None) -> None:
    with atomic_nexus(path, overwrite=True) as handle:
        entry = create_step_entry(handle, "integrate", key, backend)
        for name in ("diffuse", "excluded"):
            g = entry.create_group(name)
            g.attrs["NX_class"] = "NXcollection"
            g.attrs["rows"] = len(next(iter(getattr(integration, name).values()), []))
            # fast gzip with byte shuffling (about as small as level 4, several times faster), on all cores
            write_compressed(g, getattr(integration, name))
            for column in getattr(integration, name):
                g[column].attrs["units"] = _UNITS.get(column, "voxel index" if column in "HKL" else "1")
        g = entry.create_group("profiles")
        for batch, profile in integration.profiles.items():
            b = g.create_group(f"batch_{batch}")
            b["counts"], b["kt"] = profile["counts"], profile["kt"]
            b["counts"].attrs["units"], b["kt"].attrs["units"] = "counts", "sr·s"
        if integration.bragg_filter is not None:
            _write_filter(entry, integration.bragg_filter)
        entry.attrs["zingers"] = integration.zingers
        entry.attrs["ndiv"] = np.asarray(integration.ndiv, dtype=np.int64)
        entry.attrs["dmin"] = integration.dmin
        entry.attrs["dmin_units"] = "angstrom"


def _write_filter(entry, summary: dict) -> None:
    g = entry.create_group("statistical_filter")
    g.attrs["NX_class"] = "NXcollection"
    g.attrs["description"] = ("voxel-wedge rows the statistical Bragg filter (DESIGN §7) moved from the diffuse to "
                              "the excluded table; per wedge (filter voxels removed by the walk and with counts "
                              "above c_max, rows and pixel-frames moved) and per resolution shell")
    g.attrs["filter_ndiv"] = np.asarray(summary["filter_ndiv"], dtype=np.int64)
    moved = summary["moved_keys"]
    for key in ("batch", "wedge", "H", "K", "L"):
        g.create_dataset(f"moved_{key}", data=np.asarray(moved.get(key, np.zeros(0, np.int32))), compression="gzip")
    wedges = sorted(summary["per_wedge"])
    table = g.create_group("per_wedge")
    table["batch"] = np.array([b for b, _ in wedges], dtype=np.int64)
    table["wedge"] = np.array([w for _, w in wedges], dtype=np.int64)
    for name in ("removed", "overflow", "filter_voxels", "moved", "pixel_frames_moved"):
        table[name] = np.array([summary["per_wedge"][k][name] for k in wedges], dtype=np.int64)
    shells = g.create_group("shells")
    for name, values in summary["shells"].items():
        shells[name] = values
    shells["d_max"].attrs["units"] = shells["d_min"].attrs["units"] = "angstrom"


def read_integration(path: str) -> Integration:
    with h5py.File(path, "r") as handle:
        entry = handle["entry"]
        rows = {name: {k: entry[name][k][()] for k in entry[name]} for name in ("diffuse", "excluded")}
        profiles = {int(k.split("_")[1]): {"counts": g["counts"][()], "kt": g["kt"][()]}
                    for k, g in entry["profiles"].items()}
        bragg_filter = None
        if "statistical_filter" in entry:
            g = entry["statistical_filter"]
            bragg_filter = {"moved_keys": {k: g[f"moved_{k}"][()] for k in ("batch", "wedge", "H", "K", "L")},
                            "per_wedge_table": {k: v[()] for k, v in g["per_wedge"].items()},
                            "shells": {k: v[()] for k, v in g["shells"].items()},
                            "filter_ndiv": tuple(int(n) for n in g.attrs.get("filter_ndiv", entry.attrs["ndiv"]))}
        return Integration(rows["diffuse"], rows["excluded"], profiles, int(entry.attrs["zingers"]),
                           tuple(int(n) for n in entry.attrs["ndiv"]), float(entry.attrs["dmin"]), bragg_filter)


def load_integration(out: str) -> Integration:
    stored_digest(out, "integrate")  # names a missing or unfinished file
    return read_integration(step_path(out, "integrate"))


def observation_tables(experiment, integration: Integration, frame_scale: dict | None = None, min_pixels: int = 1,
                       min_counts: int = 0) -> dict:
    """The observation tables (``observations.observation_table``) of the diffuse and excluded rows:
    rows with fewer than ``min_pixels`` pixel-frames or ``min_counts`` counts dropped (diffuse only),
    rates divided by ``frame_scale`` (batch → per-frame factors), the background run subtracted,
    and only voxels whose centre lies inside the resolution limit (a hard limit: pixels inside it
    reach voxels whose centres lie up to half a voxel beyond)."""
    crystal = experiment.sweeps[0].crystal
    metric = crystal.reciprocal_metric
    volume, ndiv = crystal.reciprocal_volume, integration.ndiv
    tables = {}
    for name, least_pixels, least_counts in (("observations", min_pixels, min_counts), ("excluded", 1, 0)):
        rows = getattr(integration, "diffuse" if name == "observations" else "excluded")
        table = observation_table(rows, volume, ndiv, frame_scale, least_pixels, least_counts)
        tables[name] = _subtract_background(_within_resolution(table, metric, ndiv, integration.dmin))
    if not tables["observations"] or not len(tables["observations"]["rate"]):
        raise GridError("no observation survived: every pixel is masked, excluded as Bragg or outside the "
                        "resolution limit")
    return tables


def _within_resolution(table: dict, metric: np.ndarray, ndiv, dmin: float) -> dict:
    if not table:
        return table
    s = voxel_s(np.column_stack([table["H"], table["K"], table["L"]]), ndiv, metric)
    keep = s <= (1.0 / dmin) * (1 + 5e-10)
    return {k: v[keep] for k, v in table.items()}


def _subtract_background(table: dict) -> dict:
    """rate − background rate and σ² + σ_bkg² when a background run was integrated."""
    if not table or "background_rate" not in table:
        return table
    out = dict(table)
    out["rate"] = table["rate"] - table["background_rate"]
    out["sigma"] = np.hypot(table["sigma"], table["background_sigma"])
    return out


def load_observations(out: str, min_pixels: int = 1, min_counts: int = 0) -> dict:
    """The unscaled observation table of a processed folder (background subtracted when a
    background run was integrated), as the scale step builds it before fitting."""
    experiment = load_experiment(out)
    return observation_tables(experiment, load_integration(out), None, min_pixels, min_counts)["observations"]
