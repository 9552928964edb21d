"""Experiment model and importers (XDS, DIALS, Pilatus CBF mini-header)."""

from .model import Beam, Crystal, Goniometer, Panel, Scan, Sweep, rotation_matrix, space_group_from
from .vectors import d_spacing, edge_resolution, fractional_hkl, pixel_s_vectors, sweep_fractional_hkl

__all__ = [
    "Beam",
    "Crystal",
    "Goniometer",
    "Panel",
    "Scan",
    "Sweep",
    "rotation_matrix",
    "space_group_from",
    "d_spacing",
    "edge_resolution",
    "fractional_hkl",
    "pixel_s_vectors",
    "sweep_fractional_hkl",
]
