"""The truth of a simulated dataset on the voxel grid (``voxel_truth``, stored in truth.h5) and how
close a merged map is to it: Pearson CC, overall and per shell (re-exported by
:mod:`gpudiffuse.simulate`)."""

from __future__ import annotations

import numpy as np

from .merge import equal_volume_edges, shell_of

__all__ = ["voxel_truth", "compare_with_truth", "format_accuracy"]


def voxel_truth(model, hkl_centres, ndiv, samples: int = 3) -> np.ndarray:
    """Truth I_D + I_iso averaged over voxels centred at ``hkl_centres`` (N, 3) of size 1/ndiv,
    by a ``samples``³ midpoint rule."""
    centres = np.asarray(hkl_centres, dtype=np.float64)
    width = 1.0 / np.asarray(ndiv, dtype=np.float64)
    offsets = (np.arange(samples) + 0.5) / samples - 0.5
    grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3) * width
    total = np.zeros(len(centres))
    for chunk in range(0, len(centres), 200_000):
        c = centres[chunk: chunk + 200_000][:, None, :] + grid[None, :, :]
        s_norm = np.linalg.norm(c @ model.A.T, axis=-1)
        total[chunk: chunk + 200_000] = np.mean(model.diffuse(c) + model.isotropic(s_norm), axis=1)
    return total


def compare_with_truth(merged: dict, model, ndiv, n_shells: int = 10) -> dict:
    """Pearson CC of merged intensities with the voxel-averaged truth, overall and per shell
    (equal-volume shells in |s|), with each shell's mean I/σ and size."""
    centres = np.column_stack([merged["h"], merged["k"], merged["l"]])
    truth = voxel_truth(model, centres, ndiv)
    s = merged["s"]
    smin = s[s > 0].min() if np.any(s > 0) else 0.0
    edges = equal_volume_edges(smin, s.max(), n_shells)
    shell = shell_of(s, edges)
    rows = []
    for i in range(n_shells):
        sel = shell == i
        cc = np.corrcoef(merged["intensity"][sel], truth[sel])[0, 1] if sel.sum() > 2 else np.nan
        rows.append({"d_max": 1 / max(edges[i], 1e-12), "d_min": 1 / edges[i + 1], "n": int(sel.sum()), "cc": float(cc),
                     "i_over_sigma": float(np.mean(merged["intensity"][sel] / merged["sigma"][sel]))})
    return {"overall_cc": float(np.corrcoef(merged["intensity"], truth)[0, 1]), "shells": rows, "truth": truth}


def format_accuracy(accuracy: dict) -> str:
    lines = [" d_max  d_min       n   <I/sig>   CC(truth)"]
    for r in accuracy["shells"]:
        lines.append(f"{r['d_max']:6.2f} {r['d_min']:6.2f} {r['n']:7d} {r['i_over_sigma']:9.1f} {r['cc']:10.4f}")
    lines.append(f"overall CC with the truth: {accuracy['overall_cc']:.4f}")
    return "\n".join(lines)
