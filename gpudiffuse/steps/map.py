"""The map step: the merged asymmetric unit expanded to every symmetry mate on a dense 3-D grid
→ ``map.nxs`` (NXdata with h, k, l axes in r.l.u., NaN where unmeasured; NeXpy opens it)."""

from __future__ import annotations

import numpy as np

from ..io.nexus import atomic_nexus, write_provenance
from ..merge import expand_to_grid
from .keys import cached_step, make_key, stored_digest, step_path
from .merge import INTENSITY_UNITS, MergeResult, load_merged

__all__ = ["run_map", "write_map"]


def run_map(out: str, overwrite: bool = False, merged: MergeResult | None = None, backend=None) -> str:
    """Expand ``OUT/merged.nxs`` (or ``merged``, that file already loaded) into ``OUT/map.nxs``,
    or keep that file when it is up to date. Returns its path."""
    key = make_key("map", {}, {"merge": stored_digest(out, "merge")})

    def compute():
        result = merged or load_merged(out)
        return result, expand_to_grid(result.merged, result.space_group, result.ndiv)

    cached_step(out, "map", key, overwrite, compute, lambda path, made, k: write_map(path, *made, k, backend),
                lambda path: None)
    return step_path(out, "map")


def write_map(path: str, result: MergeResult, grid, key: dict, backend=None) -> None:
    intensity, errors, axes = grid
    with atomic_nexus(path, overwrite=True) as handle:
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        write_provenance(entry, "map", key, backend)
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "intensity"
        data.attrs["axes"] = ["h", "k", "l"]
        data.create_dataset("intensity", data=intensity, compression="gzip")
        data.create_dataset("intensity_errors", data=errors, compression="gzip")
        for name, axis, n in zip("hkl", axes, result.ndiv):
            data[name] = axis / n
            data[name].attrs["units"] = "r.l.u."
        for name in ("intensity", "intensity_errors"):
            data[name].attrs["units"] = INTENSITY_UNITS
        data.attrs["space_group"] = result.space_group.hm
        data.attrs["unit_cell"] = np.asarray(result.unit_cell, dtype=np.float64)
        data.attrs["unit_cell_units"] = "angstrom, degrees"
        data.attrs["ndiv"] = np.asarray(result.ndiv, dtype=np.int64)
        entry.attrs["default"] = "data"
        handle.attrs["default"] = "entry"
