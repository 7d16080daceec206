/* wbind: block structs bound to the weights a model lists (wbind.h). */
#include "weights/wbind.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void bind(wbind_visit *v, const tensor *field, int w, int64_t r0, int64_t rows) {
    if (v->binds)
        v->binds[v->nb] =
            (wbind){(size_t)((const char *)field - (const char *)v->base), w, r0, rows};
    v->nb++;
}

void wbind_tensor(wbind_visit *v, tensor *field, int flags, const char *name, int ndim,
                  const int64_t *shape) {
    if (v->layout) wt_layout_add(v->layout, v->block, flags, ndim, shape, "%s%s", v->prefix, name);
    if (field) bind(v, field, v->n, 0, 0);
    v->n++;
}

void wbind_one(wbind_visit *v, tensor *field, const char *name, int ndim, const int64_t *shape) {
    wbind_tensor(v, field, 0, name, ndim, shape);
}

void wbind_vec(wbind_visit *v, tensor *field, const char *name, int64_t n) {
    wbind_one(v, field, name, 1, (int64_t[]){n});
}

void wbind_mat(wbind_visit *v, tensor *field, const char *name, int64_t rows, int64_t cols) {
    wbind_one(v, field, name, 2, (int64_t[]){rows, cols});
}

void wbind_rows(wbind_visit *v, tensor *const *fields, const int64_t *rows, int nf,
                const char *name, int64_t cols) {
    int64_t total = 0, r = 0;
    for (int i = 0; i < nf; i++)
        total += rows[i];
    const int w = v->n;
    wbind_one(v, NULL, name, cols ? 2 : 1, (int64_t[]){total, cols});
    for (int i = 0; i < nf; r += rows[i], i++)
        bind(v, fields[i], w, r, rows[i]);
}

/* name + ".weight" or ".bias" into buf */
static const char *leaf(char *buf, size_t n, const char *name, const char *suffix) {
    CHECK(snprintf(buf, n, "%s%s", name, suffix) < (int)n);
    return buf;
}

void wbind_linear(wbind_visit *v, tensor *w, tensor *b, const char *name, int64_t rows,
                  int64_t cols) {
    char n[160];
    wbind_mat(v, w, leaf(n, sizeof n, name, ".weight"), rows, cols);
    wbind_vec(v, b, leaf(n, sizeof n, name, ".bias"), rows);
}

void wbind_affine(wbind_visit *v, tensor *w, tensor *b, const char *name, int64_t n) {
    char nm[160];
    wbind_vec(v, w, leaf(nm, sizeof nm, name, ".weight"), n);
    wbind_vec(v, b, leaf(nm, sizeof nm, name, ".bias"), n);
}

void wbind_fused(wbind_visit *v, tensor *const *ws, tensor *const *bs, const int64_t *rows, int nf,
                 const char *name, int64_t cols) {
    char n[160];
    wbind_rows(v, ws, rows, nf, leaf(n, sizeof n, name, ".weight"), cols);
    wbind_rows(v, bs, rows, nf, leaf(n, sizeof n, name, ".bias"), 0);
}

/* Lists every block: to count the bindings (layout NULL), then to fill them. */
static void visit_all(wbind_visit *v, int n_blocks, int max_w, void (*visit)(wbind_visit *v, int i),
                      int *at) {
    for (int i = 0; i < n_blocks; i++) {
        if (at) at[i] = v->nb;
        v->block = i;
        v->n = 0;
        visit(v, i);
        CHECK(v->n <= max_w);
    }
    if (at) at[n_blocks] = v->nb;
}

err wbind_load(wt_source *src, const void *model_cfg, int n_blocks, int max_w,
               void (*visit)(wbind_visit *v, int i), const wt_blocks_config *cfg, wbind_table *t) {
    memset(t, 0, sizeof *t);
    t->n_blocks = n_blocks, t->max_w = max_w;
    wbind_visit v = {.cfg = model_cfg};
    visit_all(&v, n_blocks, max_w, visit, NULL);
    t->binds = calloc((size_t)v.nb + 1, sizeof *t->binds);
    t->at = calloc((size_t)n_blocks + 1, sizeof *t->at);
    FAIL_IF(!t->binds || !t->at, ERR_NOMEM, "out of memory binding %d tensors", v.nb);
    wt_layout *l = NULL;
    TRY(wt_layout_create(n_blocks, &l));
    v = (wbind_visit){.cfg = model_cfg, .layout = l, .binds = t->binds};
    visit_all(&v, n_blocks, max_w, visit, t->at);
    err e = wt_blocks_create_from(src, l, cfg, &t->blocks);
    wt_layout_free(l);
    return e;
}

err wbind_load_held(wt_source *src, const void *model_cfg, int max_w,
                    void (*visit)(wbind_visit *v, int i), const wt_blocks_config *cfg,
                    wbind_table *t, void *base) {
    wt_blocks_config rc = *cfg;
    rc.mode = WP_RESIDENT;
    TRY(wbind_load(src, model_cfg, 1, max_w, visit, &rc, t));
    wbind_acquire(t, 0, base);
    t->held = 1;
    return ERR_OK;
}

void wbind_acquire(wbind_table *t, int i, void *base) {
    tensor w[t->max_w + 1];
    wt_blocks_acquire(t->blocks, i, w);
    for (int k = t->at[i]; k < t->at[i + 1]; k++) {
        const wbind *b = &t->binds[k];
        tensor x = w[b->w];
        if (b->rows) x = tensor_slice(x, 0, b->r0, b->rows);
        memcpy((char *)base + b->field, &x, sizeof x);
    }
}

void wbind_release(wbind_table *t, int i) { wt_blocks_release(t->blocks, i); }

void wbind_free(wbind_table *t) {
    if (t->held) wt_blocks_release(t->blocks, 0);
    wt_blocks_free(t->blocks);
    free(t->binds);
    free(t->at);
    memset(t, 0, sizeof *t);
}
