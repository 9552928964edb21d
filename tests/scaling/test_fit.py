import dataclasses
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
    fits = {m: fit_scales(table, table["H"], design, dataclasses.replace(OPTIONS, method=m)) for m in
            ("joint", "alternating")}
    return table, truth, design, fits


@pytest.mark.parametrize("method", ["joint", "alternating"])
def test_recovers_b_within_1_percent_and_d_within_2_percent(fitted, method):
    table, truth, design, fits = fitted
    a, b, c, d = component_values(fits[method].params, design)
    assert b_error(b, truth["b"]) < 0.01
    np.testing.assert_allclose(effective(fits[method].params, design)[3], truth["d_regions"], rtol=0.02)
    dof = len(table["rate"]) - len(np.unique(table["H"]))
    assert fits[method].chi2_after / dof < 1.1 < fits[method].chi2_before / dof  # the noise floor is reached


def test_joint_reaches_a_loss_at_least_as_low_as_alternating():
    """Same observations (no outlier rounds), same loss: the joint fit's χ² + penalties is not higher."""
    table, truth, design = problem("two_batches")
    options = dataclasses.replace(OPTIONS, outlier_rounds=())
    fits = {m: fit_scales(table, table["H"], design, dataclasses.replace(options, method=m))
            for m in ("joint", "alternating")}
    assert fits["joint"].converged
    assert fits["joint"].history[-1] <= fits["alternating"].history[-1] * (1 + 1e-9)
    assert fits["joint"].chi2_after == pytest.approx(fits["alternating"].chi2_after, rel=1e-3)


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


def test_non_convergence_is_reported_and_the_last_good_model_kept(caplog):
    table, truth, design = problem("two_batches")
    with caplog.at_level(logging.WARNING):
        fit = fit_scales(table, table["H"], design, dataclasses.replace(OPTIONS, max_iterations=3, outlier_rounds=()))
    assert not fit.converged
    assert "did not converge" in caplog.text
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
    sub_design = dataclasses.replace(design, **{k: getattr(design, k)[rows] for k in
                                                ("ib", "wb", "ic", "wc", "ia", "wa", "region")})
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
