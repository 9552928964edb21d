"""What a report shows, read from the step files of a processed folder (nothing is recomputed
from the frames except the one frame the mask figure draws)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import h5py
import numpy as np

from ..steps.keys import STEP_FILES, stored_digest, step_path

__all__ = ["ReportData", "load_report_data", "radial_profile", "voxel_s_grid"]


@dataclass
class ReportData:
    out: str
    experiment: object
    map: dict                # steps.export.read_map: intensity, sigma, axes (r.l.u.), ndiv, unit_cell, space_group
    merged: object           # steps.merge.MergeResult
    scale: dict              # mode, frame_scale, and (model mode) the model arrays, shapes, rounds, s_range
    peaks: object | None     # masking.peaks.PeakSearch, None without a Bragg mask
    provenance: dict         # step → {parameters, elapsed_s, command_line, device…}
    dmin: float
    absolute: object = None  # steps.absolute.AbsoluteResult when the folder holds absolute.nxs
    bragg_filter: dict | None = None  # the statistical filter's record in integrate.nxs, when it ran


def load_report_data(out: str) -> ReportData:
    from ..steps.export import read_map  # noqa: PLC0415
    from ..steps.find_peaks import read_peaks  # noqa: PLC0415
    from ..steps.importing import load_experiment  # noqa: PLC0415
    from ..steps.absolute import ABSOLUTE_UNITS, load_absolute  # noqa: PLC0415
    from ..steps.merge import load_merged  # noqa: PLC0415

    experiment = load_experiment(out)
    for step in ("integrate", "scale", "map"):
        stored_digest(out, step)  # names a missing or unfinished file
    merged = load_merged(out)
    provenance = {step: _provenance(step_path(out, step)) for step in STEP_FILES
                  if os.path.exists(step_path(out, step))}
    integrate_key = provenance["integrate"]["parameters"]
    peaks = read_peaks(step_path(out, "find_peaks")) if integrate_key["reads"].get("find_peaks") else None
    with h5py.File(step_path(out, "integrate"), "r") as handle:
        entry = handle["entry"]
        dmin = float(entry.attrs["dmin"])
        bragg_filter = _read_filter(entry["statistical_filter"], entry.attrs["ndiv"]) \
            if "statistical_filter" in entry else None
    absolute = load_absolute(out) if merged.units == ABSOLUTE_UNITS else None
    return ReportData(out, experiment, read_map(step_path(out, "map")), merged, _read_scale(step_path(out, "scale")),
                      peaks, provenance, dmin, absolute, bragg_filter)


def _read_filter(group, ndiv) -> dict:
    """Filter grid (files from before --filter-ndiv: the integration grid), per-wedge table and
    per-shell fractions of the statistical filter's record."""
    return {"filter_ndiv": tuple(int(n) for n in group.attrs.get("filter_ndiv", ndiv)),
            "per_wedge": {k: v[()] for k, v in group["per_wedge"].items()},
            "shells": {k: v[()] for k, v in group["shells"].items()},
            "moved_rows": int(group["moved_H"].shape[0])}


def _provenance(path: str) -> dict:
    with h5py.File(path, "r") as handle:
        attrs = dict(handle["entry"].attrs)
    out = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items() if k != "parameters"}
    out["parameters"] = json.loads(attrs["parameters"])
    return out


def _read_scale(path: str) -> dict:
    with h5py.File(path, "r") as handle:
        entry = handle["entry"]
        scale = {"mode": str(entry.attrs["mode"]),
                 "frame_scale": {int(k.split("_")[1]): v[()] for k, v in entry["frame_scale"].items()}
                 if "frame_scale" in entry else {}}
        if "model" in entry:
            g = entry["model"]
            for name in ("b", "c", "a", "d"):
                scale[name] = g[name][()]
                if f"{name}_sigma" in g:
                    scale[f"{name}_sigma"] = g[f"{name}_sigma"][()]
            for name in ("b", "c", "a"):
                scale[f"shape_{name}"] = tuple(int(n) for n in g[name].attrs["shape"])
            scale["rounds"] = {k: g["rounds"][k][()] for k in g["rounds"]} if "rounds" in g else {}
            scale["s_range"] = tuple(g.attrs["s_range"])
            scale["method"] = str(g.attrs["method"])
            scale["chi2"] = (float(g.attrs["chi2_before"]), float(g.attrs["chi2_after"]))
    return scale


def radial_profile(merged: dict, bins: int = 100) -> dict:
    """⟨I⟩ of the merged ASU voxels in ``bins`` equal-width |s| bins: {"s", "mean_I", "n"} (s in Å⁻¹)."""
    s, values = merged["s"], merged["intensity"]
    edges = np.linspace(0.0, s.max() * (1 + 1e-9), bins + 1)
    which = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
    n = np.bincount(which, minlength=bins)
    total = np.bincount(which, weights=values, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / n, np.nan)
    return {"s": 0.5 * (edges[:-1] + edges[1:]), "mean_I": mean, "n": n}


def voxel_s_grid(axes, unit_cell, fixed: dict) -> np.ndarray:
    """|s| (Å⁻¹) over a 2-D section of the map grid. ``axes``: the h, k, l axes (r.l.u.); ``fixed``:
    {axis number: value} of the one fixed index; returns the section's |s| (rows: first free axis)."""
    import gemmi  # noqa: PLC0415

    metric = np.array(gemmi.UnitCell(*unit_cell).reciprocal_metric_tensor().as_mat33().tolist())
    coords = [np.asarray([fixed[i]]) if i in fixed else np.asarray(axes[i]) for i in range(3)]
    h, k, l = np.meshgrid(*coords, indexing="ij")
    x = np.stack([h, k, l], -1)
    return np.sqrt(np.einsum("...i,ij,...j->...", x, metric, x)).squeeze()
