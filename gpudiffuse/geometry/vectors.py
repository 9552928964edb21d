"""Vectorised geometry: pixel positions → scattering vectors → fractional Miller indices.

Units: positions in mm (lab frame), scattering vectors s in 1/Å, |s| = 1/d.
"""

from __future__ import annotations

import numpy as np

from .model import Beam, Panel, Sweep

__all__ = [
    "pixel_s_vectors",
    "s_vectors_from_positions",
    "fractional_hkl",
    "sweep_fractional_hkl",
    "d_spacing",
    "edge_resolution",
    "rays_to_pixels",
]


def s_vectors_from_positions(positions: np.ndarray, beam: Beam) -> np.ndarray:
    """s = r/(|r| λ) − s0 for lab positions ``positions`` (..., 3) in mm; result in 1/Å."""
    r = np.asarray(positions, dtype=np.float64)
    unit = r / np.linalg.norm(r, axis=-1, keepdims=True)
    return unit / beam.wavelength - beam.s0


def pixel_s_vectors(panel: Panel, beam: Beam) -> np.ndarray:
    """Scattering vector of every pixel centre, shape (n_slow, n_fast, 3), 1/Å."""
    return s_vectors_from_positions(panel.pixel_positions(), beam)


def fractional_hkl(s_vectors: np.ndarray, setting_matrix: np.ndarray) -> np.ndarray:
    """Fractional Miller indices (…, 3) of scattering vectors (…, 3) for the lab matrix M
    (reciprocal vector = M @ hkl), i.e. hkl = M⁻¹ s."""
    inverse = np.linalg.inv(setting_matrix)
    return np.asarray(s_vectors) @ inverse.T


def sweep_fractional_hkl(sweep: Sweep, z: int, s_vectors: np.ndarray | None = None) -> np.ndarray:
    """Fractional hkl of every pixel of frame ``z`` (0-based) at its mid-frame angle."""
    if s_vectors is None:
        s_vectors = pixel_s_vectors(sweep.panel, sweep.beam)
    return fractional_hkl(s_vectors, sweep.setting_matrix(z))


def d_spacing(s_vectors: np.ndarray) -> np.ndarray:
    """Resolution d = 1/|s| (Å); infinite for s = 0."""
    with np.errstate(divide="ignore"):
        return 1.0 / np.linalg.norm(s_vectors, axis=-1)


def edge_resolution(panel: Panel, beam: Beam) -> tuple[float, float]:
    """Resolution (Å) at the detector edge: (d at the corner-most pixel, d at the closest
    point of the detector border), i.e. the highest resolution recorded anywhere and the
    highest resolution recorded over a complete ring (if the ring is inside the panel)."""
    n_slow, n_fast = panel.shape
    fast = np.concatenate([np.arange(n_fast), np.arange(n_fast), np.zeros(n_slow), np.full(n_slow, n_fast - 1)])
    slow = np.concatenate([np.zeros(n_fast), np.full(n_fast, n_slow - 1), np.arange(n_slow), np.arange(n_slow)])
    s_norm = np.linalg.norm(s_vectors_from_positions(panel.pixel_positions(fast, slow), beam), axis=-1)
    return 1.0 / s_norm.max(), 1.0 / s_norm.min()


def rays_to_pixels(panel: Panel, rays: np.ndarray) -> np.ndarray:
    """0-based (fast, slow) pixel-centre coordinates where rays from the sample hit the panel's
    plane; NaN for rays that point away from it. ``rays`` (..., 3) lab directions; result (..., 2)."""
    rays = np.asarray(rays, dtype=np.float64)
    normal = panel.normal
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.dot(panel.origin, normal) / (rays @ normal)
    t = np.where(t > 0, t, np.nan)
    offset = rays * t[..., None] - panel.origin
    # solve offset = u·fast + v·slow in the panel plane (axes need not be orthogonal)
    basis = np.stack([panel.fast_axis, panel.slow_axis], axis=1)
    uv = offset @ np.linalg.pinv(basis).T
    return np.stack([uv[..., 0] / panel.pixel_size[0] - 0.5, uv[..., 1] / panel.pixel_size[1] - 0.5], axis=-1)
