/* A fake libamdhip64 (with hiprtc in it, as ROCm 5 has) for dsv3's tests: enough of the HIP runtime for
 * the HIP backend's host side to run without a GPU.
 *
 * FAKE_HIP_DEVICES=0: hipInit and hipGetDeviceCount fail with hipErrorNoDevice. Otherwise one "device"
 * whose memory is host memory (at most 1 GiB per allocation), with architecture $FAKE_HIP_ARCH (default
 * gfx90a:sramecc+:xnack-, written into the properties struct where ROCm 6 puts it) and wavefront
 * $FAKE_HIP_WARP (default 64); it accepts any ELF image as a module and refuses every launch with
 * hipErrorNotSupported. hipRuntimeGetVersion reports $FAKE_HIP_VERSION (default 60241134, ROCm 6.2; "none"
 * writes nothing, as Debian's ROCm 5.2 does without a GPU).
 *
 * The fake hiprtc (whose ROCm version is therefore the runtime's: the file name has none) aborts the process
 * for an architecture not in $FAKE_HIPRTC_KNOWS (default gfx90a) as the real one does, and otherwise fails
 * every compilation with HIPRTC_ERROR_COMPILATION and a log.
 *
 * Built with -DINCOMPLETE it lacks hipModuleLaunchKernel (an old or foreign library). fake_hip_launches()
 * counts launch attempts, fake_hip_modules() the modules loaded and not unloaded; the event and peer-copy
 * counters are below, and the graph counters after them.
 *
 * Shared memory is a CDNA workgroup's LDS: $FAKE_HIP_LDS bytes per block (default 65536), static
 * ($FAKE_HIP_STATIC_SHARED, default 0, every function's) and dynamic together, with nothing to opt in to; a
 * launch past it fails with hipErrorInvalidValue, and fake_hip_last_shared() is the last launch's dynamic
 * bytes. hipFuncSetAttribute exists, as in ROCm, and counts its calls (fake_hip_attribute_sets): the
 * backend has no reason to make one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int hipError_t;
typedef void *Handle;

enum { OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NO_DEVICE = 100, INVALID_DEVICE = 101,
       INVALID_IMAGE = 200, INVALID_HANDLE = 400, NOT_SUPPORTED = 801 };

static int devices(void) {
    const char *v = getenv("FAKE_HIP_DEVICES");
    return v ? atoi(v) : 1;
}
static const char *arch(void) {
    const char *v = getenv("FAKE_HIP_ARCH");
    return v ? v : "gfx90a:sramecc+:xnack-";
}

static int launches, modules;
int fake_hip_launches(void) { return launches; }
int fake_hip_modules(void) { return modules; }

const char *hipGetErrorName(hipError_t e) {
    switch (e) {
    case OK: return "hipSuccess";
    case INVALID_VALUE: return "hipErrorInvalidValue";
    case OUT_OF_MEMORY: return "hipErrorOutOfMemory";
    case NO_DEVICE: return "hipErrorNoDevice";
    case INVALID_DEVICE: return "hipErrorInvalidDevice";
    case INVALID_IMAGE: return "hipErrorInvalidImage";
    case INVALID_HANDLE: return "hipErrorInvalidHandle";
    case NOT_SUPPORTED: return "hipErrorNotSupported";
    default: return "hipErrorUnknown";
    }
}
const char *hipGetErrorString(hipError_t e) {
    switch (e) {
    case NO_DEVICE: return "no ROCm-capable device is detected";
    case NOT_SUPPORTED: return "operation not supported (fake libamdhip64)";
    default: return hipGetErrorName(e);
    }
}

hipError_t hipInit(unsigned flags) { return flags != 0 ? INVALID_VALUE : devices() > 0 ? OK : NO_DEVICE; }
hipError_t hipRuntimeGetVersion(int *v) {
    const char *s = getenv("FAKE_HIP_VERSION");
    if (s && strcmp(s, "none") == 0) return OK;
    *v = s ? atoi(s) : 60241134;
    return OK;
}
hipError_t hipGetDeviceCount(int *n) {
    *n = devices() > 0 ? devices() : 0;
    return *n > 0 ? OK : NO_DEVICE;
}
hipError_t hipDeviceGet(int *dev, int ordinal) {
    if (ordinal < 0 || ordinal >= devices()) return INVALID_DEVICE;
    *dev = ordinal;
    return OK;
}
hipError_t hipDeviceGetName(char *name, int len, int dev) {
    if (dev < 0 || dev >= devices() || len <= 0) return INVALID_VALUE;
    strncpy(name, "FAKE HIP DEVICE (dsv3 test)", (size_t)len);
    name[len - 1] = 0;
    return OK;
}
hipError_t hipDeviceTotalMem(size_t *bytes, int dev) {
    if (dev < 0 || dev >= devices()) return INVALID_DEVICE;
    *bytes = (size_t)1 << 30;
    return OK;
}
static int lds(void) { return getenv("FAKE_HIP_LDS") ? atoi(getenv("FAKE_HIP_LDS")) : 65536; }
static int static_shared(void) {
    return getenv("FAKE_HIP_STATIC_SHARED") ? atoi(getenv("FAKE_HIP_STATIC_SHARED")) : 0;
}

hipError_t hipDeviceGetAttribute(int *v, int attr, int dev) {
    if (dev < 0 || dev >= devices()) return INVALID_DEVICE;
    const char *w = getenv("FAKE_HIP_WARP");
    switch (attr) {
    case 63: *v = 104; return OK;              /* multiprocessor count */
    case 74: *v = lds(); return OK;            /* shared memory per block */
    case 87: *v = w ? atoi(w) : 64; return OK; /* warp size */
    default: return INVALID_VALUE;              /* the backend asks for nothing else */
    }
}
/* ROCm 6's layout in outline: the name first, numbers (non-zero bytes) in between, gcnArchName at 1160,
 * 1472 bytes in all. */
hipError_t hipGetDevicePropertiesR0600(void *props, int dev) {
    if (dev < 0 || dev >= devices()) return INVALID_DEVICE;
    unsigned char *p = props;
    memset(p, 0, 1472);
    strcpy((char *)p, "FAKE HIP DEVICE (dsv3 test)");
    for (int i = 256; i < 1160; i++) p[i] = (unsigned char)(i * 37 % 251);
    strncpy((char *)p + 1160, arch(), 255);
    return OK;
}

/* The backend makes its device current before using it (real HIP defaults to device 0; this fake insists). */
static int current = -1;
hipError_t hipSetDevice(int ordinal) {
    if (ordinal < 0 || ordinal >= devices()) return INVALID_DEVICE;
    current = ordinal;
    return OK;
}

hipError_t hipMalloc(void **p, size_t bytes) {
    if (current < 0) return INVALID_DEVICE;
    if (bytes > ((size_t)1 << 30)) return OUT_OF_MEMORY;
    *p = malloc(bytes);
    return *p ? OK : OUT_OF_MEMORY;
}
hipError_t hipFree(void *p) { free(p); return OK; }

static int stream;
hipError_t hipMemcpyHtoDAsync(void *dst, const void *src, size_t n, Handle s) {
    if (s != &stream) return INVALID_HANDLE;
    memcpy(dst, src, n);
    return OK;
}
hipError_t hipMemcpyDtoHAsync(void *dst, void *src, size_t n, Handle s) {
    if (s != &stream) return INVALID_HANDLE;
    memcpy(dst, src, n);
    return OK;
}
static int record_copy(void *dst, void *src, size_t n);
hipError_t hipMemcpyDtoDAsync(void *dst, void *src, size_t n, Handle s) {
    if (s != &stream) return INVALID_HANDLE;
    if (record_copy(dst, src, n)) return OK;
    memmove(dst, src, n);
    return OK;
}
/* The backend's streams must not synchronise with the null stream: only hipStreamNonBlocking (1) is taken. */
hipError_t hipStreamCreateWithFlags(Handle *s, unsigned flags) {
    if (flags != 1) return INVALID_VALUE;
    *s = &stream;
    return OK;
}
hipError_t hipStreamSynchronize(Handle s) { return s == &stream ? OK : INVALID_HANDLE; }
hipError_t hipStreamDestroy(Handle s) { return s == &stream ? OK : INVALID_HANDLE; }

/* Events complete at once (the fake runs every copy when it is enqueued); counters tell which calls the
 * backend made: waits on a stream (on the device) apart from waits on the host. Only hipEventDisableTiming
 * (2) is taken: synchronisation events need no timing. */
static int event, events_live, event_waits, event_syncs, peer_copies;
int fake_hip_events_live(void) { return events_live; }
int fake_hip_event_waits(void) { return event_waits; }
int fake_hip_event_syncs(void) { return event_syncs; }
int fake_hip_peer_copies(void) { return peer_copies; }
hipError_t hipEventCreateWithFlags(Handle *e, unsigned flags) {
    if (flags != 2) return INVALID_VALUE;
    *e = &event;
    events_live++;
    return OK;
}
hipError_t hipEventRecord(Handle e, Handle s) { return e == &event && s == &stream ? OK : INVALID_HANDLE; }
hipError_t hipStreamWaitEvent(Handle s, Handle e, unsigned flags) {
    if (s != &stream || e != &event) return INVALID_HANDLE;
    if (flags != 0) return INVALID_VALUE;
    event_waits++;
    return OK;
}
hipError_t hipEventSynchronize(Handle e) {
    if (e != &event) return INVALID_HANDLE;
    event_syncs++;
    return OK;
}
hipError_t hipEventDestroy(Handle e) {
    if (e != &event) return INVALID_HANDLE;
    events_live--;
    return OK;
}
hipError_t hipMemcpyPeerAsync(void *dst, int dst_dev, const void *src, int src_dev, size_t n, Handle s) {
    if (s != &stream) return INVALID_HANDLE;
    if (dst_dev < 0 || dst_dev >= devices() || src_dev < 0 || src_dev >= devices()) return INVALID_DEVICE;
    memmove(dst, src, n);
    peer_copies++;
    return OK;
}

static int module, function;
hipError_t hipModuleLoadData(Handle *m, const void *image) {
    if (memcmp(image, "\177ELF", 4) != 0) return INVALID_IMAGE;
    *m = &module;
    modules++;
    return OK;
}
hipError_t hipModuleGetFunction(Handle *f, Handle m, const char *name) {
    (void)name;
    if (m != &module) return INVALID_HANDLE;
    *f = &function;
    return OK;
}
hipError_t hipModuleUnload(Handle m) {
    if (m != &module) return INVALID_HANDLE;
    modules--;
    return OK;
}

static int last_shared = -1, attribute_sets;
int fake_hip_last_shared(void) { return last_shared; }
int fake_hip_attribute_sets(void) { return attribute_sets; }
/* hipFunction_attribute: HIP_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES is 1. */
hipError_t hipFuncGetAttribute(int *v, int attr, Handle f) {
    if (f != &function) return INVALID_HANDLE;
    if (attr != 1) return INVALID_VALUE; /* the backend asks for nothing else */
    *v = static_shared();
    return OK;
}
/* ROCm's takes a host function and ignores the attribute on AMD devices. */
hipError_t hipFuncSetAttribute(const void *f, int attr, int value) {
    (void)f; (void)attr; (void)value;
    attribute_sets++;
    return OK;
}

#ifndef INCOMPLETE
/* Parameters go as CUDA's do: kernelParams[0] points at the kernel's one (struct) parameter, no `extra`. */
hipError_t hipModuleLaunchKernel(Handle f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                 unsigned bz, unsigned shared, Handle s, void **params, void **extra) {
    launches++;
    last_shared = (int)shared;
    if (f != &function || s != &stream || !params || !params[0] || extra) return INVALID_VALUE;
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || bx > 1024 || by != 1 || bz != 1) return INVALID_VALUE;
    if ((long long)shared + static_shared() > lds()) return INVALID_VALUE;
    return NOT_SUPPORTED;
}
#endif

/* ---- hiprtc ---- */

enum { RTC_OK = 0, RTC_INVALID_INPUT = 3, RTC_INVALID_PROGRAM = 4, RTC_COMPILATION = 6 };
static int program;
static const char LOG[] = "fake hiprtc: this library compiles nothing (dsv3 test)";

const char *hiprtcGetErrorString(int r) {
    switch (r) {
    case RTC_OK: return "HIPRTC_SUCCESS";
    case RTC_INVALID_INPUT: return "HIPRTC_ERROR_INVALID_INPUT";
    case RTC_INVALID_PROGRAM: return "HIPRTC_ERROR_INVALID_PROGRAM";
    case RTC_COMPILATION: return "HIPRTC_ERROR_COMPILATION";
    default: return "HIPRTC_ERROR_INTERNAL_ERROR";
    }
}
int hiprtcCreateProgram(Handle *p, const char *src, const char *name, int n, const char **headers,
                        const char **names) {
    (void)headers; (void)names;
    if (!src || !name || n != 0) return RTC_INVALID_INPUT;
    *p = &program;
    return RTC_OK;
}
int hiprtcCompileProgram(Handle p, int n, const char **opts) {
    if (p != &program) return RTC_INVALID_PROGRAM;
    const char *knows = getenv("FAKE_HIPRTC_KNOWS");
    if (!knows) knows = "gfx90a";
    for (int i = 0; i < n; i++) {
        if (strncmp(opts[i], "--offload-arch=", 15) != 0) continue;
        char base[32] = {0};
        sscanf(opts[i] + 15, "%31[^:]", base);
        if (!strstr(knows, base)) {
            fprintf(stderr, "fake hiprtc: unknown architecture %s: aborting, as hiprtc does\n", base);
            abort();
        }
    }
    return RTC_COMPILATION;
}
int hiprtcDestroyProgram(Handle *p) {
    if (!p || *p != &program) return RTC_INVALID_PROGRAM;
    *p = 0;
    return RTC_OK;
}
int hiprtcGetProgramLogSize(Handle p, size_t *n) {
    if (p != &program) return RTC_INVALID_PROGRAM;
    *n = sizeof LOG;
    return RTC_OK;
}
int hiprtcGetProgramLog(Handle p, char *log) {
    if (p != &program) return RTC_INVALID_PROGRAM;
    memcpy(log, LOG, sizeof LOG);
    return RTC_OK;
}
int hiprtcGetCodeSize(Handle p, size_t *n) { (void)p; (void)n; return RTC_INVALID_PROGRAM; }
int hiprtcGetCode(Handle p, char *code) { (void)p; (void)code; return RTC_INVALID_PROGRAM; }

/* Stream capture: device copies enqueued while capturing are recorded, not run; a launch of the graph runs
 * them in order. Only the relaxed capture mode (2) is taken. FAKE_HIP_INSTANTIATE_FAILS=1 makes
 * hipGraphInstantiate fail with hipErrorOutOfMemory. Built with -DNO_GRAPHS the entry points are absent (an
 * old ROCm): capture is unavailable, everything else works. */
enum { MAX_COPIES = 64 };
struct graph { void *dst[MAX_COPIES], *src[MAX_COPIES]; size_t n[MAX_COPIES]; int count, failed; };
static struct graph *recording;
static int graphs_live, execs_live, graph_launches;
int fake_hip_graphs_live(void) { return graphs_live; }
int fake_hip_execs_live(void) { return execs_live; }
int fake_hip_graph_launches(void) { return graph_launches; }

static int record_copy(void *dst, void *src, size_t n) {
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
hipError_t hipStreamBeginCapture(Handle s, int mode) {
    if (s != &stream || mode != 2 || recording) return INVALID_VALUE;
    recording = calloc(1, sizeof *recording);
    return recording ? OK : OUT_OF_MEMORY;
}
hipError_t hipStreamEndCapture(Handle s, struct graph **g) {
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
hipError_t hipGraphInstantiate(struct graph **exec, struct graph *g, Handle *error_node, char *log, size_t log_size) {
    const char *fail = getenv("FAKE_HIP_INSTANTIATE_FAILS");
    (void)error_node; (void)log; (void)log_size;
    if (!g) return INVALID_VALUE;
    if (fail && atoi(fail)) return OUT_OF_MEMORY;
    *exec = g;
    execs_live++;
    return OK;
}
hipError_t hipGraphLaunch(struct graph *exec, Handle s) {
    if (!exec || s != &stream || recording) return INVALID_VALUE;
    for (int i = 0; i < exec->count; i++) memmove(exec->dst[i], exec->src[i], exec->n[i]);
    graph_launches++;
    return OK;
}
hipError_t hipGraphExecDestroy(struct graph *exec) {
    if (!exec) return INVALID_VALUE;
    execs_live--;
    return OK;
}
hipError_t hipGraphDestroy(struct graph *g) {
    if (!g) return INVALID_VALUE;
    free(g);
    graphs_live--;
    return OK;
}
#endif
