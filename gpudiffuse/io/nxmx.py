"""Eiger / NXmx image files as beamlines write them.

A *master* file holds the metadata (``/entry/instrument/detector``: ``pixel_mask``,
``saturation_value``, ``count_time``) and, in ``/entry/data``, HDF5 external links
``data_000001``, ``data_000002``, … to the *data* files, each with a 3-D stack
``/entry/data/data`` of frames (bitshuffle-LZ4 compressed through hdf5plugin). External links
are resolved here, relative to the master's folder as the Dectris file writer names them,
so that a missing or unreadable data file is reported by name.

``pixel_mask`` is the NXmx bit field of NXdetector (NeXus NXmx application definition,
NXdetector/pixel_mask): bit 0 gap (no sensor), 1 dead, 2 under-responding, 3 over-responding,
4 noisy, 6 part of a cluster of problematic pixels, 8 user-defined (e.g. the beamstop shadow),
31 virtual pixel. Any set bit masks the pixel, as dxtbx does (``pixel_mask == 0`` is the
static mask in ``dxtbx/nexus/__init__.py``). In the frames, masked pixels carry the largest
value of the frame's integer type (2³²−1 for 32-bit data), which is never a valid count.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import ImageError

__all__ = ["EigerMaster", "open_master", "read_frame", "master_of_template", "PIXEL_MASK_BITS",
           "flag_value"]

PIXEL_MASK_BITS = {0: "gap", 1: "dead", 2: "under-responding", 3: "over-responding", 4: "noisy",
                   6: "cluster of problematic pixels", 8: "user-defined", 31: "virtual"}


@dataclass(frozen=True)
class DataFile:
    """One data file: its path, the dataset inside, and its number of frames."""

    path: str
    dataset: str
    n_frames: int


@dataclass(frozen=True)
class EigerMaster:
    """What the master file says: data files in order, frame shape (n_slow, n_fast) and dtype,
    the pixel mask (uint32 bit field, or None), saturation value and count time (s) if given."""

    path: str
    data_files: tuple[DataFile, ...]
    shape: tuple[int, int]
    dtype: np.dtype
    pixel_mask: np.ndarray | None
    saturation_value: float | None
    count_time: float | None

    @property
    def n_frames(self) -> int:
        return sum(f.n_frames for f in self.data_files)

    def locate(self, index: int) -> tuple[DataFile, int]:
        """(data file, index within it) of 0-based frame ``index``."""
        i = int(index)
        if i < 0:
            raise ImageError(f"{self.path}: frame index {index} is negative")
        for data_file in self.data_files:
            if i < data_file.n_frames:
                return data_file, i
            i -= data_file.n_frames
        raise ImageError(f"{self.path} has no frame {index} (its data files hold {self.n_frames})")


def flag_value(dtype) -> int | None:
    """The value that flags a masked pixel in frames of integer ``dtype`` (its maximum)."""
    dtype = np.dtype(dtype)
    return int(np.iinfo(dtype).max) if dtype.kind in "ui" else None


_DATA_NAME = re.compile(r"^(?P<prefix>.*?)_(?:data_)?(?:\d{6}|\?{6})\.h5$")


def master_of_template(template: str) -> str:
    """The master file of an XDS template naming it (``…_master.h5``) or its data files
    (``…_??????.h5`` / ``…_data_??????.h5``, as XDS users write them with the durin or neggia
    plugin)."""
    name = os.path.basename(template)
    if name.endswith("_master.h5"):
        return template
    match = _DATA_NAME.match(name)
    if not match:
        raise ImageError(f"{template}: not an Eiger master (…_master.h5) or data-file template (…_??????.h5)")
    return os.path.join(os.path.dirname(template), f"{match.group('prefix')}_master.h5")


def _h5py():
    import h5py  # noqa: PLC0415
    import hdf5plugin  # noqa: F401, PLC0415  (registers the bitshuffle/LZ4 filters with HDF5)

    return h5py


def open_master(path: str) -> EigerMaster:
    """Read and check a master (or self-contained NeXus) file; cached per path and mtime."""
    path = os.path.abspath(str(path))
    if not os.path.exists(path):
        raise ImageError(f"image file not found: {path}")
    return _open_master(path, os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _open_master(path: str, mtime: int) -> EigerMaster:
    h5py = _h5py()
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ImageError(f"cannot open HDF5 image file {path}: {exc}") from exc
    with handle:
        group = handle.get("entry/data")
        if group is None:
            raise ImageError(f"{path}: no /entry/data group (not an Eiger/NeXus image file)")
        files = []
        for name in sorted(group):
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                target = link.filename if os.path.isabs(link.filename) else \
                    os.path.join(os.path.dirname(path), link.filename)
                files.append(_check_data_file(h5py, path, target, link.path))
            else:
                item = group[name]
                if hasattr(item, "shape") and len(item.shape) == 3:
                    files.append(DataFile(path, item.name, int(item.shape[0])))
        if not files:
            raise ImageError(f"{path}: /entry/data holds no 3-D image stack")
        detector = handle.get("entry/instrument/detector")
        pixel_mask = saturation = count_time = None
        if detector is not None:
            if "pixel_mask" in detector:
                pixel_mask = np.asarray(detector["pixel_mask"][()], dtype=np.uint32)
            if "saturation_value" in detector:
                saturation = float(np.asarray(detector["saturation_value"][()]).ravel()[0])
            if "count_time" in detector:
                count_time = float(np.asarray(detector["count_time"][()]).ravel()[0])
    shapes = {}
    for data_file in files:
        with h5py.File(data_file.path, "r") as f:
            dataset = f[data_file.dataset]
            shapes[data_file.path] = (tuple(int(n) for n in dataset.shape[1:]), dataset.dtype)
    first_shape, dtype = shapes[files[0].path]
    for data_file in files[1:]:
        shape, _ = shapes[data_file.path]
        if shape != first_shape:
            raise ImageError(f"data file {data_file.path} holds {shape[1]}x{shape[0]} frames but "
                             f"{files[0].path} holds {first_shape[1]}x{first_shape[0]} (NX x NY)")
    if pixel_mask is not None and pixel_mask.shape != first_shape:
        raise ImageError(f"{path}: pixel_mask is {pixel_mask.shape[1]}x{pixel_mask.shape[0]} but the frames are "
                         f"{first_shape[1]}x{first_shape[0]}")
    return EigerMaster(path, tuple(files), first_shape, np.dtype(dtype), pixel_mask, saturation, count_time)


def _check_data_file(h5py, master, target, dataset) -> DataFile:
    if not os.path.exists(target):
        raise ImageError(f"{master}: data file {target} is missing")
    try:
        with h5py.File(target, "r") as f:
            if dataset not in f:
                raise ImageError(f"data file {target} has no dataset {dataset}")
            shape = f[dataset].shape
    except OSError as exc:
        raise ImageError(f"data file {target} is unreadable (truncated or corrupt: {exc})") from exc
    if len(shape) != 3:
        raise ImageError(f"data file {target}: {dataset} is not a 3-D frame stack")
    return DataFile(target, dataset, int(shape[0]))


def read_frame(path: str, index: int | None) -> np.ndarray:
    """Frame ``index`` (0-based over all data files) of a master file, (n_slow, n_fast)."""
    master = open_master(path)
    data_file, i = master.locate(0 if index is None else index)
    h5py = _h5py()
    try:
        with h5py.File(data_file.path, "r") as f:
            return np.asarray(f[data_file.dataset][i])
    except OSError as exc:
        raise ImageError(f"cannot decode frame {i} of data file {data_file.path} (truncated or corrupt: {exc})") \
            from exc
