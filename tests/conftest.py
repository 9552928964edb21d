"""Shared fixtures and markers: ``gpu`` (needs CUDA), ``nvcc`` (needs the CUDA compiler),
``slow`` (off unless --run-slow)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SNASE = SHARED / "data" / "snase-lunus"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU with CuPy")
    config.addinivalue_line("markers", "nvcc: needs the nvcc compiler")
    config.addinivalue_line("markers", "slow: long-running; enable with --run-slow")
    logging.getLogger("fabio").setLevel(logging.ERROR)


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow test; use --run-slow")
    skip_nvcc = pytest.mark.skip(reason="nvcc is not installed on this machine")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "nvcc" in item.keywords and shutil.which("nvcc") is None:
            item.add_marker(skip_nvcc)


@pytest.fixture(scope="session")
def snase_dir():
    if not SNASE.is_dir():
        pytest.skip(f"real data folder {SNASE} is absent (../shared not beside the checkout)")
    return SNASE


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small simulated dataset (487x195 Pilatus module, 12 frames), shared by the session."""
    from gpudiffuse.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("tiny") / "data"
    simulate_dataset(str(out), "tiny", progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_processed(tiny_dataset, tmp_path_factory):
    """The tiny dataset processed with the default options (read-only for the tests that use it)."""
    from gpudiffuse.cli import main

    out = tmp_path_factory.mktemp("tiny_processed") / "out"
    assert main(["-q", "--no-progress", "process", "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu"]) == 0
    return out


@pytest.fixture
def processed_copy(tiny_processed, tmp_path):
    """A copy of ``tiny_processed`` that a test may change."""
    import shutil

    return shutil.copytree(tiny_processed, tmp_path / "out")


@pytest.fixture
def tiny_copy(tiny_dataset, tmp_path):
    """A private copy of the tiny dataset that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_dataset, dst)
    return dst


def gpu_available() -> bool:
    try:
        from gpudiffuse.backend import resolve_device

        resolve_device("gpu")
        return True
    except Exception:
        return False


requires_gpu = pytest.mark.skipif(os.environ.get("GPUDIFFUSE_NO_GPU") is not None or not gpu_available(),
                                  reason="no CUDA GPU with CuPy on this machine")


@pytest.fixture(scope="session")
def tiny_eiger(tmp_path_factory):
    """The tiny dataset (same seed, same counts) written as an Eiger master + data files."""
    from gpudiffuse.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("tiny_eiger") / "data"
    simulate_dataset(str(out), "tiny", progress=False, image_format="eiger")
    return out
