"""The statistical filter inside the pass (integration/bragg_filter.py): run on each wedge as the
pass completes it, with its histograms dropped at once, it gives what filtering every wedge after
the pass from the kept histograms gives, also when the wedges are integrated in separate blocks
(a wedge's neighbours then lie in another block)."""

from dataclasses import replace

import numpy as np
import pytest

from gpudiffuse.integration import IntegrationParameters, integrate_sweep
from gpudiffuse.integration.bragg_filter import HISTOGRAM_COLUMNS, apply_statistical_filter, move_flagged
from gpudiffuse.integration.driver import wedge_blocks
from gpudiffuse.integration.record import AccumulatorRecord, IntegrationResult
from gpudiffuse.simulate import simulate_dataset

from engine_helpers import assert_records_equal, tiny_sweep

NDIV = (3, 3, 3)
KEPT = IntegrationParameters(ndiv=NDIV, chunk_size=2, histogram_max=30)  # histograms returned
IN_PASS = replace(KEPT, filter_ndiv=NDIV)  # the filter's grid set: filtered wedge by wedge


@pytest.fixture(scope="module")
def low_dose(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("lowdose") / "data")
    simulate_dataset(data, "tiny", scale=8e5, progress=False)  # a few counts per pixel-frame
    sweep, _, _, pixels, grid, *_ = tiny_sweep(data)
    return sweep, pixels, grid


def test_filtering_in_the_pass_equals_filtering_afterwards(low_dose):
    sweep, pixels, grid = low_dose
    after = integrate_sweep(sweep, pixels, grid, None, None, KEPT, "cpu")
    assert "count_histogram" in after.diffuse.columns and not after.filter_flags
    blocks = wedge_blocks(sweep, IN_PASS, 2)
    assert len(blocks) == 2
    during = IntegrationResult.sum([integrate_sweep(sweep, pixels, grid, None, None, IN_PASS, "cpu", frames=frames)
                                    for frames in blocks])
    assert not set(HISTOGRAM_COLUMNS) & set(during.diffuse.columns)
    assert len(during.filter_flags) == len(np.unique(after.diffuse.columns["wedge"])) >= 3

    expected = apply_statistical_filter(after.diffuse.rows(), after.excluded.rows(), NDIV, NDIV)
    got = move_flagged(during.diffuse.rows(), during.excluded.rows(), NDIV, during.filter_flags, NDIV)
    for e, g in zip(expected[:2], got[:2]):
        assert_records_equal(AccumulatorRecord(g), AccumulatorRecord(e), float_rtol=0)
    assert got[2]["per_wedge"] == expected[2]["per_wedge"]
    moved = sum(w["moved"] for w in got[2]["per_wedge"].values())
    assert 0 < moved < 0.2 * len(after.diffuse)
