"""Write frames as an Eiger file writer does: an NXmx master file linking to data files.

Used by the simulator (``gpudiffuse simulate --format eiger``) so that tests have Eiger data
with known truth. Layout: ``<prefix>_master.h5`` with ``/entry/data/data_NNNNNN`` external
links (relative names) to ``<prefix>_data_NNNNNN.h5:/entry/data/data``, uint32 frames
compressed with bitshuffle-LZ4, masked pixels flagged with 2³²−1 in every frame, and
``/entry/instrument/detector/{pixel_mask, saturation_value, count_time, ...}``.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["EigerWriter", "GAP_BIT", "DEAD_BIT", "USER_BIT"]

GAP_BIT, DEAD_BIT, USER_BIT = 0, 1, 8
FLAG = np.uint32(2**32 - 1)


class EigerWriter:
    """Collects frames (int arrays; negative values = masked) into data files of
    ``frames_per_file`` frames and writes the master on :meth:`close`."""

    def __init__(self, folder, prefix, n_frames, shape, pixel_mask, saturation_value, count_time, pixel_size_mm,
                 thickness_mm, frames_per_file=10):
        import h5py  # noqa: PLC0415
        import hdf5plugin  # noqa: PLC0415

        self.h5py, self.compression = h5py, hdf5plugin.Bitshuffle(cname="lz4")
        self.folder, self.prefix, self.n_frames = folder, prefix, int(n_frames)
        self.shape, self.per_file = tuple(shape), int(frames_per_file)
        self.pixel_mask = np.asarray(pixel_mask, dtype=np.uint32)
        self.meta = {"saturation_value": int(saturation_value), "count_time": float(count_time),
                     "x_pixel_size": pixel_size_mm * 1e-3, "y_pixel_size": pixel_size_mm * 1e-3,
                     "sensor_thickness": thickness_mm * 1e-3}
        self.files, self._handle, self._written = [], None, 0

    def _data_name(self, number):
        return f"{self.prefix}_data_{number:06d}.h5"

    def add(self, frame: np.ndarray) -> None:
        if self._written % self.per_file == 0:
            self._close_data()
            number = len(self.files) + 1
            n = min(self.per_file, self.n_frames - self._written)
            path = os.path.join(self.folder, self._data_name(number))
            self._handle = self.h5py.File(path, "w")
            self._dataset = self._handle.create_dataset("entry/data/data", shape=(n, *self.shape), dtype=np.uint32,
                                                        chunks=(1, *self.shape), **self.compression)
            self.files.append((number, n))
            self._slot = 0
        data = np.where(frame < 0, FLAG, np.minimum(frame, FLAG - 1)).astype(np.uint32)
        self._dataset[self._slot] = data
        self._slot += 1
        self._written += 1

    def _close_data(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self) -> str:
        """Finish the last data file and write the master; returns the master's path."""
        self._close_data()
        if self._written != self.n_frames:
            raise RuntimeError(f"EigerWriter: {self._written} frames written, {self.n_frames} announced")
        master = os.path.join(self.folder, f"{self.prefix}_master.h5")
        with self.h5py.File(master, "w") as f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            data = entry.create_group("data")
            data.attrs["NX_class"] = "NXdata"
            for number, _ in self.files:
                data[f"data_{number:06d}"] = self.h5py.ExternalLink(self._data_name(number), "/entry/data/data")
            detector = entry.create_group("instrument/detector")
            detector.attrs["NX_class"] = "NXdetector"
            detector.create_dataset("pixel_mask", data=self.pixel_mask, compression="gzip")
            for key, value in self.meta.items():
                detector[key] = value
            detector["sensor_material"] = "Si"
        return master
