"""The import step: geometry, image checks and the static pixel mask → ``experiment.nxs``.

Its key holds the import parameters (paths made absolute, so the same files spelled otherwise are
the same run) and the fingerprint of the input files: an edited geometry file or a touched frame
runs it again. Steps that read frames themselves check that fingerprint before they start.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from types import SimpleNamespace

from ..errors import GpudiffuseError, StepInputError
from ..experiment import Experiment, ImportParameters, import_experiment, read_experiment, write_experiment
from ..io.fingerprint import input_fingerprint
from ..io.nexus import normalised_parameters
from .keys import cached_step, make_key, step_path, stored_key

__all__ = ["run_import", "load_experiment", "import_key"]

logger = logging.getLogger(__name__)


def _parameters(params: ImportParameters) -> dict:
    geometry = asdict(params)
    geometry["xds"] = os.path.abspath(geometry["xds"]) if geometry["xds"] else None
    geometry["expt"] = [os.path.abspath(p) for p in geometry["expt"]]
    return geometry


def import_key(params: ImportParameters, inputs: dict | None) -> dict:
    return make_key("import", _parameters(params), inputs=inputs)


def _previous(path):
    try:
        return read_experiment(path) if os.path.exists(path) else None
    except (GpudiffuseError, OSError, KeyError, ValueError):
        return None


def run_import(params: ImportParameters, out: str, overwrite: bool = False) -> Experiment:
    """Import into ``OUT/experiment.nxs``, or reuse it when parameters and input files are unchanged."""
    previous = _previous(step_path(out, "import"))
    inputs = None if previous is None else input_fingerprint(params, previous)

    def write(path, experiment, _):  # the key stored holds the fingerprint of what was imported
        write_experiment(experiment, path, import_key(params, input_fingerprint(params, experiment)), overwrite=True)

    return cached_step(out, "import", import_key(params, inputs), overwrite, lambda: import_experiment(params), write,
                       lambda path: previous)


def load_experiment(out: str, check_inputs: bool = False) -> Experiment:
    """``OUT/experiment.nxs`` for a step run on its own. With ``check_inputs`` (steps that read the
    frames), refuse when the geometry files or frames changed since the import."""
    path = step_path(out, "import")
    key = stored_key(out, "import")  # names a missing, unfinished or foreign file
    experiment = read_experiment(path)
    if check_inputs and isinstance(key.get("parameters"), dict):
        now = input_fingerprint(SimpleNamespace(**key["parameters"]), experiment)
        if key.get("inputs") is not None and normalised_parameters(now) != key["inputs"]:
            raise StepInputError(f"{path}: the geometry files or frames changed since it was written; run "
                                 "`gpudiffuse import` again (or `gpudiffuse process`)")
    return experiment

