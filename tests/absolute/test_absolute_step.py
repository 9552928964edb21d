"""The absolute scale (issue 13, DESIGN §12) end to end on a simulated dataset in electron units.

The ``absolute`` preset writes counts = 8000 photons per electron unit per s per sr, so the
program's rate is 8000 × e.u. and the scale it must find is k_true = 1/8000; its total scattering
obeys the sum rule for the composition below plus 50 % bulk water (gpudiffuse.simulate_absolute).
Measured when written (2-core CPU): k(S) = 1.2586e-4 … 1.2479e-4 for S = 0.5 … 0.709 Å⁻¹
(within 0.8 % of 1.25e-4); final map CC with the truth 0.9955, ⟨I⟩/⟨truth⟩ 0.9957–0.9970 per shell.
"""

import os
import shutil

import h5py
import numpy as np
import pytest

from gpudiffuse.absolute.inventory import parse_composition
from gpudiffuse.absolute.scale import absolute_scale
from gpudiffuse.absolute.theory import coherent_per_cell, incoherent_per_cell
from gpudiffuse.cli import main
from gpudiffuse.experiment import ImportParameters
from gpudiffuse.integration import IntegrationParameters
from gpudiffuse.pipeline import ProcessParameters, process
from gpudiffuse.simulate import PRESETS, load_model, simulate_dataset, voxel_truth
from gpudiffuse.steps.absolute import ABSOLUTE_UNITS, AbsoluteParameters, read_absolute
from gpudiffuse.steps.merge import INTENSITY_UNITS, read_merged

COMPOSITION = "C1950 N540 O600 S16 H3100"
K_TRUE = 1 / PRESETS["absolute"].scale
SNASE_MODEL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "snase-lunus", "1STN.pdb")


@pytest.fixture(scope="module")
def absolute_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("absolute")
    data, out = str(root / "data"), str(root / "out")
    simulate_dataset(data, "absolute", progress=False)
    result = process(ProcessParameters(ImportParameters(xds=data), IntegrationParameters(ndiv=(3, 3, 3)), device="cpu",
                                       scale="isotropic",
                                       absolute=AbsoluteParameters(composition=COMPOSITION, solvent_fraction=0.5)),
                     out, progress=False)
    return data, out, result


def test_k_is_recovered_for_every_cutoff_from_half_an_inverse_angstrom(absolute_run):
    _, out, result = absolute_run
    stored = read_absolute(os.path.join(out, "absolute.nxs"))
    assert stored.scale.k == pytest.approx(result["absolute"].scale.k)
    cutoffs = np.linspace(0.5, stored.s_limit, 12)
    k = stored.scale.k_at(cutoffs)
    print("S_c:", np.round(cutoffs, 3), "\nk/k_true:", np.round(k / K_TRUE, 4))
    assert stored.s_limit > 0.68  # the preset reaches 1.41 Å
    np.testing.assert_allclose(k, K_TRUE, rtol=0.02)
    assert stored.scale.weighting == "swept volume"


def test_final_map_in_electron_units_matches_the_truth(absolute_run):
    """Truth: the simulator's voxel-averaged diffuse + isotropic scattering minus its I_inc."""
    data, out, result = absolute_run
    merged = read_merged(os.path.join(out, "merged.nxs"))
    assert merged.units == ABSOLUTE_UNITS
    voxels = merged.merged
    model = load_model(data)
    truth = voxel_truth(model, np.column_stack([voxels["h"], voxels["k"], voxels["l"]]), (3, 3, 3)) \
        - model.absolute.incoherent(voxels["s"])
    cc = np.corrcoef(voxels["intensity"], truth)[0, 1]
    s = voxels["s"]
    edges = np.cbrt(np.linspace(s.min() ** 3, s.max() ** 3 * (1 + 1e-9), 11))
    shell = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, 9)
    ratios = np.array([voxels["intensity"][shell == i].mean() / truth[shell == i].mean() for i in range(10)])
    print(f"CC {cc:.4f}; mean ratio per shell {np.round(ratios, 4)}")
    assert cc >= 0.99
    np.testing.assert_allclose(ratios, 1.0, atol=0.03)
    with h5py.File(os.path.join(out, "map.nxs")) as handle:
        assert handle["entry/data/intensity"].attrs["units"] == ABSOLUTE_UNITS
    with h5py.File(os.path.join(out, "merged.nxs")) as handle:
        assert handle["entry/bragg/intensity"].attrs["units"] == ABSOLUTE_UNITS


def test_the_report_shows_the_absolute_scale(absolute_run, tmp_path):
    from test_report import check_report

    _, out, _ = absolute_run
    folder = _folder_copy(out, tmp_path)
    assert main(["report", folder, "--no-progress"]) == 0
    html = check_report(tmp_path / "copy", absolute=True)
    assert ABSOLUTE_UNITS in html


def test_sum_rule_on_a_synthetic_profile():
    """Rows whose rate is T(s)/k0 with T = I_coh + I_inc − N_e² g(s) (V∫g = 1, g inside 0.3 Å⁻¹):
    k(S) = k0 for every S beyond 0.3 Å⁻¹, and k(S) < k0 inside (the hole not yet complete)."""
    inventory = parse_composition("C300 N80 O90 S2 H500")
    volume, k0, hole = 40000.0, 3.5e-4, 0.3
    rng = np.random.default_rng(4)
    s = np.cbrt(rng.uniform(0, 0.6**3, 400_000))
    u = np.clip(s / hole, 0, 1)
    g = (1 - u**2) ** 2 / (volume * 4 * np.pi * hole**3 * 8 / 105)
    truth = coherent_per_cell(inventory, np.linspace(0, 0.6, 601)), incoherent_per_cell(inventory, np.linspace(0, 0.6, 601))
    total = np.interp(s, np.linspace(0, 0.6, 601), truth[0] + truth[1]) - inventory.electrons**2 * g
    assert total.min() > 0
    n = len(s)
    table = {"s": s, "rate": total / k0, "fraction": np.full(n, 0.2), "counts": np.full(n, 100),
             "sigma": np.full(n, 0.1), "H": np.arange(n), "K": np.zeros(n, int), "L": np.zeros(n, int)}
    result = absolute_scale([table], inventory, volume, 0.55, 0.6, (1, 1, 1), 1 / volume)
    np.testing.assert_allclose(result.k_at(np.array([0.35, 0.45, 0.55, 0.6])), k0, rtol=0.004)
    assert result.k_at(0.2) < 0.8 * k0
    assert result.k == pytest.approx(k0, rel=0.004)


def _folder_copy(out, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    return copy


def test_a_new_absolute_file_replaces_the_map_and_deleting_it_returns_to_relative_units(absolute_run, tmp_path):
    _, out, _ = absolute_run
    folder = _folder_copy(out, tmp_path)
    assert main(["absolute", folder, "--composition", COMPOSITION, "--solvent-fraction", "0.5", "--s-cutoff", "0.6",
                 "--overwrite", "--no-progress"]) == 0
    assert not os.path.exists(os.path.join(folder, "merged.nxs")) and not os.path.exists(os.path.join(folder, "map.nxs"))
    assert read_absolute(os.path.join(folder, "absolute.nxs")).scale.s_cutoff == pytest.approx(0.6)
    assert main(["merge", folder, "--no-progress"]) == 0
    absolute = read_merged(os.path.join(folder, "merged.nxs"))
    assert absolute.units == ABSOLUTE_UNITS
    os.remove(os.path.join(folder, "absolute.nxs"))
    assert main(["merge", folder, "--no-progress"]) == 0
    relative = read_merged(os.path.join(folder, "merged.nxs"))
    assert relative.units == INTENSITY_UNITS
    # k·I − I_inc undone: the relative intensities are the absolute ones put back
    k = read_absolute(os.path.join(out, "absolute.nxs")).scale.k
    assert np.median(relative.merged["intensity"]) * k > np.median(absolute.merged["intensity"])


@pytest.mark.parametrize("arguments, message, code", [
    (["--model", SNASE_MODEL], "differs from the data's", 1),
    (["--composition", "C100 Xx5"], "unknown element 'Xx'", 1),
    (["--composition", COMPOSITION, "--s-cutoff", "0.9"], "beyond the data", 1),
    (["--composition", COMPOSITION, "--s-cutoff", "0.1"], "not positive", 1),
    ([], "needs --model FILE or --composition", 2),
    (["--model", "EMPTY"], "no ATOM or HETATM records", 1),
    (["--model", "P1"], "Laue group -1) disagrees with the data's I 2 2 2", 1),
])
def test_bad_input_is_refused_in_one_line_without_output(absolute_run, tmp_path, capsys, arguments, message, code):
    _, out, _ = absolute_run
    folder = _folder_copy(out, tmp_path)
    os.remove(os.path.join(folder, "absolute.nxs"))
    if "EMPTY" in arguments:
        empty = tmp_path / "empty.pdb"
        empty.write_text("CRYST1   40.000   48.000   56.000  90.00  90.00  90.00 I 2 2 2\nEND\n")
        arguments = ["--model", str(empty)]
    if "P1" in arguments:  # the data's cell, but another Laue group
        model = tmp_path / "p1.pdb"
        model.write_text("CRYST1   40.000   48.000   56.000  90.00  90.00  90.00 P 1\n"
                         "ATOM      1  CA  GLY A   1      10.000  10.000  10.000  1.00 20.00           C\nEND\n")
        arguments = ["--model", str(model)]
    if "--model" in arguments and arguments[1] == SNASE_MODEL and not os.path.exists(SNASE_MODEL):
        pytest.skip("../shared is not beside the checkout")
    assert main(["absolute", folder, "--overwrite", "--no-progress", *arguments]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not os.path.exists(os.path.join(folder, "absolute.nxs"))
    assert os.path.exists(os.path.join(folder, "merged.nxs"))
