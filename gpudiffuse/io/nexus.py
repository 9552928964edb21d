"""NeXus/HDF5 output written atomically, with provenance attributes.

Each step writes ``<name>.nxs`` through :func:`atomic_nexus`: the file is built under a
temporary name in the same folder and renamed into place only when complete, so an
interrupted run never leaves a half-written result.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from datetime import datetime, timezone

import h5py
import numpy as np

from .. import __version__

__all__ = ["atomic_file", "atomic_nexus", "create_step_entry", "write_provenance", "read_parameters", "normalised_parameters", "set_command_line",
           "step_elapsed"]


WRITTEN: list[str] = []  # every file atomic_nexus finished in this process (for OutputFolder's clean-up)
_COMMAND_LINE: list[str | None] = [None]  # the command that runs in this process, for the provenance
_ELAPSED: list[float | None] = [None]  # wall time of the step being written (s), for the provenance


@contextlib.contextmanager
def step_elapsed(seconds: float):
    """Within the block, step files record ``seconds`` as the wall time of the step that made them."""
    _ELAPSED[0] = float(seconds)
    try:
        yield
    finally:
        _ELAPSED[0] = None


def set_command_line(argv) -> None:
    """Record the command line (``gpudiffuse`` and its arguments) that every step file then stores."""
    import shlex  # noqa: PLC0415

    _COMMAND_LINE[0] = shlex.join(["gpudiffuse", *argv])


@contextlib.contextmanager
def atomic_file(path: str, overwrite: bool = False):
    """Context manager yielding a temporary path in ``path``'s folder; the file written there is
    renamed to ``path`` on success only (with the umask's permissions), and removed otherwise."""
    from ..errors import OutputError, OutputExistsError  # noqa: PLC0415

    path = str(path)
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        # named .tmp-*.nxs whatever the format: OutputFolder removes those a killed run left
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".nxs", dir=folder)
        os.close(fd)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are as readable as any file the user writes
        os.replace(tmp, path)
        WRITTEN.append(os.path.abspath(path))
    except OSError as exc:  # a full disk, a folder that became read-only, …: one line naming the file
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_nexus(path: str, overwrite: bool = False):
    """Context manager yielding an open ``h5py.File`` that appears at ``path`` on success only."""
    with atomic_file(path, overwrite) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["NX_class"] = "NXroot"
            handle.attrs["creator"] = f"gpudiffuse {__version__}"
            handle.attrs["file_time"] = datetime.now(timezone.utc).isoformat()
            yield handle


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def create_step_entry(handle, step: str, parameters: dict, backend=None):
    """The ``/entry`` NXentry of a step file, with its provenance (:func:`write_provenance`)."""
    entry = handle.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    write_provenance(entry, step, parameters, backend)
    return entry


def write_provenance(group, step: str, parameters: dict, backend=None):
    """Store program version, step name, parameters (the step's cache key, JSON: with the input
    fingerprints), the command line and device on ``group``."""
    group.attrs["program"] = "gpudiffuse"
    group.attrs["program_version"] = __version__
    group.attrs["step"] = step
    group.attrs["parameters"] = json.dumps(parameters, sort_keys=True, default=_json_default)
    if _ELAPSED[0] is not None:
        group.attrs["elapsed_s"] = round(_ELAPSED[0], 3)
    if _COMMAND_LINE[0] is not None:
        group.attrs["command_line"] = _COMMAND_LINE[0]
        group.attrs["working_directory"] = os.getcwd()
    if backend is not None:
        for key, value in backend.as_attrs().items():
            group.attrs[key] = value


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


def read_parameters(path: str) -> dict | None:
    """The ``parameters`` attribute of ``/entry`` of a finished step file, or None."""
    try:
        with h5py.File(path, "r") as handle:
            return json.loads(handle["entry"].attrs["parameters"])
    except (OSError, KeyError, ValueError):
        return None


def normalised_parameters(parameters: dict) -> dict:
    """``parameters`` as they read back from a step file (JSON types)."""
    return json.loads(json.dumps(parameters, sort_keys=True, default=_json_default))


