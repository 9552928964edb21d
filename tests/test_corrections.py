import numpy as np
import pytest

from gpudiffuse.corrections import attenuation_coefficient, pixel_corrections, swept_volume
from gpudiffuse.geometry.model import Beam, Panel
from gpudiffuse.geometry.vectors import pixel_s_vectors


def flat_panel(n=101, px=0.1, distance=100.0, thickness=0.45):
    half = n * px / 2
    return Panel(origin=[-half, -half, distance], fast_axis=[1, 0, 0], slow_axis=[0, 1, 0], pixel_size=(px, px),
                 image_size=(n, n), thickness=thickness, material="Si")


def test_solid_angle_at_normal_incidence_and_obliquity():
    panel = flat_panel()
    beam = Beam(direction=[0, 0, 1], wavelength=1.0)
    pos = panel.pixel_positions()
    c = pixel_corrections(pos, panel, beam, air=False)
    centre = c.solid_angle[50, 50]
    assert centre == pytest.approx(0.1 * 0.1 / 100.0**2, rel=1e-12)
    d = np.linalg.norm(pos[0, 0])
    assert c.solid_angle[0, 0] == pytest.approx(0.01 * (100 / d) / d**2, rel=1e-12)


def test_polarization_in_and_perpendicular_to_the_plane():
    panel = flat_panel(n=3, px=100.0)  # pixels at x = ±100 and y = ±100 mm
    beam = Beam(direction=[0, 0, 1], wavelength=1.0, polarization_fraction=1.0, polarization_normal=[0, 1, 0])
    pos = panel.pixel_positions()
    c = pixel_corrections(pos, panel, beam, air=False)
    # E along x: a pixel at 45° 2θ in the x-z plane sees cos²(2θ); in the y-z plane nothing is lost
    assert c.polarization[1, 2] == pytest.approx(0.5, rel=1e-12)   # (x=100, z=100): 1 − sin²45°
    assert c.polarization[2, 1] == pytest.approx(1.0, rel=1e-12)   # (y=100)
    unpolarized = pixel_corrections(pos, panel, Beam(direction=[0, 0, 1], wavelength=1.0, polarization_fraction=0.5))
    assert unpolarized.polarization[1, 2] == pytest.approx((1 + 0.5) / 2, rel=1e-12)


def test_efficiency_goes_to_one_for_thick_sensor_and_matches_beer_lambert():
    beam = Beam(direction=[0, 0, 1], wavelength=1.0)
    thick = pixel_corrections(flat_panel(thickness=100.0).pixel_positions(), flat_panel(thickness=100.0), beam)
    assert np.allclose(thick.efficiency, 1.0)
    mu = attenuation_coefficient("Si", 1.0)
    assert 3.5 < mu < 5.0  # Si at 12.4 keV: μ/ρ ≈ 18 cm²/g, ρ = 2.33 g/cm³ → about 4.2 /mm
    thin = pixel_corrections(flat_panel().pixel_positions(), flat_panel(), beam)
    assert thin.efficiency[50, 50] == pytest.approx(1 - np.exp(-mu * 0.45), rel=1e-9)
    assert thin.air[50, 50] == pytest.approx(np.exp(-attenuation_coefficient("air", 1.0) * 100.0), rel=1e-12)


def test_swept_volume_over_full_rotation_is_twice_the_shell_volume():
    """Over 360° every reciprocal point of the shell crosses the Ewald sphere twice, except in the
    blind region (angle to the axis χ with sin χ < sin θ = λ|s|/2, a fraction 1 − cos θ of each
    sphere), so Σ d³s over a complete ring of pixels = 2 ∫ 4π s² cos θ(s) ds."""
    from scipy.integrate import quad

    wavelength = 1.0
    panel = flat_panel(n=1201, px=0.25, distance=100.0)
    beam = Beam(direction=[0, 0, 1], wavelength=wavelength)
    pos = panel.pixel_positions()
    c = pixel_corrections(pos, panel, beam, rotation_axis=[1, 0, 0])
    s_norm = np.linalg.norm(pixel_s_vectors(panel, beam), axis=-1)
    s1, s2 = 0.15, 0.4
    ring = (s_norm >= s1) & (s_norm < s2)
    total = swept_volume(c, 360.0)[ring].sum()
    shell, _ = quad(lambda s: 4 * np.pi * s**2 * np.sqrt(1 - (wavelength * s / 2) ** 2), s1, s2)
    assert total == pytest.approx(2 * shell, rel=0.01)
    assert abs(total / (2 * 4 / 3 * np.pi * (s2**3 - s1**3)) - 1) > 0.005  # the blind region is resolved
