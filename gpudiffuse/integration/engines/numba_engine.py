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

from ...errors import GridError
from .base import EngineSums, HostAccumulators, register_engine

__all__ = ["NumbaEngine"]

PIXELS_PER_TASK = 32768
PIXELS_PER_SEGMENT = 4 * 1024 * 1024  # pixel-frames per pass (32 MB of packed words)
BLOCK = 512
_KERNELS = None


def _compile():
    """Define the jitted functions on first use (numba is imported only when the engine runs)."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    import numba  # noqa: PLC0415
    from numba import njit, prange  # noqa: PLC0415

    @njit(parallel=True, cache=True, nogil=True)
    def decide_chunk(frames, pixel_index, sx, sy, sz, inverse, threshold, ndiv, hmax, min_valid, overload, use_bragg,
                     offset, inv_cov, cutoff2, absent, absent_half, k, exposure, profile_bin, n_bins,
                     packed, touched, task_profile_counts, task_profile_kt, task_zingers):
        n_frames = frames.shape[0]
        n_pix = pixel_index.shape[0]
        n_tasks = (n_pix + PIXELS_PER_TASK - 1) // PIXELS_PER_TASK
        n0, n1, n2 = np.float64(ndiv[0]), np.float64(ndiv[1]), np.float64(ndiv[2])
        half0, half1, half2 = np.float64(ndiv[0] // 2), np.float64(ndiv[1] // 2), np.float64(ndiv[2] // 2)
        hm0, hm1, hm2 = np.float64(hmax[0]), np.float64(hmax[1]), np.float64(hmax[2])
        w1, w2 = 2.0 * hm1 + 1.0, 2.0 * hm2 + 1.0
        o0, o1, o2 = offset[0], offset[1], offset[2]
        c00, c01, c02 = inv_cov[0, 0], inv_cov[0, 1], inv_cov[0, 2]
        c10, c11, c12 = inv_cov[1, 0], inv_cov[1, 1], inv_cov[1, 2]
        c20, c21, c22 = inv_cov[2, 0], inv_cov[2, 1], inv_cov[2, 2]
        for task in prange(n_tasks):
            start = task * PIXELS_PER_TASK
            stop = min(start + PIXELS_PER_TASK, n_pix)
            g0b = np.empty(BLOCK)
            g1b = np.empty(BLOCK)
            g2b = np.empty(BLOCK)
            d2b = np.empty(BLOCK)
            flatb = np.empty(BLOCK)
            subb = np.empty(BLOCK)
            zingers = 0
            for f in range(n_frames):
                m = inverse[f]
                m00, m01, m02 = m[0, 0], m[0, 1], m[0, 2]
                m10, m11, m12 = m[1, 0], m[1, 1], m[1, 2]
                m20, m21, m22 = m[2, 0], m[2, 1], m[2, 2]
                t = exposure[f]
                for p0 in range(start, stop, BLOCK):
                    nb = min(BLOCK, stop - p0)
                    # branch-free arithmetic of the decision chain (vectorisable): hkl in the kernels'
                    # order, Mahalanobis distance, voxel split (cell = rint(h), corrected by at most one
                    # step, equals floor((rint(h·n) + ⌊n/2⌋)/n)); all integers exact in float64
                    for j in range(nb):
                        x, y, z = sx[p0 + j], sy[p0 + j], sz[p0 + j]
                        h0 = m00 * x + m01 * y + m02 * z
                        h1 = m10 * x + m11 * y + m12 * z
                        h2 = m20 * x + m21 * y + m22 * z
                        g0, g1, g2 = np.rint(h0), np.rint(h1), np.rint(h2)
                        r0, r1, r2 = h0 - g0 - o0, h1 - g1 - o1, h2 - g2 - o2
                        d2 = r0 * c00 * r0 + r0 * c01 * r1 + r0 * c02 * r2 + r1 * c10 * r0 + r1 * c11 * r1 \
                            + r1 * c12 * r2 + r2 * c20 * r0 + r2 * c21 * r1 + r2 * c22 * r2
                        s0 = np.rint(h0 * n0) + half0 - g0 * n0
                        s1 = np.rint(h1 * n1) + half1 - g1 * n1
                        s2 = np.rint(h2 * n2) + half2 - g2 * n2
                        l0 = np.float64(s0 < 0.0) - np.float64(s0 >= n0)
                        l1 = np.float64(s1 < 0.0) - np.float64(s1 >= n1)
                        l2 = np.float64(s2 < 0.0) - np.float64(s2 >= n2)
                        e0, e1, e2 = g0 - l0, g1 - l1, g2 - l2
                        s0, s1, s2 = s0 + l0 * n0, s1 + l1 * n1, s2 + l2 * n2
                        inside = (abs(e0) <= hm0) & (abs(e1) <= hm1) & (abs(e2) <= hm2)
                        flatb[j] = ((e0 + hm0) * w1 + (e1 + hm1)) * w2 + (e2 + hm2) if inside else -1.0
                        subb[j] = (s0 * n1 + s1) * n2 + s2
                        g0b[j], g1b[j], g2b[j], d2b[j] = g0, g1, g2, d2
                    # the decisions
                    for j in range(nb):
                        p = p0 + j
                        i = f * n_pix + p
                        value = np.float64(frames[f, pixel_index[p]])
                        packed[i] = -1
                        if value < min_valid or value >= overload:
                            continue
                        bragg = False
                        if use_bragg and d2b[j] <= cutoff2:
                            a0 = np.int64(g0b[j]) + absent_half[0]
                            a1 = np.int64(g1b[j]) + absent_half[1]
                            a2 = np.int64(g2b[j]) + absent_half[2]
                            if 0 <= a0 < absent.shape[0] and 0 <= a1 < absent.shape[1] and \
                                    0 <= a2 < absent.shape[2]:
                                bragg = absent[a0, a1, a2] == 0
                        if not bragg and value >= threshold[p]:
                            zingers += 1
                            continue
                        if flatb[j] < 0.0:
                            continue
                        cell = np.int64(flatb[j])
                        packed[i] = (cell << 17) | (np.int64(subb[j]) << 1) | (1 if bragg else 0)
                        touched[cell] = 1
                        if not bragg:
                            b = profile_bin[p]
                            task_profile_counts[task, f, b] += value
                            task_profile_kt[task, f, b] += k[p] * t
            task_zingers[task] = zingers

    @njit(parallel=True, cache=True, nogil=True)
    def accumulate_chunk(frames, pixel_index, packed, lut, owner, n_sub, frame_numbers, exposure, k, d3s, ix, iy, s_norm,
                         with_background, bkg_rate, bkg_var, c_max, ints, floats, hist, n_threads):
        n_frames = frames.shape[0]
        n_pix = pixel_index.shape[0]
        for t in prange(n_threads):
            for p in range(n_pix):
                source = pixel_index[p]
                for f in range(n_frames):
                    word = packed[f * n_pix + p]
                    if word < 0:
                        continue
                    cell = word >> 17
                    if owner[cell] != t:
                        continue
                    row = lut[cell]
                    key = row * n_sub + ((word >> 1) & 0xFFFF)
                    st = word & 1
                    tf = exposure[f]
                    value = np.int64(frames[f, source])
                    ints[st, key, 0] += value
                    ints[st, key, 1] += 1
                    ints[st, key, 2] += frame_numbers[f]
                    floats[st, key, 0] += k[p] * tf
                    floats[st, key, 1] += d3s[p]
                    floats[st, key, 2] += ix[p]
                    floats[st, key, 3] += iy[p]
                    floats[st, key, 4] += s_norm[p]
                    if with_background:
                        floats[st, key, 5] += bkg_rate[p] * tf
                        floats[st, key, 6] += bkg_var[p] * tf * tf
                    if c_max >= 0:
                        if value > c_max:
                            ints[st, key, 3] += value
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
        if self.n_sub >= 2**16:
            raise GridError(f"--ndiv {grid.ndiv}: the cpu engine handles at most 65535 sub-voxels per cell; "
                            "use --engine numpy")
        self.acc = HostAccumulators(context)
        self.touched = np.zeros(grid.n_cells, np.uint8)
        self.owner = np.zeros(grid.n_cells, np.int64)
        # the kernels write fields by position in schema order
        assert self.acc.int_names[:3] == ("counts", "pixels", "frame_sum")
        assert self.acc.float_names[:5] == ("kt_sum", "d3s_sum", "ix_sum", "iy_sum", "s_sum")
        self.ndiv = np.asarray(grid.ndiv, np.int64)
        self.hmax = np.asarray(grid.hmax, np.int64)
        b = context.bragg
        self.bragg_args = (True, b.offset, b.inverse_covariance, b.cutoff2, b.absent, b.absent_half.astype(np.int64)) \
            if b is not None else (False, np.zeros(3), np.eye(3), 0.0, np.zeros((1, 1, 1), np.uint8),
                                   np.zeros(3, np.int64))
        self.pixel_index = pix.index.astype(np.int64)
        self.s_columns = tuple(np.ascontiguousarray(pix.s[:, a]) for a in range(3))
        self.threshold = np.where(np.isfinite(pix.threshold), pix.threshold, 1e300)
        bkg = context.background
        self.background = (True, bkg[0], bkg[1]) if bkg is not None else (False, np.zeros(1), np.zeros(1))
        self._packed = np.empty(0, np.int64)
        self._frames, self._pc, self._pk, self._zingers = [], [], [], 0

    def add(self, frames, frame_numbers, inverse_setting, exposure):
        n, n_pix = len(frame_numbers), len(self.context.pixels)
        frames = np.ascontiguousarray(frames.reshape(n, -1))
        inverse = np.ascontiguousarray(inverse_setting, dtype=np.float64)
        exposure = np.ascontiguousarray(exposure, dtype=np.float64)
        frame_numbers = np.asarray(frame_numbers, np.int64)
        # segments of pixels keep the packed words of one pass (8 bytes per pixel-frame) near the
        # cache size: a P6M chunk of 8 frames would otherwise write and re-read 364 MB
        step = max(PIXELS_PER_TASK, (PIXELS_PER_SEGMENT // n) // PIXELS_PER_TASK * PIXELS_PER_TASK)
        profile_counts = np.zeros((n, self.context.n_bins))
        profile_kt = np.zeros((n, self.context.n_bins))
        for start in range(0, n_pix, step):
            pc, pk = self._add_segment(slice(start, min(start + step, n_pix)), frames, frame_numbers, inverse,
                                       exposure)
            profile_counts += pc
            profile_kt += pk
        self._frames.extend(int(z) for z in frame_numbers)
        self._pc.append(profile_counts)
        self._pk.append(profile_kt)

    def _add_segment(self, seg, frames, frame_numbers, inverse, exposure):
        """Both passes over the pixels ``seg`` of every frame of the chunk; returns its profile."""
        ctx, pix, acc = self.context, self.context.pixels, self.acc
        with_background, rate, variance = self.background  # without one, the empty slices are never read
        n, n_seg = len(frame_numbers), seg.stop - seg.start
        total = n * n_seg
        if self._packed.size < total:  # cell << 17 | sub << 1 | set, or -1: not accumulated
            self._packed = np.empty(total, np.int64)
        packed = self._packed[:total]
        tasks = (n_seg + PIXELS_PER_TASK - 1) // PIXELS_PER_TASK
        task_pc = np.zeros((tasks, n, ctx.n_bins))
        task_pk = np.zeros((tasks, n, ctx.n_bins))
        task_z = np.zeros(tasks, np.int64)
        self.decide_chunk(frames, self.pixel_index[seg], *(c[seg] for c in self.s_columns), inverse,
                          self.threshold[seg], self.ndiv, self.hmax, *ctx.trusted_range, *self.bragg_args, pix.k[seg],
                          exposure, ctx.profile_bin[seg], ctx.n_bins, packed, self.touched, task_pc, task_pk, task_z)
        touched = np.flatnonzero(self.touched)
        self.touched[touched] = 0
        acc.assign(touched)
        # the thread that accumulates a cell's voxels: rows dealt round-robin
        self.owner[touched] = acc.rows.lut[touched] % self.n_threads
        self.accumulate_chunk(frames, self.pixel_index[seg], packed, acc.rows.lut, self.owner, self.n_sub,
                              frame_numbers, exposure, pix.k[seg], pix.d3s[seg], pix.ix[seg], pix.iy[seg],
                              pix.s_norm[seg], with_background, rate[seg], variance[seg], acc.c_max, acc.ints,
                              acc.floats, acc.hist, self.n_threads)
        self._zingers += int(task_z.sum())
        return task_pc.sum(axis=0), task_pk.sum(axis=0)

    def flush(self) -> EngineSums:
        sets = self.acc.collect_and_clear()
        n_bins = self.context.n_bins
        out = EngineSums(sets, np.asarray(self._frames, np.int64),
                         np.concatenate(self._pc) if self._pc else np.zeros((0, n_bins)),
                         np.concatenate(self._pk) if self._pk else np.zeros((0, n_bins)), self._zingers)
        self._frames, self._pc, self._pk, self._zingers = [], [], [], 0
        return out
