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

Compiled with numba (one pass over the windows per step, no Python loop per voxel).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["window_offsets", "neighbour_lists", "statistical_filter", "FilterResult"]

Q_FLOOR = 1e-300


def window_offsets(radius: float = 2.0) -> np.ndarray:
    """Integer offsets (n, 3) with |offset| ≤ radius, (0, 0, 0) first."""
    r = int(math.floor(radius))
    grid = np.stack(np.meshgrid(*(np.arange(-r, r + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)
    inside = grid[(grid**2).sum(axis=1) <= radius**2 + 1e-9]
    order = np.lexsort(((inside**2).sum(axis=1),))  # stable: (0,0,0) first
    return inside[order].astype(np.int64)


def neighbour_lists(voxels: np.ndarray, radius: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of the window of every voxel: ``indices[indptr[v]:indptr[v + 1]]`` are the rows of
    ``voxels`` (n, 3 ints, unique) within ``radius`` of row v, itself included."""
    voxels = np.asarray(voxels, dtype=np.int64)
    n = len(voxels)
    if n == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int64)
    offsets = window_offsets(radius)
    r = int(math.floor(radius))
    low = voxels.min(axis=0) - r
    span = voxels.max(axis=0) + r - low + 1
    code = np.ravel_multi_index(tuple((voxels - low).T), tuple(span))
    order = np.argsort(code, kind="stable")
    columns = _find_neighbours(voxels - low, span.astype(np.int64), code[order], order, offsets)
    present = columns >= 0
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(present.sum(axis=1), out=indptr[1:])
    return indptr, columns[present]


@numba.njit(cache=True, parallel=True)
def _find_neighbours(shifted, span, sorted_code, order, offsets):
    """(n, len(offsets)) row of each voxel + offset among ``shifted`` (−1: not occupied), by binary
    search of its code among the sorted codes."""
    n, m = len(shifted), len(offsets)
    out = np.full((n, m), -1, np.int64)
    for v in numba.prange(n):
        for k in range(m):
            x = shifted[v, 0] + offsets[k, 0]
            y = shifted[v, 1] + offsets[k, 1]
            z = shifted[v, 2] + offsets[k, 2]
            wanted = (x * span[1] + y) * span[2] + z
            at = np.searchsorted(sorted_code, wanted)
            if at < n and sorted_code[at] == wanted:
                out[v, k] = order[at]
    return out


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
    c = np.arange(histogram.shape[1], dtype=np.float64)
    pixels = histogram.sum(axis=1).astype(np.float64)
    counts = (histogram * c).sum(axis=1)
    lam = _weighted_medians(indptr, indices, counts, pixels)
    pooled = _pooled(indptr, indices, histogram)
    log_q = _log_poisson(lam, histogram.shape[1])
    largest = int(pooled.max()) if pooled.size else 0
    n_log_n = np.arange(largest + 1, dtype=np.float64)
    n_log_n[1:] *= np.log(n_log_n[1:])
    divergence = _divergences(pooled, log_q, n_log_n)
    delta = _deltas(indptr, indices, histogram, pooled, log_q, divergence, n_log_n)
    order = np.argsort(delta, kind="stable")
    removed, after = _walk(order, indptr, indices, histogram, pooled.copy(), log_q, divergence.copy(), n_log_n)
    return FilterResult(removed | overflow, removed, overflow, lam, divergence, delta,
                        (float(divergence.sum()), float(after)))


@numba.njit(cache=True)
def _weighted_medians(indptr, indices, counts, pixels):
    n = len(indptr) - 1
    out = np.zeros(n)
    for v in range(n):
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
def _pooled(indptr, indices, histogram):
    n, bins = histogram.shape
    out = np.zeros((n, bins), np.int64)
    for v in range(n):
        for k in range(indptr[v], indptr[v + 1]):
            out[v] += histogram[indices[k]]
    return out


def _log_poisson(lam: np.ndarray, bins: int) -> np.ndarray:
    """log q_c, the Poisson pmf at λ for c = 0 … bins − 1, floored at Q_FLOOR."""
    from scipy.special import gammaln  # noqa: PLC0415

    c = np.arange(bins, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # λ = 0: 0·log 0 (c = 0) is set below
        log_q = c * np.log(lam[:, None]) - lam[:, None] - gammaln(c + 1)
    log_q[:, 0] = -lam  # 0·log 0 = 0
    return np.maximum(np.nan_to_num(log_q, nan=-np.inf), math.log(Q_FLOOR))


@numba.njit(cache=True)
def _divergence(row, log_q, n_log_n):
    """D of a window's pooled integer histogram ``row``: with T = Σ n_c and p_c = n_c / T,
    Σ p_c (log p_c − log q_c) = (Σ n_c log n_c − Σ n_c log q_c) / T − log T; n log n is looked up
    (no logarithm per bin)."""
    total = 0
    for c in range(len(row)):
        total += row[c]
    if total <= 0:
        return 0.0
    s = 0.0
    for c in range(len(row)):
        n = row[c]
        if n > 0:
            s += n_log_n[n] - n * log_q[c]
    return s / total - math.log(total)


@numba.njit(cache=True)
def _divergences(pooled, log_q, n_log_n):
    out = np.zeros(len(pooled))
    for v in range(len(pooled)):
        out[v] = _divergence(pooled[v], log_q[v], n_log_n)
    return out


@numba.njit(cache=True)
def _change_if_removed(j, indptr, indices, histogram, pooled, log_q, divergence, n_log_n, without):
    """Σ over the windows containing j (= the window of j: the ball is symmetric) of D(without j) − D."""
    change = 0.0
    for k in range(indptr[j], indptr[j + 1]):
        v = indices[k]
        for c in range(histogram.shape[1]):
            without[c] = pooled[v, c] - histogram[j, c]
        change += _divergence(without, log_q[v], n_log_n) - divergence[v]
    return change


@numba.njit(cache=True, parallel=True)
def _deltas(indptr, indices, histogram, pooled, log_q, divergence, n_log_n):
    n = len(histogram)
    out = np.zeros(n)
    for j in numba.prange(n):
        without = np.empty(histogram.shape[1], np.int64)
        out[j] = _change_if_removed(j, indptr, indices, histogram, pooled, log_q, divergence, n_log_n, without)
    return out


@numba.njit(cache=True)
def _walk(order, indptr, indices, histogram, pooled, log_q, divergence, n_log_n):
    n = len(histogram)
    removed = np.zeros(n, np.bool_)
    without = np.empty(histogram.shape[1], np.int64)
    for j in order:
        if _change_if_removed(j, indptr, indices, histogram, pooled, log_q, divergence, n_log_n, without) >= 0:
            break
        removed[j] = True
        for k in range(indptr[j], indptr[j + 1]):
            v = indices[k]
            pooled[v] -= histogram[j]
            divergence[v] = _divergence(pooled[v], log_q[v], n_log_n)
    return removed, divergence.sum()
