"""Wedge width study: accuracy against the truth and observation-table size versus wedge width.

    python benchmarks/wedge_study.py --root /tmp/gd/wedges --widths 0.5 1 2 4 8 \
        --out benchmarks/results/wedge_study.json

Two simulated sets with known truth: ``small`` (one sweep, 60 frames of 0.5°, decay) and
``scaling`` (two 40-frame sweeps of 0.5° with absorption a, module factors d and an additive
offset c). Each is integrated once per wedge width (--engine cpu), scaled with the default
model and merged; reported per width: observation rows and MB, scaling time, merged CC with the
truth overall and in the outer shell, and CC½ in the outer shell.
"""

from __future__ import annotations

import argparse
import os
import time

from _results import provenance, write_result


def run(data, expt, width, out):
    from gpudiffuse.experiment import ImportParameters
    from gpudiffuse.integration import IntegrationParameters
    from gpudiffuse.pipeline import ProcessParameters, process
    from gpudiffuse.simulate import compare_with_truth, load_model

    geometry = ImportParameters(expt=(os.path.join(data, "experiments.expt"),)) if expt else ImportParameters(xds=data)
    t0 = time.perf_counter()
    result = process(ProcessParameters(geometry, IntegrationParameters(ndiv=(3, 3, 3), dmin=2.0, wedge_degrees=width),
                                       device="cpu"), out, overwrite=True, progress=False)
    total = time.perf_counter() - t0
    import h5py

    with h5py.File(os.path.join(out, "integrate.nxs")) as f:
        group = f["entry/observations"]
        rows = int(group["rate"].size)
        mb = sum(d.size * d.dtype.itemsize for d in group.values()) / 2**20
    accuracy = compare_with_truth(result["merged"], load_model(data), (3, 3, 3))
    fit = result["scale_fit"]
    return {"wedge_degrees": width, "observation_rows": rows, "observation_mb": round(mb, 2),
            "process_s": round(total, 1), "scale_s": result["timings"].get("scale"),
            "scale_iterations": int(fit.iterations), "scale_converged": bool(fit.converged),
            "cc_truth_overall": round(accuracy["overall_cc"], 5),
            "cc_truth_outer_shell": round(accuracy["shells"][-1]["cc"], 5),
            "cc_truth_per_shell": [round(r["cc"], 5) for r in accuracy["shells"]],
            "cc_half_outer_shell": round(float(result["statistics"]["cc_half"][-1]), 5)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder for the simulated sets and outputs")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--sets", nargs="+", default=["small", "scaling"])
    parser.add_argument("--out", help="JSON result file")
    args = parser.parse_args(argv)
    from gpudiffuse.simulate import simulate_dataset

    rows = {}
    for name in args.sets:
        data = os.path.join(args.root, name)
        if not os.path.exists(os.path.join(data, "truth.h5")):
            simulate_dataset(data, name, progress=False)
        rows[name] = []
        for width in args.widths:
            rows[name].append(run(data, name == "scaling", width, os.path.join(args.root, f"out_{name}_{width:g}")))
            print(name, rows[name][-1], flush=True)
    result = {**provenance("wedge_study", "cpu"), "sets": rows}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
