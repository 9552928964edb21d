"""The scale step (DESIGN §10): the observation table built from ``integrate.nxs`` (row filters,
background, and for ``isotropic`` the per-frame scale of the isotropic profile), and for
``model`` the fit of a·d·(b·I + c) → ``scale.nxs``. ``merge`` applies what this step stored, so
``scale`` → ``merge`` → ``map`` rebuild the map after a refit."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace

import h5py
import numpy as np

from ..errors import GridError
from ..io.nexus import atomic_nexus, create_step_entry
from ..observations import isotropic_frame_scale
from ..scaling import ScaleOptions
from ..scaling.fit import apply_scales
from .importing import load_experiment
from .integrate import load_integration, observation_tables
from .keys import cached_step, make_key, step_path, stored_digest

__all__ = ["ScaleStepParameters", "ScaleResult", "run_scale", "scaled_tables", "fit_observations",
           "apply_scales_to_other", "write_scale", "read_scale", "cc_half_before_after",
           "load_scaled_observations"]

logger = logging.getLogger(__name__)

SCALE_MODES = ("model", "isotropic", "none")


@dataclass(frozen=True)
class ScaleStepParameters:
    """mode: ``model`` (fit a·d·(b·I + c) with ``options``), ``isotropic`` (per-frame b from the
    isotropic profile only) or ``none``; min_pixels, min_counts: observations with fewer
    pixel-frames or counts are dropped before scaling and merging."""

    mode: str = "model"
    min_pixels: int = 1
    min_counts: int = 0
    options: ScaleOptions = field(default_factory=ScaleOptions)

    def __post_init__(self):
        if self.mode not in SCALE_MODES:
            raise GridError(f"unknown scale mode {self.mode!r} ({', '.join(SCALE_MODES)})")

    def key_parameters(self) -> dict:
        return {"mode": self.mode, "min_pixels": self.min_pixels, "min_counts": self.min_counts,
                "scaling": asdict(self.options) if self.mode == "model" else None}


@dataclass
class ScaleResult:
    """What the step decided: the parameters, the fitted model (``model`` mode), the per-frame
    factors (``isotropic`` mode: batch → (n_frames,)), and the tables it was made from (in memory
    only, so that merging right after does not build them again); ``scaled``: the scaled tables
    once made, with the integration they came from (the absolute step and merge both use them)."""

    parameters: ScaleStepParameters
    fit: object | None = None
    frame_scale: dict = field(default_factory=dict)
    tables: dict | None = None
    s_range: tuple | None = None   # |s| range of c's nodes, to rebuild a stored model's design
    scaled: tuple | None = field(default=None, repr=False)


def run_scale(out: str, params: ScaleStepParameters = ScaleStepParameters(), overwrite: bool = False,
              progress: bool = True, experiment=None, integration=None, backend=None,
              release_rows: bool = False) -> ScaleResult:
    """Scale ``OUT/integrate.nxs`` (or ``integration``, that file already loaded) into
    ``OUT/scale.nxs``, or reuse that file. ``release_rows``: once the observation tables are made
    (kept in the result's ``tables``), ``integration``'s accumulator rows are dropped from it
    before the fit (``process`` does this: 80 MB less at the fit's peak on the 1M preset)."""
    if experiment is None:
        experiment = load_experiment(out)
    if integration is None:
        integration = load_integration(out)
    key = make_key("scale", params.key_parameters(),
                   {"import": stored_digest(out, "import"), "integrate": stored_digest(out, "integrate")})

    def compute():
        frame_scale = isotropic_frame_scale(integration.profiles) if params.mode == "isotropic" else {}
        tables = observation_tables(experiment, integration, frame_scale, params.min_pixels, params.min_counts)
        if release_rows:
            integration.diffuse = integration.excluded = None
        fit = None
        if params.mode == "model":
            fit = fit_observations(experiment, tables["observations"], integration.ndiv, params.options, progress)
        return ScaleResult(params, fit, frame_scale, tables)

    return cached_step(out, "scale", key, overwrite, compute,
                       lambda path, result, k: write_scale(path, result, k, backend),
                       read_scale)


def scaled_tables(experiment, integration, result: ScaleResult) -> dict:
    """{"observations", "excluded"}: the tables with the step's scales applied, and "unscaled"
    (the observations before the fitted model; None unless ``model``). Made once per result and
    integration."""
    if result.scaled is not None and result.scaled[0] is integration:
        return result.scaled[1]
    result.scaled = (integration, _scaled_tables(experiment, integration, result))
    return result.scaled[1]


def _scaled_tables(experiment, integration, result: ScaleResult) -> dict:
    p = result.parameters
    tables = result.tables or observation_tables(experiment, integration, result.frame_scale, p.min_pixels,
                                                 p.min_counts)
    if result.fit is None:
        return {"observations": tables["observations"], "excluded": tables["excluded"], "unscaled": None}
    fit = result.fit
    if fit.design is None:  # a model read from scale.nxs: its design is rebuilt for the table only now
        design = _scale_design(experiment, tables["observations"], integration.ndiv, p.options, result.s_range)[0]
        fit = replace(fit, design=design)
    excluded = tables["excluded"]
    if excluded:
        excluded = apply_scales_to_other(experiment, excluded, fit, integration.ndiv, p.options)
    return {"observations": apply_scales(tables["observations"], fit), "excluded": excluded,
            "unscaled": tables["observations"]}


def _scale_design(experiment, table, ndiv, options, s_range=None):
    from ..masking.layout import layout_for_size  # noqa: PLC0415
    from ..grid import pack_voxels  # noqa: PLC0415
    from ..merge import map_to_asu  # noqa: PLC0415
    from ..scaling import build_design  # noqa: PLC0415

    panel = experiment.sweeps[0].panel
    layout = layout_for_size(panel.image_size)
    n_frames = {s.batch: s.scan.num_frames for s in experiment.sweeps}
    design = build_design(table, sorted(n_frames), n_frames, options, panel.image_size,
                          None if layout is None else layout.module_ids(), s_range)
    voxels = np.column_stack([table["H"], table["K"], table["L"]])
    asu, _ = map_to_asu(voxels, experiment.space_group, ndiv)
    return design, pack_voxels(asu), sorted(n_frames)


def fit_observations(experiment, table, ndiv, options, progress=True):
    """Fit the scaling model to an observation table (all sweeps of ``experiment``)."""
    from ..scaling import fit_scales  # noqa: PLC0415

    design, groups, batches = _scale_design(experiment, table, ndiv, options)
    fit = fit_scales(table, groups, design, options, batches, progress)
    logger.info("%s", fit.summary())
    return fit


def apply_scales_to_other(experiment, table, fit, ndiv, options):
    """Apply a fitted model to another table of the same sweeps (the Bragg/excluded one)."""
    from ..scaling.fit import ScaleFit  # noqa: PLC0415

    design, _, _ = _scale_design(experiment, table, ndiv, options, fit.design.ranges["s"])
    return apply_scales(table, ScaleFit(fit.params, design, fit.weights))


def write_scale(path, result: ScaleResult, key, backend=None):
    """scale.nxs: the mode, and the model values with their uncertainties, χ², the rounds and the
    loss history (``model``) or the per-frame factors (``isotropic``)."""
    with atomic_nexus(path, overwrite=True) as handle:
        entry = create_step_entry(handle, "scale", key, backend)
        entry.attrs["mode"] = result.parameters.mode
        if result.frame_scale:
            g = entry.create_group("frame_scale")
            for batch, values in result.frame_scale.items():
                g[f"batch_{batch}"] = values
                g[f"batch_{batch}"].attrs["units"] = "1"
        if result.fit is not None:
            _write_model(entry, result.fit)


def _write_model(entry, fit):
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


def read_scale(path) -> ScaleResult:
    """The ScaleResult stored in a scale.nxs. A model comes without its design (None): that needs
    the observation table, and ``scaled_tables`` rebuilds it only when the scales are applied."""
    from ..io.nexus import read_parameters  # noqa: PLC0415

    stored = read_parameters(path)["parameters"]
    options = ScaleOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in (stored["scaling"] or {}).items()})
    params = ScaleStepParameters(stored["mode"], stored["min_pixels"], stored["min_counts"], options)
    with h5py.File(path, "r") as handle:
        entry = handle["entry"]
        frame_scale = {int(k.split("_")[1]): v[()] for k, v in entry["frame_scale"].items()} \
            if "frame_scale" in entry else {}
        if "model" not in entry:
            return ScaleResult(params, None, frame_scale)
        g = entry["model"]
        return ScaleResult(params, _read_model(g), frame_scale, None, tuple(g.attrs["s_range"]))


def _read_model(g):
    from ..scaling.fit import RoundReport, ScaleFit  # noqa: PLC0415
    from ..scaling.model import ASurface, BScale, COffset, DRegions, ScaleParams  # noqa: PLC0415

    values = ScaleParams(BScale(g["b"][()]), COffset(g["c"][()]), ASurface(g["a"][()]), DRegions(g["d"][()]))
    sigmas = ScaleParams(BScale(g["b_sigma"][()]), COffset(g["c_sigma"][()]), ASurface(g["a_sigma"][()]),
                         DRegions(g["d_sigma"][()])) if "b_sigma" in g else None
    rounds = []
    if "rounds" in g:
        r = {k: g["rounds"][k][()] for k in g["rounds"]}
        rounds = [RoundReport(None if np.isnan(r["k"][i]) else float(r["k"][i]), int(r["rejected"][i]),
                              int(r["iterations"][i]), float(r["chi2"][i]), float(r["loss"][i]),
                              bool(r["converged"][i]), bool(r["skipped"][i])) for i in range(len(r["k"]))]
    return ScaleFit(values, None, json.loads(g.attrs["penalty_weights"]), list(g["loss_history"][()]),
                    float(g.attrs["chi2_before"]), float(g.attrs["chi2_after"]),
                    float(g.attrs.get("penalty_after", np.nan)), int(g.attrs["iterations"]),
                    bool(g.attrs["converged"]), int(g.attrs["rejected"]), str(g.attrs["method"]), sigmas, rounds)


def cc_half_before_after(experiment, integration, result: ScaleResult) -> str:
    """CC½ per shell of the observations before and after the step's scales (default merge
    settings), as text."""
    from ..merge import merge  # noqa: PLC0415

    tables = scaled_tables(experiment, integration, result)
    crystal = experiment.sweeps[0].crystal
    metric = crystal.reciprocal_metric
    unscaled = tables["unscaled"] if tables["unscaled"] is not None else tables["observations"]
    before = merge(unscaled, experiment.space_group, integration.ndiv, metric)[1]
    after = merge(tables["observations"], experiment.space_group, integration.ndiv, metric)[1]
    lines = ["CC1/2 per shell, default merge settings:", "  d_min  unscaled    scaled"]
    for d_min, cc_before, cc_after in zip(before["d_min"], before["cc_half"], after["cc_half"]):
        lines.append(f"{d_min:7.2f} {cc_before:9.4f} {cc_after:9.4f}")
    return "\n".join(lines)


def load_scaled_observations(out: str) -> dict:
    """The observation table of a processed folder with the scales of its scale.nxs applied (what
    the merge step merges)."""
    experiment, integration = load_experiment(out), load_integration(out)
    stored_digest(out, "scale")  # names a missing or unfinished file
    result = read_scale(step_path(out, "scale"))
    return scaled_tables(experiment, integration, result)["observations"]
