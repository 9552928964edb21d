// Streaming integration kernels: several frames per launch, raw counts in their native type.
// The decision chain is gd_decide (gd_decide.cuh, tested on the host); field positions come from
// gd_record.cuh (checked against the Python schema). These wrappers only index and accumulate.
#include "gd_decide.cuh"
#include "gd_record.cuh"

struct GdFrameParams {
    double Minv[9];          // inverse lab setting matrix of the frame (mid-frame angle)
    double exposure;         // exposure time t of the frame (s)
    double frame_index;      // 0-based frame number within the sweep
};

// This thread's pixel-frame: frame f, pixel p and decision. False if out of range.
template <typename T>
__device__ bool gd_thread_pixel(const T* frames, int n_frames, const int64_t* pixel_index, int n_pixels,
                                int64_t frame_stride, const double* s, const double* threshold,
                                const GdFrameParams* fp, const int32_t* ndiv, const int32_t* hmax, double min_valid,
                                double overload, const GdBragg* bragg, int* f, int* p, double* value, int* code,
                                int64_t* cell, int32_t* sub) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n_frames * n_pixels) return false;
    *f = (int)(i / n_pixels);
    *p = (int)(i % n_pixels);
    *value = (double)frames[*f * frame_stride + pixel_index[*p]];
    *code = gd_decide(*value, threshold[*p], fp[*f].Minv, s + 3 * (int64_t)*p, ndiv, hmax, min_valid, overload,
                      bragg, cell, sub);
    return true;
}

// Pass A: mark the cells touched by used pixels of the chunk (touched[cell] = 1).
template <typename T>
__device__ void gd_mark_cells_impl(const T* frames, int n_frames, const int64_t* pixel_index, int n_pixels,
                                   int64_t frame_stride, const double* s, const double* threshold,
                                   const GdFrameParams* fp, const int32_t* ndiv, const int32_t* hmax,
                                   double min_valid, double overload, GdBragg bragg, uint8_t* touched) {
    int f, p, code;
    double value;
    int64_t cell = -1;
    int32_t sub = 0;
    if (!gd_thread_pixel(frames, n_frames, pixel_index, n_pixels, frame_stride, s, threshold, fp, ndiv, hmax,
                         min_valid, overload, &bragg, &f, &p, &value, &code, &cell, &sub))
        return;
    if (code == GD_DIFFUSE || code == GD_EXCLUDED) touched[cell] = 1;
}

// Pass B: accumulate into acc_int[set][n_int][acc_size] and acc_float[set][n_float][acc_size];
// rows come from lut (cell -> row; the identity when the accumulators cover every cell, and then
// pass A is not needed). Zingers are counted. The profile of the diffuse pixels per frame is
// privatised: the block's threads add into a shared histogram (a block of consecutive
// pixel-frames spans at most two frames when a frame has at least as many used pixels as the
// block has threads; otherwise the rest go to the global profile directly), then the block adds
// each non-empty bin to the global
// profile once. Every thread reaches both barriers (no early return).
template <typename T>
__device__ void gd_accumulate_impl(const T* frames, int n_frames, const int64_t* pixel_index, int n_pixels,
                                   int64_t frame_stride, const double* s, const double* threshold,
                                   const GdFrameParams* fp, const int32_t* ndiv, const int32_t* hmax,
                                   double min_valid, double overload, GdBragg bragg, const double* k,
                                   const double* d3s, const double* ix, const double* iy, const double* s_norm,
                                   const double* bkg_rate, const double* bkg_var, const int64_t* lut, int n_sub,
                                   int n_int, int n_float, int c_max, unsigned long long* acc_int,
                                   double* acc_float, unsigned long long* hist, int64_t acc_size,
                                   unsigned long long* zingers, const int32_t* profile_bin, double* profile_counts,
                                   double* profile_kt) {
    __shared__ double block_counts[2 * GD_PROFILE_BINS];
    __shared__ double block_kt[2 * GD_PROFILE_BINS];
    for (int j = threadIdx.x; j < 2 * GD_PROFILE_BINS; j += blockDim.x) {
        block_counts[j] = 0.0;
        block_kt[j] = 0.0;
    }
    __syncthreads();
    int first_frame = (int)(((int64_t)blockIdx.x * blockDim.x) / n_pixels);
    int f = 0, p = 0, code = GD_SKIP;
    double value = 0.0;
    int64_t cell = -1;
    int32_t sub = 0;
    bool in_range = gd_thread_pixel(frames, n_frames, pixel_index, n_pixels, frame_stride, s, threshold, fp, ndiv,
                                    hmax, min_valid, overload, &bragg, &f, &p, &value, &code, &cell, &sub);
    if (in_range && code == GD_ZINGER) atomicAdd(zingers, 1ULL);
    if (in_range && (code == GD_DIFFUSE || code == GD_EXCLUDED)) {
        int64_t key = lut[cell] * n_sub + sub;
        int set = code == GD_EXCLUDED ? GD_SET_EXCLUDED : GD_SET_DIFFUSE;
        unsigned long long* ai = acc_int + (int64_t)set * n_int * acc_size;
        double* af = acc_float + (int64_t)set * n_float * acc_size;
        double t = fp[f].exposure;
        long long count = (long long)value;
        atomicAdd(&ai[GD_I_COUNTS * acc_size + key], (unsigned long long)count);
        atomicAdd(&ai[GD_I_PIXELS * acc_size + key], 1ULL);
        atomicAdd(&ai[GD_I_FRAME_SUM * acc_size + key], (unsigned long long)fp[f].frame_index);
        atomicAdd(&af[GD_F_KT_SUM * acc_size + key], k[p] * t);
        atomicAdd(&af[GD_F_D3S_SUM * acc_size + key], d3s[p]);
        atomicAdd(&af[GD_F_IX_SUM * acc_size + key], ix[p]);
        atomicAdd(&af[GD_F_IY_SUM * acc_size + key], iy[p]);
        atomicAdd(&af[GD_F_S_SUM * acc_size + key], s_norm[p]);
        if (n_float > GD_F_BKG_VAR) {  // background run given
            atomicAdd(&af[GD_F_BKG_SUM * acc_size + key], bkg_rate[p] * t);
            atomicAdd(&af[GD_F_BKG_VAR * acc_size + key], bkg_var[p] * t * t);
        }
        if (c_max >= 0) {  // count histograms
            if (count > c_max)
                atomicAdd(&ai[GD_I_OVERFLOW_COUNTS * acc_size + key], (unsigned long long)count);
            else if (count >= 0)
                atomicAdd(&hist[((int64_t)set * acc_size + key) * (c_max + 1) + count], 1ULL);
        }
        if (set == GD_SET_DIFFUSE && f - first_frame < 2) {
            int slot = (f - first_frame) * GD_PROFILE_BINS + profile_bin[p];
            atomicAdd(&block_counts[slot], value);
            atomicAdd(&block_kt[slot], k[p] * t);
        } else if (set == GD_SET_DIFFUSE) {  // fewer used pixels than threads in a block: go global
            atomicAdd(&profile_counts[(int64_t)f * GD_PROFILE_BINS + profile_bin[p]], value);
            atomicAdd(&profile_kt[(int64_t)f * GD_PROFILE_BINS + profile_bin[p]], k[p] * t);
        }
    }
    __syncthreads();
    for (int j = threadIdx.x; j < 2 * GD_PROFILE_BINS; j += blockDim.x) {
        int frame = first_frame + j / GD_PROFILE_BINS;
        if (frame < n_frames && (block_counts[j] != 0.0 || block_kt[j] != 0.0)) {
            atomicAdd(&profile_counts[(int64_t)frame * GD_PROFILE_BINS + j % GD_PROFILE_BINS], block_counts[j]);
            atomicAdd(&profile_kt[(int64_t)frame * GD_PROFILE_BINS + j % GD_PROFILE_BINS], block_kt[j]);
        }
    }
}

#define GD_BRAGG_ARGS                                                                                        \
    int use_bragg, const double *offset, const double *inv_cov, double cutoff2, const uint8_t *absent,      \
        const int32_t *absent_half
#define GD_BRAGG_MAKE {use_bragg, offset, inv_cov, cutoff2, absent, absent_half}

#define GD_INSTANTIATE(T, NAME)                                                                              \
    extern "C" __global__ void gd_mark_cells_##NAME(                                                        \
        const T* frames, int n_frames, const int64_t* pixel_index, int n_pixels, int64_t frame_stride,      \
        const double* s, const double* threshold, const GdFrameParams* fp, const int32_t* ndiv,             \
        const int32_t* hmax, double min_valid, double overload, GD_BRAGG_ARGS, uint8_t* touched) {          \
        GdBragg bragg = GD_BRAGG_MAKE;                                                                      \
        gd_mark_cells_impl<T>(frames, n_frames, pixel_index, n_pixels, frame_stride, s, threshold, fp, ndiv, \
                              hmax, min_valid, overload, bragg, touched);                                   \
    }                                                                                                       \
    extern "C" __global__ void gd_accumulate_##NAME(                                                        \
        const T* frames, int n_frames, const int64_t* pixel_index, int n_pixels, int64_t frame_stride,      \
        const double* s, const double* threshold, const GdFrameParams* fp, const int32_t* ndiv,             \
        const int32_t* hmax, double min_valid, double overload, GD_BRAGG_ARGS, const double* k,             \
        const double* d3s, const double* ix, const double* iy, const double* s_norm, const double* bkg_rate, \
        const double* bkg_var, const int64_t* lut, int n_sub, int n_int, int n_float, int c_max,            \
        unsigned long long* acc_int, double* acc_float, unsigned long long* hist, int64_t acc_size,         \
        unsigned long long* zingers, const int32_t* profile_bin, double* profile_counts,                    \
        double* profile_kt) {                                                                               \
        GdBragg bragg = GD_BRAGG_MAKE;                                                                      \
        gd_accumulate_impl<T>(frames, n_frames, pixel_index, n_pixels, frame_stride, s, threshold, fp, ndiv, \
                              hmax, min_valid, overload, bragg, k, d3s, ix, iy, s_norm, bkg_rate, bkg_var,  \
                              lut, n_sub, n_int, n_float, c_max, acc_int, acc_float, hist, acc_size,        \
                              zingers, profile_bin, profile_counts, profile_kt);                            \
    }

GD_INSTANTIATE(uint16_t, u16)
GD_INSTANTIATE(int32_t, i32)
GD_INSTANTIATE(uint32_t, u32)
