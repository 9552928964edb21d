"""The accumulator record: per-voxel sums of the streaming pass, one schema for every engine.

A record is a set of columns keyed by (batch, wedge, H, K, L) — H, K, L the integer voxel
indices of ``grid`` — in canonical (lexicographic) key order. Records are summable: ``a + b``
merges rows with equal keys by adding their fields, so the sums of any engine, any block order
or any Dask worker combine exactly (integer fields bit-exact; float64 fields to rounding, and
exactly when every key lives in one block, as with blocks of whole wedges).

The schema (:data:`FIELDS`) is the only place the fields are listed; the engines' accumulator
layouts and the CUDA header ``kernels/gd_record.cuh`` follow its order (checked by a test).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..observations import concat_rows

__all__ = ["Field", "FIELDS", "KEY", "AccumulatorRecord", "IntegrationResult", "int_fields", "float_fields",
           "DEFAULT_HISTOGRAM_MAX"]

DEFAULT_HISTOGRAM_MAX = 20


@dataclass(frozen=True)
class Field:
    """One accumulated quantity. ``group``: always present (None), only with a background run
    ("background"), or only when count histograms are collected ("histogram")."""

    name: str
    dtype: type
    unit: str
    doc: str
    group: str | None = None


FIELDS = (
    Field("counts", np.int64, "counts", "Σ raw counts"),
    Field("pixels", np.int64, "pixel-frames", "number of pixel-frames"),
    Field("frame_sum", np.int64, "frames", "Σ 0-based frame index"),
    Field("kt_sum", np.float64, "sr·s", "Σ K·t, K = Ω·P·E·A the correction product, t the exposure"),
    Field("d3s_sum", np.float64, "Å⁻³", "Σ reciprocal volume swept per pixel-frame"),
    Field("ix_sum", np.float64, "px", "Σ fast pixel index"),
    Field("iy_sum", np.float64, "px", "Σ slow pixel index"),
    Field("s_sum", np.float64, "Å⁻¹", "Σ |s|"),
    Field("bkg_sum", np.float64, "counts", "Σ background rate·t", "background"),
    Field("bkg_var", np.float64, "counts²", "Σ background variance·t²", "background"),
    Field("overflow_counts", np.int64, "counts", "Σ counts of pixel-frames above the histogram's c_max", "histogram"),
)
# count_histogram (rows, c_max + 1) int64: pixel-frames with count c = 0 … c_max (group "histogram")
KEY = ("batch", "wedge", "H", "K", "L")


def _selected(groups):
    return tuple(f for f in FIELDS if f.group is None or f.group in groups)


def int_fields(groups=()) -> tuple[str, ...]:
    """Integer fields in schema order for the optional groups switched on."""
    return tuple(f.name for f in _selected(groups) if f.dtype is np.int64)


def float_fields(groups=()) -> tuple[str, ...]:
    return tuple(f.name for f in _selected(groups) if f.dtype is np.float64)


@dataclass
class AccumulatorRecord:
    """Columns of voxel sums in canonical key order. ``columns`` holds the key columns (int32)
    and the fields; ``count_histogram`` (rows, c_max + 1) when collected."""

    columns: dict

    @classmethod
    def from_columns(cls, columns: dict) -> "AccumulatorRecord":
        """Put arbitrary rows (possibly with repeated keys) into canonical form."""
        if not columns:
            return cls.empty()
        return cls(_sorted_unique(columns))

    @classmethod
    def empty(cls) -> "AccumulatorRecord":
        return cls({})

    def __len__(self) -> int:
        return 0 if not self.columns else len(self.columns["H"])

    def __add__(self, other: "AccumulatorRecord") -> "AccumulatorRecord":
        return AccumulatorRecord.sum([self, other])

    @classmethod
    def sum(cls, records) -> "AccumulatorRecord":
        """The sum of any number of records, in one canonical sort (equal to adding them pairwise)."""
        parts = [r for r in records if len(r)]
        if len(parts) < 2:
            return parts[0] if parts else cls.empty()
        fields = set(parts[0].columns)
        for r in parts[1:]:
            if set(r.columns) != fields:
                raise ValueError("cannot add accumulator records with different fields "
                                 f"({sorted(fields)} vs {sorted(r.columns)})")
        return cls(_sorted_unique(concat_rows([r.columns for r in parts])))

    def rows(self) -> dict:
        """The columns as a plain dict (empty dict for an empty record)."""
        return dict(self.columns)


def _sorted_unique(columns: dict) -> dict:
    """Sort rows by KEY and add the fields of rows with equal keys (integer sums exact)."""
    n = len(columns[KEY[0]])
    order, first = _key_order([np.asarray(columns[k]) for k in KEY])
    starts = np.flatnonzero(first) if n else np.zeros(0, np.int64)
    out = {}
    for k in KEY:
        out[k] = np.asarray(columns[k])[order][starts].astype(np.int32)
    for k, values in columns.items():
        if k in KEY:
            continue
        v = np.asarray(values)[order]
        if len(starts) == len(v):
            out[k] = v
        else:
            out[k] = np.add.reduceat(v, starts, axis=0) if len(v) else v
    return out


def _key_order(keys: list) -> tuple[np.ndarray, np.ndarray]:
    """Lexicographic order of the rows by the key columns ``keys``, and for the sorted rows a flag
    that is True where a key starts (differs from the row before). One int64 sort of a mixed-radix
    code when it fits (no (N, 5) key matrix), else a lexsort."""
    n = len(keys[0])
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    low = [int(k.min()) for k in keys]
    spans = [int(k.max()) - lo + 1 for k, lo in zip(keys, low)]
    if np.prod(np.array(spans, dtype=object)) < 2**62:
        code = np.zeros(n, np.int64)
        for column, lo, span in zip(keys, low, spans):
            code *= span
            code += column
            code -= lo
        order = np.argsort(code, kind="stable")
        code = code[order]
        first = np.ones(n, bool)
        np.not_equal(code[1:], code[:-1], out=first[1:])
        return order, first
    stacked = np.column_stack([np.asarray(k, dtype=np.int64) for k in keys])
    order = np.lexsort(stacked.T[::-1])
    stacked = stacked[order]
    first = np.ones(n, bool)
    first[1:] = np.any(stacked[1:] != stacked[:-1], axis=1)
    return order, first


@dataclass
class IntegrationResult:
    """What the streaming pass returns for a set of frames: diffuse and excluded (Bragg)
    records, the per-frame isotropic profile of the diffuse pixels (counts and Σ K·t per |s| bin,
    rows = frames of the sweep), the number of zinger pixel-frames dropped and, when the pass ran
    the statistical filter wedge by wedge, its flags ((batch, wedge) → ``bragg_filter.wedge_flags``
    entry; blocks hold whole wedges, so summing is a union). Summable."""

    diffuse: AccumulatorRecord
    excluded: AccumulatorRecord
    profile_counts: dict = field(default_factory=dict)   # batch -> (n_frames, bins)
    profile_kt: dict = field(default_factory=dict)
    zingers: int = 0
    filter_flags: dict = field(default_factory=dict)

    def __add__(self, other: "IntegrationResult") -> "IntegrationResult":
        return IntegrationResult.sum([self, other])

    @classmethod
    def sum(cls, results) -> "IntegrationResult":
        """The sum of block results: records in one canonical sort, profiles frame by frame."""
        results = list(results)
        counts, kt = {}, {}
        for r in results:
            for batch in r.profile_counts:
                if batch in counts:
                    counts[batch] = counts[batch] + r.profile_counts[batch]
                    kt[batch] = kt[batch] + r.profile_kt[batch]
                else:
                    counts[batch], kt[batch] = r.profile_counts[batch], r.profile_kt[batch]
        flags = {}
        for r in results:
            flags.update(r.filter_flags)
        return cls(AccumulatorRecord.sum(r.diffuse for r in results), AccumulatorRecord.sum(r.excluded for r in results),
                   counts, kt, sum(r.zingers for r in results), flags)
