"""Peak-cloud Bragg mask (mdx2's ``find_peaks``/``mask_peaks`` idea, made aware of symmetry).

Pass 1 finds "hot" pixels above a count threshold, indexes them and fits an anisotropic
Gaussian (mean r₀, covariance Σ) to δ = hkl − round(hkl) with outlier rejection. During
integration a pixel is Bragg-masked if its δ lies within ``sigma_cutoff`` Mahalanobis units of
r₀ *and* round(hkl) is an allowed reflection of the space group (systematic absences from
gemmi are not masked). Hot pixels that the model calls outliers (zingers) are dropped for
that frame; pixels hot in most frames are masked for the whole sweep.

The automatic threshold is per resolution bin: T = max(m + z·√(m + 1) + 2, r·m), with m the
median count in the bin over the sampled frames (z = ``threshold_sigma``, default 8;
r = ``threshold_ratio``, default 2): far above the Poisson spread of the diffuse and solvent
background, and above its smooth variation, wherever it is on the detector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import MaskError

__all__ = ["PeakParameters", "PeakModel", "ThresholdProfile", "fit_peak_cloud", "absent_table", "bragg_mask",
           "find_peaks", "PeakSearch"]

logger = logging.getLogger(__name__)

CHI2_3DOF_999 = 16.266  # 99.9 % point of χ² with 3 degrees of freedom


@dataclass(frozen=True)
class PeakParameters:
    """threshold : fixed count threshold, or None for the automatic per-resolution one.
    threshold_sigma : z of the automatic threshold. sigma_cutoff : mask radius (Mahalanobis).
    frame_stride : index strong pixels in every n-th frame (default 1: all frames).
    threshold_frames : evenly spaced frames the automatic threshold is taken from.
    """

    threshold: float | None = None
    threshold_sigma: float = 8.0
    threshold_ratio: float = 2.0
    sigma_cutoff: float = 3.0
    frame_stride: int = 1
    threshold_frames: int = 20
    hot_pixel_fraction: float = 0.5

    def __post_init__(self):
        if self.threshold is not None and not self.threshold > 0:
            raise MaskError(f"peak threshold must be positive, got {self.threshold}")
        if not self.sigma_cutoff > 0:
            raise MaskError(f"sigma_cutoff must be positive, got {self.sigma_cutoff}")
        if self.frame_stride < 1 or self.threshold_frames < 1:
            raise MaskError(f"frame_stride and threshold_frames must be at least 1, got {self.frame_stride} "
                            f"and {self.threshold_frames}")


@dataclass(frozen=True)
class ThresholdProfile:
    """Count threshold as a function of |s| (piecewise constant in ``edges``), counts per frame."""

    edges: np.ndarray
    values: np.ndarray

    def per_pixel(self, s_norm: np.ndarray) -> np.ndarray:
        index = np.clip(np.searchsorted(self.edges, s_norm) - 1, 0, len(self.values) - 1)
        return self.values[index]


def automatic_threshold(frames: np.ndarray, valid: np.ndarray, s_norm: np.ndarray, params: PeakParameters,
                        n_bins: int = 48) -> ThresholdProfile:
    """Threshold profile from frames (F, N) of counts, their validity (F, N) and |s| (N,)."""
    edges = np.linspace(0.0, float(s_norm.max()) * (1 + 1e-9), n_bins + 1)
    if params.threshold is not None:
        return ThresholdProfile(edges, np.full(n_bins, float(params.threshold)))
    from .peak_kernels import binned_medians  # noqa: PLC0415

    index = np.clip(np.searchsorted(edges, s_norm) - 1, 0, n_bins - 1)
    values = np.full(n_bins, np.inf)
    # negative counts (gaps, bad pixels) never enter a median
    medians = binned_medians(frames, np.asarray(valid) & (np.asarray(frames) >= 0), index, n_bins)
    for b, m in enumerate(medians):
        if np.isfinite(m):
            values[b] = max(m + params.threshold_sigma * np.sqrt(m + 1) + 2, params.threshold_ratio * m)
    finite = np.isfinite(values)
    if not finite.any():
        raise MaskError("no valid pixels to derive a peak threshold from")
    values[~finite] = values[finite].max()
    return ThresholdProfile(edges, values)


@dataclass(frozen=True)
class PeakModel:
    """Gaussian model of the Bragg peak shape in δ = hkl − round(hkl).

    offset : r₀ (3,), covariance : Σ (3, 3) in fractional Miller units.
    """

    offset: np.ndarray
    covariance: np.ndarray
    sigma_cutoff: float
    n_hot: int
    inlier_fraction: float
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def inverse_covariance(self) -> np.ndarray:
        return np.linalg.inv(self.covariance)

    @property
    def widths(self) -> np.ndarray:
        """σ along the principal axes (sqrt of Σ's eigenvalues), fractional units."""
        return np.sqrt(np.linalg.eigvalsh(self.covariance))

    def distance2(self, delta):
        """Squared Mahalanobis distance of δ (…, 3) from r₀ (NumPy; the CUDA engine has its own in
        ``kernels/gd_geometry.cuh``)."""
        r = delta - self.offset
        return (r @ self.inverse_covariance * r).sum(axis=-1)


def fit_peak_cloud(delta: np.ndarray, sigma_cutoff: float = 3.0, iterations: int = 30) -> PeakModel:
    """Robust Gaussian fit to the δ cloud of hot pixels (N, 3): iterate mean/covariance of the
    points within the 99.9 % χ² contour. Never raises on odd clouds; it warns instead."""
    delta = np.ascontiguousarray(delta, dtype=np.float64)
    warnings = []
    if len(delta) < 10:
        warnings.append(f"only {len(delta)} strong pixels found: the Bragg mask falls back to a broad default")
        return PeakModel(np.zeros(3), np.eye(3) * 0.1**2, sigma_cutoff, len(delta), 0.0, tuple(warnings))
    from .peak_kernels import cloud_step  # noqa: PLC0415

    centre = np.median(delta, axis=0)
    mad = np.median(np.abs(delta - centre), axis=0) * 1.4826
    cov = np.diag(np.maximum(mad, 1e-3) ** 2)
    inliers = np.ones(len(delta), bool)
    for _ in range(iterations):
        new = inliers.copy()
        count, mean, scatter, changed = cloud_step(delta, centre, np.linalg.inv(cov), CHI2_3DOF_999, new)
        if count < 10:
            break
        centre = mean
        cov = scatter / (count - 1) + np.eye(3) * 1e-8
        if changed == 0:
            break
        inliers = new
    fraction = float(inliers.mean())
    widths = np.sqrt(np.linalg.eigvalsh(cov))
    if np.linalg.norm(centre) > 0.1 or widths.max() > 0.15 or fraction < 0.5:
        warnings.append(
            f"the strong pixels do not index: peak cloud centred at |r0| = {np.linalg.norm(centre):.3f} "
            f"with widths {np.array2string(widths, precision=3)} and {100 * fraction:.0f} % inliers "
            "(a good geometry gives |r0| < 0.05 and widths < 0.1); check the geometry and rotation sense"
        )
    return PeakModel(centre, cov, sigma_cutoff, len(delta), fraction, tuple(warnings))


def bragg_mask(hkl: np.ndarray, model: PeakModel, absent: np.ndarray) -> np.ndarray:
    """True where fractional hkl (N, 3) lies within ``model.sigma_cutoff`` Mahalanobis units of an
    *allowed* reflection; ``absent`` is the table from :func:`absent_table`. (The integration
    engines' own test, :func:`gpudiffuse.integration.engines.numpy_engine.bragg_test`.)"""
    from ..integration.engines.base import BraggTest  # noqa: PLC0415
    from ..integration.engines.numpy_engine import bragg_test  # noqa: PLC0415

    return bragg_test(np.asarray(hkl, dtype=np.float64), BraggTest.from_model(model, absent))


def absent_table(space_group, hmax) -> np.ndarray:
    """Boolean table over integer hkl with |h|≤hmax₀ …: True where the reflection is systematically
    absent (gemmi's reflection conditions). Index with hkl + hmax."""
    import gemmi  # noqa: PLC0415

    axes = [np.arange(-h, h + 1) for h in hmax]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.int32)
    ops = gemmi.SpaceGroup(space_group.hm if hasattr(space_group, "hm") else space_group).operations()
    return ops.systematic_absences(grid).reshape(tuple(2 * np.asarray(hmax) + 1))


@dataclass
class PeakSearch:
    """Result of pass 1: the fitted model, one threshold profile and hot-pixel mask per sweep,
    and per-sweep figures (median max|δ| of the strong pixels, count)."""

    model: PeakModel
    thresholds: list[ThresholdProfile]
    hot_pixels: list[np.ndarray]
    per_sweep: list[dict]


def odd_frames(rates: np.ndarray, k: float = 10.0, floor: float = 0.2) -> np.ndarray:
    """Indices of frames whose total count rate differs from the median by more than k robust
    standard deviations (1.4826 · MAD) and by more than ``floor`` of the median: beam loss (an
    all-zero frame), a shutter fault, a frame of another run."""
    if len(rates) < 5:
        return np.zeros(0, np.int64)
    median = np.median(rates)
    spread = 1.4826 * np.median(np.abs(rates - median))
    far = np.abs(rates - median) > np.maximum(k * spread, floor * abs(median))
    return np.flatnonzero(far)


def find_peaks(experiment, params: PeakParameters, dmin: float | None = None, progress: bool = True) -> PeakSearch:
    """Pass 1 over every frame (or every ``frame_stride``-th) of every sweep: the automatic
    threshold from ``threshold_frames`` evenly spaced frames, then strong ("hot") pixels of each
    frame indexed and the δ cloud fitted. Pixels hot in most frames are masked for the sweep."""
    from ..progress import progress_bar  # noqa: PLC0415

    from ..geometry.vectors import s_vectors_from_positions  # noqa: PLC0415
    from ..io.frames import FrameSource  # noqa: PLC0415
    from .peak_kernels import strong_pixel_flags  # noqa: PLC0415
    from .pixel import frame_valid  # noqa: PLC0415

    deltas, thresholds, hot_masks, per_sweep = [], [], [], []
    total = sum(len(_stride_frames(s, params)) for s in experiment.sweeps)
    bar = progress_bar(progress, total=total, desc="find peaks", unit="frame")
    for sweep, mask in zip(experiment.sweeps, experiment.masks):
        pix = np.flatnonzero(mask.ravel())
        s = s_vectors_from_positions(sweep.panel.pixel_positions().reshape(-1, 3)[pix], sweep.beam)
        s_norm = np.linalg.norm(s, axis=1)
        if dmin:
            keep = s_norm <= 1.0 / dmin
            pix, s, s_norm = pix[keep], s[keep], s_norm[keep]
        # np.take keeps rows contiguous (a[:, pix] is column-major: every later pass over it, and
        # the compiled median's copy, paid for that; 1M preset: 0.25 s)
        sample = [np.take(chunk.data.reshape(len(chunk.frame_indices), -1), pix, axis=1)
                  for chunk in FrameSource(sweep, _sample_frames(sweep, params), chunk_size=8)]
        sample = np.concatenate(sample)
        profile = automatic_threshold(sample, frame_valid(sample, sweep.panel.trusted_range), s_norm, params)
        del sample
        threshold = profile.per_pixel(s_norm)
        frames = _stride_frames(sweep, params)
        strong = _StrongPixels(len(pix))
        rates = np.zeros(len(frames))
        for chunk in FrameSource(sweep, frames, chunk_size=8):
            flags, valid_sums = strong_pixel_flags(chunk.data.reshape(len(chunk.frame_indices), -1), pix, threshold,
                                                   sweep.panel.trusted_range)
            rates[np.searchsorted(frames, chunk.frame_indices)] = valid_sums / chunk.exposure_times
            for i, z in enumerate(chunk.frame_indices):
                hot = np.flatnonzero(flags[i])
                hkl = s[hot] @ np.linalg.inv(sweep.setting_matrix(int(z))).T
                strong.add(hot, hkl - np.rint(hkl))
            bar.update(len(chunk.frame_indices))
        persistent = strong.hot_frames >= max(3, params.hot_pixel_fraction * len(frames))
        hot_mask = np.zeros(mask.size, bool)
        hot_mask[pix[persistent]] = True
        d = strong.deltas(exclude=persistent)
        deltas.append(d)
        thresholds.append(profile)
        hot_masks.append(hot_mask.reshape(mask.shape))
        odd = odd_frames(rates)
        if len(odd):
            logger.warning("%s: %d frame(s) whose total count rate is far from the series' (median %.4g /s): %s",
                           sweep.source or f"sweep {sweep.batch}", len(odd), np.median(rates),
                           ", ".join(f"{sweep.images[frames[i]]} ({rates[i]:.4g} /s)" for i in odd[:5])
                           + (", …" if len(odd) > 5 else ""))
        per_sweep.append({"n_strong": int(strong.n_seen), "n_frames": int(len(frames)),
                          "median_max_delta": float(np.median(np.abs(d).max(axis=1))) if len(d) else float("nan"),
                          "n_hot_pixels": int(persistent.sum())})
    bar.close()
    model = fit_peak_cloud(np.concatenate(deltas), params.sigma_cutoff)
    for message in model.warnings:
        logger.warning(message)
    logger.info("peak cloud: %d strong pixels, r0 = %s, widths %s, %.0f %% inliers", model.n_hot,
                np.array2string(model.offset, precision=4), np.array2string(model.widths, precision=4),
                100 * model.inlier_fraction)
    return PeakSearch(model, thresholds, hot_masks, per_sweep)


class _StrongPixels:
    """Strong pixel-frames of a sweep: hot-frame count per pixel and (pixel, δ) pairs. Keeps at
    most ``cap`` pairs by thinning deterministically (every other pair, then every 4th …)."""

    def __init__(self, n_pixels: int, cap: int = 2_000_000):
        self.hot_frames = np.zeros(n_pixels, np.int32)
        self.cap, self.step, self.n_seen, self._count = cap, 1, 0, 0
        self._pixels, self._deltas = [], []

    def add(self, hot: np.ndarray, delta: np.ndarray) -> None:
        self.hot_frames[hot] += 1
        keep = (self.n_seen + np.arange(len(hot))) % self.step == 0
        self.n_seen += len(hot)
        self._pixels.append(hot[keep].astype(np.int32))
        self._deltas.append(delta[keep].astype(np.float32))
        self._count += int(keep.sum())
        if self._count > self.cap:
            pixels, deltas = np.concatenate(self._pixels)[::2], np.concatenate(self._deltas)[::2]
            self._pixels, self._deltas, self._count, self.step = [pixels], [deltas], len(pixels), 2 * self.step

    def deltas(self, exclude: np.ndarray) -> np.ndarray:
        if not self._pixels:
            return np.zeros((0, 3))
        pixels, deltas = np.concatenate(self._pixels), np.concatenate(self._deltas).astype(np.float64)
        return deltas[~exclude[pixels]]


def _sample_frames(sweep, params: PeakParameters) -> np.ndarray:
    """Evenly spaced frames for the automatic threshold."""
    n = sweep.scan.num_frames
    return np.unique(np.linspace(0, n - 1, min(n, params.threshold_frames)).round().astype(np.int64))


def _stride_frames(sweep, params: PeakParameters) -> np.ndarray:
    return np.arange(0, sweep.scan.num_frames, params.frame_stride)
