import numpy as np
import pytest

from gpudiffuse.errors import MaskError
from gpudiffuse.geometry.model import Panel
from gpudiffuse.masking.layout import layout_for_size
from gpudiffuse.masking.pixel import Beamstop, frame_valid, region_mask, static_pixel_mask


def panel(nx, ny):
    return Panel(origin=[0, 0, 100], fast_axis=[1, 0, 0], slow_axis=[0, 1, 0], pixel_size=(0.172, 0.172),
                 image_size=(nx, ny))


@pytest.mark.parametrize("size, family, modules", [
    ((2463, 2527), "Pilatus", (5, 12)), ((1475, 1679), "Pilatus", (3, 8)), ((487, 619), "Pilatus", (1, 3)),
    ((4150, 4371), "Eiger", (4, 8)), ((1030, 1065), "Eiger", (1, 2)),
])
def test_known_layouts_and_gap_pixel_counts(size, family, modules):
    layout = layout_for_size(size)
    assert layout.family == family and layout.modules == modules
    sensitive = modules[0] * modules[1] * layout.module_size[0] * layout.module_size[1]
    assert layout.gap_mask().sum() == sensitive
    ids = layout.module_ids()
    assert ids.max() == modules[0] * modules[1] - 1
    assert np.count_nonzero(ids == 0) == layout.module_size[0] * layout.module_size[1]


def test_unknown_size_has_no_layout():
    assert layout_for_size((1024, 1024)) is None


def test_pilatus_chip_borders():
    layout = layout_for_size((487, 195))
    keep = layout.chip_border_mask()
    # 7 internal chip borders along fast (2 pixel columns each), 1 along slow (2 rows)
    assert (~keep).all(axis=0).sum() == 14
    assert (~keep).all(axis=1).sum() == 2


def test_regions_and_beamstop():
    p = panel(487, 195)
    rect = region_mask(p.shape, "rectangle", (10, 19, 5, 9))
    assert rect.sum() == 10 * 5
    disc = region_mask(p.shape, "disc", (100, 100, 10))
    assert abs(disc.sum() - np.pi * 100) < 40
    quad = region_mask(p.shape, "quadrilateral", (0, 0, 99.5, 0, 99.5, 49.5, 0, 49.5))
    assert quad.sum() == 100 * 50
    stop = Beamstop.parse(disc="243,97,8", rectangle="240,246,97,194")
    mask = static_pixel_mask(p, np.zeros(p.shape, np.int32), (("rectangle", (0, 4, 0, 4)),), stop)
    assert not mask[97, 243] and not mask[150, 243] and not mask[2, 2] and mask[50, 50]
    with pytest.raises(MaskError, match="beamstop disc"):
        Beamstop.parse(disc="1,2")


def test_negative_first_frame_pixels_are_masked():
    p = panel(100, 80)
    first = np.zeros(p.shape, np.int32)
    first[3, 4] = -2
    mask = static_pixel_mask(p, first)
    assert not mask[3, 4] and mask.sum() == 100 * 80 - 1


def test_per_frame_validity():
    frames = np.array([[-1, 0, 5, 99, 100]])
    np.testing.assert_array_equal(frame_valid(frames, (0, 100)), [[False, True, True, True, False]])
