"""The two Bragg masks against the truth: the merged map of a simulated low-count dataset
processed with ``--bragg-mask peak-cloud`` and with ``--bragg-mask statistical``, each compared
with the voxel-averaged truth (CC overall and per shell), plus what the statistical filter moved
against the truth (Bragg-peak counts, Bragg-free and absent-centred rows).

    python benchmarks/bragg_masks.py --data /tmp/gd/far --preset 1m --distance 300 --scale 8e8 \
        --frames 240 --filter-max-count 300 --scale-model model \
        --out benchmarks/results/bragg_masks_1m_300mm_240frames_scaled.json

The filter is made for photon-counting data of a few counts per pixel; the preset's geometry is
moved further out (``--distance``, mm) and its dose can be lowered (``--scale``, photons per unit
intensity per s per sr; presets use 8e8) to get there. Simulates into --data when it holds no
dataset (about 3 minutes for 240 frames of 1M pixels on 2 cores). ``--scale-model none`` (the
default) compares the masks alone, with the frames' decay left in the maps, which then limits
their CC; ``model`` scales as ``process`` does by default.
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
    parser.add_argument("--scale-model", default="none", choices=("model", "isotropic", "none"),
                        help="process --scale (default none: the masks alone, the frames' decay left in)")
    parser.add_argument("--min-pixels", default="1", help="process --min-pixels (default 1, the program's)")
    parser.add_argument("--bragg-frame-step", type=int, default=6,
                        help="every n-th frame for the share of Bragg-peak counts the filter excluded")
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
                               "--device", "cpu", "--scale", args.scale_model, "--bragg-mask", method,
                               "--filter-max-count", args.filter_max_count,
                               "--min-pixels", args.min_pixels])
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
            if method == "statistical":
                runs[method].update(_filter_against_truth(args.data, out, model, args.bragg_frame_step))
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
        "scale": args.scale, "frames": args.frames, "scale_model": args.scale_model,
        "min_pixels": int(args.min_pixels), "filter_max_count": int(args.filter_max_count),
        "simulation_s": simulated_s, "runs": runs, "statistical_minus_peak_cloud_shell_cc": difference,
        "on_the_voxels_both_kept": on_common,
    })


def _filter_against_truth(data, out, model, frame_step):
    """What the filter moved, against the truth: the share of the voxel-wedge rows moved among
    those centred on allowed reflections, on systematically absent ones and off integer hkl
    (Bragg-free), and the share of the Bragg-peak counts above 1, 5 and 20 σ of the scattering
    under them whose row was moved."""
    import numpy as np

    from gpudiffuse.simulate_truth import bragg_counts_excluded, moved_rows_by_class
    from gpudiffuse.steps.integrate import read_integration

    integration = read_integration(os.path.join(out, "integrate.nxs"))
    keys = integration.bragg_filter["moved_keys"]
    moved = np.column_stack([keys[k] for k in ("wedge", "H", "K", "L")])
    rows = moved_rows_by_class(integration, model.params.space_group)
    strengths = (1, 5, 20)
    shares = bragg_counts_excluded(data, moved, integration.ndiv, strengths=strengths, frame_step=frame_step)
    return {
        "rows_moved_fraction": {k: round(v, 5) for k, v in rows["moved_fraction"].items()},
        "rows": rows["rows"],
        "bragg_counts_excluded": {f"above_{k}_sigma": round(share, 5) for k, share in zip(strengths, shares)},
        "bragg_frame_step": frame_step,
    }


if __name__ == "__main__":
    main()
