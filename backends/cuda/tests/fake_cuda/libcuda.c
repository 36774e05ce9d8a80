/* A fake libcuda for dsv3's tests: enough of the driver API for the CUDA backend's host side to run
 * without a GPU. FAKE_CUDA_DEVICES=0 makes cuInit fail with CUDA_ERROR_NO_DEVICE (a machine with the
 * driver installed but no GPU); N gives N "devices" (sharing one context) whose memory is host memory,
 * which accept any ELF image as a module and refuse every launch with CUDA_ERROR_NOT_SUPPORTED. Built with -DINCOMPLETE it
 * lacks cuLaunchKernel (an old or foreign libcuda). fake_cuda_launches() counts launch attempts; the event,
 * peer-copy and graph counters are below. FAKE_CUDA_CC=8.0 (say) changes the compute capability.
 * Shared memory is NVIDIA's: 48 KiB per block, FAKE_CUDA_SMEM_OPTIN (default 232448, sm_90's 227 KiB) after
 * opting in; FAKE_CUDA_STATIC_SHARED (default 0) is every function's static shared memory. As the driver,
 * a launch giving more dynamic shared memory than its function's MAX_DYNAMIC_SHARED_SIZE_BYTES attribute
 * (48 KiB less the static bytes until cuFuncSetAttribute raises it) fails with CUDA_ERROR_INVALID_VALUE;
 * the attribute calls and the launch's bytes are recorded below. */
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void *Handle;

enum { OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NO_DEVICE = 100, INVALID_DEVICE = 101,
       INVALID_IMAGE = 200, NOT_SUPPORTED = 801 };

static int devices(void) {
    const char *v = getenv("FAKE_CUDA_DEVICES");
    return v ? atoi(v) : 1;
}

static int launches;
int fake_cuda_launches(void) { return launches; }

CUresult cuGetErrorName(CUresult e, const char **s) {
    switch (e) {
    case OK: *s = "CUDA_SUCCESS"; return OK;
    case INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; return OK;
    case OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; return OK;
    case NO_DEVICE: *s = "CUDA_ERROR_NO_DEVICE"; return OK;
    case INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; return OK;
    case INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; return OK;
    case NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; return OK;
    default: *s = 0; return INVALID_VALUE;
    }
}

CUresult cuGetErrorString(CUresult e, const char **s) {
    switch (e) {
    case NO_DEVICE: *s = "no CUDA-capable device is detected"; return OK;
    case NOT_SUPPORTED: *s = "operation not supported (fake libcuda)"; return OK;
    case INVALID_IMAGE: *s = "device kernel image is invalid"; return OK;
    default: return cuGetErrorName(e, s);
    }
}

/* NVRTC itself opens libcuda.so.1 when it can and asks for the driver's private export tables: none here. */
CUresult cuGetExportTable(const void **table, const void *id) { (void)id; *table = 0; return NOT_SUPPORTED; }

CUresult cuInit(unsigned flags) { return flags != 0 ? INVALID_VALUE : devices() > 0 ? OK : NO_DEVICE; }
CUresult cuDeviceGetCount(int *n) { *n = devices(); return OK; }
CUresult cuDeviceGet(int *dev, int ordinal) {
    if (ordinal < 0 || ordinal >= devices()) return INVALID_DEVICE;
    *dev = ordinal;
    return OK;
}
CUresult cuDeviceGetName(char *name, int len, int dev) {
    (void)dev;
    strncpy(name, "FAKE CUDA DEVICE (dsv3 test)", (size_t)len);
    name[len - 1] = 0;
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) { (void)dev; *bytes = (size_t)1 << 30; return OK; }
static int env_int(const char *name, int fallback) {
    const char *v = getenv(name);
    return v ? atoi(v) : fallback;
}
enum { SMEM_DEFAULT = 48 * 1024 };
static int smem_opt_in(void) { return env_int("FAKE_CUDA_SMEM_OPTIN", 232448); }
static int static_shared(void) { return env_int("FAKE_CUDA_STATIC_SHARED", 0); }

CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
    (void)dev;
    switch (attr) {
    case 8: *v = SMEM_DEFAULT; return OK;   /* shared memory per block */
    case 97: *v = smem_opt_in(); return OK; /* ... after opting in */
    /* compute capability: 9.0 unless FAKE_CUDA_CC says otherwise (as "major.minor") */
    case 75: *v = getenv("FAKE_CUDA_CC") ? atoi(getenv("FAKE_CUDA_CC")) : 9; return OK;
    case 76: *v = getenv("FAKE_CUDA_CC") && strchr(getenv("FAKE_CUDA_CC"), '.')
                 ? atoi(strchr(getenv("FAKE_CUDA_CC"), '.') + 1) : 0; return OK;
    case 16: *v = 132; return OK; /* multiprocessors */
    default: *v = 0; return OK;
    }
}

static int context;
CUresult cuDevicePrimaryCtxRetain(Handle *ctx, int dev) { (void)dev; *ctx = &context; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(int dev) { (void)dev; return OK; }
CUresult cuCtxSetCurrent(Handle ctx) { return ctx == &context ? OK : INVALID_VALUE; }

/* 256-byte aligned, as the driver's allocations are (and as cuBLASLt's default algorithms assume). */
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
    void *m = aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!m) return OUT_OF_MEMORY;
    *p = (CUdeviceptr)m;
    return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) { free((void *)p); return OK; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, Handle s) {
    (void)s; memcpy((void *)dst, src, n); return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, Handle s) {
    (void)s; memcpy(dst, (const void *)src, n); return OK;
}
static int record_copy(CUdeviceptr dst, CUdeviceptr src, size_t n);
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, Handle s) {
    (void)s;
    if (record_copy(dst, src, n)) return OK;
    memmove((void *)dst, (const void *)src, n);
    return OK;
}

static int module, function, stream;
CUresult cuModuleLoadData(Handle *m, const void *image) {
    if (memcmp(image, "\177ELF", 4) != 0) return INVALID_IMAGE;
    *m = &module;
    return OK;
}
CUresult cuModuleGetFunction(Handle *f, Handle m, const char *name) { (void)m; (void)name; *f = &function; return OK; }
CUresult cuModuleUnload(Handle m) { return m == &module ? OK : INVALID_VALUE; }
CUresult cuStreamCreate(Handle *s, unsigned flags) { (void)flags; *s = &stream; return OK; }
CUresult cuStreamSynchronize(Handle s) { return s == &stream ? OK : INVALID_VALUE; }
CUresult cuStreamDestroy_v2(Handle s) { return s == &stream ? OK : INVALID_VALUE; }

/* Events complete at once (the fake runs every copy when it is enqueued); counters tell which calls the
 * backend made: waits on a stream (on the device) apart from waits on the host. Only CU_EVENT_DISABLE_TIMING
 * (2) is taken: synchronisation events need no timing. */
static int event, events_live, event_waits, event_syncs, peer_copies;
int fake_cuda_events_live(void) { return events_live; }
int fake_cuda_event_waits(void) { return event_waits; }
int fake_cuda_event_syncs(void) { return event_syncs; }
int fake_cuda_peer_copies(void) { return peer_copies; }
CUresult cuEventCreate(Handle *e, unsigned flags) {
    if (flags != 2) return INVALID_VALUE;
    *e = &event;
    events_live++;
    return OK;
}
CUresult cuEventRecord(Handle e, Handle s) { return e == &event && s == &stream ? OK : INVALID_VALUE; }
CUresult cuStreamWaitEvent(Handle s, Handle e, unsigned flags) {
    if (s != &stream || e != &event || flags != 0) return INVALID_VALUE;
    event_waits++;
    return OK;
}
CUresult cuEventSynchronize(Handle e) {
    if (e != &event) return INVALID_VALUE;
    event_syncs++;
    return OK;
}
CUresult cuEventDestroy_v2(Handle e) {
    if (e != &event) return INVALID_VALUE;
    events_live--;
    return OK;
}
CUresult cuMemcpyPeerAsync(CUdeviceptr dst, Handle dst_ctx, CUdeviceptr src, Handle src_ctx, size_t n, Handle s) {
    if (s != &stream || dst_ctx != &context || src_ctx != &context) return INVALID_VALUE;
    memmove((void *)dst, (const void *)src, n);
    peer_copies++;
    return OK;
}

/* The one fake function's attribute (every module's function is the same object here): -1 until set. */
static int dynamic_max = -1, attribute_sets, last_shared = -1;
int fake_cuda_attribute_sets(void) { return attribute_sets; }
int fake_cuda_dynamic_max(void) { return dynamic_max; }
int fake_cuda_last_shared(void) { return last_shared; }
static int dynamic_allowed(void) { return dynamic_max >= 0 ? dynamic_max : SMEM_DEFAULT - static_shared(); }

CUresult cuFuncGetAttribute(int *v, int attr, Handle f) {
    if (f != &function) return INVALID_VALUE;
    switch (attr) {
    case 1: *v = static_shared(); return OK;   /* CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES */
    case 8: *v = dynamic_allowed(); return OK; /* CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES */
    default: return INVALID_VALUE;             /* the backend asks for nothing else */
    }
}
CUresult cuFuncSetAttribute(Handle f, int attr, int value) {
    if (f != &function || attr != 8) return INVALID_VALUE;
    if (value < 0 || value + static_shared() > smem_opt_in()) return INVALID_VALUE;
    dynamic_max = value;
    attribute_sets++;
    return OK;
}

#ifndef INCOMPLETE
CUresult cuLaunchKernel(Handle f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, Handle s, void **params, void **extra) {
    (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)s; (void)params; (void)extra;
    launches++;
    last_shared = (int)shared;
    if (f != &function || shared > (unsigned)dynamic_allowed()) return INVALID_VALUE;
    return NOT_SUPPORTED;
}
#endif

/* Stream capture: device copies enqueued while capturing are recorded, not run; a launch of the graph runs
 * them in order. Only the relaxed capture mode (2) is taken. FAKE_CUDA_INSTANTIATE_FAILS=1 makes
 * instantiation fail with CUDA_ERROR_OUT_OF_MEMORY. Built with -DNO_GRAPHS the entry points are absent (an
 * old driver): capture is unavailable, everything else works. */
enum { MAX_COPIES = 64 };
struct graph { CUdeviceptr dst[MAX_COPIES], src[MAX_COPIES]; size_t n[MAX_COPIES]; int count, failed; };
static struct graph *recording;
static int graphs_live, execs_live, graph_launches;
int fake_cuda_graphs_live(void) { return graphs_live; }
int fake_cuda_execs_live(void) { return execs_live; }
int fake_cuda_graph_launches(void) { return graph_launches; }

static int record_copy(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    if (!recording) return 0;
    if (recording->count == MAX_COPIES) {
        recording->failed = 1;
        return 1;
    }
    recording->dst[recording->count] = dst;
    recording->src[recording->count] = src;
    recording->n[recording->count++] = n;
    return 1;
}

#ifndef NO_GRAPHS
CUresult cuStreamBeginCapture_v2(Handle s, int mode) {
    if (s != &stream || mode != 2 || recording) return INVALID_VALUE;
    recording = calloc(1, sizeof *recording);
    return recording ? OK : OUT_OF_MEMORY;
}
CUresult cuStreamEndCapture(Handle s, struct graph **g) {
    if (s != &stream || !recording) return INVALID_VALUE;
    struct graph *done = recording;
    recording = 0;
    if (done->failed) {
        free(done);
        return INVALID_VALUE;
    }
    *g = done;
    graphs_live++;
    return OK;
}
CUresult cuGraphInstantiateWithFlags(struct graph **exec, struct graph *g, unsigned long long flags) {
    const char *fail = getenv("FAKE_CUDA_INSTANTIATE_FAILS");
    if (!g || flags != 0) return INVALID_VALUE;
    if (fail && atoi(fail)) return OUT_OF_MEMORY;
    *exec = g;
    execs_live++;
    return OK;
}
CUresult cuGraphLaunch(struct graph *exec, Handle s) {
    if (!exec || s != &stream || recording) return INVALID_VALUE;
    for (int i = 0; i < exec->count; i++) memmove((void *)exec->dst[i], (const void *)exec->src[i], exec->n[i]);
    graph_launches++;
    return OK;
}
CUresult cuGraphExecDestroy(struct graph *exec) {
    if (!exec) return INVALID_VALUE;
    execs_live--;
    return OK;
}
CUresult cuGraphDestroy(struct graph *g) {
    if (!g) return INVALID_VALUE;
    free(g);
    graphs_live--;
    return OK;
}
#endif
