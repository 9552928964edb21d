"""The statistical Bragg filter (DESIGN §7, mdx-lib's ``proc.Filter``): voxels whose integer
pixel counts do not look Poisson next to their neighbourhood are excluded.

Input: for the occupied voxels of one wedge, their integer indices (H, K, L) on the filter grid,
a count histogram per voxel (pixel-frames with count c = 0 … c_max) and the counts above c_max.

* Window N(v): the occupied voxels u with |u − v| ≤ ``radius`` in grid steps (a ball, across cell
  boundaries; v itself included).
* λ_v: the weighted median of the rates counts/pixels of N(v), weights = pixels, interpolated as
  mdx-lib does: each sorted rate sits at the middle of its share of the cumulative weight and the
  median is read off linearly at one half. Ties: equal rates are pooled into one point with their
  summed weight first (mdx-lib keeps them apart, which makes λ depend on the order of the window's
  voxels when equal rates straddle the half); rates and weights use only the histogrammed
  pixel-frames (c ≤ c_max).
* D_v = Σ_c p_c log(p_c / q_c), p the pooled, normalised histogram of N(v), q_c the Poisson pmf at
  λ_v for c = 0 … c_max (truncated, not renormalised), terms with p_c = 0 dropped; q_c is floored
  at 1e-300 (λ_v = 0 with counts present gives a large finite D, not inf). An empty window
  (every voxel removed, or only pixel-frames above c_max) has D = 0.
* ΔD(j) = Σ over the windows containing j of (D without j − D).
* The walk: voxels in increasing ΔD (ties by their order in the input, so the result is
  deterministic); voxel j is removed from every window containing it if that lowers the summed D
  (recomputed with each window's original λ); the walk stops at the first voxel that does not.
  "Nothing to remove" (the first candidate does not lower D) is a valid outcome.
* Excluded: the removed voxels and every voxel with a count above c_max.

Compiled with numba, no Python loop per voxel. Each window keeps T = Σ n_c and
S = Σ n_c log n_c − n_c log q_c, so D = S / T − log T; taking voxel j out of a window changes only
the bins where j has pixel-frames, and ΔD and the walk touch only those (the loops skip the empty
bins above a voxel's largest count, most of the histogram when c_max is set high).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy.special import gammaln

__all__ = ["window_offsets", "neighbour_lists", "statistical_filter", "FilterResult"]

Q_FLOOR = 1e-300
LOG_Q_FLOOR = math.log(Q_FLOOR)


def window_offsets(radius: float = 2.0) -> np.ndarray:
    """Integer offsets (n, 3) with |offset| ≤ radius, (0, 0, 0) first."""
    r = int(math.floor(radius))
    grid = np.stack(np.meshgrid(*(np.arange(-r, r + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)
    inside = grid[(grid**2).sum(axis=1) <= radius**2 + 1e-9]
    order = np.lexsort(((inside**2).sum(axis=1),))  # stable: (0,0,0) first
    return inside[order].astype(np.int64)


DENSE_LOOKUP_CELLS = 1 << 25  # a table of int32 rows over the bounding box up to this size (128 MiB)


def neighbour_lists(voxels: np.ndarray, radius: float = 2.0,
                    dense_lookup_cells: int = DENSE_LOOKUP_CELLS) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of the window of every voxel: ``indices[indptr[v]:indptr[v + 1]]`` are the rows of
    ``voxels`` (n, 3 ints, unique) within ``radius`` of row v, itself included, in the order of
    ``window_offsets``. A neighbour is found in a table over the voxels' bounding box when that has
    at most ``dense_lookup_cells`` cells, else by binary search among the sorted voxel codes."""
    voxels = np.asarray(voxels, dtype=np.int64)
    n = len(voxels)
    if n == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int64)
    offsets = window_offsets(radius)
    r = int(math.floor(radius))
    low = voxels.min(axis=0) - r
    span = voxels.max(axis=0) + r - low + 1
    shifted = voxels - low
    code = np.ravel_multi_index(tuple(shifted.T), tuple(span))
    if int(np.prod(span)) <= dense_lookup_cells:
        table = np.full(int(np.prod(span)), -1, np.int32 if n < 2**31 else np.int64)
        table[code] = np.arange(n)
        sorted_code, order = np.zeros(0, np.int64), np.zeros(0, np.int64)
    else:
        order = np.argsort(code, kind="stable")
        table, sorted_code = np.zeros(0, np.int32), code[order]
    span = span.astype(np.int64)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(_neighbours(shifted, span, table, sorted_code, order, offsets, np.zeros(1, np.int64),
                          np.zeros(0, np.int64)), out=indptr[1:])
    indices = np.empty(indptr[-1], np.int64)
    _neighbours(shifted, span, table, sorted_code, order, offsets, indptr, indices)
    return indptr, indices


@numba.njit(cache=True, parallel=True)
def _neighbours(shifted, span, table, sorted_code, order, offsets, indptr, indices):
    """Per voxel, its occupied neighbours (voxel + offset): counted when ``indices`` is empty
    (returns the counts), else written at ``indptr``. Looked up in ``table`` when it is not
    empty, else by binary search of the code among ``sorted_code``."""
    n, m = len(shifted), len(offsets)
    counts = np.zeros(n, np.int64)
    fill = len(indices) > 0
    for v in numba.prange(n):
        found = 0
        for k in range(m):
            x = shifted[v, 0] + offsets[k, 0]
            y = shifted[v, 1] + offsets[k, 1]
            z = shifted[v, 2] + offsets[k, 2]
            wanted = (x * span[1] + y) * span[2] + z
            if len(table) > 0:
                row = np.int64(table[wanted])
            else:
                at = np.searchsorted(sorted_code, wanted)
                row = order[at] if at < n and sorted_code[at] == wanted else -1
            if row >= 0:
                if fill:
                    indices[indptr[v] + found] = row
                found += 1
        counts[v] = found
    return counts


class FilterResult:
    """excluded (n,) bool: removed ∪ overflow; removed (n,) bool: removed by the walk;
    overflow (n,) bool; lam (n,) λ_v; divergence (n,) D_v before the walk; delta (n,) ΔD;
    summed_D (before, after)."""

    def __init__(self, excluded, removed, overflow, lam, divergence, delta, summed):
        self.excluded, self.removed, self.overflow = excluded, removed, overflow
        self.lam, self.divergence, self.delta, self.summed_D = lam, divergence, delta, summed


def statistical_filter(voxels: np.ndarray, histogram: np.ndarray, overflow_counts: np.ndarray | None = None,
                       radius: float = 2.0) -> FilterResult:
    """Run the filter on the occupied voxels of one wedge (see the module docstring).

    voxels : (n, 3) int, unique; histogram : (n, c_max + 1) int, pixel-frames with count c;
    overflow_counts : (n,) counts above c_max (None: none)."""
    histogram = np.ascontiguousarray(histogram, dtype=np.int64)
    n = len(histogram)
    overflow = np.zeros(n, bool) if overflow_counts is None else np.asarray(overflow_counts) > 0
    if n == 0:
        empty = np.zeros(0)
        return FilterResult(np.zeros(0, bool), np.zeros(0, bool), overflow, empty, empty, empty, (0.0, 0.0))
    indptr, indices = neighbour_lists(voxels, radius)
    bins = histogram.shape[1]
    pixels = histogram.sum(axis=1)
    counts = histogram @ np.arange(bins, dtype=np.int64)
    lam = _weighted_medians(indptr, indices, counts.astype(np.float64), pixels.astype(np.float64))
    low, high = _bin_ranges(histogram)
    pooled = _pooled(indptr, indices, histogram, low, high)
    window_low, window_high = _bin_ranges(pooled)
    n_log_n = np.arange(int(pooled.max()) + 1, dtype=np.float64)
    n_log_n[1:] *= np.log(n_log_n[1:])
    log_factorial = gammaln(np.arange(bins, dtype=np.float64) + 1)
    with np.errstate(divide="ignore"):  # λ = 0: log q is floored without its log λ
        poisson = (lam, np.log(lam), log_factorial)
    window_pixels = pooled.sum(axis=1)
    window_sums, divergence = _window_sums(pooled, window_low, window_high, window_pixels, *poisson, n_log_n)
    delta = _deltas(indptr, indices, histogram, low, high, pixels, pooled, window_pixels, window_sums, divergence,
                    *poisson, n_log_n)
    order = np.argsort(delta, kind="stable")
    after = divergence.copy()
    removed = _walk(order, indptr, indices, histogram, low, high, pixels, pooled, window_pixels, window_sums, after,
                    *poisson, n_log_n)
    return FilterResult(removed | overflow, removed, overflow, lam, divergence, delta,
                        (float(divergence.sum()), float(after.sum())))


@numba.njit(cache=True, parallel=True)
def _weighted_medians(indptr, indices, counts, pixels):
    n = len(indptr) - 1
    out = np.zeros(n)
    for v in numba.prange(n):
        members = indices[indptr[v]:indptr[v + 1]]
        m = len(members)
        rates = np.empty(m)
        weights = np.empty(m)
        total = 0.0
        for i in range(m):
            u = members[i]
            weights[i] = pixels[u]
            rates[i] = counts[u] / pixels[u] if pixels[u] > 0 else 0.0
            total += weights[i]
        if total <= 0:
            continue
        order = np.argsort(rates, kind="mergesort")
        # each distinct rate (equal rates pooled, so that their order in the window does not
        # matter) sits at the middle of its weight's share of the cumulative weight; the median is
        # interpolated linearly at 0.5 between those points (clamped at the ends)
        below, previous_mid, previous_rate = 0.0, -1.0, 0.0
        k = 0
        found = False
        while k < m:
            rate = rates[order[k]]
            weight = 0.0
            while k < m and rates[order[k]] == rate:
                weight += weights[order[k]]
                k += 1
            mid = (below + 0.5 * weight) / total
            below += weight
            if mid >= 0.5:
                if previous_mid < 0 or mid == previous_mid:
                    out[v] = rate
                else:
                    t = (0.5 - previous_mid) / (mid - previous_mid)
                    out[v] = previous_rate + t * (rate - previous_rate)
                found = True
                break
            previous_mid, previous_rate = mid, rate
        if not found:
            out[v] = previous_rate
    return out


@numba.njit(cache=True)
def _bin_ranges(histogram):
    """First and last non-zero bin of each row (an empty row: 0, −1), so that the loops below
    skip the bins above a voxel's largest count (most of them when c_max is set high)."""
    n, bins = histogram.shape
    low = np.zeros(n, np.int64)
    high = np.full(n, -1, np.int64)
    for v in range(n):
        for c in range(bins):
            if histogram[v, c] != 0:
                if high[v] < 0:
                    low[v] = c
                high[v] = c
    return low, high


@numba.njit(cache=True, parallel=True)
def _pooled(indptr, indices, histogram, low, high):
    n, bins = histogram.shape
    out = np.zeros((n, bins), np.int64)
    for v in numba.prange(n):
        for k in range(indptr[v], indptr[v + 1]):
            u = indices[k]
            for c in range(low[u], high[u] + 1):
                out[v, c] += histogram[u, c]
    return out


@numba.njit(cache=True)
def _log_q(c, lam, log_lam, log_factorial):
    """log of the Poisson pmf at λ for the count c (truncated, not renormalised), floored at
    log Q_FLOOR (λ = 0 with counts present gives a large finite D, not inf)."""
    if c == 0:
        value = -lam
    elif lam <= 0.0:
        return LOG_Q_FLOOR
    else:
        value = c * log_lam - lam - log_factorial[c]
    return max(value, LOG_Q_FLOOR)


@numba.njit(cache=True)
def _window_sums(pooled, low, high, window_pixels, lam, log_lam, log_factorial, n_log_n):
    """Per window, S = Σ_c (n_c log n_c − n_c log q_c) over its non-zero bins and
    D = S / T − log T (T = Σ n_c): with p_c = n_c / T this is Σ p_c log(p_c / q_c). An empty
    window has S = D = 0."""
    n = len(pooled)
    sums = np.zeros(n)
    divergence = np.zeros(n)
    for v in range(n):
        if window_pixels[v] <= 0:
            continue
        s = 0.0
        for c in range(low[v], high[v] + 1):
            count = pooled[v, c]
            if count > 0:
                s += n_log_n[count] - count * _log_q(c, lam[v], log_lam[v], log_factorial)
        sums[v] = s
        divergence[v] = s / window_pixels[v] - math.log(window_pixels[v])
    return sums, divergence


@numba.njit(cache=True)
def _without(v, j, histogram, low, high, pixels, pooled, window_pixels, window_sums, lam, log_lam, log_factorial,
             n_log_n):
    """(T, S, D) of window v with voxel j taken out: only j's non-zero bins change S."""
    total = window_pixels[v] - pixels[j]
    if total <= 0:
        return 0, 0.0, 0.0
    s = window_sums[v]
    for c in range(low[j], high[j] + 1):
        h = histogram[j, c]
        if h > 0:
            count = pooled[v, c]
            s += n_log_n[count - h] - n_log_n[count] + h * _log_q(c, lam[v], log_lam[v], log_factorial)
    return total, s, s / total - math.log(total)


@numba.njit(cache=True)
def _change_if_removed(j, indptr, indices, histogram, low, high, pixels, pooled, window_pixels, window_sums,
                       divergence, lam, log_lam, log_factorial, n_log_n):
    """Σ over the windows containing j (= the window of j: the ball is symmetric) of
    D(without j) − D, at the windows' current state."""
    change = 0.0
    for k in range(indptr[j], indptr[j + 1]):
        v = indices[k]
        change += _without(v, j, histogram, low, high, pixels, pooled, window_pixels, window_sums, lam,
                           log_lam, log_factorial, n_log_n)[2] - divergence[v]
    return change


@numba.njit(cache=True, parallel=True)
def _deltas(indptr, indices, histogram, low, high, pixels, pooled, window_pixels, window_sums, divergence,
            lam, log_lam, log_factorial, n_log_n):
    """ΔD(j) of every voxel before the walk."""
    n = len(histogram)
    out = np.zeros(n)
    for j in numba.prange(n):
        out[j] = _change_if_removed(j, indptr, indices, histogram, low, high, pixels, pooled, window_pixels,
                                    window_sums, divergence, lam, log_lam, log_factorial, n_log_n)
    return out


@numba.njit(cache=True)
def _walk(order, indptr, indices, histogram, low, high, pixels, pooled, window_pixels, window_sums, divergence,
          lam, log_lam, log_factorial, n_log_n):
    """The greedy walk; updates the windows' pooled histograms, T, S and D in place."""
    n = len(histogram)
    removed = np.zeros(n, np.bool_)
    for j in order:
        if _change_if_removed(j, indptr, indices, histogram, low, high, pixels, pooled, window_pixels, window_sums,
                              divergence, lam, log_lam, log_factorial, n_log_n) >= 0:
            break
        removed[j] = True
        for k in range(indptr[j], indptr[j + 1]):
            v = indices[k]
            total, s, d = _without(v, j, histogram, low, high, pixels, pooled, window_pixels, window_sums, lam,
                                   log_lam, log_factorial, n_log_n)
            window_pixels[v], window_sums[v], divergence[v] = total, s, d
            for c in range(low[j], high[j] + 1):
                pooled[v, c] -= histogram[j, c]
    return removed
