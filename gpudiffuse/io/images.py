"""Image readers: Pilatus CBF and SMV (ADSC) through fabio, Eiger HDF5/NeXus through h5py.

Every reader returns the raw counts in the file's own integer type, shape
(n_slow, n_fast). Errors name the file and what is wrong with it.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from pathlib import Path

import numpy as np

from ..errors import ImageError

__all__ = ["read_image", "read_header", "expand_template", "hdf5_frame_count"]

logger = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs")


def _is_hdf5(path: str) -> bool:
    return str(path).lower().endswith(HDF5_SUFFIXES)


def _fabio_open(path: str):
    import fabio  # noqa: PLC0415  (fabio import is slow; only when images are read)

    if not os.path.exists(path):
        raise ImageError(f"image file not found: {path}")
    try:
        image = fabio.open(path)
        data = image.data
    except Exception as exc:  # fabio raises assorted types for corrupt files
        raise ImageError(f"cannot read image {path}: corrupt, truncated or unsupported ({exc.__class__.__name__}: {exc})") from exc
    if data is None or data.ndim != 2 or data.size == 0:
        raise ImageError(f"cannot read image {path}: no 2-D pixel array in the file")
    header = dict(image.header)
    expected = header.get("X-Binary-Number-of-Elements")
    if expected is not None and int(expected) != data.size:
        raise ImageError(f"truncated image {path}: {data.size} pixels decoded, header says {expected}")
    return image, data


def _eiger_datasets(path: str):
    """(file handle, list of 3-D datasets in order) for an Eiger master or data file."""
    import h5py  # noqa: PLC0415
    import hdf5plugin  # noqa: PLC0415

    del hdf5plugin  # imported for its side effect: it registers the bitshuffle/LZ4 filters with h5py

    if not os.path.exists(path):
        raise ImageError(f"image file not found: {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ImageError(f"cannot open HDF5 image file {path}: {exc}") from exc
    group = handle.get("entry/data")
    if group is None:
        handle.close()
        raise ImageError(f"{path}: no /entry/data group (not an Eiger/NeXus image file)")
    datasets = []
    for name in sorted(group):
        try:
            item = group[name]
        except KeyError as exc:  # external link to a missing data file
            handle.close()
            raise ImageError(f"{path}: /entry/data/{name} links to a missing data file ({exc})") from exc
        if hasattr(item, "shape") and len(item.shape) == 3:
            datasets.append(item)
    if not datasets:
        handle.close()
        raise ImageError(f"{path}: /entry/data holds no 3-D image stack")
    return handle, datasets


def hdf5_frame_count(path: str) -> int:
    """Number of frames in an Eiger master/data file."""
    handle, datasets = _eiger_datasets(path)
    with handle:
        return sum(d.shape[0] for d in datasets)


def read_image(path: str, index: int | None = None) -> np.ndarray:
    """Raw counts of one frame, shape (n_slow, n_fast), in the file's integer type.

    ``index`` is the 0-based frame inside a multi-frame HDF5 file (ignored otherwise).
    """
    path = str(path)
    if _is_hdf5(path):
        handle, datasets = _eiger_datasets(path)
        with handle:
            i = 0 if index is None else int(index)
            for dataset in datasets:
                if i < dataset.shape[0]:
                    try:
                        return np.asarray(dataset[i])
                    except OSError as exc:
                        raise ImageError(f"cannot decode frame {index} of {path}: {exc}") from exc
                i -= dataset.shape[0]
            raise ImageError(f"{path} has no frame {index} (it holds {sum(d.shape[0] for d in datasets)})")
    _, data = _fabio_open(path)
    return data


def read_header(path: str) -> dict:
    """The image header as a dict of strings (CBF: includes ``_array_data.header_contents``)."""
    image, _ = _fabio_open(str(path))
    return dict(image.header)


_TEMPLATE_MARK = re.compile(r"(\?+|#+)")


def expand_template(template: str, first: int | None = None, last: int | None = None) -> list[tuple[int, str]]:
    """Expand an XDS (``?``) or DIALS (``#``) image template to (number, path) pairs.

    Without ``first``/``last`` every matching file on disk is returned, sorted by number.
    With them, every number in the range must exist.

    Raises
    ------
    ImageError
        No file matches, or a requested frame's file is missing.
    """
    template = str(template)
    marks = list(_TEMPLATE_MARK.finditer(Path(template).name))
    if not marks:
        raise ImageError(f"image template {template} has no ? or # placeholder for the frame number")
    mark = marks[-1]
    width = len(mark.group(0))
    directory = os.path.dirname(template)
    name = Path(template).name
    prefix, suffix = name[: mark.start()], name[mark.end() :]

    def path_of(number: int) -> str:
        return os.path.join(directory, f"{prefix}{number:0{width}d}{suffix}")

    if first is not None and last is not None:
        pairs = [(n, path_of(n)) for n in range(int(first), int(last) + 1)]
        missing = [p for _, p in pairs if not os.path.exists(p)]
        if len(missing) == len(pairs):
            raise ImageError(f"image template {template} matches no files for frames {first}-{last}")
        if missing:
            raise ImageError(
                f"image template {template}: {len(missing)} of frames {first}-{last} are missing, first {missing[0]}"
            )
        return pairs
    pattern = os.path.join(glob.escape(directory), glob.escape(prefix) + "?" * width + glob.escape(suffix))
    found = []
    for p in glob.glob(pattern):
        digits = Path(p).name[len(prefix) : len(prefix) + width]
        if digits.isdigit():
            found.append((int(digits), p))
    if not found:
        raise ImageError(f"image template {template} matches no files")
    return sorted(found)
