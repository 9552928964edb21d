"""The observation table: per (voxel, wedge, batch) rates, uncertainties and coordinates,
and the simple per-frame scale used until a fitted scaling model is applied.

rate = counts / Σ(K·t)  — the Poisson maximum-likelihood rate of a voxel of constant intensity;
σ = √max(counts, 1) / Σ(K·t) (a voxel with no counts gets the σ of one count, so that
weights stay finite); background rate and σ likewise from the background sums;
fraction = Σ d³s / (V*/∏nᵢ), the fraction of the voxel's reciprocal volume swept.
"""

from __future__ import annotations

import numpy as np

__all__ = ["observation_table", "isotropic_frame_scale", "concat_rows"]


def concat_rows(blocks: list[dict]) -> dict:
    blocks = [b for b in blocks if b]
    if not blocks:
        return {}
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def isotropic_frame_scale(profiles: dict) -> dict:
    """Per-frame scale b(z) of each batch from the isotropic profile of the diffuse pixels.

    P(|s|) = Σ counts / Σ K·t over all frames of all batches; b(z) = Σ counts(z) / Σ K·t(z)·P,
    normalised to a mean of 1 over every frame with data. ``profiles`` maps batch → the profile
    ({"counts", "kt"}: (n_frames, bins) arrays of the integration result); returns batch →
    (n_frames,) array.
    """
    total_counts = sum(p["counts"].sum(axis=0) for p in profiles.values())
    total_kt = sum(p["kt"].sum(axis=0) for p in profiles.values())
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_rate = np.where(total_kt > 0, total_counts / total_kt, 0.0)
    scales, all_values = {}, []
    for batch, p in profiles.items():
        predicted = p["kt"] @ mean_rate
        observed = p["counts"].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            b = np.where(predicted > 0, observed / predicted, np.nan)
        scales[batch] = b
        all_values.append(b[np.isfinite(b)])
    norm = np.mean(np.concatenate(all_values)) if all_values else 1.0
    out = {}
    for batch, b in scales.items():
        b = b / norm
        good = np.isfinite(b)
        if good.any() and not good.all():  # frames without data: nearest neighbour
            b = np.interp(np.arange(len(b)), np.flatnonzero(good), b[good])
        out[batch] = np.where(np.isfinite(b), b, 1.0)
    return out


def observation_table(rows: dict, reciprocal_volume: float, ndiv, frame_scale: dict | None = None,
                      min_pixels: int = 1, min_counts: int = 0) -> dict:
    """Columns of the observation table from accumulator rows (see ``integrate``)."""
    if not rows:
        return {}
    keep = (rows["pixels"] >= max(1, min_pixels)) & (rows["counts"] >= min_counts) & (rows["kt_sum"] > 0)
    r = {k: v[keep] for k, v in rows.items()}
    kt = r["kt_sum"]
    pixels = r["pixels"].astype(np.float64)
    frame = r["frame_sum"] / pixels
    scale = np.ones(len(kt))
    if frame_scale:
        for batch, b in frame_scale.items():
            sel = r["batch"] == batch
            scale[sel] = np.interp(frame[sel], np.arange(len(b)), b)
    table = {
        "H": r["H"], "K": r["K"], "L": r["L"], "batch": r["batch"], "wedge": r["wedge"],
        "counts": r["counts"], "pixels": r["pixels"],
        "rate": r["counts"] / kt / scale,
        "sigma": np.sqrt(np.maximum(r["counts"], 1)) / kt / scale,
        "fraction": r["d3s_sum"] / (reciprocal_volume / float(np.prod(ndiv))),
        "ix": r["ix_sum"] / pixels, "iy": r["iy_sum"] / pixels, "frame": frame, "s": r["s_sum"] / pixels,
        "scale": scale,
    }
    if "bkg_sum" in r:
        table["background_rate"] = r["bkg_sum"] / kt / scale
        table["background_sigma"] = np.sqrt(r["bkg_var"]) / kt / scale
    return table
