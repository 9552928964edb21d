"""Voxel grid over reciprocal space with ``ndiv`` subdivisions per Miller index.

Voxel centres sit at multiples of 1/nᵢ: the voxel of integer index H = round(h·n₁) spans
(H − ½)/n₁ … (H + ½)/n₁ (likewise K, L). With odd nᵢ the central voxel of each Bragg cell
is centred on the integer position.

Two-level index: integer "cells" cell = floor((H + ⌊n/2⌋)/n) (so the cell of an integer
reflection holds the ⌊n/2⌋ voxels on either side of it) and sub-voxel = the remainder.
A dense table over all cells within the resolution limit maps each cell to a compact row,
assigned the first time the cell is observed; accumulators are (rows × ∏nᵢ), so memory
follows the observed cells only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GridError

__all__ = ["VoxelGrid", "pack_voxels", "unpack_voxels", "nested_grids", "coarser_voxels"]


@dataclass(frozen=True)
class VoxelGrid:
    """Voxel grid within a resolution limit.

    ndiv : (3,) subdivisions per Miller index. hmax : (3,) largest |cell| index per axis.
    dmin : resolution limit (Å) the table was sized for.
    """

    ndiv: tuple[int, int, int]
    hmax: tuple[int, int, int]
    dmin: float

    def __post_init__(self):
        ndiv = tuple(int(n) for n in self.ndiv)
        if len(ndiv) != 3 or min(ndiv) < 1:
            raise GridError(f"ndiv must be three positive integers, got {self.ndiv}")
        object.__setattr__(self, "ndiv", ndiv)
        object.__setattr__(self, "hmax", tuple(int(h) for h in self.hmax))

    @classmethod
    def for_crystal(cls, real_space_axes: np.ndarray, dmin: float, ndiv) -> "VoxelGrid":
        """Grid covering |s| ≤ 1/dmin for any orientation: |h| ≤ |a|/dmin (+1 for the cell rounding)."""
        if not (np.isfinite(dmin) and dmin > 0):
            raise GridError(f"dmin must be a positive resolution in Å, got {dmin}")
        hmax = np.floor(np.linalg.norm(real_space_axes, axis=1) / dmin).astype(int) + 1
        return cls(tuple(ndiv), tuple(hmax), float(dmin))

    @property
    def n_sub(self) -> int:
        """Sub-voxels per cell, ∏nᵢ."""
        return int(np.prod(self.ndiv))

    @property
    def table_shape(self) -> tuple[int, int, int]:
        return tuple(2 * h + 1 for h in self.hmax)

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.table_shape))

    def voxel_index(self, hkl):
        """Integer voxel indices (…, 3) int64: round(h·nᵢ). Works on NumPy or CuPy arrays."""
        xp = _xp(hkl)
        return xp.rint(hkl * xp.asarray(self.ndiv, dtype=hkl.dtype)).astype(xp.int64)

    def split(self, voxel):
        """(flat cell index into the dense table, sub-voxel index, inside-table flag) of voxels (…, 3)."""
        xp = _xp(voxel)
        n = xp.asarray(self.ndiv, dtype=xp.int64)
        half = n // 2
        cell = xp.floor_divide(voxel + half, n)
        sub = voxel + half - cell * n
        hmax = xp.asarray(self.hmax, dtype=xp.int64)
        inside = xp.all(xp.abs(cell) <= hmax, axis=-1)
        shape = self.table_shape
        c = cell + hmax
        flat = (c[..., 0] * shape[1] + c[..., 1]) * shape[2] + c[..., 2]
        sub_flat = (sub[..., 0] * self.ndiv[1] + sub[..., 1]) * self.ndiv[2] + sub[..., 2]
        return xp.where(inside, flat, -1), sub_flat, inside

    def voxels_of(self, cell_flat: np.ndarray, sub_flat: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`split`: integer voxel indices (N, 3) from flat cell and sub-voxel."""
        shape = self.table_shape
        c = np.stack(np.unravel_index(cell_flat, shape), -1) - np.asarray(self.hmax)
        sub = np.stack(np.unravel_index(sub_flat, self.ndiv), -1)
        n = np.asarray(self.ndiv)
        return c * n + sub - n // 2

    def centres(self, voxels: np.ndarray) -> np.ndarray:
        """Fractional hkl of voxel centres (N, 3)."""
        return np.asarray(voxels, dtype=np.float64) / np.asarray(self.ndiv, dtype=np.float64)


def _xp(array):
    module = type(array).__module__
    if module.startswith("cupy"):
        import sys  # noqa: PLC0415

        return sys.modules["cupy"]
    return np


_VOXEL_BITS, _VOXEL_OFFSET = 21, 1 << 20


def pack_voxels(voxels) -> np.ndarray:
    """(N, 3) voxel indices (|index| < 2²⁰) as one int64 each, in the lexicographic (h, k, l)
    order: sorting, np.unique and np.isin on these are those of the index triples."""
    v = np.asarray(voxels, dtype=np.int64) + _VOXEL_OFFSET
    return (v[:, 0] << 2 * _VOXEL_BITS) | (v[:, 1] << _VOXEL_BITS) | v[:, 2]


def unpack_voxels(codes) -> np.ndarray:
    """The (N, 3) voxel indices of :func:`pack_voxels` codes."""
    codes = np.asarray(codes, dtype=np.int64)
    mask = (1 << _VOXEL_BITS) - 1
    return np.stack([codes >> 2 * _VOXEL_BITS, (codes >> _VOXEL_BITS) & mask, codes & mask], axis=1) - _VOXEL_OFFSET


def nested_grids(n: int, m: int) -> bool:
    """Whether n and m subdivisions per index nest: one is the other times an odd factor, so that
    (with voxels centred on multiples of 1/n) every finer voxel lies inside one coarser voxel."""
    fine, coarse = max(n, m), min(n, m)
    return fine % coarse == 0 and (fine // coarse) % 2 == 1


def coarser_voxels(voxels: np.ndarray, ratio) -> np.ndarray:
    """Voxel indices (..., 3) of a grid refined by the odd ``ratio`` per axis → the coarser grid's:
    F = ⌊(H + (r − 1)/2) / r⌋ (the coarser voxel whose centre is nearest; with r = ndiv, the cell
    of :meth:`VoxelGrid.split`)."""
    ratio = np.asarray(ratio, dtype=np.int64)
    return (np.asarray(voxels, dtype=np.int64) + (ratio - 1) // 2) // ratio
