// Streaming integration kernels: several frames per launch, raw counts in their native type.
// Arithmetic lives in the headers; these wrappers only compute indices and bounds.
#include "gd_geometry.cuh"
#include "gd_corrections.cuh"

struct GdFrameParams {
    double Minv[9];          // inverse lab setting matrix of the frame (mid-frame angle)
    double kt_scale;         // exposure time t of the frame (s)
    double frame_index;      // 0-based frame number within the sweep
};

// This thread's pixel-frame: its frame f and pixel p, raw value and hkl; false if out of range
// or invalid in this frame (below the minimum valid value, at or above the overload).
template <typename T>
__device__ bool gd_load_pixel(const T* frames, int n_frames, const int64_t* pixel_index, int n_pixels,
                              int64_t frame_stride, const double* s, const GdFrameParams* fp, double min_valid,
                              double overload, int* f, int* p, double* value, double* hkl) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n_frames * n_pixels) return false;
    *f = (int)(i / n_pixels);
    *p = (int)(i % n_pixels);
    *value = (double)frames[*f * frame_stride + pixel_index[*p]];
    if (*value < min_valid || *value >= overload) return false;
    gd_hkl(fp[*f].Minv, s[3 * *p], s[3 * *p + 1], s[3 * *p + 2], hkl);
    return true;
}

// Pass A: mark the cells touched by valid pixels of the chunk (touched[cell] = 1).
template <typename T>
__device__ void gd_mark_cells_impl(const T* frames, int n_frames, const int64_t* pixel_index, int n_pixels,
                                   int64_t frame_stride, const double* s, const GdFrameParams* fp,
                                   const int32_t* ndiv, const int32_t* hmax, double min_valid, double overload,
                                   uint8_t* touched) {
    int f, p;
    double value, hkl[3];
    if (!gd_load_pixel(frames, n_frames, pixel_index, n_pixels, frame_stride, s, fp, min_valid, overload, &f, &p,
                       &value, hkl))
        return;
    int32_t sub;
    int64_t cell = gd_voxel_split(hkl, ndiv, hmax, &sub);
    if (cell >= 0) touched[cell] = 1;
}

// Pass B: accumulate. Rows come from lut (cell -> row, assigned on the host side between
// passes). Bragg pixels go to the excluded accumulators; zingers are dropped and counted.
template <typename T>
__device__ void gd_accumulate_impl(const T* frames, int n_frames, const int64_t* pixel_index, int n_pixels,
                                   int64_t frame_stride, const double* s, const double* k, const double* d3s,
                                   const double* ix, const double* iy, const double* s_norm,
                                   const double* threshold, const GdFrameParams* fp, const int32_t* ndiv,
                                   const int32_t* hmax, const int64_t* lut, int n_sub, double min_valid,
                                   double overload, int use_bragg, const double* offset, const double* inv_cov,
                                   double cutoff2, const uint8_t* absent, const int32_t* absent_half,
                                   unsigned long long* acc_int, double* acc_float, int64_t acc_size,
                                   unsigned long long* zingers, const int32_t* profile_bin, int n_bins,
                                   double* profile_counts, double* profile_kt) {
    int f, p;
    double value, hkl[3];
    if (!gd_load_pixel(frames, n_frames, pixel_index, n_pixels, frame_stride, s, fp, min_valid, overload, &f, &p,
                       &value, hkl))
        return;
    bool bragg = use_bragg && gd_is_bragg(hkl, offset, inv_cov, cutoff2, absent, absent_half);
    if (!bragg && value >= threshold[p]) {
        atomicAdd(zingers, 1ULL);
        return;
    }
    int32_t sub;
    int64_t cell = gd_voxel_split(hkl, ndiv, hmax, &sub);
    if (cell < 0) return;
    int64_t key = lut[cell] * n_sub + sub;
    // two accumulator sets, each [3 int fields][acc_size] and [5 float fields][acc_size]
    int set = bragg ? 1 : 0;
    unsigned long long* ai = acc_int + (int64_t)set * 3 * acc_size;
    double* af = acc_float + (int64_t)set * 5 * acc_size;
    atomicAdd(&ai[key], (unsigned long long)value);
    atomicAdd(&ai[acc_size + key], 1ULL);
    atomicAdd(&ai[2 * acc_size + key], (unsigned long long)fp[f].frame_index);
    atomicAdd(&af[key], k[p] * fp[f].kt_scale);
    atomicAdd(&af[acc_size + key], d3s[p]);
    atomicAdd(&af[2 * acc_size + key], ix[p]);
    atomicAdd(&af[3 * acc_size + key], iy[p]);
    atomicAdd(&af[4 * acc_size + key], s_norm[p]);
    if (!bragg) {  // isotropic profile of the diffuse pixels, per frame of the chunk
        atomicAdd(&profile_counts[(int64_t)f * n_bins + profile_bin[p]], value);
        atomicAdd(&profile_kt[(int64_t)f * n_bins + profile_bin[p]], k[p] * fp[f].kt_scale);
    }
}

#define GD_INSTANTIATE(T, NAME)                                                                              \
    extern "C" __global__ void gd_mark_cells_##NAME(const T* frames, int n_frames, const int64_t* pixel_index,  \
                                                    int n_pixels, int64_t frame_stride, const double* s,        \
                                                    const GdFrameParams* fp, const int32_t* ndiv,               \
                                                    const int32_t* hmax, double min_valid, double overload,     \
                                                    uint8_t* touched) {                                         \
        gd_mark_cells_impl<T>(frames, n_frames, pixel_index, n_pixels, frame_stride, s, fp, ndiv, hmax,         \
                              min_valid, overload, touched);                                                    \
    }                                                                                                           \
    extern "C" __global__ void gd_accumulate_##NAME(                                                            \
        const T* frames, int n_frames, const int64_t* pixel_index, int n_pixels, int64_t frame_stride,          \
        const double* s, const double* k, const double* d3s, const double* ix, const double* iy,                \
        const double* s_norm, const double* threshold, const GdFrameParams* fp, const int32_t* ndiv,            \
        const int32_t* hmax, const int64_t* lut, int n_sub, double min_valid, double overload, int use_bragg,   \
        const double* offset, const double* inv_cov, double cutoff2, const uint8_t* absent,                     \
        const int32_t* absent_half, unsigned long long* acc_int, double* acc_float, int64_t acc_size,           \
        unsigned long long* zingers, const int32_t* profile_bin, int n_bins, double* profile_counts,            \
        double* profile_kt) {                                                                                   \
        gd_accumulate_impl<T>(frames, n_frames, pixel_index, n_pixels, frame_stride, s, k, d3s, ix, iy, s_norm,  \
                              threshold, fp, ndiv, hmax, lut, n_sub, min_valid, overload, use_bragg, offset,    \
                              inv_cov, cutoff2, absent, absent_half, acc_int, acc_float, acc_size, zingers,     \
                              profile_bin, n_bins, profile_counts, profile_kt);                                 \
    }

GD_INSTANTIATE(uint16_t, u16)
GD_INSTANTIATE(int32_t, i32)
GD_INSTANTIATE(uint32_t, u32)
