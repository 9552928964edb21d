import dataclasses
import functools
import logging

import numpy as np
import pytest

from gpudiffuse.errors import GpudiffuseError
from gpudiffuse.scaling import apply_scales, component_values, fit_scales
from gpudiffuse.scaling.model import effective, initial_params

from helpers import OPTIONS, PROBLEMS, b_error, problem


@pytest.fixture(scope="module", params=sorted(PROBLEMS))
def fitted(request):
    table, truth, design = problem(request.param)
    return table, truth, design, {"joint": fit_scales(table, table["H"], design, OPTIONS, progress=False)}


def test_joint_recovers_b_within_1_percent_and_d_within_2_percent(fitted):
    table, truth, design, fits = fitted
    fit = fits["joint"]
    assert fit.converged and fit.iterations <= 20
    a, b, c, d = component_values(fit.params, design)
    assert b_error(b, truth["b"]) < 0.01
    np.testing.assert_allclose(effective(fit.params, design)[3], truth["d_regions"], rtol=0.02)
    dof = len(table["rate"]) - len(np.unique(table["H"]))
    assert fit.chi2_after / dof < 1.1 < fit.chi2_before / dof  # the noise floor is reached


@functools.cache
def baseline(name):
    """The alternating baseline after 200 iterations, no outlier rounds (shared by two tests)."""
    table, truth, design = problem(name)
    return fit_scales(table, table["H"], design, dataclasses.replace(OPTIONS, method="alternating", outlier_rounds=(),
                                                                     max_iterations=200), progress=False)


@pytest.mark.parametrize("name", ["two_batches", "stills"])
def test_alternating_baseline_recovers_b_and_d(name):
    """The baseline on a rotation set and on stills (one frame per batch, whose second frame node is
    reached by no data: it used to make the sparse solve singular)."""
    table, truth, design = problem(name)
    fit = baseline(name)
    assert all(np.all(np.isfinite(v.values)) for v in fit.params)
    a, b, c, d = component_values(fit.params, design)
    assert b_error(b, truth["b"]) < (0.01 if name == "two_batches" else 0.02)
    np.testing.assert_allclose(effective(fit.params, design)[3], truth["d_regions"], rtol=0.02)


@pytest.mark.parametrize("name", ["two_batches", "stills"])
def test_joint_loss_is_at_most_the_lbfgs_and_the_baseline_loss(name):
    """Same observations (no outlier rounds), same loss: Gauss–Newton's χ² + penalties is not higher
    than L-BFGS's, run to its own convergence, nor than the alternating baseline's after 200
    iterations (run to convergence in benchmarks/scaling_catalogue.py; too slow for a test)."""
    table, truth, design = problem(name)
    options = dataclasses.replace(OPTIONS, outlier_rounds=())
    fits = {m: fit_scales(table, table["H"], design, dataclasses.replace(options, method=m, max_iterations=its),
                          progress=False) for m, its in (("joint", 50), ("lbfgs", 1000))}
    fits["alternating"] = baseline(name)
    assert fits["joint"].converged and fits["lbfgs"].converged
    total = {m: f.chi2_after + f.penalty_after for m, f in fits.items()}
    assert total["joint"] <= total["lbfgs"] * (1 + 1e-12)
    assert total["joint"] <= total["alternating"]
    assert fits["joint"].history[-1] == pytest.approx(total["joint"], rel=1e-9)


def test_applying_the_model(fitted):
    table, truth, design, fits = fitted
    fit = fits["joint"]
    scaled = apply_scales(table, fit)
    a, b, c, d = component_values(fit.params, design)
    np.testing.assert_allclose(scaled["rate"], table["rate"] / (a * b * d) - c / b)
    np.testing.assert_allclose(scaled["sigma"], table["sigma"] / (a * b * d))
    # the scaled observations of one voxel agree with each other to about the noise
    group = truth["group"]
    counts = np.bincount(group)
    means = np.bincount(group, weights=scaled["rate"]) / np.maximum(counts, 1)
    spread = np.std(scaled["rate"] / means[group] - 1)
    raw = np.std(table["rate"] / (np.bincount(group, weights=table["rate"]) / np.maximum(counts, 1))[group] - 1)
    assert spread < 0.5 * raw


def test_degeneracies_are_removed_by_the_parametrisation():
    table, truth, design = problem("two_batches")
    params = initial_params(design)
    rng = np.random.default_rng(0)
    params = params._replace(b=params.b._replace(values=rng.uniform(0.5, 2, design.n_b)),
                             a=params.a._replace(values=rng.uniform(0.5, 2, design.n_a)))
    b, c, a, d = effective(params, design)
    assert b.mean() == pytest.approx(1.0)
    doubled = params._replace(b=params.b._replace(values=2 * params.b.values),
                              d=params.d._replace(values=3 * params.d.values))
    for x, y in zip(effective(params, design), effective(doubled, design)):
        np.testing.assert_allclose(x, y)
    groups = np.bincount(design.a_group, weights=a) / np.bincount(design.a_group)
    np.testing.assert_allclose(groups, 1.0)


def test_bad_input():
    table, truth, design = problem("two_batches")
    with pytest.raises(GpudiffuseError, match="batch 7 has no observations"):
        fit_scales(table, table["H"], design, OPTIONS, batches=[0, 1, 7])
    bad = dict(table, sigma=np.zeros_like(table["sigma"]))
    with pytest.raises(GpudiffuseError, match="all observation weights are zero"):
        fit_scales(bad, table["H"], design, OPTIONS)
    nan = dict(table, rate=table["rate"].copy())
    nan["rate"][10] = np.nan
    with pytest.raises(GpudiffuseError, match="NaN or infinite values in column 'rate'"):
        fit_scales(nan, table["H"], design, OPTIONS)


@pytest.mark.parametrize("method", ["lbfgs", "alternating"])
def test_non_convergence_is_reported_and_the_last_good_model_kept(caplog, method):
    table, truth, design = problem("two_batches")
    with caplog.at_level(logging.WARNING):
        fit = fit_scales(table, table["H"], design, dataclasses.replace(OPTIONS, method=method, max_iterations=3,
                                                                        outlier_rounds=()), progress=False)
    assert not fit.converged
    assert "round 0 did not converge" in caplog.text
    assert all(np.all(np.isfinite(v.values)) for v in fit.params)
    assert fit.chi2_after < fit.chi2_before


def test_curvature_diagonal_matches_autodiff_jacobian():
    """The preconditioner's per-node curvature Σ w (∂model/∂v)² at the starting model equals the
    column sums of the squared Jacobian of the model prediction, taken by JAX autodiff."""
    import jax
    import jax.numpy as jnp

    from gpudiffuse.scaling.loss import data_curvature, merged_intensity

    table, truth, design = problem("two_batches")
    rows = np.arange(0, len(table["rate"]), 40)  # a subset keeps the dense Jacobian small
    sub = {k: v[rows] for k, v in table.items()}
    sub_design = dataclasses.replace(design, **{k: getattr(design, k)[rows] for k in design.PER_ROW})
    _, group = np.unique(sub["H"], return_inverse=True)
    weight = 1.0 / sub["sigma"] ** 2
    n_groups = group.max() + 1
    merged = merged_intensity(sub["rate"], weight, group, n_groups, np.ones(len(rows)), np.zeros(len(rows)))[group]

    def prediction(b, c, a, d):
        interp = lambda v, i, w: (v[i] * w).sum(axis=1)  # noqa: E731
        return (interp(a, sub_design.ia, sub_design.wa) * d[sub_design.region]
                * (interp(b, sub_design.ib, sub_design.wb) * merged + interp(c, sub_design.ic, sub_design.wc)))

    with jax.enable_x64(True):
        start = (jnp.ones(design.n_b), jnp.zeros(design.n_c), jnp.ones(design.n_a), jnp.ones(design.n_regions))
        jacobians = jax.jacfwd(prediction, argnums=(0, 1, 2, 3))(*start)
        expected = [np.asarray((weight[:, None] * np.asarray(j) ** 2).sum(axis=0)) for j in jacobians]
    curvature = data_curvature(sub_design, sub["rate"], weight, group, n_groups)
    for got, want in zip((curvature.b, curvature.c, curvature.a, curvature.d), expected):
        np.testing.assert_allclose(got.values, want, rtol=1e-10)
