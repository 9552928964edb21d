"""The Gauss–Newton joint fit: its parametrisation, its normal matrix against JAX autodiff, its
compiled functions, convergence, and its uncertainties against the scatter over noise draws."""

import dataclasses
import logging

import numpy as np
import pytest

from gpudiffuse.scaling import fit_scales
from gpudiffuse.scaling.gauss_newton import VoxelOrder
from gpudiffuse.scaling.joint import JointProblem, _compiled
from gpudiffuse.scaling.loss import data_curvature, relative_weights
from gpudiffuse.scaling.model import build_design, penalty_operators
from gpudiffuse.scaling.residuals import reduced_basis
from gpudiffuse.simulate import simulate_observation_table

from helpers import OPTIONS, problem


def _joint_problem(name, options=OPTIONS):
    table, truth, design = problem(name, options)
    unit = np.median(table["rate"])
    intensity, weight = table["rate"] / unit, (unit / table["sigma"]) ** 2
    _, group = np.unique(table["H"], return_inverse=True)
    n_groups = group.max() + 1
    ops = penalty_operators(design)
    lam = relative_weights(design, ops, options, data_curvature(design, intensity, weight, group, n_groups))
    return JointProblem(design, ops, lam, intensity, weight, group, n_groups, options), design, group


@pytest.mark.parametrize("centre_c", [False, True])
def test_basis_satisfies_the_constraints_and_leaves_no_null_direction(centre_c):
    """v = v₀ + Tθ obeys mean(b) = 1, mean(a) = 1 per (batch, frame node), mean(d) = 1 and the c
    constraint for every θ; T has full column rank and the normal matrix in θ is positive definite
    (its smallest eigenvalue is not negligible next to the largest)."""
    options = dataclasses.replace(OPTIONS, centre_c=centre_c)
    table, truth, _ = problem("two_batches")
    design = build_design(table, [0, 1], {0: truth["n_frames"], 1: truth["n_frames"]}, options, (487, 619),
                          truth["regions_map"])
    basis = reduced_basis(design)
    theta = np.random.default_rng(3).normal(0, 0.1, basis.n_theta)
    v = basis.values(theta)
    b, c, a, d = np.split(v, np.cumsum([design.n_b, design.n_c, design.n_a]))
    assert b.mean() == pytest.approx(1.0) and d.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(np.bincount(design.a_group, weights=a) / np.bincount(design.a_group), 1.0)
    if centre_c:
        np.testing.assert_allclose(c.reshape(design.shape_c).sum(axis=(0, 2)), 0.0, atol=1e-12)
    else:
        assert np.all(c[~design.c_free] == 0.0)
    assert np.linalg.svd(basis.matrix.toarray(), compute_uv=False).min() > 0.1
    np.testing.assert_allclose(basis.theta(v), theta, atol=1e-10)
    solver, _, _ = _joint_problem("two_batches", options)
    eigenvalues = np.linalg.eigvalsh(solver.solver.assemble(np.zeros(solver.basis.n_theta)))
    assert eigenvalues.min() > 1e-9 * eigenvalues.max()


@pytest.mark.parametrize("method", ["sparse", "dense"])
@pytest.mark.parametrize("a_nodes", [(4, 4, 2), (4, 4, 1)])
def test_normal_matrix_is_the_schur_complement_of_the_autodiff_jacobian(method, a_nodes):
    """JᵀJ over θ with Î eliminated, from the compiled kernel, equals the Schur complement
    J_θᵀJ_θ − J_θᵀJ_Î (J_ÎᵀJ_Î)⁻¹ J_ÎᵀJ_θ formed from jax.jacfwd of the residuals over (θ, Î).
    With one node of a along z, a row's corners repeat a column (the kernel's general path)."""
    import jax
    import jax.numpy as jnp

    from gpudiffuse.scaling import residuals as R

    joint, design, group = _joint_problem("two_batches", dataclasses.replace(OPTIONS, a_nodes=a_nodes))
    assert np.all(np.diff(design.a_offsets) > 0) == (a_nodes[2] > 1)
    joint.voxels = dataclasses.replace(joint.voxels, method=method)
    theta = np.random.default_rng(1).normal(0, 0.02, joint.basis.n_theta)
    got = joint.solver.assemble(theta)
    data = joint.data

    def residuals_at(t, merged):
        v = R.model_values(t, data)
        a, b, c, d = R._per_observation(v, data)
        r = data.sqrt_weight * (data.intensity - a * d * (b * merged[data.group] + c))
        penalty = jax.ops.segment_sum(data.penalty_value * v[data.penalty_col], data.penalty_row,
                                      num_segments=data.penalty_target.shape[0]) - data.penalty_target
        return jnp.concatenate([r, penalty])

    with jax.enable_x64(True):
        v = R.model_values(jnp.asarray(theta), data)
        a, b, c, d = R._per_observation(v, data)
        merged = R._merged(data, a * d * b, a * d * c)
        j_theta = np.asarray(jax.jacfwd(residuals_at, argnums=0)(jnp.asarray(theta), merged))
        # ∂r/∂Î has one nonzero per observation row: a forward derivative along all ones gives it
        u = np.asarray(jax.jvp(lambda m: residuals_at(jnp.asarray(theta), m), (merged,),
                               (jnp.ones_like(merged),))[1])[:len(group)]
    n_groups = group.max() + 1
    d_diag = np.bincount(group, weights=u**2, minlength=n_groups)
    coupling = np.zeros((n_groups, j_theta.shape[1]))
    np.add.at(coupling, group, u[:, None] * j_theta[:len(group)])
    want = j_theta.T @ j_theta - (coupling / d_diag[:, None]).T @ coupling
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_sampled_normal_matrix_is_used_only_past_the_budget():
    group = np.repeat(np.arange(1000), 8)
    exact = VoxelOrder.of(group, 1000, 300)
    assert exact.fraction == 1.0 and len(exact.order) == len(group)
    sampled = VoxelOrder.of(group, 1000, 300, budget_s=1e-4)
    assert 0 < sampled.fraction < 1 and len(sampled.order) == 8 * round(sampled.fraction * 1000)
    np.testing.assert_array_equal(sampled.order, VoxelOrder.of(group, 1000, 300, budget_s=1e-4).order)


def test_a_second_fit_of_the_same_shape_compiles_nothing_and_gives_the_same_result():
    table, truth, design = problem("two_batches")
    options = dataclasses.replace(OPTIONS, outlier_rounds=(10.0, 5.0))
    first = fit_scales(table, table["H"], design, options, progress=False)
    sizes = {k: f._cache_size() for k, f in _compiled().items()}
    second = fit_scales(table, table["H"], design, options, progress=False)
    assert {k: f._cache_size() for k, f in _compiled().items()} == sizes
    assert second.chi2_after == first.chi2_after
    np.testing.assert_array_equal(second.params.b.values, first.params.b.values)


def test_rounds_report_iterations_and_a_round_that_rejects_nothing_is_skipped():
    table, truth, design = problem("two_batches")
    fit = fit_scales(table, table["H"], design, dataclasses.replace(OPTIONS, outlier_rounds=(1000.0, 5.0)),
                     progress=False)
    assert [r.k for r in fit.rounds] == [None, 1000.0, 5.0]
    assert fit.rounds[1].skipped and fit.rounds[1].iterations == 0 and fit.rounds[1].rejected == 0
    assert all(r.converged for r in fit.rounds) and fit.converged
    assert 1 <= fit.rounds[0].iterations <= 10
    assert fit.iterations == sum(r.iterations for r in fit.rounds)
    # the model after rejection is at least as good on the observations kept
    assert fit.rounds[2].loss <= fit.rounds[0].loss


def test_non_convergence_names_the_round_and_the_option(caplog):
    table, truth, design = problem("two_batches")
    with caplog.at_level(logging.WARNING):
        fit = fit_scales(table, table["H"], design, dataclasses.replace(OPTIONS, max_iterations=1, outlier_rounds=()),
                         progress=False)
    assert not fit.converged
    assert "round 0 did not converge within 1 iterations" in caplog.text and "--scale-iterations" in caplog.text
    assert fit.chi2_after < fit.chi2_before


def test_uncertainties_match_the_scatter_over_noise_draws():
    """σ(b) and σ(d) from the normal matrix against the standard deviation of the fitted values over
    twelve independent noise draws of the same observations (the model's bias cancels)."""
    table, truth = simulate_observation_table(20_000, n_batches=2, n_frames=40, seed=11)
    design = build_design(table, [0, 1], {0: 40, 1: 40}, OPTIONS, (487, 619), truth["regions_map"])
    expected = truth["a"] * truth["d"] * (truth["b"] * truth["intensity"][truth["group"]] + truth["c"])
    rng = np.random.default_rng(12)
    fits = []
    for _ in range(12):
        draw = dict(table, rate=expected + rng.normal(0, 1, len(expected)) * table["sigma"])
        fits.append(fit_scales(draw, table["H"], design, dataclasses.replace(OPTIONS, outlier_rounds=()),
                               progress=False))
    for name in ("b", "d"):
        values = np.array([getattr(f.params, name).values for f in fits])
        sigma = np.mean([getattr(f.sigmas, name).values for f in fits], axis=0)
        ratio = values.std(axis=0, ddof=1).mean() / sigma.mean()
        assert 0.7 < ratio < 1.4, (name, ratio)
        assert np.all(sigma > 0)
