"""The find-peaks step (pass 1, DESIGN §7 "peak cloud"): strong pixels of every frame, the
automatic threshold per sweep, persistently hot pixels, and the fitted δ cloud → ``peaks.nxs``."""

from __future__ import annotations

import json
from dataclasses import asdict

import h5py
import numpy as np

from ..io.nexus import atomic_nexus, create_step_entry
from ..masking.peaks import PeakModel, PeakParameters, PeakSearch, ThresholdProfile, find_peaks
from .importing import load_experiment
from .keys import cached_step, make_key, stored_digest, step_path
from .limits import resolve_dmin

__all__ = ["run_find_peaks", "load_peaks", "write_peaks", "read_peaks"]


def run_find_peaks(out: str, params: PeakParameters, dmin: float | None = None, overwrite: bool = False,
                   progress: bool = True, experiment=None) -> PeakSearch:
    """Find the peaks of ``OUT/experiment.nxs`` (or ``experiment``, already loaded from it) to
    ``dmin`` Å (None: the detector corner) into ``OUT/peaks.nxs``, or reuse that file."""
    if experiment is None:
        experiment = load_experiment(out, check_inputs=True)
    key = make_key("find_peaks", {"peaks": asdict(params), "dmin": dmin}, {"import": stored_digest(out, "import")})
    return cached_step(out, "find_peaks", key, overwrite,
                       lambda: find_peaks(experiment, params, resolve_dmin(experiment, dmin), progress),
                       write_peaks, read_peaks)


def load_peaks(out: str) -> PeakSearch:
    stored_digest(out, "find_peaks")  # names a missing or unfinished file
    return read_peaks(step_path(out, "find_peaks"))


def write_peaks(path: str, search: PeakSearch, key: dict) -> None:
    with atomic_nexus(path, overwrite=True) as handle:
        entry = create_step_entry(handle, "find_peaks", key)
        m = search.model
        g = entry.create_group("peak_model")
        g["offset"], g["covariance"] = m.offset, m.covariance
        for name in ("offset", "covariance"):
            g[name].attrs["units"] = "fractional Miller index" + ("²" if name == "covariance" else "")
        g.attrs["sigma_cutoff"], g.attrs["n_hot"], g.attrs["inlier_fraction"] = m.sigma_cutoff, m.n_hot, m.inlier_fraction
        g.attrs["warnings"] = json.dumps(list(m.warnings))
        for i, (thr, hot, info) in enumerate(zip(search.thresholds, search.hot_pixels, search.per_sweep)):
            s = entry.create_group(f"sweep_{i}")
            s["threshold_edges"], s["threshold_values"] = thr.edges, thr.values
            s["threshold_edges"].attrs["units"], s["threshold_values"].attrs["units"] = "1/angstrom", "counts"
            s.create_dataset("hot_pixels", data=hot.astype(np.uint8), compression="gzip")
            s.attrs["info"] = json.dumps(info)


def read_peaks(path: str) -> PeakSearch:
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
