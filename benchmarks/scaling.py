"""Scaling-fit time and peak memory: compilation apart from the steady state.

    python benchmarks/scaling.py --rows 1000000 --out benchmarks/results/scaling_1e6_cpu.json
    python benchmarks/scaling.py --rows 10000000 --out benchmarks/results/scaling_1e7_cpu.json
    python benchmarks/scaling.py --processed /tmp/gd/1m_out --out benchmarks/results/scaling_1m_preset_cpu.json

``--rows``: a synthetic table from ``gpudiffuse.simulate.simulate_observation_table`` (two
batches of 200 frames, known a, b, c, d), one outlier-free round, b nodes every 10 frames (the
settings of the earlier L-BFGS figures). ``--processed``: the observation table of a folder that
``gpudiffuse process --scale none`` wrote (e.g. the ``1m`` simulation preset), with the default
scaling options and outlier rounds, as ``process`` fits it.

The same fit runs 1 + ``--repeats`` times in one process: the first includes compilation (JAX
tracing and XLA, or loading them from the persistent cache; numba's kernels, or loading them from
its cache), the others are the steady state (``second_fit_s``: their median, all listed, since
this machine's timings swing by ±20–30 % from minute to minute). ``--cold`` points JAX's
persistent cache at an empty folder first.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from _results import provenance, write_result


def _synthetic(rows):
    import numpy as np

    from gpudiffuse.scaling import ScaleOptions, build_design
    from gpudiffuse.simulate import simulate_observation_table

    table, truth = simulate_observation_table(rows, n_batches=2, n_frames=200, seed=0)
    options = ScaleOptions(outlier_rounds=(), frames_per_b_node=10)
    design = build_design(table, [0, 1], {0: 200, 1: 200}, options, (487, 619), truth["regions_map"])

    def fit(method):
        import dataclasses

        from gpudiffuse.scaling import fit_scales
        from gpudiffuse.scaling.model import effective

        result = fit_scales(table, table["H"], design, dataclasses.replace(options, method=method), progress=False)
        # b per observation from its two nodes only (all four components would add 1.3 GB at 10⁷ rows)
        b = (effective(result.params, design)[0][design.ib] * design.wb).sum(axis=1)
        k = np.exp(np.mean(np.log(b / truth["b"])))
        return result, {"max_b_error": round(float(np.max(np.abs(b / (k * truth["b"]) - 1))), 5)}

    return fit, {"rows": rows, "parameters": int(design.n_a + design.n_b + design.n_c + design.n_regions)}


def _processed(folder):
    from gpudiffuse.scaling import ScaleOptions
    from gpudiffuse.steps.importing import load_experiment
    from gpudiffuse.steps.integrate import load_integration, observation_tables
    from gpudiffuse.steps.scale import fit_observations

    experiment, integration = load_experiment(folder), load_integration(folder)
    ndiv = integration.ndiv
    table = observation_tables(experiment, integration)["observations"]

    def fit(method):
        result = fit_observations(experiment, table, ndiv, ScaleOptions(method=method), progress=False)
        return result, {}

    return fit, {"rows": len(table["rate"]), "folder": folder}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--rows", type=int)
    source.add_argument("--processed", help="a folder with experiment.nxs and integrate.nxs")
    parser.add_argument("--method", default="joint", choices=["joint", "lbfgs", "alternating"])
    parser.add_argument("--cold", action="store_true", help="start with an empty JAX compilation cache")
    parser.add_argument("--repeats", type=int, default=1, help="steady-state fits after the first (median reported)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.cold:
        os.environ["GPUDIFFUSE_JAX_CACHE"] = tempfile.mkdtemp(prefix="jax-cache-")

    import numpy as np

    t0 = time.perf_counter()
    fit, info = _synthetic(args.rows) if args.rows else _processed(args.processed)
    setup = time.perf_counter() - t0
    from gpudiffuse.scaling.joint import jax_device

    times, result = [], None
    for _ in range(1 + max(args.repeats, 1)):
        t0 = time.perf_counter()
        result = None  # the last fit's arrays are released before the next one (peak RSS of one fit)
        result, extra = fit(args.method)
        times.append(time.perf_counter() - t0)
    write_result(args.out, {
        **provenance("scaling", f"numba + JAX on {jax_device()}"), **info, "method": args.method,
        "jax_cache": "cold" if args.cold else "persistent cache as found", "setup_s": round(setup, 2),
        "first_fit_s": round(times[0], 2), "second_fit_s": round(float(np.median(times[1:])), 2),
        "second_fit_s_all": [round(t, 2) for t in times[1:]],
        "compilation_s": round(times[0] - float(np.median(times[1:])), 2),
        "iterations": result.iterations, "converged": result.converged,
        "rounds": [{"k": r.k, "rejected": r.rejected, "iterations": r.iterations, "skipped": r.skipped}
                   for r in result.rounds],
        "chi2": round(result.chi2_after, 3), "total_loss": round(result.chi2_after + result.penalty_after, 3),
        **extra, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    })


if __name__ == "__main__":
    main()
