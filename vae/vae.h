/* vae: the AutoencoderKL decoder of FLUX.1 and SD3.5 (16-channel latents), 8x upscaling to an
 * RGB image in about [-1, 1]. Spec: docs/MODEL-SPEC.md §3 (3.1-3.3 numerics and op order, 3.6
 * tensor names). The model owns its weights (wt_blocks) and its planned activations; the
 * caller owns the op_ctx, the wt_source, z and out. */
#ifndef VAE_VAE_H
#define VAE_VAE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "weights/weights.h"

#define VAE_MAX_LEVELS 8

typedef struct vae_config {
    int latent_channels;                /* C of z: 16 */
    int out_channels;                   /* 3 (RGB) */
    int groups;                         /* norm_num_groups: 32 */
    int n_levels, layers_per_block;     /* len(block_out_channels) 4, layers_per_block 2 */
    int64_t ch[VAE_MAX_LEVELS];         /* block_out_channels in config order: 128 256 512 512 */
    int mid_attention;                  /* mid_block_add_attention */
    float scaling_factor, shift_factor; /* for the caller: z = latents / scaling + shift */
} vae_config;

typedef struct vae_model vae_model;

/* Loads the decoder from src (diffusers or original LDM/BFL names, optionally prefixed vae. or
 * first_stage_model.; sets src's prefix), config from config.json or else the shapes (then 32
 * groups, FLUX's scaling and shift); GPU: resident BF16. Borrows src and ctx for its life. */
err vae_load(wt_source *src, op_ctx *ctx, vae_model **out);
const vae_config *vae_get_config(const vae_model *m);
/* Overrides the latent scaling and shift reported by vae_get_config (single files whose
 * family the caller knows, e.g. SD3.5: 1.5305, 0.0609). */
void vae_set_scaling(vae_model *m, float scaling_factor, float shift_factor);
/* The output's upscaling factor, 2^(n_levels - 1): 8. */
int64_t vae_upscale(const vae_model *m);
/* Allocates the activations for latents [1, C, h, w], freeing any earlier plan; ERR_NOMEM
 * names the bytes needed when they cannot be had. */
err vae_plan(vae_model *m, int64_t h, int64_t w);
/* out [1, out_channels, 8h, 8w] = decoder(z [1, C, h, w]) for the planned h, w; z is already
 * scaled and shifted. Both in the ctx's activation type (CPU F32, CUDA BF16), contiguous;
 * asynchronous on CUDA. z is only read. */
void vae_decode(vae_model *m, tensor out, tensor z);
/* Device bytes held: weights and planned activations (0 on the CPU). */
size_t vae_device_bytes(const vae_model *m);
void vae_free(vae_model *m); /* accepts NULL */

#endif
