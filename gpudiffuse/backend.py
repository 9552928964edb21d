"""Choose the array engine (NumPy on the CPU, CuPy on a CUDA GPU) and load CUDA kernels.

This is the only module that imports CuPy. ``resolve_device`` turns the user's
``--device auto|cpu|gpu`` into a frozen :class:`Backend` record once; library code
takes ``backend.xp`` from it. ``gpu`` without a usable GPU is an error; only ``auto``
falls back to the CPU, and it logs why (once).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from .errors import DeviceError

__all__ = ["Backend", "resolve_device", "kernel_dir", "kernel_sources", "load_module", "physical_memory"]

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Backend:
    """The resolved compute engine.

    Attributes
    ----------
    device : {"cpu", "gpu"}
        Where the streaming pass runs.
    xp : module
        ``numpy`` or ``cupy``.
    reason : str
        Why this device was chosen (logged and stored in output attributes).
    name : str
        Human-readable device name (CPU or the GPU's name).
    """

    device: str
    xp: ModuleType
    reason: str
    name: str

    def to_numpy(self, array):
        """Copy an array of this backend to a NumPy array on the host."""
        if self.device == "gpu":
            return self.xp.asnumpy(array)
        return np.asarray(array)

    def as_attrs(self) -> dict:
        return {"device": self.device, "device_name": self.name, "device_reason": self.reason}


def _probe_cupy():
    """Return (cupy module, gpu name) or (None, reason it is unusable)."""
    try:
        import cupy  # noqa: PLC0415  (only place CuPy is imported)
    except Exception as exc:  # ImportError, or a CUDA library load failure
        return None, f"CuPy is not importable ({exc.__class__.__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy found no CUDA driver ({exc})"
    if count < 1:
        return None, "no CUDA device is visible"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return cupy, name


@functools.lru_cache(maxsize=None)
def physical_memory() -> float | None:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def return_large_frees_to_the_system(threshold_bytes: int = 4 << 20) -> bool:
    """Ask glibc's malloc to map every block of ``threshold_bytes`` or more on its own, so that a
    freed array of that size goes back to the system at once.

    By default glibc raises that threshold (up to 32 MiB) each time a mapped block is freed, after
    which arrays of a few MB come from the heap and, once freed, stay in the process: every step
    of ``process`` then starts from the last step's high-water mark. Measured on the 1M-sized
    preset (2 cores): peak RSS 1263 → 1141 MB at the same wall time; a 1 MiB threshold took 7 s
    longer (page faults). Called by the command line only (a library should not retune its host's
    allocator); does nothing off glibc. Returns whether the setting was taken."""
    try:
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, threshold_bytes) and libc.mallopt(m_trim_threshold, threshold_bytes))
    except (OSError, AttributeError):
        return False


def resolve_device(device: str = "auto") -> Backend:
    """Resolve ``auto|cpu|gpu`` into a :class:`Backend`.

    Raises
    ------
    DeviceError
        ``device="gpu"`` but CuPy or a GPU is missing, or an unknown device string.
    """
    if device not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if device == "cpu":
        return Backend("cpu", np, "requested --device cpu", "CPU")
    cupy, info = _probe_cupy()
    if cupy is not None:
        return Backend("gpu", cupy, f"requested --device {device}; GPU available", info)
    if device == "gpu":
        raise DeviceError(f"--device gpu was requested but {info}; use --device cpu or auto")
    logger.warning("no usable GPU (%s): falling back to the CPU", info)
    return Backend("cpu", np, f"--device auto fell back to the CPU: {info}", "CPU")


def kernel_dir() -> Path:
    """Folder holding the CUDA sources: ``kernels/`` in a source tree, ``_kernels`` in a wheel."""
    installed = Path(__file__).with_name("_kernels")
    if installed.is_dir():
        return installed
    source_tree = Path(__file__).resolve().parent.parent / "kernels"
    if source_tree.is_dir():
        return source_tree
    raise FileNotFoundError("CUDA kernel sources not found (neither gpudiffuse/_kernels nor ../kernels)")


def kernel_sources() -> list[Path]:
    """All ``.cu`` files shipped with the package."""
    return sorted(kernel_dir().glob("*.cu"))


@functools.lru_cache(maxsize=None)
def load_module(name: str, name_expressions: tuple[str, ...] = ()):
    """Compile ``kernels/<name>.cu`` once into a ``cupy.RawModule`` (GPU only).

    A ``#line`` directive makes compiler errors name the real file; ``-I`` lets the
    ``.cu`` include its ``.cuh`` headers.
    """
    backend = resolve_device("gpu")
    path = kernel_dir() / f"{name}.cu"
    code = f'#line 1 "{path}"\n' + path.read_text()
    return backend.xp.RawModule(
        code=code,
        options=("-std=c++17", "--fmad=false", f"-I{kernel_dir()}"),
        name_expressions=name_expressions or None,
    )
