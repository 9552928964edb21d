"""Compiled (numba) sums over the observation rows of a scaling design, for setting up a fit.

Each is one pass over the (N, K) interpolation arrays with no (N, K) temporaries; at 10⁷
observations the NumPy equivalents (bincounts of index/weight products) took seconds each and
gigabytes of scratch. Rows are cut into ``PARTS`` fixed partitions, each summed into its own
array and the partitions added in order, so the sums do not depend on the thread count.
Module-level functions so that numba's on-disk cache finds them again in a new process.
"""

import numpy as np
from numba import njit, prange

__all__ = ["node_sums", "radial_sums", "touched_nodes", "fixed_offsets", "grouped_order", "interpolated"]

PARTS = 16


@njit(cache=True)
def _bounds(n_rows):
    return np.linspace(0, n_rows, PARTS + 1).astype(np.int64)


@njit(parallel=True, cache=True)
def _node_sums(index, interp, row_weight, n, power):
    bounds = _bounds(index.shape[0])
    out = np.zeros((PARTS, n))
    for part in prange(PARTS):
        o = out[part]
        for i in range(bounds[part], bounds[part + 1]):
            for k in range(index.shape[1]):
                w = interp[i, k]
                o[index[i, k]] += row_weight[i] * (w * w if power == 2 else w)
    return out


def node_sums(index, interp, row_weight, n: int, power: int = 1) -> np.ndarray:
    """Σ_i row_weight_i · interp_ik^power at node index_ik, over all rows i and terms k: (n,)."""
    return _node_sums(index, interp, np.ascontiguousarray(row_weight, np.float64), int(n), int(power)).sum(axis=0)


@njit(parallel=True, cache=True)
def _radial_sums(ic, wc, ia, wa, ns, nzc, n_a):
    bounds = _bounds(ic.shape[0])
    node = np.zeros((PARTS, ns, n_a))
    bins = np.zeros((PARTS, ns))
    overall = np.zeros((PARTS, n_a))
    for part in prange(PARTS):
        for i in range(bounds[part], bounds[part + 1]):
            for kc in range(ic.shape[1]):
                s_node = (ic[i, kc] // nzc) % ns
                w = wc[i, kc]
                bins[part, s_node] += w
                for ka in range(ia.shape[1]):
                    node[part, s_node, ia[i, ka]] += w * wa[i, ka]
            for ka in range(ia.shape[1]):
                overall[part, ia[i, ka]] += wa[i, ka]
    return node, bins, overall


def radial_sums(ic, wc, ia, wa, ns: int, nzc: int, n_a: int):
    """(Σ_i hat_s[i, k]·wa[i, j] as (ns, n_a), Σ_i hat_s[i, k] as (ns,), Σ_i wa[i, j] as (n_a,)), with
    hat_s[i, k] the weight of |s| node k in row i (c's terms at that |s| node summed over frame nodes)."""
    node, bins, overall = _radial_sums(ic, wc, ia, wa, int(ns), int(nzc), int(n_a))
    return node.sum(axis=0), bins.sum(axis=0), overall.sum(axis=0)


@njit(cache=True)
def touched_nodes(index, weights, n):
    """(n,) bool: nodes that some row interpolates with a positive weight."""
    hit = np.zeros(n, np.bool_)
    for i in range(index.shape[0]):
        for k in range(index.shape[1]):
            if weights[i, k] > 0:
                hit[index[i, k]] = True
    return hit


@njit(cache=True)
def fixed_offsets(index):
    """True when every row's nodes are its first node plus the first row's offsets."""
    for i in range(index.shape[0]):
        for k in range(1, index.shape[1]):
            if index[i, k] - index[i, 0] != index[0, k] - index[0, 0]:
                return False
    return True


@njit(cache=True)
def grouped_order(group, n_groups):
    """The rows sorted by ``group`` (ids 0 … n_groups − 1), stably: a counting sort, O(N)."""
    next_slot = np.zeros(n_groups + 1, np.int64)
    for g in group:
        next_slot[g + 1] += 1
    for g in range(n_groups):
        next_slot[g + 1] += next_slot[g]
    order = np.empty(len(group), np.int64)
    for i in range(len(group)):
        order[next_slot[group[i]]] = i
        next_slot[group[i]] += 1
    return order


@njit(parallel=True, cache=True)
def interpolated(values, index, weights):
    """Σ_k values[index_ik] · weights_ik per row, (N,), without the (N, K) temporaries. The terms are
    added in NumPy's order for ``(values[index] * weights).sum(axis=1)`` (pairwise for K = 8,
    left to right below 8), so the two agree to the last bit."""
    n, width = index.shape
    out = np.empty(n)
    for i in prange(n):
        if width == 8:
            t = np.empty(8)
            for k in range(8):
                t[k] = values[index[i, k]] * weights[i, k]
            out[i] = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))
        else:
            total = 0.0
            for k in range(width):
                total += values[index[i, k]] * weights[i, k]
            out[i] = total
    return out
