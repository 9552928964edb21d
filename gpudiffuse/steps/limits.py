"""Checks made before any heavy work: the resolution limit against the detector and the data,
the memory the map grid needs, and the background run's frames."""

from __future__ import annotations

import numpy as np

from ..backend import physical_memory
from ..errors import GridError, ImageError
from ..geometry.vectors import edge_resolution, s_vectors_from_positions

__all__ = ["resolve_dmin", "check_grid_memory", "check_background"]


def resolve_dmin(experiment, dmin: float | None) -> float:
    """The resolution limit (Å): the user's, or the detector corner. Refuses one beyond the
    detector edge, or one so coarse that no unmasked pixel of any sweep lies inside it."""
    corner = max(edge_resolution(s.panel, s.beam)[0] for s in experiment.sweeps)
    if dmin is None:
        return corner
    if dmin < corner * (1 - 1e-6):
        raise GridError(f"--dmin {dmin} Å is beyond the detector edge: the corner of the detector records "
                        f"{corner:.3f} Å at best")
    innermost = max(_innermost_d(sweep, mask) for sweep, mask in zip(experiment.sweeps, experiment.masks))
    if dmin >= innermost:
        raise GridError(f"--dmin {dmin} Å keeps no data: the innermost unmasked pixel records {innermost:.3f} Å "
                        "(a resolution limit in Å keeps the data at larger |s|, i.e. smaller d)")
    return float(dmin)


def _innermost_d(sweep, mask) -> float:
    """The largest d (Å) of any unmasked pixel: the data nearest the beam."""
    positions = sweep.panel.pixel_positions().reshape(-1, 3)[np.flatnonzero(mask.ravel())]
    if not len(positions):
        return 0.0
    s = np.linalg.norm(s_vectors_from_positions(positions, sweep.beam), axis=1)
    smallest = s.min()
    return float("inf") if smallest <= 0 else float(1.0 / smallest)


def check_grid_memory(experiment, ndiv, dmin: float) -> None:
    """Refuse a grid whose dense map (intensity and σ, float64, every voxel to ``dmin``) would
    need more than half of this machine's memory."""
    axes = experiment.sweeps[0].crystal.real_space_axes
    extent = [2 * int(np.ceil(np.linalg.norm(axis) * n / dmin)) + 1 for axis, n in zip(axes, ndiv)]
    need = 16.0 * float(np.prod(np.array(extent, dtype=np.float64)))
    memory = physical_memory()
    if memory is not None and need > memory / 2:
        raise GridError(f"--ndiv {' '.join(str(n) for n in ndiv)} to {dmin:.3g} Å needs a map grid of "
                        f"{' × '.join(str(e) for e in extent)} voxels, about {need / 2**30:.3g} GiB; this machine has "
                        f"{memory / 2**30:.3g} GiB")


def check_background(template: str, experiment) -> None:
    """Every background frame exists, has the data frames' size and states its exposure time."""
    from ..integration.blocks import background_exposure  # noqa: PLC0415
    from ..io.images import expand_template, read_image  # noqa: PLC0415

    shape = experiment.masks[0].shape
    for _, path in expand_template(template):
        data = read_image(path)
        if data.shape != shape:
            raise ImageError(f"background frame {path} is {data.shape[1]}x{data.shape[0]} pixels but the data "
                             f"frames are {shape[1]}x{shape[0]}")
        background_exposure(path)

