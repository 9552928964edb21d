"""CPU (NumPy engine) throughput of the streaming integration pass on Pilatus-6M frames.

    python benchmarks/integrate_cpu.py --data /tmp/p6m --frames 50 --ndiv 3 3 3 \
        --out benchmarks/results/integrate_cpu.json

Simulates the ``p6m`` preset into --data if it holds no dataset, then times the peak search
(pass 1) and the integration pass (pass 2) separately. Reports frames/s, pixels/s and peak RSS.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time

from _results import provenance, write_result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder (simulated here if empty)")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--ndiv", type=int, nargs=3, default=[3, 3, 3])
    parser.add_argument("--out", required=True, help="JSON result file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

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
        **provenance("integrate_cpu", "cpu (NumPy engine)"),
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
    write_result(args.out, result)


if __name__ == "__main__":
    main()
