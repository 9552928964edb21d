"""Absolute units for the simulator: intensities in electron units per unit cell that obey the
total-scattering sum rule of DESIGN §12 for a stated inventory.

Written apart from the reduction's absolute step (it only shares the xraylib tables, which are
the stated physics, not the code under test). For a cell of volume V with N_e electrons, the
shell average of the total scattering is built to be

    ⟨I_B + I_D + I_iso⟩(s) = I_coh(s) + I_inc(s) − N_e² g(s),     V ∫ g d³s = 1,

with g(s) ∝ (1 − s²/s_h²)² inside the hole radius s_h (zero outside): the intensity of the
unobserved F(000) taken from the low-resolution Bragg reflections, so that
V ∫_{|s|<S} ⟨I⟩ d³s = V ∫_{|s|<S} (I_coh + I_inc) d³s − N_e² for every S ≥ s_h. The parts:

* Bragg: reflection h carries |F_h|² = w_h/⟨w⟩ · [I_coh(s) DW(s) − N_e² g(s)] (a Gaussian peak of
  integral |F_h|²/V in reciprocal space), DW(s) = exp(−B s²/4), ⟨w⟩ the mean weight of the
  lattice points in a thin shell about |s|;
* diffuse: [I_coh(s)(1 − DW(s))](1 − ρ(s)) · shape(h)/⟨shape⟩(s), shape the simulator's envelope
  times halos, ⟨shape⟩ its average over the sphere |s| (quadrature);
* isotropic: I_inc(s) + I_coh(s)(1 − DW(s)) ρ(s), ρ a solvent-ring share peaked at 1/3.2 Å⁻¹.

Counts are then ``scale`` photons per electron unit per second per steradian, so the reduction's
rate (counts / Σ K·t) is ``scale`` × e.u. and the absolute scale it should find is k = 1/scale.
"""

from __future__ import annotations

import numpy as np

from .absolute.inventory import bulk_water, parse_composition
from .absolute.theory import coherent_per_cell, incoherent_per_cell
from .merge import shell_of

__all__ = ["AbsoluteUnits"]

RING_SHARE = 0.4      # peak share of the coherent diffuse scattering given to the solvent ring
RING_CENTRE = 1 / 3.2  # Å⁻¹
RING_WIDTH = 0.045     # Å⁻¹


class AbsoluteUnits:
    """Radial functions (e.u. per unit cell) of a simulated model in absolute units; tabulated on
    a fine |s| grid and interpolated."""

    def __init__(self, model, s_max: float):
        p = model.params
        volume = abs(np.linalg.det(model.real_axes))
        self.inventory = parse_composition(p.composition) + bulk_water(volume, p.solvent_fraction)
        self.grid = np.linspace(0.0, 1.05 * s_max, 600)
        coherent = coherent_per_cell(self.inventory, self.grid)
        self.incoherent_table = incoherent_per_cell(self.inventory, self.grid)
        debye_waller = np.exp(-p.b_factor * self.grid**2 / 4)
        u = np.clip(self.grid / p.hole_radius, 0, 1)
        # V ∫ (1 − u²)² d³s = V 4π s_h³ (1/3 − 2/5 + 1/7) = V 4π s_h³ · 8/105
        hole = self.inventory.electrons**2 * (1 - u**2) ** 2 / (volume * 4 * np.pi * p.hole_radius**3 * 8 / 105)
        self.bragg_table = coherent * debye_waller - hole
        if np.any(self.bragg_table < 0):
            bad = self.grid[np.argmax(self.bragg_table < 0)]
            raise ValueError(f"hole_radius {p.hole_radius} Å⁻¹ too small for this inventory: the Bragg share "
                             f"would be negative at |s| = {bad:.3f} Å⁻¹")
        ring = RING_SHARE * np.exp(-((self.grid - RING_CENTRE) ** 2) / (2 * RING_WIDTH**2))
        thermal = coherent * (1 - debye_waller)
        self.isotropic_table = self.incoherent_table + thermal * ring
        self.diffuse_table = thermal * (1 - ring) / _mean_shape_over_spheres(model, self.grid)
        self.volume = volume
        self._bragg_weight_means(model, s_max)

    def _bragg_weight_means(self, model, s_max: float, n_bins: int = 64):
        """⟨w⟩ over the lattice points (absent ones count as zero) of each of ``n_bins`` equal-volume
        shells, so that Σ|F_h|² over a shell is exactly its Wilson share (no sampling error in the
        sum rule)."""
        shape = model.bragg_weight.shape
        points = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
        s_norm = np.linalg.norm((points + model.table_origin) @ model.A.T, axis=-1)
        self.weight_edges = np.cbrt(np.linspace(0, (1.05 * s_max) ** 3, n_bins + 1))
        which = shell_of(s_norm, self.weight_edges)
        total = np.bincount(which, model.bragg_weight.ravel(), n_bins)
        count = np.bincount(which, minlength=n_bins)
        self.weight_means = np.where(total > 0, total / np.maximum(count, 1), 1.0)

    def _at(self, table, s_norm):
        return np.interp(s_norm, self.grid, table)

    def diffuse_factor(self, s_norm):
        """Multiplies the simulator's diffuse shape at |s|."""
        return self._at(self.diffuse_table, s_norm)

    def isotropic(self, s_norm):
        return self._at(self.isotropic_table, s_norm)

    def incoherent(self, s_norm):
        """I_inc(|s|), e.u. per unit cell."""
        return self._at(self.incoherent_table, s_norm)

    def bragg_amplitude(self, weight, s_norm, width):
        """Peak height of a Gaussian Bragg peak (σ = width Å⁻¹) whose integral is |F_h|²/V."""
        squared = weight / self.weight_means[shell_of(s_norm, self.weight_edges)] * self._at(self.bragg_table, s_norm)
        return squared / self.volume / ((2 * np.pi) ** 1.5 * width**3)


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


def _mean_shape_over_spheres(model, s_grid) -> np.ndarray:
    """⟨envelope × (1 + halo_level·halo)⟩ over the sphere of each |s|: the envelope by quadrature
    over 2000 directions; the halos, which vary on the scale of the lattice, by their mean over a
    reciprocal cell (mean weight × cell average of the nearest-point Gaussian)."""
    p = model.params
    directions = _fibonacci_sphere(2000)
    to_hkl = np.linalg.inv(model.A)
    envelope = np.empty(len(s_grid))
    for i, s in enumerate(s_grid):
        hkl = (s * directions) @ to_hkl.T
        envelope[i] = np.mean(np.exp(-np.einsum("ni,ij,nj->n", hkl, model.envelope, hkl)))
    offsets = (np.arange(40) + 0.5) / 40 - 0.5
    cell = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3)
    gauss = np.mean(np.exp(-np.sum((cell @ model.A.T) ** 2, -1) / (2 * p.halo_width**2)))
    halo = float(np.mean(model.halo_weight)) * gauss
    return envelope * (1 + p.halo_level * halo)
