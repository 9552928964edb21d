"""The CUDA engine's driver over the host build of its real kernels (no GPU needed).

``kernels/host_launch.cpp`` compiles ``integrate.cu`` for the CPU with ``host_shim.h``; its
``host_<kernel>(grid, block, void** args)`` entry points take arguments as cuLaunchKernel does.
:class:`HostCudaEngine` is :class:`CudaEngine` with NumPy standing in for CuPy and that library
for the NVRTC module, so the kernels' index arithmetic, bounds, field positions and the
driver's row assignment and flush all run in every CI build.
"""

from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
import tempfile
from types import SimpleNamespace

import numpy as np

from gpudiffuse.backend import kernel_dir
from gpudiffuse.integration.engines.base import register_engine
from gpudiffuse.integration.engines.cuda_engine import CudaEngine

BLOCK_THREADS = 256  # as on the device


class _Stream:
    def __init__(self, non_blocking=False):
        pass

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


HOST_CUPY = SimpleNamespace(
    **{name: getattr(np, name) for name in ("asarray", "zeros", "full", "flatnonzero", "arange", "concatenate", "eye",
                                            "uint64", "int64", "uint8", "int32", "float64")},
    asnumpy=np.asarray,
    cuda=SimpleNamespace(Stream=_Stream, alloc_pinned_memory=lambda nbytes: bytearray(nbytes)))


@functools.lru_cache(maxsize=None)
def host_library():
    """Compile kernels/host_launch.cpp once per session; None without a C++20 compiler."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return None
    out = tempfile.mkdtemp(prefix="gd_host_cuda_") + "/libgd_host_launch.so"
    subprocess.run([compiler, "-std=c++20", "-O1", "-ffp-contract=off", "-pthread", "-shared", "-fPIC",
                    f"-I{kernel_dir()}", str(kernel_dir() / "host_launch.cpp"), "-o", out], check=True,
                   capture_output=True)
    return ctypes.CDLL(out)


def _argument(value):
    """A ctypes object holding one kernel argument's value (arrays: their data pointer)."""
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data)
    kinds = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
             np.dtype(np.float64): ctypes.c_double}
    return kinds[np.asarray(value).dtype](value)


class HostKernelModule:
    """Stands in for a cupy.RawModule: get_function(name)(grid, block, args)."""

    def __init__(self, library):
        self.library = library

    def get_function(self, name):
        entry = getattr(self.library, f"host_{name}")

        def launch(grid, block, args):
            held = [_argument(a) for a in args]
            pointers = (ctypes.c_void_p * len(held))(*[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p) for h in held])
            total = grid[0] * block[0]
            entry(ctypes.c_uint((total + BLOCK_THREADS - 1) // BLOCK_THREADS), ctypes.c_uint(BLOCK_THREADS), pointers)

        return launch


@register_engine("cuda-host")
class HostCudaEngine(CudaEngine):
    """CudaEngine over the host build of integrate.cu (tests only)."""

    @classmethod
    def available(cls) -> bool:
        return host_library() is not None

    def __init__(self, context):
        super().__init__(context, HOST_CUPY, HostKernelModule(host_library()))


@register_engine("cuda-host-compact")
class HostCudaCompactEngine(HostCudaEngine):
    """The same with the compact accumulator layout (mark pass, rows assigned per chunk)."""

    force_compact = True
