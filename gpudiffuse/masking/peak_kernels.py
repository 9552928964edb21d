"""Compiled (numba) full pass of the peak search over a chunk of raw frames.

One parallel pass per chunk reads each selected pixel of each frame once: the validity test,
the frame's summed valid counts (for the count-rate check) and the strong-pixel flag
(valid and counts ≥ threshold). The NumPy equivalent (:func:`strong_pixel_flags_numpy`, the
reference the tests hold it to) made four full-frame temporaries per frame and took most of
the step's time. Pixels are cut into fixed ranges whose partial sums are added in order, so the
sums do not depend on the thread count (and equal NumPy's: the counts are integers, summed
exactly in float64).
Module-level functions so that numba's on-disk cache finds them again in a new process.
"""

import numpy as np
from numba import njit, prange

__all__ = ["strong_pixel_flags", "strong_pixel_flags_numpy", "binned_medians", "binned_medians_numpy", "cloud_step",
           "cloud_step_numpy"]

PIXELS_PER_TASK = 65536


@njit(parallel=True, cache=True, nogil=True)
def _strong_pixel_flags(frames, pixel_index, threshold, min_valid, overload, flags, partial_sums):
    n_frames, n_pix = flags.shape
    n_parts = partial_sums.shape[1]
    for task in prange(n_frames * n_parts):
        f = task // n_parts
        start = (task % n_parts) * PIXELS_PER_TASK
        stop = min(start + PIXELS_PER_TASK, n_pix)
        total = 0.0
        for j in range(start, stop):
            value = np.float64(frames[f, pixel_index[j]])
            if value >= min_valid and value < overload:
                total += value
                flags[f, j] = value >= threshold[j]
            else:
                flags[f, j] = False
        partial_sums[f, task % n_parts] = total


def strong_pixel_flags(frames, pixel_index, threshold, trusted_range):
    """Strong pixels and valid-count sums of a chunk.

    frames : (n, n_slow·n_fast) raw counts, any integer or float type.
    pixel_index : (M,) flat indices of the pixels searched; threshold : (M,) counts per frame.
    trusted_range : (min_valid, overload): valid means min_valid ≤ value < overload.
    Returns (flags (n, M) bool: valid and value ≥ threshold, valid_sum (n,) float64: Σ of the
    valid counts of each frame over the searched pixels).
    """
    frames = np.ascontiguousarray(frames)
    pixel_index = np.ascontiguousarray(pixel_index, dtype=np.int64)
    threshold = np.ascontiguousarray(threshold, dtype=np.float64)
    n_parts = max(1, -(-len(pixel_index) // PIXELS_PER_TASK))
    flags = np.empty((frames.shape[0], len(pixel_index)), np.bool_)
    partial_sums = np.zeros((frames.shape[0], n_parts))
    _strong_pixel_flags(frames, pixel_index, threshold, float(trusted_range[0]), float(trusted_range[1]),
                        flags, partial_sums)
    return flags, partial_sums.sum(axis=1)


def strong_pixel_flags_numpy(frames, pixel_index, threshold, trusted_range):
    """The same in NumPy (the reference for :func:`strong_pixel_flags`)."""
    from .pixel import frame_valid  # noqa: PLC0415

    counts = np.asarray(frames)[:, pixel_index].astype(np.float64)
    valid = frame_valid(counts, trusted_range)
    flags = valid & (counts >= threshold)
    return flags, np.where(valid, counts, 0.0).sum(axis=1)


@njit(cache=True, nogil=True)
def _group_by_bin(frames, valid, bin_index, n_bins):
    """The valid values of ``frames`` grouped by their pixel's bin (a counting sort): the values of
    bin b are grouped[starts[b]:starts[b + 1]]."""
    n_frames, n_pix = frames.shape
    starts = np.zeros(n_bins + 1, np.int64)
    for f in range(n_frames):
        for j in range(n_pix):
            if valid[f, j]:
                starts[bin_index[j] + 1] += 1
    for b in range(n_bins):
        starts[b + 1] += starts[b]
    grouped = np.empty(starts[n_bins], frames.dtype)
    slot = starts[:n_bins].copy()
    for f in range(n_frames):
        for j in range(n_pix):
            if valid[f, j]:
                b = bin_index[j]
                grouped[slot[b]] = frames[f, j]
                slot[b] += 1
    return grouped, starts


def binned_medians(frames, valid, bin_index, n_bins: int) -> np.ndarray:
    """Median of the valid values of ``frames`` (F, N) over all frames, per pixel bin: pixel j is in
    bin ``bin_index[j]`` (0 … n_bins − 1). (n_bins,) float64, NaN for a bin without valid values.
    One compiled counting pass groups the values by bin (no per-bin boolean selection over the
    frames); the medians are NumPy's, of each bin's contiguous slice."""
    grouped, starts = _group_by_bin(np.ascontiguousarray(frames), np.ascontiguousarray(valid, dtype=np.bool_),
                                    np.ascontiguousarray(bin_index, dtype=np.int64), int(n_bins))
    return np.array([np.median(grouped[lo:hi]) if hi > lo else np.nan for lo, hi in zip(starts[:-1], starts[1:])],
                    dtype=np.float64)


def binned_medians_numpy(frames, valid, bin_index, n_bins: int) -> np.ndarray:
    """The same in NumPy (the reference for :func:`binned_medians`)."""
    medians = np.full(n_bins, np.nan)
    for b in range(n_bins):
        values = np.asarray(frames)[:, bin_index == b][np.asarray(valid)[:, bin_index == b]]
        if values.size:
            medians[b] = np.median(values)
    return medians


@njit(cache=True, nogil=True)
def cloud_step(delta, centre, inverse, limit, inside):
    """One step of the robust fit of the δ cloud (:func:`.peaks.fit_peak_cloud`), in two passes
    over the points and no (N, 3) temporaries.

    delta : (N, 3) points; centre (3,), inverse (3, 3): the current model; limit: the largest
    Mahalanobis² kept. ``inside`` (N,) bool holds the previous flags and receives the new ones.
    Returns (count, mean (3,), scatter (3, 3) = Σ (x − mean)(x − mean)ᵀ over the points flagged,
    how many flags changed). With count 0 the mean and scatter are zeros."""
    n = delta.shape[0]
    count = 0
    changed = 0
    total = np.zeros(3)
    for i in range(n):
        r0, r1, r2 = delta[i, 0] - centre[0], delta[i, 1] - centre[1], delta[i, 2] - centre[2]
        d2 = r0 * (inverse[0, 0] * r0 + inverse[0, 1] * r1 + inverse[0, 2] * r2) \
            + r1 * (inverse[1, 0] * r0 + inverse[1, 1] * r1 + inverse[1, 2] * r2) \
            + r2 * (inverse[2, 0] * r0 + inverse[2, 1] * r1 + inverse[2, 2] * r2)
        flag = d2 < limit
        if flag != inside[i]:
            changed += 1
        inside[i] = flag
        if flag:
            count += 1
            for k in range(3):
                total[k] += delta[i, k]
    mean = np.zeros(3)
    scatter = np.zeros((3, 3))
    if count == 0:
        return count, mean, scatter, changed
    for k in range(3):
        mean[k] = total[k] / count
    for i in range(n):
        if inside[i]:
            for a in range(3):
                for b in range(a, 3):
                    scatter[a, b] += (delta[i, a] - mean[a]) * (delta[i, b] - mean[b])
    for a in range(3):
        for b in range(a):
            scatter[a, b] = scatter[b, a]
    return count, mean, scatter, changed


def cloud_step_numpy(delta, centre, inverse, limit, inside):
    """The same in NumPy (the reference for :func:`cloud_step`)."""
    r = delta - centre
    new = ((r @ inverse) * r).sum(axis=1) < limit
    changed = int(np.count_nonzero(new != inside))
    inside[:] = new
    points = delta[new]
    if not len(points):
        return 0, np.zeros(3), np.zeros((3, 3)), changed
    mean = points.mean(axis=0)
    spread = points - mean
    return len(points), mean, spread.T @ spread, changed
