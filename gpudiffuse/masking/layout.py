"""Detector layouts: module gaps and detector regions of Pilatus and Eiger detectors.

Module sizes and gaps (pixels), from the DECTRIS detector specifications:
Pilatus modules are 487 × 195 pixels with gaps of 7 (fast) and 17 (slow) pixels; each
module is 8 × 2 chips of 60 × 97 pixels with wider pixels at chip borders. Eiger
modules are 1030 × 514 with gaps of 10 (fast) and 37 (slow); chips 256 × 256.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DetectorLayout", "layout_for_size", "PILATUS", "EIGER"]


@dataclass(frozen=True)
class DetectorLayout:
    """A tiled detector: ``modules`` = (n_fast, n_slow) of ``module_size`` pixels separated by ``gap``."""

    family: str
    module_size: tuple[int, int]
    gap: tuple[int, int]
    modules: tuple[int, int]
    chip_size: tuple[int, int]

    @property
    def image_size(self) -> tuple[int, int]:
        """(n_fast, n_slow) of the full image."""
        return tuple(m * s + (m - 1) * g for m, s, g in zip(self.modules, self.module_size, self.gap))

    def _module_index_1d(self, axis: int) -> np.ndarray:
        n = self.image_size[axis]
        period = self.module_size[axis] + self.gap[axis]
        pos = np.arange(n)
        index = pos // period
        return np.where(pos % period < self.module_size[axis], index, -1)

    def gap_mask(self) -> np.ndarray:
        """Boolean (n_slow, n_fast): True on sensitive pixels, False in module gaps."""
        fast = self._module_index_1d(0) >= 0
        slow = self._module_index_1d(1) >= 0
        return slow[:, None] & fast[None, :]

    def module_ids(self) -> np.ndarray:
        """int32 (n_slow, n_fast): module number (row-major over modules), −1 in gaps."""
        fast = self._module_index_1d(0)
        slow = self._module_index_1d(1)
        ids = slow[:, None] * self.modules[0] + fast[None, :]
        return np.where((fast[None, :] >= 0) & (slow[:, None] >= 0), ids, -1).astype(np.int32)

    def chip_border_mask(self) -> np.ndarray:
        """Boolean (n_slow, n_fast): True except on the enlarged ("virtual") pixels at chip borders."""
        keep = []
        for axis in (0, 1):
            n = self.image_size[axis]
            period = self.module_size[axis] + self.gap[axis]
            local = np.arange(n) % period
            chip = self.chip_size[axis]
            n_chips = max(1, round(self.module_size[axis] / chip))
            if n_chips == 1:
                keep.append(np.ones(n, bool))
                continue
            step = self.module_size[axis] / n_chips
            borders = np.round(step * np.arange(1, n_chips)).astype(int)
            border = np.isin(local, borders) | np.isin(local, borders - 1)
            keep.append(~border)
        return keep[1][:, None] & keep[0][None, :]


PILATUS = {"module_size": (487, 195), "gap": (7, 17), "chip_size": (60, 97)}
EIGER = {"module_size": (1030, 514), "gap": (10, 37), "chip_size": (256, 256)}


def layout_for_size(image_size: tuple[int, int]) -> DetectorLayout | None:
    """The Pilatus or Eiger layout whose full image is ``image_size`` (n_fast, n_slow), else None."""
    for family, spec in (("Pilatus", PILATUS), ("Eiger", EIGER)):
        (mx, my), (gx, gy) = spec["module_size"], spec["gap"]
        nx, ny = image_size
        if (nx + gx) % (mx + gx) == 0 and (ny + gy) % (my + gy) == 0:
            modules = ((nx + gx) // (mx + gx), (ny + gy) // (my + gy))
            return DetectorLayout(family, spec["module_size"], spec["gap"], modules, spec["chip_size"])
    return None
