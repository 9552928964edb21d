"""The compiled multi-threaded CPU engine (numba), the default without a GPU.

Per chunk, two parallel passes over its pixel-frames and one serial step between them:

1. *decide* (parallel over frame × pixel-range tasks): the decision chain of
   :func:`~.numpy_engine.decide`, in the same float64 operations and order; writes each
   pixel-frame's code and voxel key (cell·∏n + sub), marks touched cells, and sums the
   profile and zinger count into per-task private arrays (reduced in task order).
2. rows for newly touched cells (serial, over the dense cell table).
3. *accumulate* (parallel over threads): thread t adds the pixel-frames whose row ≡ t (mod T),
   in pixel-frame order. No two threads write the same voxel, so no atomics and no
   per-thread copies of the accumulators; every voxel's sums are added in the same order
   whatever the thread count, so results do not depend on it.

Compiled once per machine (``cache=True``: numba's on-disk cache).
"""

from __future__ import annotations

import numpy as np

from .base import DIFFUSE, EXCLUDED, ZINGER, EngineSums, RowTable, collect_sets, register_engine

__all__ = ["NumbaEngine"]

PIXELS_PER_TASK = 32768
_KERNELS = None


def _compile():
    """Define the jitted functions on first use (numba is imported only when the engine runs)."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    import numba  # noqa: PLC0415
    from numba import njit, prange  # noqa: PLC0415

    @njit(cache=True, inline="always")
    def decide_one(value, thr, m, sx, sy, sz, ndiv, hmax, min_valid, overload, use_bragg, offset, inv_cov,
                   cutoff2, absent, absent_half):
        """(code, flat cell, flat sub) of one pixel-frame: kernels/gd_decide.cuh in numba."""
        if value < min_valid or value >= overload:
            return 0, -1, 0
        h0 = m[0, 0] * sx + m[0, 1] * sy + m[0, 2] * sz
        h1 = m[1, 0] * sx + m[1, 1] * sy + m[1, 2] * sz
        h2 = m[2, 0] * sx + m[2, 1] * sy + m[2, 2] * sz
        bragg = False
        if use_bragg:
            g0, g1, g2 = np.rint(h0), np.rint(h1), np.rint(h2)
            r0 = h0 - g0 - offset[0]
            r1 = h1 - g1 - offset[1]
            r2 = h2 - g2 - offset[2]
            d2 = 0.0
            d2 += r0 * inv_cov[0, 0] * r0
            d2 += r0 * inv_cov[0, 1] * r1
            d2 += r0 * inv_cov[0, 2] * r2
            d2 += r1 * inv_cov[1, 0] * r0
            d2 += r1 * inv_cov[1, 1] * r1
            d2 += r1 * inv_cov[1, 2] * r2
            d2 += r2 * inv_cov[2, 0] * r0
            d2 += r2 * inv_cov[2, 1] * r1
            d2 += r2 * inv_cov[2, 2] * r2
            if d2 <= cutoff2:
                a0 = np.int64(g0) + absent_half[0]
                a1 = np.int64(g1) + absent_half[1]
                a2 = np.int64(g2) + absent_half[2]
                if (0 <= a0 < absent.shape[0]) and (0 <= a1 < absent.shape[1]) and (0 <= a2 < absent.shape[2]):
                    bragg = absent[a0, a1, a2] == 0
        if not bragg and value >= thr:
            return 3, -1, 0
        flat = np.int64(0)
        sub = np.int64(0)
        inside = True
        for a in range(3):
            n = np.int64(ndiv[a])
            h = h0 if a == 0 else (h1 if a == 1 else h2)
            H = np.int64(np.rint(h * np.float64(n)))
            half = n // 2
            cell = (H + half) // n
            s = H + half - cell * n
            if cell < -hmax[a] or cell > hmax[a]:
                inside = False
            flat = flat * (2 * np.int64(hmax[a]) + 1) + (cell + hmax[a])
            sub = sub * n + s
        if not inside:
            return 0, -1, 0
        return (2 if bragg else 1), flat, sub

    @njit(parallel=True, cache=True, nogil=True)
    def decide_chunk(frames, pixel_index, s, inverse, threshold, ndiv, hmax, min_valid, overload, use_bragg,
                     offset, inv_cov, cutoff2, absent, absent_half, k, exposure, profile_bin, n_bins,
                     code, cell_out, sub_out, touched, task_profile_counts, task_profile_kt, task_zingers):
        n_frames = frames.shape[0]
        n_pix = pixel_index.shape[0]
        per_frame = (n_pix + PIXELS_PER_TASK - 1) // PIXELS_PER_TASK
        for task in prange(n_frames * per_frame):
            f = task // per_frame
            start = (task % per_frame) * PIXELS_PER_TASK
            stop = min(start + PIXELS_PER_TASK, n_pix)
            m = inverse[f]
            t = exposure[f]
            zingers = 0
            for p in range(start, stop):
                value = np.float64(frames[f, pixel_index[p]])
                c, cell, sub = decide_one(value, threshold[p], m, s[p, 0], s[p, 1], s[p, 2], ndiv, hmax, min_valid,
                                          overload, use_bragg, offset, inv_cov, cutoff2, absent, absent_half)
                i = f * n_pix + p
                code[i] = c
                cell_out[i] = cell
                sub_out[i] = sub
                if c == 1 or c == 2:
                    touched[cell] = 1
                if c == 1:
                    task_profile_counts[task, profile_bin[p]] += value
                    task_profile_kt[task, profile_bin[p]] += k[p] * t
                elif c == 3:
                    zingers += 1
            task_zingers[task] = zingers

    @njit(parallel=True, cache=True, nogil=True)
    def accumulate_chunk(frames, pixel_index, code, cell_of, sub_of, lut, n_sub, frame_numbers, exposure, k, d3s,
                         ix, iy, s_norm, with_background, bkg_rate, bkg_var, c_max, ints, floats, hist, n_threads):
        n_frames = frames.shape[0]
        n_pix = pixel_index.shape[0]
        total = n_frames * n_pix
        for t in prange(n_threads):
            for i in range(total):
                c = code[i]
                if c != 1 and c != 2:
                    continue
                row = lut[cell_of[i]]
                if row % n_threads != t:
                    continue
                f = i // n_pix
                p = i - f * n_pix
                key = row * n_sub + sub_of[i]
                st = c - 1
                value = np.int64(frames[f, pixel_index[p]])
                tf = exposure[f]
                ints[st, 0, key] += value
                ints[st, 1, key] += 1
                ints[st, 2, key] += frame_numbers[f]
                floats[st, 0, key] += k[p] * tf
                floats[st, 1, key] += d3s[p]
                floats[st, 2, key] += ix[p]
                floats[st, 3, key] += iy[p]
                floats[st, 4, key] += s_norm[p]
                if with_background:
                    floats[st, 5, key] += bkg_rate[p] * tf
                    floats[st, 6, key] += bkg_var[p] * tf * tf
                if c_max >= 0:
                    if value > c_max:
                        ints[st, 3, key] += value
                    elif value >= 0:
                        hist[st, key, value] += 1

    _KERNELS = (decide_chunk, accumulate_chunk, numba)
    return _KERNELS


@register_engine("cpu")
class NumbaEngine:
    """Compiled CPU engine; uses numba's thread count (``--nproc``, default all cores)."""

    @classmethod
    def available(cls) -> bool:
        try:
            import numba  # noqa: F401, PLC0415
        except ImportError:
            return False
        return True

    def __init__(self, context):
        self.decide_chunk, self.accumulate_chunk, numba = _compile()
        self.n_threads = numba.get_num_threads()
        self.context = context
        grid, pix = context.grid, context.pixels
        self.n_sub = grid.n_sub
        self.rows = RowTable(grid.n_cells)
        self.touched = np.zeros(grid.n_cells, np.uint8)
        self.int_names, self.float_names = context.int_fields, context.float_fields
        # the kernels write fields by position in schema order
        assert self.int_names[:3] == ("counts", "pixels", "frame_sum")
        assert self.float_names[:5] == ("kt_sum", "d3s_sum", "ix_sum", "iy_sum", "s_sum")
        self.c_max = -1 if context.histogram_max is None else int(context.histogram_max)
        self.ndiv = np.asarray(grid.ndiv, np.int64)
        self.hmax = np.asarray(grid.hmax, np.int64)
        b = context.bragg
        self.bragg_args = (True, b.offset, b.inverse_covariance, b.cutoff2, b.absent, b.absent_half.astype(np.int64)) \
            if b is not None else (False, np.zeros(3), np.eye(3), 0.0, np.zeros((1, 1, 1), np.uint8),
                                   np.zeros(3, np.int64))
        self.pixel_index = pix.index.astype(np.int64)
        self.threshold = np.where(np.isfinite(pix.threshold), pix.threshold, 1e300)
        bkg = context.background
        self.background = (True, bkg[0], bkg[1]) if bkg is not None else (False, np.zeros(1), np.zeros(1))
        self.ints = None
        self._allocate(1024)
        self._frames, self._pc, self._pk, self._zingers = [], [], [], 0

    def _allocate(self, capacity):
        size = capacity * self.n_sub
        ints = np.zeros((2, len(self.int_names), size), np.int64)
        floats = np.zeros((2, len(self.float_names), size), np.float64)
        hist = np.zeros((2, size if self.c_max >= 0 else 1, max(self.c_max, 0) + 1), np.int64)
        if self.ints is not None:
            used = self.ints.shape[2]
            ints[:, :, :used], floats[:, :, :used] = self.ints, self.floats
            if self.c_max >= 0:
                hist[:, :used] = self.hist
        self.ints, self.floats, self.hist, self.capacity = ints, floats, hist, capacity

    def add(self, frames, frame_numbers, inverse_setting, exposure):
        ctx, pix = self.context, self.context.pixels
        n, n_pix = len(frame_numbers), len(pix)
        frames = np.ascontiguousarray(frames.reshape(n, -1))
        inverse = np.ascontiguousarray(inverse_setting, dtype=np.float64)
        exposure = np.ascontiguousarray(exposure, dtype=np.float64)
        total = n * n_pix
        code = np.empty(total, np.int8)
        cell = np.empty(total, np.int64)
        sub = np.empty(total, np.int64)
        tasks = n * ((n_pix + PIXELS_PER_TASK - 1) // PIXELS_PER_TASK)
        task_pc = np.zeros((tasks, ctx.n_bins))
        task_pk = np.zeros((tasks, ctx.n_bins))
        task_z = np.zeros(tasks, np.int64)
        self.decide_chunk(frames, self.pixel_index, pix.s, inverse, self.threshold, self.ndiv, self.hmax,
                          *ctx.trusted_range, *self.bragg_args, pix.k, exposure, ctx.profile_bin, ctx.n_bins,
                          code, cell, sub, self.touched, task_pc, task_pk, task_z)
        touched = np.flatnonzero(self.touched)
        self.touched[touched] = 0
        self.rows.assign(touched)
        if self.rows.n_rows > self.capacity:
            self._allocate(max(2 * self.capacity, self.rows.n_rows))
        self.accumulate_chunk(frames, self.pixel_index, code, cell, sub, self.rows.lut, self.n_sub,
                              np.asarray(frame_numbers, np.int64), exposure, pix.k, pix.d3s, pix.ix, pix.iy,
                              pix.s_norm, *self.background, self.c_max, self.ints, self.floats, self.hist,
                              self.n_threads)
        per_frame = tasks // n
        self._frames.extend(int(z) for z in frame_numbers)
        self._pc.append(task_pc.reshape(n, per_frame, -1).sum(axis=1))
        self._pk.append(task_pk.reshape(n, per_frame, -1).sum(axis=1))
        self._zingers += int(task_z.sum())

    def flush(self) -> EngineSums:
        sets = collect_sets(self.rows, self.n_sub, self.ints, self.floats, self.int_names, self.float_names,
                            self.hist if self.c_max >= 0 else None)
        n_bins = self.context.n_bins
        out = EngineSums(sets, np.asarray(self._frames, np.int64),
                         np.concatenate(self._pc) if self._pc else np.zeros((0, n_bins)),
                         np.concatenate(self._pk) if self._pk else np.zeros((0, n_bins)), self._zingers)
        self.rows.reset()
        self.ints = None
        self._allocate(1024)
        self._frames, self._pc, self._pk, self._zingers = [], [], [], 0
        return out
