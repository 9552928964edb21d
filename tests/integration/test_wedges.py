"""Wedges by rotation angle (DESIGN §8), chunks that never straddle a wedge."""

from types import SimpleNamespace

import numpy as np
import pytest

from gpudiffuse.errors import GridError
from gpudiffuse.integration import IntegrationParameters, wedge_numbers
from gpudiffuse.integration.driver import chunk_plan


def scan(dphi, n):
    return SimpleNamespace(oscillation=(10.0, dphi), is_still=dphi == 0, num_frames=n)


def test_wedges_follow_the_rotation_not_the_frame_rate():
    params = IntegrationParameters(wedge_degrees=2.0)
    fine = wedge_numbers(scan(0.1, 3600), np.arange(3600), params)
    coarse = wedge_numbers(scan(0.5, 720), np.arange(720), params)
    assert len(np.unique(fine)) == 180 == len(np.unique(coarse))  # 360° in 2° wedges either way
    assert np.all(np.bincount(fine) == 20) and np.all(np.bincount(coarse) == 4)


def test_wedge_wider_than_a_frame_and_stills():
    wide = wedge_numbers(scan(3.0, 10), np.arange(10), IntegrationParameters(wedge_degrees=2.0))
    np.testing.assert_array_equal(wide, np.arange(10))  # at least one frame per wedge
    stills = wedge_numbers(scan(0.0, 7), np.arange(7), IntegrationParameters())
    np.testing.assert_array_equal(stills, np.arange(7))
    frames = wedge_numbers(scan(0.1, 12), np.arange(12), IntegrationParameters(wedge_frames=5))
    np.testing.assert_array_equal(frames, [0] * 5 + [1] * 5 + [2] * 2)


def test_chunks_stay_inside_wedges():
    wedges = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2])
    plan = chunk_plan(wedges, np.arange(9), 2)
    assert [(w, list(c)) for w, c in plan] == [(0, [0, 1]), (0, [2]), (1, [3, 4]), (1, [5, 6]), (1, [7]), (2, [8])]


@pytest.mark.parametrize("bad", [dict(wedge_degrees=0), dict(wedge_degrees=float("nan")), dict(wedge_frames=0),
                                 dict(histogram_max=0)])
def test_bad_wedge_options_are_refused(bad):
    with pytest.raises(GridError):
        IntegrationParameters(**bad)
