"""The compiled peak-search pass against a hand-worked case and against its NumPy reference."""

import numpy as np
import pytest

from gpudiffuse.masking.peak_kernels import PIXELS_PER_TASK, strong_pixel_flags, strong_pixel_flags_numpy

ENGINES = [strong_pixel_flags, strong_pixel_flags_numpy]


@pytest.mark.parametrize("engine", ENGINES, ids=["numba", "numpy"])
def test_hand_worked_frame(engine):
    # trusted range [0, 100): -1 (gap) and 100 (overload) are invalid; threshold 10 per pixel
    frames = np.array([[5, -1, 12, 100, 10, 3], [0, 0, 0, 0, 0, 99]], dtype=np.int32)
    pixel_index = np.array([0, 1, 2, 3, 4])  # pixel 5 is not searched
    flags, sums = engine(frames, pixel_index, np.full(5, 10.0), (0, 100))
    assert flags.tolist() == [[False, False, True, False, True], [False] * 5]
    assert sums.tolist() == [5 + 12 + 10, 0.0]


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32])
def test_compiled_equals_numpy_across_task_boundaries(dtype):
    rng = np.random.default_rng(7)
    n_pixels = 2 * PIXELS_PER_TASK + 123  # three tasks per frame, the last one short
    frames = rng.poisson(20, (3, n_pixels + 50)).astype(dtype)
    frames[:, rng.choice(n_pixels, 500, replace=False)] = 65535 if dtype == np.uint16 else -2
    pixel_index = np.sort(rng.choice(n_pixels + 50, n_pixels, replace=False))
    threshold = rng.uniform(15, 40, n_pixels)
    trusted = (0, 65535)
    flags, sums = strong_pixel_flags(frames, pixel_index, threshold, trusted)
    ref_flags, ref_sums = strong_pixel_flags_numpy(frames, pixel_index, threshold, trusted)
    np.testing.assert_array_equal(flags, ref_flags)
    np.testing.assert_array_equal(sums, ref_sums)  # integer counts: exact in float64
    assert 0 < flags.sum() < flags.size


def test_binned_medians_hand_worked():
    from gpudiffuse.masking.peak_kernels import binned_medians, binned_medians_numpy

    frames = np.array([[1, 5, 100, 7], [3, 9, 2, 7]], dtype=np.int32)
    valid = np.array([[True, True, False, True], [True, True, True, True]])
    bins = np.array([0, 0, 1, 0])
    # bin 0: 1, 5, 7, 3, 9, 7 → sorted 1 3 5 7 7 9 → (5 + 7) / 2; bin 1: 2 (100 invalid); bin 2 empty
    for engine in (binned_medians, binned_medians_numpy):
        np.testing.assert_array_equal(engine(frames, valid, bins, 3), [6.0, 2.0, np.nan])


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32])
def test_binned_medians_equal_numpy(dtype):
    from gpudiffuse.masking.peak_kernels import binned_medians, binned_medians_numpy

    rng = np.random.default_rng(9)
    frames = rng.poisson(40, (5, 30_001)).astype(dtype)
    valid = rng.random(frames.shape) > 0.05
    bins = rng.integers(0, 47, frames.shape[1])  # bin 47 of 48 stays empty
    got = binned_medians(frames, valid, bins, 48)
    np.testing.assert_array_equal(got, binned_medians_numpy(frames, valid, bins, 48))
    assert np.isnan(got[47]) and np.isfinite(got[:47]).all()


@pytest.mark.parametrize("step", ["cloud_step", "cloud_step_numpy"])
def test_cloud_step_hand_worked(step):
    """Five points, the last far out: four kept, their mean and scatter by hand."""
    from gpudiffuse.masking import peak_kernels

    delta = np.array([[0.0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0.1, 0.1, 0.2], [3.0, 0, 0]])
    inside = np.array([True, True, True, True, True])
    count, mean, scatter, changed = getattr(peak_kernels, step)(delta, np.zeros(3), np.eye(3), 1.0, inside)
    assert count == 4 and changed == 1
    np.testing.assert_array_equal(inside, [True, True, True, True, False])
    np.testing.assert_allclose(mean, [0.05, 0.05, 0.05], rtol=1e-14)
    # deviations from the mean: (−.05, −.05, −.05), (.05, −.05, −.05), (−.05, .05, −.05), (.05, .05, .15)
    want = np.array([[0.01, 0.0, 0.01], [0.0, 0.01, 0.01], [0.01, 0.01, 0.03]])
    np.testing.assert_allclose(scatter, want, rtol=1e-12, atol=1e-15)


def test_cloud_step_equals_numpy_on_a_cloud():
    from gpudiffuse.masking.peak_kernels import cloud_step, cloud_step_numpy

    rng = np.random.default_rng(5)
    delta = np.concatenate([rng.normal(0.01, 0.04, (200_000, 3)), rng.uniform(-0.5, 0.5, (20_000, 3))])
    inverse = np.linalg.inv(np.diag([0.03, 0.05, 0.04]) ** 2)
    previous = rng.random(len(delta)) < 0.9
    got_flags, want_flags = previous.copy(), previous.copy()
    got = cloud_step(delta, np.array([0.0, 0.02, 0.0]), inverse, 16.27, got_flags)
    want = cloud_step_numpy(delta, np.array([0.0, 0.02, 0.0]), inverse, 16.27, want_flags)
    np.testing.assert_array_equal(got_flags, want_flags)
    assert got[0] == want[0] and got[3] == want[3] and 0 < got[0] < len(delta)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-12)
