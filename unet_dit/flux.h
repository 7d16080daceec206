/* flux: the FLUX.1 transformer (FluxTransformer2DModel; dev with its guidance embedding,
 * schnell without), one forward = one velocity prediction. Spec: docs/MODEL-SPEC.md §1, §6.3.
 * Weights come from a wt_source (diffusers or BFL names, plain or DF11); the 19 + 38 blocks go
 * through the weight provider (weights/weights.h), the embedders and the final layer stay resident.
 * The model borrows the op_ctx and the wt_source; it owns its weights' blocks and activations. */
#ifndef UNET_DIT_FLUX_H
#define UNET_DIT_FLUX_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "weights/weights.h"

typedef struct flux_config {
    int64_t D, heads, head_dim; /* D = heads * head_dim (3072 = 24 x 128) */
    int64_t n_double, n_single; /* 19, 38 */
    int64_t in_ch;              /* packed latent channels (64), also the output's */
    int64_t ctx_dim;            /* T5 width (4096) */
    int64_t pooled_dim;         /* CLIP-L pooled width (768) */
    int64_t mlp;                /* MLP hidden (4 D) */
    int axes[3];                /* RoPE dims per id axis (16, 56, 56); sum = head_dim */
    int guidance;               /* 1: dev (guidance embedder), 0: schnell */
    int bfl_names;              /* 1: BFL's names (fused qkv, linear1), 0: diffusers' */
} flux_config;

typedef struct flux_load_opts {
    wp_mode mode;  /* GPU: WP_RESIDENT for BF16 sources, WP_DF11 / WP_STREAM for DF11 */
    size_t budget; /* WP_STREAM: device bytes the block weights may take */
} flux_load_opts;

typedef struct flux_model flux_model;

/* Loads from src (names detected: diffusers, or BFL with an optional "model.diffusion_model."
 * prefix, which is then set on src). Config from src's config.json, checked against the
 * tensors' shapes, or inferred from them. o may be NULL (WP_RESIDENT). */
err flux_load(wt_source *src, op_ctx *ctx, const flux_load_opts *o, flux_model **out);
const flux_config *flux_get_config(const flux_model *m);
/* Allocates activations and builds the RoPE tables for h2 x w2 image tokens (the packed grid,
 * N = h2 w2) and T text tokens; ERR_NOMEM names the bytes needed. */
err flux_plan(flux_model *m, int64_t h2, int64_t w2, int64_t T);
/* Sets the prompt (after flux_plan; a new plan needs it again): t5 [1,T,ctx_dim] and pooled
 * [1,pooled_dim] on the ctx's device, read now, not kept: context_embedder(t5) and the
 * pooled-text embedding are computed once here. */
void flux_set_text(flux_model *m, tensor t5, tensor pooled);
/* The sinusoid inputs the pipeline feeds the embedders for scheduler timestep t (= 1000 sigma,
 * float32) and guidance g, through the rounding chain of dev's pipeline dtype (§1.4, §6.3):
 * CUDA (bf16) tau = bf16(bf16(bf16(t) / 1000) * 1000), gs = bf16(bf16(g) * 1000); CPU (fp32)
 * tau = (t / 1000) * 1000, gs = g * 1000. */
void flux_time_inputs(tensor_dev dev, float t, float g, float *tau, float *gs);
/* out [1,N,in_ch] = the velocity for x [1,N,in_ch] (packed latents) at scheduler timestep t
 * with guidance g (ignored by schnell); x and out on the ctx's device. */
void flux_forward(flux_model *m, tensor out, tensor x, float t, float g);
/* The same with the sinusoid inputs given as they are (after flux_time_inputs' chain). */
void flux_forward_tau(flux_model *m, tensor out, tensor x, float tau, float gs);
/* Weight bytes on the device (0 on the CPU, where they are mmapped) plus activation bytes. */
size_t flux_device_bytes(const flux_model *m);
void flux_free(flux_model *m); /* accepts NULL */

#endif
