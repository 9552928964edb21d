import numpy as np
import pytest

from gpudiffuse.errors import GeometryError, SymmetryError
from gpudiffuse.geometry.model import Beam, Crystal, Goniometer, Panel, rotation_matrix, space_group_from
from gpudiffuse.geometry.vectors import edge_resolution, fractional_hkl, pixel_s_vectors, rays_to_pixels


def test_rotation_is_right_handed():
    r = rotation_matrix([0, 0, 1], 90)
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(rotation_matrix([1, 0, 0], 30) @ rotation_matrix([1, 0, 0], -30), np.eye(3), atol=1e-15)


def test_pixel_centre_convention():
    panel = Panel(origin=[-10, -5, 100], fast_axis=[1, 0, 0], slow_axis=[0, 1, 0], pixel_size=(0.1, 0.2),
                  image_size=(200, 50))
    pos = panel.pixel_positions()
    assert pos.shape == (50, 200, 3)
    np.testing.assert_allclose(pos[0, 0], [-10 + 0.05, -5 + 0.1, 100])
    np.testing.assert_allclose(pos[3, 7], [-10 + 7.5 * 0.1, -5 + 3.5 * 0.2, 100])


def test_s_vector_magnitude_is_two_sin_theta_over_lambda():
    beam = Beam(direction=[0, 0, 1], wavelength=1.2)
    panel = Panel(origin=[-20, -20, 150], fast_axis=[1, 0, 0], slow_axis=[0, 1, 0], pixel_size=(0.2, 0.2),
                  image_size=(200, 200))
    s = pixel_s_vectors(panel, beam)
    r = panel.pixel_positions()
    two_theta = np.arctan2(np.hypot(r[..., 0], r[..., 1]), r[..., 2])
    np.testing.assert_allclose(np.linalg.norm(s, axis=-1), 2 * np.sin(two_theta / 2) / 1.2, rtol=1e-12)


def test_fractional_hkl_inverts_setting_matrix():
    crystal = Crystal.from_real_space([40, 0, 0], [0, 50, 0], [0, 0, 60], "P 21 21 21")
    rng = np.random.default_rng(0)
    hkl = rng.normal(size=(100, 3)) * 5
    m = Goniometer().rotation(33.0) @ crystal.A
    np.testing.assert_allclose(fractional_hkl(hkl @ m.T, m), hkl, atol=1e-12)
    assert crystal.unit_cell.a == pytest.approx(40)


def test_edge_resolution_of_a_centred_square_detector():
    beam = Beam(direction=[0, 0, 1], wavelength=1.0)
    panel = Panel(origin=[-50, -50, 100], fast_axis=[1, 0, 0], slow_axis=[0, 1, 0], pixel_size=(0.1, 0.1),
                  image_size=(1000, 1000))
    d_corner, d_edge = edge_resolution(panel, beam)
    corner = np.arctan(np.hypot(49.95, 49.95) / 100)
    edge = np.arctan(np.hypot(0.05, 49.95) / 100)
    assert d_corner == pytest.approx(1 / (2 * np.sin(corner / 2)), rel=1e-9)
    assert d_edge == pytest.approx(1 / (2 * np.sin(edge / 2)), rel=1e-9)


def test_rays_to_pixels_round_trip():
    panel = Panel(origin=[-30, 20, 120], fast_axis=[1, 0.01, 0], slow_axis=[0, -1, 0.02], pixel_size=(0.172, 0.172),
                  image_size=(300, 200))
    fast, slow = np.meshgrid([0, 17.3, 250], [0, 40, 199])
    back = rays_to_pixels(panel, panel.pixel_positions(fast, slow))
    np.testing.assert_allclose(back[..., 0], fast, atol=1e-9)
    np.testing.assert_allclose(back[..., 1], slow, atol=1e-9)


def test_bad_model_values():
    with pytest.raises(GeometryError, match="wavelength"):
        Beam(direction=[0, 0, 1], wavelength=-1)
    with pytest.raises(GeometryError, match="beam direction"):
        Beam(direction=[0, 0, 0], wavelength=1)
    with pytest.raises(SymmetryError, match="unknown space group 'Q 7'"):
        space_group_from("Q 7")
    assert space_group_from("19").hm == "P 21 21 21"
    assert space_group_from(" P 4").hm == "P 4"
