"""The chunked data term against whole-table JAX autodiff of the pure residual function."""

import dataclasses

import numpy as np
import pytest

from gpudiffuse.scaling import row_chunks
from gpudiffuse.scaling.residuals import ScalingData, padded_rows, residuals

from test_gauss_newton import _joint_problem


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4096 rows, so that the test problem spans several and its last one is padded."""
    monkeypatch.setattr(row_chunks, "CHUNK_ROWS", 4096)
    joint, design, group = _joint_problem("two_batches")
    data = joint.data
    n = data.n_rows
    assert n > 3 * 4096 and n % 4096 != 0
    fields = {name: _repadded(getattr(data, name), n) for name in row_chunks.ROW_FIELDS}
    return dataclasses.replace(data, **fields), joint


def _repadded(values, n):
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        return jnp.asarray(padded_rows(np.asarray(values)[:n]))


def test_chunked_value_gradient_residuals_and_partials_equal_whole_table_autodiff(small_chunks):
    """Loss and gradient (Î held fixed per chunk) equal jax.value_and_grad of ½‖residuals‖² over
    the whole table (differentiating through the profiled Î); the residuals and the per-row
    partials equal their whole-table forms."""
    import jax
    import jax.numpy as jnp

    from gpudiffuse.scaling.residuals import _merged, _per_observation, model_values

    data, joint = small_chunks
    assert isinstance(data, ScalingData) and data.intensity.shape[0] // 4096 >= 4
    theta = np.random.default_rng(5).normal(0, 0.02, joint.basis.n_theta)
    n = data.n_rows

    def half_loss(t):
        r_data, r_penalty = residuals(t, data)
        return 0.5 * (jnp.sum(r_data**2) + jnp.sum(r_penalty**2))

    with jax.enable_x64(True):
        t = jnp.asarray(theta)
        want_value, want_grad = jax.value_and_grad(half_loss)(t)
        value, grad, merged_per_voxel = jax.jit(row_chunks.chunked_value_and_grad)(t, data)
        chi2, penalty, r = jax.jit(row_chunks.chunked_evaluate)(t, data, merged_per_voxel)
        r_data, r_penalty = residuals(t, data)
        partials = np.asarray(jax.jit(row_chunks.chunked_partials)(t, data, merged_per_voxel))
        v = model_values(t, data)
        a, b, c, d = _per_observation(v, data)
        merged = _merged(data, a * d * b, a * d * c)[data.group]
        # ∂r/∂(a, b, c, d, Î) = −√w ∂prediction/∂(…), by hand: prediction = a·d·(b·Î + c)
        by_hand = -np.asarray(data.sqrt_weight)[:, None] * np.stack(
            [d * (b * merged + c), a * d * merged, a * d, a * (b * merged + c), a * d * b], axis=1)
        r_data, r_penalty = np.asarray(r_data), np.asarray(r_penalty)
    assert float(value) == pytest.approx(float(want_value), rel=1e-12)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=0, atol=1e-10 * np.abs(want_grad).max())
    assert float(chi2) == pytest.approx(float(np.sum(r_data**2)), rel=1e-12)
    assert float(penalty) == pytest.approx(float(np.sum(r_penalty**2)), rel=1e-12)
    sqrt_weight = np.asarray(data.sqrt_weight)
    np.testing.assert_allclose(sqrt_weight[:n] * np.asarray(r)[:n], r_data[:n], rtol=0,
                               atol=1e-12 * np.abs(r_data).max())
    np.testing.assert_allclose(partials, by_hand, rtol=0, atol=1e-12 * np.abs(by_hand).max())
    assert np.all(partials[n:] == 0.0) and np.all(np.asarray(r)[n:] == 0.0)
