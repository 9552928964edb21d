"""The processing steps (DESIGN §13). Each module owns its parameters, its NeXus file format and
a ``run_<step>`` function usable without the command line; ``pipeline.process`` only chains them.

=========== ================ ==========================================================
step        file             reads
=========== ================ ==========================================================
import      experiment.nxs   geometry files, image headers (``steps.importing``)
find-peaks  peaks.nxs        experiment, frames (``steps.find_peaks``)
integrate   integrate.nxs    experiment, peaks, frames (``steps.integrate``)
scale       scale.nxs        experiment, integrate (``steps.scale``)
merge       merged.nxs       experiment, integrate, scale (``steps.merge``)
map         map.nxs          merge (``steps.map``)
=========== ================ ==========================================================
"""

from .keys import STEP_FILES, step_path

__all__ = ["STEP_FILES", "step_path"]
