"""Fingerprints of a run's input files, part of every step's cache key (DESIGN §13): a step is
reused only if its inputs are unchanged."""

from __future__ import annotations

import hashlib
import os

__all__ = ["geometry_files", "input_fingerprint", "content_hash"]


def geometry_files(geometry) -> list[str]:
    """The geometry files the import of an ``ImportParameters`` reads: for XDS, XDS.INP, the
    (G)XPARM.XDS that ``load_xds`` picks and INTEGRATE.LP when present; else the DIALS files."""
    from ..geometry.xds import find_xparm  # noqa: PLC0415

    if geometry.xds:
        files = [os.path.join(geometry.xds, "XDS.INP"), find_xparm(geometry.xds),
                 os.path.join(geometry.xds, "INTEGRATE.LP")]
        return [f for f in files if f and os.path.isfile(f)]
    return list(geometry.expt)


def content_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_fingerprint(geometry, experiment) -> dict:
    """{"geometry": {file: sha256}, "frames": sha256 over (path, size, mtime) of every image file}.

    Geometry files are hashed by content (small; an edit that keeps the size and time is seen);
    frames by size and modification time (hashing terabytes of images would cost a read of each)."""
    frames = hashlib.sha256()
    seen = set()
    for sweep in experiment.sweeps:
        for image in sweep.images:
            if image in seen:
                continue
            seen.add(image)
            try:
                info = os.stat(image)
                frames.update(f"{os.path.abspath(image)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
            except OSError:
                frames.update(f"{os.path.abspath(image)}\0missing\n".encode())
    return {"geometry": {os.path.abspath(f): content_hash(f) for f in geometry_files(geometry)},
            "frames": frames.hexdigest()}
