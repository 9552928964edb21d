"""Prefetching frame source: yields chunks of frames, decoding ahead on a thread pool.

Memory is bounded by ``chunk_size × (prefetch + 1)`` frames whatever the dataset size.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import ImageError
from .images import read_image

__all__ = ["FrameChunk", "FrameSource"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameChunk:
    """A block of consecutive frames of one sweep.

    frame_indices : (n,) 0-based frame numbers within the sweep's scan.
    exposure_times : (n,) seconds.
    data : (n, n_slow, n_fast) raw counts in the file's integer type.
    """

    frame_indices: np.ndarray
    exposure_times: np.ndarray
    data: np.ndarray


class FrameSource:
    """Iterate over the frames of a sweep in chunks.

    Parameters
    ----------
    sweep : geometry.Sweep
    frames : optional sequence of 0-based frame indices (default: all).
    chunk_size : frames per chunk.
    workers : decoding threads (fabio/h5py release the GIL while decompressing).
    prefetch : chunks decoded ahead of the consumer.
    blocks : optional explicit list of frame-index arrays, one per chunk (overrides frames).
    """

    def __init__(self, sweep, frames=None, chunk_size: int = 8, workers: int = 2, prefetch: int = 1, blocks=None):
        self.sweep = sweep
        n = sweep.scan.num_frames
        self.blocks = None if blocks is None else [np.asarray(b, dtype=np.int64) for b in blocks]
        if self.blocks is not None:
            frames = np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.int64)
        self.frames = np.arange(n) if frames is None else np.asarray(frames, dtype=np.int64)
        if self.frames.size and (self.frames.min() < 0 or self.frames.max() >= n):
            raise ImageError(f"{sweep.source}: frame range outside the {n} frames of the scan")
        self.chunk_size = max(1, int(chunk_size))
        self.workers = max(1, int(workers))
        self.prefetch = max(0, int(prefetch))

    def __len__(self) -> int:
        return len(self.frames)

    def _read_one(self, z: int) -> np.ndarray:
        path = self.sweep.images[z]
        index = None if self.sweep.image_indices is None else self.sweep.image_indices[z]
        data = read_image(path, index)
        expected = self.sweep.panel.shape
        if data.shape != expected:
            raise ImageError(
                f"image {path} is {data.shape[1]}x{data.shape[0]} pixels but the geometry says "
                f"{expected[1]}x{expected[0]} (NX x NY)"
            )
        if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
            raise ImageError(f"image {path} contains NaN or infinite values")
        return data

    def _read_chunk(self, pool, zs) -> FrameChunk:
        arrays = list(pool.map(self._read_one, zs))
        dtype = np.result_type(*[a.dtype for a in arrays])
        data = np.empty((len(arrays),) + arrays[0].shape, dtype=dtype)
        for i, a in enumerate(arrays):
            data[i] = a
        return FrameChunk(np.asarray(zs), self.sweep.scan.exposure_times[np.asarray(zs)], data)

    def __iter__(self):
        if self.blocks is not None:
            blocks = self.blocks
        else:
            starts = range(0, len(self.frames), self.chunk_size)
            blocks = [self.frames[s: s + self.chunk_size] for s in starts]
        with ThreadPoolExecutor(max_workers=self.workers) as decode_pool, \
                ThreadPoolExecutor(max_workers=1) as chunk_pool:
            pending = []
            for block in blocks[: self.prefetch + 1]:
                pending.append(chunk_pool.submit(self._read_chunk, decode_pool, block))
            next_block = len(pending)
            while pending:
                chunk = pending.pop(0).result()
                if next_block < len(blocks):
                    pending.append(chunk_pool.submit(self._read_chunk, decode_pool, blocks[next_block]))
                    next_block += 1
                yield chunk
