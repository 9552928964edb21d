"""Scaling acceptance on simulated images: two sweeps with known a(ix, iy, z), b(z), c(|s|, z) and
per-module d (``simulate --preset scaling``). Slow (about 10 minutes on 2 cores): run with --run-slow.

Measured when written (dmin 2.0 Å, wedges of 4 frames), see the printed tables."""

import os

import h5py
import numpy as np
import pytest

from gpudiffuse.experiment import ImportParameters
from gpudiffuse.integration import IntegrationParameters
from gpudiffuse.merge import merge
from gpudiffuse.pipeline import ProcessParameters, process
from gpudiffuse.steps.integrate import load_observations
from gpudiffuse.steps.scale import fit_observations
from gpudiffuse.scaling import ScaleOptions, apply_scales
from gpudiffuse.scaling.model import effective
from gpudiffuse.simulate import compare_with_truth, load_model, simulate_dataset

pytestmark = pytest.mark.slow
NDIV = (3, 3, 3)


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaling")
    data, out = str(root / "data"), str(root / "out")
    simulate_dataset(data, "scaling", progress=False)
    process(ProcessParameters(ImportParameters(expt=(os.path.join(data, "experiments.expt"),)),
                              IntegrationParameters(ndiv=NDIV, dmin=2.0, wedge_frames=4), device="cpu", scale="none"),
            out, progress=False)
    from gpudiffuse.experiment import read_experiment

    experiment = read_experiment(os.path.join(out, "experiment.nxs"))
    table = load_observations(out)
    fits = {m: fit_observations(experiment, table, NDIV, ScaleOptions(method=m), progress=False)
            for m in ("joint", "alternating")}
    for m, fit in fits.items():
        print(fit.summary())
    return data, experiment, table, fits


def _merge(experiment, table):
    crystal = experiment.sweeps[0].crystal
    return merge(table, crystal.space_group, NDIV, crystal.A.T @ crystal.A)


def test_recovered_b_and_d(scaled):
    data, experiment, table, fits = scaled
    with h5py.File(os.path.join(data, "truth.h5")) as f:
        decay, modules = f["decay"][()], f["module_factors"][()]
    for method, fit in fits.items():
        b, c, a, d = effective(fit.params, fit.design)
        b = b.reshape(fit.design.shape_b)
        nodes = np.linspace(0, decay.shape[1] - 1, b.shape[1])
        truth = np.array([np.interp(nodes, np.arange(decay.shape[1]), row) for row in decay])
        k = np.exp(np.mean(np.log(b / truth)))
        print(f"{method}: max |b/(k b_true) − 1| = {np.abs(b / (k * truth) - 1).max():.4f}, "
              f"max |d/d_true − 1| = {np.abs(d / modules - 1).max():.4f}")
        assert np.abs(b / (k * truth) - 1).max() < 0.01
        np.testing.assert_allclose(d, modules, rtol=0.02)


def test_merged_map_vs_truth_better_than_unscaled(scaled):
    data, experiment, table, fits = scaled
    model = load_model(data)
    unscaled = compare_with_truth(_merge(experiment, table)[0], model, NDIV)
    scaled_acc = compare_with_truth(_merge(experiment, apply_scales(table, fits["joint"]))[0], model, NDIV)
    print("shell  d_min  CC(unscaled)  CC(scaled)  <I/sig>")
    for i, (u, s) in enumerate(zip(unscaled["shells"], scaled_acc["shells"])):
        print(f"{i:5d} {s['d_min']:6.2f} {u['cc']:12.4f} {s['cc']:11.4f} {s['i_over_sigma']:8.1f}")
    print(f"overall {unscaled['overall_cc']:.4f} -> {scaled_acc['overall_cc']:.4f}")
    assert scaled_acc["overall_cc"] >= 0.99 and scaled_acc["overall_cc"] > unscaled["overall_cc"]
    for u, s in zip(unscaled["shells"], scaled_acc["shells"]):
        if s["i_over_sigma"] > 10:
            assert s["cc"] >= 0.98 and s["cc"] > u["cc"]


def test_joint_fit_versus_the_alternating_baseline(scaled):
    """Both minimise the same loss; compared on the same observations (no outlier rounds, which
    would otherwise reject slightly different sets). Gauss–Newton must converge and reach a total
    loss (χ² + penalties) at least as low as the baseline's after 500 iterations and as L-BFGS's
    run to its convergence. CC½ per shell is printed, not asserted (DESIGN §10: an unconverged
    baseline's CC½ can run above the optimum's; benchmarks/scaling_baseline.py)."""
    _, experiment, table, _ = scaled
    fits = {m: fit_observations(experiment, table, NDIV, ScaleOptions(method=m, outlier_rounds=(), max_iterations=its),
                                progress=False) for m, its in (("joint", 100), ("lbfgs", 2000), ("alternating", 500))}
    stats = {m: _merge(experiment, apply_scales(table, f))[1] for m, f in fits.items()}
    for m, f in fits.items():
        print(f"{m}: data chi2 {f.chi2_after:.9g}, penalties {f.penalty_after:.9g}, total "
              f"{f.chi2_after + f.penalty_after:.9g}, {f.iterations} iterations, converged {f.converged}")
    print("CC1/2 per shell (joint, lbfgs, alternating):")
    for row in zip(*(stats[m]["cc_half"] for m in fits)):
        print("  " + " ".join(f"{x:.5f}" for x in row))
    total = {m: f.chi2_after + f.penalty_after for m, f in fits.items()}
    assert fits["joint"].converged and fits["joint"].iterations <= 20
    assert total["joint"] <= total["alternating"]
    assert total["joint"] <= total["lbfgs"] * (1 + 1e-12)
