"""Per-pixel correction factors (computed once per panel) and material data.

For a pixel at lab position r (mm), d = |r|, n̂ the panel normal, cos w = n̂·r/d:

* solid angle            Ω = px·py·cos w / d²                       (sr)
* polarisation           P = p(1 − (e₁·r̂)²) + (1 − p)(1 − (e₂·r̂)²), e₁ = unit(ŝ₀ × n̂_pol), e₂ = ŝ₀ × e₁
* detector efficiency    E = 1 − exp(−μ_sensor t / cos w)
* air attenuation        A = exp(−μ_air d)
* swept volume per frame d³s = |m̂·(ŝ₀ × r̂)| Ω Δφ(rad) / λ³          (Å⁻³)

The expected counts of a pixel are t·K·I with K = Ω·P·E·A. Attenuation coefficients come
from xraydb (Elam tables) at the beam energy; μ in 1/mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PixelCorrections", "attenuation_coefficient", "pixel_corrections", "swept_volume"]

HC_KEV_ANGSTROM = 12.398419843320026
_DENSITY = {"Si": 2.329, "CdTe": 5.85, "GaAs": 5.3176, "Ge": 5.323, "air": 0.001205}


def attenuation_coefficient(material: str, wavelength: float) -> float:
    """Linear attenuation coefficient μ (1/mm) of ``material`` ("Si", "CdTe", "GaAs", "air")
    at wavelength λ (Å), from xraydb's total cross sections and standard densities.

    Memoised in the user's cache (:mod:`.user_cache`) under the xraydb version, material, density
    and energy: importing xraydb (it loads scipy.interpolate and SQLAlchemy) takes about a second,
    longer than the rest of the per-pixel corrections."""
    from importlib.metadata import version  # noqa: PLC0415

    from .user_cache import cached_value  # noqa: PLC0415

    name = {"silicon": "Si"}.get(material.lower(), material)
    if name not in _DENSITY:
        raise ValueError(f"no density known for sensor material {material!r}; use one of {sorted(_DENSITY)}")
    energy_ev = HC_KEV_ANGSTROM / wavelength * 1000.0

    def mu():
        import xraydb  # noqa: PLC0415

        return float(xraydb.material_mu(name, energy_ev, density=_DENSITY[name])) / 10.0

    key = f"xraydb {version('xraydb')} material_mu/10 {name} {_DENSITY[name]!r} g/cm3 {energy_ev!r} eV"
    return cached_value(key, mu)


@dataclass(frozen=True)
class PixelCorrections:
    """Per-pixel arrays (flattened over the selected pixels)."""

    solid_angle: np.ndarray
    polarization: np.ndarray
    efficiency: np.ndarray
    air: np.ndarray
    swept_factor: np.ndarray  # |m̂·(ŝ₀ × r̂)|·Ω/λ³ ; times Δφ (rad) gives d³s

    @property
    def product(self) -> np.ndarray:
        """K = Ω·P·E·A."""
        return self.solid_angle * self.polarization * self.efficiency * self.air


def pixel_corrections(positions: np.ndarray, panel, beam, rotation_axis=None, air: bool = True) -> PixelCorrections:
    """Correction factors for pixel centres ``positions`` (…, 3) mm of ``panel``."""
    positions = np.asarray(positions, dtype=np.float64)
    d = np.linalg.norm(positions, axis=-1)
    unit = positions / d[..., None]
    cos_w = np.abs(unit @ panel.normal)
    px, py = panel.pixel_size
    solid_angle = px * py * cos_w / d**2
    s0_hat = beam.direction
    e1 = np.cross(s0_hat, beam.polarization_normal)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(s0_hat, e1)
    p = beam.polarization_fraction
    polarization = p * (1 - (unit @ e1) ** 2) + (1 - p) * (1 - (unit @ e2) ** 2)
    if panel.thickness > 0:
        mu = attenuation_coefficient(panel.material, beam.wavelength)
        efficiency = 1 - np.exp(-mu * panel.thickness / cos_w)
    else:
        efficiency = np.ones_like(d)
    air_factor = np.exp(-attenuation_coefficient("air", beam.wavelength) * d) if air else np.ones_like(d)
    if rotation_axis is None:
        swept = np.zeros_like(d)
    else:
        m = np.asarray(rotation_axis, dtype=np.float64)
        swept = np.abs(np.cross(s0_hat, unit) @ (m / np.linalg.norm(m))) * solid_angle / beam.wavelength**3
    return PixelCorrections(solid_angle, polarization, efficiency, air_factor, swept)


def swept_volume(corrections: PixelCorrections, dphi_deg: float) -> np.ndarray:
    """d³s (Å⁻³) swept by each pixel in one frame of width ``dphi_deg`` degrees."""
    return corrections.swept_factor * np.deg2rad(abs(dphi_deg))
