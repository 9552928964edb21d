"""``gpudiffuse export``: each format re-read with an independent reader (gemmi, meshio, h5py)
gives the map's values at stated h, k, l, the documented placeholder where nothing was measured,
and the cell and origin that make a viewer show h, k, l correctly, for an orthorhombic processed
set and a synthetic monoclinic map."""

import math

import gemmi
import h5py
import numpy as np
import pytest

from gpudiffuse.cli import main
from gpudiffuse.merge import MergeParameters, map_to_asu, merge
from gpudiffuse.steps.keys import make_key
from gpudiffuse.steps.map import run_map


def _map(folder):
    with h5py.File(folder / "map.nxs") as f:
        data = f["entry/data"]
        return data["intensity"][()], data["intensity_errors"][()], [data[a][()] for a in "hkl"]


def _export(capsys, folder, *args):
    assert main(["export", str(folder), *args]) == 0
    return capsys.readouterr().out.strip().split("written ")[-1]


def _check_ccp4(path, intensity, axes, ndiv, cell, fill):
    ccp4 = gemmi.read_ccp4_map(str(path))
    grid = np.array(ccp4.grid, copy=False)
    expected = np.where(np.isfinite(intensity), intensity, fill).astype(np.float32)
    np.testing.assert_array_equal(grid, expected)
    # h = 0 at the origin: the start indices are the first voxel's H, K, L
    assert [ccp4.header_i32(w) for w in (5, 6, 7)] == [int(round(a[0] * n)) for a, n in zip(axes, ndiv)]
    # the cell as stored (float32 words 11-16; gemmi rounds the cell it reads to 5 decimals)
    return gemmi.UnitCell(*(ccp4.header_float(w) for w in range(11, 17)))


def test_every_format_gives_the_map_at_stated_hkl(processed_copy, capsys):
    intensity, sigma, axes = _map(processed_copy)
    ndiv = (3, 3, 3)
    measured = np.argwhere(np.isfinite(intensity))
    assert 1000 < len(measured) < intensity.size  # some voxels unmeasured: the placeholder is tested too

    # CCP4 and MRC: unmeasured → 0; cell N·a*/n with the reciprocal angles (I222: a* = 1/a)
    for fmt in ("ccp4", "mrc"):
        path = _export(capsys, processed_copy, "--format", fmt)
        assert path.endswith(f"map.{fmt}")
        cell = _check_ccp4(path, intensity, axes, ndiv, None, 0.0)
        for length, size, a, n in zip((cell.a, cell.b, cell.c), intensity.shape, (40, 48, 56), ndiv):
            assert length == pytest.approx(size / (a * n), rel=1e-6)
        assert (cell.alpha, cell.beta, cell.gamma) == pytest.approx((90, 90, 90))

    # a stated voxel: h, k, l = 1, 2/3, -1 (index H, K, L = 3, 2, -3)
    i, j, k = (np.searchsorted(ax, v) for ax, v in zip(axes, (1.0, 2 / 3, -1.0)))
    assert axes[0][i] == 1.0 and abs(axes[1][j] - 2 / 3) < 1e-12 and axes[2][k] == -1.0

    # VTK structured points (meshio): points in r.l.u. with h fastest; unmeasured stay NaN
    import meshio

    vtk = meshio.read(_export(capsys, processed_copy, "--format", "vtk"))
    values = vtk.point_data["intensity"].reshape(intensity.shape, order="F")
    np.testing.assert_array_equal(values, intensity.astype(np.float32))
    np.testing.assert_array_equal(vtk.point_data["sigma"].reshape(sigma.shape, order="F"), sigma.astype(np.float32))
    flat = np.ravel_multi_index((i, j, k), intensity.shape, order="F")
    np.testing.assert_allclose(vtk.points[flat], [1.0, 2 / 3, -1.0], atol=1e-6)

    # HDF5: float64 arrays, axes and attributes
    with h5py.File(_export(capsys, processed_copy, "--format", "hdf5")) as f:
        np.testing.assert_array_equal(f["intensity"][()], intensity)
        np.testing.assert_array_equal(f["sigma"][()], sigma)
        assert f["h"][i] == 1.0 and f.attrs["space_group"] == "I 2 2 2" and list(f.attrs["ndiv"]) == [3, 3, 3]
        assert f["intensity"].attrs["units"] == "counts / (s sr), relative scale"

    # MTZ: the merged ASU voxels at integer h, k, l, with σ and n
    with h5py.File(processed_copy / "merged.nxs") as f:
        merged = {c: f[f"entry/merged/{c}"][()] for c in ("h", "k", "l", "intensity", "sigma", "n")}
    mtz = gemmi.read_mtz_file(_export(capsys, processed_copy, "--format", "mtz"))
    assert mtz.spacegroup.hm == "I 2 2 2" and mtz.cell.parameters == pytest.approx((40, 48, 56, 90, 90, 90))
    data = np.array(mtz, copy=False)
    integer = np.all(np.abs(np.column_stack([merged["h"], merged["k"], merged["l"]]) % 1) < 1e-9, axis=1)
    assert len(data) == integer.sum() > 100
    rows = {tuple(int(x) for x in row[:3]): row[3:] for row in data}
    for h, k, l, value, error, n in zip(*(merged[c][integer] for c in ("h", "k", "l", "intensity", "sigma", "n"))):
        np.testing.assert_allclose(rows[(round(h), round(k), round(l))], [value, error, n], rtol=1e-6)
    bragg = gemmi.read_mtz_file(_export(capsys, processed_copy, "--format", "mtz", "--source", "bragg"))
    assert bragg.nreflections > 10


def test_export_refuses_to_overwrite_and_names_bad_choices(processed_copy, capsys):
    _export(capsys, processed_copy, "--format", "ccp4")
    assert main(["export", str(processed_copy), "--format", "ccp4"]) == 1
    assert "map.ccp4 already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(processed_copy), "--format", "ccp4", "--unmeasured", "-1", "--overwrite"]) == 0
    intensity, _, axes = _map(processed_copy)
    _check_ccp4(processed_copy / "map.ccp4", intensity, axes, (3, 3, 3), None, -1.0)
    assert main(["export", str(processed_copy), "--format", "vtk", "--source", "bragg"]) == 2
    assert "--source bragg: only --format mtz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(processed_copy), "--format", "pdb"])
    assert main(["export", str(processed_copy.parent / "nothing"), "--format", "hdf5"]) == 1
    assert "map.nxs does not exist" in capsys.readouterr().err
    assert not (processed_copy.parent / "nothing").exists()


def test_a_monoclinic_map_gets_the_reciprocal_cell(tmp_path, capsys):
    """P 1 2 1, a, b, c = 30, 40, 50 Å, β = 105°: a* = 1/(a sin β), b* = 1/b, c* = 1/(c sin β),
    β* = 180° − β; the MTZ keeps the direct cell."""
    from gpudiffuse.steps.merge import MergeResult, write_merged

    group = gemmi.SpaceGroup("P 1 2 1")
    cell = gemmi.UnitCell(30, 40, 50, 90, 105, 90)
    ndiv = (2, 2, 2)
    rng = np.random.default_rng(3)
    voxels = np.array(np.meshgrid(*(np.arange(-6, 7),) * 3, indexing="ij")).reshape(3, -1).T
    asu, _ = map_to_asu(voxels, group, ndiv)
    table = {"H": asu[:, 0], "K": asu[:, 1], "L": asu[:, 2], "rate": rng.random(len(asu)) + 1,
             "sigma": np.full(len(asu), 0.1)}
    metric = np.linalg.inv(np.array(cell.metric_tensor().as_mat33().tolist()))
    merged, stats, rejected = merge(table, group, ndiv, metric, MergeParameters(outlier_k=None))
    folder = tmp_path / "mono"
    folder.mkdir()
    result = MergeResult(merged, stats, rejected, None, "none", ndiv, group, cell.parameters)
    write_merged(str(folder / "merged.nxs"), result, make_key("merge", {}, {}))
    run_map(str(folder))
    intensity, _, axes = _map(folder)
    path = _export(capsys, folder, "--format", "ccp4")
    exported = _check_ccp4(path, intensity, axes, ndiv, None, 0.0)
    sin_beta = math.sin(math.radians(105))
    for length, size, star, n in zip((exported.a, exported.b, exported.c), intensity.shape,
                                     (1 / (30 * sin_beta), 1 / 40, 1 / (50 * sin_beta)), ndiv):
        assert length == pytest.approx(size * star / n, rel=1e-6)
    assert (exported.alpha, exported.beta, exported.gamma) == pytest.approx((90, 75, 90))
    # a stated voxel of the map: h, k, l = 1, -1/2, 2 is the merged value of its ASU mate
    i, j, k = (int(np.argmin(np.abs(ax - v))) for ax, v in zip(axes, (1.0, -0.5, 2.0)))
    mate, _ = map_to_asu(np.array([[2, -1, 4]]), group, ndiv)
    row = np.flatnonzero((merged["H"] == mate[0, 0]) & (merged["K"] == mate[0, 1]) & (merged["L"] == mate[0, 2]))
    assert np.array(gemmi.read_ccp4_map(path).grid, copy=False)[i, j, k] == np.float32(merged["intensity"][row[0]])
    mtz = gemmi.read_mtz_file(_export(capsys, folder, "--format", "mtz"))
    assert mtz.cell.parameters == pytest.approx((30, 40, 50, 90, 105, 90)) and mtz.spacegroup.hm == "P 1 2 1"
