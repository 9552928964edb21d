"""``gpudiffuse process`` end to end on a simulated preset: wall time per step and peak RSS.

    python benchmarks/end_to_end.py --data /tmp/gd/1m --preset 1m --repeats 5 \
        --out benchmarks/results/end_to_end_1m_cpu.json [-- extra process options]

Simulates the preset into --data if it holds no dataset. ``process`` runs in a child process
(a fresh output folder each time, so nothing is reused), whose peak RSS is reported; the scaling
step's time includes loading (or, on a first run, building) JAX's persistent compilation cache and
numba's kernel cache as found on the machine. With ``--repeats N`` the child runs N times: the
headline figures are the medians (total, and each step), the peak RSS the largest, every run listed
(this VM's timings vary by ±20 % from minute to minute).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from _results import provenance, write_result

CHILD = """
import json, logging, resource, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # as the CLI: no "Unable to initialize backend 'tpu'"
from gpudiffuse.cli import build_parser
from gpudiffuse.cli_options import process_parameters
from gpudiffuse.pipeline import process
args = build_parser().parse_args(sys.argv[1:])
t0 = time.perf_counter()
result = process(process_parameters(args), args.out, progress=False)
total = time.perf_counter() - t0
print(json.dumps({"total_s": round(total, 2), "steps_s": result["timings"],
                  "merged_voxels": int(len(result["merged"]["intensity"])),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="1m")
    parser.add_argument("--out", help="JSON result file")
    parser.add_argument("--repeats", type=int, default=1, help="runs of process (default 1)")
    parser.add_argument("extra", nargs="*", help="extra options for gpudiffuse process (after --)")
    args = parser.parse_args(argv)
    from gpudiffuse.simulate import PRESETS, compare_with_truth, load_model, simulate_dataset

    if not os.path.exists(os.path.join(args.data, "XDS.INP")):
        simulate_dataset(args.data, PRESETS[args.preset])
    runs = []
    for _ in range(max(1, args.repeats)):
        out = tempfile.mkdtemp(prefix="gd_e2e_")
        shutil.rmtree(out)
        command = ["process", "--xds", args.data, "-o", out, "--device", "cpu", *args.extra]
        t0 = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", CHILD, *command], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if child.returncode != 0:
            raise SystemExit(child.stderr)
        runs.append({**json.loads(child.stdout.strip().splitlines()[-1]), "wall_s_including_python_start": round(wall, 2)})
        if len(runs) < args.repeats:
            shutil.rmtree(out)
    figures = {"merged_voxels": runs[-1]["merged_voxels"]}
    figures["total_s"] = round(float(np.median([r["total_s"] for r in runs])), 2)
    figures["steps_s"] = {step: round(float(np.median([r["steps_s"][step] for r in runs])), 3)
                          for step in runs[0]["steps_s"]}
    figures["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    wall = float(np.median([r["wall_s_including_python_start"] for r in runs]))
    import h5py

    with h5py.File(os.path.join(out, "merged.nxs")) as f:
        merged = {k: f["entry/merged"][k][()] for k in ("h", "k", "l", "intensity", "sigma", "n", "s")}
    with h5py.File(os.path.join(out, "integrate.nxs")) as f:  # the raw accumulator rows of the diffuse pixels
        rows = int(f["entry/diffuse/H"].size)
        table_mb = sum(d.size * d.dtype.itemsize for d in f["entry/diffuse"].values()) / 2**20
    accuracy = compare_with_truth(merged, load_model(args.data), (3, 3, 3))
    shutil.rmtree(out)
    result = {**provenance("end_to_end", "cpu"), "preset": args.preset, "process_command": "gpudiffuse " + " ".join(command),
              "wall_s_including_python_start": round(wall, 2), **figures, "runs": runs,
              "diffuse_rows": rows, "diffuse_rows_mb": round(table_mb, 1),
              "cc_with_truth_overall": round(float(accuracy["overall_cc"]), 5),
              "log_tail": child.stderr.strip().splitlines()[-12:]}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
