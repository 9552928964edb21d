"""Compiled (numba) kernels of the Gauss–Newton normal matrix (see :mod:`.gauss_newton`).

Module-level functions so that numba's on-disk cache (``cache=True``) finds them again in a new
process; imported only when a normal matrix is assembled.
"""

import numpy as np
from numba import njit, prange

__all__ = ["assemble", "schur_rows", "mirror", "touched_columns"]


@njit(cache=True, inline="always")
def row_columns(i, b_node, b_off, c_node, c_off, a_node, a_off, region, offsets, cols):
    """The 15 model values observation i depends on: its nodes of b are b_node[i] + b_off
    (likewise c, a), then its region of d; ``offsets``: where b, c, a, d start among the values."""
    for k in range(2):
        cols[k] = b_node[i] + b_off[k]
    for k in range(4):
        cols[2 + k] = offsets[1] + c_node[i] + c_off[k]
    for k in range(8):
        cols[6 + k] = offsets[2] + a_node[i] + a_off[k]
    cols[14] = offsets[3] + region[i]


@njit(cache=True, inline="always")
def local_row(i, b_node, b_off, wb, c_node, c_off, wc, a_node, a_off, wa, region, partials, offsets, cols, jac):
    """Columns (:func:`row_columns`) and values of observation i's Jacobian row over the model
    values; returns ∂r_i/∂Î."""
    row_columns(i, b_node, b_off, c_node, c_off, a_node, a_off, region, offsets, cols)
    pa, pb, pc, pd = partials[i, 0], partials[i, 1], partials[i, 2], partials[i, 3]
    for k in range(2):
        jac[k] = pb * wb[i, k]
    for k in range(4):
        jac[2 + k] = pc * wc[i, k]
    for k in range(8):
        jac[6 + k] = pa * wa[i, k]
    jac[14] = pd
    return partials[i, 4]


@njit(parallel=True, cache=True)
def touched_columns(order, starts, b_node, b_off, c_node, c_off, a_node, a_off, region, offsets, n_values):
    """Per voxel, how many distinct model values its observations depend on (the size of its
    term of the Schur complement)."""
    n_voxels = len(starts) - 1
    out = np.zeros(n_voxels, np.int64)
    n_tasks = 64
    for task in prange(n_tasks):
        last = np.full(n_values, -1, np.int64)  # the last voxel that counted each column
        cols = np.empty(15, np.int64)
        for voxel in range(task * n_voxels // n_tasks, (task + 1) * n_voxels // n_tasks):
            n = 0
            for p in range(starts[voxel], starts[voxel + 1]):
                row_columns(order[p], b_node, b_off, c_node, c_off, a_node, a_off, region, offsets, cols)
                for k in range(15):
                    if last[cols[k]] != voxel:
                        last[cols[k]] = voxel
                        n += 1
            out[voxel] = n
    return out


@njit(parallel=True, cache=True)
def assemble(order, starts, bounds, b_node, b_off, wb, c_node, c_off, wc, a_node, a_off, wa, region, partials, offsets,
             n_values, schur, ascending):
    """Upper triangle of Σ_i J_iᵀJ_i (− Σ_v B_v B_vᵀ / D_v when ``schur``) over the voxels of
    each partition, B_v = Σ_{i∈v} u_i J_i and D_v = Σ_{i∈v} u_i² (u = ∂r/∂Î). The lower triangle
    holds partial sums of no use (:func:`mirror` overwrites it).

    ``ascending``: every row's 15 columns increase strictly (each component's node offsets do), so
    the upper triangle of a row's outer product is its pairs m ≥ k, without a test per pair."""
    n_parts = len(bounds) - 1
    out = np.zeros((n_parts, n_values, n_values))
    for part in prange(n_parts):
        s = out[part]
        scratch = np.zeros(n_values)
        touched = np.empty(n_values, np.int64)
        values = np.empty(n_values)
        marked = np.zeros(n_values, np.bool_)
        cols = np.empty(15, np.int64)
        jac = np.empty(15)
        for voxel in range(bounds[part], bounds[part + 1]):
            diag = 0.0
            n_touched = 0
            for p in range(starts[voxel], starts[voxel + 1]):
                u = local_row(order[p], b_node, b_off, wb, c_node, c_off, wc, a_node, a_off, wa, region, partials,
                              offsets, cols, jac)
                diag += u * u
                for k in range(15):
                    ck, jk = cols[k], jac[k]
                    if jk == 0.0:
                        continue
                    if ascending:
                        for m in range(k, 15):
                            s[ck, cols[m]] += jk * jac[m]
                    else:
                        for m in range(15):
                            if cols[m] >= ck:
                                s[ck, cols[m]] += jk * jac[m]
                    if schur and not marked[ck]:
                        marked[ck] = True
                        touched[n_touched] = ck
                        n_touched += 1
                    scratch[ck] += u * jk
            if schur and diag > 0.0:
                # the whole square, without a test per pair: the upper triangle gets each pair once
                # (touched columns are distinct), in the same operations as before
                for m in range(n_touched):
                    values[m] = scratch[touched[m]]
                for k in range(n_touched):
                    bk = values[k] / diag
                    row = s[touched[k]]
                    for m in range(n_touched):
                        row[touched[m]] -= bk * values[m]
            for k in range(n_touched):
                scratch[touched[k]] = 0.0
                marked[touched[k]] = False
    return out


@njit(parallel=True, cache=True)
def schur_rows(order, starts, first, b_node, b_off, wb, c_node, c_off, wc, a_node, a_off, wa, region, partials, offsets,
               out):
    """out[v − first] = B_v / √D_v for the voxels first … first + len(out) − 1 (dense rows)."""
    for row in prange(out.shape[0]):
        voxel = first + row
        cols = np.empty(15, np.int64)
        jac = np.empty(15)
        diag = 0.0
        for p in range(starts[voxel], starts[voxel + 1]):
            u = local_row(order[p], b_node, b_off, wb, c_node, c_off, wc, a_node, a_off, wa, region, partials, offsets,
                          cols, jac)
            diag += u * u
            for k in range(15):
                out[row, cols[k]] += u * jac[k]
        if diag > 0.0:
            norm = 1.0 / np.sqrt(diag)
            for c in range(out.shape[1]):
                out[row, c] *= norm


@njit(cache=True)
def mirror(matrix):
    """Copy the upper triangle onto the lower one, in place."""
    n = matrix.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            matrix[j, i] = matrix[i, j]
