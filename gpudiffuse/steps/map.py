"""The map step: the merged asymmetric unit expanded to every symmetry mate on a dense 3-D grid
→ ``map.nxs``: NXdata ``/entry/data`` (the ``default`` chain from the file root, so NeXpy opens
it) with the map, its σ (``intensity_errors``) and the two half-set maps, NaN where unmeasured;
axes h, k, l in r.l.u. (index [i, j, k] ↔ h = axis_h[i], …); cell, space group, ndiv and the
intensity unit as attributes."""

from __future__ import annotations

import numpy as np

from ..io.deflate import write_compressed
from ..io.nexus import atomic_nexus, create_step_entry
from ..merge import expand_to_grid
from .keys import cached_step, make_key, stored_digest, step_path
from .merge import MergeResult, load_merged

__all__ = ["run_map", "write_map", "MAP_COLUMNS"]

# merged columns → map datasets: the map, its σ, and the maps of the two random half-sets
MAP_COLUMNS = ("intensity", "sigma", "intensity_half1", "intensity_half2")
_DATASETS = ("intensity", "intensity_errors", "intensity_half1", "intensity_half2")


def run_map(out: str, overwrite: bool = False, merged: MergeResult | None = None, backend=None) -> str:
    """Expand ``OUT/merged.nxs`` (or ``merged``, that file already loaded) into ``OUT/map.nxs``,
    or keep that file when it is up to date. Returns its path."""
    key = make_key("map", {}, {"merge": stored_digest(out, "merge")})

    def compute():
        result = merged or load_merged(out)
        return result, expand_to_grid(result.merged, result.space_group, result.ndiv, MAP_COLUMNS)

    cached_step(out, "map", key, overwrite, compute, lambda path, made, k: write_map(path, *made, k, backend),
                lambda path: None)
    return step_path(out, "map")


def write_map(path: str, result: MergeResult, grid, key: dict, backend=None) -> None:
    *maps, axes = grid
    with atomic_nexus(path, overwrite=True) as handle:
        entry = create_step_entry(handle, "map", key, backend)
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "intensity"
        data.attrs["axes"] = ["h", "k", "l"]
        data.attrs["auxiliary_signals"] = ["intensity_half1", "intensity_half2"]
        write_compressed(data, dict(zip(_DATASETS, maps)))
        for name in _DATASETS:
            data[name].attrs["units"] = result.units
        data["intensity_half1"].attrs["long_name"] = "mean of random half-set 1 (the CC½ halves)"
        data["intensity_half2"].attrs["long_name"] = "mean of random half-set 2 (the CC½ halves)"
        for name, axis, n in zip("hkl", axes, result.ndiv):
            data[name] = axis / n
            data[name].attrs["units"] = "r.l.u."
        data.attrs["space_group"] = result.space_group.hm
        data.attrs["unit_cell"] = np.asarray(result.unit_cell, dtype=np.float64)
        data.attrs["unit_cell_units"] = "angstrom, degrees"
        data.attrs["ndiv"] = np.asarray(result.ndiv, dtype=np.int64)
        entry.attrs["default"] = "data"
        handle.attrs["default"] = "entry"
