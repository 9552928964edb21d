"""``gpudiffuse report`` on a processed folder: wall time (import of matplotlib and the
package apart), time per figure, and peak RSS, in a child process.

    python benchmarks/report.py --processed /tmp/gd/p1m --out benchmarks/results/report_1m_cpu.json

The folder is copied first (the report writes into it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile

from _results import provenance, write_result

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
import matplotlib
matplotlib.use("Agg")
from gpudiffuse.report.data import load_report_data
from gpudiffuse.report import document
from gpudiffuse.steps.report import run_report
t1 = time.perf_counter()
data = load_report_data(sys.argv[1])
t2 = time.perf_counter()
per_figure = {}
for stem, _, _, draw in document.FIGURES:
    start = time.perf_counter()
    figure = draw(data)
    if figure is None:  # a figure the folder has no data for (absolute_scale without absolute.nxs)
        continue
    document._render(figure)
    per_figure[stem] = round(time.perf_counter() - start, 3)
t3 = time.perf_counter()
written = run_report(sys.argv[1])
t4 = time.perf_counter()
print(json.dumps({"import_s": round(t1 - t0, 2), "load_s": round(t2 - t1, 2), "figures_drawn_s": per_figure,
                  "run_report_s": round(t4 - t3, 2), "peak_rss_mb":
                  round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processed", required=True, help="a folder processed by gpudiffuse process")
    parser.add_argument("--out", help="result JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = shutil.copytree(args.processed, f"{scratch}/out")
        child = subprocess.run([sys.executable, "-c", CHILD, folder], capture_output=True, text=True, check=True)
    result = provenance("report", "cpu")
    result.update({"processed": args.processed, **json.loads(child.stdout.strip().splitlines()[-1])})
    write_result(args.out, result)


if __name__ == "__main__":
    main()
