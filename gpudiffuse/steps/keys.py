"""Step cache keys and reuse (DESIGN §13).

A step's key is derived, never hand-listed: ``{"step", "parameters", "reads", "inputs"}`` with
the step's own normalised parameters, the digest of the stored key of every step file it reads
(so the key of ``merged.nxs`` changes whenever anything upstream of it changed), and, for the
import, the fingerprint of the input files (``io.fingerprint``). The key is stored as the
``parameters`` attribute of the step file (``io.nexus.write_provenance``).

A finished step file is reused when its stored key equals the wanted one. When only what it read
changed (input files, or an upstream step that was run again), it is the program's own result of
inputs that no longer exist, so it is run again; when its own parameters changed it is replaced
only with ``overwrite``, and the refusal names the parameters. After a step is (re)written,
step files further down that were made from an older version of it are removed, so that a folder
never holds a map that disagrees with its scale.nxs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

from ..errors import OutputExistsError, StepInputError
from ..io.nexus import normalised_parameters, read_parameters, step_elapsed

__all__ = ["STEPS", "STEP_FILES", "step_path", "make_key", "stored_key", "stored_digest", "should_run", "cached_step",
           "remove_stale_downstream"]

logger = logging.getLogger(__name__)

STEP_FILES = {"import": "experiment.nxs", "find_peaks": "peaks.nxs", "integrate": "integrate.nxs",
              "scale": "scale.nxs", "absolute": "absolute.nxs", "merge": "merged.nxs", "map": "map.nxs"}
STEPS = tuple(STEP_FILES)
# the command that makes each step's file (for messages)
COMMANDS = {"import": "import", "find_peaks": "find-peaks", "integrate": "integrate", "scale": "scale",
            "absolute": "absolute", "merge": "merge", "map": "map"}
# optional steps that a later step applies whenever their file is there: a later file made
# without one (its digest None) is out of date once it exists
APPLIED_WHEN_PRESENT = ("absolute",)


def step_path(out: str, step: str) -> str:
    return os.path.join(out, STEP_FILES[step])


def key_digest(key: dict) -> str:
    """SHA-256 of a key's canonical JSON."""
    return hashlib.sha256(json.dumps(normalised_parameters(key), sort_keys=True).encode()).hexdigest()


def stored_digest(out: str, step: str) -> str:
    """The digest of the key stored in ``OUT/<step file>``; a missing or unreadable file is named."""
    return key_digest(stored_key(out, step))


def stored_key(out: str, step: str) -> dict:
    """The key stored in ``OUT/<step file>``, refusing a missing, unfinished or foreign file."""
    path = step_path(out, step)
    key = read_parameters(path) if os.path.exists(path) else None
    if key is None:
        raise StepInputError(f"{path} does not exist or is not a finished step file: run `gpudiffuse "
                             f"{COMMANDS[step]}` (or `gpudiffuse process`) first")
    if not _current_format(key, step):
        raise StepInputError(f"{path} was written by an older gpudiffuse or by another step: run `gpudiffuse "
                             f"{COMMANDS[step]} --overwrite` (or `gpudiffuse process --overwrite`)")
    return key


def _current_format(key, step: str) -> bool:
    return isinstance(key, dict) and key.get("step") == step and isinstance(key.get("reads"), dict)


def make_key(step: str, parameters: dict, reads: dict | None = None, inputs: dict | None = None) -> dict:
    """The normalised key of ``step``. ``reads`` maps each step it reads to that file's digest
    (None where a step is not used, e.g. no peak search without a Bragg mask)."""
    return normalised_parameters({"step": step, "parameters": parameters, "reads": reads or {}, "inputs": inputs})


def _differences(stored, wanted, prefix="") -> list[str]:
    """Dotted names of the entries in which two parameter dicts differ."""
    if not isinstance(stored, dict) or not isinstance(wanted, dict):
        return [prefix or "parameters"] if stored != wanted else []
    out = []
    for key in sorted(set(stored) | set(wanted), key=str):
        out += _differences(stored.get(key), wanted.get(key), f"{prefix}.{key}" if prefix else str(key))
    return out


def should_run(path: str, key: dict, overwrite: bool) -> bool:
    """Whether to (re)run the step that writes ``path`` (see the module docstring)."""
    if not os.path.exists(path):
        return True
    stored = read_parameters(path)
    if stored == key:
        logger.info("%s is up to date: skipping this step", path)
        return False
    if stored is not None and not _current_format(stored, key["step"]):
        if overwrite:
            return True
        raise OutputExistsError(f"{path} exists and was written by an older gpudiffuse or by another step; pass "
                                "--overwrite to replace it")
    changed = _differences(stored or {}, key)
    if stored is not None and changed and all(name.startswith(("inputs", "reads")) for name in changed):
        logger.info("%s: the input files changed since it was written (%s): running the step again", path,
                    ", ".join(_input_names(changed)))
        return True
    if overwrite:
        return True
    names = [name.removeprefix("parameters.") for name in changed]
    raise OutputExistsError(f"{path} exists and was made with other parameters ({', '.join(names[:6])}"
                            f"{', …' if len(names) > 6 else ''}); pass --overwrite to replace it")


def _input_names(changed):
    names = []
    for c in changed:
        if c.startswith("inputs.geometry."):
            names.append(c.split("inputs.geometry.", 1)[1])
        elif c == "inputs.frames":
            names.append("image files")
        elif c.startswith("reads."):
            step = c.split(".", 1)[1]
            names.append(STEP_FILES.get(step, step))
        else:
            names.append("no fingerprint stored" if c == "inputs" else c)
    return names


def cached_step(out: str, step: str, key: dict, overwrite: bool, compute, write, read):
    """Run a step through its cache: ``compute()`` and ``write(path, result, key)`` when it has to
    run (then remove the downstream files made from its older version), else ``read(path)``."""
    path = step_path(out, step)
    if should_run(path, key, overwrite):
        start = time.perf_counter()
        result = compute()
        with step_elapsed(time.perf_counter() - start):
            write(path, result, key)
        remove_stale_downstream(out, step)
        return result
    return read(path)


def remove_stale_downstream(out: str, step: str) -> list[str]:
    """Remove the step files after ``step`` that read an older version of a file now in ``out``
    (or one that is gone), and gpudiffuse's report, which shows them all. Returns the removed
    step files."""
    from .report import remove_outdated_report  # noqa: PLC0415

    remove_outdated_report(out)
    removed = []
    for later in STEPS[STEPS.index(step) + 1:]:
        path = step_path(out, later)
        key = read_parameters(path) if os.path.exists(path) else None
        if not key or not isinstance(key.get("reads"), dict):
            continue
        for upstream, digest in key["reads"].items():
            upstream_path = step_path(out, upstream)
            if digest is None and not (upstream in APPLIED_WHEN_PRESENT and os.path.exists(upstream_path)):
                continue
            current = read_parameters(upstream_path) if os.path.exists(upstream_path) else None
            if current is None or key_digest(current) != digest:
                os.remove(path)
                removed.append(path)
                logger.info("removed %s: it was made from an older %s", path, STEP_FILES[upstream])
                break
    return removed
