"""End-to-end processing of a simulated dataset with known truth (issue: end-to-end CPU pipeline)."""

import os

import gemmi
import h5py
import numpy as np
import pytest

from gpudiffuse.cli import main
from gpudiffuse.experiment import ImportParameters
from gpudiffuse.geometry.vectors import pixel_s_vectors
from gpudiffuse.geometry.xds import load_xds
from gpudiffuse.integration import IntegrationParameters
from gpudiffuse.masking.peaks import absent_table, bragg_mask
from gpudiffuse.pipeline import ProcessParameters, process
from gpudiffuse.steps.find_peaks import read_peaks
from gpudiffuse.simulate import compare_with_truth, format_accuracy, load_model, simulate_dataset

NDIV = (3, 3, 3)
DMIN = 2.0


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    data = str(root / "data")
    simulate_dataset(data, "small", progress=False)
    out = str(root / "out")
    result = process(ProcessParameters(ImportParameters(xds=data), IntegrationParameters(ndiv=NDIV, dmin=DMIN),
                                       device="cpu", scale="isotropic"), out, progress=False)
    return data, out, result


def test_merged_map_matches_the_truth(small):
    """CC with the voxel-averaged truth ≥ 0.98 in every shell with ⟨I/σ⟩ > 10, ≥ 0.99 overall.
    Measured (2 Å, 60 frames, wedges of 5): 0.9960 0.9986 0.9956 0.9978 0.9973 0.9965 0.9955 0.9928
    0.9923 0.9856, overall 0.9993 (see the printed table)."""
    data, _, result = small
    accuracy = compare_with_truth(result["merged"], load_model(data), NDIV)
    print(format_accuracy(accuracy))
    assert accuracy["overall_cc"] >= 0.99
    for shell in accuracy["shells"]:
        if shell["i_over_sigma"] > 10:
            assert shell["cc"] >= 0.98, shell


def test_bragg_peak_pixels_are_masked_and_absences_are_not(small):
    """A "Bragg-peak pixel" is one whose expected Bragg counts exceed the Poisson noise (√ expected
    counts) of the diffuse + isotropic scattering under it: ≥ 99 % of them must be masked.
    Pixels near systematically absent reflections (I 2 2 2: h+k+l odd) must not be."""
    data, out, _ = small
    model = load_model(data)
    sweep = load_xds(data)[0]
    search = read_peaks(os.path.join(out, "peaks.nxs"))
    absent = absent_table(sweep.crystal.space_group, (40, 40, 40))
    s = pixel_s_vectors(sweep.panel, sweep.beam).reshape(-1, 3)
    inside = np.linalg.norm(s, axis=1) <= 1 / DMIN
    s = s[inside]
    factor = model.corrections(model.pixel_positions().reshape(-1, 3))[inside]
    p = model.params
    true_total = masked_total = near_absent_total = near_absent_masked = 0
    for z in (3, 30, 57):
        hkl = s @ np.linalg.inv(sweep.setting_matrix(z)).T
        bragg = np.mean([model.bragg(s @ (np.linalg.inv(model.A) @ model.rotation(
            p.phi0 + (z + (k + 0.5) / p.sub_samples) * p.dphi).T).T) for k in range(p.sub_samples)], axis=0)
        expected = p.exposure * p.scale * model.decay(z) * factor
        background = expected * (model.diffuse(hkl) + model.isotropic(np.linalg.norm(s, axis=1)))
        true_bragg = expected * bragg > np.sqrt(background)
        masked = bragg_mask(hkl, search.model, absent)
        true_total += true_bragg.sum()
        masked_total += (true_bragg & masked).sum()
        g = np.rint(hkl).astype(int)
        is_absent = (g.sum(axis=1) % 2) == 1
        near = search.model.distance2(hkl - g) <= search.model.sigma_cutoff ** 2
        near_absent_total += (near & is_absent).sum()
        near_absent_masked += (near & is_absent & masked).sum()
    assert true_total > 1000
    assert masked_total / true_total >= 0.99, masked_total / true_total
    assert near_absent_total > 1000
    assert near_absent_masked == 0


def test_peak_cloud_is_centred(small):
    _, _, result = small
    model = result["peak_model"]
    assert np.linalg.norm(model.offset) < 0.01
    assert model.widths.max() < 0.1 and not model.warnings


def test_contract_files(small):
    _, out, result = small
    with h5py.File(os.path.join(out, "merged.nxs"), "r") as f:
        g = f["entry/merged"]
        n = len(g["h"])
        assert n == len(result["merged"]["intensity"]) > 10000
        for key in ("h", "k", "l", "intensity", "sigma"):
            assert g[key].dtype == np.float64 and g[key].shape == (n,)
        assert g["n"].dtype.kind == "i" and g["n"].shape == (n,)
        assert list(g.attrs["ndiv"]) == [3, 3, 3]
        assert g.attrs["space_group"] == "I 2 2 2"
        np.testing.assert_allclose(g.attrs["unit_cell"], [40, 48, 56, 90, 90, 90], atol=1e-4)
        hkl = np.column_stack([g["h"][()], g["k"][()], g["l"][()]])
        asu = gemmi.ReciprocalAsu(gemmi.SpaceGroup("I 2 2 2"))
        assert all(asu.is_in([int(v) for v in np.rint(3 * x)]) for x in hkl[::97])
        assert f["entry"].attrs["program_version"] and f["entry"].attrs["device"] == "cpu"
    with h5py.File(os.path.join(out, "map.nxs"), "r") as f:
        data = f["entry/data"]
        assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "intensity"
        assert list(data.attrs["axes"]) == ["h", "k", "l"]
        grid = data["intensity"]
        assert grid.shape == (len(data["h"]), len(data["k"]), len(data["l"]))
        # a merged ASU voxel and its Friedel mate carry the same value in the map
        i = np.argmax(result["merged"]["n"])
        H, K, L = (int(result["merged"][c][i]) for c in "HKL")
        centre = np.array(grid.shape) // 2
        assert grid[tuple(centre + [H, K, L])] == pytest.approx(result["merged"]["intensity"][i])
        assert grid[tuple(centre - [H, K, L])] == pytest.approx(result["merged"]["intensity"][i])


def test_resume_skips_finished_steps(small, capsys):
    data, out, result = small
    stamp = os.path.getmtime(os.path.join(out, "integrate.nxs"))
    again = process(ProcessParameters(ImportParameters(xds=data), IntegrationParameters(ndiv=NDIV, dmin=DMIN),
                                      device="cpu", scale="isotropic"), out, progress=False)
    assert os.path.getmtime(os.path.join(out, "integrate.nxs")) == stamp
    np.testing.assert_array_equal(again["merged"]["intensity"], result["merged"]["intensity"])
    # other parameters are refused without --overwrite
    code = main(["process", "--no-report", "--xds", data, "-o", out, "--ndiv", "3", "3", "3", "--dmin", "2.5", "--device", "cpu",
                 "--scale", "isotropic"])
    assert code == 1 and "--overwrite" in capsys.readouterr().err
