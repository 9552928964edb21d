"""XDS importer: ``XDS.INP`` + ``GXPARM.XDS`` / ``XPARM.XDS`` (+ optional ``INTEGRATE.LP``).

Conventions (sources: the XDS documentation, "Input parameters" and "Files" pages,
W. Kabsch, and dxtbx ``serialize/xds.py``, which converts between XDS and DIALS):

* The XDS laboratory frame is used as is.
* Detector: the lab position of the point with XDS detector coordinates (X, Y) (pixels)
  is ``F·N + (X − ORGX)·QX·ED1 + (Y − ORGY)·QY·ED2`` (mm), ED1/ED2 the detector X/Y axes,
  N their normal and F the signed distance. XDS coordinates are Fortran-like: the centre
  of the pixel with 0-based array index i has X = i + 1 (dxtbx adds 0.5 to a DIALS
  millimetre position divided by the pixel size to get ORGX). So the outer corner of
  pixel (0, 0), our panel origin, is at X = Y = 0.5.
* The incident beam vector in XPARM is S0 = direction / λ; ROTATION_AXIS is used with
  a right-handed rotation; the real-space axes a, b, c of (G)XPARM.XDS describe the
  crystal at spindle angle 0, and frame number n (1-based file number) covers
  STARTING_ANGLE + (n − STARTING_FRAME)·OSCILLATION_RANGE … + OSCILLATION_RANGE.
* ``UNTRUSTED_RECTANGLE= x1 x2 y1 y2`` excludes pixels with x1 ≤ X ≤ x2 and y1 ≤ Y ≤ y2
  (1-based pixel numbers, inclusive); ``UNTRUSTED_ELLIPSE=`` gives the bounding box of an
  ellipse in the same way; ``UNTRUSTED_QUADRILATERAL=`` four corners (X, Y).
* Pixels below ``MINIMUM_VALID_PIXEL_VALUE`` or at/above ``OVERLOAD`` are invalid.

(G)XPARM.XDS wins over XDS.INP for every refined quantity (wavelength, beam, axis,
detector, cell); XDS.INP's nominal values are used only without an XPARM file, with a
warning.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from ..errors import GeometryError, ImageError
from ..io.images import expand_template
from .model import Beam, Crystal, Goniometer, Panel, Scan, Sweep

__all__ = ["parse_xds_inp", "parse_xparm", "parse_integrate_lp", "find_xparm", "load_xds"]

logger = logging.getLogger(__name__)

_KEYWORD = re.compile(r"([A-Za-z0-9_\-\(\)\.\'/]+=)")


def parse_xds_inp(text: str) -> dict[str, list[str]]:
    """Keyword → list of value strings (one entry per occurrence) of an XDS.INP text."""
    keywords: dict[str, list[str]] = {}
    for raw_line in text.splitlines():
        line = raw_line.split("!", 1)[0]
        parts = _KEYWORD.split(line)
        # parts: [before, KEY=, value, KEY=, value, ...]
        for key, value in zip(parts[1::2], parts[2::2]):
            keywords.setdefault(key[:-1].upper(), []).append(value.strip())
    return keywords


def _numbers(keywords, key, count, source, required=True, kind=float):
    values = keywords.get(key)
    if not values:
        if required:
            raise GeometryError(f"{source}: keyword {key}= is missing")
        return None
    fields = values[-1].split()
    try:
        out = [kind(x) for x in fields[:count]]
    except ValueError:
        raise GeometryError(f"{source}: {key}= has a malformed value {values[-1]!r} (expected {count} numbers)") from None
    if len(out) != count or not all(np.isfinite(out)):
        raise GeometryError(f"{source}: {key}= has a malformed value {values[-1]!r} (expected {count} numbers)")
    return out if count > 1 else out[0]


def parse_xparm(path: str) -> dict:
    """Read a new-format (G)XPARM.XDS file into a dict of numbers (XDS lab frame, mm, Å)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise GeometryError(f"cannot read {path}: {exc}") from exc
    if not lines or "XPARM.XDS" not in lines[0]:
        raise GeometryError(f"{path}: not a new-format XPARM.XDS file (first line must name XPARM.XDS)")
    try:
        rows = [[float(x) for x in line.split()] for line in lines[1:12]]
        start_frame, start_angle, osc, *axis = rows[0]
        wavelength, *beam = rows[1]
        sg_number, *cell = rows[2]
        a_axis, b_axis, c_axis = rows[3], rows[4], rows[5]
        n_segments, nx, ny, qx, qy = rows[6]
        orgx, orgy, distance = rows[7]
        ed1, ed2, ed3 = rows[8], rows[9], rows[10]
        for name, v in (("axis", axis), ("beam", beam), ("cell", cell), ("a", a_axis), ("b", b_axis),
                        ("c", c_axis), ("detector X", ed1), ("detector Y", ed2), ("normal", ed3)):
            if len(v) != (6 if name == "cell" else 3):
                raise ValueError(f"{name} has {len(v)} numbers")
    except (ValueError, IndexError) as exc:
        raise GeometryError(f"{path}: malformed XPARM.XDS ({exc})") from exc
    if int(n_segments) != 1:
        raise GeometryError(f"{path}: {int(n_segments)} detector segments; only single-segment detectors are supported")
    return dict(
        starting_frame=int(start_frame), starting_angle=start_angle, oscillation_range=osc,
        rotation_axis=np.array(axis), wavelength=wavelength, incident_beam=np.array(beam),
        space_group_number=int(sg_number), unit_cell=tuple(cell),
        a_axis=np.array(a_axis), b_axis=np.array(b_axis), c_axis=np.array(c_axis),
        nx=int(nx), ny=int(ny), qx=qx, qy=qy, orgx=orgx, orgy=orgy, distance=distance,
        detector_x=np.array(ed1), detector_y=np.array(ed2), detector_normal=np.array(ed3),
    )


def parse_integrate_lp(path: str) -> list[dict]:
    """Per-batch refined geometry from INTEGRATE.LP.

    Returns a list of dicts with keys ``frames`` (first, last), and those refined for the
    batch: ``orgx``, ``orgy``, ``distance``, ``a_axis``, ``b_axis``, ``c_axis``,
    ``rotation_axis``, ``incident_beam``.
    """
    text = Path(path).read_text(errors="replace")
    batches = []
    pattern = re.compile(r"PROCESSING OF IMAGES\s+(\d+)\s*\.\.\.\s*(\d+)")
    starts = list(pattern.finditer(text))
    for i, m in enumerate(starts):
        block = text[m.end(): starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        batch = {"frames": (int(m.group(1)), int(m.group(2)))}

        def vec(label):
            mm = re.search(label + r"\s+([-\d.Ee+]+)\s+([-\d.Ee+]+)\s+([-\d.Ee+]+)", block)
            return np.array([float(x) for x in mm.groups()]) if mm else None

        for key, label in (("rotation_axis", r"LAB COORDINATES OF ROTATION AXIS"),
                           ("incident_beam", r"DIRECT BEAM COORDINATES \(REC\. ANGSTROEM\)"),
                           ("a_axis", r"COORDINATES OF UNIT CELL A-AXIS"),
                           ("b_axis", r"COORDINATES OF UNIT CELL B-AXIS"),
                           ("c_axis", r"COORDINATES OF UNIT CELL C-AXIS")):
            v = vec(label)
            if v is not None:
                batch[key] = v
        mm = re.search(r"DETECTOR ORIGIN \(PIXELS\) AT\s+([-\d.]+)\s+([-\d.]+)", block)
        if mm:
            batch["orgx"], batch["orgy"] = float(mm.group(1)), float(mm.group(2))
        mm = re.search(r"CRYSTAL TO DETECTOR DISTANCE \(mm\)\s+([-\d.]+)", block)
        if mm:
            batch["distance"] = float(mm.group(1))
        batches.append(batch)
    return batches


def _untrusted_regions(keywords) -> list[tuple]:
    regions = []
    for key, kind, n in (("UNTRUSTED_RECTANGLE", "rectangle", 4), ("UNTRUSTED_ELLIPSE", "ellipse", 4),
                         ("UNTRUSTED_QUADRILATERAL", "quadrilateral", 8)):
        for value in keywords.get(key, []):
            try:
                numbers = [float(x) for x in value.split()]
            except ValueError:
                raise GeometryError(f"XDS.INP: {key}= has a malformed value {value!r}") from None
            if len(numbers) != n:
                raise GeometryError(f"XDS.INP: {key}= needs {n} numbers, got {value!r}")
            # convert 1-based XDS pixel numbers to 0-based array indices
            regions.append((kind, tuple(x - 1 for x in numbers)))
    return regions


def _panel(orgx, orgy, distance, ed1, ed2, ed3, qx, qy, nx, ny, thickness, material, trusted) -> Panel:
    ed1, ed2, ed3 = (np.asarray(v, float) / np.linalg.norm(v) for v in (ed1, ed2, ed3))
    origin = distance * ed3 + (0.5 - orgx) * qx * ed1 + (0.5 - orgy) * qy * ed2
    return Panel(origin=origin, fast_axis=ed1, slow_axis=ed2, pixel_size=(qx, qy), image_size=(nx, ny),
                 thickness=thickness, material=material, trusted_range=trusted, name="XDS detector")


def find_xparm(directory: str) -> str | None:
    """XDS's refined geometry in ``directory``: GXPARM.XDS, else XPARM.XDS, else None."""
    for name in ("GXPARM.XDS", "XPARM.XDS"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def load_xds(directory: str, xparm: str | None = None) -> list[Sweep]:
    """Load an XDS processing directory into sweeps (one, or one per INTEGRATE.LP batch).

    Parameters
    ----------
    directory : folder holding XDS.INP and GXPARM.XDS or XPARM.XDS; the image template in
        XDS.INP is relative to it.
    xparm : explicit (G)XPARM.XDS path (default: GXPARM.XDS, then XPARM.XDS in ``directory``).
    """
    directory = str(directory)
    inp_path = os.path.join(directory, "XDS.INP")
    if not os.path.isfile(inp_path):
        raise GeometryError(f"XDS.INP not found in {directory}")
    try:
        keywords = parse_xds_inp(Path(inp_path).read_text(errors="replace"))
    except OSError as exc:
        raise GeometryError(f"cannot read {inp_path}: {exc}") from exc
    src = inp_path

    if xparm is None:
        xparm = find_xparm(directory)
    template = keywords.get("NAME_TEMPLATE_OF_DATA_FRAMES")
    if not template:
        raise GeometryError(f"{src}: keyword NAME_TEMPLATE_OF_DATA_FRAMES= is missing")
    template = template[-1].split()[0]
    if not os.path.isabs(template):
        template = os.path.join(os.path.abspath(directory), template)  # images stay found from any folder
    first, last = (int(x) for x in _numbers(keywords, "DATA_RANGE", 2, src))
    nx = int(_numbers(keywords, "NX", 1, src))
    ny = int(_numbers(keywords, "NY", 1, src))
    qx = _numbers(keywords, "QX", 1, src)
    qy = _numbers(keywords, "QY", 1, src)
    overload = _numbers(keywords, "OVERLOAD", 1, src, required=False) or 1.0e6
    min_valid = _numbers(keywords, "MINIMUM_VALID_PIXEL_VALUE", 1, src, required=False)
    min_valid = 0.0 if min_valid is None else min_valid
    thickness = _numbers(keywords, "SENSOR_THICKNESS", 1, src, required=False) or 0.0
    p_fraction = _numbers(keywords, "FRACTION_OF_POLARIZATION", 1, src, required=False)
    p_fraction = 0.99 if p_fraction is None else p_fraction
    p_normal = _numbers(keywords, "POLARIZATION_PLANE_NORMAL", 3, src, required=False) or [0.0, 1.0, 0.0]
    material = "Si"
    detector = (keywords.get("DETECTOR") or ["PILATUS"])[-1].split()[0].upper()
    if "CDTE" in " ".join(keywords.get("SENSOR_MATERIAL", [])).upper():
        material = "CdTe"

    if xparm is None:
        raise GeometryError(
            f"neither GXPARM.XDS nor XPARM.XDS found in {directory}: gpudiffuse needs XDS's refined geometry"
        )
    xp = parse_xparm(xparm)
    if abs(xp["qx"] - qx) > 1e-4 or abs(xp["qy"] - qy) > 1e-4:
        logger.warning("%s: pixel size %.4f x %.4f mm differs from XDS.INP QX/QY %.4f x %.4f; using XPARM's",
                       xparm, xp["qx"], xp["qy"], qx, qy)
    if (xp["nx"], xp["ny"]) != (nx, ny):
        raise GeometryError(f"{xparm}: detector size {xp['nx']}x{xp['ny']} differs from XDS.INP NX={nx} NY={ny}")
    if xp["starting_frame"] > first:
        logger.info("%s: STARTING_FRAME %d after DATA_RANGE start %d", xparm, xp["starting_frame"], first)
    sg = str(xp["space_group_number"])
    panel = _panel(xp["orgx"], xp["orgy"], xp["distance"], xp["detector_x"], xp["detector_y"],
                   xp["detector_normal"], xp["qx"], xp["qy"], nx, ny, thickness, material, (min_valid, overload))
    beam = Beam(direction=xp["incident_beam"], wavelength=xp["wavelength"],
                polarization_fraction=p_fraction, polarization_normal=p_normal)
    goniometer = Goniometer(rotation_axis=xp["rotation_axis"])
    crystal = Crystal.from_real_space(xp["a_axis"], xp["b_axis"], xp["c_axis"], sg)
    phi_first = xp["starting_angle"] + (first - xp["starting_frame"]) * xp["oscillation_range"]

    indices = None
    if template.lower().endswith(".h5"):
        # Eiger: XDS reads the data files through a plugin (LIB= durin/neggia); the frames, mask and
        # count time come from the master file of the same prefix
        images, indices, exposure = _eiger_images(template, first, last, src)
    else:
        pairs = expand_template(template, first, last)
        images = tuple(p for _, p in pairs)
        exposure = _exposure_times(images, detector)
    untrusted = tuple(_untrusted_regions(keywords))
    scan = Scan(image_range=(first, last), oscillation=(phi_first, xp["oscillation_range"]), exposure_times=exposure)
    base = Sweep(beam=beam, panel=panel, goniometer=goniometer, scan=scan, crystal=crystal, images=images,
                 image_indices=indices, untrusted=untrusted, source=f"{inp_path} + {xparm}")
    integrate_lp = os.path.join(directory, "INTEGRATE.LP")
    if not os.path.isfile(integrate_lp):
        return [base]
    return _split_by_integrate_batches(base, parse_integrate_lp(integrate_lp), xp, nx, ny, thickness, material,
                                       (min_valid, overload))


def _eiger_images(template, first, last, src):
    """(images, 0-based indices, exposure times) of frames first…last (1-based) from the master
    file that an Eiger template (…_master.h5 or …_??????.h5) belongs to."""
    from ..io.nxmx import master_of_template, open_master  # noqa: PLC0415

    try:
        master = open_master(master_of_template(template))
    except ImageError as exc:
        raise GeometryError(f"{src}: NAME_TEMPLATE_OF_DATA_FRAMES {template}: {exc}") from exc
    if first < 1 or last > master.n_frames:
        raise GeometryError(f"{src}: DATA_RANGE {first} {last} is outside the {master.n_frames} frames of "
                            f"{master.path}")
    n = last - first + 1
    exposure = np.full(n, master.count_time if master.count_time and master.count_time > 0 else 1.0)
    return (master.path,) * n, tuple(range(first - 1, last)), exposure


def _exposure_times(images, detector) -> np.ndarray:
    """Per-frame exposure (s) from the Pilatus mini-headers; 1 s when the images carry none (SMV, or
    CBF frames none of which has the keyword: the rates are then per frame, logged). A frame that
    lacks it while the others have it, or whose value is not positive, is an error naming it
    (a silent default would scale that frame wrongly)."""
    from .cbf_header import read_pilatus_header  # noqa: PLC0415

    if not images[0].lower().endswith(".cbf"):
        return np.ones(len(images))
    times, missing = [], []
    for path in images:
        try:
            value = read_pilatus_header(path).get("exposure_time")
        except ImageError as exc:
            if "no Pilatus mini-header" not in str(exc):
                raise  # unreadable or corrupt: the error names the file
            value = None
        if value is None:
            missing.append(path)
        elif not (np.isfinite(value) and value > 0):
            raise ImageError(f"{path}: Exposure_time {value} s in the header is not a positive time")
        times.append(np.nan if value is None else value)
    if missing and len(missing) < len(images):
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ImageError(f"{missing[0]}{more}: no Exposure_time in the header, while the other frames have one "
                         f"(median {np.nanmedian(times):g} s); the frame cannot be put on their scale")
    if missing:
        logger.warning("no frame header gives Exposure_time: 1 s assumed (rates are per frame)")
        return np.ones(len(images))
    return np.array(times)


def _split_by_integrate_batches(base: Sweep, batches, xp, nx, ny, thickness, material, trusted) -> list[Sweep]:
    """One sweep per INTEGRATE.LP batch, each with that batch's refined geometry."""
    from dataclasses import replace  # noqa: PLC0415

    sweeps = []
    first, last = base.scan.image_range
    for batch in batches:
        b0, b1 = max(batch["frames"][0], first), min(batch["frames"][1], last)
        if b1 < b0:
            continue
        panel = _panel(batch.get("orgx", xp["orgx"]), batch.get("orgy", xp["orgy"]),
                       batch.get("distance", xp["distance"]), xp["detector_x"], xp["detector_y"],
                       xp["detector_normal"], xp["qx"], xp["qy"], nx, ny, thickness, material, trusted)
        axes = [batch.get(k, xp[k]) for k in ("a_axis", "b_axis", "c_axis")]
        crystal = Crystal.from_real_space(*axes, base.crystal.space_group)
        beam = replace(base.beam, direction=batch.get("incident_beam", xp["incident_beam"]))
        goniometer = Goniometer(rotation_axis=batch.get("rotation_axis", xp["rotation_axis"]))
        i0, i1 = b0 - first, b1 - first + 1
        scan = Scan(image_range=(b0, b1),
                    oscillation=(base.scan.oscillation[0] + i0 * base.scan.oscillation[1], base.scan.oscillation[1]),
                    exposure_times=base.scan.exposure_times[i0:i1])
        sweeps.append(replace(base, panel=panel, crystal=crystal, beam=beam, goniometer=goniometer, scan=scan,
                              images=base.images[i0:i1],
                              image_indices=None if base.image_indices is None else base.image_indices[i0:i1],
                              batch=0))
    if not sweeps:
        return [base]
    logger.info("INTEGRATE.LP: %d refined batches override the XPARM geometry", len(sweeps))
    return sweeps
