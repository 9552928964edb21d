"""GPU streaming-pass throughput on Pilatus-6M frames (2463 × 2527 int32). Needs CuPy and a GPU.

    python benchmarks/gpu_stream.py --frames 200 --ndiv 3 3 3 --out benchmarks/results/gpu_stream.json \
        [--cbf-data /tmp/p6m]

Measures, after a warm-up (kernel compilation, first allocations):
* in-memory: Poisson frames generated on the device, held in host RAM (no decoding), streamed
  through the engine (H2D copy + the two kernels per chunk);
* end-to-end: frames decoded from CBF files (``--cbf-data``, e.g. the p6m simulator preset)
  through pinned buffers and two streams;
and reports frames/s, achieved GB/s and bytes moved per pixel-frame, next to the two ceilings
measured on the same device (a large device-to-device copy, a pinned host-to-device copy).
"""

from __future__ import annotations

import argparse
import time

from _results import provenance, write_result


def _bandwidth(cp, nbytes, host=False):
    src = cp.cuda.alloc_pinned_memory(nbytes) if host else cp.empty(nbytes, dtype=cp.uint8)
    dst = cp.empty(nbytes, dtype=cp.uint8)
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(6):
        start.record()
        if host:
            dst.data.copy_from_host(src.ptr, nbytes)
        else:
            dst[...] = src
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    t = sorted(times)[len(times) // 2]
    return (nbytes if host else 2 * nbytes) / t / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--ndiv", type=int, nargs=3, default=[3, 3, 3])
    parser.add_argument("--cbf-data", help="simulated p6m dataset folder for the end-to-end figure")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import numpy as np

    from gpudiffuse.backend import resolve_device
    from gpudiffuse.geometry.model import Beam, Crystal, Goniometer, Panel, Scan, Sweep
    from gpudiffuse.grid import VoxelGrid
    from gpudiffuse.integration import prepare_pixels
    from gpudiffuse.integration.driver import sweep_context
    from gpudiffuse.integration.engines import engine_class
    from gpudiffuse.masking.layout import layout_for_size

    backend = resolve_device("gpu")
    cp = backend.xp
    nx, ny = 2463, 2527
    panel = Panel(origin=[-211.8, -217.3, 250.0], fast_axis=[1, 0, 0], slow_axis=[0, 1, 0], pixel_size=(0.172, 0.172),
                  image_size=(nx, ny))
    sweep = Sweep(Beam([0, 0, 1], 1.0), panel, Goniometer(), Scan((1, args.frames), (0.0, 0.1), np.full(args.frames, 0.1)),
                  Crystal.from_real_space([60, 0, 0], [0, 70, 0], [0, 0, 80], "P 21 21 21"),
                  images=tuple(["none"] * args.frames))
    mask = layout_for_size((nx, ny)).gap_mask()
    grid = VoxelGrid.for_crystal(sweep.crystal.real_space_axes, 1.6, args.ndiv)
    pixels = prepare_pixels(sweep, mask, 1.65)
    n_pix = len(pixels.index)

    # in-memory frames: one chunk held in host RAM, fed to the engine directly (no decoding)
    rng = cp.random.default_rng(0)
    host_frames = cp.asnumpy(rng.poisson(20.0, size=(args.chunk, ny * nx)).astype(cp.int32))
    inverse = np.stack([np.linalg.inv(sweep.setting_matrix(z)) for z in range(args.frames)])
    context = sweep_context(sweep, pixels, grid)
    engine_type = engine_class("cuda")

    def stream_all():
        engine = engine_type(context)
        for start in range(0, args.frames, args.chunk):
            block = np.arange(start, min(start + args.chunk, args.frames))
            engine.add(host_frames[: len(block)], block, inverse[block], np.full(len(block), 0.1))
        engine.flush()

    t0 = time.perf_counter()
    stream_all()  # warm-up: NVRTC compilation, first allocations
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    stream_all()
    cp.cuda.Device().synchronize()
    t_host_frames = time.perf_counter() - t0
    # bytes touched per pixel-frame by the accumulate pass, counted from integrate.cu: the raw int32
    # count and pixel index, the per-pixel constants (s: 3 doubles; k, d3s, ix, iy, |s|, threshold:
    # 6 doubles) and 8 eight-byte atomics (3 integer, 5 float); an upper bound, caches ignored
    bytes_per_pixel_frame = 4 + 8 + 3 * 8 + 6 * 8 + 8 * 8
    result = {
        **provenance("gpu_stream", backend.name), "frames": args.frames, "chunk": args.chunk, "ndiv": args.ndiv,
        "pixels_per_frame": n_pix,
        "first_run_including_compilation_s": round(t_compile, 2),
        "in_memory_frames_per_s": round(args.frames / t_host_frames, 1),
        "in_memory_M_pixel_frames_per_s": round(args.frames * n_pix / t_host_frames / 1e6, 1),
        "hbm_copy_GBps": round(_bandwidth(cp, 1 << 30), 1),
        "pcie_pinned_h2d_GBps": round(_bandwidth(cp, 1 << 28, host=True), 1),
        "bytes_per_pixel_frame_upper_bound": bytes_per_pixel_frame,
    }
    if args.cbf_data:
        from gpudiffuse.experiment import ImportParameters
        from gpudiffuse.pipeline import ProcessParameters, process

        t0 = time.perf_counter()
        process(ProcessParameters(ImportParameters(xds=args.cbf_data), device="gpu"), "/tmp/gpu_stream_out",
                overwrite=True, progress=False)
        result["end_to_end_cbf_s"] = round(time.perf_counter() - t0, 2)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
