"""The statistical Bragg filter on synthetic histograms with known truth: Poisson voxels with
planted outliers (a second, brighter Poisson component: a Bragg peak's pixels; or a heavy tail),
at low, medium and high rates; and the degenerate cases."""

import numpy as np
import pytest

from gpudiffuse.masking.statistical import neighbour_lists, statistical_filter, window_offsets


def _grid(n):
    return np.stack(np.meshgrid(*(np.arange(n),) * 3, indexing="ij"), -1).reshape(-1, 3)


def _histograms(counts_per_voxel, c_max):
    """(n, c_max + 1) histograms and the counts above c_max, from lists of pixel-frame counts."""
    histogram = np.zeros((len(counts_per_voxel), c_max + 1), np.int64)
    overflow = np.zeros(len(counts_per_voxel), np.int64)
    for i, counts in enumerate(counts_per_voxel):
        low = counts[counts <= c_max]
        histogram[i] = np.bincount(low, minlength=c_max + 1)
        overflow[i] = counts[counts > c_max].sum()
    return histogram, overflow


def test_the_window_is_the_ball_of_radius_2():
    offsets = window_offsets(2.0)
    assert len(offsets) == 33 and tuple(offsets[0]) == (0, 0, 0)  # 1 + 6 + 12 + 8 + 6
    voxels = _grid(5)
    indptr, indices = neighbour_lists(voxels, 2.0)
    centre = 2 * 25 + 2 * 5 + 2
    members = voxels[indices[indptr[centre]:indptr[centre + 1]]]
    assert len(members) == 33 and np.all(((members - voxels[centre]) ** 2).sum(axis=1) <= 4)
    corner_members = indptr[1] - indptr[0]  # (0,0,0): the part of the ball inside the grid
    assert corner_members == sum(1 for o in offsets if np.all(o >= 0))


def test_both_neighbour_lookups_give_the_same_windows():
    """The table over the bounding box and the binary search (used when the box is too large for
    a table) find the same neighbours in the same order, on a scattered set with gaps."""
    rng = np.random.default_rng(3)
    voxels = np.unique(rng.integers(-30, 30, (4000, 3)), axis=0)
    dense = neighbour_lists(voxels, 2.0)
    searched = neighbour_lists(voxels, 2.0, dense_lookup_cells=0)
    assert np.array_equal(dense[0], searched[0]) and np.array_equal(dense[1], searched[1])
    distance2 = ((voxels[dense[1]] - np.repeat(voxels, np.diff(dense[0]), axis=0)) ** 2).sum(axis=1)
    assert dense[1].size > len(voxels) and np.all(distance2 <= 4)


@pytest.mark.parametrize("rate, c_max", [(0.1, 20), (2.0, 20), (15.0, 60)])
def test_planted_outliers_are_all_found_and_few_clean_voxels_are_removed(rate, c_max):
    rng = np.random.default_rng(int(rate * 10))
    voxels = _grid(10)
    n = len(voxels)
    # a smooth rate across the grid (±20 %), 300 pixel-frames per voxel
    smooth = rate * (1 + 0.2 * np.sin(voxels[:, 0] / 3.0) * np.cos(voxels[:, 1] / 4.0))
    samples = [rng.poisson(lam, 300) for lam in smooth]
    planted = rng.choice(n, 12, replace=False)
    for k, v in enumerate(planted):
        if k % 2 == 0:  # a Bragg peak: 15 % of the pixel-frames from a much brighter component
            bright = rng.poisson(4 * rate + 3, 45)
            samples[v] = np.concatenate([rng.poisson(smooth[v], 255), bright])
        else:  # a heavy tail: a few pixel-frames far above the rest
            samples[v] = np.concatenate([rng.poisson(smooth[v], 290), np.full(10, int(3 * rate + 6))])
    histogram, overflow = _histograms(samples, c_max)
    result = statistical_filter(voxels, histogram, overflow)
    assert np.all(result.excluded[planted]), f"missed {planted[~result.excluded[planted]]}"
    clean = np.ones(n, bool)
    clean[planted] = False
    # the greedy walk of DESIGN §7 (and of mdx-lib's code) also takes the noisiest clean voxels:
    # measured 0.5–2.9 % of them here (none of them a neighbour of a planted outlier by necessity)
    assert (result.excluded & clean).sum() <= 0.035 * clean.sum()
    # they are the clean voxels least like Poisson: each had ΔD < 0 before the walk
    assert np.all(result.delta[result.excluded & clean] < 0)
    assert result.summed_D[1] < result.summed_D[0]
    # λ is the neighbourhood's rate, not the outlier's: within 15 % of the smooth rate at the planted voxels
    np.testing.assert_allclose(result.lam[planted], smooth[planted], rtol=0.15, atol=0.05)


def test_overflow_voxels_are_excluded():
    voxels = _grid(4)
    rng = np.random.default_rng(1)
    samples = [rng.poisson(1.0, 100) for _ in voxels]
    samples[5] = np.concatenate([samples[5], [500]])
    histogram, overflow = _histograms(samples, 20)
    result = statistical_filter(voxels, histogram, overflow)
    assert result.excluded[5] and result.overflow[5] and result.overflow.sum() == 1


def test_degenerate_cases_do_not_crash():
    # no voxel at all
    result = statistical_filter(np.zeros((0, 3), int), np.zeros((0, 21), int))
    assert result.excluded.shape == (0,)
    # a single voxel: its window is itself; removing it empties the window (D = 0), which is lower
    # than a non-Poisson D but equal to a perfectly Poisson one
    single = statistical_filter(np.array([[0, 0, 0]]), np.array([[10, 0, 0, 10]]))
    assert single.removed[0] and single.summed_D == (pytest.approx(single.divergence[0]), 0.0)
    # two isolated voxels (no neighbours within the radius), all counts zero: D = 0, nothing to remove
    zeros = statistical_filter(np.array([[0, 0, 0], [9, 9, 9]]), np.array([[50, 0, 0], [50, 0, 0]]))
    assert not zeros.excluded.any() and zeros.summed_D == (0.0, 0.0)
    # a window of pixel-frames that are all above c_max: empty histograms, excluded for overflow
    over = statistical_filter(np.array([[0, 0, 0], [0, 0, 1]]), np.zeros((2, 21), int), np.array([100, 0]))
    assert list(over.excluded) == [True, False]


def _reference_filter(voxels, histogram, radius=2.0):
    """DESIGN §7 transcribed directly (dense windows, scipy's Poisson pmf, NumPy's interpolation
    for mdx-lib's weighted median, equal rates pooled), slow and independent of the compiled code."""
    from scipy.stats import poisson

    n, bins = histogram.shape
    c = np.arange(bins)
    distance2 = ((voxels[:, None, :] - voxels[None, :, :]) ** 2).sum(axis=2)
    windows = [np.flatnonzero(distance2[v] <= radius**2) for v in range(n)]
    pixels = histogram.sum(axis=1)
    rates = (histogram * c).sum(axis=1) / pixels
    lam = np.empty(n)
    for v, members in enumerate(windows):
        distinct, which = np.unique(rates[members], return_inverse=True)  # equal rates pooled
        weights = np.bincount(which, weights=pixels[members])
        cumulative = np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
        lam[v] = np.interp(0.5, 0.5 * (cumulative[:-1] + cumulative[1:]), distinct)
    log_q = np.maximum(poisson.logpmf(c[None, :], lam[:, None]), np.log(1e-300))

    def divergence(v, counts):
        if counts.sum() == 0:
            return 0.0
        p = counts / counts.sum()
        seen = counts > 0
        return float(np.sum(p[seen] * (np.log(p[seen]) - log_q[v][seen])))

    pooled = np.array([histogram[m].sum(axis=0) for m in windows])
    before = np.array([divergence(v, pooled[v]) for v in range(n)])
    containing = [np.flatnonzero([j in m for m in windows]) for j in range(n)]
    delta = np.array([sum(divergence(v, pooled[v] - histogram[j]) - before[v] for v in containing[j])
                      for j in range(n)])
    current, removed = before.copy(), np.zeros(n, bool)
    for j in np.argsort(delta, kind="stable"):
        change = sum(divergence(v, pooled[v] - histogram[j]) - current[v] for v in containing[j])
        if change >= 0:
            break
        removed[j] = True
        for v in containing[j]:
            pooled[v] = pooled[v] - histogram[j]
            current[v] = divergence(v, pooled[v])
    return lam, before, delta, removed, current.sum()


@pytest.mark.parametrize("rate", [0.3, 4.0])
def test_the_compiled_filter_is_section_7_as_written(rate):
    """The compiled filter against the direct transcription above, on a 6×6×6 block with a few
    brighter voxels: same λ, D, ΔD, the same voxels removed in the walk and the same summed D."""
    rng = np.random.default_rng(7)
    voxels = _grid(6)
    n = len(voxels)
    lam_true = rate * (1 + 0.3 * rng.random(n))
    lam_true[rng.choice(n, 5, replace=False)] *= 3
    samples = [rng.poisson(lam, rng.integers(20, 60)) for lam in lam_true]
    histogram, overflow = _histograms(samples, 25)
    assert not overflow.any()
    lam, divergence, delta, removed, after = _reference_filter(voxels, histogram)
    result = statistical_filter(voxels, histogram, overflow)
    np.testing.assert_allclose(result.lam, lam, rtol=1e-12)
    np.testing.assert_allclose(result.divergence, divergence, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.delta, delta, rtol=1e-7, atol=1e-12)
    assert removed.sum() >= 5 and np.array_equal(result.removed, removed)
    assert result.summed_D[1] == pytest.approx(after, rel=1e-9)
