"""Scattering of a unit cell's contents per |s| (DESIGN §12), from xraylib's tables:

* I_coh(s) = Σ n_el f₀,el(s)² (electron units² per cell): independent-atom coherent scattering,
  f₀ from ``xraylib.FF_Rayl``;
* I_inc(s) = Σ n_el S_el(s): incoherent (Compton) scattering, ``xraylib.SF_Compt``.

Convention: xraylib's momentum transfer is x = sin θ / λ (θ half the scattering angle, Å⁻¹), so
x = s / 2 with s = |s| = 2 sin θ / λ of this program. At s = 0, f₀ = Z and S = 0 exactly;
below x = 0.001 Å⁻¹, where xraylib's tables start for most elements, both are continued from
their value there as quadratics in x about s = 0 (both are even functions of x).
"""

from __future__ import annotations

import numpy as np

__all__ = ["form_factor", "incoherent_function", "coherent_per_cell", "incoherent_per_cell"]


X_TABLE_START = 0.001  # Å⁻¹ (sin θ / λ)


def _per_element(function, z: int, s: np.ndarray, at_zero: float) -> np.ndarray:
    import xraylib  # noqa: PLC0415

    table = getattr(xraylib, function)
    s = np.atleast_1d(np.asarray(s, dtype=np.float64))
    out = np.empty(s.shape)
    at_start = table(int(z), X_TABLE_START)
    for i, value in enumerate(s.ravel()):
        x = 0.5 * float(value)
        if x >= X_TABLE_START:
            out.ravel()[i] = table(int(z), x)
        else:
            out.ravel()[i] = at_zero + (at_start - at_zero) * (x / X_TABLE_START) ** 2
    return out


def _z(symbol: str) -> int:
    import gemmi  # noqa: PLC0415

    return gemmi.Element(symbol).atomic_number


def form_factor(symbol: str, s) -> np.ndarray:
    """f₀ (electrons) of a neutral atom at |s| = 2 sin θ / λ (Å⁻¹)."""
    z = _z(symbol)
    return _per_element("FF_Rayl", z, s, float(z))


def incoherent_function(symbol: str, s) -> np.ndarray:
    """S (electrons) of a neutral atom at |s| (Å⁻¹): 0 at s = 0, Z at large s."""
    return _per_element("SF_Compt", _z(symbol), s, 0.0)


def coherent_per_cell(inventory, s) -> np.ndarray:
    """Σ n f₀² over the inventory's atoms (e.u.² per unit cell)."""
    return sum(n * form_factor(symbol, s) ** 2 for symbol, n in inventory.atoms.items())


def incoherent_per_cell(inventory, s) -> np.ndarray:
    """Σ n S over the inventory's atoms (e.u. per unit cell)."""
    return sum(n * incoherent_function(symbol, s) for symbol, n in inventory.atoms.items())
