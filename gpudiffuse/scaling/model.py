"""Scaling model I_obs ≈ a(ix, iy, z) · d(region) · [ b(z) · I(hkl) + c(|s|, z) ] (DESIGN §10).

Every component is a set of control points with linear (hat-function) interpolation:

* ``b``  per batch, piecewise linear in frame z                                (dimensionless)
* ``c``  per batch, bilinear in (|s|, z)                                       (intensity units)
* ``a``  per batch, trilinear in (ix, iy, z) on a coarse grid over the detector (dimensionless)
* ``d``  one factor per detector region (Pilatus/Eiger module), shared by all batches

Degeneracies are removed in the parametrisation: the model uses *effective* values
b/mean(b) (overall scale), a divided by its mean over the detector plane at each (batch, z)
node (a carries no per-frame scale, that is b's job), d/mean(d), and c minus its mean over
batches and frame nodes at each |s| node: an offset c₀(|s|) common to every frame is the same as
adding c₀ to every Î at that |s| (broken only weakly by b's change), so it is given to Î
(``centre_c``; with ``centre_c=False`` one node of c is pinned to zero instead, which fixes only
the constant). The |s|-only part of a, an exact degeneracy with Î's resolution dependence, is
held at zero by a penalty (:func:`radial_operator`). The loss is therefore
unchanged along the redundant directions of the raw parameters.

Observation coordinates are precomputed into interpolation indices and weights
(:class:`Design`), shared by the JAX joint fit and the alternating baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import scipy.sparse as sp

from ..errors import GpudiffuseError

__all__ = ["ScaleOptions", "BScale", "COffset", "ASurface", "DRegions", "ScaleParams", "Design", "build_design",
           "effective", "penalty_operators", "radial_operator", "initial_params"]


class BScale(NamedTuple):
    """b: (n_batches · n_z,) control points, batch-major; dimensionless scale per frame node."""

    values: np.ndarray


class COffset(NamedTuple):
    """c: (n_batches · n_s · n_z,) control points (batch, |s| node, z node); intensity units."""

    values: np.ndarray


class ASurface(NamedTuple):
    """a: (n_batches · n_x · n_y · n_z,) control points (batch, ix node, iy node, z node)."""

    values: np.ndarray


class DRegions(NamedTuple):
    """d: (n_regions,) one factor per detector region."""

    values: np.ndarray


class ScaleParams(NamedTuple):
    b: BScale
    c: COffset
    a: ASurface
    d: DRegions


METHODS = ("joint", "lbfgs", "alternating")


@dataclass(frozen=True)
class ScaleOptions:
    """Grid sizes and fit settings.

    frames_per_b_node : spacing of b's control points in frames (per batch, at least 2 nodes).
    c_nodes : (|s| nodes, frame nodes) of c; a_nodes : (x, y, frame) nodes of a. A frame count of
    None (the default) is derived from the data: one node per ``frames_per_c_node`` /
    ``frames_per_a_node`` frames of the longest sweep, at least 2, so long sweeps get proportionally
    more control points along the rotation.
    multipliers : relative weights of the penalties (× trace(data)/trace(penalty)); ``radial_a``
    weighs the constraint that a has no part depending on |s| alone (see :func:`radial_operator`).
    outlier_rounds : k of the successive two-sided rejections |r| > k·rms.
    method : ``joint`` (Gauss–Newton, default), ``lbfgs`` (optax) or ``alternating`` (baseline).
    max_iterations : iteration limit per round. Gauss–Newton stops when the Newton decrement
    gᵀH⁻¹g ≤ ``gradient_tolerance`` × loss or no model value moves by more than
    ``step_tolerance`` (relative to max(1, |v|)); L-BFGS and the alternating fit when the loss
    falls by less than ``tolerance`` (relative) per iteration over ten iterations.
    """

    frames_per_b_node: int = 5
    c_nodes: tuple[int, int | None] = (6, None)
    a_nodes: tuple[int, int, int | None] = (5, 5, None)
    frames_per_c_node: int = 20
    frames_per_a_node: int = 20
    smooth_b: float = 1e-1
    smooth_c: float = 1e-1
    ridge_c: float = 1e-4
    smooth_a: float = 1.0
    radial_a: float = 10.0
    centre_c: bool = True
    d_to_one: float = 1e-5
    outlier_rounds: tuple[float, ...] = (10.0, 5.0)
    max_iterations: int = 500
    tolerance: float = 1e-9
    method: str = "joint"
    step_tolerance: float = 1e-8
    gradient_tolerance: float = 1e-10

    def __post_init__(self):
        if self.method not in METHODS:
            raise GpudiffuseError(f"unknown scaling method {self.method!r} ({', '.join(METHODS)})")
        if self.max_iterations < 1:
            raise GpudiffuseError(f"the scaling iteration limit must be at least 1 (got {self.max_iterations})")
        counts = [n for n in (*self.c_nodes, *self.a_nodes) if n is not None]
        spacings = (self.frames_per_b_node, self.frames_per_c_node, self.frames_per_a_node)
        if len(self.c_nodes) != 2 or len(self.a_nodes) != 3:
            raise GpudiffuseError("c_nodes takes (|s| nodes, frame nodes) and a_nodes (x, y, frame nodes)")
        if min(counts) < 1 or min(spacings) < 1:
            raise GpudiffuseError("scaling grid sizes and node spacings must be positive")


@dataclass
class Design:
    """Per-observation interpolation indices/weights and the static structure of the model.

    Row i of component b interpolates its nodes ``b_node[i] + b_offsets`` (the corners of its
    cell: the offsets are the same for every row) with weights ``wb[i]`` (N, 2); likewise c (4
    corners over |s| × frame) and a (8 over x × y × frame). Only the first corner is stored per
    row (10⁷ rows: 115 MB instead of 534); ``ib``, ``ic``, ``ia`` give the (N, K) node arrays."""

    PER_ROW: ClassVar[tuple] = ("b_node", "wb", "c_node", "wc", "a_node", "wa", "region")

    b_node: np.ndarray
    wb: np.ndarray
    c_node: np.ndarray
    wc: np.ndarray
    a_node: np.ndarray
    wa: np.ndarray
    region: np.ndarray
    n_b: int
    n_c: int
    n_a: int
    n_regions: int
    a_group: np.ndarray      # (n_a,) index of the (batch, z node) normalisation group of each a node
    n_a_groups: int
    c_free: np.ndarray       # (n_c,) False at the pinned node (when c is not centred)
    shape_b: tuple
    shape_c: tuple
    shape_a: tuple
    ranges: dict             # coordinate ranges, for applying and saving the model
    c_centred: bool = False  # c minus its mean over batches and frame nodes at each |s| node
    b_offsets: np.ndarray = None  # (2,) int32: the cell corners' node offsets from b_node
    c_offsets: np.ndarray = None  # (4,)
    a_offsets: np.ndarray = None  # (8,)

    @property
    def value_edges(self) -> np.ndarray:
        """(5,) int64: where b, c, a and d start among the concatenated model values, then their total."""
        return np.cumsum([0, self.n_b, self.n_c, self.n_a, self.n_regions]).astype(np.int64)

    @property
    def ib(self):
        """(N, 2) nodes of b per row (made on each access)."""
        return self.b_node[:, None] + self.b_offsets

    @property
    def ic(self):
        """(N, 4) nodes of c per row (made on each access)."""
        return self.c_node[:, None] + self.c_offsets

    @property
    def ia(self):
        """(N, 8) nodes of a per row (made on each access)."""
        return self.a_node[:, None] + self.a_offsets


def frame_nodes(n_frames: int, frames_per_node: int) -> int:
    """Control points along a sweep of ``n_frames``: one per ``frames_per_node`` frames, at least 2."""
    return max(2, int(np.ceil(n_frames / frames_per_node)) + 1)


def _chunked_rows(n: int, width: int) -> np.ndarray:
    """An (n, width) float64 view of a zeroed buffer of whole row chunks, so that the joint fit can
    hand the buffer to JAX without another padded copy (see :func:`.residuals.padded_rows`)."""
    from .row_chunks import padded_length  # noqa: PLC0415

    return np.zeros((padded_length(n), width))[:n]


def build_design(table: dict, batches, n_frames: dict, options: ScaleOptions, image_size, regions=None,
                 s_range=None) -> Design:
    """Interpolation structure for the observations of ``table`` (columns batch, frame, s, ix, iy).

    batches : the batch ids expected (each must have observations); n_frames : batch → frames.
    regions : optional (n_slow, n_fast) int map of detector regions (−1 outside).
    s_range : (min, max) |s| of c's nodes (default: the table's range), to apply a fitted model
    to another table.
    """
    from .row_kernels import design_rows  # noqa: PLC0415

    batch_ids = {b: i for i, b in enumerate(sorted(batches))}
    nb_batches = len(batch_ids)
    batch = np.searchsorted(np.array(sorted(batch_ids)), np.asarray(table["batch"])).astype(np.int64)
    longest = max(n_frames[b] for b in batch_ids)
    n_bz = frame_nodes(longest, options.frames_per_b_node)
    ns, nzc = options.c_nodes
    nzc = frame_nodes(longest, options.frames_per_c_node) if nzc is None else nzc
    nx, ny, nza = options.a_nodes
    nza = frame_nodes(longest, options.frames_per_a_node) if nza is None else nza
    fast, slow = image_size
    s_all = np.asarray(table["s"], dtype=np.float64)
    smin, smax = (float(s_all.min()), float(s_all.max())) if s_range is None else s_range
    last_frame = np.array([n_frames[b] - 1 for b in sorted(batch_ids)], dtype=np.float64)
    n = len(batch)
    b_node, wb = np.empty(n, np.int32), _chunked_rows(n, 2)
    c_node, wc = np.empty(n, np.int32), _chunked_rows(n, 4)
    a_node, wa = np.empty(n, np.int32), _chunked_rows(n, 8)
    region = np.empty(n, np.int32)
    # corner k of a cell is its first node plus a fixed offset: each hat pair is (i0, i0 + 1), or
    # (0, 0) on an axis of one node (whose second weight is 0)
    def up(n_nodes):  # the second corner's step along an axis
        return int(n_nodes > 1)

    b_offsets = np.array([0, up(n_bz)], np.int32)
    c_offsets = np.array([ds * up(ns) * nzc + dz * up(nzc) for ds in (0, 1) for dz in (0, 1)], np.int32)
    a_offsets = np.array([(dx * up(nx) * ny + dy * up(ny)) * nza + dz * up(nza)
                          for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)], np.int32)
    # one compiled pass: NumPy's dozens of (N,) temporaries cost more in page faults than in arithmetic
    region_map = np.zeros((1, 1), np.int64) if regions is None else np.ascontiguousarray(regions)
    design_rows(batch, np.asarray(table["frame"], np.float64), s_all, np.asarray(table["ix"], np.float64),
                np.asarray(table["iy"], np.float64), last_frame, np.array([n_bz, ns, nzc, nx, ny, nza], np.int64),
                np.array([smin, smax]), np.array([fast, slow], np.int64), region_map, regions is not None,
                b_node, wb, c_node, wc, a_node, wa, region)
    n_regions = 1 if regions is None else int(regions.max()) + 1

    # a normalisation groups: (batch, z node)
    grid_b, grid_x, grid_y, grid_z = np.meshgrid(np.arange(nb_batches), np.arange(nx), np.arange(ny), np.arange(nza),
                                                 indexing="ij")
    a_group = (grid_b * nza + grid_z).ravel()

    c_free = np.ones((nb_batches, ns, nzc), bool)
    if not options.centre_c:
        c_free[0, 0, 0] = False  # one pinned node fixes the constant shared by c and Î
    return Design(b_node, wb, c_node, wc, a_node, wa, region, nb_batches * n_bz,
                  nb_batches * ns * nzc, nb_batches * nx * ny * nza, n_regions, a_group, nb_batches * nza,
                  c_free.ravel(), (nb_batches, n_bz), (nb_batches, ns, nzc), (nb_batches, nx, ny, nza),
                  {"s": (smin, smax), "image_size": tuple(image_size), "batches": sorted(batch_ids),
                   "n_frames": {int(b): int(n_frames[b]) for b in batch_ids}}, options.centre_c,
                  b_offsets, c_offsets, a_offsets)


def initial_params(design: Design) -> ScaleParams:
    return ScaleParams(BScale(np.ones(design.n_b)), COffset(np.zeros(design.n_c)), ASurface(np.ones(design.n_a)),
                       DRegions(np.ones(design.n_regions)))


def effective(params: ScaleParams, design: Design, xp=np):
    """Effective (degeneracy-free) b, c, a, d from raw parameters; ``xp`` is numpy or jax.numpy."""
    b = params.b.values / xp.mean(params.b.values)
    if design.c_centred:
        # the part of c common to all frames and batches, per |s| node, belongs to Î (see Design)
        c3 = params.c.values.reshape(design.shape_c)
        c = (c3 - c3.mean(axis=(0, 2), keepdims=True)).reshape(-1)
    else:
        c = params.c.values * xp.asarray(design.c_free, dtype=params.c.values.dtype)
    group = design.a_group
    if xp is np:
        sums = np.bincount(group, weights=params.a.values, minlength=design.n_a_groups)
    else:
        import jax  # noqa: PLC0415

        sums = jax.ops.segment_sum(params.a.values, xp.asarray(group), num_segments=design.n_a_groups)
    counts = np.bincount(group, minlength=design.n_a_groups)
    a = params.a.values / (sums / xp.asarray(counts, dtype=params.a.values.dtype))[group]
    d = params.d.values / xp.mean(params.d.values)
    return b, c, a, d


def _second_difference(shape, axis):
    """Sparse matrix of second differences along ``axis`` of a C-ordered array of ``shape``."""
    n = int(np.prod(shape))
    index = np.arange(n).reshape(shape)
    if shape[axis] < 3:
        return sp.csr_matrix((0, n))
    lo = np.take(index, range(0, shape[axis] - 2), axis=axis).ravel()
    mid = np.take(index, range(1, shape[axis] - 1), axis=axis).ravel()
    hi = np.take(index, range(2, shape[axis]), axis=axis).ravel()
    rows = np.arange(len(mid))
    return sp.csr_matrix((np.repeat([1.0, -2.0, 1.0], len(mid)), (np.tile(rows, 3), np.concatenate([lo, mid, hi]))),
                         shape=(len(mid), n))


def _plane_laplacian(shape):
    """Sparse 'centre minus neighbour mean' over axes 1 and 2 (the detector plane) of (batch, x, y, z)."""
    n = int(np.prod(shape))
    index = np.arange(n).reshape(shape)
    padded = np.pad(index, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-1)
    neighbours = [padded[:, 1 + dx:1 + dx + shape[1], 1 + dy:1 + dy + shape[2], :].ravel()
                  for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    count = sum((nb >= 0).astype(np.int64) for nb in neighbours)
    centre = index.ravel()
    has = count > 0
    row_of = np.cumsum(has) - 1
    rows, cols, values = [row_of[has]], [centre[has]], [np.ones(int(has.sum()))]
    for nb in neighbours:
        ok = has & (nb >= 0)
        rows.append(row_of[ok])
        cols.append(nb[ok])
        values.append(-1.0 / count[ok])
    return sp.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(int(has.sum()), n))


def radial_operator(design: Design) -> sp.csr_matrix:
    """Rows R (one per |s| node of c, dense, stored as CSR) with R·a = 0 when a has no |s|-only part.

    |s| of a pixel is the same on every frame, so a(ix, iy) ∝ f(|s(ix, iy)|) shared by all frames
    and batches rescales every voxel's Î by f(|s|) and leaves the data term unchanged: an exact
    degeneracy that smoothness alone would leave to chance. Row k is the mean of a over the
    observations in |s| bin k (c's |s| hat functions, all batches and frames pooled) minus the mean
    over all observations, so only the resolution *shape* of a is pinned, not its level.
    """
    from .row_kernels import radial_sums  # noqa: PLC0415

    ns, nzc = design.shape_c[1], design.shape_c[2]
    n = len(design.a_node)
    node_sums, bin_totals, overall = radial_sums(design.c_node, design.c_offsets, design.wc, design.a_node,
                                                 design.a_offsets, design.wa, ns, nzc, design.n_a)
    bin_mean = node_sums / np.maximum(bin_totals, 1e-300)[:, None]
    return sp.csr_matrix(bin_mean - overall[None, :] / n)


def penalty_operators(design: Design) -> dict:
    """Sparse (CSR) penalty matrices per component (rows: penalty residuals on the effective
    values); ``d`` is a residual d − 1 handled separately. Sparse because long sweeps have
    thousands of control points along the frame axis."""
    b_ops = _second_difference(design.shape_b, 1)
    c_ops = sp.vstack([_second_difference(design.shape_c, 1), _second_difference(design.shape_c, 2)]).tocsr()
    a_ops = sp.vstack([_second_difference(design.shape_a, ax) for ax in (1, 2, 3)]
                      + [_plane_laplacian(design.shape_a)]).tocsr()
    return {"b": b_ops, "c": c_ops, "c_ridge": sp.identity(design.n_c, format="csr"), "a": a_ops,
            "a_radial": radial_operator(design), "d": sp.identity(design.n_regions, format="csr")}
