"""The driver of the streaming pass: frames, wedges, flushes, batch tags and the profile.

The driver reads the frames once (one :class:`~gpudiffuse.io.frames.FrameSource`), cuts them
into chunks that never straddle a wedge, computes each frame's inverse setting matrix, hands the
chunks to an engine and flushes the engine at every wedge boundary. Each flush becomes rows of
an :class:`~gpudiffuse.integration.record.AccumulatorRecord` tagged with the sweep's batch and
the wedge; the per-frame isotropic profile of the diffuse pixels is kept for the simple
isotropic scale. Engines are chosen by name (see :mod:`.engines`).
"""

from __future__ import annotations

import numpy as np

from ..io.frames import FrameSource
from ..observations import concat_rows
from .bragg_filter import HISTOGRAM_COLUMNS, wedge_flags
from .engines.base import BraggTest, SweepContext, engine_class
from .pixels import PROFILE_BINS, frame_list, profile_edges, wedge_numbers
from .record import AccumulatorRecord, IntegrationResult

__all__ = ["integrate_sweep", "sweep_context", "chunk_plan", "wedge_blocks"]


def sweep_context(sweep, pixels, grid, peak_model=None, absent=None, background=None,
                  histogram_max=None) -> SweepContext:
    """The per-sweep constants every engine receives."""
    edges = profile_edges(grid.dmin)
    profile_bin = np.clip(np.searchsorted(edges, pixels.s_norm) - 1, 0, PROFILE_BINS - 1).astype(np.int32)
    return SweepContext(pixels, grid, BraggTest.from_model(peak_model, absent),
                        tuple(float(x) for x in sweep.panel.trusted_range), profile_bin, PROFILE_BINS,
                        background, histogram_max)


def chunk_plan(wedges: np.ndarray, frames: np.ndarray, chunk_size: int) -> list[tuple[int, np.ndarray]]:
    """(wedge, frames) chunks of at most ``chunk_size`` frames, never across a wedge boundary."""
    plan = []
    for w in np.unique(wedges):
        block = frames[wedges == w]
        plan += [(int(w), block[i: i + chunk_size]) for i in range(0, len(block), chunk_size)]
    return plan


def wedge_blocks(sweep, params, n_blocks: int) -> list[np.ndarray]:
    """The sweep's frames cut into at most ``n_blocks`` blocks of whole wedges (for parallel runs)."""
    frames = frame_list(sweep, params.frames)
    wedges = wedge_numbers(sweep.scan, frames, params)
    unique = np.unique(wedges)
    groups = np.array_split(unique, max(1, min(n_blocks, len(unique))))
    return [frames[np.isin(wedges, g)] for g in groups if len(g)]


def integrate_sweep(sweep, pixels, grid, peak_model, absent, params, engine: str = "numpy", background=None,
                    progress_bar=None, frames=None) -> IntegrationResult:
    """Stream frames of one sweep (all of ``params.frames``, or the 0-based ``frames`` given)
    through engine ``engine``. Returns the summable :class:`IntegrationResult`."""
    frames = frame_list(sweep, params.frames) if frames is None else np.asarray(frames, dtype=np.int64)
    context = sweep_context(sweep, pixels, grid, peak_model, absent, background, params.histogram_max)
    worker = engine_class(engine)(context)
    plan = chunk_plan(wedge_numbers(sweep.scan, frames, params), frames, params.chunk_size)
    n_frames = sweep.scan.num_frames
    profile_counts = np.zeros((n_frames, PROFILE_BINS))
    profile_kt = np.zeros((n_frames, PROFILE_BINS))
    blocks = {"diffuse": [], "excluded": []}
    zingers = 0
    # with the filter's grid set, the histograms are for the filter: it runs on each wedge as it is
    # complete, so that only one wedge's histograms are ever held (without it, they are returned)
    filter_flags = {}
    filter_now = params.histogram_max is not None and params.filter_ndiv is not None

    def flush(wedge):
        nonlocal zingers
        sums = worker.flush()
        for name, columns in zip(("diffuse", "excluded"), sums.sets):
            voxels = grid.voxels_of(columns.pop("cell"), columns.pop("sub"))
            n = len(voxels)
            tagged = {"batch": np.full(n, sweep.batch, np.int32), "wedge": np.full(n, wedge, np.int32),
                      "H": voxels[:, 0].astype(np.int32), "K": voxels[:, 1].astype(np.int32),
                      "L": voxels[:, 2].astype(np.int32)}
            tagged.update(columns)
            if filter_now:
                if name == "diffuse" and n:  # the filter wants the wedge's rows in canonical order
                    tagged = AccumulatorRecord.from_columns(tagged).rows()
                    filter_flags.update(wedge_flags(tagged, params.ndiv, params.filter_ndiv))
                tagged = {k: v for k, v in tagged.items() if k not in HISTOGRAM_COLUMNS}
            blocks[name].append(tagged)
        profile_counts[sums.frame_numbers] += sums.profile_counts
        profile_kt[sums.frame_numbers] += sums.profile_kt
        zingers += sums.zingers

    current = None
    source = FrameSource(sweep, blocks=[block for _, block in plan])
    for (wedge, block), chunk in zip(plan, source):
        if len(chunk.frame_indices) != len(block):
            raise RuntimeError("frame source chunking does not match the wedge chunks")
        if current is not None and wedge != current:
            flush(current)
        current = wedge
        inverse = np.stack([np.linalg.inv(sweep.setting_matrix(int(z))) for z in block])
        worker.add(chunk.data.reshape(len(block), -1), block, inverse, sweep.scan.exposure_times[block])
        if progress_bar is not None:
            progress_bar.update(len(block))
    if current is not None:
        flush(current)
    return IntegrationResult(AccumulatorRecord.from_columns(concat_rows(blocks["diffuse"])),
                             AccumulatorRecord.from_columns(concat_rows(blocks["excluded"])),
                             {sweep.batch: profile_counts}, {sweep.batch: profile_kt}, zingers, filter_flags)
