"""Grid sizes scaled to the data, and the sparse penalty operators (numpy and JAX paths)."""

import numpy as np
import pytest

from gpudiffuse.errors import GpudiffuseError
from gpudiffuse.scaling import ScaleOptions, build_design, fit_scales
from gpudiffuse.scaling.loss import penalty_loss
from gpudiffuse.scaling.model import effective, initial_params, penalty_operators
from gpudiffuse.simulate import simulate_observation_table


def _design(n_frames, options, n_obs=5000):
    table, truth = simulate_observation_table(n_obs, n_batches=2, n_frames=n_frames, seed=1)
    return table, truth, build_design(table, [0, 1], {0: n_frames, 1: n_frames // 2}, options, (487, 619),
                                      truth["regions_map"])


@pytest.mark.parametrize("n_frames, expected", [(40, (9, 3, 3)), (400, (81, 21, 21)), (3600, (721, 181, 181))])
def test_frame_nodes_follow_the_longest_sweep(n_frames, expected):
    _, _, design = _design(n_frames, ScaleOptions())
    # one node per 5 (b) / 20 (c, a) frames of the longest sweep, plus the end node
    assert (design.shape_b[1], design.shape_c[2], design.shape_a[3]) == expected
    assert design.shape_c[1] == 6 and design.shape_a[1:3] == (5, 5)


def test_explicit_frame_node_counts_override_the_spacing():
    _, _, design = _design(400, ScaleOptions(c_nodes=(4, 2), a_nodes=(3, 4, 5)))
    assert design.shape_c == (2, 4, 2) and design.shape_a == (2, 3, 4, 5)


@pytest.mark.parametrize("bad", [dict(frames_per_c_node=0), dict(a_nodes=(5, 5, 0)), dict(c_nodes=(6,))])
def test_bad_grid_options(bad):
    with pytest.raises(GpudiffuseError, match="c_nodes|grid sizes"):
        ScaleOptions(**bad)


def test_penalty_operators_are_sparse_and_jax_matches_numpy():
    """A 3600-frame sweep has 9050 control points of a: the operators stay sparse (a handful of
    nonzeros per row), and the JAX segment-sum penalty equals the dense matrix products."""
    import jax
    import jax.numpy as jnp

    _, _, design = _design(3600, ScaleOptions())
    ops = penalty_operators(design)
    assert design.n_a == 2 * 5 * 5 * 181
    assert ops["a"].nnz <= 5 * ops["a"].shape[0]
    rng = np.random.default_rng(0)
    params = initial_params(design)
    params = params._replace(b=params.b._replace(values=rng.uniform(0.8, 1.2, design.n_b)),
                             c=params.c._replace(values=rng.normal(0, 1, design.n_c)),
                             a=params.a._replace(values=rng.uniform(0.8, 1.2, design.n_a)),
                             d=params.d._replace(values=rng.uniform(0.9, 1.1, design.n_regions)))
    lam = {"b": 0.3, "c": 0.7, "c_ridge": 1e-3, "a": 1.1, "a_radial": 2.0, "d": 0.5}
    b, c, a, d = effective(params, design)
    dense = (lam["b"] * np.sum((ops["b"].toarray() @ b) ** 2) + lam["c"] * np.sum((ops["c"].toarray() @ c) ** 2)
             + lam["c_ridge"] * np.sum(c**2) + lam["a"] * np.sum((ops["a"].toarray() @ a) ** 2)
             + lam["a_radial"] * np.sum((ops["a_radial"].toarray() @ a) ** 2) + lam["d"] * np.sum((d - 1) ** 2))
    with jax.enable_x64(True):
        jax_params = jax.tree_util.tree_map(jnp.asarray, params)
        got_jax = float(penalty_loss(jax_params, design, ops, lam, jnp))
    assert penalty_loss(params, design, ops, lam) == pytest.approx(dense, rel=1e-12)
    assert got_jax == pytest.approx(dense, rel=1e-10)


@pytest.mark.parametrize("method", ["joint", "alternating"])
def test_long_sweep_fits(method):
    """2 × 1800 frames: 1442 + 2 × 6 × 91 + 2 × 25 × 91 control points, both methods run."""
    table, truth, design = _design(1800, ScaleOptions(), n_obs=60_000)
    options = ScaleOptions(method=method, max_iterations=20, outlier_rounds=())
    fit = fit_scales(table, table["H"], design, options, progress=False)
    assert fit.chi2_after < 0.5 * fit.chi2_before
    assert all(np.all(np.isfinite(v.values)) for v in fit.params)


def test_low_rank_penalty_solve_equals_the_dense_solution():
    """The baseline's Woodbury treatment of the dense radial rows gives the normal-equation solution."""
    import scipy.sparse as sp

    from gpudiffuse.scaling.alternating import _solve

    rng = np.random.default_rng(5)
    x = sp.random(400, 30, density=0.2, random_state=6, format="csr")
    y, weight = rng.normal(size=400), rng.uniform(0.5, 2, 400)
    smooth = sp.random(30, 30, density=0.1, random_state=7)
    penalty = (smooth.T @ smooth).tocsr()
    radial = rng.normal(size=(3, 30))
    free = np.ones(30, bool)
    free[4] = False
    got = _solve(x, y, weight, penalty, free, low_rank=(sp.csr_matrix(radial), 2.5))
    lhs = (x.T @ sp.diags(weight) @ x).toarray() + penalty.toarray() + 2.5 * radial.T @ radial
    rhs = x.T @ (weight * y)
    cols = np.flatnonzero(free)
    want = np.zeros(30)
    want[cols] = np.linalg.solve(lhs[np.ix_(cols, cols)], rhs[cols])
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("a_nodes", [(5, 5, None), (1, 4, 2)])
def test_cell_corners_interpolate_hat_functions(a_nodes):
    """Each row's a nodes (first corner + fixed offsets) and weights reproduce the trilinear hat
    interpolation of a(x, y, z) written out directly, also on an axis of a single node."""
    table, _, design = _design(40, ScaleOptions(a_nodes=a_nodes), n_obs=2000)
    nb, nx, ny, nz = design.shape_a
    assert design.ia.shape == (2000, 8) and design.ia.min() >= 0 and design.ia.max() < design.n_a
    rng = np.random.default_rng(5)
    values = rng.normal(size=design.n_a)
    grid = values.reshape(nb, nx, ny, nz)
    got = (values[design.ia] * design.wa).sum(axis=1)

    def hat(u, n):  # fractional node position on [0, 1] → (lower node, weight of the upper)
        p = np.clip(u, 0, 1) * (n - 1)
        i0 = np.minimum(np.floor(p).astype(int), max(n - 2, 0))
        return i0, p - i0

    batch = table["batch"].astype(int)
    last = np.where(batch == 0, 39, 19)
    x0, tx = hat(table["ix"] / 486, nx)
    y0, ty = hat(table["iy"] / 618, ny)
    z0, tz = hat(table["frame"] / last, nz)
    want = np.zeros(len(batch))
    for dx, wx in ((0, 1 - tx), (1, tx)):
        for dy, wy in ((0, 1 - ty), (1, ty)):
            for dz, wz in ((0, 1 - tz), (1, tz)):
                node = grid[batch, np.minimum(x0 + dx, nx - 1), np.minimum(y0 + dy, ny - 1), np.minimum(z0 + dz, nz - 1)]
                want += node * wx * wy * wz
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c_nodes", [(6, None), (1, 3)])
def test_b_and_c_corners_and_regions_follow_the_rows(c_nodes):
    """b interpolates linearly along the frame, c bilinearly over |s| × frame (also with one |s|
    node), and each row's region is the map's value at its rounded pixel (−1 read as region 0)."""
    table, truth, design = _design(40, ScaleOptions(c_nodes=c_nodes), n_obs=2000)
    batch = table["batch"].astype(int)
    u = table["frame"] / np.where(batch == 0, 39, 19)
    nb, nbz = design.shape_b
    _, ns, nzc = design.shape_c
    rng = np.random.default_rng(6)
    b_values, c_values = rng.normal(size=design.n_b), rng.normal(size=design.n_c)

    def linear(grid, axis_u, n):  # values along one axis at positions u ∈ [0, 1], written out
        p = np.clip(axis_u, 0, 1) * (n - 1)
        return np.array([np.interp(pi, np.arange(n), g) for pi, g in zip(p, grid)])

    want_b = linear(b_values.reshape(nb, nbz)[batch], u, nbz)
    np.testing.assert_allclose((b_values[design.ib] * design.wb).sum(axis=1), want_b, rtol=1e-12, atol=1e-12)

    s = (table["s"] - table["s"].min()) / (table["s"].max() - table["s"].min())
    grid_c = c_values.reshape(nb, ns, nzc)[batch]  # (rows, ns, nzc)
    along_z = np.stack([linear(grid_c[:, k], u, nzc) for k in range(ns)], axis=1)
    want_c = linear(along_z, s, ns)
    np.testing.assert_allclose((c_values[design.ic] * design.wc).sum(axis=1), want_c, rtol=1e-12, atol=1e-12)

    regions = truth["regions_map"]
    rows = np.clip(np.rint(table["iy"]).astype(int), 0, regions.shape[0] - 1)
    cols = np.clip(np.rint(table["ix"]).astype(int), 0, regions.shape[1] - 1)
    np.testing.assert_array_equal(design.region, np.maximum(regions[rows, cols], 0))
    assert design.n_regions == regions.max() + 1
