/* weights: a model component's named tensors, wherever they are stored: one safetensors file,
 * a sharded checkpoint (*.safetensors.index.json), or a folder holding either (diffusers
 * layout), each plain or DF11 (container.h). Model code describes the tensors a block needs
 * (wt_spec: name and shape; a wt_layout lists them, wbind.h binds them to struct fields) and
 * gets them back as tensors: on the CPU as stored (BF16, F16 or F32, mmapped; DF11 decoded to
 * BF16), on the GPU as BF16 through the weight provider (provider.h), resident or decoded per
 * block. A missing tensor or a wrong shape is an error that names the file, the tensor, what
 * was expected and what was found. A patch (wt_patch, the seam LoRA uses) changes chosen
 * tensors in place where they become available to the forward. */
#ifndef WEIGHTS_WEIGHTS_H
#define WEIGHTS_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "df11/container.h"
#include "weights/provider.h"

struct cJSON;

typedef struct wt_source wt_source;

/* Opens path: a .safetensors file (plain or DF11), an index.json, or a folder that holds
 * "diffusion_pytorch_model*.safetensors[.index.json]", "model*.safetensors[.index.json]" or a
 * single *.safetensors file. */
err wt_open(const char *path, wt_source **out);
void wt_close(wt_source *s); /* accepts NULL */
const char *wt_path(const wt_source *s);
/* Whether any tensor is DF11-compressed. */
int wt_is_df11(const wt_source *s);
/* A prefix put in front of every name looked up from now on ("model.diffusion_model."). */
void wt_set_prefix(wt_source *s, const char *prefix);
/* The tensor called prefix + name, or NULL. */
const df11_tensor *wt_find(const wt_source *s, const char *name);
/* The tensor called prefix + the printf-formatted name, which must exist with ndim dims: else
 * ERR_FORMAT naming the file and the tensor. */
err wt_need(const wt_source *s, const df11_tensor **out, int ndim, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Whether name is prefix + key with the prefix empty or ending in '.'; *len the prefix's
 * length. */
int wt_name_prefix(const char *name, const char *key, size_t *len);
/* All tensors (every shard), in file order. */
int wt_count(const wt_source *s);
const df11_tensor *wt_at(const wt_source *s, int i);
/* The component's config.json (the folder's, or beside the file), parsed; *out is NULL when
 * there is none. Free with cJSON_Delete. */
err wt_config(const wt_source *s, struct cJSON **out);
/* apply(cfg, wt_path(s), arg) with the parsed config.json where there is one (freed after);
 * returns apply's err. */
err wt_config_apply(const wt_source *s,
                    err (*apply)(const struct cJSON *cfg, const char *path, void *arg), void *arg);
/* cfg's number (true/false as 1/0) at key into *v, truncated; an absent or null key leaves *v;
 * another type is ERR_FORMAT naming path (the weights) and key. */
err wt_config_int(const struct cJSON *cfg, const char *key, const char *path, int64_t *v);
/* The same for a float. */
err wt_config_float(const struct cJSON *cfg, const char *key, const char *path, float *v);
/* A hash of the original weights: names, dtypes, shapes and the CRC-32 of every tensor's
 * original bytes (DF11 keeps them, so a DF11 file and its original hash the same). */
err wt_hash(wt_source *s, uint64_t *hash);

/* One tensor a block needs: name (after the prefix) and shape. An optional tensor that is
 * absent comes back with data NULL. A transposed one (2-D) is stored as [shape[1], shape[0]]
 * and handed out as its transpose [shape[0], shape[1]], a copy the wt_blocks owns (OpenCLIP's
 * text_projection, used as x·P where a linear weight is Pᵀ). */
typedef struct wt_spec {
    const char *name; /* borrowed until wt_blocks_create returns */
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int optional;
    int transposed;
} wt_spec;

/* wt_layout_add's flags */
#define WT_OPTIONAL 1   /* wt_spec.optional */
#define WT_TRANSPOSED 2 /* wt_spec.transposed */

/* The patch hook: a source's tensors changed in place, by ops on the model's op_ctx, where
 * they become available to the forward. Tensors nobody patches cost nothing. */
typedef struct wt_patch {
    void *ctx;
    /* 1 if the tensor with this full name (prefix included, as in the file) is patched; asked
     * once for each tensor the model lists and the file holds, when a wt_blocks is created */
    int (*wants)(void *ctx, const char *name);
    /* Changes w (contiguous, in the shape the model asked for) in place with ops on c: a BF16
     * device tensor on the GPU, an F32 host tensor on the CPU (a patched tensor is copied to
     * F32 there, which the CPU ops take as they take any weight). Must be a pure function of
     * w's values and the patch's own data: resident weights (WP_RESIDENT, the CPU) are
     * patched once at creation, weights decoded per block (WP_DF11, WP_STREAM) after every
     * decode (wp_acquire's flag: never twice the same decode), on c's stream before the
     * forward's ops, and the two must give the same bits. w is valid only during the call. */
    void (*apply)(void *ctx, op_ctx *c, const char *name, tensor w);
} wt_patch;

/* The patch the wt_blocks created from s from now on apply (each takes a copy of *p; p->ctx
 * must outlive them); NULL: none. */
void wt_set_patch(wt_source *s, const wt_patch *p);

typedef struct wt_blocks_config {
    op_ctx *ctx;   /* the model's (borrowed): the weights go to its device, the ops that read
                      them run on its stream, and so do a patch's (wt_patch) */
    wp_mode mode;  /* GPU: how the provider holds the weights (WP_DF11, WP_STREAM need DF11 or
                      encode the few tensors stored raw) */
    size_t budget; /* WP_STREAM */
} wt_blocks_config;

/* A component's weights, in blocks (block i has counts[i] tensors described by specs[i]). */
typedef struct wt_blocks wt_blocks;

err wt_blocks_create(wt_source *s, int n_blocks, const int *counts, const wt_spec *const *specs,
                     const wt_blocks_config *cfg, wt_blocks **out);
void wt_blocks_free(wt_blocks *b); /* accepts NULL */
/* Block i's tensors into w[0..counts[i]), valid until wt_blocks_release(b, i); on the GPU, a
 * fresh decode's patched tensors are patched first (wt_patch). */
void wt_blocks_acquire(wt_blocks *b, int i, tensor *w);
void wt_blocks_release(wt_blocks *b, int i);
/* Device bytes the weights take (0 on the CPU). */
size_t wt_blocks_device_bytes(const wt_blocks *b);
/* Elements of the tensors found (absent optional ones not counted): the parameter count. */
int64_t wt_blocks_numel(const wt_blocks *b);

/* The specs of a component's blocks as model code lists them, tensor by tensor, block by
 * block; owns the names. */
typedef struct wt_layout wt_layout;

/* An empty layout of n_blocks blocks. */
err wt_layout_create(int n_blocks, wt_layout **out);
void wt_layout_free(wt_layout *l); /* accepts NULL */
/* Appends a tensor to block b: flags WT_OPTIONAL | WT_TRANSPOSED (1 is WT_OPTIONAL), name
 * printf-formatted (copied), shape[0..ndim) copied. Out of memory is kept for
 * wt_blocks_create_from to report. */
void wt_layout_add(wt_layout *l, int b, int flags, int ndim, const int64_t *shape,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Tensors listed in block b so far. */
int wt_layout_count(const wt_layout *l, int b);
/* wt_blocks_create over the layout's blocks; l is borrowed until it returns. */
err wt_blocks_create_from(wt_source *s, const wt_layout *l, const wt_blocks_config *cfg,
                          wt_blocks **out);

#endif
