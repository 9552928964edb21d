"""The compiled row sums of a scaling design against plain NumPy expressions of the same sums."""

import numpy as np
import pytest

from gpudiffuse.scaling import row_kernels


@pytest.fixture
def rows():
    rng = np.random.default_rng(11)
    n, n_nodes = 50_003, 97  # not a multiple of the partitions
    index = rng.integers(0, n_nodes, size=(n, 8)).astype(np.int32)
    weights = rng.random((n, 8))
    weights[rng.random((n, 8)) < 0.1] = 0.0
    return index, weights, rng.random(n), n_nodes


def test_node_sums_are_bincounts_of_the_row_terms(rows):
    index, weights, row_weight, n = rows
    for power in (1, 2):
        want = np.bincount(index.ravel(), weights=(row_weight[:, None] * weights**power).ravel(), minlength=n)
        np.testing.assert_allclose(row_kernels.node_sums(index, weights, row_weight, n, power), want, rtol=1e-12)


def test_radial_sums_pool_c_terms_by_their_s_node(rows):
    index, weights, _, n_a = rows
    rng = np.random.default_rng(12)
    ns, nzc, n_batches = 5, 3, 2
    ic = rng.integers(0, n_batches * ns * nzc, size=(len(index), 4)).astype(np.int32)
    wc = rng.random((len(index), 4))
    node, bins, overall = row_kernels.radial_sums(ic, wc, index, weights, ns, nzc, n_a)
    s_node = (ic // nzc) % ns
    want_node = np.zeros((ns, n_a))
    for kc in range(4):
        np.add.at(want_node, (np.repeat(s_node[:, kc], 8), index.ravel()), (wc[:, kc:kc + 1] * weights).ravel())
    np.testing.assert_allclose(node, want_node, rtol=1e-12)
    np.testing.assert_allclose(bins, np.bincount(s_node.ravel(), weights=wc.ravel(), minlength=ns), rtol=1e-12)
    np.testing.assert_allclose(overall, np.bincount(index.ravel(), weights=weights.ravel(), minlength=n_a), rtol=1e-12)


def test_touched_nodes_offsets_order_and_interpolation(rows):
    index, weights, values, n = rows
    want = np.zeros(n, bool)
    want[index[weights > 0]] = True
    want[0] = False
    weights = np.where(index == 0, 0.0, weights)  # node 0 only ever with weight 0: not touched
    np.testing.assert_array_equal(row_kernels.touched_nodes(index, weights, n), want)

    cell = np.arange(len(index))[:, None] + np.array([0, 1, 5, 6])
    assert row_kernels.fixed_offsets(cell)
    cell[7, 2] += 1
    assert not row_kernels.fixed_offsets(cell)

    group = index[:, 0].astype(np.int64)
    np.testing.assert_array_equal(row_kernels.grouped_order(group, n), np.argsort(group, kind="stable"))

    table = np.random.default_rng(13).normal(size=n)
    for width in (2, 4, 8):  # the same sum order as NumPy: equal to the last bit
        np.testing.assert_array_equal(row_kernels.interpolated(table, index[:, :width], weights[:, :width]),
                                      (table[index[:, :width]] * weights[:, :width]).sum(axis=1))
