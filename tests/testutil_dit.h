/* testutil_dit: what the transformer tests (test_flux, test_sd3) share: reference tensors moved
 * to the device under test, outputs brought back, the error against them, a writer that renames
 * a diffusers checkpoint into an original layout (fused row ranges, swapped halves), and the
 * tests every DiT gets through a tu_dit table (DF11 round trip, bad checkpoints, out of
 * memory). Header-only; include after testutil.h. */
#ifndef TESTS_TESTUTIL_DIT_H
#define TESTS_TESTUTIL_DIT_H

#include <cjson/cJSON.h>

#include "core/cuda/gpu.h"
#include "core/fileio.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "df11/tree.h"
#include "weights/weights.h"
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

/* An uninitialised activation of that shape: host F32 or device BF16; free with tu_dev_free. */
static inline tensor tu_dev_alloc(int ndim, const int64_t *shape, int gpu) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    void *p = NULL;
    if (gpu)
        CHECK(!gpu_alloc(&p, (size_t)n * 2));
    else
        CHECK((p = malloc((size_t)n * 4)));
    return tensor_make(p, gpu ? DTYPE_BF16 : DTYPE_F32, gpu ? TENSOR_CUDA : TENSOR_CPU, ndim,
                       shape);
}

/* Waits for ctx's work, then out's values and bytes into r (replacing what r held). */
static inline err tu_collect(op_ctx *ctx, tensor out, int gpu, tu_result *r) {
    const int64_t n = tensor_numel(&out);
    tu_result_free(r);
    r->n = n;
    r->raw_bytes = (size_t)n * (gpu ? 2 : 4);
    r->v = malloc((size_t)n * 4);
    r->raw = malloc(r->raw_bytes);
    CHECK(r->v && r->raw);
    err e = op_ctx_sync(ctx);
    if (!e && gpu) e = gpu_download(r->raw, out.data, r->raw_bytes);
    if (!e && !gpu) memcpy(r->raw, out.data, r->raw_bytes);
    for (int64_t i = 0; !e && i < n; i++)
        r->v[i] = gpu ? bf16_to_f32(((uint16_t *)r->raw)[i]) : ((float *)r->raw)[i];
    return e;
}

/* Rows [r0, r0 + n) of a reference tensor (along dim 0), a view of its bytes. */
static inline st_tensor tu_rows(const st_tensor *t, int64_t r0, int64_t n) {
    CHECK(r0 >= 0 && n >= 1 && r0 + n <= t->shape[0]);
    st_tensor v = *t;
    const uint64_t row = (t->end - t->begin) / (uint64_t)t->shape[0];
    v.shape[0] = n;
    v.numel = t->numel / (uint64_t)t->shape[0] * (uint64_t)n;
    v.data = t->data + row * (uint64_t)r0;
    v.begin = t->begin + row * (uint64_t)r0;
    v.end = v.begin + row * (uint64_t)n;
    return v;
}

/* The F32 tensor name of ref, or NULL (a failed check). */
static inline const st_tensor *tu_ref_f32(const st_file *ref, const char *name) {
    const st_tensor *t = st_find(ref, name);
    EXPECT(t && t->dtype == DTYPE_F32, "ref.safetensors: no F32 tensor '%s'", name);
    return t && t->dtype == DTYPE_F32 ? t : NULL;
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

/* One model run twice (a, b) and another model from the same files (base): the same bits. */
static inline void tu_expect_repeat(const char *label, const tu_result *a, const tu_result *b,
                                    const tu_result *base) {
    EXPECT(tu_same_bits(a, b), "%s: the same call twice gave different bits", label);
    EXPECT(tu_same_bits(a, base), "%s: a second model from the same files gave other bits", label);
    printf("  %s: repeat: %s\n", label,
           tu_same_bits(a, b) && tu_same_bits(a, base) ? "identical" : "DIFFERENT");
}

/* A checkpoint written under other names from diffusers ones (src: the one read now; every
 * source stays open until the file is written, which reads their mappings). */
typedef struct tu_renamer {
    wt_source *src, *srcs[8];
    int n_srcs;
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

/* Reads from the diffusers checkpoint dir next, writing names after prefix. */
static inline err tu_renamer_source(tu_renamer *r, const char *dir, const char *prefix) {
    CHECK(r->n_srcs < 8);
    r->prefix = prefix;
    TRY(wt_open(dir, &r->src));
    r->srcs[r->n_srcs++] = r->src;
    return ERR_OK;
}

/* Opens the diffusers source dir for renaming. */
static inline err tu_renamer_open(tu_renamer *r, const char *dir, const char *prefix) {
    memset(r, 0, sizeof *r);
    TRY(st_writer_create(&r->w));
    const err e = tu_renamer_source(r, dir, prefix);
    if (e) st_writer_free(r->w);
    return e;
}

/* every tensor of the source under its own name (after the prefix) */
static inline void tu_rename_all(tu_renamer *r) {
    for (int i = 0; i < wt_count(r->src) && !r->e; i++)
        tu_rename_one(r, wt_at(r->src, i)->name, wt_at(r->src, i)->name);
}

/* Writes the file (unless an error came first) and frees everything; the first error. */
static inline err tu_renamer_finish(tu_renamer *r, const char *out) {
    if (!r->e) r->e = st_writer_finish(r->w, out, 8);
    st_writer_free(r->w);
    for (int i = 0; i < r->n_bufs; i++)
        free(r->bufs[i]);
    for (int i = 0; i < r->n_srcs; i++)
        wt_close(r->srcs[i]);
    return r->e;
}

/* ---- the tests every DiT gets, through its functions ---- */

/* One DiT under test: the context, and the model's functions behind void pointers. */
typedef struct tu_dit {
    op_ctx *ctx;
    int gpu;
    char *tmp;    /* the test's scratch folder (a mkdtemp template until tu_dit_begin) */
    st_file *ref; /* the reference tensors */
    err (*load)(wt_source *src, op_ctx *ctx, wp_mode mode, size_t budget, void **m);
    void (*free)(void *m);
    void (*config)(const void *m, void *out);               /* copies the model's config */
    err (*run)(void *m, const void *variant, tu_result *r); /* plans, one forward into r */
    err (*plan)(void *m, int huge); /* huge: a plan no device holds; else a small one */
    const wt_patch *patch; /* set on the sources tu_dit_run_path opens (NULL: none) */
} tu_dit;

/* Defines the test's `static tu_dit dit` (scratch folder tmp) for a model P with
 * P_load(src, ctx, &(P_load_opts){mode, budget}, &m), P_free and P_get_config returning a
 * P_config, and the test's own run and plan (tu_dit's signatures). */
#define TU_DIT_DEFINE(P, tmp_, run_, plan_)                                                        \
    static err P##_dit_load(wt_source *src, op_ctx *c, wp_mode mode, size_t budget, void **m) {    \
        P##_model *x = NULL;                                                                       \
        const err e = P##_load(src, c, &(P##_load_opts){mode, budget}, &x);                        \
        return *m = x, e;                                                                          \
    }                                                                                              \
    static void P##_dit_free(void *m) { P##_free(m); }                                             \
    static void P##_dit_config(const void *m, void *out) {                                         \
        *(P##_config *)out = *P##_get_config(m);                                                   \
    }                                                                                              \
    static tu_dit dit = {.tmp = tmp_,                                                              \
                         .load = P##_dit_load,                                                     \
                         .free = P##_dit_free,                                                     \
                         .config = P##_dit_config,                                                 \
                         .run = run_,                                                              \
                         .plan = plan_}

/* The start of a DiT test's main: "NAME --cpu|--gpu FIXTURES_DIR", d's context (--gpu without a
 * GPU: skipped), FIXTURES_DIR/ref_file opened into d->ref, the scratch folder made from d->tmp
 * (a mkdtemp template). Returns -1 to go on, else the exit code (77: skipped). */
static inline int tu_dit_begin(int argc, char **argv, const char *ref_file, tu_dit *d) {
    if (argc != 3 || (strcmp(argv[1], "--cpu") && strcmp(argv[1], "--gpu"))) {
        fprintf(stderr, "usage: %s --cpu|--gpu FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    d->gpu = !strcmp(argv[1], "--gpu");
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines survive an abort */
    if (op_ctx_create(d->gpu ? TENSOR_CUDA : TENSOR_CPU, &d->ctx)) {
        printf("%s: skipped: %s\n", argv[0], err_msg());
        return d->gpu ? 77 : 1;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/%s", argv[2], ref_file);
    if (st_open(path, &d->ref)) {
        fprintf(stderr, "%s: %s (see tests/fixtures/README.md)\n", argv[0], err_msg());
        op_ctx_free(d->ctx);
        return 1;
    }
    CHECK(mkdtemp(d->tmp));
    return -1;
}

/* The end: removes the scratch folder (kept when TEST_KEEP_TMP is set), closes d->ref and the
 * context; the exit code. */
static inline int tu_dit_end(tu_dit *d, const char *name) {
    if (getenv("TEST_KEEP_TMP"))
        printf("%s: scratch files kept in %s\n", name, d->tmp);
    else if (fio_remove_tree(d->tmp))
        fprintf(stderr, "%s: %s\n", name, err_msg());
    st_close(d->ref);
    op_ctx_free(d->ctx);
    return tu_finish(name);
}

/* Opens path (with d's patch), loads with mode (budget for WP_STREAM), copies the config into
 * cfg (if not NULL), runs the variant into r; prints the error and returns it on failure. */
static inline err tu_dit_run_path(const tu_dit *d, const char *path, wp_mode mode, size_t budget,
                                  const void *variant, tu_result *r, void *cfg) {
    wt_source *src = NULL;
    void *m = NULL;
    err e = wt_open(path, &src);
    if (!e) wt_set_patch(src, d->patch);
    if (!e) e = d->load(src, d->ctx, mode, budget, &m);
    if (!e && cfg) d->config(m, cfg);
    if (!e) e = d->run(m, variant, r);
    if (e) fprintf(stderr, "%s: %s\n", path, err_msg());
    if (m) d->free(m);
    wt_close(src);
    return e;
}

/* df11 compress of dir (a checkpoint folder) into folder, as the CLI does it (the shards
 * compressed, the index and config.json copied), checked to open as DF11; 0 (a failed check)
 * if not. */
static inline int tu_df11_compress(const char *dir, const char *folder) {
    err e = df11_convert_path(DF11_OP_COMPRESS, dir, folder, NULL, 0, NULL);
    EXPECT(!e, "compressing %s: %s", dir, err_msg());
    wt_source *src = NULL;
    const int ok = !e && !wt_open(folder, &src) && wt_is_df11(src);
    EXPECT(e || ok, "%s is not a DF11 checkpoint", folder);
    wt_close(src);
    return ok;
}

/* DF11 shards (tu_df11_compress) give the same bits as the BF16 ones in base; on the GPU under
 * every provider mode, WP_STREAM at the smallest budget that loads, so that most blocks stream. */
static inline void tu_dit_test_df11(const tu_dit *d, const char *dir, const char *label,
                                    const void *variant, const tu_result *base) {
    char folder[600];
    snprintf(folder, sizeof folder, "%s/%s_df11", d->tmp, label);
    if (!tu_df11_compress(dir, folder)) return;
    wt_source *src = NULL;
    static const char *const names[] = {"WP_RESIDENT", "WP_DF11", "WP_STREAM"};
    for (int mode = WP_RESIDENT; mode <= (d->gpu ? WP_STREAM : WP_RESIDENT); mode++) {
        tu_result r = {0};
        size_t budget = 0;
        if (mode == WP_STREAM) {
            /* the smallest budget in 64 KiB steps the provider accepts */
            void *m = NULL;
            CHECK(!wt_open(folder, &src));
            for (budget = 1u << 20; budget < (64u << 20); budget += 64u << 10)
                if (!d->load(src, d->ctx, WP_STREAM, budget, &m)) break;
            if (m) d->free(m);
            wt_close(src);
        }
        if (!tu_dit_run_path(d, folder, (wp_mode)mode, budget, variant, &r, NULL)) {
            EXPECT(tu_same_bits(&r, base), "%s: DF11 (%s) and BF16 gave different bits", label,
                   names[mode]);
            printf("  %s: DF11 %s%s: %s\n", label, d->gpu ? names[mode] : "(CPU)",
                   mode == WP_STREAM ? " at the smallest budget" : "",
                   tu_same_bits(&r, base) ? "identical to BF16" : "DIFFERENT");
        } else {
            EXPECT(0, "%s: running DF11 (%s) failed", label, names[mode]);
        }
        tu_result_free(&r);
    }
}

/* A broken copy of a checkpoint. */
typedef struct tu_bad {
    const char *drop;   /* a tensor left out */
    const char *narrow; /* a tensor stored as [rows, cols] (its first bytes) */
    int64_t rows, cols;
    const char *cfg_key; /* config.json's key set to cfg_value (JSON text): the copy is a
                            folder with the weights and that config.json */
    const char *cfg_value;
    const char *expect[3]; /* what the message must hold besides the path (NULL: nothing) */
} tu_bad;

/* config.json of src with key set to value (JSON text), written into folder */
static inline err tu_write_config(const wt_source *src, const char *key, const char *value,
                                  const char *folder) {
    cJSON *j = NULL, *v = cJSON_Parse(value);
    CHECK(v);
    TRY(wt_config(src, &j));
    FAIL_IF(!j, ERR_FORMAT, "%s has no config.json", wt_path(src));
    cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    cJSON_AddItemToObject(j, key, v);
    char *text = cJSON_Print(j), path[700];
    cJSON_Delete(j);
    CHECK(text);
    snprintf(path, sizeof path, "%s/config.json", folder);
    err e = fio_write_file(path, text, strlen(text));
    free(text);
    return e;
}

/* The copy b describes of dir (one file, or a folder when the config changes) fails to load
 * with ERR_FORMAT and a message naming the file or folder, the tensor or key, and b->expect. */
static inline void tu_dit_test_bad(const tu_dit *d, const char *dir, const tu_bad *b) {
    char out[600], file[700];
    snprintf(out, sizeof out, "%s/%s", d->tmp, b->cfg_key ? "bad_config" : "bad.safetensors");
    snprintf(file, sizeof file, "%s%s", out,
             b->cfg_key ? "/diffusion_pytorch_model.safetensors" : "");
    wt_source *src = NULL;
    st_writer *w = NULL;
    err e = wt_open(dir, &src);
    if (!e && b->cfg_key) e = fio_mkdirs(out);
    if (!e && b->cfg_key) e = tu_write_config(src, b->cfg_key, b->cfg_value, out);
    if (!e) e = st_writer_create(&w);
    for (int i = 0; !e && i < wt_count(src); i++) {
        const df11_tensor *t = wt_at(src, i);
        if (b->drop && !strcmp(t->name, b->drop)) continue;
        if (b->narrow && !strcmp(t->name, b->narrow))
            e = st_writer_add(w, t->name, t->dtype, 2, (int64_t[]){b->rows, b->cols}, t->data,
                              (uint64_t)(b->rows * b->cols * 2));
        else
            e = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->stored_bytes);
    }
    if (!e) e = st_writer_finish(w, file, 8);
    st_writer_free(w);
    wt_close(src);
    EXPECT(!e, "writing %s: %s", out, err_msg());
    if (e) return;
    const char *what = b->drop ? b->drop : b->narrow ? b->narrow : b->cfg_key;
    void *m = NULL;
    src = NULL;
    e = wt_open(out, &src);
    EXPECT(!e, "%s: %s", out, err_msg());
    if (!e) e = d->load(src, d->ctx, WP_RESIDENT, 0, &m);
    const char *msg = err_msg();
    int has = e == ERR_FORMAT && strstr(msg, out) && strstr(msg, what);
    for (int i = 0; i < 3 && b->expect[i]; i++)
        has = has && strstr(msg, b->expect[i]);
    EXPECT(has, "loading with '%s' broken: got %d '%s'", what, (int)e, msg);
    printf("  error: %s\n", msg);
    if (m) d->free(m);
    wt_close(src);
    fio_remove_tree(out);
}

/* GPU: a plan the device cannot hold is ERR_NOMEM naming the bytes, and a small plan after it
 * works (not tried on the CPU, where an overcommitting kernel may hand out the memory and fail
 * only when it is touched). Run it last: after a failed cudaMalloc the CUDA runtime's last
 * error stays set (core/cuda/gpu.cu does not clear it), and a later launch check would take it
 * for its own. */
static inline void tu_dit_test_nomem(const tu_dit *d, const char *dir) {
    wt_source *src = NULL;
    void *m = NULL;
    err e = wt_open(dir, &src);
    if (!e) e = d->load(src, d->ctx, WP_RESIDENT, 0, &m);
    EXPECT(!e, "%s", err_msg());
    if (!e) {
        e = d->plan(m, 1);
        EXPECT(e == ERR_NOMEM && strstr(err_msg(), "bytes"), "huge plan: got %d '%s'", (int)e,
               err_msg());
        printf("  huge plan: %s\n", err_msg());
        e = d->plan(m, 0);
        EXPECT(!e, "a plan after the failed one: %s", err_msg());
    }
    if (m) d->free(m);
    wt_close(src);
}

#endif
