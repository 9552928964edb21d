"""The truth of a simulated dataset on the voxel grid (``voxel_truth``, stored in truth.h5) and how
close a merged map is to it: Pearson CC, overall and per shell (re-exported by
:mod:`gpudiffuse.simulate`)."""

from __future__ import annotations

import numpy as np

from .merge import equal_volume_edges, shell_of

__all__ = ["voxel_truth", "compare_with_truth", "format_accuracy", "bragg_counts_excluded",
           "moved_rows_by_class"]


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


def bragg_counts_excluded(data: str, moved, ndiv, geometry: str | None = None, strengths=(1.0,),
                          frame_step: int = 3) -> list[float]:
    """Shares of a simulated dataset's expected Bragg-peak counts whose (wedge, voxel) row a filter
    moved to the excluded table, over every ``frame_step``-th frame: one share per strength, all
    from one pass over the frames (the model's Bragg term is the costly part).

    A Bragg-peak pixel: expected Bragg counts (the simulator's model, rotation sub-samples averaged)
    above ``strength`` times the Poisson noise of the scattering under it, on a pixel the processing
    can use (the static pixel mask: module gaps, dead pixels). Its voxel is where the
    processing put it: the pixel's hkl from ``geometry``'s files (default: the data's own, right,
    geometry) on the grid ``ndiv``; its wedge from the default wedge width. ``moved``: (n, 4) ints
    (wedge, H, K, L) of one sweep, e.g. ``/entry/statistical_filter/moved_*`` of integrate.nxs."""
    from .geometry.vectors import pixel_s_vectors  # noqa: PLC0415 (keeps this module light)
    from .geometry.xds import load_xds  # noqa: PLC0415
    from .integration.pixels import IntegrationParameters, wedge_numbers  # noqa: PLC0415
    from .io.images import read_image  # noqa: PLC0415
    from .masking.pixel import static_pixel_mask  # noqa: PLC0415
    from .simulate import load_model  # noqa: PLC0415

    model, sweep = load_model(data), load_xds(geometry or data)[0]
    p = model.params
    moved_set = set(map(tuple, np.asarray(moved, dtype=np.int64).tolist()))
    s = pixel_s_vectors(sweep.panel, sweep.beam).reshape(-1, 3)
    factor = model.corrections(model.pixel_positions().reshape(-1, 3))
    first = read_image(sweep.images[0], None if sweep.image_indices is None else sweep.image_indices[0])
    usable = static_pixel_mask(sweep.panel, first, sweep.untrusted).reshape(-1)
    wedges = wedge_numbers(sweep.scan, np.arange(sweep.scan.num_frames), IntegrationParameters())
    inv_a = np.linalg.inv(model.A)
    ndiv = np.asarray(ndiv)
    strengths = np.asarray(strengths, dtype=np.float64)
    total, excluded = np.zeros(len(strengths)), np.zeros(len(strengths))
    for z in range(0, sweep.scan.num_frames, frame_step):
        true_hkl = s @ (inv_a @ model.rotation(p.phi0 + (z + 0.5) * p.dphi).T).T
        bragg = np.mean([model.bragg(s @ (inv_a @ model.rotation(
            p.phi0 + (z + (k + 0.5) / p.sub_samples) * p.dphi).T).T) for k in range(p.sub_samples)], axis=0)
        expected = p.exposure * p.scale * model.decay(z) * factor
        background = expected * (model.diffuse(true_hkl) + model.isotropic(np.linalg.norm(s, axis=1)))
        # the weakest threshold's pixels hold every stronger one's
        candidate = usable & (expected * bragg > strengths.min() * np.sqrt(np.maximum(background, 1e-12)))
        hkl = s[candidate] @ np.linalg.inv(sweep.setting_matrix(z)).T
        voxels = np.rint(hkl * ndiv).astype(np.int64)
        hit = np.array([(int(wedges[z]), *v) in moved_set for v in voxels.tolist()], dtype=bool)
        peak_counts = (expected * bragg)[candidate]
        noise = np.sqrt(np.maximum(background[candidate], 1e-12))
        for i, strength in enumerate(strengths):
            peak = peak_counts > strength * noise
            total[i] += peak_counts[peak].sum()
            excluded[i] += (peak_counts[peak] * hit[peak]).sum()
    if np.any(total <= 0):
        raise ValueError(f"{data}: no Bragg-peak pixel above {strengths[total <= 0][0]} σ in the frames looked at")
    return (excluded / total).tolist()


def moved_rows_by_class(integration, space_group: str) -> dict:
    """Of a statistical-filter run's voxel-wedge rows (an ``Integration``, e.g. from
    ``steps.integrate.read_integration``), the share moved to the excluded table among those centred
    on allowed reflections, on systematically absent ones (``space_group``'s conditions, by gemmi)
    and off integer hkl ("bragg_free": a simulated Bragg peak is far narrower than a voxel), with
    the number of rows of each class. The rows are on the integration grid, which must have an odd
    ndiv above 1 on every axis (on integer hkl every row is centred on a reflection)."""
    import gemmi  # noqa: PLC0415

    ndiv = np.asarray(integration.ndiv)
    if np.any(ndiv < 3) or np.any(ndiv % 2 == 0):
        raise ValueError(f"ndiv {ndiv.tolist()}: the classes need an odd ndiv of 3 or more on every axis")
    rows = {t: np.column_stack([getattr(integration, t)[k] for k in ("H", "K", "L")]) for t in ("diffuse", "excluded")}
    voxels = np.vstack([rows["diffuse"], rows["excluded"]])
    moved = np.r_[np.zeros(len(rows["diffuse"]), bool), np.ones(len(rows["excluded"]), bool)]
    centred = np.all(voxels % ndiv == 0, axis=1)
    ops = gemmi.SpaceGroup(space_group).operations()
    absent = np.zeros(len(voxels), bool)
    absent[centred] = [ops.is_systematically_absent(h) for h in (voxels[centred] // ndiv).tolist()]
    classes = {"allowed": centred & ~absent, "absent": absent, "bragg_free": ~centred}
    return {"moved_fraction": {k: float(moved[sel].mean()) if sel.any() else float("nan")
                               for k, sel in classes.items()},
            "rows": {k: int(sel.sum()) for k, sel in classes.items()}}
