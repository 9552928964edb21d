"""The report step: ``OUT/report.html``, ``OUT/report.pdf`` and ``OUT/report/`` (figures as PNG,
the radial profile as CSV) from the step files of a processed folder. It reads, never changes,
the other files; it replaces an earlier report of gpudiffuse, and anything else of those names
only with ``overwrite``."""

from __future__ import annotations

import logging
import os

from ..errors import OutputExistsError

__all__ = ["run_report", "remove_outdated_report"]

logger = logging.getLogger(__name__)


def _ours(out: str) -> bool:
    """Whether the report files in ``out`` (if any) were written by gpudiffuse."""
    from ..report.document import GENERATOR  # noqa: PLC0415

    path = os.path.join(out, "report.html")
    if not os.path.exists(path):
        return not os.path.exists(os.path.join(out, "report.pdf")) and not os.path.exists(os.path.join(out, "report"))
    with open(path, encoding="utf-8", errors="replace") as handle:
        return f'content="{GENERATOR}' in handle.read(4096)


def remove_outdated_report(out: str) -> None:
    """Remove gpudiffuse's report of ``out`` (a step it shows was just written again)."""
    import shutil  # noqa: PLC0415

    if not os.path.exists(os.path.join(out, "report.html")) or not _ours(out):
        return
    for name in ("report.html", "report.pdf"):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    shutil.rmtree(os.path.join(out, "report"), ignore_errors=True)
    logger.info("removed %s: it showed older step files", os.path.join(out, "report.html"))


def run_report(out: str, overwrite: bool = False) -> dict:
    """Write the report of ``OUT``; returns {"html", "pdf", "figures", "seconds"}."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from ..report.data import load_report_data  # noqa: PLC0415
    from ..report.document import write_report  # noqa: PLC0415

    if not overwrite and not _ours(out):
        raise OutputExistsError(f"{out}: report.html, report.pdf or report/ exist and were not written by gpudiffuse; "
                                "pass --overwrite to replace them")
    data = load_report_data(out)
    written = write_report(data, out)
    logger.info("report written in %.2f s: %s, %s", written["seconds"], written["html"], written["pdf"])
    return written
