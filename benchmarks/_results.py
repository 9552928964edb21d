"""Shared helper of the benchmark scripts: provenance fields and writing one JSON result."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone


def provenance(name: str, device: str) -> dict:
    """Command, date, machine, device and code version of a benchmark run."""
    import numpy as np

    import gpudiffuse

    return {
        "benchmark": name,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "device": device,
        "gpudiffuse": gpudiffuse.__version__,
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    }


def write_result(path: str | None, result: dict):
    """Write the result as JSON to ``path`` (if given) and print it."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
