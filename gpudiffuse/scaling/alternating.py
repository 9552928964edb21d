"""The alternating baseline: one component at a time by weighted linear least squares, then Î
(how mdx-lib and mdx2 fit), until the loss settles.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .loss import component_values, data_chi2, merged_intensity, penalty_loss, settled
from .model import ASurface, BScale, COffset, DRegions, ScaleParams, effective
from .residuals import reduced_basis

__all__ = ["fit_alternating"]


def _sparse(index, weights, factor, n_cols):
    rows = np.repeat(np.arange(len(index)), index.shape[1])
    return sp.csr_matrix(((weights * factor[:, None]).ravel(), (rows, index.ravel())), shape=(len(index), n_cols))


def _solve(x, y, weight, penalty, free=None, low_rank=None, current=None, basis=None):
    """argmin Σ w (y − X v)² + vᵀ (penalty + λ RᵀR) v over the free columns; penalty sparse (n, n),
    ``low_rank`` = (R, λ) with a few dense rows R (stored sparse; the radial constraint on a),
    applied by the Woodbury identity so that the sparse LU never sees the dense RᵀR.

    A column that neither data nor penalty reaches (zero diagonal: e.g. the second frame node of a
    still, which has one frame) is singular; it keeps its ``current`` value (default 0).
    ``basis`` = (T, v₀): solve for θ in v = v₀ + Tθ instead (``penalty`` and ``low_rank`` act on v)
    and return v."""
    xtw = x.T.multiply(weight).tocsr()
    lhs = (xtw @ x + penalty).tocsc()
    rhs = xtw @ y
    if basis is not None:
        t, offset = basis
        rhs = t.T @ (rhs - lhs @ offset)
        lhs = (t.T @ lhs @ t).tocsc()
        if low_rank is not None:
            low_rank = (low_rank[0] @ t, low_rank[1])
        return offset + t @ _solve_normal(lhs, rhs, None, low_rank, np.zeros(t.shape[1]))
    v = np.zeros(x.shape[1]) if current is None else np.array(current, dtype=np.float64)
    return _solve_normal(lhs, rhs, free, low_rank, v)


def _solve_normal(lhs, rhs, free, low_rank, v):
    """Solve lhs·v = rhs (plus the low-rank term) over the free columns with a nonzero diagonal."""
    reached = lhs.diagonal() > 0
    cols = np.flatnonzero(reached if free is None else reached & np.asarray(free, bool))
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


def fit_alternating(params, design, ops, lam, intensity, weight, group, n_groups, options, report=lambda loss: None):
    """One component at a time by weighted linear least squares, then Î, until χ² settles."""
    b, c, a, d = (np.array(v, dtype=np.float64) for v in effective(params, design))
    history, converged = [], False
    pen = {"b": lam["b"] * ops["b"].T @ ops["b"],
           "c": lam["c"] * ops["c"].T @ ops["c"] + lam["c_ridge"] * ops["c_ridge"],
           "a": lam["a"] * ops["a"].T @ ops["a"],
           "d": lam["d"] * ops["d"].toarray()}
    # a is solved in the constraint basis of the joint fit (a = 1 + T θ, mean 1 over the detector
    # plane per frame node): a plane without data (a still's second frame node) then stays flat at 1
    # instead of being left to the null space of the smoothness penalty
    basis = reduced_basis(design, ops)
    start = design.n_b + design.n_c
    t_a = basis.matrix[start:start + design.n_a].tocsc()
    t_a = t_a[:, np.flatnonzero(np.diff(t_a.indptr))].tocsr()
    radial = (ops["a_radial"], lam["a_radial"]) if lam["a_radial"] > 0 else None
    iteration = 0
    for iteration in range(1, options.max_iterations + 1):
        p = ScaleParams(BScale(b), COffset(c), ASurface(a), DRegions(d))
        ai, bi, ci, di = component_values(p, design)
        merged = merged_intensity(intensity, weight, group, n_groups, ai * di * bi, ai * di * ci)[group]
        # b, with a, c, d and Î fixed
        x = _sparse(design.ib, design.wb, ai * di * merged, design.n_b)
        b = _solve(x, intensity - ai * di * ci, weight, pen["b"], current=b)
        b /= b.mean()
        bi = (b[design.ib] * design.wb).sum(1)
        # c
        x = _sparse(design.ic, design.wc, ai * di, design.n_c)
        c = _solve(x, intensity - ai * di * bi * merged, weight, pen["c"], design.c_free, current=c)
        c = effective(ScaleParams(BScale(b), COffset(c), ASurface(a), DRegions(d)), design)[1]
        ci = (c[design.ic] * design.wc).sum(1)
        # a
        x = _sparse(design.ia, design.wa, di * (bi * merged + ci), design.n_a)
        a = _solve(x, intensity, weight, pen["a"], low_rank=radial, basis=(t_a, np.ones(design.n_a)))
        ai = (a[design.ia] * design.wa).sum(1)
        # d (the penalty pulls towards 1: add λ·1 on the right-hand side)
        x = _sparse(design.region[:, None], np.ones((len(intensity), 1)), ai * (bi * merged + ci), design.n_regions)
        xtw = x.T.multiply(weight).tocsr()
        d = np.linalg.solve((xtw @ x).toarray() + pen["d"], xtw @ intensity + lam["d"] * np.ones(design.n_regions))
        d /= d.mean()
        p = ScaleParams(BScale(b), COffset(c), ASurface(a), DRegions(d))
        value = float(data_chi2(p, design, intensity, weight, group, n_groups)[0] + penalty_loss(p, design, ops, lam))
        history.append(value)
        report(value)
        if settled(history, options.tolerance):
            converged = True
            break
    return ScaleParams(BScale(b), COffset(c), ASurface(a), DRegions(d)), history, iteration, converged
