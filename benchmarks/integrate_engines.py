"""Throughput of the streaming integration pass, per engine, on a simulated preset.

    python benchmarks/integrate_engines.py --data /tmp/gd/1m --preset 1m \
        --out benchmarks/results/integrate_engines_1m.json

Simulates the preset into --data if it holds no dataset. Each engine runs in its own process
(so that peak RSS is its own):
- ``compile_s``: the first chunk (numba: compilation or loading its on-disk cache; NVRTC on a GPU),
- ``engine``: the engine alone on frames already in memory (no I/O): frames/s and M pixel-frames/s,
  pixel-frames = used pixels × frames; the median of ``--repeats`` runs (all listed),
- ``driver``: ``integrate_sweep`` reading the CBF files (decoding on the prefetch threads),
- ``peak_rss_mb`` of that process (frames held in memory for the engine-only figure included).
The peak search (pass 1) is timed once, in the parent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time

from _results import provenance, write_result


def _setup(data, ndiv):
    from gpudiffuse.experiment import ImportParameters, import_experiment
    from gpudiffuse.grid import VoxelGrid
    from gpudiffuse.integration import prepare_pixels
    from gpudiffuse.masking.peaks import PeakParameters, absent_table, find_peaks
    from gpudiffuse.steps.limits import resolve_dmin

    experiment = import_experiment(ImportParameters(xds=data))
    dmin = resolve_dmin(experiment, None)
    t0 = time.perf_counter()
    search = find_peaks(experiment, PeakParameters(), dmin, progress=False)
    t_peaks = time.perf_counter() - t0
    sweep = experiment.sweeps[0]
    grid = VoxelGrid.for_crystal(sweep.crystal.real_space_axes, dmin * 0.98, ndiv)
    absent = absent_table(sweep.crystal.space_group, grid.hmax)
    pixels = prepare_pixels(sweep, experiment.masks[0] & ~search.hot_pixels[0], dmin, search.thresholds[0])
    return experiment, sweep, pixels, grid, search, absent, dmin, t_peaks


def one_engine(args):
    """Child process: measure one engine; print one JSON line."""
    import numpy as np

    from gpudiffuse.integration import IntegrationParameters, integrate_sweep
    from gpudiffuse.integration.driver import sweep_context
    from gpudiffuse.integration.engines import engine_class
    from gpudiffuse.io.frames import FrameSource

    experiment, sweep, pixels, grid, search, absent, dmin, _ = _setup(args.data, tuple(args.ndiv))
    params = IntegrationParameters(ndiv=tuple(args.ndiv), chunk_size=args.chunk, histogram_max=args.histogram)
    n = sweep.scan.num_frames
    frames = np.concatenate([c.data for c in FrameSource(sweep, chunk_size=16)]).reshape(n, -1)
    inverse = np.stack([np.linalg.inv(sweep.setting_matrix(z)) for z in range(n)])
    exposure = sweep.scan.exposure_times
    context = sweep_context(sweep, pixels, grid, search.model, absent)
    cls = engine_class(args.one)
    engine = cls(context)
    t0 = time.perf_counter()
    engine.add(frames[:1], np.arange(1), inverse[:1], exposure[:1])
    engine.flush()
    compile_s = time.perf_counter() - t0
    from gpudiffuse.integration.driver import chunk_plan
    from gpudiffuse.integration.pixels import wedge_numbers

    plan = chunk_plan(wedge_numbers(sweep.scan, np.arange(n), params), np.arange(n), args.chunk)
    times = []
    for _ in range(args.repeats):  # this VM's timings vary by ±20 %: report the median and range
        engine = cls(context)
        t0 = time.perf_counter()
        rows = 0
        current = None
        for wedge, block in plan:
            if current is not None and wedge != current:
                rows += sum(len(s["pixels"]) for s in engine.flush().sets)
            current = wedge
            engine.add(frames[block], block, inverse[block], exposure[block])
        rows += sum(len(s["pixels"]) for s in engine.flush().sets)
        times.append(time.perf_counter() - t0)
    engine_s = float(np.median(times))
    del frames
    t0 = time.perf_counter()
    result = integrate_sweep(sweep, pixels, grid, search.model, absent, params, args.one)
    driver_s = time.perf_counter() - t0
    pixel_frames = len(pixels) * n
    print(json.dumps({
        "engine": args.one, "histogram_max": args.histogram, "threads": _threads(args.one),
        "compile_s": round(compile_s, 2),
        "engine_s": round(engine_s, 3), "engine_s_all": [round(t, 3) for t in times],
        "engine_frames_per_s": round(n / engine_s, 2),
        "engine_M_pixel_frames_per_s": round(pixel_frames / engine_s / 1e6, 2),
        "driver_s": round(driver_s, 3), "driver_frames_per_s": round(n / driver_s, 2),
        "driver_M_pixel_frames_per_s": round(pixel_frames / driver_s / 1e6, 2),
        "voxel_rows": int(rows), "diffuse_rows": len(result.diffuse), "excluded_rows": len(result.excluded),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def _threads(engine):
    if engine != "cpu":
        return 1
    import numba

    return numba.get_num_threads()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder (simulated here if empty)")
    parser.add_argument("--preset", default="1m", help="simulate preset when --data is empty (1m, p6m, ...)")
    parser.add_argument("--frames", type=int, help="frames to simulate (default: the preset's)")
    parser.add_argument("--ndiv", type=int, nargs=3, default=[3, 3, 3])
    parser.add_argument("--chunk", type=int, default=8, help="frames per chunk")
    parser.add_argument("--repeats", type=int, default=3, help="engine-only runs (median reported)")
    parser.add_argument("--engines", nargs="+", default=None, help="default: every engine available here")
    parser.add_argument("--out", help="JSON result file")
    parser.add_argument("--histogram", type=int, metavar="C",
                        help="also collect count histograms 0…C per voxel (the statistical filter's input)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.one:
        return one_engine(args)

    from gpudiffuse.integration import available_engines
    from gpudiffuse.simulate import PRESETS, simulate_dataset

    if not os.path.exists(os.path.join(args.data, "XDS.INP")):
        overrides = {"n_frames": args.frames} if args.frames else {}
        simulate_dataset(args.data, PRESETS[args.preset], **overrides)
    experiment, sweep, pixels, grid, search, absent, dmin, t_peaks = _setup(args.data, tuple(args.ndiv))
    engines = args.engines or available_engines()
    rows = []
    for engine in engines:
        histogram = ["--histogram", str(args.histogram)] if args.histogram is not None else []
        child = subprocess.run([sys.executable, __file__, "--data", args.data, "--ndiv", *map(str, args.ndiv),
                                "--chunk", str(args.chunk), "--repeats", str(args.repeats), "--one", engine, *histogram],
                               capture_output=True, text=True)
        if child.returncode != 0:
            raise SystemExit(f"engine {engine} failed:\n{child.stderr}")
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    result = {
        **provenance("integrate_engines", ", ".join(engines)),
        "preset": args.preset,
        "image_size": list(sweep.panel.image_size),
        "frames": sweep.scan.num_frames,
        "used_pixels_per_frame": len(pixels),
        "ndiv": args.ndiv, "dmin": dmin, "chunk": args.chunk,
        "peak_search_s": round(t_peaks, 2),
        "engines": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
