"""Per-pixel constants of a sweep, the integration parameters and the wedges of a scan.

The pixel table holds, for every used pixel (unmasked, within the resolution limit), its
scattering vector, correction product K = Ω·P·E·A, swept volume d³s and detector
coordinates; it is computed once per sweep and handed to every engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..corrections import pixel_corrections, swept_volume
from ..errors import GridError, ImageError, MaskError
from ..geometry.vectors import s_vectors_from_positions
from ..grid import nested_grids

__all__ = ["IntegrationParameters", "PixelTable", "prepare_pixels", "profile_edges", "PROFILE_BINS", "frame_list",
           "wedge_numbers", "DEFAULT_WEDGE_DEGREES"]

PROFILE_BINS = 64
DEFAULT_WEDGE_DEGREES = 2.0  # docs/wedges.md: the study behind this default


@dataclass(frozen=True)
class IntegrationParameters:
    """ndiv : subdivisions per Miller index. dmin : resolution limit (Å; None = detector corner).
    wedge_degrees : rotation per wedge (°); observations of different wedges stay separate.
    wedge_frames : frames per wedge instead (overrides wedge_degrees when set).
    chunk_size : frames decoded and processed together. frames : optional (first, last)
    1-based file numbers to process. air : apply the air-attenuation correction.
    histogram_max : collect per-voxel count histograms c = 0 … histogram_max (None: off).
    filter_ndiv : the statistical filter's grid (DESIGN §7), nested with ndiv on each axis (one a
    multiple of the other by an odd factor); the pass runs on the finer of the two per axis
    (:meth:`pass_ndiv`) and its sums are added up onto the coarser (None: filter off)."""

    ndiv: tuple[int, int, int] = (3, 3, 3)
    dmin: float | None = None
    wedge_degrees: float = DEFAULT_WEDGE_DEGREES
    wedge_frames: int | None = None
    chunk_size: int = 8
    frames: tuple[int, int] | None = None
    air: bool = True
    histogram_max: int | None = None
    filter_ndiv: tuple[int, int, int] | None = None

    def __post_init__(self):
        ndiv = tuple(int(n) for n in self.ndiv)
        if len(ndiv) != 3 or min(ndiv) < 1:
            raise GridError(f"--ndiv needs three positive integers, got {self.ndiv}")
        object.__setattr__(self, "ndiv", ndiv)
        if self.dmin is not None and not self.dmin > 0:
            raise GridError(f"--dmin must be a positive resolution in Å, got {self.dmin}")
        if not (np.isfinite(self.wedge_degrees) and self.wedge_degrees > 0):
            raise GridError(f"--wedge must be a positive rotation in degrees, got {self.wedge_degrees}")
        if self.wedge_frames is not None and self.wedge_frames < 1:
            raise GridError(f"--wedge-frames must be at least 1, got {self.wedge_frames}")
        if self.chunk_size < 1:
            raise GridError(f"chunk_size must be at least 1, got {self.chunk_size}")
        if self.histogram_max is not None and self.histogram_max < 1:
            raise GridError(f"histogram_max must be at least 1, got {self.histogram_max}")
        if self.filter_ndiv is not None:
            grid = tuple(int(n) for n in self.filter_ndiv)
            if len(grid) != 3 or min(grid) < 1:
                raise GridError(f"--filter-ndiv needs three positive integers, got {self.filter_ndiv}")
            if not all(nested_grids(n, m) for n, m in zip(ndiv, grid)):
                raise GridError(
                    f"--filter-ndiv {' '.join(map(str, grid))}: the statistical filter's grid and the integration grid "
                    f"(--ndiv {' '.join(map(str, ndiv))}) must nest on each axis, one a multiple of the other by an "
                    "odd factor (1, 3, 5, …), so that every voxel of the finer grid lies in one voxel of the coarser")
            object.__setattr__(self, "filter_ndiv", grid)

    @property
    def pass_ndiv(self) -> tuple[int, int, int]:
        """The grid of the streaming pass: ndiv, or per axis the finer filter grid."""
        if self.filter_ndiv is None:
            return self.ndiv
        return tuple(max(n, m) for n, m in zip(self.ndiv, self.filter_ndiv))


def wedge_numbers(scan, frames: np.ndarray, params: IntegrationParameters) -> np.ndarray:
    """Wedge of each 0-based frame: floor(rotation since the scan start / wedge width).

    Stills (no oscillation) get one wedge per frame. ``wedge_frames`` counts frames instead.
    """
    frames = np.asarray(frames, dtype=np.int64)
    if params.wedge_frames is not None:
        return frames // params.wedge_frames
    width = abs(float(scan.oscillation[1]))
    if scan.is_still or width == 0:
        return frames.copy()
    per_wedge = max(1, int(np.floor(params.wedge_degrees / width + 1e-9)))
    return frames // per_wedge


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

    def __len__(self) -> int:
        return len(self.index)


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
    return PixelTable(flat, np.ascontiguousarray(s), s_norm, corr.product, d3s, (flat % n_fast).astype(np.float64),
                      (flat // n_fast).astype(np.float64), thr)


def profile_edges(dmin: float) -> np.ndarray:
    """|s| bin edges (1/Å) of the per-frame isotropic profile, common to all sweeps."""
    return np.linspace(0.0, 1.0 / dmin * (1 + 1e-9), PROFILE_BINS + 1)


def frame_list(sweep, frames) -> np.ndarray:
    """0-based frame numbers of the sweep to process, from optional 1-based file numbers (first, last)."""
    first, last = sweep.scan.image_range
    if frames is None:
        return np.arange(sweep.scan.num_frames)
    a, b = frames
    if a < first or b > last or b < a:
        raise ImageError(f"{sweep.source}: frame range {a}-{b} is outside the files' range {first}-{last}")
    return np.arange(a - first, b - first + 1)
