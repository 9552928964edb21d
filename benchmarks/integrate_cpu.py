"""CPU (NumPy engine) throughput of the streaming integration pass on Pilatus-6M frames.

    python benchmarks/integrate_cpu.py --data /tmp/p6m --frames 50 --ndiv 3 3 3 \
        --out benchmarks/results/integrate_cpu.json

Simulates the ``p6m`` preset into --data if it holds no dataset, then times the peak search
(pass 1) and the integration pass (pass 2) separately. Reports frames/s, pixels/s and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder (simulated here if empty)")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--ndiv", type=int, nargs=3, default=[3, 3, 3])
    parser.add_argument("--out", required=True, help="JSON result file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import numpy as np

    import gpudiffuse
    from gpudiffuse.backend import resolve_device
    from gpudiffuse.experiment import ImportParameters, import_experiment
    from gpudiffuse.integrate import IntegrationParameters
    from gpudiffuse.masking.peaks import PeakParameters, find_peaks
    from gpudiffuse.pipeline import ProcessParameters, _integrate, resolve_dmin
    from gpudiffuse.simulate import PRESETS, simulate_dataset

    if not os.path.exists(os.path.join(args.data, "XDS.INP")):
        t0 = time.perf_counter()
        simulate_dataset(args.data, PRESETS["p6m"], n_frames=args.frames)
        print(f"simulated {args.frames} frames in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    params = ProcessParameters(ImportParameters(xds=args.data), IntegrationParameters(ndiv=tuple(args.ndiv)),
                               device="cpu")
    experiment = import_experiment(params.geometry)
    dmin = resolve_dmin(experiment, None)
    n_frames = sum(s.scan.num_frames for s in experiment.sweeps)
    n_pixels = int(sum(m.sum() for m in experiment.masks))
    t0 = time.perf_counter()
    search = find_peaks(experiment, PeakParameters(), dmin, progress=False)
    t_peaks = time.perf_counter() - t0
    t0 = time.perf_counter()
    tables = _integrate(experiment, search, dmin, params, resolve_device("cpu"), progress=False)
    t_integrate = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "benchmark": "integrate_cpu",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "device": "cpu (NumPy engine)",
        "gpudiffuse": gpudiffuse.__version__,
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "image_size": list(experiment.sweeps[0].panel.image_size),
        "frames": n_frames,
        "unmasked_pixels_per_frame": n_pixels,
        "ndiv": args.ndiv,
        "dmin": dmin,
        "observations": int(len(tables["observations"]["rate"])),
        "peak_search_s": round(t_peaks, 2),
        "integration_s": round(t_integrate, 2),
        "integration_frames_per_s": round(n_frames / t_integrate, 3),
        "integration_pixels_per_s": round(n_frames * n_pixels / t_integrate, 0),
        "peak_rss_mb": round(rss_mb, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
