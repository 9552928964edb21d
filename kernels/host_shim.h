// Host execution of the CUDA kernels (tests without a GPU): compile a .cu as C++20 with this
// header first. CUDA qualifiers vanish, thread and block indices become variables set by the
// launcher in host_launch.cpp, atomics become std::atomic_ref operations. Blocks run in
// parallel on worker threads; the threads of a block are fibers (ucontext) of one worker, so
// __shared__ is per-worker static storage and __syncthreads a switch to the block's scheduler,
// which resumes every fiber up to the barrier before any passes it.
#pragma once
#ifdef __CUDACC__
#error "host_shim.h is for host builds only"
#endif
#include <atomic>
#include <cmath>
#include <cstdint>

struct gd_dim3 {
    unsigned x = 0, y = 0, z = 0;
};
extern thread_local gd_dim3 threadIdx, blockIdx;  // set by the launcher for each emulated thread
extern gd_dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local

void gd_host_syncthreads();
#define __syncthreads() gd_host_syncthreads()

template <typename T>
inline T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}
