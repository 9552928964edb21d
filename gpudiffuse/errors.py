"""Exception types. Every message names the file or value that is wrong."""

__all__ = [
    "GpudiffuseError",
    "GeometryError",
    "ImageError",
    "MaskError",
    "GridError",
    "SymmetryError",
    "OutputExistsError",
    "DeviceError",
    "OutputError",
    "StepInputError",
    "UsageError",
]


class GpudiffuseError(Exception):
    """Base class: a problem with the user's input that the CLI reports without a traceback."""


class GeometryError(GpudiffuseError):
    """A geometry file (XDS.INP, XPARM.XDS, DIALS .expt) is missing, unreadable or inconsistent."""


class ImageError(GpudiffuseError):
    """An image file is missing, corrupt, truncated or does not match the geometry."""


class MaskError(GpudiffuseError):
    """The pixel mask leaves nothing to process, or a mask specification is malformed."""


class GridError(GpudiffuseError):
    """The voxel grid cannot be built (bad ndiv, resolution beyond the detector edge...)."""


class SymmetryError(GpudiffuseError):
    """Unknown space group, or a grid incompatible with the Laue group."""


class OutputExistsError(GpudiffuseError):
    """An output would overwrite a file the user already has."""


class DeviceError(GpudiffuseError):
    """The requested compute device is not available."""


class OutputError(GpudiffuseError):
    """An output file could not be written (full disk, permissions, …)."""


class StepInputError(GpudiffuseError):
    """A step's input file (an earlier step's output) is missing, unfinished or out of date."""


class UsageError(GpudiffuseError):
    """Options that cannot work together or name an impossible output; the command exits with 2."""
