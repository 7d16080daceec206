/* testutil_dit: what the transformer tests (test_flux, test_sd3) share: reference tensors moved
 * to the device under test, the error against them, and a writer that renames a diffusers
 * checkpoint into an original layout (fused row ranges, swapped halves) to check the loaders'
 * other naming. Header-only; include after testutil.h. */
#ifndef TESTS_TESTUTIL_DIT_H
#define TESTS_TESTUTIL_DIT_H

#include "core/cuda/gpu.h"
#include "core/safetensors.h"
#include "df11/weights.h"
#include "tests/testutil.h"

/* F32 reference values as an activation tensor: host F32, or device BF16 (rounded, as the
 * bf16 pipeline holds them); free with tu_dev_free */
static inline tensor tu_to_dev(const st_tensor *t, int gpu) {
    int64_t shape[4] = {1, 1, 1, 1};
    for (int d = 0; d < t->ndim; d++)
        shape[d] = t->shape[d];
    const int64_t n = (int64_t)t->numel;
    if (!gpu) {
        float *v = malloc((size_t)n * 4);
        CHECK(v);
        memcpy(v, t->data, (size_t)n * 4);
        return tensor_make(v, DTYPE_F32, TENSOR_CPU, t->ndim, shape);
    }
    uint16_t *b = malloc((size_t)n * 2);
    void *d = NULL;
    CHECK(b && !gpu_alloc(&d, (size_t)n * 2));
    for (int64_t i = 0; i < n; i++)
        b[i] = tu_bf16(((const float *)t->data)[i]);
    CHECK(!gpu_upload(d, b, (size_t)n * 2));
    free(b);
    return tensor_make(d, DTYPE_BF16, TENSOR_CUDA, t->ndim, shape);
}

static inline void tu_dev_free(tensor t, int gpu) {
    if (gpu)
        gpu_free(t.data);
    else
        free(t.data);
}

/* relative L2 error and max abs difference of got against the F32 reference */
static inline double tu_rel_l2(const tu_result *got, const st_tensor *want, double *max_abs) {
    const float *w = (const float *)want->data;
    double d2 = 0, r2 = 0, mx = 0;
    for (int64_t i = 0; i < got->n; i++) {
        const double d = (double)got->v[i] - w[i];
        d2 += d * d, r2 += (double)w[i] * w[i], mx = fmax(mx, fabs(d));
    }
    *max_abs = mx;
    return sqrt(d2 / r2);
}

/* A checkpoint written under other names from a diffusers one (src). */
typedef struct tu_renamer {
    wt_source *src;
    st_writer *w;
    const char *prefix; /* before every name written */
    void *bufs[512];    /* st_writer borrows the data until st_writer_finish */
    int n_bufs, used;   /* used: source tensors written */
    err e;
} tu_renamer;

/* out.weight and out.bias = the rows of srcs[0..n)'s .weight and .bias one after another (a
 * fused tensor); swap: one source, its two halves exchanged */
static inline void tu_rename_linear(tu_renamer *r, const char *out, const char *const *srcs, int n,
                                    int swap) {
    static const char *const kind[] = {".weight", ".bias"};
    for (int k = 0; k < 2 && !r->e; k++) {
        const df11_tensor *t[4];
        uint64_t bytes = 0;
        int64_t rows = 0;
        char name[200];
        CHECK(n <= 4);
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "%s%s", srcs[i], kind[k]);
            t[i] = wt_find(r->src, name);
            if (!t[i] || t[i]->compressed) {
                r->e = err_set(ERR_FORMAT, "diffusers tensor '%s' missing", name);
                return;
            }
            bytes += t[i]->stored_bytes;
            rows += t[i]->shape[0];
        }
        uint8_t *buf = malloc(bytes), *p = buf;
        CHECK(buf && r->n_bufs < 512);
        r->bufs[r->n_bufs++] = buf;
        for (int i = 0; i < n; i++)
            memcpy(p, t[i]->data, t[i]->stored_bytes), p += t[i]->stored_bytes;
        if (swap) {
            memcpy(buf, t[0]->data + bytes / 2, bytes / 2);
            memcpy(buf + bytes / 2, t[0]->data, bytes / 2);
        }
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t[0]->shape, sizeof shape);
        shape[0] = rows;
        snprintf(name, sizeof name, "%s%s%s", r->prefix ? r->prefix : "", out, kind[k]);
        r->e = st_writer_add(r->w, name, t[0]->dtype, t[0]->ndim, shape, buf, bytes);
        r->used += n;
    }
}

/* one tensor under another name */
static inline void tu_rename_one(tu_renamer *r, const char *out, const char *src) {
    if (r->e) return;
    const df11_tensor *t = wt_find(r->src, src);
    if (!t) {
        r->e = err_set(ERR_FORMAT, "diffusers tensor '%s' missing", src);
        return;
    }
    char name[200];
    snprintf(name, sizeof name, "%s%s", r->prefix ? r->prefix : "", out);
    r->e = st_writer_add(r->w, name, t->dtype, t->ndim, t->shape, t->data, t->stored_bytes);
    r->used++;
}

/* Opens the diffusers source dir for renaming. */
static inline err tu_renamer_open(tu_renamer *r, const char *dir, const char *prefix) {
    memset(r, 0, sizeof *r);
    r->prefix = prefix;
    TRY(wt_open(dir, &r->src));
    return st_writer_create(&r->w);
}

/* Writes the file (unless an error came first) and frees everything; the first error. */
static inline err tu_renamer_finish(tu_renamer *r, const char *out) {
    if (!r->e) r->e = st_writer_finish(r->w, out, 8);
    st_writer_free(r->w);
    for (int i = 0; i < r->n_bufs; i++)
        free(r->bufs[i]);
    wt_close(r->src);
    return r->e;
}

#endif
