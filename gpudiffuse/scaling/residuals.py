"""The scaling loss as a pure residual function of reduced parameters θ (DESIGN §10, "Scaling solver").

``residuals(theta, data)`` follows optimistix's ``fn(y, args)`` form: everything it needs travels in
``data`` (a pytree of arrays plus static sizes), nothing is captured, so one compiled function
serves every round and every fit of the same shape.

Parameters. The model values v = (b, c, a, d) (see :mod:`.model`) are an affine map of θ,
v = v₀ + T θ, whose range satisfies the model's constraints by construction:

* mean(b) = 1 (the overall scale belongs to Î);
* Σ c over batches and frame nodes = 0 at each |s| node when c is centred (the offset shared by c
  and Î belongs to Î), or one pinned node of c = 0 otherwise;
* mean(a) = 1 over the detector plane at each (batch, frame node);
* mean(d) = 1.

T maps each constraint group of m free nodes to m − 1 parameters (node k < m − 1 moves with θ_k,
the last node takes −Σθ_k), so the loss has no null direction in θ. Nodes that neither an
observation nor a penalty touches are held at v₀ and left out of the groups. The data term
profiles Î out per voxel in closed form (variable projection): Î_v = Σ w g (I − h) / Σ w g².
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .model import ASurface, BScale, COffset, Design, DRegions, ScaleParams, penalty_operators

__all__ = ["Basis", "reduced_basis", "ScalingData", "scaling_data", "residuals", "observation_residuals",
           "penalty_residuals", "model_values", "padded_rows", "stacked_penalty", "split_values"]


@dataclass(frozen=True)
class Basis:
    """v = offset + matrix @ θ over the concatenated model values (b, c, a, d).

    matrix : scipy CSR (n_values, n_theta); free : (n_values,) nodes that move with θ."""

    offset: np.ndarray
    matrix: sp.csr_matrix
    free: np.ndarray

    @property
    def n_theta(self) -> int:
        return self.matrix.shape[1]

    def values(self, theta) -> np.ndarray:
        return self.offset + self.matrix @ np.asarray(theta, dtype=np.float64)

    def theta(self, values) -> np.ndarray:
        """The θ whose model values are nearest (least squares) to ``values``: exact when
        ``values`` satisfy the constraints (the map is injective)."""
        t = self.matrix
        return sp.linalg.spsolve((t.T @ t).tocsc(), t.T @ (np.asarray(values, np.float64) - self.offset)).ravel() \
            if t.shape[1] else np.zeros(0)


def _component_slices(design: Design) -> dict:
    edges = design.value_edges
    return {k: slice(int(edges[i]), int(edges[i + 1])) for i, k in enumerate("bcad")}


def split_values(v, design: Design) -> ScaleParams:
    """The concatenated model values (b, c, a, d) as ScaleParams."""
    sl = _component_slices(design)
    return ScaleParams(BScale(v[sl["b"]]), COffset(v[sl["c"]]), ASurface(v[sl["a"]]), DRegions(v[sl["d"]]))


def _touched(node, offsets, weights, n):
    from .row_kernels import touched_nodes  # noqa: PLC0415

    return touched_nodes(np.asarray(node), np.asarray(offsets), np.asarray(weights), int(n))


def reduced_basis(design: Design, ops: dict | None = None) -> Basis:
    """The affine map v = v₀ + Tθ of the module docstring for ``design``."""
    ops = penalty_operators(design) if ops is None else ops
    sl = _component_slices(design)
    n_values = sl["d"].stop
    offset = np.zeros(n_values)
    for k in "bad":
        offset[sl[k]] = 1.0
    touched = {"b": _touched(design.b_node, design.b_offsets, design.wb, design.n_b),
               "c": _touched(design.c_node, design.c_offsets, design.wc, design.n_c),
               "a": _touched(design.a_node, design.a_offsets, design.wa, design.n_a),
               "d": np.bincount(design.region, minlength=design.n_regions) > 0}
    linked = {"b": [ops["b"]], "c": [ops["c"]], "a": [ops["a"], ops["a_radial"]], "d": []}
    groups = {"b": np.zeros(design.n_b, np.int64), "a": np.asarray(design.a_group, np.int64),
              "d": np.zeros(design.n_regions, np.int64)}
    ns, nzc = design.shape_c[1], design.shape_c[2]
    if design.c_centred:
        groups["c"] = (np.arange(design.n_c) // nzc) % ns
    else:  # no sum constraint: every free node is its own group of one, the pinned node is held
        groups["c"] = None
    rows, cols, vals, free_all = [], [], [], np.zeros(n_values, bool)
    n_theta = 0
    for k in "bcad":
        free = touched[k].copy()
        for op in linked[k]:
            free |= np.asarray(abs(op).sum(axis=0)).ravel() > 0
        if k == "c" and not design.c_centred:
            free &= np.asarray(design.c_free, bool)
        free_all[sl[k]] = free
        start = sl[k].start
        if groups[k] is None:  # unconstrained free nodes: one parameter each
            nodes = np.flatnonzero(free)
            rows.append(start + nodes)
            cols.append(n_theta + np.arange(len(nodes)))
            vals.append(np.ones(len(nodes)))
            n_theta += len(nodes)
            continue
        for g in np.unique(groups[k][free]):
            nodes = np.flatnonzero(free & (groups[k] == g))
            m = len(nodes) - 1
            if m < 1:
                continue  # a group of one free node is held by its constraint
            rows += [start + nodes[:m], np.full(m, start + nodes[m])]
            cols += [n_theta + np.arange(m)] * 2
            vals += [np.ones(m), -np.ones(m)]
            n_theta += m
    matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(n_values, n_theta)) if rows else sp.csr_matrix((n_values, 0))
    return Basis(offset, matrix, free_all)


def stacked_penalty(design: Design, ops: dict, lam: dict):
    """All penalty residuals as one sparse operator on v and a target: r_pen = Q v − t (CSR, t)."""
    sl = _component_slices(design)
    n_values = sl["d"].stop

    def placed(op, k, weight):
        op = sp.coo_matrix(op)
        return sp.csr_matrix((np.sqrt(weight) * op.data, (op.row, op.col + sl[k].start)), shape=(op.shape[0], n_values))

    parts = [placed(ops["b"], "b", lam["b"]), placed(ops["c"], "c", lam["c"]),
             placed(ops["c_ridge"], "c", lam["c_ridge"]), placed(ops["a"], "a", lam["a"]),
             placed(ops["a_radial"], "a", lam["a_radial"]), placed(ops["d"], "d", lam["d"])]
    target = np.zeros(sum(p.shape[0] for p in parts))
    target[-design.n_regions:] = np.sqrt(lam["d"])  # d → 1
    return sp.vstack(parts).tocsr(), target


def _register(cls):
    import jax  # noqa: PLC0415

    meta = [f.name for f in dataclasses.fields(cls) if f.metadata.get("static")]
    data = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("static")]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


def _static():
    return dataclasses.field(metadata={"static": True})


@dataclass(frozen=True)
class ScalingData:
    """Arrays of one scaling problem (device arrays under JAX) and its static sizes.

    Per observation (N rows, padded with rows of weight 0 to whole chunks,
    :func:`.row_chunks.padded_length`; ``n_rows`` = N): intensity and sqrt_weight (1/σ, 0 for
    rejected rows), group (voxel id), and per component the first interpolation node (``b_node``
    …) and the weights (N, K). The K nodes of a row are that first node plus fixed offsets
    (``b_offsets`` …: the corners of a hat cell), so the model gathers whole rows of a small
    (nodes, K) table instead of N·K single values, which XLA does much faster on a CPU. Basis T
    and penalty Q as COO triplets."""

    intensity: object
    sqrt_weight: object
    group: object
    b_node: object
    wb: object
    c_node: object
    wc: object
    a_node: object
    wa: object
    region: object
    offset: object
    basis_row: object
    basis_col: object
    basis_value: object
    penalty_row: object
    penalty_col: object
    penalty_value: object
    penalty_target: object
    n_groups: int = _static()
    n_rows: int = _static()
    n_b: int = _static()
    n_c: int = _static()
    n_a: int = _static()
    n_regions: int = _static()
    b_offsets: tuple = _static()
    c_offsets: tuple = _static()
    a_offsets: tuple = _static()


_REGISTERED = []


def _offsets(offsets) -> tuple:
    return tuple(int(x) for x in offsets)  # static (hashable) fields of ScalingData


def scaling_data(design: Design, basis: Basis, penalty: tuple, intensity, sqrt_weight, group, n_groups: int,
                 share_weights: bool = False):
    """Device arrays of one problem (float64: call under ``jax.enable_x64``); the per-row arrays are
    padded to whole chunks (:func:`padded_rows`).

    share_weights (host devices only): the design's interpolation weights become read-only views of
    the device buffers (the same values), so that one copy of them is held, not two (10⁷ rows:
    1.1 GB). The arrays are moved one at a time, each original freed before the next is copied."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    if not _REGISTERED:
        _REGISTERED.append(_register(ScalingData))
    t = basis.matrix.tocoo()
    q = penalty[0].tocoo()
    per_row = dict(intensity=intensity, sqrt_weight=sqrt_weight, group=np.asarray(group, np.int32),
                   b_node=design.b_node, wb=design.wb, c_node=design.c_node, wc=design.wc,
                   a_node=design.a_node, wa=design.wa, region=design.region)
    arrays = dict(offset=basis.offset, basis_row=t.row.astype(np.int32), basis_col=t.col.astype(np.int32),
                  basis_value=t.data, penalty_row=q.row.astype(np.int32), penalty_col=q.col.astype(np.int32),
                  penalty_value=q.data, penalty_target=penalty[1])
    arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
    n = len(intensity)
    for name in sorted(per_row, key=lambda k: -np.asarray(per_row[k]).nbytes):  # largest first
        arrays[name] = jax.device_put(padded_rows(per_row.pop(name))).block_until_ready()
        if share_weights and name in ("wb", "wc", "wa"):
            setattr(design, name, np.asarray(arrays[name])[:n])
    return ScalingData(**arrays, n_groups=int(n_groups), n_rows=n, n_b=design.n_b, n_c=design.n_c,
                       n_a=design.n_a, n_regions=design.n_regions,
                       b_offsets=_offsets(design.b_offsets), c_offsets=_offsets(design.c_offsets),
                       a_offsets=_offsets(design.a_offsets))


def padded_rows(values) -> np.ndarray:
    """``values`` (N, …) followed by zero rows up to :func:`.row_chunks.padded_length` rows: rows of
    weight 0, voxel 0 and node 0, which add nothing to any sum of the fit. When ``values`` is the
    head of a buffer of that length whose other rows are zero (the design's weights, see
    ``model._chunked_rows``, or the views of an earlier fit's device arrays), that buffer instead
    of a copy."""
    from .row_chunks import padded_length  # noqa: PLC0415

    values = np.asarray(values)
    n = len(values)
    rows = padded_length(n)
    base = values.base
    if (isinstance(base, np.ndarray) and base.shape == (rows, *values.shape[1:]) and base.dtype == values.dtype
            and base.flags.c_contiguous and values.ctypes.data == base.ctypes.data and not np.any(base[n:])):
        return base  # the same rows followed by zero rows: already the padded table (never written to)
    out = np.zeros((rows, *values.shape[1:]), values.dtype)
    out[:n] = values
    return out


def model_values(theta, data: ScalingData):
    """v = v₀ + Tθ (all components concatenated)."""
    import jax  # noqa: PLC0415

    moved = jax.ops.segment_sum(data.basis_value * theta[data.basis_col], data.basis_row,
                                num_segments=data.offset.shape[0])
    return data.offset + moved


def _split(v, data):
    edges = np.cumsum([0, data.n_b, data.n_c, data.n_a, data.n_regions])
    return tuple(v[edges[i]:edges[i + 1]] for i in range(4))


def _interpolate(values, first_node, weights, offsets):
    """Σ_k w_k · values[first_node + offsets_k] per row, by gathering rows of a (nodes, K) table."""
    import jax.numpy as jnp  # noqa: PLC0415

    padded = jnp.concatenate([values, jnp.zeros(max(offsets) + 1, values.dtype)])
    table = padded[np.arange(values.shape[0])[:, None] + np.asarray(offsets)[None, :]]
    return (table[first_node] * weights).sum(axis=1)


def _per_observation(v, data):
    """Interpolated a, b, c, d of every observation."""
    b, c, a, d = _split(v, data)
    return (_interpolate(a, data.a_node, data.wa, data.a_offsets), _interpolate(b, data.b_node, data.wb, data.b_offsets),
            _interpolate(c, data.c_node, data.wc, data.c_offsets), d[data.region])


def _prediction(a, b, c, d, merged):
    return a * d * (b * merged + c)


def _merge_terms(data, g, h):
    """Each row's terms of Î's numerator and denominator: w·g·(I − h) and w·g²."""
    w = data.sqrt_weight * data.sqrt_weight
    return w * g * (data.intensity - h), w * g * g


def _profiled_intensity(num, den):
    """Î = Σ w g (I − h) / Σ w g² per voxel (0 where a voxel has no weight)."""
    import jax.numpy as jnp  # noqa: PLC0415

    return num / jnp.where(den > 0, den, 1.0)


def _merged(data, g, h):
    import jax  # noqa: PLC0415

    num, den = (jax.ops.segment_sum(terms, data.group, num_segments=data.n_groups)
                for terms in _merge_terms(data, g, h))
    return _profiled_intensity(num, den)


def _profiled(theta, data: ScalingData):
    """v, the interpolated (a, b, c, d) of every observation and its voxel's profiled Î."""
    v = model_values(theta, data)
    a, b, c, d = _per_observation(v, data)
    merged = _merged(data, a * d * b, a * d * c)[data.group]
    return v, (a, b, c, d, merged)


def penalty_residuals(v, data: ScalingData):
    """Q v − t: every penalty residual of the model values v."""
    import jax  # noqa: PLC0415

    return jax.ops.segment_sum(data.penalty_value * v[data.penalty_col], data.penalty_row,
                               num_segments=data.penalty_target.shape[0]) - data.penalty_target


def observation_residuals(theta, data: ScalingData):
    """Unweighted I − a·d·(b·Î + c) per observation (Î merged with the current weights), and v."""
    v, per_observation = _profiled(theta, data)
    return data.intensity - _prediction(*per_observation), v


def residuals(theta, data: ScalingData):
    """(data residuals (N,), penalty residuals): r = √w (I − a·d·(b·Î + c)) and Q v − t."""
    r, v = observation_residuals(theta, data)
    return data.sqrt_weight * r, penalty_residuals(v, data)
