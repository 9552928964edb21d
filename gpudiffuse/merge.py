"""Symmetry merging of voxel observations and merging statistics.

Voxel indices (H, K, L) in units of 1/nᵢ are mapped to the reciprocal-space asymmetric unit
of the Laue group (Friedel mates merged; gemmi's ASU conditions and operators). The grid
must be compatible with the symmetry: every operator must map the grid onto itself
(e.g. n₁ = n₂ for tetragonal groups). Merging is the inverse-variance weighted mean with
two-sided outlier rejection at k·rms of the normalised residuals (rounds that
reject at most the worst observation of a voxel each); random half-sets give
CC½, CC* and R-split per resolution shell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gemmi
import numpy as np

from .errors import SymmetryError
from .grid import pack_voxels
from .merge_kernels import outlier_round, weighted_sums

__all__ = ["MergeParameters", "VoxelGroups", "laue_operators", "check_grid_symmetry", "map_to_asu", "merge",
           "shell_statistics",
           "expand_to_grid", "mate_agreement", "equal_volume_edges", "shell_of"]


@dataclass(frozen=True)
class MergeParameters:
    """outlier_k : reject |I − Î|/σ > k·rms (None: no rejection). n_shells : resolution shells
    of equal reciprocal volume. seed : half-set assignment. anomalous : keep Friedel mates apart."""

    outlier_k: float | None = 5.0
    n_shells: int = 10
    seed: int = 0
    anomalous: bool = False


def laue_operators(space_group) -> np.ndarray:
    """(2·n_rot, 3, 3) integer matrices R acting on row vectors (h' = h R): the rotation parts of
    the space group's operators, then their negatives (Friedel). Identity first."""
    rots = []
    for op in space_group.operations().sym_ops:
        # gemmi's rot acts on real-space column vectors x; Miller indices transform as h' = h·R
        r = np.array(op.rot, dtype=np.int64) // gemmi.Op.DEN
        if not any(np.array_equal(r, q) for q in rots):
            rots.append(r)
    rots.sort(key=lambda m: not np.array_equal(m, np.eye(3, dtype=np.int64)))
    return np.array(rots + [-q for q in rots])


def _grid_operators(space_group, ndiv) -> np.ndarray:
    n = np.asarray(ndiv, dtype=np.float64)
    ops = laue_operators(space_group).astype(np.float64)
    # H = h·N, H' = h' N = H N⁻¹ R N
    return ops * n[None, None, :] / n[None, :, None]


def check_grid_symmetry(space_group, ndiv):
    """Raise SymmetryError if some operator of the Laue group does not map the ndiv grid onto itself."""
    for op in _grid_operators(space_group, ndiv):
        if not np.allclose(op, np.rint(op)):
            raise SymmetryError(
                f"--ndiv {' '.join(map(str, ndiv))} is incompatible with Laue group {space_group.laue_str()} "
                f"of {space_group.hm}: symmetry-related axes need equal subdivisions"
            )


def _asu_predicate(space_group):
    """Vectorised gemmi ASU condition: text like 'l>0 or (l=0 and h>=0)' → function of (h, k, l)."""
    text = gemmi.ReciprocalAsu(space_group).condition_str()
    expr = re.sub(r"([hkl])\s*(>=|<=|>|<|=)\s*([hkl0-9]+)",
                  lambda m: f"({m.group(1)}{'==' if m.group(2) == '=' else m.group(2)}{m.group(3)})", text)
    expr = expr.replace(" and ", " & ").replace(" or ", " | ")
    if not re.fullmatch(r"[hkl0-9()&|<>=! ]+", expr):
        raise SymmetryError(f"cannot interpret gemmi's ASU condition {text!r}")
    code = compile(expr, "<asu>", "eval")
    return lambda h, k, l: eval(code, {}, {"h": h, "k": k, "l": l})  # noqa: S307 (validated above)


def map_to_asu(voxels: np.ndarray, space_group, ndiv) -> tuple[np.ndarray, np.ndarray]:
    """Map integer voxel indices (N, 3) into the ASU. Returns (ASU voxels (N, 3), operator index
    (N,)); operator indices ≥ n_ops/2 involve Friedel inversion."""
    check_grid_symmetry(space_group, ndiv)
    ops = np.rint(_grid_operators(space_group, ndiv)).astype(np.int64)
    inside = _asu_predicate(space_group)
    voxels = np.asarray(voxels, dtype=np.int64)
    out = np.zeros_like(voxels)
    which = np.full(len(voxels), -1, dtype=np.int64)
    todo = np.arange(len(voxels))
    columns = [voxels[:, j].copy() for j in range(3)]  # of the voxels still without an ASU image
    for i, op in enumerate(ops):
        if todo.size == 0:
            break
        # image = voxel @ op, as sums of the nonzero terms (integer matmul has no BLAS)
        image = [_combination(columns, op[:, j]) for j in range(3)]
        ok = inside(*image)
        found = todo[ok]
        out[found] = np.column_stack([c[ok] for c in image])
        which[found] = i
        rest = ~ok
        todo, columns = todo[rest], [c[rest] for c in columns]
    if (which < 0).any():
        raise SymmetryError(f"{np.count_nonzero(which < 0)} voxels found no ASU image (bug)")
    return out, which


def _combination(columns, coefficients) -> np.ndarray:
    """Σ_j coefficients[j] · columns[j] over the nonzero integer coefficients."""
    total = None
    for column, c in zip(columns, coefficients):
        if c == 0:
            continue
        term = column if c == 1 else -column if c == -1 else c * column
        total = term.copy() if total is None else total + term
    return np.zeros_like(columns[0]) if total is None else total


def voxel_s(voxels: np.ndarray, ndiv, A_metric: np.ndarray) -> np.ndarray:
    """|s| (1/Å) of the centres of integer voxels (N, 3) on a grid of ``ndiv`` per Miller index."""
    frac = np.asarray(voxels) / np.asarray(ndiv, dtype=np.float64)
    return np.sqrt(np.einsum("ni,ij,nj->n", frac, A_metric, frac))


def _weighted_mean(group, n_groups, values, sigma, rows):
    """Inverse-variance weighted mean, its σ and the count per group over the rows where ``rows``."""
    sw, swi, n = weighted_sums(group, values, sigma, rows, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return swi / sw, 1.0 / np.sqrt(sw), n


@dataclass(frozen=True)
class VoxelGroups:
    """Observation rows grouped by ASU voxel: ``asu`` (N, 3) the rows' ASU images, ``group`` (N,)
    each row's group in 0…n_groups−1 (ascending packed key), ``keys`` (n_groups,) those keys (×2 +
    Friedel half when anomalous), ``first`` (n_groups,) the first row of each group."""

    asu: np.ndarray
    group: np.ndarray
    keys: np.ndarray
    first: np.ndarray

    @classmethod
    def of(cls, table: dict, space_group, ndiv, anomalous: bool = False) -> "VoxelGroups":
        asu, which = map_to_asu(np.column_stack([table["H"], table["K"], table["L"]]), space_group, ndiv)
        key = pack_voxels(asu)
        if anomalous:
            key = key * 2 + (which >= len(laue_operators(space_group)) // 2)
        keys, group = np.unique(key, return_inverse=True)
        first = np.zeros(len(keys), dtype=np.int64)
        first[group[::-1]] = np.arange(len(group))[::-1]
        return cls(asu, group, keys, first)


def merge(table: dict, space_group, ndiv, A_metric: np.ndarray, params: MergeParameters = MergeParameters(),
          value: str = "rate", sigma: str = "sigma", groups: VoxelGroups | None = None):
    """Merge observation rows into ASU voxels.

    Parameters
    ----------
    table : observation columns (H, K, L, ``value``, ``sigma``, ...).
    A_metric : reciprocal metric G* = AᵀA (1/Å²) for |s| of voxel centres.
    groups : the rows' :class:`VoxelGroups` (made from ``table`` when None; pass it to merge
        other values of the same rows without mapping them to the ASU again).

    Returns
    -------
    merged : dict with H, K, L (ASU, 1/nᵢ units), h, k, l (fractional), intensity, sigma, n, s,
        intensity_half1/2 (the means of the random half-sets, NaN where a half has no observation;
        and ``friedel`` when anomalous); stats : per-shell dict of arrays; rejected : count.
    """
    if groups is None:
        groups = VoxelGroups.of(table, space_group, ndiv, params.anomalous)
    elif len(groups.group) != len(table["H"]):
        raise ValueError(f"groups of {len(groups.group)} rows given for a table of {len(table['H'])}")
    group, n_groups = groups.group, len(groups.keys)
    values = np.asarray(table[value], dtype=np.float64)
    sig = np.asarray(table[sigma], dtype=np.float64)
    keep = np.isfinite(values) & np.isfinite(sig) & (sig > 0)
    rejected = 0
    # each round rejects at most the worst observation of each voxel, so that one gross outlier
    # cannot drag its voxel's mean far enough to condemn the good observations with it
    for _ in range(8 if params.outlier_k else 0):
        dropped = outlier_round(group, values, sig, keep, n_groups, params.outlier_k)
        if dropped <= 0:
            break
        rejected += dropped
    mean, err, n = _weighted_mean(group, n_groups, values, sig, keep)
    asu_voxels = groups.asu[groups.first]
    frac = asu_voxels / np.asarray(ndiv, dtype=np.float64)
    s = voxel_s(asu_voxels, ndiv, A_metric)
    present = n > 0
    merged = {"H": asu_voxels[present, 0], "K": asu_voxels[present, 1], "L": asu_voxels[present, 2],
              "h": frac[present, 0], "k": frac[present, 1], "l": frac[present, 2],
              "intensity": mean[present], "sigma": err[present], "n": n[present].astype(np.int64), "s": s[present]}
    if params.anomalous:
        merged["friedel"] = (groups.keys[present] % 2).astype(np.int8)
    # random half-sets
    rng = np.random.default_rng(params.seed)
    half = rng.random(len(values)) < 0.5
    halves = []
    for i, h in enumerate((half, ~half)):
        m, e, nn = _weighted_mean(group, n_groups, values, sig, keep & h)
        halves.append((m[present], e[present], nn[present]))
        merged[f"intensity_half{i + 1}"] = np.where(nn[present] > 0, m[present], np.nan)
    stats = shell_statistics(merged, halves, params.n_shells)
    return merged, stats, rejected


def equal_volume_edges(s_min: float, s_max: float, n_shells: int) -> np.ndarray:
    """Edges (Å⁻¹) of ``n_shells`` shells of equal reciprocal volume from s_min to just beyond s_max."""
    return np.cbrt(np.linspace(s_min**3, s_max**3 * (1 + 1e-9), n_shells + 1))


def shell_of(s, edges: np.ndarray) -> np.ndarray:
    """The shell of each |s| (values outside the edges go to the first or last shell)."""
    return np.clip(np.searchsorted(edges, s, side="right") - 1, 0, len(edges) - 2)


def shell_statistics(merged: dict, halves, n_shells: int) -> dict:
    """Per-shell n, ⟨I⟩, variance, ⟨I/σ⟩, CC½, CC*, R-split (equal-volume shells in |s|)."""
    s = merged["s"]
    positive = s > 0
    smin, smax = (s[positive].min(), s.max()) if positive.any() else (0.0, 1.0)
    edges = equal_volume_edges(smin, smax, n_shells)
    shell = shell_of(s, edges)
    (ia, _, na), (ib, _, nb) = halves
    out = {k: np.zeros(n_shells) for k in ("d_max", "d_min", "n", "mean_I", "var_I", "mean_I_over_sigma",
                                            "cc_half", "cc_star", "r_split", "n_pairs")}
    out["d_max"] = 1 / np.maximum(edges[:-1], 1e-12)
    out["d_min"] = 1 / edges[1:]
    for i in range(n_shells):
        sel = shell == i
        out["n"][i] = sel.sum()
        if not sel.any():
            out["mean_I"][i] = out["var_I"][i] = out["mean_I_over_sigma"][i] = np.nan
            out["cc_half"][i] = out["cc_star"][i] = out["r_split"][i] = np.nan
            continue
        values = merged["intensity"][sel]
        out["mean_I"][i] = values.mean()
        out["var_I"][i] = values.var()
        out["mean_I_over_sigma"][i] = np.mean(values / merged["sigma"][sel])
        pair = sel & (na > 0) & (nb > 0)
        out["n_pairs"][i] = pair.sum()
        if pair.sum() >= 3 and np.std(ia[pair]) > 0 and np.std(ib[pair]) > 0:
            cc = np.corrcoef(ia[pair], ib[pair])[0, 1]
            out["cc_half"][i] = cc
            out["cc_star"][i] = np.sqrt(2 * cc / (1 + cc)) if cc > 0 else np.nan
            out["r_split"][i] = np.sum(np.abs(ia[pair] - ib[pair])) / (np.sqrt(2) * 0.5 * np.sum(ia[pair] + ib[pair]))
        else:
            out["cc_half"][i] = out["cc_star"][i] = out["r_split"][i] = np.nan
    return out


def expand_to_grid(merged: dict, space_group, ndiv, columns=("intensity", "sigma")):
    """Expand ASU voxels to every symmetry mate on a dense grid (NaN where unmeasured).

    Returns one array of shape (2Hm+1, 2Km+1, 2Lm+1) per name in ``columns`` (index [i, j, k] is
    the voxel H = i − Hm, K = j − Km, L = k − Lm) and the integer axes (−Hm … Hm, …)."""
    ops = np.rint(_grid_operators(space_group, ndiv)).astype(np.int64)
    asu = np.column_stack([merged["H"], merged["K"], merged["L"]]).astype(np.int64)
    images = np.concatenate([asu @ op for op in ops])
    hmax = np.abs(images).max(axis=0) if len(images) else np.zeros(3, np.int64)
    shape = tuple(2 * hmax + 1)
    idx = images + hmax
    grids = []
    for name in columns:
        grid = np.full(shape, np.nan)
        grid[idx[:, 0], idx[:, 1], idx[:, 2]] = np.tile(merged[name], len(ops))
        grids.append(grid)
    axes = [np.arange(-m, m + 1) for m in hmax]
    return (*grids, axes)


def mate_agreement(table: dict, space_group, ndiv, A_metric, n_shells: int = 10, fine_bins: int = 100,
                   value: str = "rate") -> dict:
    """Agreement of symmetry mates observed in different batches, before merging.

    The isotropic part is removed first: each observation minus the mean of all observations
    in its fine |s| bin (``fine_bins`` equal-width bins). For every ASU voxel seen in at least
    two batches, the observations from its lowest and highest batch form a pair. Returns per
    shell (equal-volume in |s|) the number of pairs, the mean intensity and the Pearson CC of
    the pairs' anisotropic parts.
    """
    voxels = np.column_stack([table["H"], table["K"], table["L"]])
    asu, _ = map_to_asu(voxels, space_group, ndiv)
    s = voxel_s(voxels, ndiv, A_metric)
    values = np.asarray(table[value], dtype=np.float64)
    fine = np.linspace(s.min(), s.max() * (1 + 1e-9), fine_bins + 1)
    fb = np.clip(np.searchsorted(fine, s, side="right") - 1, 0, fine_bins - 1)
    fine_mean = np.bincount(fb, weights=values, minlength=fine_bins) / np.maximum(np.bincount(fb, minlength=fine_bins), 1)
    aniso = values - fine_mean[fb]
    _, group = np.unique(pack_voxels(asu), return_inverse=True)
    batch = np.asarray(table["batch"])
    order = np.lexsort((batch, group))
    g_sorted = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g_sorted)) + 1]
    ends = np.r_[starts[1:], len(order)] - 1
    first, last = order[starts], order[ends]
    pair = batch[first] != batch[last]
    first, last = first[pair], last[pair]
    s_pair = s[first]
    edges = equal_volume_edges(s.min(), s.max(), n_shells)
    shell = shell_of(s_pair, edges)
    out = {"d_max": 1 / np.maximum(edges[:-1], 1e-12), "d_min": 1 / edges[1:], "n_pairs": np.zeros(n_shells, int),
           "mean_I": np.full(n_shells, np.nan), "cc": np.full(n_shells, np.nan)}
    for i in range(n_shells):
        sel = shell == i
        out["n_pairs"][i] = sel.sum()
        if sel.sum() >= 3:
            out["mean_I"][i] = 0.5 * (values[first[sel]].mean() + values[last[sel]].mean())
            out["cc"][i] = np.corrcoef(aniso[first[sel]], aniso[last[sel]])[0, 1]
    out["overall_cc"] = float(np.corrcoef(aniso[first], aniso[last])[0, 1]) if len(first) > 2 else float("nan")
    return out
