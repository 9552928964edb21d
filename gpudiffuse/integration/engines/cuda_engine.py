"""The CUDA engine (CuPy + ``kernels/integrate.cu``).

Per-sweep constants are uploaded once; raw frames travel in their native integer type through
pinned host buffers, alternating between two CUDA streams so that the copy of chunk i+1
overlaps the kernels of chunk i. Accumulation uses 64-bit integer and float64 atomics into the
record's fields (positions from ``kernels/gd_record.cuh``). Integer sums are exact, so they
equal the other engines' wherever the voxel assignment agrees; the kernels are compiled without
fused multiply-add so that it does.

Two layouts of the accumulators:

* *dense* (when every cell of the table fits in a quarter of the free device memory): one row
  per cell, one kernel launch per chunk and no host synchronisation inside the chunk loop; a
  flush compacts the voxels with pixels on the device and copies only those;
* *compact* (large tables): a first launch marks the cells a chunk touches and rows are given
  to new cells on the device (one synchronisation per chunk to size them).

The per-frame profile is privatised per block (a shared-memory histogram, then one global
add per non-empty bin per block), stays on the device and is copied once per wedge.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .base import EngineSums, check_accumulator_memory, collect_sets, register_engine

__all__ = ["CudaEngine"]

_KERNEL_TYPES = {np.dtype(np.uint16): "u16", np.dtype(np.int32): "i32", np.dtype(np.uint32): "u32"}
_FRAME_PARAMS = np.dtype([("Minv", np.float64, 9), ("exposure", np.float64), ("frame_index", np.float64)])
_BLOCK = 256


def _names():
    return tuple(f"gd_{kind}_{t}" for kind in ("mark_cells", "accumulate") for t in ("u16", "i32", "u32"))


class _DeviceRows:
    """Cell → row table on the device (same role as RowTable on the host)."""

    def __init__(self, cp, n_cells):
        self.cp = cp
        self.lut = cp.full(n_cells, -1, dtype=cp.int64)
        self.touched = cp.zeros(n_cells, dtype=cp.uint8)
        self._cells, self.n_rows = [], 0

    def assign_touched(self):
        cp = self.cp
        new = cp.flatnonzero((self.touched > 0) & (self.lut < 0))
        n_new = int(new.size)
        if n_new:
            self.lut[new] = cp.arange(self.n_rows, self.n_rows + n_new, dtype=cp.int64)
            self._cells.append(new)
            self.n_rows += n_new
        self.touched[...] = 0

    def cells(self):
        return self.cp.asnumpy(self.cp.concatenate(self._cells)) if self._cells else np.zeros(0, np.int64)

    def reset(self):
        if self._cells:
            self.lut[self.cp.concatenate(self._cells)] = -1
        self._cells, self.n_rows = [], 0


@register_engine("cuda")
class CudaEngine:
    """Two kernels per chunk on the GPU; accumulators stay on the device until a flush."""

    @classmethod
    def available(cls) -> bool:
        from ...backend import resolve_device  # noqa: PLC0415

        try:
            resolve_device("gpu")
        except Exception:
            return False
        return True

    def __init__(self, context, array_module=None, kernel_module=None):
        """``array_module``/``kernel_module`` replace CuPy and the NVRTC-compiled module (the tests
        run the same driver over the host build of the kernels, ``kernels/host_launch.cpp``)."""
        from ...backend import load_module, resolve_device  # noqa: PLC0415

        self.cp = cp = array_module if array_module is not None else resolve_device("gpu").xp
        self.module = kernel_module if kernel_module is not None else load_module("integrate", _names())
        self.context = context
        grid, pix = context.grid, context.pixels
        self.n_sub = grid.n_sub
        self.int_names, self.float_names = context.int_fields, context.float_fields
        self.c_max = -1 if context.histogram_max is None else int(context.histogram_max)
        up = lambda a, dtype=None: cp.asarray(np.ascontiguousarray(a, dtype=dtype))  # noqa: E731
        self.d = {"index": up(pix.index, np.int64), "s": up(pix.s, np.float64), "k": up(pix.k, np.float64),
                  "d3s": up(pix.d3s, np.float64), "ix": up(pix.ix, np.float64), "iy": up(pix.iy, np.float64),
                  "s_norm": up(pix.s_norm, np.float64),
                  "threshold": up(np.where(np.isfinite(pix.threshold), pix.threshold, 1e300), np.float64),
                  "ndiv": up(grid.ndiv, np.int32), "hmax": up(grid.hmax, np.int32),
                  "profile_bin": up(context.profile_bin, np.int32)}
        b = context.bragg
        if b is not None:
            self.bragg = (np.int32(1), up(b.offset), up(b.inverse_covariance), np.float64(b.cutoff2),
                          up(b.absent, np.uint8), up(b.absent_half, np.int32))
        else:
            self.bragg = (np.int32(0), cp.zeros(3), cp.eye(3), np.float64(0.0), cp.zeros(1, np.uint8),
                          cp.zeros(3, np.int32))
        bkg = context.background
        self.d["bkg_rate"] = up(bkg[0], np.float64) if bkg is not None else cp.zeros(1)
        self.d["bkg_var"] = up(bkg[1], np.float64) if bkg is not None else cp.zeros(1)
        self.dense = self._fits_densely(grid.n_cells)
        self.rows = _DeviceRows(cp, grid.n_cells)
        if self.dense:
            self.rows.lut = cp.arange(grid.n_cells, dtype=cp.int64)
        self.zingers = cp.zeros(1, dtype=cp.uint64)
        self.streams = [cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)]
        self.pinned, self.n_chunks = {}, 0
        self.acc_int = None
        self._allocate(grid.n_cells if self.dense else 4096)
        self._frames, self._pc, self._pk = [], [], []

    def _free_memory(self) -> int:
        try:
            return int(self.cp.cuda.runtime.memGetInfo()[0])
        except AttributeError:  # the host stand-in for CuPy
            return 8 << 30

    def _fits_densely(self, n_cells) -> bool:
        if getattr(self, "force_compact", False):
            return False
        per_voxel = 2 * 8 * (len(self.int_names) + len(self.float_names) + max(self.c_max + 1, 0))
        need = n_cells * self.n_sub * per_voxel
        return need <= self._free_memory() // 4

    def _allocate(self, capacity):
        cp, size = self.cp, capacity * self.n_sub
        held = 0 if self.acc_int is None else self.acc_int.nbytes + self.acc_float.nbytes + self.hist.nbytes
        check_accumulator_memory(size, len(self.int_names) + len(self.float_names), self.c_max,
                                 0.5 * (self._free_memory() + held), "the GPU's free memory")
        acc_int = cp.zeros((2, len(self.int_names), size), dtype=cp.uint64)
        acc_float = cp.zeros((2, len(self.float_names), size), dtype=cp.float64)
        hist = cp.zeros((2, size if self.c_max >= 0 else 1, max(self.c_max, 0) + 1), dtype=cp.uint64)
        if self.acc_int is not None:
            used = self.acc_int.shape[2]
            acc_int[:, :, :used], acc_float[:, :, :used] = self.acc_int, self.acc_float
            if self.c_max >= 0:
                hist[:, :used] = self.hist
        self.acc_int, self.acc_float, self.hist, self.capacity = acc_int, acc_float, hist, capacity

    def add(self, frames, frame_numbers, inverse_setting, exposure):
        cp, d, ctx = self.cp, self.d, self.context
        raw = frames if frames.dtype in _KERNEL_TYPES else frames.astype(np.int32)
        kind = _KERNEL_TYPES[raw.dtype]
        slot = self.n_chunks % 2
        self.n_chunks += 1
        stream = self.streams[slot]
        key = (slot, raw.shape, raw.dtype)
        if key not in self.pinned:
            memory = cp.cuda.alloc_pinned_memory(raw.nbytes)
            self.pinned[key] = np.frombuffer(memory, raw.dtype, raw.size).reshape(raw.shape)
        host = self.pinned[key]
        n = len(frame_numbers)
        n_pix = len(ctx.pixels)
        with stream:
            stream.synchronize()  # the pinned buffer of this slot is free again
            host[...] = raw
            device_frames = cp.asarray(host)  # async H2D on this stream
            fp = np.zeros(n, _FRAME_PARAMS)
            fp["Minv"] = np.asarray(inverse_setting, np.float64).reshape(n, 9)
            fp["exposure"] = exposure
            fp["frame_index"] = frame_numbers
            fp_device = cp.asarray(fp.view(np.uint8))
            grid_dim = ((n * n_pix + _BLOCK - 1) // _BLOCK,)
            common = (device_frames, np.int32(n), d["index"], np.int32(n_pix), np.int64(raw.shape[1]), d["s"],
                      d["threshold"], fp_device, d["ndiv"], d["hmax"], *(np.float64(x) for x in ctx.trusted_range),
                      *self.bragg)
            if not self.dense:
                self.module.get_function(f"gd_mark_cells_{kind}")(grid_dim, (_BLOCK,), common + (self.rows.touched,))
                self.rows.assign_touched()  # the one host synchronisation per chunk of the compact layout
                if self.rows.n_rows > self.capacity:
                    self._allocate(max(2 * self.capacity, self.rows.n_rows))
            pc = cp.zeros((n, ctx.n_bins))
            pk = cp.zeros((n, ctx.n_bins))
            self.module.get_function(f"gd_accumulate_{kind}")(
                grid_dim, (_BLOCK,),
                common + (d["k"], d["d3s"], d["ix"], d["iy"], d["s_norm"], d["bkg_rate"], d["bkg_var"], self.rows.lut,
                          np.int32(self.n_sub), np.int32(len(self.int_names)), np.int32(len(self.float_names)),
                          np.int32(self.c_max), self.acc_int, self.acc_float, self.hist,
                          np.int64(self.capacity * self.n_sub), self.zingers, d["profile_bin"], pc, pk))
            self._frames.extend(int(z) for z in frame_numbers)
            self._pc.append(pc)
            self._pk.append(pk)

    def flush(self) -> EngineSums:
        cp = self.cp
        for stream in self.streams:
            stream.synchronize()
        sets = self._collect_dense() if self.dense else self._collect_compact()
        n_bins = self.context.n_bins
        pc = cp.asnumpy(cp.concatenate(self._pc)) if self._pc else np.zeros((0, n_bins))
        pk = cp.asnumpy(cp.concatenate(self._pk)) if self._pk else np.zeros((0, n_bins))
        out = EngineSums(sets, np.asarray(self._frames, np.int64), pc, pk, int(cp.asnumpy(self.zingers)[0]))
        if not self.dense:
            self.rows.reset()
        self.acc_int[...] = 0
        self.acc_float[...] = 0
        self.hist[...] = 0
        self.zingers[...] = 0
        self._frames, self._pc, self._pk = [], [], []
        return out

    def _collect_dense(self) -> tuple[dict, dict]:
        """Voxels with pixels, compacted on the device (row = cell): only they cross to the host."""
        cp, out = self.cp, []
        pixels = self.int_names.index("pixels")
        for s in range(2):
            seen = cp.flatnonzero(self.acc_int[s, pixels] > 0)
            block = {"cell": cp.asnumpy(seen // self.n_sub).astype(np.int64),
                     "sub": cp.asnumpy(seen % self.n_sub).astype(np.int64)}
            ints = cp.asnumpy(self.acc_int[s][:, seen]).astype(np.int64)
            floats = cp.asnumpy(self.acc_float[s][:, seen])
            for j, name in enumerate(self.int_names):
                block[name] = ints[j]
            for j, name in enumerate(self.float_names):
                block[name] = floats[j]
            if self.c_max >= 0:
                block["count_histogram"] = cp.asnumpy(self.hist[s][seen]).astype(np.int64)
            out.append(block)
        return out[0], out[1]

    def _collect_compact(self) -> tuple[dict, dict]:
        cp = self.cp
        size = self.rows.n_rows * self.n_sub
        # device layout (set, field, voxel) for coalescing; collect_sets takes (set, voxel, field)
        ints = cp.asnumpy(self.acc_int[:, :, :size]).astype(np.int64).transpose(0, 2, 1)
        floats = cp.asnumpy(self.acc_float[:, :, :size]).transpose(0, 2, 1)
        hist = cp.asnumpy(self.hist[:, :size]).astype(np.int64) if self.c_max >= 0 else None
        rows = SimpleNamespace(n_rows=self.rows.n_rows, cells=lambda cells=self.rows.cells(): cells)
        return collect_sets(rows, self.n_sub, ints, floats, self.int_names, self.float_names, hist)
