"""Compiled (numba) sums over the observation rows of a scaling design, for setting up a fit.

Each is one pass over the (N, K) interpolation arrays with no (N, K) temporaries; at 10⁷
observations the NumPy equivalents (bincounts of index/weight products) took seconds each and
gigabytes of scratch. Rows are cut into ``PARTS`` fixed partitions, each summed into its own
array and the partitions added in order, so the sums do not depend on the thread count.
Module-level functions so that numba's on-disk cache finds them again in a new process.
"""

import numpy as np
from numba import njit, prange

__all__ = ["node_sums", "radial_sums", "touched_nodes", "grouped_order", "interpolated", "design_rows"]

PARTS = 16


@njit(cache=True)
def _bounds(n_rows):
    return np.linspace(0, n_rows, PARTS + 1).astype(np.int64)


@njit(parallel=True, cache=True)
def _node_sums(node, offsets, interp, row_weight, n, power):
    bounds = _bounds(node.shape[0])
    out = np.zeros((PARTS, n))
    for part in prange(PARTS):
        o = out[part]
        for i in range(bounds[part], bounds[part + 1]):
            for k in range(offsets.shape[0]):
                w = interp[i, k]
                o[node[i] + offsets[k]] += row_weight[i] * (w * w if power == 2 else w)
    return out


def node_sums(node, offsets, interp, row_weight, n: int, power: int = 1) -> np.ndarray:
    """Σ_i row_weight_i · interp_ik^power at node node_i + offsets_k, over all rows i and corners k: (n,)."""
    return _node_sums(node, offsets, interp, np.ascontiguousarray(row_weight, np.float64), int(n),
                      int(power)).sum(axis=0)


@njit(parallel=True, cache=True)
def _radial_sums(c_node, c_offsets, wc, a_node, a_offsets, wa, ns, nzc, n_a):
    bounds = _bounds(c_node.shape[0])
    node = np.zeros((PARTS, ns, n_a))
    bins = np.zeros((PARTS, ns))
    overall = np.zeros((PARTS, n_a))
    for part in prange(PARTS):
        for i in range(bounds[part], bounds[part + 1]):
            for kc in range(c_offsets.shape[0]):
                s_node = ((c_node[i] + c_offsets[kc]) // nzc) % ns
                w = wc[i, kc]
                bins[part, s_node] += w
                for ka in range(a_offsets.shape[0]):
                    node[part, s_node, a_node[i] + a_offsets[ka]] += w * wa[i, ka]
            for ka in range(a_offsets.shape[0]):
                overall[part, a_node[i] + a_offsets[ka]] += wa[i, ka]
    return node, bins, overall


def radial_sums(c_node, c_offsets, wc, a_node, a_offsets, wa, ns: int, nzc: int, n_a: int):
    """(Σ_i hat_s[i, k]·wa[i, j] as (ns, n_a), Σ_i hat_s[i, k] as (ns,), Σ_i wa[i, j] as (n_a,)), with
    hat_s[i, k] the weight of |s| node k in row i (c's terms at that |s| node summed over frame nodes);
    row i's c and a nodes are c_node_i + c_offsets and a_node_i + a_offsets."""
    node, bins, overall = _radial_sums(c_node, c_offsets, wc, a_node, a_offsets, wa, int(ns), int(nzc), int(n_a))
    return node.sum(axis=0), bins.sum(axis=0), overall.sum(axis=0)


@njit(cache=True)
def touched_nodes(node, offsets, weights, n):
    """(n,) bool: nodes that some row interpolates with a positive weight (row i's nodes:
    node_i + offsets)."""
    hit = np.zeros(n, np.bool_)
    for i in range(node.shape[0]):
        for k in range(offsets.shape[0]):
            if weights[i, k] > 0:
                hit[node[i] + offsets[k]] = True
    return hit


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
def interpolated(values, node, offsets, weights):
    """Σ_k values[node_i + offsets_k] · weights_ik per row, (N,), without the (N, K) temporaries. The
    terms are added in NumPy's order for ``(values[index] * weights).sum(axis=1)`` (pairwise for
    K = 8, left to right below 8), so the two agree to the last bit."""
    n, width = weights.shape
    out = np.empty(n)
    for i in prange(n):
        if width == 8:
            t = np.empty(8)
            for k in range(8):
                t[k] = values[node[i] + offsets[k]] * weights[i, k]
            out[i] = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))
        else:
            total = 0.0
            for k in range(width):
                total += values[node[i] + offsets[k]] * weights[i, k]
            out[i] = total
    return out


@njit(cache=True)
def _hat(u, lo, hi, n):
    """Row-wise :func:`.model._hat`: (first node, its weight, the next node's weight), in the
    same float64 operations (so that both give the same bits)."""
    if n == 1:
        return 0, 1.0, 0.0
    p = min(max((u - lo) / max(hi - lo, 1e-12), 0.0), 1.0) * (n - 1)
    i0 = min(max(np.int64(np.floor(p)), 0), n - 2)
    t = p - i0
    return i0, 1 - t, t


@njit(parallel=True, cache=True)
def design_rows(batch, frame, s, ix, iy, last_frame, counts, s_range, image_size, regions, use_regions,
                b_node, wb, c_node, wc, a_node, wa, region):
    """Fill the per-row arrays of a :class:`.model.Design` in one pass (no (N,) temporaries).

    counts : (n_bz, ns, nzc, nx, ny, nza) nodes per axis; s_range : (smin, smax) of c's |s| nodes;
    image_size : (fast, slow) pixels; regions : (slow, fast) region map, read when ``use_regions``
    (row i's region: the map at its rounded, clipped pixel, −1 counted as 0)."""
    n_bz, ns, nzc, nx, ny, nza = counts
    fast, slow = image_size
    for i in prange(batch.shape[0]):
        bt = batch[i]
        u = frame[i] / max(last_frame[bt], 1.0)
        i0, w0, w1 = _hat(u, 0.0, 1.0, n_bz)
        b_node[i] = bt * n_bz + i0
        wb[i, 0], wb[i, 1] = w0, w1
        s0, ws0, ws1 = _hat(s[i], s_range[0], s_range[1], ns)
        z0, wz0, wz1 = _hat(u, 0.0, 1.0, nzc)
        c_node[i] = (bt * ns + s0) * nzc + z0
        wc[i, 0], wc[i, 1], wc[i, 2], wc[i, 3] = ws0 * wz0, ws0 * wz1, ws1 * wz0, ws1 * wz1
        x0, wx0, wx1 = _hat(ix[i], 0.0, fast - 1.0, nx)
        y0, wy0, wy1 = _hat(iy[i], 0.0, slow - 1.0, ny)
        za0, wza0, wza1 = _hat(u, 0.0, 1.0, nza)
        a_node[i] = ((bt * nx + x0) * ny + y0) * nza + za0
        k = 0
        for wx in (wx0, wx1):
            for wy in (wy0, wy1):
                for wz in (wza0, wza1):
                    wa[i, k] = wx * wy * wz
                    k += 1
        if use_regions:
            rx = min(max(np.int64(np.rint(ix[i])), 0), fast - 1)
            ry = min(max(np.int64(np.rint(iy[i])), 0), slow - 1)
            region[i] = max(regions[ry, rx], 0)
        else:
            region[i] = 0
