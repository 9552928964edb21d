"""The NumPy engine: the readable reference of the streaming pass, and the tests' oracle.

:func:`decide` is the per-pixel decision chain written once in NumPy (the C++/CUDA copy is
``kernels/gd_decide.cuh``): valid (min_valid ≤ value < overload) → Bragg (peak-cloud test) →
zinger (≥ threshold and not Bragg; dropped and counted) → voxel (inside the table) →
accumulator set (excluded if Bragg, else diffuse). hkl and the Mahalanobis distance are
written out term by term in the kernels' order so that every engine rounds identically.
"""

from __future__ import annotations

import numpy as np

from .base import DIFFUSE, EXCLUDED, SKIP, ZINGER, EngineSums, HostAccumulators, register_engine

__all__ = ["NumpyEngine", "decide", "pixel_hkl", "bragg_test"]


def pixel_hkl(s: np.ndarray, inverse_setting: np.ndarray) -> np.ndarray:
    """hkl = M⁻¹·s for s (N, 3), as (M₀₀ sx + M₀₁ sy) + M₀₂ sz … (no BLAS: fixed rounding)."""
    m = inverse_setting
    return np.stack([m[i, 0] * s[:, 0] + m[i, 1] * s[:, 1] + m[i, 2] * s[:, 2] for i in range(3)], axis=-1)


def bragg_test(hkl: np.ndarray, bragg) -> np.ndarray:
    """True where hkl (N, 3) is within the cutoff of an allowed reflection (``BraggTest``)."""
    g = np.rint(hkl)
    r = [hkl[:, a] - g[:, a] - bragg.offset[a] for a in range(3)]
    d2 = np.zeros(len(hkl))
    for i in range(3):
        for j in range(3):
            d2 = d2 + r[i] * bragg.inverse_covariance[i, j] * r[j]
    near = d2 <= bragg.cutoff2
    gi = g.astype(np.int64) + bragg.absent_half
    shape = np.asarray(bragg.absent.shape)
    in_table = np.all((gi >= 0) & (gi < shape), axis=1)
    gi = np.where(in_table[:, None], gi, 0)
    return near & in_table & (bragg.absent[gi[:, 0], gi[:, 1], gi[:, 2]] == 0)


def decide(counts, hkl, threshold, grid, bragg, trusted_range):
    """Decision code (SKIP, DIFFUSE, EXCLUDED, ZINGER), flat cell and sub-voxel per pixel."""
    min_valid, overload = trusted_range
    valid = (counts >= min_valid) & (counts < overload)
    cell, sub, inside = grid.split(grid.voxel_index(hkl))
    is_bragg = bragg_test(hkl, bragg) if bragg is not None else np.zeros(len(counts), bool)
    zinger = valid & ~is_bragg & (counts >= threshold)
    use = valid & inside & ~zinger
    code = np.where(use, np.where(is_bragg, EXCLUDED, DIFFUSE), np.where(zinger, ZINGER, SKIP)).astype(np.int8)
    return code, cell, sub


@register_engine("numpy")
class NumpyEngine:
    """Per frame: decide, then ``np.bincount`` into the accumulators of the observed cells."""

    @classmethod
    def available(cls) -> bool:
        return True

    def __init__(self, context):
        self.context = context
        self.n_sub = context.grid.n_sub
        self.acc = HostAccumulators(context)
        self.c_max = context.histogram_max
        self._frames, self._pc, self._pk, self._zingers = [], [], [], 0

    def add(self, frames, frame_numbers, inverse_setting, exposure):
        ctx, pix = self.context, self.context.pixels
        data = frames.reshape(len(frame_numbers), -1)
        for i, z in enumerate(frame_numbers):
            counts = data[i, pix.index]
            hkl = pixel_hkl(pix.s, inverse_setting[i])
            code, cell, sub = decide(counts, hkl, pix.threshold, ctx.grid, ctx.bragg, ctx.trusted_range)
            self._zingers += int(np.count_nonzero(code == ZINGER))
            used = (code == DIFFUSE) | (code == EXCLUDED)
            cells = cell[used]
            self.acc.assign(np.unique(cells[self.acc.rows.lut[cells] < 0]))  # sort only the new cells
            t = float(exposure[i])
            for s, wanted in enumerate((DIFFUSE, EXCLUDED)):
                idx = np.flatnonzero(code == wanted)
                self._accumulate(s, idx, counts[idx], self.acc.rows.lut[cell[idx]] * self.n_sub + sub[idx], float(z), t)
                if wanted == DIFFUSE:
                    self._frames.append(int(z))
                    b = ctx.profile_bin[idx]
                    self._pc.append(np.bincount(b, weights=counts[idx].astype(np.float64), minlength=ctx.n_bins))
                    self._pk.append(np.bincount(b, weights=pix.k[idx] * t, minlength=ctx.n_bins))

    def _accumulate(self, s, idx, counts, key, z, t):
        pix, acc = self.context.pixels, self.acc
        size = acc.rows.n_rows * self.n_sub
        c = counts.astype(np.int64)
        values = {"counts": c, "pixels": np.ones(idx.size, np.int64), "frame_sum": np.full(idx.size, int(z)),
                  "kt_sum": pix.k[idx] * t, "d3s_sum": pix.d3s[idx], "ix_sum": pix.ix[idx], "iy_sum": pix.iy[idx],
                  "s_sum": pix.s_norm[idx]}
        if self.context.background is not None:
            values["bkg_sum"] = self.context.background[0][idx] * t
            values["bkg_var"] = self.context.background[1][idx] * t * t
        if self.c_max is not None:
            over = c > self.c_max
            values["overflow_counts"] = np.where(over, c, 0)
            inside = ~over & (c >= 0)
            np.add.at(acc.hist[s], (key[inside], c[inside]), 1)
        for j, name in enumerate(acc.int_names):
            # integer sums exact as long as a voxel's total stays below 2⁵³ (bincount sums in float64)
            acc.ints[s, :size, j] += np.rint(np.bincount(key, weights=values[name], minlength=size)).astype(np.int64)
        for j, name in enumerate(acc.float_names):
            acc.floats[s, :size, j] += np.bincount(key, weights=values[name], minlength=size)

    def flush(self) -> EngineSums:
        sets = self.acc.collect_and_clear()
        n_bins = self.context.n_bins
        out = EngineSums(sets, np.asarray(self._frames, np.int64),
                         np.asarray(self._pc).reshape(-1, n_bins), np.asarray(self._pk).reshape(-1, n_bins),
                         self._zingers)
        self._frames, self._pc, self._pk, self._zingers = [], [], [], 0
        return out
