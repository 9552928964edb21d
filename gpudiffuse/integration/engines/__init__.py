"""Engines of the streaming pass, registered by name: ``numpy`` (reference), ``cpu`` (numba,
multi-threaded), ``cuda`` (CuPy + ``kernels/integrate.cu``)."""

from .base import ENGINES, engine_class, register_engine

__all__ = ["ENGINES", "engine_class", "register_engine", "load_all", "available_engines"]


def load_all() -> None:
    """Import the engine modules so that they register themselves (CuPy is imported lazily)."""
    from . import cuda_engine, numba_engine, numpy_engine  # noqa: F401, PLC0415


def available_engines() -> list[str]:
    """Engines that can run on this machine (``cuda`` only with a usable GPU)."""
    load_all()
    return [name for name, cls in ENGINES.items() if cls.available()]
