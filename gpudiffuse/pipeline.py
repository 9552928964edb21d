"""Batch processing: the steps of ``gpudiffuse process`` chained (import → find peaks →
integrate → scale → [absolute] → merge → map, DESIGN §13). Each step lives in ``gpudiffuse.steps``, owns its
file ``OUT/<step>.nxs`` and reuses it when its key is unchanged; this module only checks the
whole run's options before any heavy work and passes each step what the previous ones made.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

from .backend import release_free_memory, resolve_device
from .experiment import ImportParameters, summarise
from .integration import IntegrationParameters
from .integration.pixels import frame_list
from .masking.peaks import PeakParameters
from .merge import MergeParameters, check_grid_symmetry
from .scaling import ScaleOptions
from .steps.absolute import AbsoluteParameters, run_absolute
from .steps.find_peaks import run_find_peaks
from .steps.importing import run_import
from .steps.integrate import EngineChoice, IntegrateParameters, run_integrate
from .steps.limits import check_background, check_grid_memory, resolve_dmin
from .steps.map import run_map
from .steps.merge import run_merge
from .steps.scale import ScaleStepParameters, run_scale

__all__ = ["ProcessParameters", "process"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessParameters:
    """All parameters of ``gpudiffuse process`` (see ``gpudiffuse process --help``); each step's
    own parameters are made from them by the methods below."""

    geometry: ImportParameters
    integration: IntegrationParameters = field(default_factory=IntegrationParameters)
    peaks: PeakParameters = field(default_factory=PeakParameters)
    merging: MergeParameters = field(default_factory=MergeParameters)
    scaling: ScaleOptions = field(default_factory=ScaleOptions)
    device: str = "auto"
    engine: str | None = None          # None: from the device (cuda or cpu)
    nproc: int | None = None
    scheduler: str | None = None
    dask_workers: int | None = None
    background: str | None = None
    bragg_mask: str | bool = "peak-cloud"   # peak-cloud, statistical, both, none (True/False: peak-cloud/none)
    scale: str = "model"
    min_pixels: int = 1
    min_counts: int = 0
    absolute: AbsoluteParameters | None = None   # the absolute scale, when a model or composition is given

    def __post_init__(self):
        self.scale_parameters()  # an unknown scale mode is refused here

    def integrate_parameters(self) -> IntegrateParameters:
        return IntegrateParameters(self.integration, self.bragg_mask, self.background)

    def engines(self) -> EngineChoice:
        return EngineChoice(self.device, self.engine, self.nproc, self.scheduler, self.dask_workers)

    def scale_parameters(self) -> ScaleStepParameters:
        return ScaleStepParameters(self.scale, self.min_pixels, self.min_counts, self.scaling)


class _StepClock:
    """Wall time per step (s), logged as each step ends; at each step's end the C heap's free pages
    go back to the system (:func:`.backend.release_free_memory`, outside the steps' timings), so
    that the next step does not start from this one's high-water mark."""

    def __init__(self):
        self.seconds, self._name, self._start = {}, None, time.perf_counter()

    def step(self, name):
        now = time.perf_counter()
        if self._name is not None:
            self.seconds[self._name] = round(now - self._start, 3)
            logger.info("step %s: %.2f s", self._name, now - self._start)
            release_free_memory()
        self._name, self._start = name, time.perf_counter()


def process(params: ProcessParameters, out: str, overwrite: bool = False, progress: bool = True) -> dict:
    """Run the whole pipeline into folder ``out``. Returns a summary dict (paths, statistics)."""
    backend = resolve_device(params.device)
    logger.info("device: %s (%s)", backend.name, backend.reason)
    engines = params.engines()
    engines.execution(backend)  # an engine that cannot run here is refused before any step
    clock = _StepClock()

    clock.step("import")
    experiment = run_import(params.geometry, out, overwrite)
    # the whole run's options, checked before the first pass over the frames
    check_grid_symmetry(experiment.space_group, params.integration.ndiv)
    dmin = resolve_dmin(experiment, params.integration.dmin)
    check_grid_memory(experiment, params.integration.ndiv, dmin)
    for sweep in experiment.sweeps:
        frame_list(sweep, params.integration.frames)
    if params.background:
        check_background(params.background, experiment)
    logger.info("experiment:\n%s", summarise(experiment))

    clock.step("peaks")
    search = None
    if params.integrate_parameters().peak_cloud:
        search = run_find_peaks(out, params.peaks, params.integration.dmin, overwrite, progress, experiment)

    clock.step("integrate")
    integration = run_integrate(out, params.integrate_parameters(), engines, overwrite, progress, experiment, search,
                                backend)

    clock.step("scale")
    scale = run_scale(out, params.scale_parameters(), overwrite, progress, experiment, integration, backend,
                      release_rows=True)

    absolute = None
    if params.absolute is not None:
        clock.step("absolute")
        absolute = run_absolute(out, params.absolute, overwrite, experiment, integration, scale, backend)

    clock.step("merge")
    merged = run_merge(out, params.merging, overwrite, experiment, integration, scale, backend, absolute)

    # merge has used the tables and the fit's design (its per-row interpolation); the map needs
    # only the merged voxels (1M preset: ~460 MB less at its peak)
    integration = scale.tables = scale.scaled = None
    if scale.fit is not None:
        scale.fit = dataclasses.replace(scale.fit, design=None)
    clock.step("map")
    run_map(out, overwrite, merged, backend)
    clock.step(None)
    return {"merged": merged.merged, "statistics": merged.statistics, "rejected": merged.rejected, "dmin": dmin,
            "timings": clock.seconds, "peak_model": None if search is None else search.model, "out": out,
            "scale_fit": scale.fit, "absolute": absolute, "units": merged.units}
