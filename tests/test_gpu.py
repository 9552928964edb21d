"""GPU engine parity with the NumPy engine (runs only where CuPy finds a CUDA GPU)."""

import numpy as np
import pytest

from conftest import requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]


def _engines(dataset):
    from gpudiffuse.backend import resolve_device
    from gpudiffuse.experiment import ImportParameters, import_experiment
    from gpudiffuse.grid import VoxelGrid
    from gpudiffuse.integrate import IntegrationParameters, integrate_sweep, prepare_pixels
    from gpudiffuse.integrate_gpu import integrate_sweep_gpu
    from gpudiffuse.masking.peaks import PeakParameters, absent_table, find_peaks
    from gpudiffuse.pipeline import resolve_dmin

    experiment = import_experiment(ImportParameters(xds=str(dataset)))
    dmin = resolve_dmin(experiment, None)
    search = find_peaks(experiment, PeakParameters(), dmin, progress=False)
    sweep, mask = experiment.sweeps[0], experiment.masks[0]
    grid = VoxelGrid.for_crystal(sweep.crystal.real_space_axes, dmin * 0.98, (3, 3, 3))
    absent = absent_table(sweep.crystal.space_group, grid.hmax)
    pixels = prepare_pixels(sweep, mask & ~search.hot_pixels[0], dmin, search.thresholds[0])
    params = IntegrationParameters(ndiv=(3, 3, 3), wedge_frames=5, chunk_size=3)
    cpu = integrate_sweep(sweep, pixels, grid, search.model, absent, params)
    gpu = integrate_sweep_gpu(sweep, pixels, grid, search.model, absent, params, resolve_device("gpu"))
    return cpu, gpu


def _by_key(rows):
    key = np.column_stack([rows["H"], rows["K"], rows["L"], rows["wedge"]])
    order = np.lexsort(key.T[::-1])
    return key[order], {k: v[order] for k, v in rows.items()}


def test_accumulators_match_the_cpu_engine(tiny_dataset):
    cpu, gpu = _engines(tiny_dataset)
    for a, b in ((cpu[0], gpu[0]), (cpu[1], gpu[1])):
        ka, ra = _by_key(a)
        kb, rb = _by_key(b)
        np.testing.assert_array_equal(ka, kb)
        for field in ("counts", "pixels", "frame_sum"):
            np.testing.assert_array_equal(ra[field], rb[field])
        for field in ("kt_sum", "d3s_sum", "ix_sum", "iy_sum", "s_sum"):
            np.testing.assert_allclose(ra[field], rb[field], rtol=1e-9)
    assert cpu[3] == gpu[3]
    np.testing.assert_allclose(cpu[2]["counts"], gpu[2]["counts"], rtol=1e-12)


def test_process_gpu_equals_cpu(tiny_dataset, tmp_path):
    import h5py

    from gpudiffuse.cli import main

    for device in ("cpu", "gpu"):
        assert main(["process", "--xds", str(tiny_dataset), "-o", str(tmp_path / device), "--device", device]) == 0
    with h5py.File(tmp_path / "cpu" / "merged.nxs") as a, h5py.File(tmp_path / "gpu" / "merged.nxs") as b:
        for key in ("h", "k", "l", "n"):
            np.testing.assert_array_equal(a["entry/merged"][key][()], b["entry/merged"][key][()])
        for key in ("intensity", "sigma"):
            np.testing.assert_allclose(a["entry/merged"][key][()], b["entry/merged"][key][()], rtol=1e-9)


def test_kernels_load_from_the_package():
    from gpudiffuse.backend import kernel_sources, load_module

    for path in kernel_sources():
        module = load_module(path.stem)
        assert module is not None
