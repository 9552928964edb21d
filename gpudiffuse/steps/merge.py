"""The merge step (DESIGN §11): the scaled observation tables merged into the asymmetric unit,
with outlier rejection and per-shell statistics → ``merged.nxs`` (the file contract of DESIGN §13:
``/entry/merged`` h, k, l, intensity, sigma, n; ``/entry/bragg`` the excluded pixels merged alike;
``/entry/statistics`` per shell)."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import gemmi
import h5py
import numpy as np

from ..errors import GridError
from ..io.nexus import atomic_nexus, create_step_entry
from ..merge import MergeParameters, VoxelGroups, merge
from .absolute import ABSOLUTE_UNITS, apply_absolute, format_final_profile, read_absolute
from .importing import load_experiment
from .integrate import load_integration
from .keys import cached_step, make_key, stored_digest, step_path

__all__ = ["MergeResult", "run_merge", "write_merged", "read_merged", "load_merged", "format_statistics",
           "INTENSITY_UNITS"]

logger = logging.getLogger(__name__)

# the per-voxel rate of DESIGN §8, counts / Σ(K·t) with K = Ω·P·E·A, divided by the dimensionless
# scale factors; with absolute.nxs (DESIGN §12) electron units per unit cell instead
INTENSITY_UNITS = "counts / (s sr), relative scale"


@dataclass
class MergeResult:
    """merged, bragg: ASU voxel columns (``merge.merge``; bragg None without excluded pixels);
    statistics: per-shell arrays; rejected: outlier observations; scale_mode: the scale step's
    mode; ndiv, space_group (gemmi), unit_cell (a, b, c in Å, α, β, γ in °); units: of the
    intensities (relative, or electron units per cell after the absolute step)."""

    merged: dict
    statistics: dict
    rejected: int
    bragg: dict | None
    scale_mode: str
    ndiv: tuple
    space_group: object
    unit_cell: tuple
    units: str = INTENSITY_UNITS


def run_merge(out: str, params: MergeParameters = MergeParameters(), overwrite: bool = False, experiment=None,
              integration=None, scale=None, backend=None, absolute=None) -> MergeResult:
    """Merge ``OUT/integrate.nxs`` with the scales of ``OUT/scale.nxs`` (and, when the folder holds
    one, the absolute scale of ``OUT/absolute.nxs``) into ``OUT/merged.nxs``, or reuse that file.
    ``experiment``, ``integration``, ``scale``, ``absolute``: those files already loaded."""
    from .scale import read_scale, scaled_tables  # noqa: PLC0415

    if experiment is None:
        experiment = load_experiment(out)
    absolute_path = step_path(out, "absolute")
    absolute_digest = stored_digest(out, "absolute") if os.path.exists(absolute_path) else None
    key = make_key("merge", asdict(params), {"import": stored_digest(out, "import"),
                                            "integrate": stored_digest(out, "integrate"),
                                            "scale": stored_digest(out, "scale"),
                                            "absolute": absolute_digest})

    def compute():
        nonlocal integration, absolute
        if integration is None:
            integration = load_integration(out)
        result = scale or read_scale(step_path(out, "scale"))
        tables = scaled_tables(experiment, integration, result)
        absolute = (absolute or read_absolute(absolute_path)) if absolute_digest else None
        if absolute is None:
            return merge_tables(experiment, tables, integration.ndiv, params, result.parameters.mode)
        logger.info("merging on the absolute scale of absolute.nxs: k = %.6g, I_inc(|s|) subtracted",
                    absolute.scale.k)
        merged = merge_tables(experiment, apply_absolute(tables, absolute), integration.ndiv, params,
                              result.parameters.mode, ABSOLUTE_UNITS)
        logger.info("\n%s", format_final_profile(merged.merged, absolute))
        return merged

    return cached_step(out, "merge", key, overwrite, compute,
                       lambda path, result, k: write_merged(path, result, k, backend), read_merged)


def merge_tables(experiment, tables: dict, ndiv, params: MergeParameters, scale_mode: str,
                 units: str = INTENSITY_UNITS) -> MergeResult:
    crystal = experiment.sweeps[0].crystal
    space_group = experiment.space_group
    metric = crystal.reciprocal_metric
    groups = VoxelGroups.of(tables["observations"], space_group, ndiv, params.anomalous)
    merged, stats, rejected = merge(tables["observations"], space_group, ndiv, metric, params, groups=groups)
    if not len(merged["intensity"]):
        raise GridError("no voxel was observed: check --dmin, the mask and the frame range")
    if tables["unscaled"] is not None:
        # CC½ before scaling, same rows, shells and half-sets (DESIGN §10: report χ² and CC½ before/after)
        same_rows = all(np.array_equal(tables["unscaled"][c], tables["observations"][c]) for c in "HKL")
        stats["cc_half_unscaled"] = merge(tables["unscaled"], space_group, ndiv, metric, params,
                                          groups=groups if same_rows else None)[1]["cc_half"]
    bragg = merge(tables["excluded"], space_group, ndiv, metric, params)[0] if tables["excluded"] else None
    return MergeResult(merged, stats, rejected, bragg, scale_mode, tuple(ndiv), space_group,
                       tuple(float(x) for x in crystal.unit_cell.parameters), units)


def write_merged(path: str, result: MergeResult, key: dict, backend=None) -> None:
    with atomic_nexus(path, overwrite=True) as handle:
        entry = create_step_entry(handle, "merge", key, backend)
        _write_voxels(entry, "merged", result.merged, result)
        entry["merged"].attrs["rejected_outliers"] = result.rejected
        entry["merged"].attrs["scale"] = result.scale_mode
        if result.bragg is not None:
            _write_voxels(entry, "bragg", result.bragg, result)
        g = entry.create_group("statistics")
        g.attrs["NX_class"] = "NXcollection"
        for name, values in result.statistics.items():
            g[name] = values


def _write_voxels(entry, name, voxels, result):
    g = entry.create_group(name)
    g.attrs["NX_class"] = "NXcollection"
    for column in ("h", "k", "l", "intensity", "sigma", "intensity_half1", "intensity_half2"):
        g.create_dataset(column, data=np.asarray(voxels[column], dtype=np.float64))
    g.create_dataset("n", data=np.asarray(voxels["n"], dtype=np.int64))
    g.create_dataset("s", data=voxels["s"])
    g["s"].attrs["units"] = "1/angstrom"
    for column in ("h", "k", "l"):
        g[column].attrs["units"] = "r.l.u."
    for column in ("intensity", "sigma", "intensity_half1", "intensity_half2"):
        g[column].attrs["units"] = result.units
    g.attrs["ndiv"] = np.asarray(result.ndiv, dtype=np.int64)
    g.attrs["space_group"] = result.space_group.hm
    g.attrs["unit_cell"] = np.asarray(result.unit_cell, dtype=np.float64)


def _read_voxels(g, ndiv) -> dict:
    voxels = {k: g[k][()] for k in ("h", "k", "l", "intensity", "sigma", "n", "s", "intensity_half1",
                                    "intensity_half2")}
    for fractional, index, n in zip("hkl", "HKL", ndiv):  # h = H/n exactly representable back
        voxels[index] = np.rint(voxels[fractional] * n).astype(np.int64)
    return voxels


def read_merged(path: str) -> MergeResult:
    with h5py.File(path, "r") as handle:
        entry = handle["entry"]
        g = entry["merged"]
        ndiv = tuple(int(n) for n in g.attrs["ndiv"])
        merged = _read_voxels(g, ndiv)
        bragg = _read_voxels(entry["bragg"], ndiv) if "bragg" in entry else None
        stats = {k: v[()] for k, v in entry["statistics"].items()}
        return MergeResult(merged, stats, int(g.attrs["rejected_outliers"]), bragg, str(g.attrs["scale"]), ndiv,
                           gemmi.find_spacegroup_by_name(str(g.attrs["space_group"])),
                           tuple(float(x) for x in g.attrs["unit_cell"]), str(g["intensity"].attrs["units"]))


def load_merged(out: str) -> MergeResult:
    stored_digest(out, "merge")  # names a missing or unfinished file
    return read_merged(step_path(out, "merge"))


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
