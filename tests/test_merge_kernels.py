"""The compiled outlier round against a hand-worked voxel and against its NumPy reference."""

import numpy as np
import pytest

from gpudiffuse.merge_kernels import outlier_round, outlier_round_numpy, weighted_sums

ROUNDS = [outlier_round, outlier_round_numpy]


@pytest.mark.parametrize("round_", ROUNDS, ids=["numba", "numpy"])
def test_hand_worked_voxel(round_):
    # voxel 0: three observations 10, 10, 40 (σ = 1): mean 20, |r| = 10, 10, 20, rms = √200 ≈ 14.1;
    # k = 1 → 20 > 14.1 is dropped, 10 is not. Voxel 1 has one row: never judged.
    group = np.array([0, 0, 0, 1])
    values = np.array([10.0, 10.0, 40.0, 1e6])
    sigma = np.ones(4)
    keep = np.ones(4, bool)
    assert round_(group, values, sigma, keep, 2, 1.0) == 1
    assert keep.tolist() == [True, True, False, True]
    # now voxel 0 is 10, 10: both residuals 0, nothing above k·rms = 0
    assert round_(group, values, sigma, keep, 2, 1.0) == 0
    keep[:] = [True, False, False, True]
    assert round_(group, values, sigma, keep, 2, 1.0) == -1  # no voxel with two kept rows


def test_weighted_sums_hand_worked():
    sw, swi, n = weighted_sums(np.array([0, 1, 1, 1]), np.array([5.0, 1.0, 3.0, 7.0]), np.array([1.0, 1.0, 0.5, 2.0]),
                               np.array([True, True, True, False]), 3)
    assert sw.tolist() == [1.0, 1.0 + 4.0, 0.0]
    assert swi.tolist() == [5.0, 1.0 + 12.0, 0.0]
    assert n.tolist() == [1, 2, 0]


def test_compiled_rounds_equal_numpy_rounds_with_ties_and_bad_rows():
    rng = np.random.default_rng(11)
    n_rows, n_groups = 50_000, 9_000
    group = rng.integers(0, n_groups, n_rows)
    values = rng.normal(100, 10, n_rows)
    values[rng.choice(n_rows, 300, replace=False)] += 400  # gross outliers
    values[:200] = np.repeat(values[200:300], 2)  # tied residuals
    group[:200] = np.repeat(group[200:300], 2)
    sigma = rng.uniform(5, 15, n_rows)
    sigma[:200] = np.repeat(sigma[200:300], 2)
    sigma[rng.choice(n_rows, 50, replace=False)] = 0.0  # invalid rows, never kept
    keep_a = np.isfinite(values) & (sigma > 0)
    keep_b = keep_a.copy()
    dropped = []
    for _ in range(8):
        a = outlier_round(group, values, sigma, keep_a, n_groups, 3.0)
        b = outlier_round_numpy(group, values, sigma, keep_b, n_groups, 3.0)
        assert a == b
        np.testing.assert_array_equal(keep_a, keep_b)
        dropped.append(a)
        if a <= 0:
            break
    assert dropped[0] >= 250  # the gross outliers go first
