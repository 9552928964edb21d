"""One test body over every engine that runs here: the NumPy engine is the oracle. ``cuda-host``
is the CUDA engine's driver running the real kernels of integrate.cu compiled for the CPU.

Integer accumulators must be identical (same voxel assignment for every pixel-frame), float
sums equal within 1e-12 relative (only the order of additions differs).
"""

import numpy as np
import pytest

from gpudiffuse.integration import IntegrationParameters, available_engines, integrate_sweep
from gpudiffuse.integration.blocks import BlockTask, run_block
from gpudiffuse.integration.record import IntegrationResult
from gpudiffuse.integration.driver import wedge_blocks

import host_cuda  # noqa: F401  (registers the "cuda-host" engine: integrate.cu built for the CPU)
from engine_helpers import assert_records_equal, synthetic_background, tiny_sweep

FAST_ENGINES = [e for e in available_engines() if e != "numpy"]
PARAMS = IntegrationParameters(ndiv=(3, 3, 3), chunk_size=3, histogram_max=20)


@pytest.fixture(scope="module")
def reference(tiny_dataset):
    sweep, mask, dmin, pixels, grid, model, absent, _ = tiny_sweep(str(tiny_dataset))
    background = synthetic_background(pixels)
    return integrate_sweep(sweep, pixels, grid, model, absent, PARAMS, "numpy", background)


def test_reference_is_sensible(reference, tiny_dataset):
    """Independent checks of the oracle itself: every used pixel-frame lands somewhere, once."""
    sweep, mask, dmin, pixels, grid, model, absent, _ = tiny_sweep(str(tiny_dataset))
    d, x = reference.diffuse.columns, reference.excluded.columns
    total_pixels = d["pixels"].sum() + x["pixels"].sum()
    n_frames = sweep.scan.num_frames
    # at most every used pixel in every frame; most of them (few invalid/zinger/outside)
    assert 0.95 * n_frames * len(pixels) < total_pixels + reference.zingers <= n_frames * len(pixels)
    # histogram: one entry per pixel-frame with count ≤ c_max, the rest in the overflow sum
    for cols in (d, x):
        assert cols["count_histogram"].shape[1] == 21
        below = cols["count_histogram"].sum(axis=1)
        assert np.all(below <= cols["pixels"])
        c = np.arange(21)
        hist_counts = (cols["count_histogram"] * c).sum(axis=1)
        np.testing.assert_array_equal(hist_counts + cols["overflow_counts"], cols["counts"])
    # Bragg pixels are the strong ones: mean rate in excluded voxels far above the diffuse
    assert x["counts"].sum() / x["pixels"].sum() > 5 * d["counts"].sum() / d["pixels"].sum()
    # profile: diffuse counts per frame sum to the diffuse record's counts
    assert reference.profile_counts[sweep.batch].sum() == d["counts"].sum()
    # background sums: Σ rate·t over pixel-frames, t = 0.2 s in the tiny set
    assert np.all(d["bkg_sum"] > 0)


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_engine_matches_numpy(engine, reference, tiny_dataset):
    sweep, mask, dmin, pixels, grid, model, absent, _ = tiny_sweep(str(tiny_dataset))
    result = integrate_sweep(sweep, pixels, grid, model, absent, PARAMS, engine, synthetic_background(pixels))
    assert_records_equal(result.diffuse, reference.diffuse)
    assert_records_equal(result.excluded, reference.excluded)
    assert result.zingers == reference.zingers
    np.testing.assert_allclose(result.profile_counts[0], reference.profile_counts[0], rtol=1e-12)
    np.testing.assert_allclose(result.profile_kt[0], reference.profile_kt[0], rtol=1e-12)


@pytest.mark.parametrize("engine", available_engines())
def test_blocks_of_wedges_sum_to_one_pass(engine, tiny_dataset):
    """Integrating blocks separately (in any order) and summing equals one pass; floats exactly
    (each (voxel, wedge) row lives in one block) for the deterministic engines, to rounding for
    the CUDA kernels, whose float atomics add in whatever order the threads arrive."""
    float_rtol = 0 if engine in ("numpy", "cpu") else 1e-12
    sweep, mask, dmin, pixels, grid, model, absent, threshold = tiny_sweep(str(tiny_dataset))
    params = IntegrationParameters(ndiv=(3, 3, 3), chunk_size=2, wedge_degrees=1.0)
    whole = integrate_sweep(sweep, pixels, grid, model, absent, params, engine)
    blocks = wedge_blocks(sweep, params, 3)
    assert len(blocks) == 3 and sum(len(b) for b in blocks) == sweep.scan.num_frames
    tasks = [BlockTask(sweep, mask, dmin, grid, params, frames, engine, threshold, model, absent)
             for frames in reversed(blocks)]
    summed = IntegrationResult.sum([run_block(t) for t in tasks])
    assert_records_equal(summed.diffuse, whole.diffuse, float_rtol=float_rtol)
    assert_records_equal(summed.excluded, whole.excluded, float_rtol=float_rtol)
    np.testing.assert_allclose(summed.profile_counts[0], whole.profile_counts[0], rtol=float_rtol)
    assert summed.zingers == whole.zingers
    pairwise = run_block(tasks[0]) + run_block(tasks[1]) + run_block(tasks[2])
    assert_records_equal(pairwise.diffuse, whole.diffuse, float_rtol=float_rtol)


def test_cpu_engine_does_not_depend_on_the_thread_count(tiny_dataset):
    if "cpu" not in FAST_ENGINES:
        pytest.skip("numba is not installed")
    import numba

    sweep, mask, dmin, pixels, grid, model, absent, _ = tiny_sweep(str(tiny_dataset))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = integrate_sweep(sweep, pixels, grid, model, absent, PARAMS, "cpu")
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = integrate_sweep(sweep, pixels, grid, model, absent, PARAMS, "cpu")
    finally:
        numba.set_num_threads(before)
    assert_records_equal(one.diffuse, many.diffuse, float_rtol=0)
    assert_records_equal(one.excluded, many.excluded, float_rtol=0)


@pytest.mark.parametrize("engine", available_engines())
def test_accumulators_beyond_the_memory_are_refused(engine, tiny_dataset, monkeypatch):
    """Count histograms of a million bins per voxel would outgrow any memory: every engine
    refuses in one line naming --filter-max-count before allocating them (the CUDA engines
    against the GPU's free memory, the host stand-in's 8 GiB here)."""
    from gpudiffuse.errors import GridError
    from gpudiffuse.integration.engines import base

    monkeypatch.setattr(base, "memory_budget", lambda: 4e9)
    sweep, mask, dmin, pixels, grid, model, absent, _ = tiny_sweep(str(tiny_dataset))
    params = IntegrationParameters(ndiv=(3, 3, 3), histogram_max=1_000_000)
    with pytest.raises(GridError, match=r"count histograms of 1000001 bins per voxel \(--filter-max-count 1000000\)"):
        integrate_sweep(sweep, pixels, grid, model, absent, params, engine)
