"""The unit-cell inventory for the absolute scale (DESIGN §12): atoms of each element per unit
cell, and the net charge, from a coordinate file (gemmi) or a composition.

From a model: every atom of the first model, weighted by its occupancy (alternative conformers
add up to one), times the number of symmetry operations of the space group (all copies in the
cell; special positions are not treated apart). Residues that carry no hydrogen in the file get
hydrogens from gemmi's residue table (``hydrogen_count``, the free residue as in the CCD) minus
two per peptide link between consecutive amino acids of a chain. Waters and ligands count like
any residue. Residues missing from the model (disorder) are not counted: give a composition for
those. A PDB file saved from a web page (HTML lines before the first record and after END) is
read without them; any other line that is not a PDB record is an error naming it.

From a composition: ``"C1500 N400 O450 S10 H2400"`` per copy, times ``copies``.
Bulk solvent: water filling a volume fraction of the cell (29.92 Å³ per molecule, liquid water
at 25 °C).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import gemmi
import numpy as np

from ..errors import GpudiffuseError

__all__ = ["Inventory", "read_model", "parse_composition", "bulk_water", "matthews_solvent_fraction",
           "WATER_VOLUME"]

WATER_VOLUME = 29.92  # Å³ per H₂O in liquid water (18.015 g/mol at 0.997 g/cm³)
WATER_MASS = 18.015   # Da

PDB_RECORDS = {
    "HEADER", "OBSLTE", "TITLE", "SPLIT", "CAVEAT", "COMPND", "SOURCE", "KEYWDS", "EXPDTA", "NUMMDL", "MDLTYP",
    "AUTHOR", "REVDAT", "SPRSDE", "JRNL", "REMARK", "DBREF", "DBREF1", "DBREF2", "SEQADV", "SEQRES", "MODRES",
    "HET", "HETNAM", "HETSYN", "FORMUL", "HELIX", "SHEET", "TURN", "SSBOND", "LINK", "CISPEP", "SITE", "CRYST1",
    "ORIGX1", "ORIGX2", "ORIGX3", "SCALE1", "SCALE2", "SCALE3", "MTRIX1", "MTRIX2", "MTRIX3", "MODEL", "ATOM",
    "ANISOU", "TER", "HETATM", "ENDMDL", "CONECT", "MASTER", "END", "FTNOTE", "SIGATM", "SIGUIJ",
}
_TAG = re.compile(r"<[^>]*>")


@dataclass
class Inventory:
    """atoms: element symbol → atoms per unit cell; charge: net formal charge per cell (e);
    source: where it came from; cell, space_group: of the model (None for a composition);
    waters: ordered water molecules per cell among the atoms (already counted in ``atoms``)."""

    atoms: dict
    charge: float = 0.0
    source: str = ""
    cell: tuple | None = None
    space_group: str | None = None
    notes: list = field(default_factory=list)
    waters: float = 0.0

    @property
    def mass(self) -> float:
        """Da per unit cell."""
        return sum(gemmi.Element(symbol).weight * n for symbol, n in self.atoms.items())

    @property
    def electrons(self) -> float:
        """N_e = Σ Z·n − charge per unit cell."""
        return sum(gemmi.Element(symbol).atomic_number * n for symbol, n in self.atoms.items()) - self.charge

    def __add__(self, other: "Inventory") -> "Inventory":
        atoms = dict(self.atoms)
        for symbol, n in other.atoms.items():
            atoms[symbol] = atoms.get(symbol, 0.0) + n
        return Inventory(atoms, self.charge + other.charge, f"{self.source} + {other.source}", self.cell or other.cell,
                         self.space_group or other.space_group, self.notes + other.notes, self.waters + other.waters)

    def summary(self) -> str:
        formula = " ".join(f"{s}{n:.6g}" for s, n in sorted(self.atoms.items(), key=lambda x: -x[1]))
        return f"{formula} per unit cell, N_e = {self.electrons:.6g} ({self.source})"


def _pdb_text(path: str) -> tuple[str, list]:
    """The PDB records of ``path``; HTML around them is dropped and noted."""
    try:
        with open(path, encoding="latin-1") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise GpudiffuseError(f"--model {path}: cannot read ({exc.strerror or exc})") from None
    cleaned = [_TAG.sub("", line).rstrip() for line in lines]
    is_record = [line[:6].strip() in PDB_RECORDS for line in cleaned]
    if not any(line.startswith(("ATOM", "HETATM")) for line in cleaned):
        raise GpudiffuseError(f"--model {path}: no ATOM or HETATM records (not a PDB file, or an empty model)")
    first = is_record.index(True)
    last = max(i for i, r in enumerate(is_record) if r)
    for i in range(first, last + 1):
        if not is_record[i] and cleaned[i].strip():
            raise GpudiffuseError(f"--model {path}: line {i + 1} is not a PDB record: {lines[i][:60]!r}")
    notes = []
    old_columns = 0
    for i in range(first, last + 1):  # columns 73-80 of old entries hold the ID code and line number
        line = cleaned[i]
        if line.startswith(("ATOM", "HETATM", "ANISOU")) and len(line) > 72 and not _element_and_charge(line):
            cleaned[i] = line[:72]
            old_columns += 1
    if old_columns:
        notes.append(f"{path}: columns 73-80 of {old_columns} atom records are not element and charge (an old "
                     "entry's ID code and line number): elements taken from the atom names")
    dropped = sum(1 for i, line in enumerate(lines) if (i < first or i > last) and line.strip())
    if dropped or any(_TAG.search(line) for line in lines[first:last + 1]):
        notes.append(f"{path}: ignored {dropped} line(s) of HTML around the PDB records")
    return "\n".join(cleaned[first:last + 1]) + "\n", notes


def _element_and_charge(line: str) -> bool:
    """Whether columns 77-80 of an atom record read as an element symbol and a charge."""
    element, charge = line[76:78].strip(), line[78:80].strip()
    return (not element or element.isalpha()) and (not charge or re.fullmatch(r"\d[+-]|[+-]\d?", charge) is not None)


def read_model(path: str) -> Inventory:
    """The inventory of a PDB or mmCIF model (see the module docstring)."""
    path = str(path)
    if not os.path.isfile(path):
        raise GpudiffuseError(f"--model {path}: no such file")
    notes = []
    try:
        if path.lower().endswith((".cif", ".mmcif", ".cif.gz")):
            structure = gemmi.read_structure(path)
        else:
            text, notes = _pdb_text(path)
            structure = gemmi.read_pdb_string(text)
    except (RuntimeError, ValueError) as exc:
        raise GpudiffuseError(f"--model {path}: cannot read it ({exc})") from None
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise GpudiffuseError(f"--model {path}: the model has no atoms")
    group = gemmi.find_spacegroup_by_name(structure.spacegroup_hm) if structure.spacegroup_hm else None
    if group is None:
        raise GpudiffuseError(f"--model {path}: no space group (CRYST1 record) to place the copies in the cell")
    copies = len(group.operations())
    atoms, charge, added_h, waters = {}, 0.0, 0.0, 0.0
    for chain in structure[0]:
        previous_amino_acid = False
        for residue in chain:
            info = gemmi.find_tabulated_residue(residue.name)
            occupancy = 0.0
            has_h = False
            for atom in residue:
                symbol = atom.element.name
                atoms[symbol] = atoms.get(symbol, 0.0) + atom.occ
                charge += atom.charge * atom.occ
                has_h |= atom.is_hydrogen()
                occupancy = max(occupancy, atom.occ)
            if residue.is_water():
                waters += occupancy
            amino_acid = info is not None and info.is_amino_acid()
            if not has_h and info is not None:
                links = 2 if amino_acid and previous_amino_acid else 0  # a peptide bond takes H from N and O
                added_h += occupancy * max(info.hydrogen_count - links, 0)
            previous_amino_acid = amino_acid
    if added_h:
        atoms["H"] = atoms.get("H", 0.0) + added_h
        notes.append(f"{added_h:.0f} hydrogens per asymmetric unit added from gemmi's residue table")
    atoms = {symbol: n * copies for symbol, n in atoms.items()}
    return Inventory(atoms, charge * copies, f"{os.path.basename(path)}, {copies} copies in {group.hm}",
                     tuple(structure.cell.parameters), group.hm, notes, waters * copies)


def parse_composition(text: str, copies: float = 1.0) -> Inventory:
    """``"C1500 N400 O450 S10 H2400"`` (atoms per copy) times ``copies``."""
    atoms = {}
    for token in text.replace(",", " ").split():
        match = re.fullmatch(r"([A-Z][a-z]?)(\d+(?:\.\d+)?)?", token)
        if not match:
            raise GpudiffuseError(f"--composition {text!r}: cannot read {token!r} (write e.g. C1500 N400 O450 S10)")
        symbol, count = match.group(1), float(match.group(2) or 1)
        if gemmi.Element(symbol).atomic_number == 0:
            raise GpudiffuseError(f"--composition {text!r}: unknown element {symbol!r}")
        atoms[symbol] = atoms.get(symbol, 0.0) + count * copies
    if not atoms:
        raise GpudiffuseError("--composition is empty")
    return Inventory(atoms, 0.0, f"composition {text} × {copies:g}")


def bulk_water(cell_volume: float, fraction: float, ordered: float = 0.0) -> Inventory:
    """Water filling ``fraction`` of a cell of ``cell_volume`` Å³, less ``ordered`` water molecules
    already in the inventory (never below zero)."""
    if not 0 <= fraction < 1:
        raise GpudiffuseError(f"--solvent-fraction {fraction}: must be at least 0 and below 1")
    molecules = max(fraction * cell_volume / WATER_VOLUME - ordered, 0.0)
    return Inventory({"H": 2 * molecules, "O": molecules}, 0.0,
                     f"bulk water, {100 * fraction:.1f} % of {cell_volume:.0f} Å³", waters=molecules)


def matthews_solvent_fraction(inventory: Inventory, cell_volume: float) -> float:
    """1 − 1.23/V_M (Matthews 1968), V_M = cell volume / mass of everything but the ordered
    waters (Å³/Da; 1.23 = 1/(N_A ρ) for protein of density 1.35 g/cm³), clipped to [0, 0.9]."""
    dry_mass = inventory.mass - inventory.waters * WATER_MASS
    return float(np.clip(1 - 1.23 * dry_mass / cell_volume, 0.0, 0.9))
