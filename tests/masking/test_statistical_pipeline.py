"""The statistical filter inside ``process`` on simulated low-dose rotation data with known truth
(the filter's domain: a few counts per pixel, histograms 0–20): Bragg-peak counts excluded,
absences kept, and a map as close to the truth as the peak-cloud mask gives."""

import h5py
import numpy as np
import pytest

from gpudiffuse.cli import main
from gpudiffuse.simulate import compare_with_truth, load_model, simulate_dataset
from gpudiffuse.simulate_truth import bragg_counts_excluded
from gpudiffuse.steps.merge import read_merged

NDIV = np.array([3, 3, 3])


@pytest.fixture(scope="module")
def low_dose(tmp_path_factory):
    root = tmp_path_factory.mktemp("lowdose")
    data = str(root / "data")
    simulate_dataset(data, "tiny", scale=8e5, progress=False)  # 1/1000 of the tiny preset's dose
    outs = {}
    for method in ("peak-cloud", "statistical"):
        outs[method] = root / method
        extra = ["--filter-max-count", "30"]  # ignored by the peak-cloud run
        assert main(["-q", "--no-progress", "process", "--no-report", "--xds", data, "-o", str(outs[method]),
                     "--device", "cpu", "--scale", "none", "--bragg-mask", method, *extra]) == 0
    return data, outs


def _moved(out):
    with h5py.File(out / "integrate.nxs") as f:
        g = f["entry/statistical_filter"]
        return np.column_stack([g[f"moved_{k}"][()] for k in ("wedge", "H", "K", "L")]).astype(np.int64)


def test_bragg_peak_counts_are_excluded_and_absences_kept(low_dose):
    """Measured: 99.75 % of the Bragg-peak counts excluded."""
    data, outs = low_dose
    with h5py.File(outs["peak-cloud"] / "integrate.nxs") as f:  # the peak cloud needs no histograms
        assert '"histogram_max": null' in f["entry"].attrs["parameters"] and "count_histogram" not in f["entry/diffuse"]
    with h5py.File(outs["statistical"] / "integrate.nxs") as f:
        fractions = f["entry/statistical_filter/shells/fraction_moved"][()]
        assert f["entry"].attrs["parameters"].count('"histogram_max": 30') == 1  # --filter-max-count
    assert np.all(fractions < 0.06)  # a few per cent of the voxel-wedge rows per shell
    moved = _moved(outs["statistical"])
    (share,) = bragg_counts_excluded(data, moved, NDIV)  # every third frame
    assert share >= 0.99, share
    # voxels centred on systematically absent reflections (I 2 2 2: h + k + l odd) are hardly ever
    # excluded (measured 5 of the 541 moved integer-hkl rows: the noisiest clean voxels, see
    # test_statistical), the allowed ones often
    integer = moved[np.all(moved[:, 1:] % 3 == 0, axis=1), 1:] // 3
    absent = integer.sum(axis=1) % 2 == 1
    assert (~absent).sum() > 300 and absent.sum() <= 0.02 * len(absent)


def test_the_map_is_as_close_to_the_truth_as_with_the_peak_cloud(low_dose):
    """Per shell, CC with the voxel-averaged truth within 0.03 of the peak-cloud run's (measured
    differences ≤ 0.02; at this dose neither reaches a high CC: ⟨I/σ⟩ ≈ 3)."""
    data, outs = low_dose
    model = load_model(data)
    accuracy = {m: compare_with_truth(read_merged(str(o / "merged.nxs")).merged, model, tuple(NDIV))
                for m, o in outs.items()}
    for a, b in zip(accuracy["statistical"]["shells"], accuracy["peak-cloud"]["shells"]):
        assert a["cc"] >= b["cc"] - 0.03, (a, b)
    assert accuracy["statistical"]["overall_cc"] >= accuracy["peak-cloud"]["overall_cc"] - 0.02


def test_high_count_data_is_refused_with_a_reason(tiny_dataset, tmp_path, capsys):
    """The tiny preset has hundreds of counts per pixel-frame: every voxel has counts above
    c_max = 20, so the filter would exclude everything; the run says why and leaves nothing. (The
    rule: refused when more than half the voxel-wedge rows have counts above c_max; SNase's CCD
    stills, about 1e3 counts per pixel-frame, used to leave 4 of 456 069 rows and make a map.)"""
    out = tmp_path / "out"
    assert main(["process", "--no-report", "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu",
                 "--scale", "none", "--bragg-mask", "statistical"]) == 1
    err = capsys.readouterr().err
    assert "counts above c_max = 20 in" in err and "use --bragg-mask peak-cloud" in err
    assert not out.exists()


def test_a_finer_integration_grid_is_filtered_on_the_filter_grid(low_dose, tmp_path):
    """--ndiv 9 9 9 with --filter-ndiv 3 3 3: the 27 integration voxels of each filter voxel pool
    their histograms, which must equal what the pass at --ndiv 3 3 3 collected itself; so the
    filter removes the same filter voxels per wedge, and every moved 9-grid row lies in a filter
    voxel that the 3 3 3 run moved."""
    data, outs = low_dose
    out = tmp_path / "fine"
    assert main(["-q", "--no-progress", "import", "--xds", data, "-o", str(out)]) == 0
    assert main(["-q", "--no-progress", "integrate", str(out), "--ndiv", "9", "9", "9", "--filter-ndiv", "3", "3", "3",
                 "--device", "cpu", "--bragg-mask", "statistical", "--filter-max-count", "30"]) == 0

    def filter_record(path):
        with h5py.File(path / "integrate.nxs") as f:
            g = f["entry/statistical_filter"]
            table = {k: v[()] for k, v in g["per_wedge"].items()}
            moved = np.column_stack([g[f"moved_{k}"][()] for k in ("wedge", "H", "K", "L")]).astype(np.int64)
            return g.attrs["filter_ndiv"].tolist(), table, moved

    grid, fine, fine_moved = filter_record(out)
    coarse_grid, coarse, coarse_moved = filter_record(outs["statistical"])
    assert grid == coarse_grid == [3, 3, 3]
    for name in ("wedge", "filter_voxels", "removed", "overflow"):
        np.testing.assert_array_equal(fine[name], coarse[name], err_msg=name)
    assert fine["removed"].sum() > 0
    fine_moved[:, 1:] = (fine_moved[:, 1:] + 1) // 3  # F = ⌊(H + 1)/3⌋
    assert set(map(tuple, fine_moved)) == set(map(tuple, coarse_moved))


def test_a_coarser_integration_grid_is_the_filter_grid_added_up(low_dose, tmp_path):
    """--ndiv 1 1 1 with the filter's default grid, 3 3 3: the pass runs on 3 3 3, the filter there,
    and the rows are added up onto integer hkl. Against two independent passes: diffuse +
    excluded equals a 1 1 1 pass without any mask (counts and pixel-frames exactly, float sums
    to rounding), and the excluded counts are those the 3 3 3 run moved."""
    data, outs = low_dose
    runs = {}
    for name, mask in (("filtered", "statistical"), ("plain", "none")):
        runs[name] = tmp_path / name
        assert main(["-q", "--no-progress", "import", "--xds", data, "-o", str(runs[name])]) == 0
        assert main(["-q", "--no-progress", "integrate", str(runs[name]), "--ndiv", "1", "1", "1", "--device", "cpu",
                     "--bragg-mask", mask, "--filter-max-count", "30"]) == 0

    def tables(path):
        with h5py.File(path / "integrate.nxs") as f:
            return ({name: {k: v[()] for k, v in f[f"entry/{name}"].items()} for name in ("diffuse", "excluded")},
                    f["entry"].attrs["ndiv"].tolist())

    (filtered, ndiv), (plain, _) = tables(runs["filtered"]), tables(runs["plain"])
    assert ndiv == [1, 1, 1] and len(plain["excluded"].get("H", [])) == 0
    keys = ("batch", "wedge", "H", "K", "L")

    def by_key(rows, column):
        return {k: v for k, v in zip(zip(*(rows[c] for c in keys)), rows[column])}

    for column in ("counts", "pixels", "frame_sum", "kt_sum", "s_sum"):
        total = by_key(filtered["diffuse"], column)
        for key, value in by_key(filtered["excluded"], column).items():
            total[key] = total.get(key, 0) + value
        expected = by_key(plain["diffuse"], column)
        assert total.keys() == expected.keys()
        np.testing.assert_allclose([total[k] for k in expected], list(expected.values()), rtol=1e-12, err_msg=column)
    moved, _ = tables(outs["statistical"])
    assert filtered["excluded"]["counts"].sum() == moved["excluded"]["counts"].sum() > 0


def test_grids_that_do_not_nest_are_refused(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["process", "--no-report", "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu",
                 "--ndiv", "2", "2", "2", "--bragg-mask", "statistical"]) == 1
    assert "does not nest with the integration grid --ndiv 2 2 2" in capsys.readouterr().err and not out.exists()
    assert main(["process", "--no-report", "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu",
                 "--ndiv", "9", "9", "9", "--filter-ndiv", "9", "3", "2", "--bragg-mask", "statistical"]) == 1
    assert "--filter-ndiv 9 3 2: the statistical filter's grid and the integration grid" in capsys.readouterr().err
    assert not out.exists()


def test_wrong_geometry_the_filter_still_excludes_the_bragg_peaks(low_dose, tmp_path, caplog):
    """The rotation axis reversed (as in SNase's experiments-lunus-original/: the crystal turns the
    wrong way, 2·Δφ off by the end): strong pixels no longer index, the peak cloud says so and
    masks a broad cloud; the statistical filter needs no indexing and still excludes the Bragg
    peaks, in whichever voxels the wrong geometry put them (a peak now drifts across voxels within
    a wedge, so its weakest pixels are missed more often than with the right geometry)."""
    import shutil

    data, _ = low_dose
    wrong = tmp_path / "wrong"
    shutil.copytree(data, wrong)
    gxparm = (wrong / "GXPARM.XDS").read_text().splitlines()
    fields = gxparm[1].split()
    assert fields[3:6] == ["1.000000", "0.000000", "0.000000"]
    gxparm[1] = gxparm[1].replace(" 1.000000  0.000000  0.000000", "-1.000000  0.000000  0.000000")
    (wrong / "GXPARM.XDS").write_text("\n".join(gxparm) + "\n")
    outs = {}
    for method in ("statistical", "peak-cloud"):
        outs[method] = tmp_path / method
        assert main(["-q", "--no-progress", "process", "--no-report", "--xds", str(wrong), "-o", str(outs[method]),
                     "--device", "cpu", "--scale", "none", "--bragg-mask", method, "--filter-max-count", "30"]) == 0
    assert "the strong pixels do not index" in caplog.text
    moved = _moved(outs["statistical"])
    # peaks above 1, 5 and 20 σ of the scattering under them; measured 98.2 %, 99.5 % and 100 %
    shares = bragg_counts_excluded(data, moved, NDIV, geometry=str(wrong), strengths=(1, 5, 20))
    assert shares[0] >= 0.97 and shares[1] >= 0.99 and shares[2] >= 0.999, shares

    def pixel_frames_excluded(out):
        with h5py.File(out / "integrate.nxs") as f:
            excluded = f["entry/excluded/pixels"][()].sum()
            return excluded / (excluded + f["entry/diffuse/pixels"][()].sum())

    # the peak cloud's broad fit masks far more pixel-frames than with the right geometry (measured
    # 0.27 % → 50 %), and still misses peaks that drifted outside it
    right, broad = pixel_frames_excluded(low_dose[1]["peak-cloud"]), pixel_frames_excluded(outs["peak-cloud"])
    assert broad > 10 * right, (right, broad)


def test_the_report_shows_the_filter(low_dose, tmp_path):
    """The statistical filter excludes voxels, not pixels: the report says so (summary line, and
    the third mask panel shows the rows excluded per shell instead of 'no Bragg mask')."""
    import shutil

    out = shutil.copytree(low_dose[1]["statistical"], tmp_path / "out")
    assert main(["-q", "report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "Bragg mask: statistical; statistical filter on ndiv 3 3 3" in html
    assert "no Bragg mask" not in html and (out / "report" / "masks.png").stat().st_size > 10_000


def test_histograms_too_large_for_the_memory_are_refused(tiny_dataset, tmp_path, capsys, monkeypatch):
    """A --filter-max-count far above the data's counts would make the host engines' histograms
    outgrow the memory: the pass stops in one line naming the option, with nothing written."""
    from gpudiffuse.integration.engines import base

    monkeypatch.setattr(base, "memory_budget", lambda: 200e6)  # stands for half a small machine's memory
    out = tmp_path / "out"
    assert main(["process", "--no-report", "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu",
                 "--nproc", "1", "--bragg-mask", "statistical", "--filter-max-count", "5000"]) == 1
    err = capsys.readouterr().err
    assert "count histograms of 5001 bins per voxel (--filter-max-count 5000); lower it" in err and not out.exists()
