"""The absolute step (DESIGN §12): the scale k that puts the scaled intensities in electron units
per unit cell, from the unit-cell inventory and the total-scattering sum rule → ``absolute.nxs``
(k at S_c, k against S, the observed and theoretical shell profiles, the inventory).

It sits between ``scale`` and ``merge``: when ``OUT/absolute.nxs`` exists (and is up to date),
``merge`` applies it: final diffuse intensity k·I − I_inc(|s|), σ·k; Bragg table k·I. That is the
scale model a·d·(b·I + c) with b → b/k and c → c + I_inc·b/k. Deleting ``absolute.nxs`` (and
running ``merge`` again) returns to relative units.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import h5py
import numpy as np

from ..absolute.inventory import (Inventory, bulk_water, matthews_solvent_fraction, parse_composition,
                                  read_model)
from ..absolute.scale import AbsoluteScale, absolute_scale
from ..absolute.theory import incoherent_per_cell
from ..errors import StepInputError, UsageError
from ..experiment import cell_difference
from ..io.fingerprint import content_hash
from ..io.nexus import atomic_nexus, create_step_entry
from ..merge import equal_volume_edges, shell_of
from .importing import load_experiment
from .integrate import load_integration
from .keys import cached_step, make_key, step_path, stored_digest

__all__ = ["AbsoluteParameters", "AbsoluteResult", "run_absolute", "write_absolute", "read_absolute",
           "load_absolute", "apply_absolute", "build_inventory", "ABSOLUTE_UNITS", "DEFAULT_S_CUTOFF",
           "MODEL_CELL_TOLERANCE", "format_k_table", "format_final_profile"]

logger = logging.getLogger(__name__)

ABSOLUTE_UNITS = "electron units per unit cell"
DEFAULT_S_CUTOFF = 0.7          # Å⁻¹
MODEL_CELL_TOLERANCE = (0.03, 3.0)  # relative length, degrees, between the model's cell and the data's
_INCOHERENT_STEP = 0.0025       # Å⁻¹, spacing of the stored I_inc table used to subtract it


@dataclass(frozen=True)
class AbsoluteParameters:
    """model: PDB/mmCIF file; composition: atoms per copy ("C1500 N400 …"), times ``copies``
    (added to the model's atoms when both are given); solvent_fraction: the volume fraction of
    the cell filled with bulk water (None: 1 − 1.23/V_M from the inventory's mass, Matthews),
    ordered waters of the model counted in it; s_cutoff: S_c in Å⁻¹ (None: 0.7 or the data limit)."""

    model: str | None = None
    composition: str | None = None
    copies: float = 1.0
    solvent_fraction: float | None = None
    s_cutoff: float | None = None

    def __post_init__(self):
        if not self.model and not self.composition:
            raise UsageError("the absolute scale needs --model FILE or --composition \"C… N… O… S… H…\"")
        if not self.copies > 0:
            raise UsageError(f"--copies {self.copies}: must be positive")
        if self.s_cutoff is not None and not self.s_cutoff > 0:
            raise UsageError(f"--s-cutoff {self.s_cutoff}: must be positive (Å⁻¹)")


@dataclass
class AbsoluteResult:
    """scale: k and its curves; inventory: the complete one (bulk water included);
    solvent_fraction: used; s_limit: the data limit (Å⁻¹); incoherent: (s, I_inc) table."""

    scale: AbsoluteScale
    inventory_summary: str
    solvent_fraction: float
    s_limit: float
    incoherent: tuple
    notes: list


def build_inventory(params: AbsoluteParameters, experiment) -> tuple[Inventory, float]:
    """The complete inventory per cell of the data's cell and the solvent fraction used; the
    model's cell and Laue group must agree with the data's."""
    cell = experiment.sweeps[0].crystal.unit_cell
    inventory = None
    if params.model:
        inventory = read_model(params.model)
        _check_model(params.model, inventory, cell, experiment.space_group)
    if params.composition:
        part = parse_composition(params.composition, params.copies)
        inventory = part if inventory is None else inventory + part
    fraction = params.solvent_fraction
    if fraction is None:
        fraction = matthews_solvent_fraction(inventory, cell.volume)
    return inventory + bulk_water(cell.volume, fraction, inventory.waters), fraction


def _check_model(path, inventory, cell, space_group):
    import gemmi  # noqa: PLC0415

    model_cell = np.array(inventory.cell, dtype=np.float64)
    data_cell = np.array(cell.parameters, dtype=np.float64)
    length, angle = cell_difference(model_cell, data_cell)
    if length > MODEL_CELL_TOLERANCE[0] or angle > MODEL_CELL_TOLERANCE[1]:
        raise StepInputError(f"--model {path}: its cell {np.round(model_cell, 2).tolist()} differs from the data's "
                             f"{np.round(data_cell, 2).tolist()} by {100 * length:.1f} % / {angle:.1f}° (at most "
                             f"{100 * MODEL_CELL_TOLERANCE[0]:.0f} % / {MODEL_CELL_TOLERANCE[1]:.0f}°)")
    model_group = gemmi.SpaceGroup(inventory.space_group)
    if model_group.laue_str() != space_group.laue_str():
        raise StepInputError(f"--model {path}: its space group {model_group.hm} (Laue group {model_group.laue_str()}) "
                             f"disagrees with the data's {space_group.hm} (Laue group {space_group.laue_str()})")


def run_absolute(out: str, params: AbsoluteParameters, overwrite: bool = False, experiment=None, integration=None,
                 scale=None, backend=None) -> AbsoluteResult:
    """The absolute scale of ``OUT`` (its scaled tables) into ``OUT/absolute.nxs``, or reuse that file."""
    from .scale import read_scale, scaled_tables  # noqa: PLC0415

    if experiment is None:
        experiment = load_experiment(out)
    key_params = asdict(params)
    if params.model:
        key_params["model_digest"] = content_hash(params.model) if os.path.isfile(params.model) else None
    key = make_key("absolute", key_params, {"import": stored_digest(out, "import"),
                                            "integrate": stored_digest(out, "integrate"),
                                            "scale": stored_digest(out, "scale")})

    def compute():
        inventory, fraction = build_inventory(params, experiment)
        nonlocal integration
        if integration is None:
            integration = load_integration(out)
        fit = scale or read_scale(step_path(out, "scale"))
        tables = scaled_tables(experiment, integration, fit)
        rows = [t for t in (tables["observations"], tables["excluded"]) if t]
        s_limit = min(1 / integration.dmin, max(float(np.max(t["s"])) for t in rows))
        s_cutoff = params.s_cutoff if params.s_cutoff is not None else min(DEFAULT_S_CUTOFF, s_limit)
        if s_cutoff > s_limit + 1e-9:
            raise StepInputError(f"--s-cutoff {s_cutoff:g} Å⁻¹ is beyond the data, which end at {s_limit:.3f} Å⁻¹ "
                                 f"(d = {1 / s_limit:.2f} Å)")
        crystal = experiment.sweeps[0].crystal
        result = absolute_scale(rows, inventory, crystal.unit_cell.volume, s_cutoff, s_limit, integration.ndiv,
                                crystal.reciprocal_volume)
        if not (np.isfinite(result.k) and result.k > 0):
            raise StepInputError(f"the absolute scale at S_c = {s_cutoff:g} Å⁻¹ is not positive (k = {result.k:.4g}): "
                                 "the sum rule needs S_c well beyond the low-resolution region; raise --s-cutoff")
        s_table = np.arange(0.0, 1.1 * s_limit + _INCOHERENT_STEP, _INCOHERENT_STEP)
        return AbsoluteResult(result, inventory.summary(), fraction, s_limit,
                              (s_table, incoherent_per_cell(inventory, s_table)), inventory.notes)

    result = cached_step(out, "absolute", key, overwrite, compute,
                         lambda path, made, k: write_absolute(path, made, k, backend), read_absolute)
    logger.info("absolute scale: %s", result.inventory_summary)
    logger.info("\n%s", format_k_table(result))
    return result


def format_k_table(result: AbsoluteResult) -> str:
    """k against S (the user judges the plateau), with the share of I_obs from filled shells."""
    a = result.scale
    stops = np.arange(0.3, result.s_limit + 1e-9, 0.05)
    stops = np.unique(np.round(np.concatenate([stops, [a.s_cutoff, result.s_limit]]), 4))
    lines = ["   S (1/Å)   d (Å)            k   coverage(shell)"]
    for s in stops[stops > 0]:
        shell = min(int(s / np.diff(a.edges)[0]), len(a.coverage) - 1)
        mark = "  <- S_c" if abs(s - a.s_cutoff) < 1e-6 else ""
        lines.append(f"{s:10.3f} {1 / s:7.2f} {float(a.k_at(s)):12.5g} {a.coverage[max(shell - 1, 0)]:9.3f}{mark}")
    lines.append(f"k = {a.k:.6g} e.u. per cell per (counts/(s sr)) at S_c = {a.s_cutoff:.3f} Å⁻¹; N_e = "
                 f"{a.electrons:.6g} per cell; {100 * a.filled_share:.2f} % of I_obs(S_c) from unmeasured shells "
                 f"(filled from their neighbours); rows weighted by {a.weighting}")
    return "\n".join(lines)


def apply_absolute(tables: dict, result: AbsoluteResult) -> dict:
    """The scaled tables in electron units: diffuse k·I − I_inc(|s|), Bragg (excluded) k·I, σ·k."""
    k = result.scale.k
    s_table, incoherent = result.incoherent
    out = dict(tables)
    for name in ("observations", "excluded"):
        table = tables.get(name)
        if not table:
            continue
        table = dict(table)
        subtract = np.interp(table["s"], s_table, incoherent) if name == "observations" else 0.0
        table["rate"] = k * table["rate"] - subtract
        table["sigma"] = k * table["sigma"]
        out[name] = table
    return out


def write_absolute(path: str, result: AbsoluteResult, key: dict, backend=None) -> None:
    a = result.scale
    with atomic_nexus(path, overwrite=True) as handle:
        entry = create_step_entry(handle, "absolute", key, backend)
        g = entry.create_group("absolute")
        g.attrs["NX_class"] = "NXcollection"
        g.attrs["k"] = a.k
        g.attrs["k_units"] = f"{ABSOLUTE_UNITS} per (counts/(s sr))"
        g.attrs["s_cutoff"] = a.s_cutoff
        g.attrs["s_limit"] = result.s_limit
        g.attrs["electrons_per_cell"] = a.electrons
        g.attrs["cell_volume"] = a.volume
        g.attrs["filled_share"] = a.filled_share
        g.attrs["weighting"] = a.weighting
        g.attrs["solvent_fraction"] = result.solvent_fraction
        g.attrs["inventory"] = result.inventory_summary
        g.attrs["notes"] = "\n".join(result.notes)
        columns = {"edges": (a.edges, "1/angstrom"), "observed": (a.observed, "counts/(s sr)"),
                   "filled": (a.filled, "counts/(s sr)"), "coherent": (a.coherent, ABSOLUTE_UNITS),
                   "incoherent": (a.incoherent, ABSOLUTE_UNITS), "coverage": (a.coverage, "fraction of the shell"),
                   "i_obs": (a.i_obs, "counts/(s sr) (cumulative, times V)"),
                   "i_theo": (a.i_theo, "e.u.² per cell (cumulative)"), "k": (a.k_curve, "k at each edge"),
                   "incoherent_table_s": (result.incoherent[0], "1/angstrom"),
                   "incoherent_table": (result.incoherent[1], ABSOLUTE_UNITS)}
        for name, (values, units) in columns.items():
            g.create_dataset(name, data=np.asarray(values, dtype=np.float64))
            g[name].attrs["units"] = units


def read_absolute(path: str) -> AbsoluteResult:
    with h5py.File(path, "r") as handle:
        g = handle["entry/absolute"]
        c = {name: g[name][()] for name in g}
        scale = AbsoluteScale(float(g.attrs["s_cutoff"]), float(g.attrs["k"]), c["edges"], c["observed"], c["filled"],
                              c["coherent"], c["incoherent"], c["coverage"], c["i_obs"], c["i_theo"], c["k"],
                              float(g.attrs["electrons_per_cell"]), float(g.attrs["cell_volume"]),
                              float(g.attrs["filled_share"]), str(g.attrs.get("weighting", "swept volume")))
        notes = [n for n in str(g.attrs["notes"]).split("\n") if n]
        return AbsoluteResult(scale, str(g.attrs["inventory"]), float(g.attrs["solvent_fraction"]),
                              float(g.attrs["s_limit"]), (c["incoherent_table_s"], c["incoherent_table"]), notes)


def load_absolute(out: str) -> AbsoluteResult | None:
    """``OUT/absolute.nxs`` if there is one (None otherwise)."""
    if not os.path.exists(step_path(out, "absolute")):
        return None
    stored_digest(out, "absolute")  # refuses an unfinished or foreign file
    return read_absolute(step_path(out, "absolute"))


def format_final_profile(merged: dict, result: AbsoluteResult, n_shells: int = 10) -> str:
    """The radial profile of the final diffuse map against I_inc(|s|), and the share of voxels
    below −3σ (a sign of an over-subtraction, i.e. k too low or the inventory too large)."""
    s, intensity, sigma = merged["s"], merged["intensity"], merged["sigma"]
    s_table, incoherent = result.incoherent
    edges = equal_volume_edges(s.min(), s.max(), n_shells)
    shell = shell_of(s, edges)
    lines = ["final diffuse map (e.u. per cell) against the incoherent scattering subtracted from it:",
             " d_max  d_min     voxels      <I_final>     <I_inc>   I<-3sig (%)"]
    for i in range(n_shells):
        sel = shell == i
        if not sel.any():
            continue
        lines.append(f"{1 / max(edges[i], 1e-9):6.2f} {1 / edges[i + 1]:6.2f} {int(sel.sum()):10d} "
                     f"{np.mean(intensity[sel]):14.5g} {np.mean(np.interp(s[sel], s_table, incoherent)):11.5g} "
                     f"{100 * np.mean(intensity[sel] < -3 * sigma[sel]):12.3f}")
    lines.append(f"{100 * np.mean(intensity < -3 * sigma):.3f} % of the {len(intensity)} voxels have I < −3σ")
    return "\n".join(lines)
