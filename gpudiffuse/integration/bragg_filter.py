"""The statistical Bragg filter applied to the sums of the streaming pass (DESIGN §7), so that one
pass over the frames suffices: the filter excludes whole voxels, so the diffuse sums of an
excluded (voxel, wedge) move to the excluded (Bragg) record after the pass.

Per sweep and wedge, the filter (``masking.statistical``) runs on that wedge's occupied voxels
of the filter grid: the pass's grid, or that grid divided by an odd factor r per axis, whose voxel
F = ⌊(H + (r − 1)/2) / r⌋ holds r³ whole voxels of the pass (histograms are sums, so the filter
voxel's histogram is the sum of theirs, exactly what a pass on the filter grid would have
collected). An excluded filter voxel takes every voxel of the pass inside it. (When --ndiv is the
coarser grid, the pass runs on the filter grid and ``steps.integrate`` adds its rows up onto
--ndiv afterwards.) A voxel excluded in wedge j is excluded from wedges j − 1, j and j + 1 of its
sweep (both neighbours: a peak near a wedge boundary shows in either). The pass runs the filter
on each wedge as soon as it is complete (:func:`wedge_flags`) and drops its count histograms; the
rows are moved once every wedge is done (:func:`move_flagged`).
"""

from __future__ import annotations

import logging

import numpy as np

from ..grid import coarser_voxels, pack_voxels
from ..masking.statistical import statistical_filter
from .record import KEY, AccumulatorRecord

__all__ = ["apply_statistical_filter", "wedge_flags", "move_flagged", "HISTOGRAM_COLUMNS"]

logger = logging.getLogger(__name__)

HISTOGRAM_COLUMNS = ("count_histogram", "overflow_counts")


def _groups(rows: dict):
    """(batch, wedge, slice) of the canonical rows (sorted by batch, wedge, H, K, L)."""
    if not rows:
        return
    pair = np.column_stack([rows["batch"], rows["wedge"]]).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, np.any(pair[1:] != pair[:-1], axis=1)])
    ends = np.r_[starts[1:], len(pair)]
    for a, b in zip(starts, ends):
        yield int(pair[a, 0]), int(pair[a, 1]), slice(a, b)


def apply_statistical_filter(diffuse: dict, excluded: dict, ndiv, filter_ndiv=None,
                             radius: float = 2.0) -> tuple[dict, dict, dict]:
    """Run the filter on every wedge of ``diffuse`` (rows with count histograms, on grid ``ndiv``)
    and move the excluded rows to ``excluded``: :func:`wedge_flags` then :func:`move_flagged`."""
    return move_flagged(diffuse, excluded, ndiv, wedge_flags(diffuse, ndiv, filter_ndiv, radius), filter_ndiv)


def _ratio(ndiv, filter_ndiv) -> np.ndarray:
    return np.asarray(ndiv, np.int64) // np.asarray(filter_ndiv if filter_ndiv is not None else ndiv, np.int64)


def wedge_flags(diffuse: dict, ndiv, filter_ndiv=None, radius: float = 2.0) -> dict:
    """The filter on each (batch, wedge) of ``diffuse`` (canonical rows with count histograms, on
    grid ``ndiv``; ``filter_ndiv``: the filter's grid, ``ndiv`` (the default) divided by odd
    factors). Returns {(batch, wedge): (packed codes of the excluded filter voxels, figures)},
    figures: the filter voxels, those removed by the walk and those with counts above c_max, and
    the summed D before and after the walk. The pass calls this as each wedge is complete, so that
    the histograms of one wedge at a time are kept."""
    ratio = _ratio(ndiv, filter_ndiv)
    filter_voxels = coarser_voxels(np.column_stack([diffuse[c] for c in ("H", "K", "L")]), ratio) \
        if len(diffuse.get("H", [])) else np.zeros((0, 3), np.int64)
    pooled = diffuse
    if np.any(ratio > 1):  # each filter voxel's histogram: the sum of its voxels' (the record's row sum)
        pooled = {"batch": diffuse["batch"], "wedge": diffuse["wedge"], "H": filter_voxels[:, 0],
                  "K": filter_voxels[:, 1], "L": filter_voxels[:, 2],
                  **{c: diffuse[c] for c in HISTOGRAM_COLUMNS}}
        pooled = AccumulatorRecord.from_columns(pooled).rows() if len(filter_voxels) else {}
    flags = {}
    for batch, wedge, rows in _groups(pooled):
        voxels = np.column_stack([pooled[c][rows] for c in ("H", "K", "L")])
        result = statistical_filter(voxels, pooled["count_histogram"][rows], pooled["overflow_counts"][rows], radius)
        flags[(batch, wedge)] = (pack_voxels(voxels[result.excluded]),
                                 {"removed": int(result.removed.sum()), "overflow": int(result.overflow.sum()),
                                  "summed_D": result.summed_D, "filter_voxels": len(voxels)})
    return flags


def move_flagged(diffuse: dict, excluded: dict, ndiv, flags: dict, filter_ndiv=None) -> tuple[dict, dict, dict]:
    """Move the diffuse rows whose filter voxel ``flags`` (of :func:`wedge_flags`) excluded in
    their wedge or a neighbouring one to ``excluded``. Returns (diffuse, excluded, summary) without
    histogram columns; summary: per (batch, wedge) the figures of ``flags`` with the rows moved and
    their pixel-frames; the moved rows' keys; the filter grid."""
    ratio = _ratio(ndiv, filter_ndiv)
    filter_voxels = coarser_voxels(np.column_stack([diffuse[c] for c in ("H", "K", "L")]), ratio) \
        if len(diffuse.get("H", [])) else np.zeros((0, 3), np.int64)
    per_wedge = {key: dict(figures) for key, (_, figures) in sorted(flags.items())}
    codes = pack_voxels(filter_voxels)
    move = np.zeros(len(codes), bool)
    nothing = np.zeros(0, np.int64)
    for batch, wedge, rows in _groups(diffuse):
        around = [flags[(batch, w)][0] if (batch, w) in flags else nothing for w in (wedge - 1, wedge, wedge + 1)]
        move[rows] = np.isin(codes[rows], np.concatenate(around))
        per_wedge[(batch, wedge)]["moved"] = int(move[rows].sum())
        per_wedge[(batch, wedge)]["pixel_frames_moved"] = int(diffuse["pixels"][rows][move[rows]].sum())
    strip = {k: v for k, v in diffuse.items() if k not in HISTOGRAM_COLUMNS}
    kept = {k: v[~move] for k, v in strip.items()}
    moved = {k: v[move] for k, v in strip.items()}
    others = {k: v for k, v in excluded.items() if k not in HISTOGRAM_COLUMNS}
    combined = AccumulatorRecord.sum([AccumulatorRecord(others), AccumulatorRecord.from_columns(moved)]).rows() \
        if move.any() else others
    summary = {"per_wedge": per_wedge, "moved_keys": {k: moved[k] for k in KEY} if move.any() else {},
               "filter_ndiv": tuple(int(n) for n in (filter_ndiv if filter_ndiv is not None else ndiv))}
    logger.info("statistical filter on ndiv %s: %d of %d voxel-wedge rows of ndiv %s (%d pixel-frames) moved to the "
                "excluded table; %d filter voxels removed by the walk, %d with counts above c_max",
                " ".join(map(str, summary["filter_ndiv"])), int(move.sum()), len(move),
                " ".join(str(int(n)) for n in ndiv),
                sum(w["pixel_frames_moved"] for w in per_wedge.values()), sum(w["removed"] for w in per_wedge.values()),
                sum(w["overflow"] for w in per_wedge.values()))
    return kept, combined, summary
