"""CUDA kernels without a GPU: every .cu compiles with nvcc (sm_80, sm_90), and a host build of
the __host__ __device__ arithmetic matches the NumPy engine on random inputs."""

import ctypes
import shutil
import subprocess

import gemmi
import numpy as np
import pytest

from gpudiffuse.backend import kernel_dir, kernel_sources
from gpudiffuse.corrections import attenuation_coefficient, pixel_corrections
from gpudiffuse.geometry.model import Beam, Panel
from gpudiffuse.grid import VoxelGrid
from gpudiffuse.masking.peaks import PeakModel, absent_table, bragg_mask


def test_kernel_sources_are_found():
    names = {p.name for p in kernel_sources()}
    assert {"integrate.cu", "corrections.cu"} <= names


@pytest.mark.nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", [p.name for p in kernel_sources()])
def test_kernel_compiles_with_nvcc(source, arch, tmp_path):
    result = subprocess.run(["nvcc", f"-arch={arch}", "--ptx", "-std=c++17", f"-I{kernel_dir()}",
                             "-o", str(tmp_path / "out.ptx"), str(kernel_dir() / source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.ptx").stat().st_size > 0


class CorrectionParams(ctypes.Structure):
    _fields_ = [("normal", ctypes.c_double * 3), ("px", ctypes.c_double), ("py", ctypes.c_double),
                ("s0_hat", ctypes.c_double * 3), ("e1", ctypes.c_double * 3), ("e2", ctypes.c_double * 3),
                ("pol_fraction", ctypes.c_double), ("mu_t", ctypes.c_double), ("mu_air", ctypes.c_double),
                ("axis", ctypes.c_double * 3), ("inv_lambda3", ctypes.c_double)]


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler for the host build")
    out = tmp_path_factory.mktemp("host") / "libgd_host.so"
    subprocess.run([compiler, "-O2", "-ffp-contract=off", "-shared", "-fPIC", "-std=c++17", f"-I{kernel_dir()}",
                    str(kernel_dir() / "host_api.cpp"), "-o", str(out)], check=True)
    return ctypes.CDLL(str(out))


def ptr(array):
    return array.ctypes.data_as(ctypes.c_void_p)


def test_host_hkl_and_voxel_split_match_numpy(host_lib):
    rng = np.random.default_rng(0)
    n = 200_000
    s = rng.normal(scale=0.3, size=(n, 3))
    minv = rng.normal(scale=30, size=(3, 3))
    hkl_host = np.zeros((n, 3))
    host_lib.gd_host_hkl(ctypes.c_int64(n), ptr(np.ascontiguousarray(minv)), ptr(s), ptr(hkl_host))
    np.testing.assert_allclose(hkl_host, s @ minv.T, rtol=1e-12, atol=1e-12)
    for ndiv in [(3, 3, 3), (2, 4, 5), (1, 1, 1)]:
        grid = VoxelGrid(ndiv, (20, 25, 30), 2.0)
        hkl = hkl_host.copy()
        hkl[:1000] = np.rint(hkl[:1000] * 2) / 2  # exact half-integers: rounding ties
        cell_np, sub_np, inside = grid.split(grid.voxel_index(hkl))
        cell = np.zeros(n, np.int64)
        sub = np.zeros(n, np.int32)
        host_lib.gd_host_voxel_split(ctypes.c_int64(n), ptr(hkl), ptr(np.array(ndiv, np.int32)),
                                     ptr(np.array(grid.hmax, np.int32)), ptr(cell), ptr(sub))
        np.testing.assert_array_equal(cell, np.where(inside, cell_np, -1))
        np.testing.assert_array_equal(sub[inside], sub_np[inside])
        assert inside.any() and (~inside).any()


def test_host_bragg_test_matches_numpy(host_lib):
    rng = np.random.default_rng(1)
    n = 100_000
    hkl = rng.uniform(-12, 12, size=(n, 3))
    cov = np.array([[0.004, 0.001, 0], [0.001, 0.003, 0], [0, 0, 0.005]])
    model = PeakModel(np.array([0.01, -0.02, 0.005]), cov, 3.0, 100, 1.0)
    absent = absent_table(gemmi.SpaceGroup("I 2 2 2"), (10, 10, 10))
    expected = bragg_mask(hkl, model, absent)
    out = np.zeros(n, np.uint8)
    host_lib.gd_host_bragg(ctypes.c_int64(n), ptr(hkl), ptr(model.offset), ptr(np.ascontiguousarray(model.inverse_covariance)),
                           ctypes.c_double(9.0), ptr(absent.astype(np.uint8)), ptr(np.array([10, 10, 10], np.int32)),
                           ptr(out))
    np.testing.assert_array_equal(out.astype(bool), expected)
    assert expected.sum() > 100


def test_host_corrections_match_numpy(host_lib):
    panel = Panel(origin=[-40, -45, 120], fast_axis=[1, 0.01, 0], slow_axis=[0, 1, 0.02], pixel_size=(0.172, 0.172),
                  image_size=(487, 519), thickness=0.45, material="Si")
    beam = Beam(direction=[0.001, 0.002, 1], wavelength=0.9, polarization_fraction=0.95)
    positions = panel.pixel_positions().reshape(-1, 3)
    axis = np.array([1.0, 0.0, 0.0])
    ref = pixel_corrections(positions, panel, beam, rotation_axis=axis)
    e1 = np.cross(beam.direction, beam.polarization_normal)
    e1 /= np.linalg.norm(e1)
    params = CorrectionParams(
        (ctypes.c_double * 3)(*panel.normal), 0.172, 0.172, (ctypes.c_double * 3)(*beam.direction),
        (ctypes.c_double * 3)(*e1), (ctypes.c_double * 3)(*np.cross(beam.direction, e1)), 0.95,
        attenuation_coefficient("Si", 0.9) * 0.45, attenuation_coefficient("air", 0.9), (ctypes.c_double * 3)(*axis),
        1 / 0.9**3)
    k = np.zeros(len(positions))
    swept = np.zeros(len(positions))
    host_lib.gd_host_corrections(ctypes.c_int64(len(positions)), ptr(np.ascontiguousarray(positions)),
                                 ctypes.byref(params), ptr(k), ptr(swept))
    np.testing.assert_allclose(k, ref.product, rtol=1e-12)
    np.testing.assert_allclose(swept, ref.swept_factor, rtol=1e-12, atol=1e-300)


def test_host_decision_chain_matches_numpy(host_lib):
    """gd_decide (the chain the CUDA kernel runs) against the NumPy engine's decide, on random
    pixels that hit every branch: invalid, zinger, Bragg, outside the table, diffuse."""
    from gpudiffuse.integration.engines.base import DIFFUSE, EXCLUDED, SKIP, ZINGER, BraggTest
    from gpudiffuse.integration.engines.numpy_engine import decide, pixel_hkl

    rng = np.random.default_rng(5)
    n = 300_000
    s = rng.normal(scale=0.25, size=(n, 3))
    minv = rng.normal(scale=20, size=(3, 3))
    values = rng.integers(-2, 60, size=n).astype(np.float64)
    values[::97] = 2_000_000  # overloaded
    thresholds = np.where(rng.random(n) < 0.5, 40.0, 1e300)
    grid = VoxelGrid((3, 3, 3), (12, 14, 16), 2.0)
    cov = np.array([[0.02, 0.003, 0], [0.003, 0.015, 0], [0, 0, 0.025]])
    model = PeakModel(np.array([0.01, -0.02, 0.005]), cov, 3.0, 100, 1.0)
    absent = absent_table(gemmi.SpaceGroup("P 21 21 21"), (10, 10, 10))
    bragg = BraggTest.from_model(model, absent)
    hkl = pixel_hkl(s, minv)
    code, cell, sub = decide(values, hkl, thresholds, grid, bragg, (0.0, 1_000_000.0))
    for c in (SKIP, DIFFUSE, EXCLUDED, ZINGER):
        assert (code == c).sum() > 1000
    out_code = np.zeros(n, np.int8)
    out_cell = np.zeros(n, np.int64)
    out_sub = np.zeros(n, np.int32)
    host_lib.gd_host_decide(ctypes.c_int64(n), ptr(values), ptr(thresholds), ptr(np.ascontiguousarray(minv)), ptr(s),
                            ptr(np.array(grid.ndiv, np.int32)), ptr(np.array(grid.hmax, np.int32)),
                            ctypes.c_double(0.0), ctypes.c_double(1_000_000.0), ctypes.c_int(1), ptr(bragg.offset),
                            ptr(bragg.inverse_covariance), ctypes.c_double(bragg.cutoff2), ptr(bragg.absent),
                            ptr(bragg.absent_half), ptr(out_code), ptr(out_cell), ptr(out_sub))
    np.testing.assert_array_equal(out_code, code)
    used = (code == DIFFUSE) | (code == EXCLUDED)
    np.testing.assert_array_equal(out_cell[used], cell[used])
    np.testing.assert_array_equal(out_sub[used], sub[used])
