// Per-pixel correction factors, computed once per panel on the device.
#include "gd_corrections.cuh"

extern "C" __global__ void gd_pixel_corrections(const double* positions, int n_pixels, GdCorrectionParams params,
                                                double* k_out, double* swept_out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_pixels) return;
    gd_corrections(positions + 3 * i, &params, k_out + i, swept_out + i);
}
