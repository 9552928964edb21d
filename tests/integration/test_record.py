"""The accumulator record: schema shared with the CUDA header, canonical summation."""

import re

import numpy as np
import pytest

from gpudiffuse.backend import kernel_dir
from gpudiffuse.integration.record import FIELDS, KEY, AccumulatorRecord, float_fields, int_fields


def test_cuda_field_positions_follow_the_schema():
    header = (kernel_dir() / "gd_record.cuh").read_text()
    ints = {m.group(1).lower(): int(m.group(2)) for m in re.finditer(r"GD_I_(\w+) = (\d+)", header)}
    floats = {m.group(1).lower(): int(m.group(2)) for m in re.finditer(r"GD_F_(\w+) = (\d+)", header)}
    everything = ("background", "histogram")
    assert ints == {name: i for i, name in enumerate(int_fields(everything))}
    assert floats == {name: i for i, name in enumerate(float_fields(everything))}
    # optional fields come last, so the positions of the others never depend on the options
    assert int_fields() == int_fields(everything)[: len(int_fields())]
    assert float_fields() == float_fields(everything)[: len(float_fields())]
    assert all(f.unit for f in FIELDS)
    from gpudiffuse.integration import PROFILE_BINS

    assert re.search(r"#define GD_PROFILE_BINS (\d+)", header).group(1) == str(PROFILE_BINS)


def _random_rows(rng, n, n_keys, stretch=1):
    keys = rng.integers(0, n_keys, size=n)
    return {"batch": (keys % 2).astype(np.int32), "wedge": (keys // 2 % 3 * stretch).astype(np.int32),
            "H": (keys // 6 % 5 - 2).astype(np.int32) * stretch, "K": (keys // 30 % 4 * stretch).astype(np.int32),
            "L": (keys // 120 - 1).astype(np.int32) * stretch,
            "counts": rng.integers(0, 2**40, size=n), "pixels": rng.integers(1, 9, size=n),
            "kt_sum": rng.random(n), "count_histogram": rng.integers(0, 5, size=(n, 4))}


@pytest.mark.parametrize("stretch", [1, 10**8], ids=["radix-code", "lexsort"])
def test_sum_is_exact_and_independent_of_order(stretch):
    """Keys spread over 10⁸ per column overflow the one-integer sort code: the lexsort path."""
    rng = np.random.default_rng(3)
    rows = _random_rows(rng, 5000, 600, stretch)
    whole = AccumulatorRecord.from_columns(rows)
    # independent expectation: a dictionary keyed by the voxel key
    expected = {}
    for i in range(5000):
        key = tuple(int(rows[k][i]) for k in KEY)
        c, p, h = expected.get(key, (0, 0, np.zeros(4, np.int64)))
        expected[key] = (c + int(rows["counts"][i]), p + int(rows["pixels"][i]), h + rows["count_histogram"][i])
    keys = sorted(expected)
    assert len(whole) == len(keys)
    got = list(zip(*(whole.columns[k].tolist() for k in KEY)))
    assert got == keys  # canonical order: lexicographic in (batch, wedge, H, K, L)
    np.testing.assert_array_equal(whole.columns["counts"], [expected[k][0] for k in keys])
    np.testing.assert_array_equal(whole.columns["pixels"], [expected[k][1] for k in keys])
    np.testing.assert_array_equal(whole.columns["count_histogram"], [expected[k][2] for k in keys])
    # split into parts, sum in another order: integers identical, floats to rounding
    parts = np.array_split(rng.permutation(5000), 4)
    records = [AccumulatorRecord.from_columns({k: v[p] for k, v in rows.items()}) for p in parts]
    total = records[3] + records[1] + records[0] + records[2]
    for k in whole.columns:
        if whole.columns[k].dtype.kind in "iu":
            np.testing.assert_array_equal(total.columns[k], whole.columns[k])
        else:
            np.testing.assert_allclose(total.columns[k], whole.columns[k], rtol=1e-13)


def test_empty_records_are_neutral():
    rng = np.random.default_rng(4)
    record = AccumulatorRecord.from_columns(_random_rows(rng, 50, 20))
    empty = AccumulatorRecord.empty()
    assert len(empty) == 0
    assert (empty + record) is record and (record + empty) is record
