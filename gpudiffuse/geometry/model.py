"""The one internal experiment model that every importer fills in.

Conventions (all importers convert into these; see ``docs/conventions.md``):

* Lab frame: right-handed, Cartesian, millimetres for positions. No particular
  orientation is assumed; the frame is whatever the geometry source used (XDS's lab
  frame as is, DIALS/imgCIF lab frame as is).
* Beam: ``direction`` is the unit vector along which the X-rays *propagate*
  (towards the detector), so the incident wave vector is s0 = direction / wavelength.
* Panel: ``origin`` is the lab position (mm) of the outer *corner* of pixel (0, 0);
  the centre of the pixel at 0-based array index (slow j, fast i) is
  ``origin + (i + 1/2) px fast + (j + 1/2) py slow``.
* Goniometer: the lab-frame reciprocal-lattice vector of Miller index h at spindle angle
  phi is ``S @ R(axis, phi) @ F @ A @ h`` (DIALS convention), with R right-handed
  (Rodrigues), S the setting and F the fixed rotation, A = UB at phi = 0 (1/Å).
* Scan: frame z (0-based within the scan) covers phi0 + z dphi ... phi0 + (z+1) dphi
  (degrees); hkl is evaluated at the mid-frame angle phi0 + (z + 1/2) dphi.
* Scattering vector s = r / (|r| λ) − s0 (1/Å), |s| = 2 sin θ / λ = 1/d.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import gemmi
import numpy as np

from ..errors import GeometryError, SymmetryError

__all__ = [
    "Beam",
    "Panel",
    "Goniometer",
    "Scan",
    "Crystal",
    "Sweep",
    "rotation_matrix",
    "space_group_from",
]


def _unit(vector, what: str) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64).reshape(3)
    norm = np.linalg.norm(v)
    if not np.isfinite(norm) or norm == 0:
        raise GeometryError(f"{what} must be a finite non-zero 3-vector, got {list(v)}")
    return v / norm


def rotation_matrix(axis, angle_deg: float) -> np.ndarray:
    """Right-handed rotation by ``angle_deg`` (degrees) about the unit vector ``axis`` (Rodrigues)."""
    m = _unit(axis, "rotation axis")
    theta = np.deg2rad(angle_deg)
    cross = np.array([[0, -m[2], m[1]], [m[2], 0, -m[0]], [-m[1], m[0], 0]])
    return np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * (cross @ cross)


def space_group_from(symbol) -> gemmi.SpaceGroup:
    """A ``gemmi.SpaceGroup`` from a number, Hermann–Mauguin name or Hall symbol.

    Raises
    ------
    SymmetryError
        If gemmi does not know the symbol.
    """
    if isinstance(symbol, gemmi.SpaceGroup):
        return symbol
    text = str(symbol).strip()
    sg = None
    try:
        if text.isdigit():
            sg = gemmi.find_spacegroup_by_number(int(text))
        else:
            sg = gemmi.find_spacegroup_by_name(text)
            if sg is None:
                sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(text))
    except (RuntimeError, ValueError):
        sg = None
    if sg is None:
        raise SymmetryError(f"unknown space group {symbol!r}")
    return sg


@dataclass(frozen=True)
class Beam:
    """Incident beam.

    direction : (3,) unit vector of propagation (lab). wavelength : Å.
    polarization_fraction : fraction p of the intensity polarised with its electric
    vector perpendicular to ``polarization_normal`` (the normal of the polarisation plane).
    """

    direction: np.ndarray
    wavelength: float
    polarization_fraction: float = 0.99
    polarization_normal: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))

    def __post_init__(self):
        object.__setattr__(self, "direction", _unit(self.direction, "beam direction"))
        object.__setattr__(self, "polarization_normal", _unit(self.polarization_normal, "polarization normal"))
        if not (np.isfinite(self.wavelength) and self.wavelength > 0):
            raise GeometryError(f"wavelength must be positive, got {self.wavelength}")
        if not 0 <= self.polarization_fraction <= 1:
            raise GeometryError(f"polarization fraction must be in [0, 1], got {self.polarization_fraction}")

    @property
    def s0(self) -> np.ndarray:
        """Incident wave vector (1/Å)."""
        return self.direction / self.wavelength


@dataclass(frozen=True)
class Panel:
    """A flat detector panel.

    origin : (3,) mm, lab position of the outer corner of pixel (0, 0).
    fast_axis, slow_axis : (3,) unit vectors along increasing fast / slow array index.
    pixel_size : (px, py) mm. image_size : (n_fast, n_slow) pixels.
    thickness : sensor thickness, mm. material : sensor chemical formula ("Si", "CdTe").
    trusted_range : (min_valid, overload) counts; values outside are invalid per frame.
    """

    origin: np.ndarray
    fast_axis: np.ndarray
    slow_axis: np.ndarray
    pixel_size: tuple[float, float]
    image_size: tuple[int, int]
    thickness: float = 0.45
    material: str = "Si"
    trusted_range: tuple[float, float] = (0.0, 1.0e6)
    name: str = "panel"

    def __post_init__(self):
        object.__setattr__(self, "origin", np.asarray(self.origin, dtype=np.float64).reshape(3))
        object.__setattr__(self, "fast_axis", _unit(self.fast_axis, "detector fast axis"))
        object.__setattr__(self, "slow_axis", _unit(self.slow_axis, "detector slow axis"))
        object.__setattr__(self, "pixel_size", tuple(float(x) for x in self.pixel_size))
        object.__setattr__(self, "image_size", tuple(int(x) for x in self.image_size))
        if not (min(self.pixel_size) > 0 and np.all(np.isfinite(self.pixel_size))) or min(self.image_size) <= 0:
            raise GeometryError(f"panel pixel size {self.pixel_size} and image size {self.image_size} must be positive")
        if not np.all(np.isfinite(self.origin)):
            raise GeometryError(f"detector origin (distance and beam centre) is not finite: {self.origin.tolist()}")
        if abs(float(np.dot(np.cross(self.fast_axis, self.slow_axis), self.origin))) < 1e-6:
            raise GeometryError(f"detector distance is zero: origin {self.origin.tolist()} lies in the detector plane "
                                f"through the sample")

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape (n_slow, n_fast) of an image of this panel."""
        return self.image_size[1], self.image_size[0]

    @property
    def normal(self) -> np.ndarray:
        """Unit normal fast × slow (points away from the sample for the usual setups)."""
        n = np.cross(self.fast_axis, self.slow_axis)
        return n / np.linalg.norm(n)

    def pixel_positions(self, fast=None, slow=None) -> np.ndarray:
        """Lab positions (mm) of pixel centres.

        With no arguments: every pixel, shape (n_slow, n_fast, 3). Otherwise ``fast`` and
        ``slow`` are (possibly fractional) 0-based pixel-centre indices of equal shape and
        the result has that shape + (3,).
        """
        if fast is None:
            slow, fast = np.meshgrid(np.arange(self.shape[0]), np.arange(self.shape[1]), indexing="ij")
        fast = np.asarray(fast, dtype=np.float64)
        slow = np.asarray(slow, dtype=np.float64)
        px, py = self.pixel_size
        return (
            self.origin
            + ((fast + 0.5) * px)[..., None] * self.fast_axis
            + ((slow + 0.5) * py)[..., None] * self.slow_axis
        )


@dataclass(frozen=True)
class Goniometer:
    """Single-axis goniometer: lab rotation ``S @ R(axis, phi) @ F`` (DIALS convention)."""

    rotation_axis: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    fixed_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    setting_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self):
        object.__setattr__(self, "rotation_axis", _unit(self.rotation_axis, "rotation axis"))
        for name in ("fixed_rotation", "setting_rotation"):
            m = np.asarray(getattr(self, name), dtype=np.float64).reshape(3, 3)
            if not np.allclose(m @ m.T, np.eye(3), atol=1e-6):
                raise GeometryError(f"goniometer {name} is not a rotation matrix: {m.tolist()}")
            object.__setattr__(self, name, m)

    def rotation(self, phi_deg: float) -> np.ndarray:
        """Lab rotation at spindle angle ``phi_deg`` (degrees)."""
        return self.setting_rotation @ rotation_matrix(self.rotation_axis, phi_deg) @ self.fixed_rotation

    @property
    def lab_axis(self) -> np.ndarray:
        """Rotation axis in the lab frame (S @ axis)."""
        return self.setting_rotation @ self.rotation_axis


@dataclass(frozen=True)
class Scan:
    """Frames of one sweep.

    image_range : (first, last) file numbers, inclusive (as in XDS DATA_RANGE / DIALS).
    oscillation : (phi0, dphi) degrees, phi0 = spindle angle at the *start* of the first frame.
    exposure_times : (n_frames,) seconds.
    """

    image_range: tuple[int, int]
    oscillation: tuple[float, float]
    exposure_times: np.ndarray

    def __post_init__(self):
        first, last = (int(x) for x in self.image_range)
        if last < first:
            raise GeometryError(f"image range {self.image_range} is empty")
        object.__setattr__(self, "image_range", (first, last))
        object.__setattr__(self, "oscillation", tuple(float(x) for x in self.oscillation))
        if not np.all(np.isfinite(self.oscillation)):
            raise GeometryError(f"oscillation (start, width) is not finite: {self.oscillation}")
        t = np.broadcast_to(np.asarray(self.exposure_times, dtype=np.float64), (last - first + 1,)).copy()
        if not np.all(np.isfinite(t) & (t > 0)):
            raise GeometryError(f"exposure times must be positive and finite, got {t[:5]}...")
        object.__setattr__(self, "exposure_times", t)

    @property
    def num_frames(self) -> int:
        return self.image_range[1] - self.image_range[0] + 1

    @property
    def is_still(self) -> bool:
        return self.oscillation[1] == 0

    def mid_angle(self, z) -> np.ndarray:
        """Spindle angle (degrees) at the middle of 0-based frame ``z``."""
        phi0, dphi = self.oscillation
        return phi0 + (np.asarray(z, dtype=np.float64) + 0.5) * dphi


@dataclass(frozen=True)
class Crystal:
    """Crystal: setting matrix A = UB at phi = 0 (1/Å; columns a*, b*, c* in the lab frame).

    A_per_frame : optional (n_frames, 3, 3) for scan-varying models (A at each frame's
    middle) and for stills (one per image).
    """

    A: np.ndarray
    space_group: gemmi.SpaceGroup
    A_per_frame: np.ndarray | None = None

    def __post_init__(self):
        a = np.asarray(self.A, dtype=np.float64).reshape(3, 3)
        if not np.all(np.isfinite(a)) or abs(np.linalg.det(a)) < 1e-12:
            raise GeometryError(f"crystal setting matrix A is singular or not finite: {a.tolist()}")
        object.__setattr__(self, "A", a)
        object.__setattr__(self, "space_group", space_group_from(self.space_group))
        if self.A_per_frame is not None:
            object.__setattr__(self, "A_per_frame", np.asarray(self.A_per_frame, dtype=np.float64).reshape(-1, 3, 3))

    @classmethod
    def from_real_space(cls, a, b, c, space_group, **kwargs) -> "Crystal":
        """From real-space axes a, b, c (Å, lab frame at phi = 0)."""
        axes = np.array([a, b, c], dtype=np.float64)
        lengths = np.linalg.norm(axes, axis=1) if np.all(np.isfinite(axes)) else np.zeros(3)
        # |det| / (|a||b||c|) is the sine-like volume factor: 0 for zero or coplanar axes
        if np.any(lengths <= 0) or abs(np.linalg.det(axes)) < 1e-6 * np.prod(lengths):
            raise GeometryError(f"crystal axes a, b, c are zero, not finite or (nearly) coplanar: {axes.tolist()} Å")
        return cls(A=np.linalg.inv(axes), space_group=space_group, **kwargs)

    @property
    def real_space_axes(self) -> np.ndarray:
        """Rows a, b, c (Å) at phi = 0."""
        return np.linalg.inv(self.A)

    @property
    def unit_cell(self) -> gemmi.UnitCell:
        axes = self.real_space_axes
        lengths = np.linalg.norm(axes, axis=1)

        def angle(u, v):
            return np.degrees(np.arccos(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))))

        return gemmi.UnitCell(*lengths, angle(axes[1], axes[2]), angle(axes[0], axes[2]), angle(axes[0], axes[1]))

    @property
    def reciprocal_metric(self) -> np.ndarray:
        """G* = AᵀA (1/Å²): |s|² = hᵀ G* h for fractional Miller indices h."""
        return self.A.T @ self.A

    @property
    def reciprocal_volume(self) -> float:
        """V* = 1/V (1/Å³)."""
        return abs(np.linalg.det(self.A))


@dataclass(frozen=True)
class Sweep:
    """One rotation sweep (or one still): everything needed to process its frames.

    images : list of image file paths, one per frame (a multi-frame HDF5 file repeats
    its path with ``image_indices`` giving the frame inside it).
    untrusted : list of regions from the geometry input (see ``masking.pixel``).
    batch : batch id of this sweep in the observation table.
    """

    beam: Beam
    panel: Panel
    goniometer: Goniometer
    scan: Scan
    crystal: Crystal
    images: tuple[str, ...]
    image_indices: tuple[int, ...] | None = None
    untrusted: tuple = ()
    batch: int = 0
    source: str = ""

    def __post_init__(self):
        if len(self.images) != self.scan.num_frames:
            raise GeometryError(
                f"{self.source or 'sweep'}: {len(self.images)} image files for {self.scan.num_frames} frames"
            )

    def with_batch(self, batch: int) -> "Sweep":
        return replace(self, batch=batch)

    def setting_matrix(self, z: int) -> np.ndarray:
        """Lab-frame matrix M(z) with reciprocal vector = M(z) @ hkl at the middle of frame z."""
        if self.crystal.A_per_frame is not None:
            A = self.crystal.A_per_frame[z]
        else:
            A = self.crystal.A
        if self.scan.is_still:
            # DIALS stills: the crystal model is already in the image's orientation; the
            # scan's start angle only records the spindle position (dials stills predictor).
            return A
        return self.goniometer.rotation(float(self.scan.mid_angle(z))) @ A
