// host_emulator.h: runs dsv3's CUDA C kernels on the CPU, so that their logic (indexing, launch
// configuration, barriers, warp reductions, numerics) is tested on machines without a GPU. Placed before
// dsv3.cuh when a kernel variant is compiled with a host C++20 compiler (DSV3_HOST).
//
// A launch runs its blocks one after another; the threads of a block are fibers on the calling OS thread,
// switched with _setjmp / _longjmp (no system call per switch) at __syncthreads and warp operations. The
// scheduler is strict where hardware is undefined, and reports instead of hanging or guessing:
//   * a block barrier that some threads never reach (returned, or waiting at a warp operation), threads
//     waiting at different barrier call sites, a warp operation that some lanes of the warp never reach,
//     a shuffle that reads a lane past the end of the block, and a grid or block past the GPU limits
//     are kernel errors;
//   * threads run in ascending order between one pair of barriers and in descending order between the
//     next, so a missing barrier shows whichever way the data flows;
//   * shared memory is filled with 0xff bytes (NaN as float, -1 as int) at the start of every block, so a
//     kernel that reads shared memory it did not write sees garbage, as on a GPU; dynamic shared memory
//     (DSV3_DYNAMIC_SHARED) is the launch's bytes, which must be exactly the size of the object the kernel
//     declares, placed against an inaccessible page (a write past it faults), and counts as shared memory
//     for the checks of ldmatrix and cp.async;
//   * warp operations (shuffles, __syncwarp, and mma.cuh's matrix operations: mma.sync at warp 32, MFMA at
//     64) are rendezvous of the whole warp: every lane deposits its words, waits until all lanes of the
//     warp have, reads what it needs, and waits again before anyone may deposit anew. Lanes waiting at
//     different kinds of warp operation are an error, as are lanes that return while the others wait;
//   * cp.async copies (mma.cuh) are queued per thread and performed only at the cp.async.wait_group that
//     covers them, so a kernel that reads the destination before its wait sees the 0xff garbage; a thread
//     that ends with copies never waited for is an error.
// Global memory is host memory (the runtime places each allocation against a guard page); the fiber
// stacks come from the runtime too, each with a guard region below it.

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

struct dsv3_dim3 {
    unsigned x, y, z;
};

// What kernels read; the scheduler sets them before resuming each fiber.
static dsv3_dim3 threadIdx, blockIdx, blockDim, gridDim;

// Every DSV3_SHARED object lives in this section; the linker defines its bounds (weak: a kernel may have
// no shared memory).
extern "C" char __start_dsv3_shared[] __attribute__((weak));
extern "C" char __stop_dsv3_shared[] __attribute__((weak));

namespace dsv3_emu {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

// The kinds of warp operation: the lanes of a warp released together must all wait at the same kind.
enum WarpOp {
    WARP_SHUFFLE = 1,
    WARP_SYNC,
    WARP_MMA_BF16,
    WARP_MMA_E4M3,
    WARP_LDMATRIX,
    WARP_LDMATRIX_TRANS,
    WARP_MFMA_BF16,
    WARP_MFMA_FP8
};
static const char* const WARP_OP_NAMES[] = {"?",        "shuffle",  "__syncwarp",     "mma bf16",  "mma e4m3",
                                            "ldmatrix", "ldmatrix.trans", "mfma bf16", "mfma fp8"};

struct Fiber {
    jmp_buf ctx;
    State state;
    dsv3_dim3 tid;
    int barrier;  // the call site (line) of the block barrier it waits at
    WarpOp warp_op;  // the warp operation it waits at
};

const unsigned MAX_THREADS = 1024;
// u32 words one lane deposits at a warp operation (an mma's A and B fragments: 4 + 2).
const unsigned EXCHANGE_WORDS = 6;
typedef unsigned WarpWords[EXCHANGE_WORDS];

// One queued cp.async copy of 16 bytes, and the commit group it belongs to (0: not committed yet).
struct CpAsync {
    char* dst;
    const char* src;
    unsigned group;
};
// Copies one thread may have queued and not yet waited for: a 4-stage pipeline of 4 copies per thread per
// stage needs 16.
const unsigned CP_ASYNC_MAX = 64;

struct Scheduler {
    Fiber fibers[MAX_THREADS];
    WarpWords exchange[MAX_THREADS];  // what each thread deposits at a warp operation
    CpAsync cp_async[MAX_THREADS][CP_ASYNC_MAX];
    unsigned cp_queued[MAX_THREADS];     // entries of cp_async in use, in issue order
    unsigned cp_committed[MAX_THREADS];  // commit groups made so far in this block
    // MAX_THREADS stacks of `stack_bytes`, each above `guard_bytes` of inaccessible memory: one pool for the
    // whole process, owned by the runtime (per-library pools exhausted the kernel's limit on mappings).
    char* stacks = nullptr;
    size_t stack_bytes = 0, guard_bytes = 0;
    unsigned created = 0;  // fibers made in this launch
    unsigned count = 0;    // threads in the current block
    unsigned current = 0;
    jmp_buf scheduler;
    ucontext_t boot_return;
    void (*body)(const void*) = nullptr;
    const void* params = nullptr;
    // This launch's dynamic shared memory (DSV3_DYNAMIC_SHARED), from the runtime.
    char* dynamic = nullptr;
    size_t dynamic_bytes = 0;
    const char* error = nullptr;
    char message[160];
};

static Scheduler S;

static unsigned dsv3_lane_of(unsigned thread) { return thread % DSV3_WARP; }

// Leave the running fiber in `state` and return to the scheduler; returns when resumed.
static void yield_as(State state) {
    Fiber& me = S.fibers[S.current];
    me.state = state;
    if (_setjmp(me.ctx) == 0) _longjmp(S.scheduler, 1);
}

// A fiber's life: created through ucontext (the only way onto a new stack), then it parks itself with
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

static void create_fibers(unsigned n) {
    const size_t slot = S.stack_bytes + S.guard_bytes;
    while (S.created < n) {
        ucontext_t uc;
        getcontext(&uc);
        uc.uc_stack.ss_sp = S.stacks + (size_t)S.created * slot + S.guard_bytes;
        uc.uc_stack.ss_size = S.stack_bytes;
        uc.uc_link = nullptr;
        makecontext(&uc, fiber_main, 0);
        S.current = S.created;
        swapcontext(&S.boot_return, &uc);
        S.created++;
    }
}

static void resume(unsigned i) {
    S.current = i;
    threadIdx = S.fibers[i].tid;
    if (_setjmp(S.scheduler) == 0) _longjmp(S.fibers[i].ctx, 1);
}

static bool fail(const char* message) {
    S.error = message;
    return false;
}

// A kernel error found by the running fiber: recorded, and the fiber never runs again (the scheduler
// abandons the launch when it sees S.error).
static void fail_here(const char* message) {
    if (!S.error) S.error = message;
    yield_as(DONE);
}

// Whether `p .. p + bytes` lies in the kernel's shared memory, static or this launch's dynamic bytes.
static bool in_shared(const void* p, size_t bytes) {
    const char* c = static_cast<const char*>(p);
    if (__start_dsv3_shared && c >= __start_dsv3_shared && c + bytes <= __stop_dsv3_shared) return true;
    return S.dynamic_bytes > 0 && c >= S.dynamic && c + bytes <= S.dynamic + S.dynamic_bytes;
}

// DSV3_DYNAMIC_SHARED's object: the launch's dynamic shared memory, which must be exactly `bytes` (the
// object's size). The launch code computes the bytes from the variant's constants (kernels.rs
// Variant::shared), so a difference means the two have drifted apart: an error rather than a kernel that
// runs past its memory or wastes it.
static void* dynamic_shared(size_t bytes) {
    if (bytes != S.dynamic_bytes) {
        snprintf(S.message, sizeof S.message,
                 "dynamic shared memory: the kernel declares %zu bytes, the launch gives %zu", bytes,
                 S.dynamic_bytes);
        fail_here(S.message);
    }
    return S.dynamic;
}

// Runs one block to completion; false (with S.error) when its threads cannot all make progress.
static bool run_block() {
    for (unsigned i = 0; i < S.count; i++) {
        S.fibers[i].state = RUNNABLE;
        S.cp_queued[i] = 0;
        S.cp_committed[i] = 0;
    }
    if (__start_dsv3_shared && __stop_dsv3_shared > __start_dsv3_shared) {
        memset(__start_dsv3_shared, 0xff, (size_t)(__stop_dsv3_shared - __start_dsv3_shared));
    }
    if (S.dynamic_bytes > 0) memset(S.dynamic, 0xff, S.dynamic_bytes);
    for (unsigned phase = 0;; phase++) {
        for (unsigned k = 0; k < S.count; k++) {
            unsigned i = (phase & 1) ? S.count - 1 - k : k;
            if (S.fibers[i].state == RUNNABLE) resume(i);
            if (S.error) return false;
        }
        unsigned done = 0, at_block = 0, at_warp = 0;
        for (unsigned i = 0; i < S.count; i++) {
            State st = S.fibers[i].state;
            done += st == DONE;
            at_block += st == AT_BLOCK_BARRIER;
            at_warp += st == AT_WARP_BARRIER;
        }
        if (done == S.count) {
            for (unsigned i = 0; i < S.count; i++) {
                if (S.cp_queued[i] > 0) {
                    return fail("a thread ended with cp.async copies it never waited for (cp.async.wait_group)");
                }
            }
            return true;
        }
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
                    return fail("a warp operation was not reached by every lane of its warp");
                }
                if (waiting > 0) {
                    for (unsigned i = w + 1; i < end; i++) {
                        if (S.fibers[i].warp_op != S.fibers[w].warp_op) {
                            snprintf(S.message, sizeof S.message,
                                     "lanes of a warp wait at different warp operations (%s and %s)",
                                     WARP_OP_NAMES[S.fibers[w].warp_op], WARP_OP_NAMES[S.fibers[i].warp_op]);
                            return fail(S.message);
                        }
                    }
                    for (unsigned i = w; i < end; i++) S.fibers[i].state = RUNNABLE;
                    released = true;
                }
            }
            if (released) continue;
        }
        if (done > 0) return fail("__syncthreads was not reached by every thread of the block (some had returned)");
        int site = S.fibers[0].barrier;
        for (unsigned i = 1; i < S.count; i++) {
            if (S.fibers[i].barrier != site) {
                snprintf(S.message, sizeof S.message,
                         "threads wait at different __syncthreads call sites (lines %d and %d)", site,
                         S.fibers[i].barrier);
                return fail(S.message);
            }
        }
        for (unsigned i = 0; i < S.count; i++) S.fibers[i].state = RUNNABLE;
    }
}

static void block_barrier(int site) {
    S.fibers[S.current].barrier = site;
    yield_as(AT_BLOCK_BARRIER);
}

// The first half of a warp operation: deposits the calling lane's `n` words and waits until every lane of
// its warp has deposited. Returns the warp's deposits, lane i's at [i]; the lanes past the end of a partial
// last warp have none. The caller reads what it needs, then calls warp_done.
static const WarpWords* warp_gather(WarpOp op, const unsigned* words, unsigned n) {
    unsigned me = S.current;
    if (n > 0) memcpy(S.exchange[me], words, n * sizeof(unsigned));
    S.fibers[me].warp_op = op;
    yield_as(AT_WARP_BARRIER);
    return &S.exchange[(me / DSV3_WARP) * DSV3_WARP];
}
// The second half: nobody may overwrite its deposit before every lane has read.
static void warp_done(WarpOp op) {
    S.fibers[S.current].warp_op = op;
    yield_as(AT_WARP_BARRIER);
}
// Lanes of the calling thread's warp that exist (fewer than DSV3_WARP in a partial last warp).
static unsigned warp_lanes() {
    unsigned base = (S.current / DSV3_WARP) * DSV3_WARP;
    return S.count - base < DSV3_WARP ? S.count - base : DSV3_WARP;
}

// The shuffles dsv3.cuh offers on every target: float, u32, i32.
template <class T> static T shfl_xor_any(T v, int mask) {
    static_assert(sizeof(T) == sizeof(unsigned), "shuffles move 32-bit values");
    unsigned word;
    memcpy(&word, &v, sizeof word);
    const WarpWords* lanes = warp_gather(WARP_SHUFFLE, &word, 1);
    unsigned src = dsv3_lane_of(S.current) ^ (unsigned)mask;
    T r = v;
    if (src < warp_lanes()) {
        memcpy(&r, &lanes[src][0], sizeof(T));
    } else if (!S.error) {
        S.error = "a shuffle read a lane past the end of the block (a partial last warp)";
    }
    warp_done(WARP_SHUFFLE);
    return r;
}
static float shfl_xor(float v, int mask) { return shfl_xor_any(v, mask); }
static unsigned shfl_xor(unsigned v, int mask) { return shfl_xor_any(v, mask); }
static int shfl_xor(int v, int mask) { return shfl_xor_any(v, mask); }

static void syncwarp() {
    warp_gather(WARP_SYNC, nullptr, 0);
    warp_done(WARP_SYNC);
}

// cp.async.cg.shared.global of 16 bytes: queued, performed at the wait that covers it.
static void cp_async16(void* dst, const void* src) {
    unsigned me = S.current;
    if (!in_shared(dst, 16)) fail_here("cp.async: the destination is not in shared memory");
    if (in_shared(src, 1)) fail_here("cp.async: the source is in shared memory (it must be global)");
    if (((size_t)dst | (size_t)src) % 16 != 0) fail_here("cp.async: a 16-byte copy with an address not 16-byte aligned");
    if (S.cp_queued[me] == CP_ASYNC_MAX) fail_here("cp.async: more than 64 copies queued by one thread");
    S.cp_async[me][S.cp_queued[me]++] = {static_cast<char*>(dst), static_cast<const char*>(src), 0};
}
// cp.async.commit_group: the thread's uncommitted copies become its next group (possibly empty).
static void cp_async_commit() {
    unsigned me = S.current;
    unsigned group = ++S.cp_committed[me];
    for (unsigned i = 0; i < S.cp_queued[me]; i++) {
        if (S.cp_async[me][i].group == 0) S.cp_async[me][i].group = group;
    }
}
// cp.async.wait_group n: performs, in issue order, the copies of every committed group but the n most
// recent; uncommitted copies stay queued (the instruction does not wait for them either).
static void cp_async_wait(unsigned n) {
    unsigned me = S.current, kept = 0;
    unsigned last = S.cp_committed[me] > n ? S.cp_committed[me] - n : 0;
    for (unsigned i = 0; i < S.cp_queued[me]; i++) {
        CpAsync c = S.cp_async[me][i];
        if (c.group != 0 && c.group <= last) {
            memcpy(c.dst, c.src, 16);
        } else {
            S.cp_async[me][kept++] = c;
        }
    }
    S.cp_queued[me] = kept;
}

static const char* launch(void (*body)(const void*), const unsigned* grid, const unsigned* block,
                          const void* params, char* stacks, size_t stack_bytes, size_t guard_bytes,
                          char* dynamic, size_t dynamic_bytes) {
    unsigned n = block[0] * block[1] * block[2];
    if (n == 0 || n > MAX_THREADS) return "block size outside 1..1024";
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0) return "empty grid";
    if (grid[0] > 2147483647u || grid[1] > 65535u || grid[2] > 65535u) {
        return "grid past the GPU limits (x ≤ 2^31 − 1, y and z ≤ 65535)";
    }
    // The stacks are shared with every other kernel library of the process, so fibers are made afresh for
    // each launch (a few microseconds per thread).
    S.stacks = stacks;
    S.stack_bytes = stack_bytes;
    S.guard_bytes = guard_bytes;
    S.created = 0;
    create_fibers(n);
    S.body = body;
    S.params = params;
    S.dynamic = dynamic;
    S.dynamic_bytes = dynamic_bytes;
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
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    unsigned long long old = *p;
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

// The entry points the runtime calls: `ENTRY` is the kernel, `Params` its parameter block; the static
// shared memory's size is its section's.
#define DSV3_HOST_ENTRY(ENTRY)                                                                      \
    static void dsv3_host_body(const void* p) { ENTRY(*static_cast<const Params*>(p)); }          \
    extern "C" const char* dsv3_host_launch(const unsigned* grid, const unsigned* block,          \
                                            const void* params, char* stacks, size_t stack_bytes, \
                                            size_t guard_bytes, char* dynamic,                    \
                                            size_t dynamic_bytes) {                               \
        return dsv3_emu::launch(dsv3_host_body, grid, block, params, stacks, stack_bytes,         \
                                guard_bytes, dynamic, dynamic_bytes);                             \
    }                                                                                             \
    extern "C" size_t dsv3_host_static_shared() {                                                 \
        return __start_dsv3_shared ? (size_t)(__stop_dsv3_shared - __start_dsv3_shared) : 0;      \
    }
