"""DIALS ExperimentList importer (``.expt`` / ``.json``), read as plain JSON without dxtbx.

Conventions (source: dxtbx model serialisation, ``dxtbx/model/*.py`` to_dict/from_dict,
and the DIALS "Models" documentation):

* The imgCIF/DIALS lab frame is used as is.
* ``beam.direction`` points from the sample *towards the source*; the propagation
  direction is its negative (s0 = −direction/λ).
* Panel ``origin`` is the lab position of the outer corner of pixel (0, 0); pixel centres
  are at (i + ½)·px along ``fast_axis`` — the same convention as our model. Panel vectors are
  local to their parent group in ``detector.hierarchy``; groups are composed here.
* Goniometer: r(φ) = S · R(axis, φ) · F · A · h with S ``setting_rotation``,
  F ``fixed_rotation`` (row-major 3×3), axis ``rotation_axis`` (datum frame), right-handed.
* Scan: ``oscillation`` = (φ at the start of the first image, width) in degrees;
  ``image_range`` 1-based inclusive.
* Crystal: ``real_space_a/b/c`` in Å at φ = 0; A = [a b c]ᵀ⁻¹. A scan-varying crystal's
  ``A_at_scan_points`` (one per frame boundary) gives the per-frame A as the mean of
  the two boundaries of each frame.
* Stills: an experiment whose scan has zero width, or no scan, is one image; its crystal
  is already in the image's orientation: no goniometer rotation is applied (as the
  DIALS stills predictor does); the scan's start angle is only recorded.
* Panel ``mask`` rectangles (f0, s0, f1, s1) are 0-based, half-open.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import GeometryError
from ..io.images import expand_template, hdf5_frame_count
from .model import Beam, Crystal, Goniometer, Panel, Scan, Sweep

__all__ = ["load_dials", "find_image"]

logger = logging.getLogger(__name__)


def _vec(d, key, source):
    try:
        v = np.asarray(d[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise GeometryError(f"{source}: missing or malformed {key!r}") from None
    if not np.all(np.isfinite(v)):
        raise GeometryError(f"{source}: {key!r} contains NaN or infinity")
    return v


def find_image(path: str, json_dir: str, image_size: tuple[int, int] | None = None) -> str:
    """Locate an image named in an ExperimentList.

    Tried in order: the path itself (absolute, or relative to the JSON's folder); the file name
    beside the JSON; the file name below the JSON's folder or its parent (depth ≤ 3, for a JSON
    moved together with its image folder), used only when exactly one such file exists — and,
    with ``image_size`` (fast, slow pixels of the detector), is an image of that size — (logged);
    several candidates, or none of the right size, are an error that lists them.
    """
    candidates = [path if os.path.isabs(path) else os.path.join(json_dir, path)]
    name = os.path.basename(path)
    candidates.append(os.path.join(json_dir, name))
    for candidate in candidates:
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    found = set()
    for root in (json_dir, os.path.dirname(os.path.abspath(json_dir))):
        base_depth = root.rstrip(os.sep).count(os.sep)
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath.count(os.sep) - base_depth >= 3:
                dirnames[:] = []
            if name in filenames:
                found.add(os.path.normpath(os.path.abspath(os.path.join(dirpath, name))))
    found = sorted(found)
    if image_size is not None and found:
        sizes = {candidate: _image_size(candidate) for candidate in found}
        fitting = [c for c in found if sizes[c] == tuple(image_size)]
        if not fitting:
            raise GeometryError(f"image {path} named in the ExperimentList is missing, and no file of that name below "
                                f"{json_dir} or its parent is {image_size[0]}x{image_size[1]} pixels like the "
                                "detector: " + ", ".join(f"{c} ({_size_text(sizes[c])})" for c in found[:5]))
        found = fitting
    if len(found) == 1:
        logger.info("image %s named in the ExperimentList found at %s", path, found[0])
        return found[0]
    if found:
        raise GeometryError(f"image {path} named in the ExperimentList is missing, and {len(found)} files of that "
                            f"name lie below {json_dir} or its parent: {', '.join(found[:5])}; which one is meant is "
                            f"not known")
    raise GeometryError(f"image {path} named in the ExperimentList was not found (looked beside and below {json_dir})")


def _image_size(path: str):
    """(fast, slow) pixels of an image file, or None when it cannot be read as one."""
    from ..errors import ImageError  # noqa: PLC0415
    from ..io.images import read_image  # noqa: PLC0415

    try:
        shape = read_image(path).shape
    except (ImageError, OSError, ValueError):
        return None
    return (shape[-1], shape[-2]) if len(shape) >= 2 else None


def _size_text(size) -> str:
    return "not a readable image" if size is None else f"{size[0]}x{size[1]} pixels"


def _panel_frames(hierarchy, panels_json, source):
    """Compose hierarchy groups: panel index → (origin, fast, slow) in the lab frame."""
    out = {}

    def walk(node, origin, rot):
        if "panel" in node:
            p = panels_json[node["panel"]]
            out[node["panel"]] = (origin + rot @ _vec(p, "origin", source), rot @ _vec(p, "fast_axis", source),
                                  rot @ _vec(p, "slow_axis", source))
            return
        f, s = _vec(node, "fast_axis", source), _vec(node, "slow_axis", source)
        n = np.cross(f, s)
        local = np.column_stack([f, s, n / np.linalg.norm(n)])
        new_origin = origin + rot @ _vec(node, "origin", source)
        for child in node.get("children", []):
            walk(child, new_origin, rot @ local)

    if hierarchy:
        walk(hierarchy, np.zeros(3), np.eye(3))
    for i, p in enumerate(panels_json):
        if i not in out:
            out[i] = (_vec(p, "origin", source), _vec(p, "fast_axis", source), _vec(p, "slow_axis", source))
    return out


def _beam(b, source):
    if "direction" not in b or "wavelength" not in b:
        raise GeometryError(f"{source}: beam lacks direction or wavelength")
    return Beam(direction=-_vec(b, "direction", source), wavelength=float(b["wavelength"]),
                polarization_fraction=float(b.get("polarization_fraction", 0.999)),
                polarization_normal=b.get("polarization_normal", [0.0, 1.0, 0.0]))


def _panel(det, source):
    panels = det.get("panels") or []
    if len(panels) != 1:
        raise GeometryError(f"{source}: detector with {len(panels)} panels; only single-panel detectors are supported")
    origin, fast, slow = _panel_frames(det.get("hierarchy"), panels, source)[0]
    p = panels[0]
    trusted = p.get("trusted_range", [0, 1e6])
    untrusted = []
    for rect in p.get("mask", []):
        f0, s0, f1, s1 = rect
        untrusted.append(("rectangle", (f0, f1 - 1, s0, s1 - 1)))
    # Frames are valid for min_valid <= value < overload. DIALS >= 3.13 (dxtbx #536) writes
    # trusted_range as the inclusive range of valid values, e.g. [0, saturation] for an Eiger: the
    # lower end is inclusive and zero counts are data. Older versions wrote (-1, overload) meaning
    # values above -1 (-1 and -2 flag Pilatus gaps and dead pixels): a lower end of -1 on integer
    # frames therefore means 0.
    min_valid = float(trusted[0])
    if min_valid == -1.0:
        min_valid = 0.0
    panel = Panel(origin=origin, fast_axis=fast, slow_axis=slow, pixel_size=tuple(p["pixel_size"]),
                  image_size=tuple(p["image_size"]), thickness=float(p.get("thickness", 0.0)),
                  material=p.get("material") or "Si", trusted_range=(min_valid, float(trusted[1])),
                  name=p.get("name", "panel"))
    return panel, tuple(untrusted)


def _goniometer(g, source):
    if g is None:
        return Goniometer()
    if "axes" in g:
        raise GeometryError(f"{source}: multi-axis goniometers are not supported yet")
    return Goniometer(rotation_axis=_vec(g, "rotation_axis", source),
                      fixed_rotation=np.reshape(g.get("fixed_rotation", np.eye(3).ravel()), (3, 3)),
                      setting_rotation=np.reshape(g.get("setting_rotation", np.eye(3).ravel()), (3, 3)))


def _scan(s, n_images_default, source):
    if s is None:
        return Scan(image_range=(1, n_images_default), oscillation=(0.0, 0.0), exposure_times=np.ones(n_images_default))
    first, last = (int(x) for x in s["image_range"])
    n = last - first + 1
    props = s.get("properties", {})
    if "oscillation" in s:
        phi0, width = (float(x) for x in s["oscillation"])
    elif "oscillation" in props:
        phi0 = float(props["oscillation"][0])
        width = float(props.get("oscillation_width", [0.0])[0])
    else:
        raise GeometryError(f"{source}: scan has no oscillation")
    exposure = np.asarray(s.get("exposure_time", props.get("exposure_time", [1.0])), dtype=np.float64)
    if exposure.size not in (1, n):
        exposure = np.full(n, exposure[0])
    exposure = np.where(exposure > 0, exposure, 1.0)
    return Scan(image_range=(first, last), oscillation=(phi0, width), exposure_times=np.broadcast_to(exposure, (n,)))


def _crystal(c, n_frames, source):
    for key in ("real_space_a", "real_space_b", "real_space_c"):
        if key not in c:
            raise GeometryError(f"{source}: crystal lacks {key}")
    hall = c.get("space_group_hall_symbol", " P 1")
    per_frame = None
    if "A_at_scan_points" in c:
        points = np.asarray(c["A_at_scan_points"], dtype=np.float64).reshape(-1, 3, 3)
        if len(points) == n_frames + 1:
            per_frame = 0.5 * (points[:-1] + points[1:])
        elif len(points) == n_frames:
            per_frame = points
        else:
            raise GeometryError(f"{source}: {len(points)} scan points for {n_frames} frames")
    return Crystal.from_real_space(_vec(c, "real_space_a", source), _vec(c, "real_space_b", source),
                                   _vec(c, "real_space_c", source), hall, A_per_frame=per_frame)


def _images_of(imageset, scan, json_dir, source, still_index, image_size=None):
    kind = imageset.get("__id__", "ImageSet")
    if "template" in imageset:
        template = find_image(imageset["template"], json_dir) if "#" not in os.path.basename(
            imageset["template"]) else imageset["template"]
        if template.lower().endswith((".h5", ".nxs")):
            path = find_image(template, json_dir)
            n = hdf5_frame_count(path)
            first, last = scan.image_range
            # single_file_indices: the 0-based frames of the file that make up the imageset
            indices = imageset.get("single_file_indices")
            indices = list(range(n)) if indices is None else [int(i) for i in indices]
            if last > len(indices) or first < 1:
                raise GeometryError(f"{source}: scan needs frames {first}-{last} but the imageset has "
                                    f"{len(indices)} ({path})")
            chosen = tuple(indices[first - 1: last])
            if max(chosen) >= n or min(chosen) < 0:
                raise GeometryError(f"{source}: single_file_indices reach frame {max(chosen)} but {path} holds {n}")
            return (path,) * len(chosen), chosen
        if not os.path.isabs(template):
            template = os.path.join(json_dir, template)
        pairs = expand_template(template, *scan.image_range)
        return tuple(p for _, p in pairs), None
    images = imageset.get("images")
    if not images:
        raise GeometryError(f"{source}: imageset ({kind}) has no images or template")
    if scan.is_still and scan.num_frames == 1:
        chosen = [images[min(still_index, len(images) - 1)]]
    else:
        chosen = images[: scan.num_frames]
    return tuple(find_image(p, json_dir, image_size) for p in chosen), None


def load_dials(path: str) -> list[Sweep]:
    """Load a DIALS ExperimentList JSON into sweeps (one per experiment)."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise GeometryError(f"cannot read {path}: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GeometryError(f"{path} is not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("__id__") != "ExperimentList" or "experiment" not in doc:
        raise GeometryError(f"{path} is not a DIALS ExperimentList (no __id__ ExperimentList / experiment list)")
    json_dir = os.path.dirname(os.path.abspath(path))
    sweeps = []
    still_counter: dict[int, int] = {}
    for i, exp in enumerate(doc["experiment"]):
        src = f"{path} experiment {i}"
        try:
            beam = _beam(doc["beam"][exp["beam"]], src)
            panel, untrusted = _panel(doc["detector"][exp["detector"]], src)
            gonio = _goniometer(doc["goniometer"][exp["goniometer"]] if "goniometer" in exp else None, src)
            scan = _scan(doc["scan"][exp["scan"]] if "scan" in exp else None, 1, src)
            if "crystal" not in exp:
                raise GeometryError(f"{src}: no crystal model (index the data first)")
            crystal = _crystal(doc["crystal"][exp["crystal"]], scan.num_frames, src)
            iset_index = exp.get("imageset", 0)
            k = still_counter.get(iset_index, 0)
            still_counter[iset_index] = k + 1
            images, indices = _images_of(doc["imageset"][iset_index], scan, json_dir, src, k, panel.image_size)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise GeometryError(f"{src}: malformed ExperimentList ({exc.__class__.__name__}: {exc})") from exc
        if len(images) != scan.num_frames:
            raise GeometryError(f"{src}: {len(images)} images for {scan.num_frames} frames of the scan")
        sweeps.append(Sweep(beam=beam, panel=panel, goniometer=gonio, scan=scan, crystal=crystal, images=images,
                            image_indices=indices, untrusted=untrusted, batch=i, source=src))
    if not sweeps:
        raise GeometryError(f"{path}: the ExperimentList holds no experiments")
    return sweeps
