/* A fake libcublasLt for dsv3's tests, next to the fake libcuda (whose "device" memory is host memory):
 * it computes what it is asked on the host, with cuBLASLt's documented semantics (column-major layouts,
 * transposes, f32 accumulation, VEC128_32F scales M-major and BLK128x128_32F scales K-block-major with
 * rows padded to 4), so a wrong layout, transpose, leading dimension or scale wiring gives wrong numbers.
 * It records what it was given — fake_lt("key") reads a recorded value or a counter — and
 * FAKE_CUBLASLT_FAIL=<entry point> makes that call fail with CUBLAS_STATUS_NOT_SUPPORTED.
 * FAKE_CUBLASLT_VERSION (default 120900) is what cublasLtGetVersion reports; FAKE_CUBLASLT_WORKSPACE
 * (default 1000) the workspace its heuristic's algorithm needs; FAKE_CUBLASLT_NO_ALGO=1 finds none.
 * Built with -DINCOMPLETE it lacks cublasLtMatrixTransform. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int Status;
enum { OK = 0, INVALID_VALUE = 7, NOT_SUPPORTED = 15 };
enum { R_32F = 0, R_16BF = 14, R_8F_E4M3 = 28 };

static int fails(const char *call) {
    const char *v = getenv("FAKE_CUBLASLT_FAIL");
    return v && strcmp(v, call) == 0;
}
#define FAIL_IF(call) if (fails(call)) return NOT_SUPPORTED

typedef struct { int type; uint64_t rows, cols; int64_t ld; } Layout;
typedef struct { int compute, scale, transa, transb, a_mode, b_mode; const void *a_scale, *b_scale; } Desc;
typedef struct { int transa; } TDesc;

/* What was recorded, by name. */
static struct {
    long long handles, descs, layouts, prefs, tdescs, matmuls, transforms, heuristics;
    long long transa, transb, a_mode, b_mode, a_scale, b_scale, compute, scale_type;
    long long a_type, a_rows, a_cols, a_ld, b_type, b_rows, b_cols, b_ld, c_rows, c_cols, c_ld, d_type, d_ld;
    long long workspace, workspace_size, stream, max_workspace, min_alignment, c_is_d;
    long long t_transa, t_src, t_dst, t_rows, t_cols, t_ld;
} rec;

long long fake_lt(const char *key) {
#define KEY(k) if (strcmp(key, #k) == 0) return rec.k
    KEY(handles); KEY(descs); KEY(layouts); KEY(prefs); KEY(tdescs); KEY(matmuls); KEY(transforms);
    KEY(heuristics); KEY(transa); KEY(transb); KEY(a_mode); KEY(b_mode); KEY(a_scale); KEY(b_scale);
    KEY(compute); KEY(scale_type); KEY(a_type); KEY(a_rows); KEY(a_cols); KEY(a_ld); KEY(b_type);
    KEY(b_rows); KEY(b_cols); KEY(b_ld); KEY(c_rows); KEY(c_cols); KEY(c_ld); KEY(d_type); KEY(d_ld);
    KEY(workspace); KEY(workspace_size); KEY(stream); KEY(max_workspace); KEY(min_alignment); KEY(c_is_d); KEY(t_transa);
    KEY(t_src); KEY(t_dst); KEY(t_rows); KEY(t_cols); KEY(t_ld);
#undef KEY
    abort(); /* a key the test misspelt */
}

size_t cublasLtGetVersion(void) {
    const char *v = getenv("FAKE_CUBLASLT_VERSION");
    return v ? (size_t)atol(v) : 120900;
}
const char *cublasLtGetStatusName(Status s) {
    return s == OK ? "CUBLAS_STATUS_SUCCESS" : s == NOT_SUPPORTED ? "CUBLAS_STATUS_NOT_SUPPORTED"
         : s == INVALID_VALUE ? "CUBLAS_STATUS_INVALID_VALUE" : 0;
}
const char *cublasLtGetStatusString(Status s) {
    return s == NOT_SUPPORTED ? "the functionality requested is not supported (fake cuBLASLt)" : cublasLtGetStatusName(s);
}

static int handle;
Status cublasLtCreate(void **h) { FAIL_IF("cublasLtCreate"); *h = &handle; rec.handles++; return OK; }
Status cublasLtDestroy(void *h) { if (h != &handle) return INVALID_VALUE; rec.handles--; return OK; }

Status cublasLtMatmulDescCreate(Desc **d, int compute, int scale) {
    FAIL_IF("cublasLtMatmulDescCreate");
    *d = calloc(1, sizeof(Desc));
    (*d)->compute = compute;
    (*d)->scale = scale;
    rec.descs++;
    return OK;
}
Status cublasLtMatmulDescSetAttribute(Desc *d, int attr, const void *buf, size_t size) {
    FAIL_IF("cublasLtMatmulDescSetAttribute");
    int32_t i = size == 4 ? *(const int32_t *)buf : 0;
    const void *p = size == 8 ? *(const void *const *)buf : 0;
    switch (attr) {
    case 3: if (size != 4) return INVALID_VALUE; d->transa = i; return OK;
    case 4: if (size != 4) return INVALID_VALUE; d->transb = i; return OK;
    case 17: if (size != 8) return INVALID_VALUE; d->a_scale = p; return OK;
    case 18: if (size != 8) return INVALID_VALUE; d->b_scale = p; return OK;
    case 31: if (size != 4) return INVALID_VALUE; d->a_mode = i; return OK;
    case 32: if (size != 4) return INVALID_VALUE; d->b_mode = i; return OK;
    default: return INVALID_VALUE;
    }
}
Status cublasLtMatmulDescDestroy(Desc *d) { free(d); rec.descs--; return OK; }

Status cublasLtMatrixLayoutCreate(Layout **l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    FAIL_IF("cublasLtMatrixLayoutCreate");
    if (ld < (int64_t)rows) return INVALID_VALUE;
    *l = malloc(sizeof(Layout));
    **l = (Layout){type, rows, cols, ld};
    rec.layouts++;
    return OK;
}
Status cublasLtMatrixLayoutDestroy(Layout *l) { free(l); rec.layouts--; return OK; }

/* The minimum alignments of A, B, C and D the caller promised (cuBLASLt's default 256); the algorithm the
 * heuristic returns carries them, and the matmul refuses operands less aligned than that. */
static int preference;
static uint32_t alignment[4];
Status cublasLtMatmulPreferenceCreate(void **p) {
    FAIL_IF("cublasLtMatmulPreferenceCreate");
    *p = &preference;
    for (int i = 0; i < 4; i++) alignment[i] = 256;
    rec.prefs++;
    return OK;
}
Status cublasLtMatmulPreferenceSetAttribute(void *p, int attr, const void *buf, size_t size) {
    FAIL_IF("cublasLtMatmulPreferenceSetAttribute");
    if (p != &preference) return INVALID_VALUE;
    if (attr == 1 && size == 8) { rec.max_workspace = (long long)*(const uint64_t *)buf; return OK; }
    if (attr >= 5 && attr <= 8 && size == 4) { alignment[attr - 5] = *(const uint32_t *)buf; return OK; }
    return INVALID_VALUE;
}
Status cublasLtMatmulPreferenceDestroy(void *p) { (void)p; rec.prefs--; return OK; }

typedef struct { uint64_t algo[8]; size_t workspace; Status state; float waves; int reserved[4]; } Heuristic;
static size_t needed_workspace(void) {
    const char *v = getenv("FAKE_CUBLASLT_WORKSPACE");
    return v ? (size_t)atol(v) : 1000;
}

Status cublasLtMatmulAlgoGetHeuristic(void *h, Desc *d, Layout *a, Layout *b, Layout *c, Layout *dd, void *pref,
                                      int requested, Heuristic *out, int *found) {
    FAIL_IF("cublasLtMatmulAlgoGetHeuristic");
    (void)d; (void)a; (void)b; (void)c; (void)dd;
    if (h != &handle || pref != &preference || requested < 1) return INVALID_VALUE;
    rec.heuristics++;
    if (getenv("FAKE_CUBLASLT_NO_ALGO")) { *found = 0; return OK; }
    memset(out, 0, sizeof *out);
    out->algo[0] = 0xa190;
    for (int i = 0; i < 4; i++) out->algo[1 + i] = alignment[i];
    rec.min_alignment = alignment[0] == alignment[1] && alignment[1] == alignment[2] && alignment[2] == alignment[3]
        ? (long long)alignment[0] : -1;
    out->workspace = needed_workspace();
    *found = 1;
    return OK;
}

static float bf16(uint16_t v) { uint32_t u = (uint32_t)v << 16; float f; memcpy(&f, &u, 4); return f; }
static uint16_t to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16); /* nearest even; inputs here are finite */
}
static float e4m3(uint8_t v) {
    int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    float x = e ? (1 + m / 8.0f) * (float)(1 << e) / 128.0f : m / 512.0f; /* 2^(e-7), subnormals 2^-6·m/8 */
    return s ? -x : x;
}
static float load(const Layout *l, const void *p, uint64_t r, uint64_t c) {
    size_t i = (size_t)(r + c * (uint64_t)l->ld);
    switch (l->type) {
    case R_16BF: return bf16(((const uint16_t *)p)[i]);
    case R_8F_E4M3: return e4m3(((const uint8_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}
/* op(X)(r, c) of a stored matrix. */
static float op_load(const Layout *l, const void *p, int trans, uint64_t r, uint64_t c) {
    return trans ? load(l, p, c, r) : load(l, p, r, c);
}

Status cublasLtMatmul(void *h, Desc *d, const float *alpha, const void *A, Layout *la, const void *B, Layout *lb,
                      const float *beta, const void *C, Layout *lc, void *D, Layout *ld, const uint64_t *algo,
                      void *workspace, size_t workspace_size, void *stream) {
    FAIL_IF("cublasLtMatmul");
    if (h != &handle || !algo || algo[0] != 0xa190 || *beta != 0) return INVALID_VALUE;
    uint64_t m = d->transa ? la->cols : la->rows, k = d->transa ? la->rows : la->cols;
    uint64_t kb = d->transb ? lb->cols : lb->rows, n = d->transb ? lb->rows : lb->cols;
    if (k != kb || ld->rows != m || ld->cols != n || lc->rows != m || lc->cols != n) return INVALID_VALUE;
    if (workspace_size < needed_workspace() || (workspace_size && !workspace)) return INVALID_VALUE;
    const void *ptrs[4] = {A, B, C, D};
    for (int i = 0; i < 4; i++)
        if ((uintptr_t)ptrs[i] % algo[1 + i]) return NOT_SUPPORTED; /* less aligned than the algorithm needs */
    int blocked = d->a_mode == 5 && d->b_mode == 4;
    if ((d->a_mode || d->b_mode) && !(blocked && d->transa && !d->transb && d->a_scale && d->b_scale))
        return NOT_SUPPORTED; /* only the TN block-scaled form is modelled */
    rec.matmuls++;
    rec.transa = d->transa; rec.transb = d->transb; rec.a_mode = d->a_mode; rec.b_mode = d->b_mode;
    rec.a_scale = (long long)(uintptr_t)d->a_scale; rec.b_scale = (long long)(uintptr_t)d->b_scale;
    rec.compute = d->compute; rec.scale_type = d->scale;
    rec.a_type = la->type; rec.a_rows = la->rows; rec.a_cols = la->cols; rec.a_ld = la->ld;
    rec.b_type = lb->type; rec.b_rows = lb->rows; rec.b_cols = lb->cols; rec.b_ld = lb->ld;
    rec.c_rows = lc->rows; rec.c_cols = lc->cols; rec.c_ld = lc->ld; rec.d_type = ld->type; rec.d_ld = ld->ld;
    rec.workspace = (long long)(uintptr_t)workspace; rec.workspace_size = (long long)workspace_size;
    rec.stream = (long long)(uintptr_t)stream; rec.c_is_d = C == D;
    uint64_t kblocks = (k + 127) / 128, row = (kblocks + 3) / 4 * 4;
    for (uint64_t j = 0; j < n; j++) {
        for (uint64_t i = 0; i < m; i++) {
            float total = 0;
            for (uint64_t b0 = 0; b0 < k; b0 += 128) {
                float sum = 0;
                for (uint64_t x = b0; x < k && x < b0 + 128; x++)
                    sum += op_load(la, A, d->transa, i, x) * op_load(lb, B, d->transb, x, j);
                if (blocked)
                    sum *= ((const float *)d->a_scale)[b0 / 128 + (i / 128) * row] *
                           ((const float *)d->b_scale)[(b0 / 128) * n + j];
                total += sum;
            }
            total *= *alpha;
            size_t at = (size_t)(i + j * (uint64_t)ld->ld);
            if (ld->type == R_16BF) ((uint16_t *)D)[at] = to_bf16(total);
            else ((float *)D)[at] = total;
        }
    }
    return OK;
}

Status cublasLtMatrixTransformDescCreate(TDesc **d, int scale) {
    FAIL_IF("cublasLtMatrixTransformDescCreate");
    if (scale != R_32F) return INVALID_VALUE;
    *d = calloc(1, sizeof(TDesc));
    rec.tdescs++;
    return OK;
}
Status cublasLtMatrixTransformDescSetAttribute(TDesc *d, int attr, const void *buf, size_t size) {
    FAIL_IF("cublasLtMatrixTransformDescSetAttribute");
    if (attr != 2 || size != 4) return INVALID_VALUE;
    d->transa = *(const int32_t *)buf;
    return OK;
}
Status cublasLtMatrixTransformDescDestroy(TDesc *d) { free(d); rec.tdescs--; return OK; }

#ifndef INCOMPLETE
Status cublasLtMatrixTransform(void *h, TDesc *d, const float *alpha, const void *A, Layout *la, const float *beta,
                               const void *B, Layout *lb, void *C, Layout *lc, void *stream) {
    FAIL_IF("cublasLtMatrixTransform");
    (void)stream;
    if (h != &handle || *beta != 0 || B || lb || la->type != R_32F || lc->type != R_32F) return INVALID_VALUE;
    if ((d->transa ? la->cols : la->rows) != lc->rows || (d->transa ? la->rows : la->cols) != lc->cols)
        return INVALID_VALUE;
    rec.transforms++;
    rec.t_transa = d->transa; rec.t_src = (long long)(uintptr_t)A; rec.t_dst = (long long)(uintptr_t)C;
    rec.t_rows = lc->rows; rec.t_cols = lc->cols; rec.t_ld = lc->ld;
    for (uint64_t j = 0; j < lc->cols; j++)
        for (uint64_t i = 0; i < lc->rows; i++)
            ((float *)C)[i + j * (uint64_t)lc->ld] = *alpha * op_load(la, A, d->transa, i, j);
    return OK;
}
#endif
