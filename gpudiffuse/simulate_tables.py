"""Observation tables with known scale factors, without images (for the scaling tests and
benchmarks); re-exported by :mod:`gpudiffuse.simulate`."""

from __future__ import annotations

import numpy as np

__all__ = ["simulate_observation_table"]


def simulate_observation_table(n_obs: int, n_batches: int = 2, n_frames: int = 100, n_voxels: int | None = None,
                               image_size=(487, 619), n_regions: int = 3, seed: int = 0, noise: float = 0.02):
    """An observation table with known scale factors, without images (for scaling tests and benchmarks).

    Each row observes voxel ``group`` (true intensity I_v) in batch j at frame z, detector position
    (ix, iy) in region r, |s|: rate = a·d·(b·I_v + c) + noise, with smooth a, b, c and region factors d.
    Returns (table, truth) where truth holds the per-row a, b, c, d and the voxel intensities.
    """
    rng = np.random.default_rng(seed)
    n_voxels = n_voxels or max(10, n_obs // 8)
    intensity = rng.gamma(4.0, 0.25, n_voxels) + 0.5
    group = rng.integers(0, n_voxels, n_obs)
    batch = rng.integers(0, n_batches, n_obs)
    frame = rng.uniform(0, n_frames - 1, n_obs)
    nx, ny = image_size
    ix, iy = rng.uniform(0, nx - 1, n_obs), rng.uniform(0, ny - 1, n_obs)
    s = np.cbrt(rng.uniform(0.05**3, 0.5**3, n_obs))
    region = np.minimum((iy / ny * n_regions).astype(np.int64), n_regions - 1)
    regions_map = np.minimum((np.arange(ny) / ny * n_regions).astype(np.int64), n_regions - 1)[:, None] \
        * np.ones(nx, np.int64)[None, :]
    w = frame / max(n_frames - 1, 1)  # stills (one frame per batch): w = 0
    b = (1.0 + 0.2 * batch) * (1 - 0.2 * w + 0.05 * np.sin(3 * w + batch))
    c = 0.1 * (0.5 + s) * (1 + 0.3 * w)
    a = 1 + 0.05 * np.cos(2 * np.pi * ix / nx + batch) * (iy / ny - 0.5) + 0.03 * np.sin(np.pi * iy / ny + w)
    d_true = 1 + 0.03 * np.where(np.arange(n_regions) % 2 == 0, 1.0, -1.0) * (1 + 0.3 * np.arange(n_regions))
    d_true /= d_true.mean()
    d = d_true[region]
    expected = a * d * (b * intensity[group] + c)
    sigma = noise * expected
    rate = expected + rng.normal(0, 1, n_obs) * sigma
    table = {"rate": rate, "sigma": sigma, "batch": batch.astype(np.int32), "frame": frame, "s": s, "ix": ix,
             "iy": iy, "H": group.astype(np.int32), "K": np.zeros(n_obs, np.int32), "L": np.zeros(n_obs, np.int32)}
    truth = {"a": a, "b": b, "c": c, "d": d, "d_regions": d_true, "intensity": intensity, "group": group,
             "regions_map": regions_map, "n_frames": n_frames}
    return table, truth
