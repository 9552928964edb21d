"""Fitting the scaling model: rounds of outlier rejection around one of three solvers.

* ``joint`` (default): Gauss–Newton / Levenberg–Marquardt on the pure residual with Î eliminated
  per voxel (:mod:`.joint`, :mod:`.gauss_newton`); parameter uncertainties from its normal matrix.
* ``lbfgs``: the quasi-Newton joint fit with optax (:mod:`.lbfgs`), for experiments.
* ``alternating``: the component-wise baseline of mdx-lib and mdx2 (:mod:`.alternating`).

The loss is in :mod:`.loss`. Outlier rounds reject |rᵢ| > k·rms (k = 10, then 5), two-sided, and
refit from the previous round's model; a round that rejects nothing is skipped.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
from ..progress import progress_bar

from ..errors import GpudiffuseError
from .loss import component_values, data_chi2, data_curvature, penalty_loss, relative_weights
from .model import COffset, Design, ScaleOptions, ScaleParams, initial_params, penalty_operators

__all__ = ["ScaleFit", "RoundReport", "fit_scales", "apply_scales", "component_values"]

logger = logging.getLogger(__name__)

# the normal matrix is dense (n × n float64): 4000 control points are 128 MB and a factorisation in
# about a second on two cores
MAX_GAUSS_NEWTON_VALUES = 4000


@dataclass
class RoundReport:
    """One fit round: outlier threshold k (None for the first round), observations rejected by it,
    iterations, data χ² and total loss at its end, and whether it converged."""

    k: float | None
    rejected: int
    iterations: int
    chi2: float
    loss: float
    converged: bool
    skipped: bool = False


@dataclass
class ScaleFit:
    """Result of a scaling fit. ``chi2_after`` and ``penalty_after`` are the two parts of the loss
    minimised (dimensionless), for the final model on the observations kept by the outlier rounds;
    ``history`` is the total loss at the start of each iteration; ``sigmas`` the standard
    uncertainties of the model values (same layout as ``params``; Gauss–Newton only, else None)."""

    params: ScaleParams
    design: Design
    weights: dict
    history: list = field(default_factory=list)
    chi2_before: float = float("nan")
    chi2_after: float = float("nan")
    penalty_after: float = float("nan")
    iterations: int = 0
    converged: bool = False
    rejected: int = 0
    method: str = "joint"
    sigmas: ScaleParams | None = None
    rounds: list = field(default_factory=list)

    def summary(self) -> str:
        """One line: χ² before → after, iterations per round, convergence, outliers rejected."""
        parts = []
        for r in self.rounds:
            name = "start" if r.k is None else f"k={r.k:g}"
            parts.append(f"{name}: nothing rejected, skipped" if r.skipped else
                         f"{name}: {r.rejected} rejected, {r.iterations} it" if r.k is not None else
                         f"{name}: {r.iterations} it")
        rounds = f" (rounds {'; '.join(parts)})" if parts else ""
        return (f"scaling ({self.method}): chi2 {self.chi2_before:.6g} -> {self.chi2_after:.6g} in {self.iterations} "
                f"iterations{rounds}, {'converged' if self.converged else 'NOT converged'}, {self.rejected} "
                f"outliers rejected")


def _validate(table, batches):
    for key in ("rate", "sigma", "frame", "s", "ix", "iy"):
        values = np.asarray(table[key], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise GpudiffuseError(f"the observation table has NaN or infinite values in column {key!r}")
    present = set(np.unique(table["batch"]).tolist())
    for b in batches:
        if b not in present:
            raise GpudiffuseError(f"batch {b} has no observations: nothing to scale it with")
    if not np.any(np.asarray(table["sigma"]) > 0):
        raise GpudiffuseError("all observation weights are zero (every sigma is zero or negative)")


class _Joint:
    """The Gauss–Newton problem behind the round interface (θ and the normal matrix carried over)."""

    def __init__(self, params, design, ops, lam, intensity, weight, group, n_groups, options):
        from .joint import JointProblem  # noqa: PLC0415

        self.problem = JointProblem(design, ops, lam, intensity, weight, group, n_groups, options)
        self.theta = self.problem.theta_of(params)

    def round(self, params, weight, keep, options, report):
        result = self.problem.fit(self.theta, weight, keep, options.max_iterations, report)
        self.theta, self.loss = result.theta, result.loss
        return self.problem.params_of(result.theta), result.history, result.iterations, result.converged

    def evaluate(self, params, weight, keep):
        return self.problem.evaluate(self.theta, weight, keep)


class _Other:
    """L-BFGS or the alternating baseline behind the round interface; the loss in NumPy."""

    def __init__(self, design, ops, lam, intensity, group, n_groups, curvature):
        self.args = (design, ops, lam, intensity, group, n_groups, curvature)

    def round(self, params, weight, keep, options, report):
        from .alternating import fit_alternating  # noqa: PLC0415
        from .lbfgs import fit_lbfgs  # noqa: PLC0415

        design, ops, lam, intensity, group, n_groups, curvature = self.args
        weight = weight * keep
        if options.method == "alternating":
            return fit_alternating(params, design, ops, lam, intensity, weight, group, n_groups, options, report)
        return fit_lbfgs(params, design, ops, lam, intensity, weight, group, n_groups, options, curvature, report)

    def evaluate(self, params, weight, keep):
        design, ops, lam, intensity, group, n_groups, _ = self.args
        weight = weight * keep
        chi2, r = data_chi2(params, design, intensity, weight, group, n_groups)
        return float(chi2), float(penalty_loss(params, design, ops, lam)), r


def _weights(sigma):
    """1/σ² (0 where σ ≤ 0), without keeping σ (10⁷ rows: 80 MB)."""
    return np.where(sigma > 0, 1.0 / np.where(sigma > 0, sigma, 1.0) ** 2, 0.0)


def fit_scales(table: dict, groups: np.ndarray, design: Design, options: ScaleOptions = ScaleOptions(),
               batches=None, progress: bool = True) -> ScaleFit:
    """Fit the scaling model to an observation table.

    table : columns rate, sigma, batch, frame, s, ix, iy. groups : (N,) ASU voxel id of each row.
    progress : a progress bar per round (iterations, current loss); χ² per round is logged at INFO.
    """
    batches = sorted(set(np.unique(table["batch"]).tolist())) if batches is None else list(batches)
    _validate(table, batches)
    # work in units of the median |rate| so that c and Î are O(1) like a, b and d (conditioning)
    unit = float(np.median(np.abs(table["rate"]))) or 1.0
    intensity = np.asarray(table["rate"], dtype=np.float64) / unit
    weight = _weights(np.asarray(table["sigma"], dtype=np.float64) / unit)
    _, group = np.unique(groups, return_inverse=True)
    n_groups = int(group.max()) + 1
    group = group.astype(np.int32 if n_groups < 2**31 else np.int64)  # 10⁷ rows: 40 MB less
    ops = penalty_operators(design)
    curvature = data_curvature(design, intensity, weight, group, n_groups)
    lam = relative_weights(design, ops, options, curvature)
    params = initial_params(design)
    keep = weight > 0
    n_values = design.n_b + design.n_c + design.n_a + design.n_regions
    if options.method == "joint" and n_values > MAX_GAUSS_NEWTON_VALUES:
        logger.warning("scaling: %d control points are more than the dense Gauss-Newton solver takes (%d); "
                       "fitting with L-BFGS instead (fewer frame nodes: raise --a-frames)", n_values,
                       MAX_GAUSS_NEWTON_VALUES)
        options = dataclasses.replace(options, method="lbfgs")
    # the joint fit's first loss is at the starting model: χ² before is read from it, not recomputed
    chi2_before = None if options.method == "joint" else float(data_chi2(params, design, intensity, weight, group,
                                                                          n_groups)[0])
    if options.method == "joint":
        solver = _Joint(params, design, ops, lam, intensity, weight, group, n_groups, options)
    else:
        solver = _Other(design, ops, lam, intensity, group, n_groups, curvature)
    history, rounds, r = [], [], None
    for round_index, k in enumerate((None, *options.outlier_rounds)):
        bad = np.zeros_like(keep)
        if k is not None:
            normalised = r * np.sqrt(weight)
            rms = np.sqrt(np.mean(normalised[keep] ** 2))
            bad = keep & (np.abs(normalised) > k * rms)
            keep &= ~bad
            logger.info("scaling: outlier round k=%g rejected %d observations", k, int(bad.sum()))
            if not bad.any():  # the same observations as the last fit: its model stands
                rounds.append(dataclasses.replace(rounds[-1], k=k, rejected=0, iterations=0, skipped=True))
                continue
        with progress_bar(progress, total=options.max_iterations, unit="it", leave=False,
                          desc=f"scale ({options.method}) round {round_index}") as bar:
            def report(loss):
                bar.update()
                bar.set_postfix_str(f"loss {loss:.7g}", refresh=False)

            params, hist, its, ok = solver.round(params, weight, keep, options, report)
        if chi2_before is None:
            chi2_before = hist[0] - float(penalty_loss(initial_params(design), design, ops, lam))
        history += hist
        if options.method == "joint" and round_index == len(options.outlier_rounds):
            # the last round: no residuals needed; the solver's loss at θ is χ² + penalty
            penalty = float(penalty_loss(params, design, ops, lam))
            chi2 = solver.loss - penalty
        else:
            chi2, penalty, r = solver.evaluate(params, weight, keep)
        rounds.append(RoundReport(k, int(bad.sum()), its, chi2, chi2 + penalty, ok))
        logger.info("scaling (%s) round %d: χ² = %.6g, loss %.9g after %d iterations (%s)", options.method,
                    round_index, chi2, chi2 + penalty, its, "converged" if ok else "NOT converged")
        if not ok:
            logger.warning("scaling (%s) round %d did not converge within %d iterations; keeping the last good "
                           "model (raise the limit with --scale-iterations)", options.method, round_index,
                           options.max_iterations)
    final = rounds[-1]
    sigmas = None
    if options.method == "joint":
        dof = max(int(keep.sum()) - n_groups - solver.problem.basis.n_theta, 1)
        sigmas = solver.problem.uncertainties(solver.theta, final.chi2 / dof)
        sigmas = sigmas._replace(c=COffset(sigmas.c.values * unit))
    params = params._replace(c=COffset(params.c.values * unit))
    return ScaleFit(params, design, lam, history, chi2_before, final.chi2, final.loss - final.chi2,
                    sum(r.iterations for r in rounds), all(r.converged for r in rounds),
                    int(np.sum(~keep & (weight > 0))), options.method, sigmas, rounds)


def apply_scales(table: dict, fit: ScaleFit) -> dict:
    """Scaled copy of ``table``: rate → I_obs/(a·b·d) − c/b, sigma → σ/(a·b·d)."""
    a, b, c, d = component_values(fit.params, fit.design)
    out = dict(table)
    out["rate"] = np.asarray(table["rate"]) / (a * b * d) - c / b
    out["sigma"] = np.asarray(table["sigma"]) / (a * b * d)
    out["scale"] = a * b * d
    return out
