"""The streaming integration pass (NumPy engine) and its per-voxel accumulators.

For every frame and every unmasked pixel within the resolution limit: s → hkl at the
mid-frame angle → voxel → Bragg test → add to the diffuse or the "excluded" (Bragg)
accumulators of that voxel:

    counts, pixels, frame_sum           int64
    kt_sum (Σ K·t), d3s_sum, ix_sum, iy_sum, s_sum, bkg_sum, bkg_var      float64

Observations of one voxel from different wedges (blocks of ``wedge_frames`` frames) and
batches (sweeps) stay separate rows until merging. Memory is bounded by the chunk of
frames in flight and the cells observed within one wedge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .corrections import pixel_corrections, swept_volume
from .errors import GridError, ImageError, MaskError
from .geometry.vectors import s_vectors_from_positions
from .grid import VoxelGrid
from .io.frames import FrameSource
from .observations import concat_rows

__all__ = ["INT_FIELDS", "FLOAT_FIELDS", "IntegrationParameters", "VoxelAccumulator", "PixelTable",
           "prepare_pixels", "integrate_sweep", "profile_edges", "PROFILE_BINS"]

logger = logging.getLogger(__name__)

INT_FIELDS = ("counts", "pixels", "frame_sum")
FLOAT_FIELDS = ("kt_sum", "d3s_sum", "ix_sum", "iy_sum", "s_sum", "bkg_sum", "bkg_var")
PROFILE_BINS = 64


@dataclass(frozen=True)
class IntegrationParameters:
    """ndiv : subdivisions per Miller index. dmin : resolution limit (Å; None = detector corner).
    wedge_frames : frames per wedge (observations of different wedges stay separate).
    chunk_size : frames decoded and processed together. frames : optional (first, last)
    1-based file numbers to process. air : apply the air-attenuation correction."""

    ndiv: tuple[int, int, int] = (3, 3, 3)
    dmin: float | None = None
    wedge_frames: int = 5
    chunk_size: int = 8
    frames: tuple[int, int] | None = None
    air: bool = True

    def __post_init__(self):
        ndiv = tuple(int(n) for n in self.ndiv)
        if len(ndiv) != 3 or min(ndiv) < 1:
            raise GridError(f"--ndiv needs three positive integers, got {self.ndiv}")
        object.__setattr__(self, "ndiv", ndiv)
        if self.dmin is not None and not self.dmin > 0:
            raise GridError(f"--dmin must be a positive resolution in Å, got {self.dmin}")
        if self.wedge_frames < 1 or self.chunk_size < 1:
            raise GridError("wedge_frames and chunk_size must be at least 1")


class VoxelAccumulator:
    """Per-voxel sums over a growing set of observed cells (two-level index, see ``grid``)."""

    def __init__(self, grid: VoxelGrid, with_background: bool = False):
        self.grid = grid
        self.float_fields = FLOAT_FIELDS if with_background else FLOAT_FIELDS[:5]
        self.lut = np.full(grid.n_cells, -1, dtype=np.int64)
        self._cells: list[np.ndarray] = []
        self.n_rows = 0
        self._allocate(1024)

    def _allocate(self, capacity):
        size = capacity * self.grid.n_sub
        old_ints = getattr(self, "ints", None)
        old_floats = getattr(self, "floats", None)
        self.ints = {f: np.zeros(size, np.int64) for f in INT_FIELDS}
        self.floats = {f: np.zeros(size, np.float64) for f in self.float_fields}
        if old_ints:
            for f in INT_FIELDS:
                self.ints[f][: old_ints[f].size] = old_ints[f]
            for f in self.float_fields:
                self.floats[f][: old_floats[f].size] = old_floats[f]
        self.capacity = capacity

    def _rows_of(self, cell_flat):
        fresh = self.lut[cell_flat] < 0
        if fresh.any():
            new = np.unique(cell_flat[fresh])
            self.lut[new] = np.arange(self.n_rows, self.n_rows + len(new))
            self._cells.append(new)
            self.n_rows += len(new)
            if self.n_rows > self.capacity:
                self._allocate(max(2 * self.capacity, self.n_rows))
        return self.lut[cell_flat]

    def add(self, cell_flat, sub, values: dict):
        """Add pixel contributions: ``values`` maps field names to (n,) arrays; ``pixels`` is implied."""
        if cell_flat.size == 0:
            return
        key = self._rows_of(cell_flat) * self.grid.n_sub + sub
        size = self.n_rows * self.grid.n_sub
        self.ints["pixels"][:size] += np.bincount(key, minlength=size)
        for f in ("counts", "frame_sum"):
            self.ints[f][:size] += np.rint(np.bincount(key, weights=values[f], minlength=size)).astype(np.int64)
        for f in self.float_fields:
            if f in values:
                self.floats[f][:size] += np.bincount(key, weights=values[f], minlength=size)

    def flush(self) -> dict:
        """Voxels with at least one pixel, as column arrays (H, K, L + fields); then reset."""
        size = self.n_rows * self.grid.n_sub
        seen = np.flatnonzero(self.ints["pixels"][:size] > 0)
        cells = np.concatenate(self._cells) if self._cells else np.zeros(0, np.int64)
        voxels = self.grid.voxels_of(cells[seen // self.grid.n_sub], seen % self.grid.n_sub)
        out = {"H": voxels[:, 0].astype(np.int32), "K": voxels[:, 1].astype(np.int32),
               "L": voxels[:, 2].astype(np.int32)}
        for f in INT_FIELDS:
            out[f] = self.ints[f][seen].copy()
        for f in self.float_fields:
            out[f] = self.floats[f][seen].copy()
        if len(cells):
            self.lut[cells] = -1
        self._cells, self.n_rows = [], 0
        self.ints = self.floats = None
        self._allocate(1024)
        return out


@dataclass
class PixelTable:
    """Per-pixel constants of one sweep, over the pixels that are used (flattened indices)."""

    index: np.ndarray        # (N,) flat pixel index into the image
    s: np.ndarray            # (N, 3) 1/Å
    s_norm: np.ndarray       # (N,)
    k: np.ndarray            # (N,) K = Ω·P·E·A
    d3s: np.ndarray          # (N,) Å⁻³ per frame
    ix: np.ndarray           # (N,) fast pixel index
    iy: np.ndarray           # (N,) slow pixel index
    threshold: np.ndarray    # (N,) count threshold for zingers (inf: none)


def prepare_pixels(sweep, mask: np.ndarray, dmin: float, threshold=None, air: bool = True) -> PixelTable:
    """Per-pixel constants, computed once per sweep."""
    panel = sweep.panel
    flat = np.flatnonzero(mask.ravel())
    positions = panel.pixel_positions().reshape(-1, 3)[flat]
    s = s_vectors_from_positions(positions, sweep.beam)
    s_norm = np.linalg.norm(s, axis=1)
    keep = s_norm <= 1.0 / dmin
    flat, positions, s, s_norm = flat[keep], positions[keep], s[keep], s_norm[keep]
    if flat.size == 0:
        raise MaskError(f"{sweep.source}: no unmasked pixel within the resolution limit {dmin:.3f} Å")
    axis = None if sweep.scan.is_still else sweep.goniometer.lab_axis
    corr = pixel_corrections(positions, panel, sweep.beam, rotation_axis=axis, air=air)
    d3s = swept_volume(corr, sweep.scan.oscillation[1])
    n_fast = panel.image_size[0]
    thr = np.full(flat.size, np.inf) if threshold is None else threshold.per_pixel(s_norm)
    return PixelTable(flat, s, s_norm, corr.product, d3s, (flat % n_fast).astype(np.float64),
                      (flat // n_fast).astype(np.float64), thr)


def profile_edges(dmin: float) -> np.ndarray:
    """|s| bin edges (1/Å) of the per-frame isotropic profile, common to all sweeps."""
    return np.linspace(0.0, 1.0 / dmin * (1 + 1e-9), PROFILE_BINS + 1)


def _frame_list(sweep, frames):
    first, last = sweep.scan.image_range
    if frames is None:
        return np.arange(sweep.scan.num_frames)
    a, b = frames
    if a < first or b > last or b < a:
        raise ImageError(f"{sweep.source}: frame range {a}-{b} is outside the files' range {first}-{last}")
    return np.arange(a - first, b - first + 1)


def integrate_sweep(sweep, pixels: PixelTable, grid: VoxelGrid, peak_model, absent, params: IntegrationParameters,
                    background_rate=None, progress_bar=None):
    """Stream one sweep's frames through the accumulators (NumPy engine).

    Returns (diffuse rows, excluded rows, isotropic profile dict, zinger count), rows as
    column dicts with ``wedge`` and ``batch`` added.
    """
    from .masking.peaks import bragg_mask  # noqa: PLC0415
    from .masking.pixel import frame_valid  # noqa: PLC0415

    frames = _frame_list(sweep, params.frames)
    with_bkg = background_rate is not None
    diffuse, excluded = VoxelAccumulator(grid, with_bkg), VoxelAccumulator(grid, with_bkg)
    rows_d, rows_x = [], []
    edges = profile_edges(grid.dmin)
    profile_bin = np.clip(np.searchsorted(edges, pixels.s_norm) - 1, 0, PROFILE_BINS - 1)
    n_frames = sweep.scan.num_frames
    profile_counts = np.zeros((n_frames, PROFILE_BINS))
    profile_kt = np.zeros((n_frames, PROFILE_BINS))
    zingers = 0
    current_wedge = None

    def flush(wedge):
        for acc, rows in ((diffuse, rows_d), (excluded, rows_x)):
            block = acc.flush()
            block["wedge"] = np.full(len(block["H"]), wedge, np.int32)
            block["batch"] = np.full(len(block["H"]), sweep.batch, np.int32)
            rows.append(block)

    for chunk in FrameSource(sweep, frames, chunk_size=params.chunk_size):
        data = chunk.data.reshape(len(chunk.frame_indices), -1)
        for i, z in enumerate(chunk.frame_indices):
            wedge = int(z) // params.wedge_frames
            if current_wedge is not None and wedge != current_wedge:
                flush(current_wedge)
            current_wedge = wedge
            counts = data[i, pixels.index]
            valid = frame_valid(counts, sweep.panel.trusted_range)
            hkl = pixels.s @ np.linalg.inv(sweep.setting_matrix(int(z))).T
            cell, sub, inside = grid.split(grid.voxel_index(hkl))
            if peak_model is not None:
                bragg = bragg_mask(hkl, peak_model, absent)
            else:
                bragg = np.zeros(counts.shape, bool)
            zinger = valid & (counts >= pixels.threshold) & ~bragg
            zingers += int(zinger.sum())
            use = valid & inside & ~zinger
            t = float(sweep.scan.exposure_times[z])
            for acc, sel in ((diffuse, use & ~bragg), (excluded, use & bragg)):
                idx = np.flatnonzero(sel)
                c = counts[idx].astype(np.float64)
                values = {"counts": c, "frame_sum": np.full(idx.size, float(z)), "kt_sum": pixels.k[idx] * t,
                          "d3s_sum": pixels.d3s[idx], "ix_sum": pixels.ix[idx], "iy_sum": pixels.iy[idx],
                          "s_sum": pixels.s_norm[idx]}
                if with_bkg:
                    values["bkg_sum"] = background_rate[0][idx] * t
                    values["bkg_var"] = background_rate[1][idx] * t * t
                acc.add(cell[idx], sub[idx], values)
                if acc is diffuse:
                    profile_counts[z] = np.bincount(profile_bin[idx], weights=c, minlength=PROFILE_BINS)
                    profile_kt[z] = np.bincount(profile_bin[idx], weights=pixels.k[idx] * t, minlength=PROFILE_BINS)
        if progress_bar is not None:
            progress_bar.update(len(chunk.frame_indices))
    if current_wedge is not None:
        flush(current_wedge)

    profile = {"edges": edges, "counts": profile_counts, "kt": profile_kt, "frames": frames}
    return concat_rows(rows_d), concat_rows(rows_x), profile, zingers
