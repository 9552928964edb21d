// Host build of the kernels' __host__ __device__ arithmetic, for tests without a GPU:
//   g++ -O2 -ffp-contract=off -shared -fPIC -std=c++17 -I kernels kernels/host_api.cpp -o libgd_host.so
// (no fused multiply-add, as the CUDA build with --fmad=false: every engine rounds alike)
// Each function loops over arrays exactly as one CUDA thread per element would.
#include "gd_geometry.cuh"
#include "gd_corrections.cuh"
#include "gd_decide.cuh"

extern "C" {

void gd_host_hkl(int64_t n, const double* Minv, const double* s, double* hkl) {
    for (int64_t i = 0; i < n; ++i) gd_hkl(Minv, s[3 * i], s[3 * i + 1], s[3 * i + 2], hkl + 3 * i);
}

void gd_host_voxel_split(int64_t n, const double* hkl, const int32_t* ndiv, const int32_t* hmax, int64_t* cell,
                         int32_t* sub) {
    for (int64_t i = 0; i < n; ++i) cell[i] = gd_voxel_split(hkl + 3 * i, ndiv, hmax, sub + i);
}

void gd_host_bragg(int64_t n, const double* hkl, const double* offset, const double* inv_cov, double cutoff2,
                   const uint8_t* absent, const int32_t* absent_half, uint8_t* out) {
    for (int64_t i = 0; i < n; ++i) out[i] = gd_is_bragg(hkl + 3 * i, offset, inv_cov, cutoff2, absent, absent_half);
}

// The decision chain over n pixels of one frame (values, thresholds, s vectors).
void gd_host_decide(int64_t n, const double* values, const double* thresholds, const double* Minv, const double* s,
                    const int32_t* ndiv, const int32_t* hmax, double min_valid, double overload, int use_bragg,
                    const double* offset, const double* inv_cov, double cutoff2, const uint8_t* absent,
                    const int32_t* absent_half, int8_t* code, int64_t* cell, int32_t* sub) {
    GdBragg bragg = {use_bragg, offset, inv_cov, cutoff2, absent, absent_half};
    for (int64_t i = 0; i < n; ++i) {
        cell[i] = -1;
        sub[i] = 0;
        code[i] = (int8_t)gd_decide(values[i], thresholds[i], Minv, s + 3 * i, ndiv, hmax, min_valid, overload,
                                    &bragg, cell + i, sub + i);
    }
}

void gd_host_corrections(int64_t n, const double* positions, const GdCorrectionParams* params, double* k,
                         double* swept) {
    for (int64_t i = 0; i < n; ++i) gd_corrections(positions + 3 * i, params, k + i, swept + i);
}

}
