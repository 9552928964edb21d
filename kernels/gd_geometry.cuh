// Pixel -> hkl -> voxel arithmetic, shared by the CUDA kernels and the host test build.
// Conventions are those of gpudiffuse.grid and gpudiffuse.geometry (see docs/conventions.md).
#pragma once
#include "gd_common.cuh"

// Fractional Miller indices hkl = Minv . s, Minv row-major 3x3 (inverse lab setting matrix).
GD_HD void gd_hkl(const double* Minv, double sx, double sy, double sz, double* hkl) {
    hkl[0] = Minv[0] * sx + Minv[1] * sy + Minv[2] * sz;
    hkl[1] = Minv[3] * sx + Minv[4] * sy + Minv[5] * sz;
    hkl[2] = Minv[6] * sx + Minv[7] * sy + Minv[8] * sz;
}

// floor division for possibly negative integers
GD_HD int64_t gd_floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Two-level voxel index: voxel H = rint(h*n); cell = floor((H + n/2)/n); sub = H + n/2 - cell*n.
// Returns the flat cell index into the dense table (2*hmax+1 per axis), or -1 outside it;
// *sub receives the flat sub-voxel index (row-major over ndiv).
GD_HD int64_t gd_voxel_split(const double* hkl, const int32_t* ndiv, const int32_t* hmax, int32_t* sub) {
    int64_t flat = 0;
    int32_t sub_flat = 0;
    bool inside = true;
    for (int a = 0; a < 3; ++a) {
        int64_t n = ndiv[a];
        int64_t H = (int64_t)gd_rint(hkl[a] * (double)n);
        int64_t half = n / 2;
        int64_t cell = gd_floor_div(H + half, n);
        int64_t s = H + half - cell * n;
        if (cell < -hmax[a] || cell > hmax[a]) inside = false;
        flat = flat * (2 * (int64_t)hmax[a] + 1) + (cell + hmax[a]);
        sub_flat = sub_flat * (int32_t)n + (int32_t)s;
    }
    *sub = sub_flat;
    return inside ? flat : -1;
}

// Squared Mahalanobis distance of delta = hkl - rint(hkl) from the peak-cloud offset.
GD_HD double gd_mahalanobis2(const double* hkl, const double* offset, const double* inv_cov) {
    double r[3];
    for (int a = 0; a < 3; ++a) r[a] = hkl[a] - gd_rint(hkl[a]) - offset[a];
    double d2 = 0.0;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) d2 += r[i] * inv_cov[3 * i + j] * r[j];
    return d2;
}

// Bragg test: within cutoff2 of an allowed reflection. absent: uint8 table over integer hkl
// with half-widths absent_half (index hkl + half), 1 = systematically absent.
GD_HD bool gd_is_bragg(const double* hkl, const double* offset, const double* inv_cov, double cutoff2,
                       const uint8_t* absent, const int32_t* absent_half) {
    if (gd_mahalanobis2(hkl, offset, inv_cov) > cutoff2) return false;
    int64_t idx = 0;
    for (int a = 0; a < 3; ++a) {
        int64_t g = (int64_t)gd_rint(hkl[a]) + absent_half[a];
        int64_t extent = 2 * (int64_t)absent_half[a] + 1;
        if (g < 0 || g >= extent) return false;
        idx = idx * extent + g;
    }
    return absent[idx] == 0;
}
