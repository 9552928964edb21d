"""Static pixel mask (per panel) and the per-frame validity test.

The static mask is True where a pixel may be used:
module gaps of a known detector layout ∧ pixels that are not negative in the first
frame (Pilatus marks gaps −1 and bad pixels −2) ∧ not inside an untrusted region of the
geometry input ∧ not behind the beamstop ∧ optionally not an enlarged chip-border pixel.
Per frame, pixels at or above the overload or below the minimum valid value are invalid
for that frame only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MaskError
from .layout import layout_for_size

__all__ = ["Beamstop", "static_pixel_mask", "mask_sources", "usable_pixels", "region_mask", "frame_valid"]


@dataclass(frozen=True)
class Beamstop:
    """Beamstop shadow in pixel coordinates (0-based fast x, slow y of pixel centres).

    disc : (x, y, radius) or None. rectangle : (x0, x1, y0, y1) inclusive, or None
    (e.g. the arm). polygon : sequence of (x, y) vertices, or None.
    """

    disc: tuple[float, float, float] | None = None
    rectangle: tuple[float, float, float, float] | None = None
    polygon: tuple[tuple[float, float], ...] | None = None

    @classmethod
    def parse(cls, disc=None, rectangle=None, polygon=None) -> "Beamstop":
        """From CLI strings: disc "x,y,r", rectangle "x0,x1,y0,y1", polygon "x1,y1,x2,y2,...". """

        def numbers(text, n, what):
            try:
                values = [float(v) for v in str(text).replace(",", " ").split()]
            except ValueError:
                raise MaskError(f"beamstop {what} {text!r}: not a list of numbers") from None
            if (n and len(values) != n) or (not n and (len(values) < 6 or len(values) % 2)):
                raise MaskError(f"beamstop {what} {text!r}: expected {n or 'an even number ≥ 6 of'} numbers")
            return values

        return cls(
            disc=tuple(numbers(disc, 3, "disc")) if disc else None,
            rectangle=tuple(numbers(rectangle, 4, "rectangle")) if rectangle else None,
            polygon=tuple(zip(*[iter(numbers(polygon, 0, "polygon"))] * 2)) if polygon else None,
        )


def region_mask(shape, kind: str, params) -> np.ndarray:
    """Boolean (n_slow, n_fast), True inside a region given in 0-based pixel coordinates.

    kind "rectangle": (x0, x1, y0, y1) inclusive. "ellipse": bounding box (x0, x1, y0, y1).
    "quadrilateral"/"polygon": vertices x1, y1, x2, y2, … "disc": (x, y, r).
    """
    n_slow, n_fast = shape
    y, x = np.mgrid[0:n_slow, 0:n_fast]
    if kind == "rectangle":
        x0, x1, y0, y1 = params
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    if kind == "ellipse":
        x0, x1, y0, y1 = params
        cx, cy, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1
    if kind == "disc":
        cx, cy, r = params
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if kind in ("quadrilateral", "polygon"):
        from matplotlib.path import Path  # noqa: PLC0415

        vertices = np.asarray(params, dtype=float).reshape(-1, 2)
        inside = Path(vertices).contains_points(np.column_stack([x.ravel(), y.ravel()]), radius=1e-9)
        return inside.reshape(shape)
    raise MaskError(f"unknown mask region kind {kind!r}")


def mask_sources(panel, first_frame: np.ndarray | None = None, untrusted=(), beamstop: Beamstop | None = None,
                 mask_chip_borders: bool = False, pixel_mask: np.ndarray | None = None) -> list[tuple[str, np.ndarray]]:
    """Where the static mask comes from: (source, boolean (n_slow, n_fast), True = masked by it).

    An NXmx ``pixel_mask`` (uint32 bit field, see :mod:`gpudiffuse.io.nxmx`) is the detector's
    own statement of its gaps and bad pixels: one source per set bit, and no layout is guessed
    from the image size. Without one, gaps come from the detector layout of that size.
    """
    from ..io.nxmx import PIXEL_MASK_BITS  # noqa: PLC0415

    shape = panel.shape
    sources = []
    if pixel_mask is not None:
        for bit in range(32):
            hit = (pixel_mask >> np.uint32(bit)) & np.uint32(1) > 0
            if hit.any():
                sources.append((f"pixel_mask bit {bit} ({PIXEL_MASK_BITS.get(bit, 'reserved')})", hit))
    else:
        layout = layout_for_size(panel.image_size)
        if layout is not None:
            sources.append((f"{layout.family} module gaps (layout of a {shape[1]}x{shape[0]} image)",
                            ~layout.gap_mask()))
            if mask_chip_borders:
                sources.append(("enlarged chip-border pixels", ~layout.chip_border_mask()))
    for kind, params in untrusted:
        sources.append((f"untrusted {kind} {tuple(params)}", region_mask(shape, kind, params)))
    if beamstop is not None:
        if beamstop.disc:
            sources.append((f"beamstop disc {beamstop.disc}", region_mask(shape, "disc", beamstop.disc)))
        if beamstop.rectangle:
            sources.append((f"beamstop rectangle {beamstop.rectangle}",
                            region_mask(shape, "rectangle", beamstop.rectangle)))
        if beamstop.polygon:
            sources.append(("beamstop polygon", region_mask(shape, "polygon", [c for v in beamstop.polygon for c in v])))
    if first_frame is not None:
        sources.append(first_frame_source(panel, first_frame))
    return sources


def first_frame_source(panel, first_frame: np.ndarray) -> tuple[str, np.ndarray]:
    """The mask source of pixels negative in the first frame (Pilatus gaps −1, bad pixels −2)."""
    if first_frame.shape != panel.shape:
        raise MaskError(f"first frame has shape {first_frame.shape}, panel expects {panel.shape}")
    return "negative in the first frame (gaps, bad pixels)", first_frame < 0


def usable_pixels(shape, sources) -> np.ndarray:
    """Boolean mask (True = use) of the pixels that none of ``sources`` (from :func:`mask_sources`) masks."""
    mask = np.ones(shape, dtype=bool)
    for _, masked in sources:
        mask &= ~masked
    return mask


def static_pixel_mask(panel, first_frame: np.ndarray | None = None, untrusted=(), beamstop: Beamstop | None = None,
                      mask_chip_borders: bool = False, pixel_mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean (n_slow, n_fast) mask of usable pixels (True = use): no source masks them."""
    return usable_pixels(panel.shape, mask_sources(panel, first_frame, untrusted, beamstop, mask_chip_borders,
                                                   pixel_mask))


def frame_valid(frames, trusted_range):
    """Per-frame validity (same array module as ``frames``): min_valid ≤ value < overload."""
    min_valid, overload = trusted_range
    return (frames >= min_valid) & (frames < overload)
