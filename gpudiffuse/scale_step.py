"""The scaling step of ``process`` (DESIGN §10): the design of an observation table from the
experiment, the fit, applying it to another table of the same sweeps, and ``scale.nxs``."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np

from .io.nexus import atomic_nexus, read_parameters, write_provenance
from .scaling import ScaleOptions
from .scaling.fit import apply_scales

__all__ = ["fit_observations", "apply_scales_to_other", "write_scale", "read_scale"]

logger = logging.getLogger(__name__)


def _scale_design(experiment, table, ndiv, options, s_range=None):
    from .masking.layout import layout_for_size  # noqa: PLC0415
    from .merge import _pack, map_to_asu  # noqa: PLC0415
    from .scaling import build_design  # noqa: PLC0415

    panel = experiment.sweeps[0].panel
    layout = layout_for_size(panel.image_size)
    n_frames = {s.batch: s.scan.num_frames for s in experiment.sweeps}
    design = build_design(table, sorted(n_frames), n_frames, options, panel.image_size,
                          None if layout is None else layout.module_ids(), s_range)
    voxels = np.column_stack([table["H"], table["K"], table["L"]])
    asu, _ = map_to_asu(voxels, experiment.space_group, ndiv)
    return design, _pack(asu), sorted(n_frames)


def fit_observations(experiment, table, ndiv, options, progress=True):
    """Fit the scaling model to an observation table (all sweeps of ``experiment``)."""
    from .scaling import fit_scales  # noqa: PLC0415

    design, groups, batches = _scale_design(experiment, table, ndiv, options)
    fit = fit_scales(table, groups, design, options, batches, progress)
    logger.info("%s", fit.summary())
    return fit


def apply_scales_to_other(experiment, table, fit, ndiv, options):
    """Apply a fitted model to another table of the same sweeps (the Bragg/excluded one)."""
    from .scaling.fit import ScaleFit  # noqa: PLC0415

    design, _, _ = _scale_design(experiment, table, ndiv, options, fit.design.ranges["s"])
    return apply_scales(table, ScaleFit(fit.params, design, fit.weights))


def write_scale(path, fit, parameters, backend):
    """scale.nxs: the model values with their uncertainties, χ², the rounds and the loss history."""
    with atomic_nexus(path, overwrite=True) as handle:
        entry = handle.create_group("entry")
        write_provenance(entry, "scale", parameters, backend)
        g = entry.create_group("model")
        g.attrs["NX_class"] = "NXcollection"
        for name in ("b", "c", "a", "d"):
            g[name] = getattr(fit.params, name).values
        g["b"].attrs["shape"], g["c"].attrs["shape"], g["a"].attrs["shape"] = (
            fit.design.shape_b, fit.design.shape_c, fit.design.shape_a)
        # b, a, d are dimensionless factors; c is in the unit of the observation table's rate
        for name in ("b", "a", "d"):
            g[name].attrs["units"] = "1"
        g["c"].attrs["units"] = "rate (counts per unit of corrected exposure, as the observation table)"
        if fit.sigmas is not None:  # standard uncertainties from the Gauss-Newton normal matrix
            for name in ("b", "c", "a", "d"):
                g[f"{name}_sigma"] = getattr(fit.sigmas, name).values
                g[f"{name}_sigma"].attrs["units"] = g[name].attrs["units"]
        g["loss_history"] = np.asarray(fit.history, dtype=np.float64)
        for key in ("chi2_before", "chi2_after", "penalty_after", "iterations", "converged", "rejected", "method"):
            g.attrs[key] = getattr(fit, key)
        rounds = g.create_group("rounds")
        rounds.attrs["NX_class"] = "NXcollection"
        rounds["k"] = np.array([np.nan if r.k is None else r.k for r in fit.rounds], dtype=np.float64)
        for key, dtype in (("rejected", np.int64), ("iterations", np.int64), ("chi2", np.float64),
                           ("loss", np.float64), ("converged", bool), ("skipped", bool)):
            rounds[key] = np.array([getattr(r, key) for r in fit.rounds], dtype=dtype)
        g.attrs["penalty_weights"] = json.dumps(fit.weights)
        g.attrs["s_range"] = np.asarray(fit.design.ranges["s"], dtype=np.float64)


def read_scale(path, experiment, table, ndiv):
    """The fit stored in a scale.nxs, with its design rebuilt for ``table``."""
    from .scaling.fit import RoundReport, ScaleFit  # noqa: PLC0415
    from .scaling.model import ASurface, BScale, COffset, DRegions, ScaleParams  # noqa: PLC0415

    params = read_parameters(path)
    options = ScaleOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in params["scaling"].items()})
    with h5py.File(path, "r") as handle:
        g = handle["entry/model"]
        design, _, _ = _scale_design(experiment, table, ndiv, options, tuple(g.attrs["s_range"]))
        values = ScaleParams(BScale(g["b"][()]), COffset(g["c"][()]), ASurface(g["a"][()]), DRegions(g["d"][()]))
        sigmas = ScaleParams(BScale(g["b_sigma"][()]), COffset(g["c_sigma"][()]), ASurface(g["a_sigma"][()]),
                             DRegions(g["d_sigma"][()])) if "b_sigma" in g else None
        rounds = []
        if "rounds" in g:
            r = {k: g["rounds"][k][()] for k in g["rounds"]}
            rounds = [RoundReport(None if np.isnan(r["k"][i]) else float(r["k"][i]), int(r["rejected"][i]),
                                  int(r["iterations"][i]), float(r["chi2"][i]), float(r["loss"][i]),
                                  bool(r["converged"][i]), bool(r["skipped"][i])) for i in range(len(r["k"]))]
        fit = ScaleFit(values, design, json.loads(g.attrs["penalty_weights"]), list(g["loss_history"][()]),
                       float(g.attrs["chi2_before"]), float(g.attrs["chi2_after"]),
                       float(g.attrs.get("penalty_after", np.nan)), int(g.attrs["iterations"]),
                       bool(g.attrs["converged"]), int(g.attrs["rejected"]), str(g.attrs["method"]), sigmas, rounds)
    return fit
