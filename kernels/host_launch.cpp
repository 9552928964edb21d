// Runs the real __global__ kernels of integrate.cu on the CPU, as cuLaunchKernel would:
//   g++ -std=c++20 -O1 -ffp-contract=off -pthread -shared -fPIC -I kernels kernels/host_launch.cpp
// Arguments arrive as void* args[] pointing at each argument's value.
#include "host_shim.h"
#include "integrate.cu"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

thread_local gd_dim3 threadIdx, blockIdx;
gd_dim3 blockDim, gridDim;

// The threads of a block run one after another, so a barrier cannot be honoured: kernels that
// need __syncthreads are refused rather than run wrongly.
void gd_host_syncthreads() {
    std::fprintf(stderr, "host_launch: __syncthreads is not supported by the sequential host launcher\n");
    std::abort();
}

template <typename... A, std::size_t... I>
static void gd_call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}

// Run kernel over grid x block threads: blocks are spread over the CPU's hardware threads, the
// threads of a block run in order; atomics are real atomics, so blocks may run concurrently.
template <typename... A>
static void gd_launch(void (*kernel)(A...), unsigned grid, unsigned block, void** args) {
    gridDim.x = grid;
    blockDim.x = block;
    unsigned n_workers = std::max(1u, std::min(std::thread::hardware_concurrency(), grid));
    std::vector<std::thread> workers;
    for (unsigned w = 0; w < n_workers; ++w)
        workers.emplace_back([=] {
            for (unsigned b = w; b < grid; b += n_workers) {
                blockIdx.x = b;
                for (unsigned t = 0; t < block; ++t) {
                    threadIdx.x = t;
                    gd_call(kernel, args, std::index_sequence_for<A...>{});
                }
            }
        });
    for (auto& w : workers) w.join();
}

#define GD_EXPORT(NAME) \
    extern "C" void host_##NAME(unsigned grid, unsigned block, void** args) { gd_launch(NAME, grid, block, args); }

GD_EXPORT(gd_mark_cells_u16)
GD_EXPORT(gd_mark_cells_i32)
GD_EXPORT(gd_mark_cells_u32)
GD_EXPORT(gd_accumulate_u16)
GD_EXPORT(gd_accumulate_i32)
GD_EXPORT(gd_accumulate_u32)
