/* wbind: how a model's weight structs get their tensors. A model lists each block's tensors
 * once, with a visitor (names, shapes, and the struct field each one goes to, or a row range of
 * a fused tensor such as BFL's qkv or OpenCLIP's in_proj); that makes the block's specs
 * (weights/weights.h) and a binding table, which every acquire then applies to the struct. Owned
 * by the model (clip.c, t5.c, flux.c, sd3.c, vae.c); the tensors come from its wt_blocks. */
#ifndef WEIGHTS_WBIND_H
#define WEIGHTS_WBIND_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"
#include "weights/weights.h"

/* Tensor w of a block's acquired list goes to the field at byte offset `field` of its struct
 * (rows [r0, r0 + rows) of it when rows > 0). */
typedef struct wbind {
    size_t field;
    int w;
    int64_t r0, rows;
} wbind;

/* The listing state a model's visitors write through. */
typedef struct wbind_visit {
    const void *cfg;   /* the model (or its config), for its visitors */
    char prefix[256];  /* put before every name listed (a text encoder's inside a single file
                          can be long) */
    const void *base;  /* the block struct the fields belong to (set by the visitor) */
    wt_layout *layout; /* NULL while only counting */
    int block;         /* the block being listed */
    wbind *binds;      /* NULL while only counting */
    int n, nb;         /* the block's tensors so far, all bindings so far */
} wbind_visit;

/* One tensor prefix + name of the given shape, bound whole to field (NULL: bound by caller). */
void wbind_one(wbind_visit *v, tensor *field, const char *name, int ndim, const int64_t *shape);
/* One vector prefix + name [n] (a norm's scale), bound to field. */
void wbind_vec(wbind_visit *v, tensor *field, const char *name, int64_t n);
/* One matrix prefix + name [rows, cols] (a linear's weight without bias), bound to field. */
void wbind_mat(wbind_visit *v, tensor *field, const char *name, int64_t rows, int64_t cols);
/* The same as wbind_one with wt_layout_add's flags: WT_OPTIONAL (absent, field gets data NULL),
 * WT_TRANSPOSED (stored [shape[1], shape[0]], bound as its [shape[0], shape[1]] transpose). */
void wbind_tensor(wbind_visit *v, tensor *field, int flags, const char *name, int ndim,
                  const int64_t *shape);
/* One tensor prefix + name of rows[0] + ... + rows[nf - 1] rows ([rows, cols], or [rows] when
 * cols is 0), bound as consecutive row ranges to fields[0..nf) (OpenCLIP's in_proj_weight). */
void wbind_rows(wbind_visit *v, tensor *const *fields, const int64_t *rows, int nf,
                const char *name, int64_t cols);
/* name.weight [rows, cols] to w and name.bias [rows] to b. */
void wbind_linear(wbind_visit *v, tensor *w, tensor *b, const char *name, int64_t rows,
                  int64_t cols);
/* name.weight [n] and name.bias [n] to w and b (a norm's affine). */
void wbind_affine(wbind_visit *v, tensor *w, tensor *b, const char *name, int64_t n);
/* A fused linear: name.weight [sum rows, cols] and name.bias, bound as row ranges of rows[i]
 * rows to ws[i] and bs[i]. */
void wbind_fused(wbind_visit *v, tensor *const *ws, tensor *const *bs, const int64_t *rows, int nf,
                 const char *name, int64_t cols);

/* A model's blocks and their binding tables. */
typedef struct wbind_table {
    wt_blocks *blocks;
    wbind *binds; /* block i's are [at[i], at[i + 1]) */
    int *at;
    int n_blocks, max_w;
    int held; /* wbind_load_held: block 0 acquired until wbind_free */
} wbind_table;

/* Lists blocks 0..n_blocks-1 with visit(v, i) (at most max_w tensors each), opens them from
 * src through wt_blocks with cfg, and keeps the binding tables. */
err wbind_load(wt_source *src, const void *model_cfg, int n_blocks, int max_w,
               void (*visit)(wbind_visit *v, int i), const wt_blocks_config *cfg, wbind_table *t);
/* The same for one block listed by visit(v, 0), resident, acquired into the struct at base for
 * the table's lifetime (a model's embedders and final layer). */
err wbind_load_held(wt_source *src, const void *model_cfg, int max_w,
                    void (*visit)(wbind_visit *v, int i), const wt_blocks_config *cfg,
                    wbind_table *t, void *base);
/* Acquires block i into the struct at base (valid until wbind_release). */
void wbind_acquire(wbind_table *t, int i, void *base);
void wbind_release(wbind_table *t, int i);
void wbind_free(wbind_table *t); /* accepts a zeroed table; releases a held block */

#endif
