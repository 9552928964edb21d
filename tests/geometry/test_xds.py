import numpy as np
import pytest

from gpudiffuse.geometry.dials import load_dials
from gpudiffuse.geometry.vectors import fractional_hkl, pixel_s_vectors
from gpudiffuse.geometry.xds import load_xds, parse_xds_inp, parse_xparm


def test_keyword_parser_handles_several_per_line_comments_and_repeats():
    text = """NX=2463 NY=2527 QX=0.172 QY=0.172 ! comment ORGX=1
UNTRUSTED_RECTANGLE= 1 10 1 20
UNTRUSTED_RECTANGLE= 30 40 50 60
X-RAY_WAVELENGTH= 0.9795
"""
    kw = parse_xds_inp(text)
    assert kw["NX"] == ["2463"] and kw["QY"] == ["0.172"]
    assert "ORGX" not in kw
    assert kw["UNTRUSTED_RECTANGLE"] == ["1 10 1 20", "30 40 50 60"]
    assert kw["X-RAY_WAVELENGTH"] == ["0.9795"]


def test_xds_and_dials_give_the_same_hkl_for_every_pixel(tiny_dataset):
    xds = load_xds(str(tiny_dataset))[0]
    dials = load_dials(str(tiny_dataset / "experiments.expt"))[0]
    s_xds = pixel_s_vectors(xds.panel, xds.beam)
    s_dials = pixel_s_vectors(dials.panel, dials.beam)
    for z in (0, 5, xds.scan.num_frames - 1):
        diff = fractional_hkl(s_xds, xds.setting_matrix(z)) - fractional_hkl(s_dials, dials.setting_matrix(z))
        assert np.abs(diff).max() < 1e-6
    assert xds.images == dials.images


def test_xds_pixel_origin_convention(tiny_dataset):
    """XDS: the point at detector coordinates (ORGX, ORGY) is the foot of the perpendicular from the
    crystal, at F·N; the centre of the pixel with 0-based index i has X = i + 1 (dxtbx's +0.5 rule:
    ORGX = x_mm / px + 0.5 with x_mm measured from the corner of the first pixel)."""
    xp = parse_xparm(str(tiny_dataset / "GXPARM.XDS"))
    panel = load_xds(str(tiny_dataset))[0].panel
    foot = panel.pixel_positions(np.array(xp["orgx"] - 1), np.array(xp["orgy"] - 1))
    np.testing.assert_allclose(foot, xp["distance"] * xp["detector_normal"], atol=1e-6)
    x_mm = np.dot(foot - panel.origin, panel.fast_axis)
    assert x_mm / panel.pixel_size[0] + 0.5 == pytest.approx(xp["orgx"], abs=1e-6)


def test_xparm_wins_over_nominal_xds_inp_values(tiny_dataset):
    # the simulated XDS.INP carries deliberately wrong nominal ORGX/distance; XPARM must be used
    sweep = load_xds(str(tiny_dataset))[0]
    xp = parse_xparm(str(tiny_dataset / "GXPARM.XDS"))
    assert abs(np.dot(sweep.panel.origin, sweep.panel.normal)) == pytest.approx(xp["distance"], rel=1e-9)
    assert sweep.untrusted == (("rectangle", (239.0, 245.0, 188.0, 194.0)),)
    assert sweep.panel.trusted_range[1] == 1048500


def test_integrate_lp_batches_override_geometry(tiny_copy):
    lp = """
 PROCESSING OF IMAGES        1 ...       6
 DETECTOR ORIGIN (PIXELS) AT                     250.00       80.00
 CRYSTAL TO DETECTOR DISTANCE (mm)        81.00
 PROCESSING OF IMAGES        7 ...      12
 DETECTOR ORIGIN (PIXELS) AT                     251.00       81.00
 CRYSTAL TO DETECTOR DISTANCE (mm)        82.00
"""
    (tiny_copy / "INTEGRATE.LP").write_text(lp)
    sweeps = load_xds(str(tiny_copy))
    assert [s.scan.image_range for s in sweeps] == [(1, 6), (7, 12)]
    distances = [abs(np.dot(s.panel.origin, s.panel.normal)) for s in sweeps]
    assert distances == pytest.approx([81.0, 82.0])
    assert sweeps[1].scan.oscillation[0] == pytest.approx(sweeps[0].scan.oscillation[0] + 6 * 0.5)
