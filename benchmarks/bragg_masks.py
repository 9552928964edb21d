"""The two Bragg masks against the truth: the merged map of a simulated low-count dataset
processed with ``--bragg-mask peak-cloud`` and with ``--bragg-mask statistical``, each compared
with the voxel-averaged truth (CC overall and per shell), plus what the statistical filter moved.

    python benchmarks/bragg_masks.py --data /tmp/gd/far --preset 1m --distance 300 --scale 2e8 \
        --frames 120 --filter-max-count 300 --out benchmarks/results/bragg_masks_1m_300mm.json

The filter is made for photon-counting data of a few counts per pixel; the preset's geometry is
moved further out (``--distance``, mm) and its dose lowered (``--scale``, photons per unit
intensity per s per sr; presets use 8e8) to get there. Simulates into --data when it holds no
dataset (minutes for 120 frames of 1M pixels).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time

from _results import provenance, write_result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="1m")
    parser.add_argument("--distance", type=float, default=300.0)
    parser.add_argument("--scale", type=float, default=2e8)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--filter-max-count", default="300")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    import h5py
    import numpy as np

    from gpudiffuse.cli import main as gpudiffuse
    from gpudiffuse.grid import pack_voxels
    from gpudiffuse.simulate import PRESETS, compare_with_truth, load_model, simulate_dataset
    from gpudiffuse.steps.merge import read_merged

    params = dataclasses.replace(PRESETS[args.preset], distance=args.distance, scale=args.scale,
                                 n_frames=args.frames)
    simulated_s = None
    if not os.path.exists(os.path.join(args.data, "XDS.INP")):
        t0 = time.perf_counter()
        simulate_dataset(args.data, params, progress=False)
        simulated_s = round(time.perf_counter() - t0, 1)
    model = load_model(args.data)
    work = tempfile.mkdtemp(prefix="gd_masks_")
    runs, merged = {}, {}
    try:
        for method in ("peak-cloud", "statistical"):
            out = os.path.join(work, method)
            t0 = time.perf_counter()
            code = gpudiffuse(["-q", "--no-progress", "process", "--no-report", "--xds", args.data, "-o", out,
                               "--device", "cpu", "--scale", "none", "--bragg-mask", method,
                               "--filter-max-count", args.filter_max_count])
            seconds = time.perf_counter() - t0
            if code:
                raise SystemExit(f"process --bragg-mask {method} failed ({code})")
            merged[method] = read_merged(os.path.join(out, "merged.nxs")).merged
            accuracy = compare_with_truth(merged[method], model, (3, 3, 3))
            with h5py.File(os.path.join(out, "integrate.nxs")) as f:
                rows = f["entry/diffuse/counts"].shape[0]
                excluded = f["entry/excluded/counts"][()].sum()
                total = f["entry/diffuse/counts"][()].sum() + excluded
                moved = f["entry/statistical_filter/shells/fraction_moved"][()].round(4).tolist() \
                    if "statistical_filter" in f["entry"] else None
            runs[method] = {"process_s": round(seconds, 1), "diffuse_rows": int(rows),
                            "counts_excluded_fraction": round(float(excluded / total), 5),
                            "overall_cc": round(float(accuracy["overall_cc"]), 4),
                            "shell_cc": [round(float(s["cc"]), 4) for s in accuracy["shells"]],
                            "rows_moved_per_shell": moved}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    difference = np.subtract(runs["statistical"]["shell_cc"], runs["peak-cloud"]["shell_cc"]).round(4).tolist()
    # the statistical filter drops whole voxels (those of the reflections), the peak cloud only the
    # pixels near the peak: the CC of each on the voxels both kept separates accuracy from coverage
    voxels = {m: np.rint(np.column_stack([v["h"], v["k"], v["l"]]) * 3).astype(np.int64) for m, v in merged.items()}
    codes = {m: pack_voxels(v) for m, v in voxels.items()}
    common = np.intersect1d(codes["peak-cloud"], codes["statistical"])
    on_common = {}
    for method, values in merged.items():
        keep = np.isin(codes[method], common)
        subset = {k: v[keep] if isinstance(v, np.ndarray) and len(v) == len(keep) else v for k, v in values.items()}
        accuracy = compare_with_truth(subset, model, (3, 3, 3))
        on_common[method] = {"overall_cc": round(float(accuracy["overall_cc"]), 4),
                             "shell_cc": [round(float(s["cc"]), 4) for s in accuracy["shells"]]}
    lost = voxels["peak-cloud"][~np.isin(codes["peak-cloud"], common)]
    on_common["voxels"] = len(common)
    on_common["voxels_only_with_peak_cloud"] = int(len(lost))
    on_common["of_those_at_integer_hkl"] = round(float(np.mean(np.all(lost % 3 == 0, axis=1))), 4) if len(lost) else None
    on_common["statistical_minus_peak_cloud_shell_cc"] = np.subtract(
        on_common["statistical"]["shell_cc"], on_common["peak-cloud"]["shell_cc"]).round(4).tolist()
    write_result(args.out, {
        **provenance("bragg_masks", "cpu"), "preset": args.preset, "distance_mm": args.distance,
        "scale": args.scale, "frames": args.frames, "filter_max_count": int(args.filter_max_count),
        "simulation_s": simulated_s, "runs": runs, "statistical_minus_peak_cloud_shell_cc": difference,
        "on_the_voxels_both_kept": on_common,
    })


if __name__ == "__main__":
    main()
