/* sd3: the Stable Diffusion 3.5 transformer (SD3Transformer2DModel: Large, Large Turbo, and
 * Medium with its dual-attention MMDiT-X blocks), one forward = one velocity prediction for a
 * batch (B = 2 under CFG). Spec: docs/MODEL-SPEC.md §2, §6.4. Weights come from a wt_source
 * (diffusers or Stability names, plain or DF11); the blocks go through the weight provider, the
 * embedders, pos_embed and the final layer stay resident. Borrows the op_ctx and the wt_source. */
#ifndef UNET_DIT_SD3_H
#define UNET_DIT_SD3_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "weights/weights.h"

#define SD3_MAX_LAYERS 64

typedef struct sd3_config {
    int64_t D, heads, head_dim; /* D = heads * head_dim (2432 = 38 x 64; Medium 1536 = 24 x 64) */
    int64_t layers;             /* 38 (Medium 24); the last is context_pre_only */
    int64_t patch;              /* 2 */
    int64_t in_ch, out_ch;      /* 16, 16 */
    int64_t joint_dim;          /* the text tokens' width (4096) */
    int64_t caption_dim;        /* context_embedder's output (= D) */
    int64_t pooled_dim;         /* the pooled CLIP-L + CLIP-G width (2048) */
    int64_t mlp;                /* MLP hidden (4 D) */
    int64_t pos_max;            /* pos_embed_max_size M: pos_embed is [1, M^2, D] */
    int qk_norm;                /* 1: RMSNorm q/k (every 3.5), 0: none (3.0) */
    int original_names; /* 1: Stability's names (joint_blocks.i.x_block...), 0: diffusers' */
    unsigned char dual[SD3_MAX_LAYERS]; /* dual[i]: block i is an MMDiT-X block (attn2) */
} sd3_config;

typedef struct sd3_load_opts {
    wp_mode mode;  /* GPU: WP_RESIDENT for BF16 sources, WP_DF11 / WP_STREAM for DF11 */
    size_t budget; /* WP_STREAM: device bytes the block weights may take */
} sd3_load_opts;

typedef struct sd3_model sd3_model;

/* Loads from src (names detected: diffusers, or Stability's with an optional
 * "model.diffusion_model." prefix, which is then set on src). Config inferred from the shapes
 * and checked against config.json where there is one. o may be NULL (WP_RESIDENT). */
err sd3_load(wt_source *src, op_ctx *ctx, const sd3_load_opts *o, sd3_model **out);
const sd3_config *sd3_get_config(const sd3_model *m);
/* Allocates activations for batch B, latent h x w (multiples of the patch) and T text tokens
 * and crops pos_embed for that grid; ERR_NOMEM names the bytes, a grid larger than pos_embed's
 * is ERR_ARG. */
err sd3_plan(sd3_model *m, int64_t B, int64_t h, int64_t w, int64_t T);
/* out [b,out_ch,h,w] = the velocity for x [b,in_ch,h,w], b <= the planned B (skip-layer
 * guidance runs one row inside a CFG plan of two), at the scheduler timesteps t[b] (host,
 * unscaled, in [0, 1000]) given the text tokens ctx [b,T,joint_dim] and pooled
 * [b,pooled_dim]; tensors on the ctx's device, in its activation type. */
void sd3_forward(sd3_model *m, tensor out, tensor x, const float *t, tensor ctx, tensor pooled);
/* Blocks the following forwards skip (SD3Transformer2DModel.forward's skip_layers: the block's
 * both streams pass unchanged); n = 0 clears. An index outside 0..layers-1 is ERR_ARG. */
err sd3_set_skip_layers(sd3_model *m, const int *layers, int n);
/* Weight bytes on the device (0 on the CPU, where they are mmapped) plus activation bytes. */
size_t sd3_device_bytes(const sd3_model *m);
void sd3_free(sd3_model *m); /* accepts NULL */

#endif
