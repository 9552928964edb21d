"""The export step: the map and merged values in the formats other programs open.

Grid formats take ``map.nxs`` (the symmetry-expanded map, index [i, j, k] ↔ voxel
H = i − Hm, K = j − Km, L = k − Lm in units of 1/nᵢ r.l.u.):

* ``ccp4`` / ``mrc`` (gemmi; MRC2014 and CCP4 share the layout, mode 2 = float32): a reciprocal-
  space map on a "cell" of N_h·a*/n_h × N_k·b*/n_k × N_l·c*/n_l (N the grid size per axis, a*
  in Å⁻¹, written where a viewer expects Å) with the reciprocal angles α*, β*, γ*, space group
  P1, and the start indices (NCSTART…) = −Hm, −Km, −Lm: a viewer then puts h, k, l = 0 at its
  origin and shows the reciprocal lattice with its true metric (1 Å on screen = 1 Å⁻¹).
  Columns, rows and sections are h, k, l. Unmeasured voxels become 0 (``--unmeasured``).
* ``vtk``: legacy VTK STRUCTURED_POINTS (ParaView, pyvista), big-endian float32, x, y, z = h,
  k, l in r.l.u. (origin −Hm/n_h …, spacing 1/nᵢ: an orthogonal box, whatever the cell);
  scalars ``intensity`` and ``sigma``; unmeasured voxels stay NaN.
* ``hdf5``: ``/intensity`` and ``/sigma`` 3-D float64 arrays with the h, k, l axes, cell, space
  group, ndiv and unit as attributes; unmeasured voxels stay NaN.

``mtz`` takes ``merged.nxs``: the asymmetric-unit voxels at integer h, k, l (diffuse, or with
``source="bragg"`` the merged excluded pixels) as columns H K L, I (J), SIGI (Q), N (I) with the
crystal's cell and space group (gemmi).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import gemmi
import h5py
import numpy as np

from ..errors import GpudiffuseError, UsageError
from ..io.nexus import atomic_file
from .keys import stored_digest, step_path
from .merge import load_merged

__all__ = ["ExportParameters", "run_export", "FORMATS", "read_map"]

FORMATS = {"ccp4": ".ccp4", "mrc": ".mrc", "vtk": ".vtk", "mtz": ".mtz", "hdf5": ".h5"}
SOURCES = ("diffuse", "bragg")


@dataclass(frozen=True)
class ExportParameters:
    """format: ccp4, mrc, vtk, mtz or hdf5; source: diffuse or bragg (mtz only); unmeasured: the
    value unmeasured voxels get (None: 0 for ccp4/mrc, NaN for vtk/hdf5); path: the file to write
    (None: OUT/map.<ext>, or OUT/<source>.mtz)."""

    format: str
    source: str = "diffuse"
    unmeasured: float | None = None
    path: str | None = None

    def __post_init__(self):
        if self.format not in FORMATS:
            raise UsageError(f"--format {self.format}: unknown (one of {', '.join(FORMATS)})")
        if self.source not in SOURCES:
            raise UsageError(f"--source {self.source}: unknown (diffuse or bragg)")
        if self.source == "bragg" and self.format != "mtz":
            raise UsageError("--source bragg: only --format mtz exports the Bragg voxels (map.nxs holds the "
                                  "diffuse map)")

    def target(self, out: str) -> str:
        if self.path:
            return self.path
        name = f"{self.source}.mtz" if self.format == "mtz" else f"map{FORMATS[self.format]}"
        return os.path.join(out, name)


def run_export(out: str, params: ExportParameters, overwrite: bool = False) -> str:
    """Write the export of ``OUT`` described by ``params``; returns the path written."""
    target = params.target(out)
    if os.path.exists(target) and not overwrite:
        raise GpudiffuseError(f"{target} already exists; pass --overwrite to replace it")
    if params.format == "mtz":
        _write_mtz(out, params, target)
        return target
    stored_digest(out, "map")  # names a missing, unfinished or older-format map.nxs
    grid = read_map(step_path(out, "map"))
    fill = params.unmeasured if params.unmeasured is not None else (0.0 if params.format in ("ccp4", "mrc") else
                                                                      np.nan)
    for name in ("intensity", "sigma"):
        grid[name] = np.where(np.isfinite(grid[name]), grid[name], fill)
    writer = {"ccp4": _write_ccp4, "mrc": _write_ccp4, "vtk": _write_vtk, "hdf5": _write_hdf5}[params.format]
    with atomic_file(target, overwrite=True) as tmp:
        writer(tmp, grid)
    return target


def read_map(path: str) -> dict:
    """map.nxs as {"intensity", "sigma", "axes" (h, k, l in r.l.u.), "ndiv", "unit_cell", "space_group",
    "units" (of the intensities)}."""
    with h5py.File(path, "r") as handle:
        data = handle["entry/data"]
        return {"intensity": data["intensity"][()], "sigma": data["intensity_errors"][()],
                "axes": [data[a][()] for a in "hkl"], "ndiv": tuple(int(n) for n in data.attrs["ndiv"]),
                "unit_cell": tuple(float(x) for x in data.attrs["unit_cell"]),
                "space_group": str(data.attrs["space_group"]), "units": str(data["intensity"].attrs["units"])}


def _write_ccp4(path: str, grid: dict) -> None:
    reciprocal = gemmi.UnitCell(*grid["unit_cell"]).reciprocal()
    shape = grid["intensity"].shape
    lengths = [size * step for size, step in zip(shape, (reciprocal.a, reciprocal.b, reciprocal.c))]
    lengths = [length / n for length, n in zip(lengths, grid["ndiv"])]
    cell = gemmi.UnitCell(*lengths, reciprocal.alpha, reciprocal.beta, reciprocal.gamma)
    ccp4 = gemmi.Ccp4Map()
    ccp4.grid = gemmi.FloatGrid(np.ascontiguousarray(grid["intensity"], dtype=np.float32), cell,
                                gemmi.SpaceGroup("P 1"))
    ccp4.update_ccp4_header(2, True)
    for word, axis, n in zip((5, 6, 7), grid["axes"], grid["ndiv"]):  # NCSTART, NRSTART, NSSTART
        ccp4.set_header_i32(word, int(round(axis[0] * n)))
    ccp4.write_ccp4_map(path)


def _write_vtk(path: str, grid: dict) -> None:
    shape = grid["intensity"].shape
    origin = [axis[0] for axis in grid["axes"]]
    spacing = [1.0 / n for n in grid["ndiv"]]
    header = (f"# vtk DataFile Version 3.0\ngpudiffuse map: h k l in r.l.u., {grid['units']}, "
              f"cell {' '.join(f'{x:g}' for x in grid['unit_cell'])}, {grid['space_group']}\nBINARY\n"
              f"DATASET STRUCTURED_POINTS\nDIMENSIONS {shape[0]} {shape[1]} {shape[2]}\n"
              f"ORIGIN {origin[0]:.9g} {origin[1]:.9g} {origin[2]:.9g}\n"
              f"SPACING {spacing[0]:.9g} {spacing[1]:.9g} {spacing[2]:.9g}\nPOINT_DATA {int(np.prod(shape))}\n")
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        for name in ("intensity", "sigma"):
            handle.write(f"SCALARS {name} float 1\nLOOKUP_TABLE default\n".encode("ascii"))
            # VTK points run x (h) fastest: Fortran order of the [h, k, l] array
            handle.write(np.asarray(grid[name], dtype=">f4").ravel(order="F").tobytes())
            handle.write(b"\n")


def _write_hdf5(path: str, grid: dict) -> None:
    from ..io.deflate import write_compressed  # noqa: PLC0415

    with h5py.File(path, "w") as handle:
        write_compressed(handle, {name: grid[name] for name in ("intensity", "sigma")})
        for name in ("intensity", "sigma"):
            handle[name].attrs["units"] = grid["units"]
        for name, axis in zip("hkl", grid["axes"]):
            handle[name] = axis
            handle[name].attrs["units"] = "r.l.u."
        handle.attrs["layout"] = "intensity[i, j, k] is the voxel at h[i], k[j], l[k]; NaN: not measured"
        handle.attrs["unit_cell"] = np.asarray(grid["unit_cell"])
        handle.attrs["unit_cell_units"] = "angstrom, degrees"
        handle.attrs["space_group"] = grid["space_group"]
        handle.attrs["ndiv"] = np.asarray(grid["ndiv"], dtype=np.int64)


def _write_mtz(out: str, params: ExportParameters, target: str) -> None:
    result = load_merged(out)
    voxels = result.merged if params.source == "diffuse" else result.bragg
    if voxels is None:
        raise GpudiffuseError(f"{step_path(out, 'merge')} holds no Bragg voxels (processed without a Bragg mask)")
    index = np.column_stack([voxels["H"], voxels["K"], voxels["L"]])
    ndiv = np.asarray(result.ndiv)
    integer = np.all(index % ndiv == 0, axis=1)
    if not integer.any():
        raise GpudiffuseError(f"{step_path(out, 'merge')}: no {params.source} voxel at integer h, k, l")
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = result.space_group
    mtz.set_cell_for_all(gemmi.UnitCell(*result.unit_cell))
    mtz.add_dataset("gpudiffuse")
    mtz.history = [f"gpudiffuse export: {params.source} voxels at integer hkl, intensity unit {result.units}"]
    for label, kind in (("I", "J"), ("SIGI", "Q"), ("N", "I")):
        mtz.add_column(label, kind)
    columns = [index[integer] // ndiv, voxels["intensity"][integer], voxels["sigma"][integer], voxels["n"][integer]]
    mtz.set_data(np.column_stack(columns).astype(np.float32))
    with atomic_file(target, overwrite=True) as tmp:
        mtz.write_to_file(tmp)
