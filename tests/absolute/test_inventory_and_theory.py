"""The unit-cell inventory (1STN.pdb, as saved from a web page) and the per-cell theory from
xraylib, against independent expectations: the hydrogen atom's exact form factor, the
International Tables' IT92 coefficients (gemmi's copy of ITC Vol. C Table 6.1.1.4), the printed
incoherent scattering functions of Hubbell et al. (1975) and Balyuzi (1975), and the atom records
of the file counted here."""

import math

import gemmi
import numpy as np
import pytest

from gpudiffuse.absolute.inventory import bulk_water, parse_composition, read_model
from gpudiffuse.absolute.theory import coherent_per_cell, form_factor, incoherent_function, incoherent_per_cell
from gpudiffuse.errors import GpudiffuseError

BOHR = 0.529177  # Å

# hydrogens of each amino acid in a chain (residue formula minus water; neutral side chains), textbook values
CHAIN_H = {"ALA": 5, "ARG": 12, "ASN": 6, "ASP": 5, "CYS": 5, "GLN": 8, "GLU": 7, "GLY": 3, "HIS": 7, "ILE": 11,
           "LEU": 11, "LYS": 12, "MET": 9, "PHE": 9, "PRO": 7, "SER": 5, "THR": 7, "TRP": 10, "TYR": 9, "VAL": 9}
Z = {"C": 6, "N": 7, "O": 8, "S": 16}


@pytest.mark.parametrize("s", [0.2, 0.5, 1.0, 2.0])
def test_hydrogen_matches_its_exact_form_factor(s):
    """f_H = 1/(1 + (2π a₀ x)²)² with x = sin θ/λ = s/2, and S_H = 1 − f_H² (one electron): this
    pins xraylib's momentum-transfer convention to s/2."""
    x = s / 2
    exact = 1 / (1 + (2 * math.pi * BOHR * x) ** 2) ** 2
    assert form_factor("H", s)[0] == pytest.approx(exact, abs=0.01)
    assert incoherent_function("H", s)[0] == pytest.approx(1 - exact**2, abs=0.02)


@pytest.mark.parametrize("symbol", ["C", "N", "O", "S"])
def test_form_factors_agree_with_international_tables(symbol):
    assert form_factor(symbol, 0.0)[0] == Z[symbol] and incoherent_function(symbol, 0.0)[0] == 0
    it92 = gemmi.Element(symbol).it92
    for s in (0.5, 1.0, 2.0):
        assert form_factor(symbol, s)[0] == pytest.approx(it92.calculate_sf((s / 2) ** 2), rel=0.02, abs=0.02), s
    # at large s every electron scatters incoherently
    assert incoherent_function(symbol, 40.0)[0] == pytest.approx(Z[symbol], rel=0.01)
    assert 0 < incoherent_function(symbol, 0.5)[0] < incoherent_function(symbol, 1.0)[0] < Z[symbol]


# Incoherent scattering function S(x) = Z − Σᵢ aᵢ exp(−bᵢ x²), x = sin θ/λ = s/2 (Å⁻¹), from two
# printed tables, transcribed as coefficients:
# * Balyuzi, H. H. M. (1975). Acta Cryst. A31, 600–602, Table 1: five-Gaussian fits to the Hartree–Fock
#   S of Cromer & Mann (1967), good to 0.01 e for x ≤ 1.5 Å⁻¹ (the ESRF DABAX file isf_Balyuzi.dat).
# * Hubbell, J. H. et al. (1975). J. Phys. Chem. Ref. Data 4, 471–538, Table I, fitted with four
#   Gaussians and a constant by Meisburger (mdx-lib ScatteringFactor, 2017); this is the table
#   xraylib carries. For Z = 2–6 Hubbell uses Brown's configuration-interaction S, so for carbon
#   at x = 0.25 Å⁻¹ the two tables differ by 0.27 e (electron correlation); for N, O, S both are
#   Cromer's Hartree–Fock values.
BALYUZI_1975 = {
    "C": ([0.7568, 2.5511, 0.7051, 1.4605, 0.5263], [82.2385, 31.7282, 11.9471, 1.4637, 0.5150]),
    "N": ([0.9070, 2.8972, 1.1659, 1.5526, 0.4769], [64.1555, 20.8507, 7.7576, 1.0335, 0.3516]),
    "O": ([0.8847, 3.2189, 1.7990, 1.5538, 0.5434], [52.0063, 16.4487, 6.5958, 0.8143, 0.2815]),
    "S": ([2.0717, 4.2023, 5.6883, 2.2623, 1.7735], [86.7211, 21.4574, 2.1255, 0.5882, 0.1128]),
}
HUBBELL_1975_FIT = {  # (a₁..a₄, b₁..b₄, c): S(x) = c + Σ aᵢ exp(−bᵢ x²)
    "C": ([-0.96147, -2.95605, -0.83316, -1.21382], [69.25535, 19.30025, 2.17020, 0.83637], 5.97046),
    "N": ([-1.51297, -3.06972, -0.61218, -1.73276], [49.91666, 15.48366, 3.46102, 0.77338], 6.93353),
    "O": ([-1.31543, -3.71940, -0.98355, -1.88096], [43.08746, 13.05113, 4.37218, 0.64385], 7.90290),
    "S": ([-2.12480, -4.10117, -5.35044, -3.40558], [83.74962, 21.49352, 2.24776, 0.55746], 14.99166),
}


def _gaussians(a, b, x):
    return sum(ai * math.exp(-bi * x * x) for ai, bi in zip(a, b))


@pytest.mark.parametrize("symbol", ["C", "N", "O", "S"])
@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
def test_incoherent_function_agrees_with_printed_tables(symbol, s):
    """S(s) against Hubbell et al. (1975) everywhere, and against Balyuzi (1975) wherever both
    tables rest on the same (Hartree–Fock) theory: this also pins the momentum transfer to s/2."""
    x = s / 2
    a, b, c = HUBBELL_1975_FIT[symbol]
    assert incoherent_function(symbol, s)[0] == pytest.approx(c + _gaussians(a, b, x), abs=0.015)
    a, b = BALYUZI_1975[symbol]
    hartree_fock = Z[symbol] - _gaussians(a, b, x)
    if symbol == "C" and s == 0.5:
        # correlation lowers carbon's S at low angle: Hubbell's CI value is 0.27 e under Hartree–Fock
        assert 0.2 < hartree_fock - incoherent_function(symbol, s)[0] < 0.35
    else:
        assert incoherent_function(symbol, s)[0] == pytest.approx(hartree_fock, abs=0.02)


def _records(path):
    atoms, residues = [], []
    for line in open(path, encoding="latin-1"):
        line = line.replace("<PRE>", "")
        if line.startswith(("ATOM", "HETATM")):
            atoms.append((line[12:16].strip()[0], float(line[54:60])))
            key = (line[21], line[22:27])
            if not residues or residues[-1][0] != key:
                residues.append((key, line[17:20]))
    return atoms, residues


def test_1stn_inventory_counts_its_atoms(snase_dir):
    path = snase_dir / "1STN.pdb"
    inventory = read_model(str(path))
    assert inventory.space_group == "P 41" and inventory.cell == pytest.approx((48.5, 48.5, 63.5, 90, 90, 90))
    assert any("HTML" in note for note in inventory.notes)
    atoms, residues = _records(path)
    assert len(atoms) == 1174
    for symbol in "CNOS":  # 4 copies in P 4₁, occupancy-weighted
        assert inventory.atoms[symbol] == pytest.approx(4 * sum(occ for e, occ in atoms if e == symbol))
    waters = sum(1 for _, name in residues if name == "HOH")
    protein = [name for _, name in residues if name in CHAIN_H]
    assert waters == 83 and len(protein) > 130
    textbook_h = 4 * (2 * waters + sum(CHAIN_H[name] for name in protein) + 2)  # + 2 for the chain ends
    assert inventory.atoms["H"] == pytest.approx(textbook_h, rel=0.03)  # gemmi counts charged Lys/Arg
    heavy = 4 * sum(Z[e] * occ for e, occ in atoms)
    assert inventory.electrons == pytest.approx(heavy + textbook_h, rel=0.005)


def test_per_cell_theory_sums_the_atoms():
    inventory = parse_composition("C2 O1 H4", copies=3)
    s = np.array([0.0, 0.7])
    expected_coh = 3 * (2 * form_factor("C", s) ** 2 + form_factor("O", s) ** 2 + 4 * form_factor("H", s) ** 2)
    np.testing.assert_allclose(coherent_per_cell(inventory, s), expected_coh)
    assert coherent_per_cell(inventory, 0.0)[0] == pytest.approx(3 * (2 * 36 + 64 + 4))
    assert incoherent_per_cell(inventory, 0.0)[0] == 0 and inventory.electrons == 3 * (12 + 8 + 4)
    water = bulk_water(1000 * 29.92, 0.5)
    assert water.atoms == pytest.approx({"H": 1000, "O": 500}) and water.electrons == pytest.approx(5000)


def test_bad_models_and_compositions_are_named(tmp_path):
    page = tmp_path / "page.pdb"
    text = ("<html>\nCRYST1   40.000   40.000   40.000  90.00  90.00  90.00 P 1\n"
            "ATOM      1  CA  ALA A   1       0.000   0.000   0.000  1.00 10.00           C\n"
            "some stray words\nATOM      2  CB  ALA A   1       1.000   0.000   0.000  1.00 10.00           C\nEND\n")
    page.write_text(text)
    with pytest.raises(GpudiffuseError, match=r"line 4 is not a PDB record: 'some stray words'"):
        read_model(str(page))
    (tmp_path / "empty.pdb").write_text("<html></html>\n")
    with pytest.raises(GpudiffuseError, match="no ATOM or HETATM records"):
        read_model(str(tmp_path / "empty.pdb"))
    with pytest.raises(GpudiffuseError, match="unknown element 'Xq'"):
        parse_composition("C10 Xq3")
    with pytest.raises(GpudiffuseError, match="cannot read '10C'"):
        parse_composition("10C")
