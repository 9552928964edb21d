"""Gauss–Newton against the alternating baseline on the real SNase stills (one frame per batch).

    python benchmarks/scaling_snase.py --work /tmp/scaling_snase --out benchmarks/results/scaling_snase_cpu.json

Processes ``../shared/data/snase-lunus`` (10 DIALS stills, ndiv 3, 1.6 Å, no scaling) into
``--work`` unless already there, then fits each method to the same observation table without
outlier rounds (both see the same observations), the baseline with a high iteration limit so
that it runs to its own convergence test, and reports iterations, seconds, the loss and CC½ per
shell of the scaled, merged map.
"""

from __future__ import annotations

import argparse
import glob
import os
import time

from _results import provenance, write_result

NDIV = (3, 3, 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                       "snase-lunus"))
    parser.add_argument("--baseline-iterations", type=int, default=3000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from gpudiffuse.cli import main as cli
    from gpudiffuse.experiment import read_experiment
    from gpudiffuse.merge import merge
    from gpudiffuse.steps.integrate import load_observations
    from gpudiffuse.steps.scale import fit_observations
    from gpudiffuse.scaling import ScaleOptions, apply_scales
    from gpudiffuse.scaling.joint import jax_device

    processed = os.path.join(args.work, "processed")
    if not os.path.exists(os.path.join(processed, "integrate.nxs")):
        files = sorted(glob.glob(os.path.join(args.data, "experiments", "experiments_for_lunus_*.json")))
        assert cli(["process", "--expt", *files, "-o", processed, "--ndiv", "3", "3", "3", "--dmin", "1.6",
                    "--device", "cpu", "--scale", "none"]) == 0
    experiment = read_experiment(os.path.join(processed, "experiment.nxs"))
    table = load_observations(processed)
    crystal = experiment.sweeps[0].crystal
    rows = []
    for method, limit in (("joint", 100), ("alternating", args.baseline_iterations)):
        options = ScaleOptions(method=method, outlier_rounds=(), max_iterations=limit)
        t0 = time.perf_counter()
        fit = fit_observations(experiment, table, NDIV, options, progress=False)
        seconds = time.perf_counter() - t0
        _, stats, _ = merge(apply_scales(table, fit), crystal.space_group, NDIV, crystal.A.T @ crystal.A)
        rows.append({"method": method, "iteration_limit": limit, "iterations": fit.iterations,
                     "converged": fit.converged, "fit_s": round(seconds, 1), "chi2": round(fit.chi2_after, 3),
                     "total_loss": round(fit.chi2_after + fit.penalty_after, 3),
                     "cc_half": [round(float(x), 5) for x in stats["cc_half"]],
                     "d_min": [round(float(x), 3) for x in stats["d_min"]]})
        print(rows[-1], flush=True)
    joint, baseline = rows
    result = {**provenance("scaling_snase", f"numba + JAX on {jax_device()}"), "observations": len(table["rate"]),
              "fits": rows,
              "max_cc_half_difference": round(max(abs(a - b) for a, b in zip(joint["cc_half"], baseline["cc_half"])), 5),
              "joint_loss_minus_baseline": round(joint["total_loss"] - baseline["total_loss"], 3)}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
