"""The absolute scale k from the total-scattering sum rule (DESIGN §12).

With V the cell volume (Å³), shells of |s| (Å⁻¹) of reciprocal volume ΔV, ⟨I⟩ a shell's mean of
the scaled diffuse plus Bragg intensity (program units) and I_coh, I_inc the independent-atom
coherent and incoherent scattering of the cell's contents (e.u. per cell)::

    I_obs(S)  = V Σ_{shells ≤ S} ΔV ⟨I_D + I_B⟩
    I_theo(S) = −N_e² + V Σ_{shells ≤ S} ΔV ⟨I_coh + I_inc⟩
    k(S)      = I_theo(S) / I_obs(S)                 (e.u. per cell per program unit)

A shell's ⟨I_D + I_B⟩ is the mean over every observation row in it, diffuse and excluded (Bragg)
alike, weighted by the reciprocal volume the row swept (its ``fraction``): the mean intensity of
the part of the shell that was measured, Bragg peaks included at their integrated weight. Stills
sweep no volume: there each row weighs by its exposure Σ K·t (√counts/σ), i.e. the mean over the
Ewald-sphere points measured, which is the shell's mean for randomly placed samples.
Choices where the spec is silent:

* shells are 0.005 Å⁻¹ wide; k at S_c comes from the cumulative sums interpolated linearly in S³
  (reciprocal volume) between shell edges;
* shells inside the innermost measured one (the beam stop, the direct beam) take its mean, and
  unmeasured shells between measured ones are interpolated linearly in |s|; the share of I_obs
  that comes from such filled shells is reported;
* a shell's coverage is the number of distinct voxels observed in it times the voxel volume over the
  shell's volume (in P1, before symmetry).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..grid import pack_voxels
from .theory import coherent_per_cell, incoherent_per_cell

__all__ = ["SHELL_WIDTH", "AbsoluteScale", "observed_profile", "theory_profile", "absolute_scale"]

SHELL_WIDTH = 0.005  # Å⁻¹


@dataclass
class AbsoluteScale:
    """k at ``s_cutoff`` and the curves behind it. Arrays over shells (n) or shell edges (n + 1):
    ``edges`` Å⁻¹; ``observed`` ⟨I_D + I_B⟩ per shell (program units, NaN where unmeasured),
    ``filled`` the profile with unmeasured shells filled; ``coherent``, ``incoherent`` the theory per
    shell (e.u. per cell); ``coverage`` per shell; ``i_obs``, ``i_theo``, ``k`` per edge (k NaN at
    edges where I_obs is 0). ``electrons``: N_e per cell; ``volume``: Å³; ``filled_share``: the
    share of I_obs(S_c) from filled shells; ``weighting``: of the rows in a shell's mean."""

    s_cutoff: float
    k: float
    edges: np.ndarray
    observed: np.ndarray
    filled: np.ndarray
    coherent: np.ndarray
    incoherent: np.ndarray
    coverage: np.ndarray
    i_obs: np.ndarray
    i_theo: np.ndarray
    k_curve: np.ndarray
    electrons: float
    volume: float
    filled_share: float
    weighting: str = "swept volume"

    def k_at(self, s) -> np.ndarray:
        """k(S) for S within the edges."""
        return _ratio_at(self.edges, self.i_theo, self.i_obs, s)


def row_weights(table, by_volume: bool) -> np.ndarray:
    """Swept volume (``fraction``) or, for stills, exposure Σ K·t times the scale (√counts/σ)."""
    if by_volume:
        return table["fraction"]
    return np.sqrt(np.maximum(table["counts"], 1)) / table["sigma"]


def observed_profile(tables, edges, ndiv, reciprocal_volume: float, by_volume: bool = True):
    """(mean, coverage): the weighted mean ``rate`` (:func:`row_weights`) of the rows of ``tables``
    (a list of observation tables) in each shell of ``edges`` (NaN where none), and each shell's
    coverage."""
    n = len(edges) - 1
    weighted = np.zeros(n)
    weight = np.zeros(n)
    keys = []
    for table in tables:
        if not table:
            continue
        shell = np.searchsorted(edges, table["s"], side="right") - 1
        inside = (shell >= 0) & (shell < n) & np.isfinite(table["rate"])
        shell = shell[inside]
        w = row_weights(table, by_volume)[inside]
        weighted += np.bincount(shell, w * table["rate"][inside], n)
        weight += np.bincount(shell, w, n)
        packed = pack_voxels(np.column_stack([table["H"][inside], table["K"][inside], table["L"][inside]]))
        keys.append(np.column_stack([shell, packed]))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(weight > 0, weighted / weight, np.nan)
    distinct = np.unique(np.concatenate(keys), axis=0) if keys else np.zeros((0, 2), np.int64)
    voxels = np.bincount(distinct[:, 0], minlength=n)
    shell_volume = 4 / 3 * np.pi * np.diff(edges**3)
    coverage = voxels * (reciprocal_volume / float(np.prod(ndiv))) / shell_volume
    return mean, coverage


def theory_profile(inventory, edges, points: int = 6):
    """(coherent, incoherent): the volume-weighted means over each shell of I_coh and I_inc
    (e.u. per cell), by Gauss–Legendre quadrature of s² f(s) over the shell."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    lo, hi = edges[:-1, None], edges[1:, None]
    s = 0.5 * (hi - lo) * nodes[None, :] + 0.5 * (hi + lo)
    w = weights[None, :] * s**2
    flat = s.ravel()
    coherent = coherent_per_cell(inventory, flat).reshape(s.shape)
    incoherent = incoherent_per_cell(inventory, flat).reshape(s.shape)
    return (np.sum(w * coherent, 1) / np.sum(w, 1), np.sum(w * incoherent, 1) / np.sum(w, 1))


def _fill(observed: np.ndarray, centres: np.ndarray) -> np.ndarray:
    measured = np.isfinite(observed)
    if not measured.any():
        return observed
    filled = np.interp(centres, centres[measured], observed[measured])  # flat inside the first measured shell
    last = np.flatnonzero(measured)[-1]
    filled[last + 1:] = np.nan
    return filled


def _cumulative(edges, shell_means, volume) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(volume * 4 / 3 * np.pi * np.diff(edges**3) * shell_means)])


def _ratio_at(edges, numerator, denominator, s):
    """numerator(S)/denominator(S) of two cumulative sums, each interpolated linearly in S³."""
    cubes = np.asarray(s, dtype=np.float64) ** 3
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.interp(cubes, edges**3, numerator) / np.interp(cubes, edges**3, denominator)


def absolute_scale(tables, inventory, cell_volume: float, s_cutoff: float, s_limit: float, ndiv,
                   reciprocal_volume: float) -> AbsoluteScale:
    """k(S_c) from scaled observation ``tables`` (diffuse and excluded) and a complete ``inventory``
    (bulk solvent included) of a cell of ``cell_volume`` Å³; shells up to ``s_limit`` Å⁻¹."""
    n = max(int(np.ceil(s_limit / SHELL_WIDTH)), 1)
    edges = np.linspace(0.0, n * SHELL_WIDTH, n + 1)
    by_volume = sum(float(np.sum(t["fraction"])) for t in tables if t) > 0
    observed, coverage = observed_profile(tables, edges, ndiv, reciprocal_volume, by_volume)
    centres = 0.5 * (edges[1:] + edges[:-1])
    filled = _fill(observed, centres)
    coherent, incoherent = theory_profile(inventory, edges)
    electrons = inventory.electrons
    i_obs = _cumulative(edges, np.nan_to_num(filled), cell_volume)
    i_filled = _cumulative(edges, np.where(np.isfinite(observed), 0.0, np.nan_to_num(filled)), cell_volume)
    i_theo = _cumulative(edges, coherent + incoherent, cell_volume) - electrons**2
    with np.errstate(invalid="ignore", divide="ignore"):
        k_curve = np.where(i_obs > 0, i_theo / i_obs, np.nan)
    k = float(_ratio_at(edges, i_theo, i_obs, s_cutoff))
    share = float(_ratio_at(edges, i_filled, i_obs, s_cutoff))
    return AbsoluteScale(float(s_cutoff), k, edges, observed, filled, coherent, incoherent, coverage, i_obs, i_theo,
                         k_curve, float(electrons), float(cell_volume), share,
                         "swept volume" if by_volume else "exposure (stills)")
