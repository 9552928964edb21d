"""Which steps of ``process`` can be reused (DESIGN §13): a step's cache key holds the parameters
of it and of every step before it and a fingerprint of the input files (``io.fingerprint``). A
finished step file is reused when its stored key equals the wanted one; changed inputs run the
step again; changed parameters need --overwrite, and the refusal names them."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict

from .errors import OutputExistsError
from .io.nexus import normalised_parameters, read_parameters

__all__ = ["STEPS", "step_key", "should_run"]

logger = logging.getLogger(__name__)

STEPS = ("experiment", "peaks", "integrate", "scale", "merged", "map")


def step_key(params, upto: str, inputs: dict | None = None) -> dict:
    """The cache key of step ``upto``: the parameters of it and of every step before it (a step's
    result depends on all of them) and the fingerprint of the input files."""
    level = STEPS.index(upto)
    geometry = asdict(params.geometry)  # paths made absolute: the same files spelled otherwise are the same run
    geometry["xds"] = os.path.abspath(geometry["xds"]) if geometry["xds"] else None
    geometry["expt"] = [os.path.abspath(p) for p in geometry["expt"]]
    d = {"geometry": geometry, "inputs": inputs}
    if level >= STEPS.index("peaks"):
        d["peaks"] = asdict(params.peaks)
        d["bragg_mask"] = params.bragg_mask
        d["dmin"] = params.integration.dmin
    if level >= STEPS.index("integrate"):
        d["integration"] = asdict(params.integration)
        d["background"] = os.path.abspath(params.background) if params.background else None
        d["scale"] = params.scale
        d["min_pixels"], d["min_counts"] = params.min_pixels, params.min_counts
    if level >= STEPS.index("scale"):
        d["scaling"] = asdict(params.scaling) if params.scale == "model" else None
    if level >= STEPS.index("merged"):
        d["merging"] = asdict(params.merging)
    return d


def _differences(stored, wanted, prefix="") -> list[str]:
    """Dotted names of the entries in which two parameter dicts differ."""
    if not isinstance(stored, dict) or not isinstance(wanted, dict):
        return [prefix or "parameters"] if stored != wanted else []
    out = []
    for key in sorted(set(stored) | set(wanted), key=str):
        out += _differences(stored.get(key), wanted.get(key), f"{prefix}.{key}" if prefix else str(key))
    return out


def should_run(path, parameters, overwrite) -> bool:
    """Whether to (re)run the step that writes ``path``. Changed inputs run it again (the file is
    this program's own, made from inputs that no longer exist); changed parameters need --overwrite,
    and the refusal names them."""
    if not os.path.exists(path):
        return True
    stored, wanted = read_parameters(path), normalised_parameters(parameters)
    if stored == wanted:
        logger.info("%s is up to date: skipping this step", path)
        return False
    changed = _differences(stored or {}, wanted)
    if changed and all(name.startswith("inputs") for name in changed):
        logger.info("%s: the input files changed since it was written (%s): running the step again", path,
                    ", ".join(_input_names(changed)))
        return True
    if overwrite:
        return True
    raise OutputExistsError(f"{path} exists and was made with other parameters ({', '.join(changed[:6])}"
                            f"{', …' if len(changed) > 6 else ''}); pass --overwrite to replace it")


def _input_names(changed):
    names = [c.split("inputs.geometry.", 1)[1] if c.startswith("inputs.geometry.") else
             "image files" if c == "inputs.frames" else c for c in changed]
    return names if names != ["inputs"] else ["no fingerprint stored"]
