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


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere).

    Arrays a step has freed otherwise stay in the process, and the next step's own arrays come on
    top of them. Called between the steps of ``process``: on the 1M-sized preset its peak RSS fell
    from 1222 to 1147 MB at the same wall time. (Mapping every array of 4 MiB or more on its own,
    glibc's other remedy, cut the peak further but made the test suite's small runs 40 % slower.)"""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
