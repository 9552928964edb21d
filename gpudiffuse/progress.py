"""Progress bars on a terminal only: piped or logged output gets the log lines, not thousands of
carriage-return updates."""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(progress: bool, **kwargs) -> tqdm:
    """A tqdm bar, disabled unless ``progress`` and standard error is a terminal."""
    return tqdm(disable=not (progress and sys.stderr.isatty()), **kwargs)
