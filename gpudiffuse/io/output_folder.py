"""One run per output folder, and clean-up that removes only what the run itself left unfinished.

``OutputFolder(path)`` is a context manager around a run: it takes ``path/.gpudiffuse.lock``
(holding the process id; a second run is refused with that id, a lock whose process no longer
exists is taken over) and removes temporary step files (``.tmp-*.nxs``) that a killed run left.
On an error it removes the files this run wrote (bad input leaves no output; files that were there
before, or that another program put there, are never touched) and the folder if this run made it
and it is then empty. On Ctrl-C the finished steps stay (complete files, written atomically), and
the next run with the same parameters resumes from them.
"""

from __future__ import annotations

import glob
import os

from ..errors import GpudiffuseError
from .nexus import WRITTEN

__all__ = ["OutputFolder", "LOCK_NAME"]

LOCK_NAME = ".gpudiffuse.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputFolder:
    def __init__(self, path: str):
        self.path = path
        self.lock = os.path.join(path, LOCK_NAME)
        self.created = False

    def __enter__(self):
        self.created = not os.path.exists(self.path)
        self.first_written = len(WRITTEN)
        os.makedirs(self.path, exist_ok=True)
        try:
            descriptor = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(open(self.lock).read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise GpudiffuseError(f"{self.path} is in use by another gpudiffuse run (process {pid}); wait for "
                                      f"it to finish, or remove {self.lock} if that process is not gpudiffuse")
            os.remove(self.lock)  # left by a run that was killed
            descriptor = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(str(os.getpid()))
        for stale in glob.glob(os.path.join(self.path, ".tmp-*.nxs")):  # a killed run's unfinished files
            os.remove(stale)
        return self

    def __exit__(self, exc_type, exc, tb):
        if os.path.exists(self.lock):
            os.remove(self.lock)
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            folder = os.path.abspath(self.path)
            for path in WRITTEN[self.first_written:]:
                if os.path.dirname(path) == folder and os.path.exists(path):
                    os.remove(path)
        if exc_type is not None and self.created and os.path.isdir(self.path) and not os.listdir(self.path):
            os.rmdir(self.path)
        return False
