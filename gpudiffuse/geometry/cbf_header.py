"""Pilatus CBF mini-header (``_array_data.header_contents``, PILATUS_1.2 convention).

Source of the keywords: the DECTRIS "PILATUS CBF header specification" (version 1.4),
as written by camserver: lines ``# Keyword value unit``. Lengths in the header are in
metres (Detector_distance, Pixel_size, Silicon sensor thickness) and converted here to mm;
angles are degrees; times seconds; wavelength Å; beam centre (Beam_xy) is in pixels.
"""

from __future__ import annotations

import re

from ..errors import ImageError
from ..io.images import read_header

__all__ = ["parse_pilatus_header", "read_pilatus_header"]

_NUMBER = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"


def parse_pilatus_header(text: str, source: str = "CBF header") -> dict:
    """Parse mini-header text into a dict with keys (those present):

    exposure_time (s), exposure_period (s), start_angle (deg), angle_increment (deg),
    wavelength (Å), detector_distance (mm), beam_xy (px, px), pixel_size (mm, mm),
    sensor_thickness (mm), sensor_material, count_cutoff (counts), detector (str).
    """
    out: dict = {}

    def number(key: str):
        m = re.search(rf"#\s*{key}\s+{_NUMBER}", text)
        return float(m.group(1)) if m else None

    simple = {
        "exposure_time": "Exposure_time",
        "exposure_period": "Exposure_period",
        "start_angle": "Start_angle",
        "angle_increment": "Angle_increment",
        "wavelength": "Wavelength",
        "count_cutoff": "Count_cutoff",
    }
    for key, word in simple.items():
        value = number(word)
        if value is not None:
            out[key] = value
    distance = number("Detector_distance")
    if distance is not None:
        out["detector_distance"] = distance * 1000.0
    m = re.search(rf"#\s*Beam_xy\s*\(\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\)", text)
    if m:
        out["beam_xy"] = (float(m.group(1)), float(m.group(2)))
    m = re.search(rf"#\s*Pixel_size\s+{_NUMBER}\s*m\s*x\s*{_NUMBER}\s*m", text)
    if m:
        out["pixel_size"] = (float(m.group(1)) * 1000.0, float(m.group(2)) * 1000.0)
    m = re.search(rf"#\s*(\w+)\s+sensor,\s*thickness\s+{_NUMBER}\s*m", text)
    if m:
        out["sensor_material"] = m.group(1)
        out["sensor_thickness"] = float(m.group(2)) * 1000.0
    m = re.search(r"#\s*Detector:\s*([^\r\n]+)", text)
    if m:
        out["detector"] = m.group(1).strip()
    if "exposure_time" not in out and "start_angle" not in out:
        raise ImageError(f"{source}: no Pilatus mini-header keywords (Exposure_time, Start_angle) found")
    return out


def read_pilatus_header(path: str) -> dict:
    """Read and parse the mini-header of a Pilatus CBF file."""
    header = read_header(path)
    text = header.get("_array_data.header_contents")
    if not text:
        raise ImageError(f"{path}: no Pilatus mini-header (_array_data.header_contents)")
    return parse_pilatus_header(text, source=str(path))
