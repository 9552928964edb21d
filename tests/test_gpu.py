"""GPU-only checks (run only where CuPy finds a CUDA GPU). Engine parity with the NumPy
engine is in tests/integration/test_engines.py, which includes ``cuda`` when it can run."""

import numpy as np
import pytest

from conftest import requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]


def test_process_gpu_equals_cpu(tiny_dataset, tmp_path):
    import h5py

    from gpudiffuse.cli import main

    for device in ("cpu", "gpu"):
        assert main(["process", "--no-report", "--xds", str(tiny_dataset), "-o", str(tmp_path / device), "--device", device,
                     "--scale", "none"]) == 0
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
