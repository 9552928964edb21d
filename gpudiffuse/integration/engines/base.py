"""The engine protocol, the sweep context an engine is given, and the engine registry.

An engine turns chunks of raw frames into accumulator sums; the driver
(:mod:`gpudiffuse.integration.driver`) owns everything else. The protocol::

    engine = ENGINE_CLASS(context)              # upload / prepare the per-sweep constants
    engine.add(frames, frame_numbers, inverse_setting, exposure)   # any number of chunks
    sums = engine.flush()                       # EngineSums of the chunks since the last flush

``frames`` (n, n_pixels_in_image) raw counts in the file's integer type; ``inverse_setting``
(n, 3, 3) the inverse lab setting matrices (hkl = M⁻¹ s) at each frame's mid-angle;
``exposure`` (n,) seconds. Every engine applies the same per-pixel decision chain
(valid → Bragg → zinger → voxel → accumulator set), with the same float64 operations in the
same order, so voxel assignments agree exactly between engines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...backend import physical_memory
from ...errors import DeviceError, GridError
from ..record import float_fields, int_fields

__all__ = ["SweepContext", "BraggTest", "EngineSums", "RowTable", "HostAccumulators", "collect_sets", "register_engine", "engine_class", "ENGINES",
           "SKIP", "DIFFUSE", "EXCLUDED", "ZINGER"]

# decision codes of a pixel-frame (same values in kernels/gd_decide.cuh)
SKIP, DIFFUSE, EXCLUDED, ZINGER = 0, 1, 2, 3


@dataclass(frozen=True)
class BraggTest:
    """The peak-cloud Bragg test: within ``cutoff2`` squared Mahalanobis units of ``offset``
    (inverse covariance ``inverse_covariance``) from an allowed reflection; ``absent`` uint8 over
    integer hkl + ``absent_half`` (1 = systematically absent)."""

    offset: np.ndarray
    inverse_covariance: np.ndarray
    cutoff2: float
    absent: np.ndarray
    absent_half: np.ndarray

    @classmethod
    def from_model(cls, model, absent) -> "BraggTest | None":
        if model is None:
            return None
        return cls(np.ascontiguousarray(model.offset, dtype=np.float64),
                   np.ascontiguousarray(model.inverse_covariance, dtype=np.float64), float(model.sigma_cutoff) ** 2,
                   np.ascontiguousarray(absent, dtype=np.uint8), (np.asarray(absent.shape) // 2).astype(np.int32))


@dataclass
class SweepContext:
    """Everything per sweep an engine needs besides the frames."""

    pixels: object                  # PixelTable
    grid: object                    # VoxelGrid
    bragg: BraggTest | None
    trusted_range: tuple[float, float]
    profile_bin: np.ndarray         # (N,) int32 |s| bin of each pixel
    n_bins: int
    background: tuple | None = None  # (rate, variance) per used pixel, counts/s and counts²/s²
    histogram_max: int | None = None

    @property
    def groups(self) -> tuple[str, ...]:
        return (("background",) if self.background is not None else ()) + \
            (("histogram",) if self.histogram_max is not None else ())

    @property
    def int_fields(self):
        return int_fields(self.groups)

    @property
    def float_fields(self):
        return float_fields(self.groups)


@dataclass
class EngineSums:
    """One flush: per accumulator set (0 diffuse, 1 excluded) the voxels with at least one pixel
    (flat cell index, sub-voxel index, field columns, optional count histogram), the profile of
    the frames added since the last flush, and the zinger count."""

    sets: tuple[dict, dict]
    frame_numbers: np.ndarray
    profile_counts: np.ndarray      # (n, bins)
    profile_kt: np.ndarray
    zingers: int


class RowTable:
    """Dense cell → compact row table (DESIGN §6) for host engines, grown on demand."""

    def __init__(self, n_cells: int):
        self.lut = np.full(n_cells, -1, dtype=np.int64)
        self._cells: list[np.ndarray] = []
        self.n_rows = 0

    def assign(self, cells: np.ndarray) -> None:
        """Give rows to the cells (unique, flat) that have none yet."""
        new = cells[self.lut[cells] < 0]
        if new.size:
            self.lut[new] = np.arange(self.n_rows, self.n_rows + new.size)
            self._cells.append(new)
            self.n_rows += int(new.size)

    def cells(self) -> np.ndarray:
        """Flat cell index of every row, in row order."""
        return np.concatenate(self._cells) if self._cells else np.zeros(0, np.int64)

    def reset(self) -> None:
        cells = self.cells()
        if cells.size:
            self.lut[cells] = -1
        self._cells, self.n_rows = [], 0


def check_accumulator_memory(size: int, n_fields: int, c_max: int, budget: float | None, where: str) -> None:
    """Refuse, in one line, accumulators of ``size`` sub-voxel rows (both sets, old and new arrays
    while they grow) beyond ``budget`` bytes, instead of running out of memory; the count
    histograms (c_max ≥ 0) are the usual cause."""
    bins = c_max + 1 if c_max >= 0 else 0
    need = 1.5 * size * 2 * 8 * (n_fields + bins)
    if budget is not None and need > budget:
        cause = f"count histograms of {bins} bins per voxel (--filter-max-count {c_max}); lower it, or " if bins else ""
        raise GridError(f"the integration pass would need {need / 2**30:.3g} GiB for {size} voxels of this block, "
                        f"more than half {where}: {cause}use a coarser --ndiv or more blocks (--nproc, Dask)")


def memory_budget() -> float | None:
    """Bytes the accumulators of one engine may take: half the physical memory (None: unknown)."""
    memory = physical_memory()
    return None if memory is None else 0.5 * memory


class HostAccumulators:
    """The two accumulator sets of a host engine: ``ints`` (2, rows·n_sub, int fields),
    ``floats`` (2, rows·n_sub, float fields), ``hist`` (2, rows·n_sub, c_max + 1) — a (2, 1, 1)
    placeholder when histograms are off (c_max < 0) — over the rows of ``rows``, grown on demand.
    Voxel-major, so that one pixel-frame's scattered additions share cache lines."""

    def __init__(self, context):
        self.n_sub = context.grid.n_sub
        self.rows = RowTable(context.grid.n_cells)
        self.int_names, self.float_names = context.int_fields, context.float_fields
        self.c_max = -1 if context.histogram_max is None else int(context.histogram_max)
        self.ints = self.floats = self.hist = None
        self._allocate(1024)

    def _allocate(self, capacity):
        size = capacity * self.n_sub
        self._check_memory(size)
        ints = np.zeros((2, size, len(self.int_names)), np.int64)
        floats = np.zeros((2, size, len(self.float_names)), np.float64)
        hist = np.zeros((2, size if self.c_max >= 0 else 1, max(self.c_max, 0) + 1), np.int64)
        if self.ints is not None:
            used = self.ints.shape[1]
            ints[:, :used], floats[:, :used] = self.ints, self.floats
            if self.c_max >= 0:
                hist[:, :used] = self.hist
        self.ints, self.floats, self.hist, self.capacity = ints, floats, hist, capacity

    def _check_memory(self, size: int) -> None:
        check_accumulator_memory(size, len(self.int_names) + len(self.float_names), self.c_max, memory_budget(),
                                 "this machine's memory")

    def assign(self, cells: np.ndarray) -> None:
        """Rows for the cells (unique, flat) that have none; grow the arrays if needed."""
        self.rows.assign(cells)
        if self.rows.n_rows > self.capacity:
            self._allocate(max(2 * self.capacity, self.rows.n_rows))

    def collect_and_clear(self) -> tuple[dict, dict]:
        """The voxels with pixels of both sets; then empty, keeping the capacity."""
        sets = collect_sets(self.rows, self.n_sub, self.ints, self.floats, self.int_names, self.float_names,
                            self.hist if self.c_max >= 0 else None)
        used = self.rows.n_rows * self.n_sub
        self.rows.reset()
        self.ints[:, :used] = 0
        self.floats[:, :used] = 0
        if self.c_max >= 0:
            self.hist[:, :used] = 0
        return sets


def collect_sets(rows: RowTable, n_sub: int, ints: np.ndarray, floats: np.ndarray, int_names, float_names,
                 histogram: np.ndarray | None = None) -> tuple[dict, dict]:
    """Column dicts of the voxels with pixels, from accumulators shaped (2 sets, rows·n_sub, fields)."""
    size = rows.n_rows * n_sub
    cells = rows.cells()
    out = []
    for s in range(2):
        seen = np.flatnonzero(ints[s, :size, int_names.index("pixels")] > 0)
        block = {"cell": cells[seen // n_sub], "sub": seen % n_sub}
        # fancy indexing copies already: astype only where the engine's type differs
        for j, name in enumerate(int_names):
            block[name] = ints[s, seen, j].astype(np.int64, copy=False)
        for j, name in enumerate(float_names):
            block[name] = floats[s, seen, j].astype(np.float64, copy=False)
        if histogram is not None:
            block["count_histogram"] = histogram[s, seen].astype(np.int64, copy=False)
        out.append(block)
    return out[0], out[1]


ENGINES: dict[str, type] = {}


def register_engine(name: str):
    """Class decorator: make an engine available as ``--engine name``."""

    def wrap(cls):
        cls.name = name
        ENGINES[name] = cls
        return cls

    return wrap


def engine_class(name: str):
    """The engine class registered as ``name`` (importing the engine modules on first use)."""
    from . import load_all  # noqa: PLC0415

    load_all()
    if name not in ENGINES:
        raise DeviceError(f"unknown engine {name!r}; choose one of {', '.join(sorted(ENGINES))}")
    return ENGINES[name]
