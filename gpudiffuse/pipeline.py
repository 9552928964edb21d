"""Batch processing: import → find peaks → integrate → merge → map, each step written
atomically to ``OUT/<step>.nxs``. A step whose file exists with the same parameters is not
run again (resume after an interruption); a file written with other parameters is only
replaced with ``overwrite``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

import h5py
import numpy as np

from .backend import resolve_device
from .errors import DeviceError, GpudiffuseError, GridError
from .experiment import Experiment, ImportParameters, import_experiment, read_experiment, summarise, write_experiment
from .geometry.vectors import edge_resolution
from .grid import VoxelGrid
from .integration import IntegrationParameters
from .integration.pixels import frame_list
from .integration.blocks import Execution
from .io.fingerprint import input_fingerprint
from .io.nexus import atomic_nexus, write_provenance
from .masking.peaks import PeakModel, PeakParameters, ThresholdProfile, absent_table, find_peaks
from .merge import MergeParameters, check_grid_symmetry, expand_to_grid, merge, voxel_s
from .scaling.fit import apply_scales
from .observations import isotropic_frame_scale, observation_table
from .scaling import ScaleOptions
from .scale_step import apply_scales_to_other, fit_observations, read_scale, write_scale
from .step_cache import should_run, step_key

__all__ = ["ProcessParameters", "process", "resolve_dmin", "format_statistics"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ProcessParameters:
    """All parameters of ``gpudiffuse process`` (see ``gpudiffuse process --help``)."""

    geometry: ImportParameters
    integration: IntegrationParameters = field(default_factory=IntegrationParameters)
    peaks: PeakParameters = field(default_factory=PeakParameters)
    merging: MergeParameters = field(default_factory=MergeParameters)
    scaling: ScaleOptions = field(default_factory=ScaleOptions)
    device: str = "auto"
    engine: str | None = None          # None: from the device (cuda or cpu)
    nproc: int | None = None
    scheduler: str | None = None
    dask_workers: int | None = None
    background: str | None = None
    bragg_mask: bool = True
    scale: str = "model"
    min_pixels: int = 1
    min_counts: int = 0

    def __post_init__(self):
        if self.scale not in ("model", "isotropic", "none"):
            raise GridError(f"unknown scale mode {self.scale!r} (model, isotropic or none)")


def execution_for(params: ProcessParameters, backend) -> Execution:
    """Where the streaming pass runs: ``--engine``, else ``cuda`` on a GPU and ``cpu`` (numba) otherwise."""
    from .integration.engines import engine_class  # noqa: PLC0415

    engine = params.engine or ("cuda" if backend.device == "gpu" else "cpu")
    if not engine_class(engine).available():
        raise DeviceError(f"--engine {engine} cannot run on this machine"
                          + (" (no usable GPU)" if engine == "cuda" else " (numba is not installed)"))
    return Execution(engine, params.nproc, params.scheduler, params.dask_workers)


def resolve_dmin(experiment: Experiment, dmin: float | None) -> float:
    """The resolution limit: the user's, or the detector corner. Refuses one beyond the detector."""
    corner = max(edge_resolution(s.panel, s.beam)[0] for s in experiment.sweeps)
    if dmin is None:
        return corner
    if dmin < corner * (1 - 1e-6):
        raise GridError(f"--dmin {dmin} Å is beyond the detector edge: the corner of the detector records "
                        f"{corner:.3f} Å at best")
    return float(dmin)


def check_grid_memory(experiment: Experiment, ndiv, dmin: float) -> None:
    """Refuse, before any work, a grid whose dense map (intensity and σ, float64, every voxel to
    ``dmin``) would need more than half of this machine's memory."""
    axes = experiment.sweeps[0].crystal.real_space_axes
    extent = [2 * int(np.ceil(np.linalg.norm(axis) * n / dmin)) + 1 for axis, n in zip(axes, ndiv)]
    need = 16.0 * float(np.prod(np.array(extent, dtype=np.float64)))
    try:
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return
    if need > memory / 2:
        raise GridError(f"--ndiv {' '.join(str(n) for n in ndiv)} to {dmin:.3g} Å needs a map grid of "
                        f"{' × '.join(str(e) for e in extent)} voxels, about {need / 2**30:.3g} GiB; this machine has "
                        f"{memory / 2**30:.3g} GiB")


class _StepClock:
    """Wall time per step (s), logged as each step ends."""

    def __init__(self):
        self.seconds, self._name, self._start = {}, None, time.perf_counter()

    def step(self, name):
        now = time.perf_counter()
        if self._name is not None:
            self.seconds[self._name] = round(now - self._start, 3)
            logger.info("step %s: %.2f s", self._name, now - self._start)
        self._name, self._start = name, now


def _step_path(out, step):
    return os.path.join(out, f"{step}.nxs")


def _previous_experiment(path):
    try:
        return read_experiment(path) if os.path.exists(path) else None
    except (GpudiffuseError, OSError, KeyError, ValueError):
        return None


def process(params: ProcessParameters, out: str, overwrite: bool = False, progress: bool = True) -> dict:
    """Run the whole pipeline into folder ``out``. Returns a summary dict (paths, statistics)."""
    backend = resolve_device(params.device)
    logger.info("device: %s (%s)", backend.name, backend.reason)
    execution_for(params, backend)  # an engine that cannot run here is refused before any step
    clock = _StepClock()

    clock.step("import")
    # 1. import
    path = _step_path(out, "experiment")
    previous = _previous_experiment(path)
    inputs = None if previous is None else input_fingerprint(params.geometry, previous)
    if should_run(path, step_key(params, "experiment", inputs), overwrite):
        experiment = import_experiment(params.geometry)
        inputs = input_fingerprint(params.geometry, experiment)
        write_experiment(experiment, path, step_key(params, "experiment", inputs), overwrite=True)
    else:
        experiment = previous
    space_group = experiment.space_group
    check_grid_symmetry(space_group, params.integration.ndiv)
    dmin = resolve_dmin(experiment, params.integration.dmin)
    check_grid_memory(experiment, params.integration.ndiv, dmin)
    for sweep in experiment.sweeps:  # --frames outside a sweep: refused before the peak search
        frame_list(sweep, params.integration.frames)
    logger.info("experiment:\n%s", summarise(experiment))

    clock.step("peaks")
    # 2. peak search (pass 1)
    path = _step_path(out, "peaks")
    p = step_key(params, "peaks", inputs)
    if not params.bragg_mask:
        search = None
    elif should_run(path, p, overwrite):
        search = find_peaks(experiment, params.peaks, dmin, progress)
        _write_peaks(path, search, p, backend)
    else:
        search = _read_peaks(path)

    clock.step("integrate")
    # 3. integration (pass 2)
    path = _step_path(out, "integrate")
    p = step_key(params, "integrate", inputs)
    if should_run(path, p, overwrite):
        tables = _integrate(experiment, search, dmin, params, backend, progress)
        _write_integrate(path, tables, p, backend)
    else:
        tables = _read_integrate(path)

    clock.step("scale")
    # 4. scaling (after subtracting the background run, if any)
    observations = _subtract_background(tables["observations"])
    scale_fit, unscaled = None, None
    if params.scale == "model":
        path = _step_path(out, "scale")
        p = step_key(params, "scale", inputs)
        if should_run(path, p, overwrite):
            scale_fit = fit_observations(experiment, observations, params.integration.ndiv, params.scaling, progress)
            write_scale(path, scale_fit, p, backend)
        else:
            scale_fit = read_scale(path, experiment, observations, params.integration.ndiv)
        unscaled, observations = observations, apply_scales(observations, scale_fit)
        if tables["excluded"]:
            tables["excluded"] = apply_scales_to_other(experiment, _subtract_background(tables["excluded"]),
                                                       scale_fit, params.integration.ndiv, params.scaling)

    clock.step("merge")
    # 5. merge
    crystal = experiment.sweeps[0].crystal
    metric = crystal.A.T @ crystal.A
    merged, stats, rejected = merge(observations, space_group, params.integration.ndiv, metric, params.merging)
    if not len(merged["intensity"]):
        raise GridError("no voxel was observed: check --dmin, the mask and the frame range")
    if unscaled is not None:
        # CC½ before scaling, same shells and half-sets (DESIGN §10: report χ² and CC½ before/after)
        stats["cc_half_unscaled"] = merge(unscaled, space_group, params.integration.ndiv, metric,
                                          params.merging)[1]["cc_half"]
    bragg = None
    if tables["excluded"]:
        bragg, _, _ = merge(tables["excluded"], space_group, params.integration.ndiv, metric, params.merging)
    path = _step_path(out, "merged")
    p = step_key(params, "merged", inputs)
    with atomic_nexus(path, overwrite=True) as handle:
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        write_provenance(entry, "merge", p, backend)
        _write_merged_group(entry, "merged", merged, crystal, params.integration.ndiv)
        entry["merged"].attrs["rejected_outliers"] = rejected
        entry["merged"].attrs["scale"] = params.scale
        if bragg is not None:
            _write_merged_group(entry, "bragg", bragg, crystal, params.integration.ndiv)
        g = entry.create_group("statistics")
        for key, values in stats.items():
            g[key] = values
    clock.step("map")
    # 6. map
    path = _step_path(out, "map")
    intensity, errors, axes = expand_to_grid(merged, space_group, params.integration.ndiv)
    with atomic_nexus(path, overwrite=True) as handle:
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        write_provenance(entry, "map", p, backend)
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "intensity"
        data.attrs["axes"] = ["h", "k", "l"]
        data.create_dataset("intensity", data=intensity, compression="gzip")
        data.create_dataset("intensity_errors", data=errors, compression="gzip")
        for name, axis, n in zip("hkl", axes, params.integration.ndiv):
            data[name] = axis / n
            data[name].attrs["units"] = "r.l.u."
        for name in ("intensity", "intensity_errors"):
            data[name].attrs["units"] = INTENSITY_UNITS
        data.attrs["space_group"] = space_group.hm
        data.attrs["unit_cell"] = np.asarray(crystal.unit_cell.parameters, dtype=np.float64)
        data.attrs["unit_cell_units"] = "angstrom, degrees"
        data.attrs["ndiv"] = np.asarray(params.integration.ndiv, dtype=np.int64)
        entry.attrs["default"] = "data"
        handle.attrs["default"] = "entry"
    clock.step(None)
    return {"merged": merged, "statistics": stats, "rejected": rejected, "dmin": dmin, "timings": clock.seconds,
            "peak_model": None if search is None else search.model, "out": out, "scale_fit": scale_fit}


def _subtract_background(table):
    """rate − background rate and σ² + σ_bkg² when a background run was integrated (copy)."""
    if not table or "background_rate" not in table:
        return table
    out = dict(table)
    out["rate"] = table["rate"] - table["background_rate"]
    out["sigma"] = np.hypot(table["sigma"], table["background_sigma"])
    return out


# the per-voxel rate of DESIGN §8, counts / Σ(K·t) with K = Ω·P·E·A, divided by the dimensionless
# scale factors; not on an absolute scale (the absolute step, DESIGN §12, is not written yet)
INTENSITY_UNITS = "counts / (s sr), relative scale"


def _write_merged_group(entry, name, merged, crystal, ndiv):
    g = entry.create_group(name)
    g.attrs["NX_class"] = "NXcollection"
    for key in ("h", "k", "l", "intensity", "sigma"):
        g.create_dataset(key, data=np.asarray(merged[key], dtype=np.float64))
    g.create_dataset("n", data=np.asarray(merged["n"], dtype=np.int64))
    g.create_dataset("s", data=merged["s"])
    g["s"].attrs["units"] = "1/angstrom"
    for key in ("h", "k", "l"):
        g[key].attrs["units"] = "r.l.u."
    for key in ("intensity", "sigma"):
        g[key].attrs["units"] = INTENSITY_UNITS
    g.attrs["ndiv"] = np.asarray(ndiv, dtype=np.int64)
    g.attrs["space_group"] = crystal.space_group.hm
    g.attrs["unit_cell"] = np.asarray(crystal.unit_cell.parameters, dtype=np.float64)


def _integrate(experiment, search, dmin, params, backend, progress):
    from .progress import progress_bar  # noqa: PLC0415

    from .integration.blocks import BlockTask, run_blocks  # noqa: PLC0415
    from .integration.driver import wedge_blocks  # noqa: PLC0415

    crystal = experiment.sweeps[0].crystal
    grid = VoxelGrid.for_crystal(crystal.real_space_axes, dmin * 0.98, params.integration.ndiv)
    absent = absent_table(crystal.space_group, grid.hmax) if search is not None else None
    execution = execution_for(params, backend)
    logger.info("integration engine: %s", execution.engine)
    tasks = []
    for i, (sweep, mask) in enumerate(zip(experiment.sweeps, experiment.masks)):
        threshold = None
        if search is not None:
            mask = mask & ~search.hot_pixels[i]
            threshold = search.thresholds[i]
        for frames in wedge_blocks(sweep, params.integration, execution.blocks_per_sweep):
            tasks.append(BlockTask(sweep, mask, dmin, grid, params.integration, frames, execution.engine, threshold,
                                   None if search is None else search.model, absent, params.background))
    bar = progress_bar(progress, total=sum(len(t.frames) for t in tasks), desc="integrate", unit="frame")
    result = run_blocks(tasks, execution, bar)
    bar.close()
    zingers = result.zingers
    if zingers:
        logger.info("dropped %d zinger pixel-frames (strong pixels far from any allowed reflection)", zingers)
    profiles = {batch: {"counts": result.profile_counts[batch], "kt": result.profile_kt[batch]}
                for batch in result.profile_counts}
    scale = isotropic_frame_scale(profiles) if params.scale == "isotropic" else None
    volume = crystal.reciprocal_volume
    ndiv = params.integration.ndiv
    metric = crystal.A.T @ crystal.A
    obs = _within_resolution(observation_table(result.diffuse.rows(), volume, ndiv, scale, params.min_pixels,
                                               params.min_counts), metric, ndiv, dmin)
    exc = _within_resolution(observation_table(result.excluded.rows(), volume, ndiv, scale, 1, 0), metric, ndiv, dmin)
    if not obs:
        raise GridError("no observation survived: every pixel is masked or outside the resolution limit")
    return {"observations": obs, "excluded": exc, "frame_scale": scale or {}, "zingers": zingers}


def _within_resolution(table: dict, metric: np.ndarray, ndiv, dmin: float) -> dict:
    """Rows whose voxel centre lies inside the resolution limit: --dmin is a hard limit on the
    map (pixels inside it reach voxels whose centres lie up to half a voxel beyond)."""
    if not table:
        return table
    s = voxel_s(np.column_stack([table["H"], table["K"], table["L"]]), ndiv, metric)
    keep = s <= (1.0 / dmin) * (1 + 5e-10)
    return {k: v[keep] for k, v in table.items()}


def _write_peaks(path, search, parameters, backend):
    with atomic_nexus(path, overwrite=True) as handle:
        entry = handle.create_group("entry")
        write_provenance(entry, "find_peaks", parameters, backend)
        m = search.model
        g = entry.create_group("peak_model")
        g["offset"], g["covariance"] = m.offset, m.covariance
        g.attrs["sigma_cutoff"], g.attrs["n_hot"], g.attrs["inlier_fraction"] = m.sigma_cutoff, m.n_hot, m.inlier_fraction
        g.attrs["warnings"] = json.dumps(list(m.warnings))
        for i, (thr, hot, info) in enumerate(zip(search.thresholds, search.hot_pixels, search.per_sweep)):
            s = entry.create_group(f"sweep_{i}")
            s["threshold_edges"], s["threshold_values"] = thr.edges, thr.values
            s.create_dataset("hot_pixels", data=hot.astype(np.uint8), compression="gzip")
            s.attrs["info"] = json.dumps(info)


def _read_peaks(path):
    from .masking.peaks import PeakSearch  # noqa: PLC0415

    with h5py.File(path, "r") as handle:
        g = handle["entry/peak_model"]
        model = PeakModel(g["offset"][()], g["covariance"][()], float(g.attrs["sigma_cutoff"]), int(g.attrs["n_hot"]),
                          float(g.attrs["inlier_fraction"]), tuple(json.loads(g.attrs["warnings"])))
        names = sorted((k for k in handle["entry"] if k.startswith("sweep_")), key=lambda k: int(k.split("_")[1]))
        thresholds = [ThresholdProfile(handle[f"entry/{k}/threshold_edges"][()], handle[f"entry/{k}/threshold_values"][()])
                      for k in names]
        hot = [handle[f"entry/{k}/hot_pixels"][()] > 0 for k in names]
        info = [json.loads(handle[f"entry/{k}"].attrs["info"]) for k in names]
    return PeakSearch(model, thresholds, hot, info)


def _write_integrate(path, tables, parameters, backend):
    with atomic_nexus(path, overwrite=True) as handle:
        entry = handle.create_group("entry")
        write_provenance(entry, "integrate", parameters, backend)
        for name in ("observations", "excluded"):
            g = entry.create_group(name)
            for key, values in tables[name].items():
                # fast gzip with byte shuffling: about as small as level 4, several times faster
                g.create_dataset(key, data=values, compression="gzip", compression_opts=1, shuffle=True)
        g = entry.create_group("frame_scale")
        for batch, values in tables["frame_scale"].items():
            g[f"batch_{batch}"] = values
        entry.attrs["zingers"] = tables["zingers"]


def _read_integrate(path):
    with h5py.File(path, "r") as handle:
        entry = handle["entry"]
        tables = {name: {k: entry[name][k][()] for k in entry[name]} for name in ("observations", "excluded")}
        tables["frame_scale"] = {int(k.split("_")[1]): entry["frame_scale"][k][()] for k in entry["frame_scale"]}
        tables["zingers"] = int(entry.attrs["zingers"])
    return tables


def format_statistics(stats: dict) -> str:
    """The per-shell table as text (with CC½ of the unscaled data when the model was fitted)."""
    before = "cc_half_unscaled" in stats
    lines = [" d_max  d_min       n      <I>   <I/sig>   CC1/2     CC*  R-split" + ("  CC1/2(unscaled)" if before else "")]
    for i in range(len(stats["n"])):
        lines.append(f"{stats['d_max'][i]:6.2f} {stats['d_min'][i]:6.2f} {int(stats['n'][i]):7d} "
                     f"{stats['mean_I'][i]:8.4g} {stats['mean_I_over_sigma'][i]:9.1f} {stats['cc_half'][i]:7.4f} "
                     f"{stats['cc_star'][i]:7.4f} {stats['r_split'][i]:8.4f}"
                     + (f" {stats['cc_half_unscaled'][i]:16.4f}" if before else "")
                     + ("  <- CC1/2 undefined or below 0: no usable signal" if not stats["cc_half"][i] >= 0 else ""))
    return "\n".join(lines)
