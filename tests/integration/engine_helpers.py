"""Shared set-up of the integration tests: the tiny simulated sweep with its peak model."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=None)
def tiny_sweep(dataset: str):
    """(sweep, mask, pixels, grid, peak model, absent table, threshold profile) of the tiny set."""
    from gpudiffuse.experiment import ImportParameters, import_experiment
    from gpudiffuse.grid import VoxelGrid
    from gpudiffuse.integration import prepare_pixels
    from gpudiffuse.masking.peaks import PeakParameters, absent_table, find_peaks
    from gpudiffuse.steps.limits import resolve_dmin

    experiment = import_experiment(ImportParameters(xds=dataset))
    dmin = resolve_dmin(experiment, None)
    search = find_peaks(experiment, PeakParameters(), dmin, progress=False)
    sweep = experiment.sweeps[0]
    mask = experiment.masks[0] & ~search.hot_pixels[0]
    grid = VoxelGrid.for_crystal(sweep.crystal.real_space_axes, dmin * 0.98, (3, 3, 3))
    absent = absent_table(sweep.crystal.space_group, grid.hmax)
    pixels = prepare_pixels(sweep, mask, dmin, search.thresholds[0])
    return sweep, mask, dmin, pixels, grid, search.model, absent, search.thresholds[0]


def synthetic_background(pixels):
    """A smooth per-pixel background rate and variance (counts/s, counts²/s²)."""
    rate = 3.0 + 2.0 * np.cos(pixels.ix / 50.0) ** 2
    return rate, rate / 20.0


def assert_records_equal(a, b, float_rtol=1e-12):
    """Same keys and integer fields; float fields within ``float_rtol``."""
    assert set(a.columns) == set(b.columns)
    assert len(a) == len(b)
    for key, values in a.columns.items():
        other = b.columns[key]
        if values.dtype.kind in "iu":
            np.testing.assert_array_equal(values, other, err_msg=key)
        else:
            np.testing.assert_allclose(values, other, rtol=float_rtol, atol=0, err_msg=key)
