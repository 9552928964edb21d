"""The data term of :mod:`.residuals` evaluated over fixed-size chunks of observation rows.

Whole-table JAX functions hold several (N, 8) temporaries at once (and reverse-mode autodiff keeps
them for the backward pass): about 1.4 GB at 10⁷ observations. Here a ``lax.scan`` walks the rows
in chunks of ``CHUNK_ROWS``, so the temporaries are those of one chunk:

* pass 1 sums Σ w g (I − h) and Σ w g² per voxel, which give the profiled Î;
* pass 2 takes, per chunk, the loss and its gradient with respect to the model values v with Î
  held fixed. That is the full gradient: Î minimises the data term for the current θ (variable
  projection), so ∂L/∂Î = 0 there and the chain through Î adds nothing.

The table is padded (rows of weight 0, which add nothing; :func:`padded_length`) when the device
arrays are made (:func:`.residuals.scaling_data`), to whole chunks or, below one chunk, to a single
chunk of the table's size, so every chunk has the same shape and the scan body is compiled once.
"""

from __future__ import annotations

import dataclasses

from .residuals import (_merge_terms, _per_observation, _prediction, _profiled_intensity, model_values,
                        penalty_residuals)

__all__ = ["CHUNK_ROWS", "ROW_FIELDS", "padded_length", "chunked_value_and_grad", "chunked_evaluate",
           "chunked_partials"]

# measured on the 2-core CPU (1M preset, value and gradient, medians of 6 in one process), in two
# runs: 2¹⁷ rows 0.090 s, 2¹⁶ 0.077, 2¹⁵ 0.070; then 2¹⁵ 0.081, 2¹⁴ 0.083, 2¹³ 0.100, 2¹² 0.117
# (one chunk's temporaries stay in the caches; below 2¹⁴ the per-chunk overhead wins). A GPU
# would want larger chunks: not measured.
CHUNK_ROWS = 1 << 15
ROW_QUANTUM = 1024


def padded_length(n: int) -> int:
    """Rows of the padded table: a table that fits one chunk is that chunk, rounded up to a multiple
    of 1024 rows (small problems do not pay for a whole chunk); a larger one, whole chunks."""
    if n <= CHUNK_ROWS:
        return max(-(-n // ROW_QUANTUM), 1) * ROW_QUANTUM
    return -(-n // CHUNK_ROWS) * CHUNK_ROWS


def _chunk_rows(data) -> int:
    return min(CHUNK_ROWS, data.intensity.shape[0])
ROW_FIELDS = ("intensity", "sqrt_weight", "group", "b_node", "wb", "c_node", "wc", "a_node", "wa", "region")


def _chunk(data, index):
    from jax import lax  # noqa: PLC0415

    rows = _chunk_rows(data)
    return dataclasses.replace(data, **{name: lax.dynamic_slice_in_dim(getattr(data, name), index * rows, rows)
                                        for name in ROW_FIELDS})


def _n_chunks(data) -> int:
    return data.intensity.shape[0] // _chunk_rows(data)


def chunk_merged(v, data):
    """Î per voxel (profiled, closed form) at the model values v, summed chunk by chunk."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    def body(sums, index):
        rows = _chunk(data, index)
        a, b, c, d = _per_observation(v, rows)
        terms = _merge_terms(rows, a * d * b, a * d * c)
        return tuple(total.at[rows.group].add(t) for total, t in zip(sums, terms)), None

    zeros = jnp.zeros(data.n_groups, v.dtype)
    (num, den), _ = jax.lax.scan(body, (zeros, zeros), jnp.arange(_n_chunks(data)))
    return _profiled_intensity(num, den)


def _chunk_residual(v, rows, merged):
    """Unweighted I − a·d·(b·Î + c) of one chunk, Î given."""
    a, b, c, d = _per_observation(v, rows)
    return rows.intensity - _prediction(a, b, c, d, merged[rows.group])


def chunked_value_and_grad(theta, data):
    """(½‖r‖² of data and penalty residuals, its gradient over θ, Î per voxel at θ), chunk by chunk.
    Î is returned for :func:`chunked_evaluate` and :func:`chunked_partials` at the same θ and weights."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    v, to_theta = jax.vjp(lambda t: model_values(t, data), theta)
    merged = jax.lax.stop_gradient(chunk_merged(v, data))

    def chunk_loss(v_, rows):
        r = rows.sqrt_weight * _chunk_residual(v_, rows, merged)
        return 0.5 * jnp.sum(r * r)

    def body(carry, index):
        loss, grad = jax.value_and_grad(chunk_loss)(v, _chunk(data, index))
        return (carry[0] + loss, carry[1] + grad), None

    start = (jnp.zeros((), v.dtype), jnp.zeros_like(v))
    (loss, grad), _ = jax.lax.scan(body, start, jnp.arange(_n_chunks(data)))
    penalty, penalty_grad = jax.value_and_grad(lambda v_: 0.5 * jnp.sum(penalty_residuals(v_, data) ** 2))(v)
    return loss + penalty, to_theta(grad + penalty_grad)[0], merged


def chunked_evaluate(theta, data, merged):
    """(data χ², penalty ‖Qv − t‖², unweighted residuals of every (padded) row); ``merged``: Î per
    voxel at θ (:func:`chunk_merged`, or the third result of :func:`chunked_value_and_grad`)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    v = model_values(theta, data)

    def body(chi2, index):
        rows = _chunk(data, index)
        r = _chunk_residual(v, rows, merged)
        weighted = rows.sqrt_weight * r
        return chi2 + jnp.sum(weighted * weighted), r

    chi2, r = jax.lax.scan(body, jnp.zeros((), v.dtype), jnp.arange(_n_chunks(data)))
    return chi2, jnp.sum(penalty_residuals(v, data) ** 2), r.reshape(-1)


def chunked_partials(theta, data, merged):
    """∂r_i/∂(a_i, b_i, c_i, d_i, Î) of every (padded) row, as an (N, 5) array, chunk by chunk: forward-mode
    autodiff of the per-row prediction, Î at its profiled value ``merged`` (as for :func:`chunked_evaluate`).
    The chain rule to the control points (the sparse, linear interpolation) is applied where the normal
    matrix is assembled."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    v = model_values(theta, data)

    def body(carry, index):
        rows = _chunk(data, index)
        primals = (*_per_observation(v, rows), merged[rows.group])
        columns = []
        for k in range(5):
            tangents = tuple(jnp.ones_like(x) if i == k else jnp.zeros_like(x) for i, x in enumerate(primals))
            columns.append(-rows.sqrt_weight * jax.jvp(_prediction, primals, tangents)[1])
        return carry, jnp.stack(columns, axis=1)

    _, partials = jax.lax.scan(body, 0, jnp.arange(_n_chunks(data)))
    return partials.reshape(-1, 5)
