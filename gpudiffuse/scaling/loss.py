"""The scaling loss in NumPy (and in JAX through ``xp``): data χ² with Î profiled out, penalties,
their relative weights, and the curvature used to scale the parameters.

Loss = Σᵢ wᵢ (Iᵢ − aᵢdᵢ(bᵢ Î_v(i) + cᵢ))² + Σ_k λ_k ‖P_k v_k‖², with Î_v the weighted-mean merged
intensity of ASU voxel v under the current model, profiled out in closed form
(Î_v = Σ w g (I − h) / Σ w g², g = a·d·b, h = a·d·c). λ_k = multiplier_k × trace(data term of
component k) / trace(P_kᵀP_k), both traces taken at the starting model.
"""

from __future__ import annotations

import numpy as np

from .model import ASurface, BScale, COffset, Design, DRegions, ScaleParams, effective

__all__ = ["component_values", "data_chi2", "penalty_loss", "data_curvature", "relative_weights", "settled", "merged_intensity"]


def component_values(params: ScaleParams, design: Design, xp=np):
    """Per-observation a, b, c, d of the effective model."""
    b, c, a, d = effective(params, design, xp)
    if xp is np:  # compiled: no (N, K) temporaries (1M rows: 125 MB for a), the same values
        from .row_kernels import interpolated  # noqa: PLC0415

        return (interpolated(a, design.a_node, design.a_offsets, design.wa),
                interpolated(b, design.b_node, design.b_offsets, design.wb),
                interpolated(c, design.c_node, design.c_offsets, design.wc), d[design.region])
    bi = (b[design.ib] * design.wb).sum(axis=1)
    ci = (c[design.ic] * design.wc).sum(axis=1)
    ai = (a[design.ia] * design.wa).sum(axis=1)
    return ai, bi, ci, d[design.region]


def merged_intensity(intensity, weight, group, n_groups, g, h, xp=np):
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


def penalty_loss(params, design, ops, lam, xp=np):
    b, c, a, d = effective(params, design, xp)
    total = lam["b"] * xp.sum(_apply(ops["b"], b, xp) ** 2)
    total += lam["c"] * xp.sum(_apply(ops["c"], c, xp) ** 2) + lam["c_ridge"] * xp.sum(c**2)
    total += lam["a"] * xp.sum(_apply(ops["a"], a, xp) ** 2)
    total += lam["a_radial"] * xp.sum(_apply(ops["a_radial"], a, xp) ** 2)
    total += lam["d"] * xp.sum((d - 1.0) ** 2)
    return total


def data_chi2(params, design, intensity, weight, group, n_groups, xp=np):
    a, b, c, d = component_values(params, design, xp)
    g, h = a * d * b, a * d * c
    merged = merged_intensity(intensity, weight, group, n_groups, g, h, xp)
    r = intensity - g * merged[group] - h
    return xp.sum(weight * r * r), r


def data_curvature(design, intensity, weight, group, n_groups) -> ScaleParams:
    """Diagonal of the data term's Gauss-Newton matrix per control point at the starting model
    (a = b = d = 1, c = 0): Σ w (∂model/∂v)², with Î the unscaled weighted mean."""
    merged = merged_intensity(intensity, weight, group, n_groups, np.ones_like(intensity), np.zeros_like(intensity))
    wi2 = weight * merged[group] ** 2

    from .row_kernels import node_sums  # noqa: PLC0415

    return ScaleParams(BScale(node_sums(design.b_node, design.b_offsets, design.wb, wi2, design.n_b, power=2)),
                       COffset(node_sums(design.c_node, design.c_offsets, design.wc, weight, design.n_c, power=2)),
                       ASurface(node_sums(design.a_node, design.a_offsets, design.wa, wi2, design.n_a, power=2)),
                       DRegions(np.bincount(design.region, weights=wi2, minlength=design.n_regions)))


def relative_weights(design, ops, options, curvature: ScaleParams):
    def lam(mult, data_trace, op):
        norm = op.power(2).sum()
        return float(mult * data_trace / norm) if norm > 0 else 0.0

    traces = {k: float(np.sum(getattr(curvature, k).values)) for k in ("b", "c", "a", "d")}
    return {"b": lam(options.smooth_b, traces["b"], ops["b"]), "c": lam(options.smooth_c, traces["c"], ops["c"]),
            "c_ridge": lam(options.ridge_c, traces["c"], ops["c_ridge"]),
            "a": lam(options.smooth_a, traces["a"], ops["a"]),
            "a_radial": lam(options.radial_a, traces["a"], ops["a_radial"]),
            "d": lam(options.d_to_one, traces["d"], ops["d"])}


def settled(history, tolerance, window: int = 10) -> bool:
    """Converged when the loss fell by less than ``tolerance`` (relative) per iteration, on average
    over the last ``window`` iterations."""
    if len(history) <= window:
        return False
    return history[-window - 1] - history[-1] <= window * tolerance * abs(history[-1])
