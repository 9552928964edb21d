"""One run per output folder, and clean-up that removes only what the run itself left unfinished.

``OutputFolder(path)`` is a context manager around a run: it takes ``path/.gpudiffuse.lock``
(holding the process id; a second run is refused with that id, a lock whose process no longer
exists is taken over) and removes temporary step files (``.tmp-*.nxs``) that a killed run left.
With ``log``, the whole log of the run (INFO and up, whatever the terminal shows) is appended to
``path/gpudiffuse.log`` with times. On an error it removes the files this run wrote (bad input leaves no output; files that were there
before, or that another program put there, are never touched) and the folder if this run made it
and it is then empty. On Ctrl-C the finished steps stay (complete files, written atomically), and
the next run with the same parameters resumes from them.
"""

from __future__ import annotations

import glob
import logging
import os

from ..errors import GpudiffuseError, UsageError
from .nexus import WRITTEN

__all__ = ["OutputFolder", "LOCK_NAME", "LOG_NAME"]

LOCK_NAME = ".gpudiffuse.lock"
LOG_NAME = "gpudiffuse.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputFolder:
    def __init__(self, path: str, log: bool = False):
        self.path = path
        self.lock = os.path.join(path, LOCK_NAME)
        self.created = False
        self.log = os.path.join(path, LOG_NAME) if log else None
        self.handler = None
        self.log_created = False
        self.root_level = None  # the root logger's level, while it is lowered for the log file

    def _check(self):
        """The folder must exist or be makeable, in a place this user may write (one line if not)."""
        folder = self.path
        if not folder:
            raise UsageError("-o is empty: name an output folder")
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UsageError(f"-o {folder}: exists and is not a folder")
        ancestor = os.path.abspath(folder)
        while not os.path.exists(ancestor):
            ancestor = os.path.dirname(ancestor)
        if not os.path.isdir(ancestor):
            raise UsageError(f"-o {folder}: {ancestor} is not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UsageError(f"-o {folder}: no permission to write in {ancestor}")

    def __enter__(self):
        self._check()
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
        if self.log:
            self.log_created = not os.path.exists(self.log)
            self.handler = logging.FileHandler(self.log, mode="a", encoding="utf-8")
            self.handler.setLevel(logging.INFO)
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            root = logging.getLogger()
            root.addHandler(self.handler)
            if root.level > logging.INFO:
                self.root_level = root.level
                root.setLevel(logging.INFO)  # the file gets INFO; the terminal handler keeps its own level
        return self

    def __exit__(self, exc_type, exc, tb):
        failed = exc_type is not None and not issubclass(exc_type, KeyboardInterrupt)  # Ctrl-C keeps finished steps
        if self.handler is not None:
            root = logging.getLogger()
            root.removeHandler(self.handler)
            self.handler.close()
            if self.root_level is not None:
                root.setLevel(self.root_level)
            if failed and self.log_created:
                os.remove(self.log)  # bad input leaves nothing behind; the error was printed
        if os.path.exists(self.lock):
            os.remove(self.lock)
        if failed:
            folder = os.path.abspath(self.path)
            for path in WRITTEN[self.first_written:]:
                if os.path.dirname(path) == folder and os.path.exists(path):
                    os.remove(path)
        if exc_type is not None and self.created and os.path.isdir(self.path) and not os.listdir(self.path):
            os.rmdir(self.path)
        return False
