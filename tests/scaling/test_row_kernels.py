"""The compiled row sums of a scaling design against plain NumPy expressions of the same sums."""

import numpy as np
import pytest

from gpudiffuse.scaling import row_kernels

OFFSETS = np.array([0, 1, 5, 6, 30, 31, 35, 36], np.int32)  # the corners of a 2×2×2 cell


@pytest.fixture
def rows():
    """Row i interpolates nodes node_i + OFFSETS with the weights (N, 8); the (N, 8) node array."""
    rng = np.random.default_rng(11)
    n, n_nodes = 50_003, 97  # not a multiple of the partitions
    node = rng.integers(0, n_nodes - OFFSETS[-1], size=n).astype(np.int32)
    weights = rng.random((n, 8))
    weights[rng.random((n, 8)) < 0.1] = 0.0
    return node, weights, rng.random(n), n_nodes, node[:, None] + OFFSETS


def test_node_sums_are_bincounts_of_the_row_terms(rows):
    node, weights, row_weight, n, index = rows
    for power in (1, 2):
        want = np.bincount(index.ravel(), weights=(row_weight[:, None] * weights**power).ravel(), minlength=n)
        np.testing.assert_allclose(row_kernels.node_sums(node, OFFSETS, weights, row_weight, n, power), want,
                                   rtol=1e-12)


def test_radial_sums_pool_c_terms_by_their_s_node(rows):
    node, weights, _, n_a, index = rows
    rng = np.random.default_rng(12)
    ns, nzc, n_batches = 5, 3, 2
    c_offsets = np.array([0, 1, nzc, nzc + 1], np.int32)
    c_node = ((rng.integers(0, n_batches, len(node)) * ns + rng.integers(0, ns - 1, len(node))) * nzc
              + rng.integers(0, nzc - 1, len(node))).astype(np.int32)
    ic = c_node[:, None] + c_offsets
    wc = rng.random((len(node), 4))
    node_sum, bins, overall = row_kernels.radial_sums(c_node, c_offsets, wc, node, OFFSETS, weights, ns, nzc, n_a)
    s_node = (ic // nzc) % ns
    want_node = np.zeros((ns, n_a))
    for kc in range(4):
        np.add.at(want_node, (np.repeat(s_node[:, kc], 8), index.ravel()), (wc[:, kc:kc + 1] * weights).ravel())
    np.testing.assert_allclose(node_sum, want_node, rtol=1e-12)
    np.testing.assert_allclose(bins, np.bincount(s_node.ravel(), weights=wc.ravel(), minlength=ns), rtol=1e-12)
    np.testing.assert_allclose(overall, np.bincount(index.ravel(), weights=weights.ravel(), minlength=n_a), rtol=1e-12)


def test_touched_nodes_order_and_interpolation(rows):
    node, weights, values, n, index = rows
    weights = np.where(index == 40, 0.0, weights)  # node 40 only ever with weight 0: not touched
    want = np.zeros(n, bool)
    want[index[weights > 0]] = True
    assert not want[40] and want[41]
    np.testing.assert_array_equal(row_kernels.touched_nodes(node, OFFSETS, weights, n), want)

    group = node.astype(np.int64)
    np.testing.assert_array_equal(row_kernels.grouped_order(group, n), np.argsort(group, kind="stable"))

    table = np.random.default_rng(13).normal(size=n)
    for width in (2, 4, 8):  # the same sum order as NumPy: equal to the last bit
        np.testing.assert_array_equal(row_kernels.interpolated(table, node, OFFSETS[:width], weights[:, :width]),
                                      (table[index[:, :width]] * weights[:, :width]).sum(axis=1))
