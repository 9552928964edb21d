"""Scaling-fit time and peak memory on synthetic observation tables (no images).

    python benchmarks/scaling.py --rows 1000000 --iterations 500 --out benchmarks/results/scaling_1e6_cpu.json
    python benchmarks/scaling.py --rows 10000000 --iterations 30 --out benchmarks/results/scaling_1e7_cpu.json

The table comes from ``gpudiffuse.simulate.simulate_observation_table`` (two batches, known
a, b, c, d). One outlier-free fit round; reports the first L-BFGS step (JIT compilation
included) separately from the steady-state time per iteration. JAX runs on its default
device (the CPU here).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time

from _results import provenance, write_result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--method", default="joint", choices=["joint", "alternating"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    from gpudiffuse.scaling import ScaleOptions, build_design, component_values, fit_scales
    from gpudiffuse.simulate import simulate_observation_table

    t0 = time.perf_counter()
    table, truth = simulate_observation_table(args.rows, n_batches=2, n_frames=200, seed=0)
    options = ScaleOptions(max_iterations=args.iterations, outlier_rounds=(), method=args.method,
                           frames_per_b_node=10)
    design = build_design(table, [0, 1], {0: 200, 1: 200}, options, (487, 619), truth["regions_map"])
    t_setup = time.perf_counter() - t0
    # warm-up: one iteration compiles the jitted step for these shapes
    t0 = time.perf_counter()
    fit_scales(table, table["H"], design, dataclasses.replace(options, max_iterations=1))
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = fit_scales(table, table["H"], design, options)
    t_fit = time.perf_counter() - t0
    a, b, c, d = component_values(fit.params, design)
    k = np.exp(np.mean(np.log(b / truth["b"])))
    result = {
        **provenance("scaling", f"{jax.default_backend()} (JAX {jax.__version__})"),
        "rows": args.rows, "method": args.method, "parameters": int(design.n_a + design.n_b + design.n_c
                                                                    + design.n_regions),
        "setup_s": round(t_setup, 2), "first_iteration_with_compile_s": round(t_first, 2),
        "fit_s": round(t_fit, 2), "iterations": fit.iterations, "converged": fit.converged,
        "s_per_iteration": round(t_fit / max(fit.iterations, 1), 4),
        "chi2_per_dof": round(fit.chi2_after / (args.rows - len(truth["intensity"])), 4),
        "max_b_error": round(float(np.max(np.abs(b / (k * truth["b"]) - 1))), 5),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
