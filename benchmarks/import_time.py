"""Import time of the heavy modules a `gpudiffuse process` run loads, each in a fresh interpreter.

    python benchmarks/import_time.py --repeats 5 --out benchmarks/results/import_time_cpu.json

Every figure is the wall time of ``import <module>`` after NumPy is already imported (NumPy's own
import is reported apart), the median of ``--repeats`` fresh processes, all runs listed. The run
that matters most is ``ml_dtypes``: JAX imports it, and its version decides whether it costs
milliseconds or a second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from _results import provenance, write_result

MODULES = ("numpy", "ml_dtypes", "jax", "numba", "fabio", "h5py", "gemmi", "matplotlib.pyplot", "gpudiffuse.cli")

_PROBE = """
import json, sys, time
if sys.argv[1] != "numpy":
    import numpy
t = time.perf_counter()
__import__(sys.argv[1])
print(json.dumps(time.perf_counter() - t))
"""


def _once(module: str) -> float:
    out = subprocess.run([sys.executable, "-c", _PROBE, module], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(module.split(".")[0])
    except PackageNotFoundError:
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modules", nargs="+", default=list(MODULES))
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    rows = {}
    for module in args.modules:
        runs = [_once(module) for _ in range(args.repeats)]
        rows[module] = {"version": _version(module), "median_s": round(statistics.median(runs), 3),
                        "runs_s": [round(r, 3) for r in runs]}
    write_result(args.out, {**provenance("import_time", "cpu"), "repeats": args.repeats, "modules": rows})


if __name__ == "__main__":
    main()
