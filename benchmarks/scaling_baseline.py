"""Joint fit against the alternating baseline on the two-sweep image simulation: loss, time,
CC½ and CC with the known truth per shell, with the baseline stopped after several iteration counts.

    python benchmarks/scaling_baseline.py --work /tmp/scaling_baseline --out benchmarks/results/scaling_baseline_cpu.json

Simulates ``simulate --preset scaling`` and processes it without scaling (dmin 2.0 Å, ndiv 3,
wedges of 4 frames) into ``--work`` unless already there, then fits both methods to the same
observation table without outlier rounds (so both see the same observations) and merges each
scaled table with the default merge parameters.
"""

from __future__ import annotations

import argparse
import os
import time

from _results import provenance, write_result

NDIV = (3, 3, 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="folder for the simulated images and the processed table")
    parser.add_argument("--baseline-iterations", type=int, nargs="+", default=[10, 20, 50, 100, 300, 500])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import jax

    from gpudiffuse.experiment import ImportParameters, read_experiment
    from gpudiffuse.integration import IntegrationParameters
    from gpudiffuse.merge import merge
    from gpudiffuse.pipeline import ProcessParameters, process
    from gpudiffuse.steps.integrate import load_observations
    from gpudiffuse.steps.scale import fit_observations
    from gpudiffuse.scaling import ScaleOptions, apply_scales
    from gpudiffuse.simulate import compare_with_truth, load_model, simulate_dataset

    data, processed = os.path.join(args.work, "data"), os.path.join(args.work, "processed")
    if not os.path.exists(os.path.join(data, "truth.h5")):
        simulate_dataset(data, "scaling", progress=False)
    if not os.path.exists(os.path.join(processed, "integrate.nxs")):
        process(ProcessParameters(ImportParameters(expt=(os.path.join(data, "experiments.expt"),)),
                                  IntegrationParameters(ndiv=NDIV, dmin=2.0, wedge_frames=4), device="cpu",
                                  scale="none"), processed, progress=False)
    experiment = read_experiment(os.path.join(processed, "experiment.nxs"))
    table = load_observations(processed)
    crystal = experiment.sweeps[0].crystal
    truth = load_model(data)

    def evaluate(label, options):
        t0 = time.perf_counter()
        fit = fit_observations(experiment, table, NDIV, options, progress=False)
        seconds = time.perf_counter() - t0
        merged, stats, _ = merge(apply_scales(table, fit), crystal.space_group, NDIV, crystal.A.T @ crystal.A)
        accuracy = compare_with_truth(merged, truth, NDIV)
        row = {"fit": label, "iterations": fit.iterations, "converged": fit.converged, "fit_s": round(seconds, 1),
               "chi2": round(fit.chi2_after, 2), "total_loss": round(fit.chi2_after + fit.penalty_after, 2),
               "cc_half": [round(float(x), 5) for x in stats["cc_half"]],
               "cc_truth": [round(s["cc"], 5) for s in accuracy["shells"]],
               "cc_truth_overall": round(accuracy["overall_cc"], 5)}
        print(row, flush=True)
        return row

    rows = [evaluate("joint", ScaleOptions(outlier_rounds=()))]
    for n in args.baseline_iterations:
        rows.append(evaluate(f"alternating {n}", ScaleOptions(method="alternating", outlier_rounds=(), max_iterations=n)))
    unscaled = merge(table, crystal.space_group, NDIV, crystal.A.T @ crystal.A)
    result = {**provenance("scaling_baseline", f"{jax.default_backend()} (JAX {jax.__version__})"),
              "observations": len(table["rate"]), "d_min_per_shell": [round(float(x), 3) for x in unscaled[1]["d_min"]],
              "unscaled_cc_half": [round(float(x), 5) for x in unscaled[1]["cc_half"]], "fits": rows}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
