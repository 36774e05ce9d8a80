// host_emulator.h: runs dsv3's CUDA C kernels on the CPU, so that their logic (indexing, launch
// configuration, barriers, warp reductions, numerics) is tested on machines without a GPU. Placed before
// dsv3.cuh when a kernel variant is compiled with a host C++20 compiler (DSV3_HOST).
//
// A launch runs its blocks one after another; the threads of a block are fibers on the calling OS thread,
// switched with _setjmp / _longjmp (no system call per switch) at __syncthreads and warp operations. The
// scheduler is strict where hardware is undefined, and reports instead of hanging:
//   * a block barrier that some threads of the block never reach (returned, or waiting at a warp
//     operation) is an error, as is a warp operation that some lanes of the warp never reach;
// Global memory is host memory (the runtime places each allocation against a guard page).

#include <math.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

struct dsv3_dim3 {
    unsigned x, y, z;
};

// What kernels read; the scheduler sets them before resuming each fiber.
static dsv3_dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace dsv3_emu {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

struct Fiber {
    jmp_buf ctx;
    State state;
    dsv3_dim3 tid;
};

const unsigned MAX_THREADS = 1024;
const size_t STACK_BYTES = 64 * 1024;

struct Scheduler {
    Fiber fibers[MAX_THREADS];
    unsigned long long exchange[MAX_THREADS];  // one warp-shuffle slot per thread
    char* stacks = nullptr;
    unsigned created = 0;  // fibers that exist (they persist between launches)
    unsigned count = 0;    // threads in the current block
    unsigned current = 0;
    jmp_buf scheduler;
    ucontext_t boot_return;
    void (*body)(const void*) = nullptr;
    const void* params = nullptr;
    const char* error = nullptr;
};

static Scheduler S;

// Leave the running fiber in `state` and return to the scheduler; returns when resumed.
static void yield_as(State state) {
    Fiber& me = S.fibers[S.current];
    me.state = state;
    if (_setjmp(me.ctx) == 0) _longjmp(S.scheduler, 1);
}

// A fiber's life: created once through ucontext (the only way onto a new stack), then it parks itself with
// _setjmp and runs the kernel body every time the scheduler jumps to it with a fresh thread index.
static void fiber_main() {
    Fiber& me = S.fibers[S.current];
    if (_setjmp(me.ctx) == 0) {
        // Parked for the first time: back to the ucontext that created us.
        setcontext(&S.boot_return);
    }
    for (;;) {
        S.body(S.params);
        yield_as(DONE);
    }
}

static bool create_fibers(unsigned n) {
    if (!S.stacks) {
        S.stacks = (char*)malloc(MAX_THREADS * STACK_BYTES);
        if (!S.stacks) return false;
    }
    while (S.created < n) {
        ucontext_t uc;
        getcontext(&uc);
        uc.uc_stack.ss_sp = S.stacks + (size_t)S.created * STACK_BYTES;
        uc.uc_stack.ss_size = STACK_BYTES;
        uc.uc_link = nullptr;
        makecontext(&uc, fiber_main, 0);
        S.current = S.created;
        swapcontext(&S.boot_return, &uc);
        S.created++;
    }
    return true;
}

static void resume(unsigned i) {
    S.current = i;
    threadIdx = S.fibers[i].tid;
    if (_setjmp(S.scheduler) == 0) _longjmp(S.fibers[i].ctx, 1);
}

// Runs one block to completion; false (with S.error) when its threads cannot all make progress.
static bool run_block() {
    for (unsigned i = 0; i < S.count; i++) S.fibers[i].state = RUNNABLE;
    for (;;) {
        for (unsigned i = 0; i < S.count; i++) {
            if (S.fibers[i].state == RUNNABLE) resume(i);
        }
        unsigned done = 0, at_block = 0, at_warp = 0;
        for (unsigned i = 0; i < S.count; i++) {
            State st = S.fibers[i].state;
            done += st == DONE;
            at_block += st == AT_BLOCK_BARRIER;
            at_warp += st == AT_WARP_BARRIER;
        }
        if (done == S.count) return true;
        if (at_warp > 0) {
            // Release every warp whose live lanes all wait at a warp operation.
            bool released = false;
            for (unsigned w = 0; w < S.count; w += DSV3_WARP) {
                unsigned end = w + DSV3_WARP < S.count ? w + DSV3_WARP : S.count;
                unsigned waiting = 0, other = 0;
                for (unsigned i = w; i < end; i++) {
                    State st = S.fibers[i].state;
                    waiting += st == AT_WARP_BARRIER;
                    other += st != AT_WARP_BARRIER;
                }
                if (waiting > 0 && other > 0) {
                    S.error = "a warp operation (shuffle) was not reached by every lane of its warp";
                    return false;
                }
                if (waiting > 0) {
                    for (unsigned i = w; i < end; i++) S.fibers[i].state = RUNNABLE;
                    released = true;
                }
            }
            if (released) continue;
        }
        if (done > 0) {
            S.error = "__syncthreads was not reached by every thread of the block (some had returned)";
            return false;
        }
        for (unsigned i = 0; i < S.count; i++) S.fibers[i].state = RUNNABLE;
    }
}

static void block_barrier() { yield_as(AT_BLOCK_BARRIER); }

template <class T> static T shfl_xor(T v, int mask) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    unsigned me = S.current;
    memcpy(&S.exchange[me], &v, sizeof(T));
    yield_as(AT_WARP_BARRIER);
    unsigned src = (me / DSV3_WARP) * DSV3_WARP + ((me % DSV3_WARP) ^ (unsigned)mask);
    T r = v;
    if (src < S.count) memcpy(&r, &S.exchange[src], sizeof(T));
    // Nobody may overwrite its slot before every lane has read.
    yield_as(AT_WARP_BARRIER);
    return r;
}

static const char* launch(void (*body)(const void*), const unsigned* grid, const unsigned* block,
                          const void* params) {
    unsigned n = block[0] * block[1] * block[2];
    if (n == 0 || n > MAX_THREADS) return "block size outside 1..1024";
    if (!create_fibers(n)) return "out of memory for fiber stacks";
    S.body = body;
    S.params = params;
    S.error = nullptr;
    S.count = n;
    blockDim = {block[0], block[1], block[2]};
    gridDim = {grid[0], grid[1], grid[2]};
    unsigned i = 0;
    for (unsigned z = 0; z < block[2]; z++)
        for (unsigned y = 0; y < block[1]; y++)
            for (unsigned x = 0; x < block[0]; x++) S.fibers[i++].tid = {x, y, z};
    for (unsigned bz = 0; bz < grid[2]; bz++)
        for (unsigned by = 0; by < grid[1]; by++)
            for (unsigned bx = 0; bx < grid[0]; bx++) {
                blockIdx = {bx, by, bz};
                if (!run_block()) return S.error;
            }
    return nullptr;
}

}  // namespace dsv3_emu

// Device atomics: one OS thread runs every fiber and fibers switch only at barriers, so plain
// read-modify-writes are atomic here.
static inline unsigned atomicCAS(unsigned* p, unsigned cmp, unsigned v) {
    unsigned old = *p;
    if (old == cmp) *p = v;
    return old;
}
static inline unsigned atomicAdd(unsigned* p, unsigned v) {
    unsigned old = *p;
    *p = old + v;
    return old;
}
static inline int atomicAdd(int* p, int v) {
    int old = *p;
    *p = old + v;
    return old;
}
static inline float atomicAdd(float* p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}
static inline unsigned atomicMax(unsigned* p, unsigned v) {
    unsigned old = *p;
    if (v > old) *p = v;
    return old;
}
static inline unsigned atomicMin(unsigned* p, unsigned v) {
    unsigned old = *p;
    if (v < old) *p = v;
    return old;
}
static inline unsigned atomicOr(unsigned* p, unsigned v) {
    unsigned old = *p;
    *p = old | v;
    return old;
}
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
#define __restrict__ __restrict
#define __launch_bounds__(n)

// The entry point the runtime calls: `ENTRY` is the kernel, `Params` its parameter block.
#define DSV3_HOST_ENTRY(ENTRY)                                                                      \
    static void dsv3_host_body(const void* p) { ENTRY(*static_cast<const Params*>(p)); }          \
    extern "C" const char* dsv3_host_launch(const unsigned* grid, const unsigned* block,          \
                                            const void* params) {                                \
        return dsv3_emu::launch(dsv3_host_body, grid, block, params);                            \
    }
