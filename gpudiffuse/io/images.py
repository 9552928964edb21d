"""Image readers: Pilatus CBF and SMV (ADSC) through fabio, Eiger HDF5/NeXus through h5py.

Every reader returns the raw counts in the file's own integer type, shape
(n_slow, n_fast). Errors name the file and what is wrong with it.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
from pathlib import Path

import numpy as np

from ..errors import ImageError

__all__ = ["read_image", "read_header", "expand_template", "hdf5_frame_count", "is_hdf5"]

logger = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs")


def is_hdf5(path: str) -> bool:
    """True for HDF5/NeXus image files (Eiger masters and data files), by suffix."""
    return str(path).lower().endswith(HDF5_SUFFIXES)


class _ChecksumWatch(logging.Handler):
    """fabio verifies a CBF's Content-MD5 but only logs a mismatch; this handler notes it for the
    thread that is reading (handlers run in the emitting thread), so the read can fail by name."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.seen = threading.local()

    def emit(self, record):
        if "Checksum of binary data mismatch" in record.getMessage():
            self.seen.message = record.getMessage()

    def take(self):
        message = getattr(self.seen, "message", None)
        self.seen.message = None
        return message


_CHECKSUM = _ChecksumWatch()


def _with_fabio(path: str, read):
    """``read(fabio, path)``; a missing file, or any error of fabio's on a corrupt one, becomes an
    ImageError naming the file."""
    import fabio  # noqa: PLC0415  (fabio import is slow; only when images are read)

    if not os.path.exists(path):
        raise ImageError(f"image file not found: {path}")
    try:
        return read(fabio, path)
    except Exception as exc:  # fabio raises assorted types for corrupt files
        raise ImageError(f"cannot read image {path}: corrupt, truncated or unsupported ({exc.__class__.__name__}: {exc})") from exc


def _fabio_open(path: str):
    logger = logging.getLogger("fabio.cbfimage")
    if _CHECKSUM not in logger.handlers:
        logger.addHandler(_CHECKSUM)
    _CHECKSUM.take()

    def read(fabio, path):
        image = fabio.open(path)
        return image, image.data

    image, data = _with_fabio(path, read)
    mismatch = _CHECKSUM.take()
    if mismatch:
        raise ImageError(f"corrupt image {path}: the pixel data do not match the header's Content-MD5 ({mismatch})")
    if data is None or data.ndim != 2 or data.size == 0:
        raise ImageError(f"cannot read image {path}: no 2-D pixel array in the file")
    header = dict(image.header)
    expected = header.get("X-Binary-Number-of-Elements")
    if expected is not None and int(expected) != data.size:
        raise ImageError(f"truncated image {path}: {data.size} pixels decoded, header says {expected}")
    return image, data


def hdf5_frame_count(path: str) -> int:
    """Number of frames in an Eiger master/data file (over all its linked data files)."""
    from .nxmx import open_master  # noqa: PLC0415

    return open_master(path).n_frames


def read_image(path: str, index: int | None = None) -> np.ndarray:
    """Raw counts of one frame, shape (n_slow, n_fast), in the file's integer type.

    ``index`` is the 0-based frame inside a multi-frame HDF5 file (ignored otherwise).
    """
    path = str(path)
    if is_hdf5(path):
        from .nxmx import read_frame  # noqa: PLC0415

        return read_frame(path, index)
    _, data = _fabio_open(path)
    return data


_CBF_BINARY_MARK = b"\x0c\x1a\x04\xd5"


def read_header(path: str) -> dict:
    """The image header as a dict of strings (CBF: includes ``_array_data.header_contents``).

    Only the header is decoded (a 1M-pixel CBF: ~0.2 ms instead of ~7 ms), and a CBF file shorter
    than the binary section its header announces is refused as truncated. The pixels' checksum is
    verified when they are read (:func:`read_image`)."""
    path = str(path)
    header = _with_fabio(path, lambda fabio, p: dict(fabio.openheader(p).header))
    if path.lower().endswith(".cbf"):
        _check_cbf_length(path, header)
    return header


def _check_cbf_length(path: str, header: dict) -> None:
    size = header.get("X-Binary-Size")
    with open(path, "rb") as stream:
        head = stream.read(1 << 16)
    mark = head.find(_CBF_BINARY_MARK)
    if size is None or mark < 0:
        raise ImageError(f"cannot read image {path}: corrupt, truncated or unsupported (no binary section)")
    needed = mark + len(_CBF_BINARY_MARK) + int(size)
    if os.path.getsize(path) < needed:
        raise ImageError(f"truncated image {path}: {os.path.getsize(path)} bytes, the header's binary section "
                         f"needs {needed}")


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
