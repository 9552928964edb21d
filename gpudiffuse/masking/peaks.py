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
    frame_stride : use every n-th frame in pass 1 (None: about 40 frames per sweep).
    """

    threshold: float | None = None
    threshold_sigma: float = 8.0
    threshold_ratio: float = 2.0
    sigma_cutoff: float = 3.0
    frame_stride: int | None = None
    hot_pixel_fraction: float = 0.5

    def __post_init__(self):
        if self.threshold is not None and not self.threshold > 0:
            raise MaskError(f"peak threshold must be positive, got {self.threshold}")
        if not self.sigma_cutoff > 0:
            raise MaskError(f"sigma_cutoff must be positive, got {self.sigma_cutoff}")


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
    index = np.clip(np.searchsorted(edges, s_norm) - 1, 0, n_bins - 1)
    values = np.full(n_bins, np.inf)
    counts = np.where(valid, frames, -1)
    for b in range(n_bins):
        in_bin = counts[:, index == b]
        in_bin = in_bin[in_bin >= 0]
        if in_bin.size:
            m = float(np.median(in_bin))
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
    delta = np.asarray(delta, dtype=np.float64)
    warnings = []
    if len(delta) < 10:
        warnings.append(f"only {len(delta)} strong pixels found: the Bragg mask falls back to a broad default")
        return PeakModel(np.zeros(3), np.eye(3) * 0.1**2, sigma_cutoff, len(delta), 0.0, tuple(warnings))
    centre = np.median(delta, axis=0)
    mad = np.median(np.abs(delta - centre), axis=0) * 1.4826
    cov = np.diag(np.maximum(mad, 1e-3) ** 2)
    inliers = np.ones(len(delta), bool)
    for _ in range(iterations):
        r = delta - centre
        d2 = np.einsum("ni,ij,nj->n", r, np.linalg.inv(cov), r)
        new = d2 < CHI2_3DOF_999
        if new.sum() < 10:
            break
        centre = delta[new].mean(axis=0)
        cov = np.cov(delta[new].T) + np.eye(3) * 1e-8
        if np.array_equal(new, inliers):
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
    *allowed* reflection; ``absent`` is the table from :func:`absent_table`."""
    g = np.rint(hkl)
    near = model.distance2(hkl - g) <= model.sigma_cutoff**2
    half = np.asarray(absent.shape) // 2
    gi = g.astype(np.int64) + half
    in_table = np.all((gi >= 0) & (gi < np.asarray(absent.shape)), axis=1)
    gi = np.where(in_table[:, None], gi, 0)
    return near & in_table & ~absent[gi[:, 0], gi[:, 1], gi[:, 2]]


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


def find_peaks(experiment, params: PeakParameters, dmin: float | None = None, progress: bool = True) -> PeakSearch:
    """Pass 1 over (a stride of) the frames of every sweep: threshold, index, fit the cloud."""
    from tqdm import tqdm  # noqa: PLC0415

    from ..geometry.vectors import s_vectors_from_positions  # noqa: PLC0415
    from ..io.frames import FrameSource  # noqa: PLC0415
    from .pixel import frame_valid  # noqa: PLC0415

    deltas, thresholds, hot_masks, per_sweep = [], [], [], []
    total = sum(len(_stride_frames(s, params)) for s in experiment.sweeps)
    bar = tqdm(total=total, desc="find peaks", unit="frame", disable=not progress)
    for sweep, mask in zip(experiment.sweeps, experiment.masks):
        frames = _stride_frames(sweep, params)
        pix = np.flatnonzero(mask.ravel())
        s = s_vectors_from_positions(sweep.panel.pixel_positions().reshape(-1, 3)[pix], sweep.beam)
        s_norm = np.linalg.norm(s, axis=1)
        if dmin:
            keep = s_norm <= 1.0 / dmin
            pix, s, s_norm = pix[keep], s[keep], s_norm[keep]
        stack, valid = [], []
        for chunk in FrameSource(sweep, frames, chunk_size=8):
            data = chunk.data.reshape(len(chunk.frame_indices), -1)[:, pix]
            stack.append(data)
            valid.append(frame_valid(data, sweep.panel.trusted_range))
            bar.update(len(chunk.frame_indices))
        stack, valid = np.concatenate(stack), np.concatenate(valid)
        profile = automatic_threshold(stack, valid, s_norm, params)
        hot = valid & (stack >= profile.per_pixel(s_norm)[None, :])
        persistent = hot.sum(axis=0) >= max(3, params.hot_pixel_fraction * len(frames))
        hot_mask = np.zeros(mask.size, bool)
        hot_mask[pix[persistent]] = True
        sweep_deltas = []
        for i, z in enumerate(frames):
            sel = hot[i] & ~persistent
            if sel.any():
                hkl = s[sel] @ np.linalg.inv(sweep.setting_matrix(int(z))).T
                sweep_deltas.append(hkl - np.rint(hkl))
        d = np.concatenate(sweep_deltas) if sweep_deltas else np.zeros((0, 3))
        deltas.append(d)
        thresholds.append(profile)
        hot_masks.append(hot_mask.reshape(mask.shape))
        per_sweep.append({"n_strong": int(len(d)),
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


def _stride_frames(sweep, params: PeakParameters) -> np.ndarray:
    n = sweep.scan.num_frames
    stride = params.frame_stride or max(1, n // 40)
    return np.arange(0, n, stride)
