import gemmi
import numpy as np
import pytest

from gpudiffuse.errors import SymmetryError
from gpudiffuse.merge import MergeParameters, check_grid_symmetry, laue_operators, map_to_asu, merge

GROUPS = ["P 1", "P 1 2 1", "C 1 2 1", "P 21 21 21", "I 2 2 2", "P 4", "P 41 21 2", "P 3", "P 31 2 1", "P 3 1 2",
          "P 61", "P 6 2 2", "H 3", "P 2 3", "I 4 3 2"]


@pytest.mark.parametrize("symbol", GROUPS)
def test_asu_mapping_agrees_with_gemmi(symbol):
    sg = gemmi.SpaceGroup(symbol)
    rng = np.random.default_rng(1)
    hkl = rng.integers(-9, 10, size=(3000, 3))
    asu, which = map_to_asu(hkl, sg, (1, 1, 1))
    asu_obj = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    expected = np.array([asu_obj.to_asu([int(v) for v in h], ops)[0] for h in hkl])
    np.testing.assert_array_equal(asu, expected)


@pytest.mark.parametrize("symbol", GROUPS)
def test_asu_mapping_at_ndiv_3_is_consistent_with_integer_mapping(symbol):
    sg = gemmi.SpaceGroup(symbol)
    rng = np.random.default_rng(2)
    hkl = rng.integers(-6, 7, size=(500, 3))
    asu1, _ = map_to_asu(hkl, sg, (1, 1, 1))
    asu3, _ = map_to_asu(3 * hkl, sg, (3, 3, 3))
    np.testing.assert_array_equal(asu3, 3 * asu1)
    # all symmetry mates of a voxel land on the same ASU voxel
    voxels = rng.integers(-20, 21, size=(200, 3))
    ops = laue_operators(sg)
    images = np.concatenate([voxels @ op for op in ops])
    mapped, _ = map_to_asu(images, sg, (3, 3, 3))
    base, _ = map_to_asu(voxels, sg, (3, 3, 3))
    np.testing.assert_array_equal(mapped, np.tile(base, (len(ops), 1)))


def test_incompatible_ndiv_is_refused():
    with pytest.raises(SymmetryError, match="incompatible with Laue group 4/m"):
        check_grid_symmetry(gemmi.SpaceGroup("P 4"), (3, 5, 3))
    check_grid_symmetry(gemmi.SpaceGroup("P 4"), (3, 3, 5))
    check_grid_symmetry(gemmi.SpaceGroup("P 21 21 21"), (2, 3, 5))


def test_weighted_mean_outliers_and_half_sets():
    sg = gemmi.SpaceGroup("P 2 2 2")
    rng = np.random.default_rng(3)
    n_vox, reps = 400, 6
    base = rng.integers(0, 15, size=(n_vox, 3)) + np.array([1, 1, 1])
    truth = rng.uniform(10, 20, n_vox)
    ops = laue_operators(sg)
    rows = []
    for r in range(reps):
        op = ops[r % len(ops)]
        sigma = rng.uniform(0.5, 1.5, n_vox)
        rows.append((base @ op, truth + rng.normal(0, sigma), sigma))
    H = np.concatenate([r[0] for r in rows])
    values = np.concatenate([r[1] for r in rows])
    sigma = np.concatenate([r[2] for r in rows])
    values[5] += 500.0  # one gross outlier
    table = {"H": H[:, 0], "K": H[:, 1], "L": H[:, 2], "rate": values, "sigma": sigma}
    merged, stats, rejected = merge(table, sg, (1, 1, 1), np.eye(3) * 1e-3, MergeParameters(outlier_k=5.0))
    assert rejected >= 1
    assert len(merged["intensity"]) == len(np.unique(base, axis=0))
    order = np.lexsort((merged["L"], merged["K"], merged["H"]))
    # inverse-variance mean, compared with an explicit loop on a few voxels
    for i in order[:5]:
        target = np.array([merged["H"][i], merged["K"][i], merged["L"][i]])
        asu, _ = map_to_asu(H, sg, (1, 1, 1))
        sel = np.all(asu == target, axis=1) & (np.abs(values - 15) < 100)
        w = 1 / sigma[sel] ** 2
        assert merged["intensity"][i] == pytest.approx(np.sum(w * values[sel]) / w.sum(), rel=1e-12)
        assert merged["sigma"][i] == pytest.approx(w.sum() ** -0.5, rel=1e-12)
    assert np.nanmin(stats["cc_half"]) > 0.8


def test_statistics_table_flags_shells_without_signal():
    import numpy as np

    from gpudiffuse.steps.merge import format_statistics

    stats = {k: np.array([1.0, 1.0, 1.0]) for k in ("d_max", "d_min", "n", "mean_I", "mean_I_over_sigma", "cc_star",
                                                     "r_split")}
    stats["cc_half"] = np.array([0.9, -0.1, np.nan])
    lines = format_statistics(stats).splitlines()[1:]
    assert ["<- CC1/2 undefined or below 0" in line for line in lines] == [False, True, True]
