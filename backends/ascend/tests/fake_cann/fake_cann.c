/*
 * A fake CANN for the Ascend backend's tests: the handful of ACL runtime, aclnn tensor and aclnnMatmul
 * entry points that `dsv3-backend-ascend` loads, implemented on host memory. The tests compile this file
 * with the system C compiler into one shared object and expose it under the real library names
 * (libascendcl.so, libnnopbase.so, libopapi.so or CANN 8's split libopapi_*.so) as symlinks to that one
 * file, so the dynamic loader maps it once and all "libraries" share this file's state.
 *
 * It is stricter than CANN where being strict checks the backend's discipline:
 *   - every runtime call needs aclInit first, and memory / stream calls need a current context;
 *   - "device" memory is only reachable through aclrtMemcpy, which checks the device side of each copy
 *     lies inside one live allocation;
 *   - aclnnMatmul only queues its work: the product is computed at aclrtSynchronizeStream, which checks
 *     that the tensor descriptors, the operands' memory and the workspace are all still alive then;
 *   - contexts, streams, allocations and descriptors are counted, and misuse (double free, a context
 *     destroyed before its streams and memory, a stream destroyed with queued work) is counted too, so
 *     the tests can assert that everything was released, in the right order.
 *
 * Behaviour switches, read from the environment at each call (tests set them in a child process):
 *   FAKE_CANN_DEVICES=n           devices reported by aclrtGetDeviceCount (default 1; 0 = none)
 *   FAKE_CANN_FAIL_INIT=1         aclInit fails
 *   FAKE_CANN_FAIL_MALLOC=1       every aclrtMalloc fails with ACL_ERROR_RT_MEMORY_ALLOCATION
 *   FAKE_CANN_MALLOC_LIMIT=bytes  aclrtMalloc of more than this fails the same way
 *   FAKE_CANN_WORKSPACE_BYTES=n   workspace aclnnMatmul asks for (default 4096, so that path runs)
 *   FAKE_CANN_FAIL_MATMUL=workspace|launch|sync
 *                                 aclnnMatmul fails in its first phase, its second phase, or
 *                                 asynchronously (the error surfaces at aclrtSynchronizeStream)
 *   FAKE_CANN_MEMORY_BYTES=n      total memory aclrtGetMemInfo reports (default 1 GiB)
 *
 * Numerics of the fake aclnnMatmul: operands decoded exactly to f32, products accumulated in f32 in
 * index order, the result rounded once to the output dtype (round to nearest even) — the contract a
 * real Atlas A2 cube unit is documented to follow (f32 accumulation), not a model of its summation order.
 */

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int aclError;
typedef int32_t aclnnStatus;

#define ACL_SUCCESS 0
#define ACL_ERROR_INVALID_PARAM 100000
#define ACL_ERROR_UNINITIALIZE 100001
#define ACL_ERROR_REPEAT_INITIALIZE 100002
#define ACL_ERROR_RT_PARAM_INVALID 107000
#define ACL_ERROR_RT_INVALID_DEVICEID 107001
#define ACL_ERROR_RT_CONTEXT_NULL 107002
#define ACL_ERROR_RT_MEMORY_ALLOCATION 207001
#define ACL_ERROR_DRV_FAILURE 500004
#define ACL_ERROR_RT_AICORE_EXCEPTION 507015
#define ACLNN_ERR_PARAM_NULLPTR 161001
#define ACLNN_ERR_PARAM_INVALID 161002
#define ACLNN_ERR_RUNTIME_ERROR 361001

enum { ACL_FLOAT = 0, ACL_FLOAT16 = 1, ACL_BF16 = 27 };
enum { ACL_FORMAT_ND = 2 };
enum {
    ACL_MEMCPY_HOST_TO_HOST = 0,
    ACL_MEMCPY_HOST_TO_DEVICE = 1,
    ACL_MEMCPY_DEVICE_TO_HOST = 2,
    ACL_MEMCPY_DEVICE_TO_DEVICE = 3
};

#define MAX_DIMS 8
#define MAX_DEVICES 8
#define MAGIC_CONTEXT 0xC0C0C0C0u
#define MAGIC_STREAM 0x5E5E5E5Eu
#define MAGIC_TENSOR 0x7E7E7E7Eu
#define MAGIC_EXECUTOR 0xE8E8E8E8u

#define EXPORT __attribute__((visibility("default")))

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int initialized;

/* ---- errors: the recent message (per thread, as CANN's), and a misuse log for the tests ---- */

static __thread char recent[512];
static __thread char recent_out[512];
static long misuse_count;
static char last_misuse[512];

static aclError fail(aclError code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(recent, sizeof recent, fmt, ap);
    va_end(ap);
    return code;
}

/* A call the real runtime would reject or misbehave on: counted so tests can assert there were none. */
static aclError misuse(aclError code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(recent, sizeof recent, fmt, ap);
    va_end(ap);
    misuse_count++;
    memcpy(last_misuse, recent, sizeof last_misuse);
    return code;
}

EXPORT const char *aclGetRecentErrMsg(void) {
    if (recent[0] == 0) return NULL;
    memcpy(recent_out, recent, sizeof recent_out);
    recent[0] = 0;
    return recent_out;
}

static long env_long(const char *name, long fallback) {
    const char *v = getenv(name);
    return (v && *v) ? strtol(v, NULL, 10) : fallback;
}

static int env_is(const char *name, const char *value) {
    const char *v = getenv(name);
    return v && strcmp(v, value) == 0;
}

/* ---- devices and contexts ---- */

typedef struct FakeContext {
    unsigned magic;
    int device;
    int live;
} FakeContext;

static long device_refs[MAX_DEVICES];
static long live_contexts;
static __thread FakeContext *current;

static int device_count(void) {
    long n = env_long("FAKE_CANN_DEVICES", 1);
    return n < 0 ? 0 : (n > MAX_DEVICES ? MAX_DEVICES : (int)n);
}

EXPORT aclError aclInit(const char *config_path) {
    (void)config_path;
    if (env_is("FAKE_CANN_FAIL_INIT", "1"))
        return fail(ACL_ERROR_DRV_FAILURE, "fake CANN: aclInit forced to fail (FAKE_CANN_FAIL_INIT=1)");
    pthread_mutex_lock(&lock);
    int again = initialized;
    initialized = 1;
    pthread_mutex_unlock(&lock);
    return again ? ACL_ERROR_REPEAT_INITIALIZE : ACL_SUCCESS;
}

EXPORT aclError aclFinalize(void) { return ACL_SUCCESS; }

EXPORT aclError aclrtGetVersion(int32_t *major, int32_t *minor, int32_t *patch) {
    if (!major || !minor || !patch) return fail(ACL_ERROR_INVALID_PARAM, "fake CANN: null version pointer");
    *major = 1;
    *minor = 0;
    *patch = 0;
    return ACL_SUCCESS;
}

EXPORT const char *aclrtGetSocName(void) { return "FAKE CANN device (test library, not Ascend hardware)"; }

EXPORT aclError aclrtGetDeviceCount(uint32_t *count) {
    if (!initialized) return misuse(ACL_ERROR_UNINITIALIZE, "fake CANN: aclrtGetDeviceCount before aclInit");
    if (!count) return fail(ACL_ERROR_INVALID_PARAM, "fake CANN: null count pointer");
    *count = (uint32_t)device_count();
    return ACL_SUCCESS;
}

EXPORT aclError aclrtSetDevice(int32_t device) {
    if (!initialized) return misuse(ACL_ERROR_UNINITIALIZE, "fake CANN: aclrtSetDevice before aclInit");
    if (device < 0 || device >= device_count())
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "fake CANN: no device %d (%d present)", device,
                    device_count());
    pthread_mutex_lock(&lock);
    device_refs[device]++;
    pthread_mutex_unlock(&lock);
    return ACL_SUCCESS;
}

EXPORT aclError aclrtResetDevice(int32_t device) {
    if (device < 0 || device >= MAX_DEVICES)
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "fake CANN: no device %d", device);
    pthread_mutex_lock(&lock);
    aclError r = ACL_SUCCESS;
    if (device_refs[device] == 0)
        r = misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: aclrtResetDevice(%d) without aclrtSetDevice", device);
    else
        device_refs[device]--;
    pthread_mutex_unlock(&lock);
    return r;
}

static int valid_context(FakeContext *c) { return c && c->magic == MAGIC_CONTEXT && c->live; }

EXPORT aclError aclrtCreateContext(void **context, int32_t device) {
    if (!initialized) return misuse(ACL_ERROR_UNINITIALIZE, "fake CANN: aclrtCreateContext before aclInit");
    if (!context) return fail(ACL_ERROR_INVALID_PARAM, "fake CANN: null context pointer");
    if (device < 0 || device >= device_count())
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "fake CANN: no device %d", device);
    FakeContext *c = calloc(1, sizeof *c);
    if (!c) return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "fake CANN: host out of memory");
    c->magic = MAGIC_CONTEXT;
    c->device = device;
    c->live = 1;
    pthread_mutex_lock(&lock);
    live_contexts++;
    pthread_mutex_unlock(&lock);
    current = c;
    *context = c;
    return ACL_SUCCESS;
}

EXPORT aclError aclrtSetCurrentContext(void *context) {
    FakeContext *c = context;
    if (!valid_context(c)) return misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: set a dead or unknown context");
    current = c;
    return ACL_SUCCESS;
}

/* Checks a call that needs a current context (memory and stream calls). */
static aclError need_context(const char *call) {
    if (!initialized) return misuse(ACL_ERROR_UNINITIALIZE, "fake CANN: %s before aclInit", call);
    if (!valid_context(current))
        return misuse(ACL_ERROR_RT_CONTEXT_NULL, "fake CANN: %s without a current context", call);
    return ACL_SUCCESS;
}

/* ---- memory ---- */

typedef struct Alloc {
    char *p;
    size_t len;
    FakeContext *ctx;
} Alloc;

static Alloc *allocs; /* live allocations only */
static size_t n_allocs, cap_allocs;

/* The live allocation holding [p, p + len), or NULL. Caller holds the lock. */
static Alloc *find_alloc(const void *p, size_t len) {
    const char *c = p;
    for (size_t i = 0; i < n_allocs; i++) {
        if (c >= allocs[i].p && c <= allocs[i].p + allocs[i].len && len <= (size_t)(allocs[i].p + allocs[i].len - c))
            return &allocs[i];
    }
    return NULL;
}

EXPORT aclError aclrtMalloc(void **dev_ptr, size_t size, int policy) {
    (void)policy;
    aclError r = need_context("aclrtMalloc");
    if (r) return r;
    if (!dev_ptr) return fail(ACL_ERROR_INVALID_PARAM, "fake CANN: null pointer for aclrtMalloc");
    if (size == 0) return fail(ACL_ERROR_INVALID_PARAM, "fake CANN: aclrtMalloc of 0 bytes");
    long limit = env_long("FAKE_CANN_MALLOC_LIMIT", -1);
    if (env_is("FAKE_CANN_FAIL_MALLOC", "1") || (limit >= 0 && size > (size_t)limit))
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "fake CANN: out of device memory allocating %zu bytes", size);
    char *p = malloc(size);
    if (!p) return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "fake CANN: host malloc of %zu bytes failed", size);
    memset(p, 0xA5, size); /* device memory is not zeroed */
    pthread_mutex_lock(&lock);
    if (n_allocs == cap_allocs) {
        size_t cap = cap_allocs ? 2 * cap_allocs : 64;
        Alloc *grown = realloc(allocs, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&lock);
            free(p);
            return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "fake CANN: host out of memory");
        }
        allocs = grown;
        cap_allocs = cap;
    }
    allocs[n_allocs++] = (Alloc){p, size, current};
    pthread_mutex_unlock(&lock);
    *dev_ptr = p;
    return ACL_SUCCESS;
}

EXPORT aclError aclrtFree(void *dev_ptr) {
    aclError r = need_context("aclrtFree");
    if (r) return r;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_allocs; i++) {
        if (allocs[i].p == dev_ptr) {
            free(allocs[i].p);
            allocs[i] = allocs[--n_allocs];
            pthread_mutex_unlock(&lock);
            return ACL_SUCCESS;
        }
    }
    r = misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: aclrtFree of %p, which is not a live allocation", dev_ptr);
    pthread_mutex_unlock(&lock);
    return r;
}

EXPORT aclError aclrtGetMemInfo(int attr, size_t *free_bytes, size_t *total_bytes) {
    (void)attr;
    aclError r = need_context("aclrtGetMemInfo");
    if (r) return r;
    if (!free_bytes || !total_bytes) return fail(ACL_ERROR_INVALID_PARAM, "fake CANN: null pointer");
    size_t total = (size_t)env_long("FAKE_CANN_MEMORY_BYTES", 1L << 30), used = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_allocs; i++) used += allocs[i].len;
    pthread_mutex_unlock(&lock);
    *total_bytes = total;
    *free_bytes = used < total ? total - used : 0;
    return ACL_SUCCESS;
}

EXPORT aclError aclrtMemcpy(void *dst, size_t dest_max, const void *src, size_t count, int kind) {
    aclError r = need_context("aclrtMemcpy");
    if (r) return r;
    if (count > dest_max)
        return fail(ACL_ERROR_INVALID_PARAM, "fake CANN: aclrtMemcpy of %zu bytes into %zu", count, dest_max);
    if (count == 0) return ACL_SUCCESS;
    int dst_dev = kind == ACL_MEMCPY_HOST_TO_DEVICE || kind == ACL_MEMCPY_DEVICE_TO_DEVICE;
    int src_dev = kind == ACL_MEMCPY_DEVICE_TO_HOST || kind == ACL_MEMCPY_DEVICE_TO_DEVICE;
    if (kind < ACL_MEMCPY_HOST_TO_HOST || kind > ACL_MEMCPY_DEVICE_TO_DEVICE)
        return misuse(ACL_ERROR_INVALID_PARAM, "fake CANN: aclrtMemcpy kind %d", kind);
    pthread_mutex_lock(&lock);
    if (dst_dev && !find_alloc(dst, count))
        r = misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: aclrtMemcpy destination %p+%zu is outside device memory", dst, count);
    else if (src_dev && !find_alloc(src, count))
        r = misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: aclrtMemcpy source %p+%zu is outside device memory", src, count);
    else
        memmove(dst, src, count);
    pthread_mutex_unlock(&lock);
    return r;
}

/* ---- tensor descriptors (libnnopbase) ---- */

typedef struct aclTensor {
    unsigned magic;
    int live;
    int ndims;
    int64_t dims[MAX_DIMS];
    int64_t strides[MAX_DIMS];
    int64_t offset;
    int64_t storage;
    int dtype;
    char *data;
} aclTensor;

static long live_tensors;

static size_t dtype_size(int dtype) {
    switch (dtype) {
    case ACL_FLOAT: return 4;
    case ACL_FLOAT16: return 2;
    case ACL_BF16: return 2;
    default: return 0;
    }
}

/* One past the last element a view can touch, in elements from the storage start. */
static int64_t view_end(const aclTensor *t) {
    int64_t end = t->offset + 1;
    for (int i = 0; i < t->ndims; i++) end += (t->dims[i] - 1) * t->strides[i];
    return end;
}

/* Descriptors are never freed, only marked dead, so that work queued on a stream can tell a descriptor
 * destroyed too early from a live one. A test process creates at most a few thousand. */
EXPORT aclTensor *aclCreateTensor(const int64_t *view_dims, uint64_t view_dims_num, int data_type,
                                  const int64_t *stride, int64_t offset, int format,
                                  const int64_t *storage_dims, uint64_t storage_dims_num, void *tensor_data) {
    if (!view_dims || !stride || view_dims_num == 0 || view_dims_num > MAX_DIMS) {
        fail(ACLNN_ERR_PARAM_INVALID, "fake CANN: aclCreateTensor needs 1..%d view dims and strides", MAX_DIMS);
        return NULL;
    }
    if (dtype_size(data_type) == 0 || format != ACL_FORMAT_ND) {
        fail(ACLNN_ERR_PARAM_INVALID, "fake CANN: aclCreateTensor dtype %d / format %d not supported by the fake",
             data_type, format);
        return NULL;
    }
    if (!storage_dims || storage_dims_num != 1 || !tensor_data) {
        fail(ACLNN_ERR_PARAM_INVALID, "fake CANN: aclCreateTensor needs 1-D storage and a data pointer");
        return NULL;
    }
    aclTensor *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->magic = MAGIC_TENSOR;
    t->live = 1;
    t->ndims = (int)view_dims_num;
    for (int i = 0; i < t->ndims; i++) {
        t->dims[i] = view_dims[i];
        t->strides[i] = stride[i];
    }
    t->offset = offset;
    t->storage = storage_dims[0];
    t->dtype = data_type;
    t->data = tensor_data;
    pthread_mutex_lock(&lock);
    live_tensors++;
    pthread_mutex_unlock(&lock);
    return t;
}

static int valid_tensor(const aclTensor *t) { return t && t->magic == MAGIC_TENSOR && t->live; }

EXPORT aclnnStatus aclDestroyTensor(const aclTensor *tensor) {
    aclTensor *t = (aclTensor *)tensor;
    pthread_mutex_lock(&lock);
    aclnnStatus r = ACL_SUCCESS;
    if (!valid_tensor(t)) {
        r = misuse(ACLNN_ERR_PARAM_INVALID, "fake CANN: aclDestroyTensor of a dead or unknown descriptor");
    } else {
        t->live = 0;
        live_tensors--;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

/* ---- streams and queued work ---- */

typedef struct Work {
    aclTensor *self, *mat2, *out;
    char *workspace;
    uint64_t workspace_size;
    int fault;
    struct Work *next;
} Work;

typedef struct FakeStream {
    unsigned magic;
    int live;
    FakeContext *ctx;
    Work *head, *tail;
} FakeStream;

static long live_streams;
static long matmul_runs;

static int valid_stream(const FakeStream *s) { return s && s->magic == MAGIC_STREAM && s->live; }

EXPORT aclError aclrtCreateStream(void **stream) {
    aclError r = need_context("aclrtCreateStream");
    if (r) return r;
    if (!stream) return fail(ACL_ERROR_INVALID_PARAM, "fake CANN: null stream pointer");
    FakeStream *s = calloc(1, sizeof *s);
    if (!s) return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "fake CANN: host out of memory");
    s->magic = MAGIC_STREAM;
    s->live = 1;
    s->ctx = current;
    pthread_mutex_lock(&lock);
    live_streams++;
    pthread_mutex_unlock(&lock);
    *stream = s;
    return ACL_SUCCESS;
}

EXPORT aclError aclrtDestroyStream(void *stream) {
    FakeStream *s = stream;
    pthread_mutex_lock(&lock);
    aclError r = ACL_SUCCESS;
    if (!valid_stream(s)) {
        r = misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: aclrtDestroyStream of a dead or unknown stream");
    } else {
        if (s->head) r = misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: stream destroyed with unfinished work");
        while (s->head) {
            Work *w = s->head;
            s->head = w->next;
            free(w);
        }
        s->live = 0; /* kept, marked dead, to recognise a later use */
        live_streams--;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

EXPORT aclError aclrtDestroyContext(void *context) {
    FakeContext *c = context;
    pthread_mutex_lock(&lock);
    aclError r = ACL_SUCCESS;
    if (!valid_context(c)) {
        r = misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: aclrtDestroyContext of a dead or unknown context");
    } else {
        for (size_t i = 0; i < n_allocs; i++)
            if (allocs[i].ctx == c) {
                r = misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: context destroyed while it owns memory");
                break;
            }
        c->live = 0;
        live_contexts--;
        if (current == c) current = NULL;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

/* ---- numerics ---- */

static float bits_to_f32(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static uint32_t f32_to_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) { /* zero or subnormal: man * 2^-24 exactly */
        float v = (float)man / 16777216.0f;
        return sign ? -v : v;
    }
    return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static uint16_t f32_to_f16(float f) {
    uint32_t b = f32_to_bits(f), sign = (b >> 16) & 0x8000;
    uint32_t exp = (b >> 23) & 0xff, man = b & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 0x1f) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) { /* subnormal or zero in f16 */
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t half = 1u << (shift - 1), rest = man & ((1u << shift) - 1), q = man >> shift;
        if (rest > half || (rest == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t q = ((uint32_t)e << 10) | (man >> 13), rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (q & 1))) q++; /* may carry into the exponent: still right */
    return (uint16_t)(sign | q);
}

static uint16_t f32_to_bf16(float f) {
    uint32_t b = f32_to_bits(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1)) >> 16);
}

static float load(const aclTensor *t, int64_t index) {
    const char *p = t->data + (size_t)index * dtype_size(t->dtype);
    uint16_t h;
    uint32_t w;
    switch (t->dtype) {
    case ACL_FLOAT16: memcpy(&h, p, 2); return f16_to_f32(h);
    case ACL_BF16: memcpy(&h, p, 2); return bits_to_f32((uint32_t)h << 16);
    default: memcpy(&w, p, 4); return bits_to_f32(w);
    }
}

static void store(const aclTensor *t, int64_t index, float v) {
    char *p = t->data + (size_t)index * dtype_size(t->dtype);
    uint16_t h;
    switch (t->dtype) {
    case ACL_FLOAT16: h = f32_to_f16(v); memcpy(p, &h, 2); break;
    case ACL_BF16: h = f32_to_bf16(v); memcpy(p, &h, 2); break;
    default: memcpy(p, &v, 4); break;
    }
}

/* The operand's bytes are in live device memory now. Caller holds the lock. */
static int reachable(const aclTensor *t) {
    size_t size = dtype_size(t->dtype);
    return find_alloc(t->data + (size_t)t->offset * size, (size_t)(view_end(t) - t->offset) * size) != NULL;
}

/* Runs one queued matmul. Caller holds the lock. */
static aclError run(const Work *w) {
    if (w->fault)
        return fail(ACL_ERROR_RT_AICORE_EXCEPTION,
                    "fake CANN: AI Core exception in aclnnMatmul (FAKE_CANN_FAIL_MATMUL=sync)");
    if (!valid_tensor(w->self) || !valid_tensor(w->mat2) || !valid_tensor(w->out))
        return misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: a tensor descriptor was destroyed before its work ran");
    if (!reachable(w->self) || !reachable(w->mat2) || !reachable(w->out))
        return misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: operand memory was freed before its work ran");
    if (w->workspace_size && !find_alloc(w->workspace, w->workspace_size))
        return misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: the workspace was freed before its work ran");
    const aclTensor *a = w->self, *b = w->mat2, *c = w->out;
    int64_t m = a->dims[0], k = a->dims[1], n = b->dims[1];
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t kk = 0; kk < k; kk++)
                acc += load(a, a->offset + i * a->strides[0] + kk * a->strides[1]) *
                       load(b, b->offset + kk * b->strides[0] + j * b->strides[1]);
            store(c, c->offset + i * c->strides[0] + j * c->strides[1], acc);
        }
    }
    matmul_runs++;
    return ACL_SUCCESS;
}

EXPORT aclError aclrtSynchronizeStream(void *stream) {
    aclError r = need_context("aclrtSynchronizeStream");
    if (r) return r;
    FakeStream *s = stream;
    pthread_mutex_lock(&lock);
    if (!valid_stream(s)) {
        r = misuse(ACL_ERROR_RT_PARAM_INVALID, "fake CANN: aclrtSynchronizeStream of a dead or unknown stream");
        pthread_mutex_unlock(&lock);
        return r;
    }
    /* Like a device, the first failure aborts the rest of the stream's work. */
    while (s->head) {
        Work *w = s->head;
        s->head = w->next;
        if (r == ACL_SUCCESS) r = run(w);
        free(w);
    }
    s->tail = NULL;
    pthread_mutex_unlock(&lock);
    return r;
}

/* ---- aclnnMatmul, two phases ---- */

typedef struct aclOpExecutor {
    unsigned magic;
    int live;
    aclTensor *self, *mat2, *out;
} aclOpExecutor;

static long live_executors;

static int fits(const aclTensor *t) {
    for (int i = 0; i < t->ndims; i++)
        if (t->dims[i] <= 0 || t->strides[i] < 0) return 0;
    return t->offset >= 0 && view_end(t) <= t->storage;
}

/* aclnnMatmul's documented dtype rule: self and mat2 share a dtype; out has it too, except that f16
 * operands may write f32. */
static int dtypes_ok(int a, int b, int out) {
    if (a != b) return 0;
    return out == a || (a == ACL_FLOAT16 && out == ACL_FLOAT);
}

EXPORT aclnnStatus aclnnMatmulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out,
                                               int8_t cube_math_type, uint64_t *workspace_size,
                                               aclOpExecutor **executor) {
    if (!initialized) return misuse(ACL_ERROR_UNINITIALIZE, "fake CANN: aclnnMatmul before aclInit");
    if (!self || !mat2 || !out || !workspace_size || !executor)
        return fail(ACLNN_ERR_PARAM_NULLPTR, "fake CANN: aclnnMatmulGetWorkspaceSize: null argument");
    if (env_is("FAKE_CANN_FAIL_MATMUL", "workspace"))
        return fail(ACLNN_ERR_PARAM_INVALID,
                    "fake CANN: aclnnMatmulGetWorkspaceSize forced to fail (FAKE_CANN_FAIL_MATMUL=workspace)");
    if (!valid_tensor(self) || !valid_tensor(mat2) || !valid_tensor(out))
        return misuse(ACLNN_ERR_PARAM_INVALID, "fake CANN: aclnnMatmul given a dead or unknown descriptor");
    if (cube_math_type < 0 || cube_math_type > 3)
        return fail(ACLNN_ERR_PARAM_INVALID, "fake CANN: cubeMathType %d", cube_math_type);
    if (self->ndims != 2 || mat2->ndims != 2 || out->ndims != 2)
        return fail(ACLNN_ERR_PARAM_INVALID, "fake CANN: the fake aclnnMatmul takes 2-D tensors only");
    if (!dtypes_ok(self->dtype, mat2->dtype, out->dtype))
        return fail(ACLNN_ERR_PARAM_INVALID, "fake CANN: aclnnMatmul dtypes self %d, mat2 %d, out %d", self->dtype,
                    mat2->dtype, out->dtype);
    if (self->dims[1] != mat2->dims[0] || out->dims[0] != self->dims[0] || out->dims[1] != mat2->dims[1])
        return fail(ACLNN_ERR_PARAM_INVALID, "fake CANN: aclnnMatmul shapes [%lld,%lld] @ [%lld,%lld] -> [%lld,%lld]",
                    (long long)self->dims[0], (long long)self->dims[1], (long long)mat2->dims[0],
                    (long long)mat2->dims[1], (long long)out->dims[0], (long long)out->dims[1]);
    if (!fits(self) || !fits(mat2) || !fits(out))
        return fail(ACLNN_ERR_PARAM_INVALID, "fake CANN: a view does not fit its storage (or has a negative stride)");
    aclOpExecutor *e = calloc(1, sizeof *e);
    if (!e) return fail(ACLNN_ERR_RUNTIME_ERROR, "fake CANN: host out of memory");
    e->magic = MAGIC_EXECUTOR;
    e->live = 1;
    e->self = (aclTensor *)self;
    e->mat2 = (aclTensor *)mat2;
    e->out = out;
    pthread_mutex_lock(&lock);
    live_executors++;
    pthread_mutex_unlock(&lock);
    long ws = env_long("FAKE_CANN_WORKSPACE_BYTES", 4096);
    *workspace_size = ws < 0 ? 0 : (uint64_t)ws;
    *executor = e;
    return ACL_SUCCESS;
}

/* The executor is single-use: this call releases it whether it succeeds or not (as CANN does for an
 * executor not made repeatable). */
EXPORT aclnnStatus aclnnMatmul(void *workspace, uint64_t workspace_size, aclOpExecutor *executor, void *stream) {
    if (!executor || executor->magic != MAGIC_EXECUTOR || !executor->live)
        return misuse(ACLNN_ERR_PARAM_INVALID, "fake CANN: aclnnMatmul with a used or unknown executor");
    pthread_mutex_lock(&lock);
    executor->live = 0;
    live_executors--;
    aclnnStatus r = ACL_SUCCESS;
    FakeStream *s = stream;
    if (env_is("FAKE_CANN_FAIL_MATMUL", "launch"))
        r = fail(ACLNN_ERR_RUNTIME_ERROR, "fake CANN: aclnnMatmul launch forced to fail (FAKE_CANN_FAIL_MATMUL=launch)");
    else if (!valid_stream(s))
        r = misuse(ACLNN_ERR_PARAM_INVALID, "fake CANN: aclnnMatmul on a dead or unknown stream");
    else if (workspace_size && !find_alloc(workspace, workspace_size))
        r = misuse(ACLNN_ERR_PARAM_INVALID, "fake CANN: aclnnMatmul workspace %p+%llu is not device memory", workspace,
                   (unsigned long long)workspace_size);
    if (r == ACL_SUCCESS) {
        Work *w = calloc(1, sizeof *w);
        if (!w) {
            r = fail(ACLNN_ERR_RUNTIME_ERROR, "fake CANN: host out of memory");
        } else {
            *w = (Work){executor->self, executor->mat2, executor->out, workspace, workspace_size,
                        env_is("FAKE_CANN_FAIL_MATMUL", "sync"), NULL};
            if (s->tail) s->tail->next = w;
            else s->head = w;
            s->tail = w;
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}

/* ---- for the tests ---- */

/* Live objects of one kind: allocations, tensors, executors, streams, contexts, device_refs. */
EXPORT long fake_cann_live(const char *what) {
    long n = -1;
    pthread_mutex_lock(&lock);
    if (strcmp(what, "allocations") == 0) n = (long)n_allocs;
    else if (strcmp(what, "tensors") == 0) n = live_tensors;
    else if (strcmp(what, "executors") == 0) n = live_executors;
    else if (strcmp(what, "streams") == 0) n = live_streams;
    else if (strcmp(what, "contexts") == 0) n = live_contexts;
    else if (strcmp(what, "device_refs") == 0) {
        n = 0;
        for (int i = 0; i < MAX_DEVICES; i++) n += device_refs[i];
    }
    pthread_mutex_unlock(&lock);
    return n;
}

EXPORT long fake_cann_misuse_count(void) { return misuse_count; }

EXPORT const char *fake_cann_last_misuse(void) { return last_misuse; }

/* Matmuls actually computed (at synchronisation). */
EXPORT long fake_cann_matmul_runs(void) { return matmul_runs; }
