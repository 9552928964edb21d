"""Fitting the scaling model: the joint JAX/optax fit and the alternating baseline.

Loss = Σᵢ wᵢ (Iᵢ − aᵢdᵢ(bᵢ Î_v(i) + cᵢ))² + Σ_k λ_k ‖P_k v_k‖², with Î_v the weighted-mean merged
intensity of ASU voxel v under the current model, profiled out in closed form
(Î_v = Σ w g (I − h) / Σ w g², g = a·d·b, h = a·d·c). λ_k = multiplier_k × trace(data term of
component k) / trace(P_kᵀP_k), both traces taken at the starting model.

The joint fit runs optax's L-BFGS (zoom line search) under ``jax.jit`` in float64 and stops
when the loss falls by less than ``tolerance`` (relative) per iteration over the last ten. Outlier rounds reject
|rᵢ| > k·rms (k = 10, then 5), two-sided, and refit. The alternating baseline solves one
component at a time by weighted linear least squares (how mdx-lib and mdx2 do it).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from tqdm import tqdm

from ..errors import GpudiffuseError
from .model import (ASurface, BScale, COffset, Design, DRegions, ScaleOptions, ScaleParams, effective,
                    initial_params, penalty_operators)

__all__ = ["ScaleFit", "fit_scales", "apply_scales", "component_values"]

logger = logging.getLogger(__name__)


@dataclass
class ScaleFit:
    """Result of a scaling fit. ``chi2_after`` and ``penalty_after`` are the two parts of the loss
    minimised (dimensionless), for the final model on the observations kept by the outlier rounds;
    ``history`` is the total loss at the start of each iteration."""

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


def component_values(params: ScaleParams, design: Design, xp=np):
    """Per-observation a, b, c, d of the effective model."""
    b, c, a, d = effective(params, design, xp)
    bi = (b[design.ib] * design.wb).sum(axis=1)
    ci = (c[design.ic] * design.wc).sum(axis=1)
    ai = (a[design.ia] * design.wa).sum(axis=1)
    return ai, bi, ci, d[design.region]


def _merged(intensity, weight, group, n_groups, g, h, xp=np):
    if xp is np:
        num = np.bincount(group, weights=weight * g * (intensity - h), minlength=n_groups)
        den = np.bincount(group, weights=weight * g * g, minlength=n_groups)
    else:
        import jax  # noqa: PLC0415

        num = jax.ops.segment_sum(weight * g * (intensity - h), group, num_segments=n_groups)
        den = jax.ops.segment_sum(weight * g * g, group, num_segments=n_groups)
    return num / xp.where(den > 0, den, 1.0)


def _apply(op, values, xp=np):
    """op @ values for a scipy sparse ``op``; under JAX as a segment sum over its nonzeros."""
    if xp is np:
        return op @ values
    import jax  # noqa: PLC0415

    coo = op.tocoo()
    return jax.ops.segment_sum(xp.asarray(coo.data) * values[xp.asarray(coo.col)], xp.asarray(coo.row),
                               num_segments=op.shape[0])


def _penalty(params, design, ops, lam, xp=np):
    b, c, a, d = effective(params, design, xp)
    total = lam["b"] * xp.sum(_apply(ops["b"], b, xp) ** 2)
    total += lam["c"] * xp.sum(_apply(ops["c"], c, xp) ** 2) + lam["c_ridge"] * xp.sum(c**2)
    total += lam["a"] * xp.sum(_apply(ops["a"], a, xp) ** 2)
    total += lam["a_radial"] * xp.sum(_apply(ops["a_radial"], a, xp) ** 2)
    total += lam["d"] * xp.sum((d - 1.0) ** 2)
    return total


def _data_chi2(params, design, intensity, weight, group, n_groups, xp=np):
    a, b, c, d = component_values(params, design, xp)
    g, h = a * d * b, a * d * c
    merged = _merged(intensity, weight, group, n_groups, g, h, xp)
    r = intensity - g * merged[group] - h
    return xp.sum(weight * r * r), r


def _data_curvature(design, intensity, weight, group, n_groups) -> ScaleParams:
    """Diagonal of the data term's Gauss-Newton matrix per control point at the starting model
    (a = b = d = 1, c = 0): Σ w (∂model/∂v)², with Î the unscaled weighted mean."""
    merged = _merged(intensity, weight, group, n_groups, np.ones_like(intensity), np.zeros_like(intensity))
    wi2 = weight * merged[group] ** 2

    def per_node(index, interp, row_weight, n):
        return np.bincount(index.ravel(), weights=(row_weight[:, None] * interp**2).ravel(), minlength=n)

    return ScaleParams(BScale(per_node(design.ib, design.wb, wi2, design.n_b)),
                       COffset(per_node(design.ic, design.wc, weight, design.n_c)),
                       ASurface(per_node(design.ia, design.wa, wi2, design.n_a)),
                       DRegions(np.bincount(design.region, weights=wi2, minlength=design.n_regions)))


def _relative_weights(design, ops, options, curvature: ScaleParams):
    def lam(mult, data_trace, op):
        norm = op.power(2).sum()
        return float(mult * data_trace / norm) if norm > 0 else 0.0

    traces = {k: float(np.sum(getattr(curvature, k).values)) for k in ("b", "c", "a", "d")}
    return {"b": lam(options.smooth_b, traces["b"], ops["b"]), "c": lam(options.smooth_c, traces["c"], ops["c"]),
            "c_ridge": lam(options.ridge_c, traces["c"], ops["c_ridge"]),
            "a": lam(options.smooth_a, traces["a"], ops["a"]),
            "a_radial": lam(options.radial_a, traces["a"], ops["a_radial"]),
            "d": lam(options.d_to_one, traces["d"], ops["d"])}


def _preconditioner(curvature: ScaleParams, ops, lam) -> ScaleParams:
    """1/√(diagonal curvature) per control point, data term plus penalties: the joint fit works in
    units in which every parameter has curvature ≈ 1, which L-BFGS's scalar initial Hessian assumes."""
    def column_norms(op):
        return np.asarray(op.power(2).sum(axis=0)).ravel()

    penalty = {"b": lam["b"] * column_norms(ops["b"]),
               "c": lam["c"] * column_norms(ops["c"]) + lam["c_ridge"],
               "a": lam["a"] * column_norms(ops["a"]) + lam["a_radial"] * column_norms(ops["a_radial"]),
               "d": lam["d"] * np.ones_like(curvature.d.values)}
    scale = {}
    for k in ("b", "c", "a", "d"):
        diag = getattr(curvature, k).values + penalty[k]
        positive = diag[diag > 0]
        floor = positive.min() if positive.size else 1.0
        scale[k] = 1.0 / np.sqrt(np.maximum(diag, floor))
    return ScaleParams(BScale(scale["b"]), COffset(scale["c"]), ASurface(scale["a"]), DRegions(scale["d"]))


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
    sigma = np.asarray(table["sigma"], dtype=np.float64) / unit
    weight = np.where(sigma > 0, 1.0 / np.where(sigma > 0, sigma, 1.0) ** 2, 0.0)
    _, group = np.unique(groups, return_inverse=True)
    n_groups = int(group.max()) + 1
    ops = penalty_operators(design)
    curvature = _data_curvature(design, intensity, weight, group, n_groups)
    lam = _relative_weights(design, ops, options, curvature)
    preconditioner = _preconditioner(curvature, ops, lam)
    params = initial_params(design)
    chi2_before = float(_data_chi2(params, design, intensity, weight, group, n_groups)[0])
    solver = _fit_joint if options.method == "joint" else _fit_alternating
    history, iterations, converged, rejected = [], 0, True, 0
    keep = weight > 0
    for round_index, k in enumerate((None, *options.outlier_rounds)):
        if k is not None:
            chi2, r = _data_chi2(params, design, intensity, weight * keep, group, n_groups)
            normalised = r * np.sqrt(weight)
            rms = np.sqrt(np.mean(normalised[keep] ** 2))
            bad = keep & (np.abs(normalised) > k * rms)
            rejected += int(bad.sum())
            keep &= ~bad
            logger.info("scaling: outlier round k=%g rejected %d observations", k, int(bad.sum()))
            if not bad.any():
                continue  # the same observations as the last fit: its model stands
        with tqdm(total=options.max_iterations, desc=f"scale ({options.method}) round {round_index}", unit="it",
                  disable=not progress, leave=False) as bar:
            def report(loss):
                bar.update()
                bar.set_postfix_str(f"loss {loss:.7g}", refresh=False)

            params, hist, its, ok = solver(params, design, ops, lam, intensity, weight * keep, group, n_groups,
                                           options, preconditioner, report)
        history += hist
        iterations += its
        converged = converged and ok
        chi2 = float(_data_chi2(params, design, intensity, weight * keep, group, n_groups)[0])
        logger.info("scaling (%s) round %d: χ² = %.6g after %d iterations", options.method, round_index, chi2, its)
    if not converged:
        logger.warning("the %s scaling fit did not converge within %d iterations; keeping the last good model",
                       options.method, options.max_iterations)
    chi2_after = float(_data_chi2(params, design, intensity, weight * keep, group, n_groups)[0])
    penalty_after = float(_penalty(params, design, ops, lam))
    params = params._replace(c=COffset(params.c.values * unit))
    return ScaleFit(params, design, lam, history, chi2_before, chi2_after, penalty_after, iterations, converged,
                    rejected, options.method)


def _enable_compilation_cache(jax) -> None:
    """JAX's persistent compilation cache in the user's cache folder (XDG), so that a fit of the
    same shape in a later run loads its compiled code instead of compiling it again.
    GPUDIFFUSE_JAX_CACHE names another folder; an empty value turns the cache off."""
    import os  # noqa: PLC0415

    folder = os.environ.get("GPUDIFFUSE_JAX_CACHE")
    if folder is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "gpudiffuse", "jax")
    if not folder or jax.config.jax_compilation_cache_dir == folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return  # an unwritable home: compile every time
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _fit_joint(params, design, ops, lam, intensity, weight, group, n_groups, options, preconditioner, report):
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import optax  # noqa: PLC0415

    _enable_compilation_cache(jax)

    with jax.enable_x64(True):
        # per-observation arrays travel as jit arguments, not as constants captured in the trace
        per_row = ("ib", "wb", "ic", "wc", "ia", "wa", "region")
        data = (jnp.asarray(intensity), jnp.asarray(weight), jnp.asarray(group),
                {k: jnp.asarray(getattr(design, k)) for k in per_row})
        norm = 1.0 / max(float(np.sum(weight > 0)), 1.0)  # per-observation loss keeps L-BFGS's numbers O(1)

        # optimise u = θ / scale: unit diagonal curvature of the per-observation loss in u
        scale = jax.tree_util.tree_map(lambda x: jnp.asarray(x / np.sqrt(norm)), preconditioner)

        def loss(u, data):
            i, w, g, rows = data
            p = jax.tree_util.tree_map(jnp.multiply, u, scale)
            chi2, _ = _data_chi2(p, dataclasses.replace(design, **rows), i, w, g, n_groups, jnp)
            return (chi2 + _penalty(p, design, ops, lam, jnp)) * norm

        solver = optax.lbfgs()
        u = jax.tree_util.tree_map(lambda x, s: jnp.asarray(x) / s, params, scale)
        state = solver.init(u)

        @jax.jit
        def step(u, state, data):
            value_and_grad = optax.value_and_grad_from_state(lambda q: loss(q, data))
            value, grad = value_and_grad(u, state=state)
            updates, state = solver.update(grad, state, u, value=value, grad=grad, value_fn=lambda q: loss(q, data))
            return optax.apply_updates(u, updates), state, value

        history, converged = [], False
        for iteration in range(1, options.max_iterations + 1):
            u_new, state, value = step(u, state, data)
            value = float(value)  # the loss at u, before this step
            if not np.isfinite(value) or not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(u_new)):
                logger.warning("scaling: non-finite loss at iteration %d; keeping the last good model", iteration)
                break
            history.append(value / norm)
            report(history[-1])
            u = u_new
            if _settled(history, options.tolerance):
                converged = True
                break
        p = jax.tree_util.tree_map(jnp.multiply, u, scale)
        out = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype=np.float64), p)
    return ScaleParams(BScale(out.b.values), COffset(out.c.values), ASurface(out.a.values), DRegions(out.d.values)), \
        history, iteration, converged


def _settled(history, tolerance, window: int = 10) -> bool:
    """Converged when the loss fell by less than ``tolerance`` (relative) per iteration, on average
    over the last ``window`` iterations."""
    if len(history) <= window:
        return False
    return history[-window - 1] - history[-1] <= window * tolerance * abs(history[-1])


def _sparse(index, weights, factor, n_cols):
    rows = np.repeat(np.arange(len(index)), index.shape[1])
    return sp.csr_matrix(((weights * factor[:, None]).ravel(), (rows, index.ravel())), shape=(len(index), n_cols))


def _solve(x, y, weight, penalty, free=None, low_rank=None):
    """argmin Σ w (y − X v)² + vᵀ (penalty + λ RᵀR) v over the free columns; penalty sparse (n, n),
    ``low_rank`` = (R, λ) with a few dense rows R (stored sparse; the radial constraint on a),
    applied by the Woodbury identity so that the sparse LU never sees the dense RᵀR."""
    xtw = x.T.multiply(weight).tocsr()
    lhs = (xtw @ x + penalty).tocsc()
    rhs = xtw @ y
    v = np.zeros(x.shape[1])
    cols = np.arange(x.shape[1]) if free is None else np.flatnonzero(free)
    sub = lhs[cols][:, cols]
    sub = sub + 1e-12 * sub.diagonal().sum() / max(len(cols), 1) * sp.identity(len(cols), format="csc")
    lu = spla.splu(sp.csc_matrix(sub))
    solution = lu.solve(rhs[cols])
    if low_rank is not None:
        rows, lam = low_rank
        r = rows[:, cols].toarray()
        ainv_rt = lu.solve(np.ascontiguousarray(r.T))
        capacitance = np.eye(len(r)) / lam + r @ ainv_rt
        solution = solution - ainv_rt @ np.linalg.solve(capacitance, r @ solution)
    v[cols] = solution
    return v


def _fit_alternating(params, design, ops, lam, intensity, weight, group, n_groups, options, preconditioner=None,
                     report=lambda loss: None):
    """One component at a time by weighted linear least squares, then Î, until χ² settles."""
    b, c, a, d = (np.array(v, dtype=np.float64) for v in effective(params, design))
    history, converged = [], False
    pen = {"b": lam["b"] * ops["b"].T @ ops["b"],
           "c": lam["c"] * ops["c"].T @ ops["c"] + lam["c_ridge"] * ops["c_ridge"],
           "a": lam["a"] * ops["a"].T @ ops["a"],
           "d": lam["d"] * ops["d"].toarray()}
    radial = (ops["a_radial"], lam["a_radial"]) if lam["a_radial"] > 0 else None
    iteration = 0
    for iteration in range(1, options.max_iterations + 1):
        p = ScaleParams(BScale(b), COffset(c), ASurface(a), DRegions(d))
        ai, bi, ci, di = component_values(p, design)
        merged = _merged(intensity, weight, group, n_groups, ai * di * bi, ai * di * ci)[group]
        # b, with a, c, d and Î fixed
        x = _sparse(design.ib, design.wb, ai * di * merged, design.n_b)
        b = _solve(x, intensity - ai * di * ci, weight, pen["b"])
        b /= b.mean()
        bi = (b[design.ib] * design.wb).sum(1)
        # c
        x = _sparse(design.ic, design.wc, ai * di, design.n_c)
        c = _solve(x, intensity - ai * di * bi * merged, weight, pen["c"], design.c_free)
        c = effective(ScaleParams(BScale(b), COffset(c), ASurface(a), DRegions(d)), design)[1]
        ci = (c[design.ic] * design.wc).sum(1)
        # a
        x = _sparse(design.ia, design.wa, di * (bi * merged + ci), design.n_a)
        a = _solve(x, intensity, weight, pen["a"], low_rank=radial)
        a = effective(ScaleParams(BScale(b), COffset(c), ASurface(a), DRegions(d)), design)[2]
        ai = (a[design.ia] * design.wa).sum(1)
        # d (the penalty pulls towards 1: add λ·1 on the right-hand side)
        x = _sparse(design.region[:, None], np.ones((len(intensity), 1)), ai * (bi * merged + ci), design.n_regions)
        xtw = x.T.multiply(weight).tocsr()
        d = np.linalg.solve((xtw @ x).toarray() + pen["d"], xtw @ intensity + lam["d"] * np.ones(design.n_regions))
        d /= d.mean()
        p = ScaleParams(BScale(b), COffset(c), ASurface(a), DRegions(d))
        value = float(_data_chi2(p, design, intensity, weight, group, n_groups)[0] + _penalty(p, design, ops, lam))
        history.append(value)
        report(value)
        if _settled(history, options.tolerance):
            converged = True
            break
    return ScaleParams(BScale(b), COffset(c), ASurface(a), DRegions(d)), history, iteration, converged


def apply_scales(table: dict, fit: ScaleFit) -> dict:
    """Scaled copy of ``table``: rate → I_obs/(a·b·d) − c/b, sigma → σ/(a·b·d)."""
    a, b, c, d = component_values(fit.params, fit.design)
    out = dict(table)
    out["rate"] = np.asarray(table["rate"]) / (a * b * d) - c / b
    out["sigma"] = np.asarray(table["sigma"]) / (a * b * d)
    out["scale"] = a * b * d
    return out
