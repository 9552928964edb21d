// Runs the real __global__ kernels of integrate.cu on the CPU, as cuLaunchKernel would:
//   g++ -std=c++20 -O1 -ffp-contract=off -pthread -shared -fPIC -I kernels kernels/host_launch.cpp
// Arguments arrive as void* args[] pointing at each argument's value.
#include "host_shim.h"
#include "integrate.cu"

#include <ucontext.h>

#include <algorithm>
#include <functional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

thread_local gd_dim3 threadIdx, blockIdx;
gd_dim3 blockDim, gridDim;

namespace {
constexpr std::size_t kFiberStack = 64 * 1024;
thread_local ucontext_t scheduler;          // the block's scheduler on this worker
thread_local ucontext_t* running = nullptr;  // the fiber now running
thread_local std::function<void()>* body = nullptr;
thread_local bool* finished = nullptr;

void fiber_entry() {
    (*body)();
    finished[threadIdx.x] = true;  // then uc_link returns to the scheduler
}

// One block: every thread a fiber; run them in turns, each up to its next barrier or its end.
void run_block(unsigned block, std::vector<ucontext_t>& fibers, std::vector<char>& stacks, std::vector<char>& done) {
    for (unsigned t = 0; t < block; ++t) {
        getcontext(&fibers[t]);
        fibers[t].uc_stack.ss_sp = stacks.data() + t * kFiberStack;
        fibers[t].uc_stack.ss_size = kFiberStack;
        fibers[t].uc_link = &scheduler;
        makecontext(&fibers[t], fiber_entry, 0);
        done[t] = false;
    }
    finished = reinterpret_cast<bool*>(done.data());
    for (unsigned remaining = block; remaining > 0;) {
        for (unsigned t = 0; t < block; ++t) {
            if (done[t]) continue;
            threadIdx.x = t;
            running = &fibers[t];
            swapcontext(&scheduler, &fibers[t]);
            if (done[t]) --remaining;
        }
    }
}
}  // namespace

void gd_host_syncthreads() { swapcontext(running, &scheduler); }

template <typename... A, std::size_t... I>
static void gd_call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}

// Run kernel over grid x block threads: blocks spread over the CPU's hardware threads.
template <typename... A>
static void gd_launch(void (*kernel)(A...), unsigned grid, unsigned block, void** args) {
    gridDim.x = grid;
    blockDim.x = block;
    unsigned n_workers = std::max(1u, std::min(std::thread::hardware_concurrency(), grid));
    std::vector<std::thread> workers;
    for (unsigned w = 0; w < n_workers; ++w)
        workers.emplace_back([=] {
            std::vector<ucontext_t> fibers(block);
            std::vector<char> stacks(block * kFiberStack), done(block);
            std::function<void()> call = [=] { gd_call(kernel, args, std::index_sequence_for<A...>{}); };
            body = &call;
            for (unsigned b = w; b < grid; b += n_workers) {
                blockIdx.x = b;
                run_block(block, fibers, stacks, done);
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
