"""The CUDA engine of the streaming integration pass (CuPy + ``kernels/integrate.cu``).

Same inputs and outputs as :func:`gpudiffuse.integrate.integrate_sweep`. Per-pixel constants
are uploaded once; raw frames travel in their native integer type through pinned host
buffers, alternating between two CUDA streams so that the copy of chunk i+1 overlaps the
kernels of chunk i. Each chunk runs two launches over all its pixel-frames: one marks the
cells it touches (rows are then assigned on the device), one accumulates with 64-bit
integer and float64 atomics. Integer sums are exact, so they equal the NumPy engine's
wherever the voxel assignment agrees; float sums agree to rounding.
"""

from __future__ import annotations

import logging

import numpy as np

from .backend import load_module
from .errors import DeviceError
from .integrate import INT_FIELDS, _frame_list, profile_edges
from .observations import concat_rows

__all__ = ["integrate_sweep_gpu"]

logger = logging.getLogger(__name__)

_KERNEL_TYPES = {np.dtype(np.uint16): "u16", np.dtype(np.int32): "i32", np.dtype(np.uint32): "u32"}
_FRAME_PARAMS = np.dtype([("Minv", np.float64, 9), ("kt_scale", np.float64), ("frame_index", np.float64)])
_FLOAT_FIELDS = ("kt_sum", "d3s_sum", "ix_sum", "iy_sum", "s_sum")
_BLOCK = 256


def _names():
    return tuple(f"gd_{kind}_{t}" for kind in ("mark_cells", "accumulate") for t in ("u16", "i32", "u32"))


def integrate_sweep_gpu(sweep, pixels, grid, peak_model, absent, params, backend, background_rate=None,
                        progress_bar=None):
    """Stream one sweep through the CUDA kernels. Returns what ``integrate_sweep`` returns."""
    from .io.frames import FrameSource  # noqa: PLC0415

    if background_rate is not None:
        raise DeviceError("--background is not supported by the GPU engine yet; use --device cpu")
    cp = backend.xp
    module = load_module("integrate", _names())
    frames = _frame_list(sweep, params.frames)
    n_pix = len(pixels.index)
    n_sub = grid.n_sub
    edges = profile_edges(grid.dmin)
    n_bins = len(edges) - 1
    profile_bin = np.clip(np.searchsorted(edges, pixels.s_norm) - 1, 0, n_bins - 1).astype(np.int32)
    d = {name: cp.asarray(np.ascontiguousarray(value)) for name, value in (
        ("index", pixels.index.astype(np.int64)), ("s", pixels.s), ("k", pixels.k), ("d3s", pixels.d3s),
        ("ix", pixels.ix), ("iy", pixels.iy), ("s_norm", pixels.s_norm),
        ("threshold", np.where(np.isfinite(pixels.threshold), pixels.threshold, 1e300)),
        ("ndiv", np.array(grid.ndiv, np.int32)), ("hmax", np.array(grid.hmax, np.int32)),
        ("profile_bin", profile_bin))}
    use_bragg = peak_model is not None
    if use_bragg:
        d["offset"] = cp.asarray(peak_model.offset)
        d["inv_cov"] = cp.asarray(np.ascontiguousarray(peak_model.inverse_covariance))
        d["absent"] = cp.asarray(absent.astype(np.uint8))
        d["absent_half"] = cp.asarray((np.asarray(absent.shape) // 2).astype(np.int32))
    else:
        d["offset"], d["inv_cov"] = cp.zeros(3), cp.eye(3)
        d["absent"], d["absent_half"] = cp.zeros(1, np.uint8), cp.zeros(3, np.int32)
    lut = cp.full(grid.n_cells, -1, dtype=cp.int64)
    touched = cp.zeros(grid.n_cells, dtype=cp.uint8)
    state = {"cells": [], "rows": 0, "capacity": 0}
    zingers = cp.zeros(1, dtype=cp.uint64)
    n_frames = sweep.scan.num_frames
    profile_counts = np.zeros((n_frames, n_bins))
    profile_kt = np.zeros((n_frames, n_bins))
    min_valid, overload = (float(x) for x in sweep.panel.trusted_range)
    streams = [cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)]
    rows_d, rows_x = [], []

    def allocate(capacity):
        old_int, old_float = state.get("acc_int"), state.get("acc_float")
        acc_int = cp.zeros((2, 3, capacity * n_sub), dtype=cp.uint64)
        acc_float = cp.zeros((2, 5, capacity * n_sub), dtype=cp.float64)
        if old_int is not None:
            used = old_int.shape[2]
            acc_int[:, :, :used] = old_int
            acc_float[:, :, :used] = old_float
        state.update(acc_int=acc_int, acc_float=acc_float, capacity=capacity)

    allocate(4096)

    def flush(wedge):
        size = state["rows"] * n_sub
        cells = cp.asnumpy(cp.concatenate(state["cells"])) if state["cells"] else np.zeros(0, np.int64)
        acc_int = cp.asnumpy(state["acc_int"][:, :, :size])
        acc_float = cp.asnumpy(state["acc_float"][:, :, :size])
        for s, rows in ((0, rows_d), (1, rows_x)):
            seen = np.flatnonzero(acc_int[s, 1] > 0)
            voxels = grid.voxels_of(cells[seen // n_sub], seen % n_sub)
            block = {"H": voxels[:, 0].astype(np.int32), "K": voxels[:, 1].astype(np.int32),
                     "L": voxels[:, 2].astype(np.int32)}
            for j, f in enumerate(INT_FIELDS):
                block[f] = acc_int[s, j, seen].astype(np.int64)
            for j, f in enumerate(_FLOAT_FIELDS):
                block[f] = acc_float[s, j, seen]
            block["wedge"] = np.full(len(seen), wedge, np.int32)
            block["batch"] = np.full(len(seen), sweep.batch, np.int32)
            rows.append(block)
        if len(cells):
            lut[cp.asarray(cells)] = -1
        state.update(cells=[], rows=0)
        state["acc_int"][...] = 0
        state["acc_float"][...] = 0

    wedges = frames // params.wedge_frames
    chunks = []
    for w in np.unique(wedges):
        block = frames[wedges == w]
        chunks += [(int(w), block[i: i + params.chunk_size]) for i in range(0, len(block), params.chunk_size)]
    source = iter(FrameSource(sweep, blocks=[c for _, c in chunks]))
    current_wedge = None
    pinned = {}
    for i, (wedge, block) in enumerate(chunks):
        chunk = _take(source, len(block))
        if current_wedge is not None and wedge != current_wedge:
            flush(current_wedge)
        current_wedge = wedge
        raw = chunk.data
        if raw.dtype not in _KERNEL_TYPES:
            raw = raw.astype(np.int32)
        kind = _KERNEL_TYPES[raw.dtype]
        stream = streams[i % 2]
        key = (i % 2, raw.shape, raw.dtype)
        if key not in pinned:
            memory = cp.cuda.alloc_pinned_memory(raw.nbytes)
            pinned[key] = np.frombuffer(memory, raw.dtype, raw.size).reshape(raw.shape)
        host = pinned[key]
        with stream:
            stream.synchronize()  # the pinned buffer of this slot is free again
            host[...] = raw
            device_frames = cp.asarray(host)  # async H2D on this stream
            fp = np.zeros(len(block), _FRAME_PARAMS)
            for j, z in enumerate(block):
                fp[j]["Minv"] = np.linalg.inv(sweep.setting_matrix(int(z))).ravel()
                fp[j]["kt_scale"] = sweep.scan.exposure_times[z]
                fp[j]["frame_index"] = z
            fp_device = cp.asarray(fp.view(np.uint8))
            total = len(block) * n_pix
            grid_dim = ((total + _BLOCK - 1) // _BLOCK,)
            frame_stride = np.int64(raw.shape[1] * raw.shape[2])
            module.get_function(f"gd_mark_cells_{kind}")(
                grid_dim, (_BLOCK,), (device_frames, np.int32(len(block)), d["index"], np.int32(n_pix), frame_stride,
                                      d["s"], fp_device, d["ndiv"], d["hmax"], np.float64(min_valid),
                                      np.float64(overload), touched))
            new = cp.flatnonzero((touched > 0) & (lut < 0))
            if new.size:
                lut[new] = cp.arange(state["rows"], state["rows"] + new.size, dtype=cp.int64)
                state["cells"].append(new)
                state["rows"] += int(new.size)
                if state["rows"] > state["capacity"]:
                    allocate(max(2 * state["capacity"], state["rows"]))
            touched[...] = 0
            pc = cp.zeros((len(block), n_bins))
            pk = cp.zeros((len(block), n_bins))
            size = np.int64(state["capacity"] * n_sub)
            module.get_function(f"gd_accumulate_{kind}")(
                grid_dim, (_BLOCK,), (device_frames, np.int32(len(block)), d["index"], np.int32(n_pix), frame_stride,
                                      d["s"], d["k"], d["d3s"], d["ix"], d["iy"], d["s_norm"], d["threshold"],
                                      fp_device, d["ndiv"], d["hmax"], lut, np.int32(n_sub), np.float64(min_valid),
                                      np.float64(overload), np.int32(use_bragg), d["offset"], d["inv_cov"],
                                      np.float64(peak_model.sigma_cutoff ** 2 if use_bragg else 0.0), d["absent"],
                                      d["absent_half"], state["acc_int"], state["acc_float"], size, zingers,
                                      d["profile_bin"], np.int32(n_bins), pc, pk))
            profile_counts[block] = cp.asnumpy(pc)
            profile_kt[block] = cp.asnumpy(pk)
        if progress_bar is not None:
            progress_bar.update(len(block))
    for stream in streams:
        stream.synchronize()
    if current_wedge is not None:
        flush(current_wedge)
    logger.info("GPU memory in use: %.1f MiB", cp.get_default_memory_pool().used_bytes() / 2**20)

    profile = {"edges": edges, "counts": profile_counts, "kt": profile_kt, "frames": frames}
    return concat_rows(rows_d), concat_rows(rows_x), profile, int(zingers.get()[0])


def _take(source, n):
    """Next chunk of exactly n frames from the frame source."""
    chunk = next(source)
    if len(chunk.frame_indices) != n:
        raise RuntimeError("frame source chunking does not match the wedge chunks")
    return chunk
