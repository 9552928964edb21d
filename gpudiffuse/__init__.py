"""gpudiffuse: reduce X-ray diffraction images of crystals to 3-D maps of diffuse scattering.

The pipeline (see ``docs/`` and the project's DESIGN) is: import geometry and images,
build a pixel mask, stream the frames once through pixel -> hkl -> voxel binning with
per-pixel corrections, mask Bragg peaks, merge symmetry mates and write NeXus maps.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpudiffuse")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
