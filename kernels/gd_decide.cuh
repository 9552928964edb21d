// The per-pixel decision chain of the streaming pass, shared by the CUDA kernel and the host
// build (gpudiffuse/integration/engines/numpy_engine.py: decide() is the NumPy copy):
// valid -> Bragg -> zinger -> voxel -> accumulator set.
#pragma once
#include "gd_geometry.cuh"

// decision codes (gpudiffuse.integration.engines.base)
#define GD_SKIP 0
#define GD_DIFFUSE 1
#define GD_EXCLUDED 2
#define GD_ZINGER 3

struct GdBragg {
    int use;                   // 0: no Bragg mask
    const double* offset;      // (3,) peak-cloud centre r0
    const double* inv_cov;     // (3, 3) row-major inverse covariance
    double cutoff2;            // squared Mahalanobis radius
    const uint8_t* absent;     // systematic-absence table over integer hkl + half
    const int32_t* absent_half;
};

// Decide one pixel-frame of raw value `value` (count threshold `threshold`, scattering vector s)
// in a frame of inverse setting matrix Minv. Writes the flat cell and sub-voxel for DIFFUSE and
// EXCLUDED pixels. Invalid: value < min_valid or value >= overload.
GD_HD int gd_decide(double value, double threshold, const double* Minv, const double* s, const int32_t* ndiv,
                    const int32_t* hmax, double min_valid, double overload, const GdBragg* bragg, int64_t* cell,
                    int32_t* sub) {
    if (value < min_valid || value >= overload) return GD_SKIP;
    double hkl[3];
    gd_hkl(Minv, s[0], s[1], s[2], hkl);
    bool is_bragg = bragg->use && gd_is_bragg(hkl, bragg->offset, bragg->inv_cov, bragg->cutoff2, bragg->absent,
                                              bragg->absent_half);
    if (!is_bragg && value >= threshold) return GD_ZINGER;
    *cell = gd_voxel_split(hkl, ndiv, hmax, sub);
    if (*cell < 0) return GD_SKIP;
    return is_bragg ? GD_EXCLUDED : GD_DIFFUSE;
}
