"""The statistical Bragg filter (DESIGN §7) on N occupied voxels with Poisson histograms (c_max 20)
and 1 % planted bright voxels: compile time (numba, first call on a small set) apart from the
steady-state time and peak RSS.

    python benchmarks/statistical_filter.py --voxels 1000000 --out benchmarks/results/statistical_filter_1e6_cpu.json
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from _results import provenance, write_result


def _data(n, rng):
    side = int(round(n ** (1 / 3)))
    voxels = np.stack(np.meshgrid(*(np.arange(side),) * 3, indexing="ij"), -1).reshape(-1, 3)
    pixels = 200
    rates = 2.0 * (1 + 0.2 * np.sin(voxels[:, 0] / 7.0))
    histogram = np.stack([np.bincount(np.minimum(rng.poisson(r, pixels), 21), minlength=22)[:21] for r in rates[:1]])
    # every voxel's histogram drawn from its Poisson pmf (multinomial), vectorised
    from scipy.stats import poisson
    c = np.arange(21)
    pmf = poisson.pmf(c[None, :], rates[:, None])
    pmf[:, -1] += 1 - pmf.sum(axis=1)
    histogram = rng.multinomial(pixels, pmf)
    planted = rng.choice(len(voxels), len(voxels) // 100, replace=False)
    histogram[planted, 10:15] += 8
    return voxels, histogram.astype(np.int64)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxels", type=int, default=1_000_000)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    from gpudiffuse.masking.statistical import statistical_filter

    rng = np.random.default_rng(0)
    small = _data(1000, rng)
    start = time.perf_counter()
    statistical_filter(*small)
    compile_s = time.perf_counter() - start
    voxels, histogram = _data(args.voxels, rng)
    start = time.perf_counter()
    result = statistical_filter(voxels, histogram)
    steady_s = time.perf_counter() - start
    out = provenance("statistical_filter", "cpu")
    out.update({"voxels": len(voxels), "c_max": 20, "first_call_incl_compile_s": round(compile_s, 2),
                "steady_s": round(steady_s, 2), "excluded": int(result.excluded.sum()),
                "planted": len(voxels) // 100, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    write_result(args.out, out)


if __name__ == "__main__":
    main()
