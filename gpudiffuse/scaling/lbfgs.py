"""The quasi-Newton joint fit (optax L-BFGS with a zoom line search), kept for experiments and for
non-quadratic losses (DESIGN §10); the default joint fit is Gauss–Newton (:mod:`.joint`).

Works in units u = θ / scale with unit diagonal curvature (:func:`preconditioner`) and stops when
the loss falls by less than ``tolerance`` (relative) per iteration over the last ten.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from .joint import enable_compilation_cache
from .loss import data_chi2, penalty_loss, settled
from .model import ASurface, BScale, COffset, DRegions, ScaleParams

__all__ = ["fit_lbfgs", "preconditioner"]

logger = logging.getLogger(__name__)


def preconditioner(curvature: ScaleParams, ops, lam) -> ScaleParams:
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



def fit_lbfgs(params, design, ops, lam, intensity, weight, group, n_groups, options, curvature, report):
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import optax  # noqa: PLC0415

    enable_compilation_cache(jax)

    with jax.enable_x64(True):
        # per-observation arrays travel as jit arguments, not as constants captured in the trace
        data = (jnp.asarray(intensity), jnp.asarray(weight), jnp.asarray(group),
                {k: jnp.asarray(getattr(design, k)) for k in design.PER_ROW})
        norm = 1.0 / max(float(np.sum(weight > 0)), 1.0)  # per-observation loss keeps L-BFGS's numbers O(1)

        # optimise u = θ / scale: unit diagonal curvature of the per-observation loss in u
        scale = jax.tree_util.tree_map(lambda x: jnp.asarray(x / np.sqrt(norm)), preconditioner(curvature, ops, lam))

        def loss(u, data):
            i, w, g, rows = data
            p = jax.tree_util.tree_map(jnp.multiply, u, scale)
            chi2, _ = data_chi2(p, dataclasses.replace(design, **rows), i, w, g, n_groups, jnp)
            return (chi2 + penalty_loss(p, design, ops, lam, jnp)) * norm

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
            if settled(history, options.tolerance):
                converged = True
                break
        p = jax.tree_util.tree_map(jnp.multiply, u, scale)
        out = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype=np.float64), p)
    return ScaleParams(BScale(out.b.values), COffset(out.c.values), ASurface(out.a.values), DRegions(out.d.values)), \
        history, iteration, converged
