/* flux_pipeline: FLUX.1 text-to-image, prompt to RGB pixels, as diffusers' FluxPipeline runs it
 * (MODEL-SPEC §4.3, §6.3): tokenize, CLIP-L pooled + T5 hidden states, the flow-matching Euler
 * loop over the transformer, unpack, latent scale/shift, VAE decode, postprocess. Each stage's
 * weights are loaded, used and released in turn, so peak memory is the largest stage's. The
 * app (cmd_generate.c) owns argv, files and PNG; this owns the models. */
#ifndef APP_FLUX_PIPELINE_H
#define APP_FLUX_PIPELINE_H

#include <stdint.h>

#include "core/err.h"
#include "df11/provider.h"
#include "unet_dit/sampler.h"

/* Where each component is: a diffusers model folder, or each part on its own (a file or a
 * folder; a part given on its own wins over the folder's). */
typedef struct flux_paths {
    const char *model_dir;
    const char *diffusion_model, *vae, *clip_l, *t5xxl;
    const char *clip_tokenizer, *t5_tokenizer;
} flux_paths;

typedef struct flux_job {
    const char *prompt;
    uint64_t seed;
    int width, height;     /* pixels; 0: the model's default (1024) */
    int steps;             /* 0: the model's default (dev 28, schnell 4) */
    float guidance;        /* dev's distilled guidance (diffusers' guidance_scale), default 3.5 */
    int max_seq;           /* T5 tokens; 0: 512 */
    int batch_count;       /* images with seeds seed, seed+1, ... */
    int noise_dtype;       /* -1: as the matching diffusers pipeline (CPU f32, GPU bf16), else a
                              noise_kind */
    int cpu;               /* the CPU reference backend (fp32) instead of CUDA */
    wp_mode mode;          /* GPU transformer weights; -1: resident for BF16, WP_DF11 for DF11 */
    double vram_budget_gb; /* > 0: DF11 weights streamed from host memory under this budget */
} flux_job;

/* What was resolved, for the PNG's parameters and the log. */
typedef struct flux_info {
    const char *model_name; /* "FLUX.1-dev" or "FLUX.1-schnell" */
    char model_hash[17];    /* 16 hex digits of wt_hash over the transformer */
    int width, height, steps, max_seq;
    float guidance;
    const char *noise_dtype; /* "f32", "bf16", ... */
    const char *backend;     /* "cuda" or "cpu" */
} flux_info;

typedef struct flux_callbacks {
    void *ctx;
    /* after each denoising step of image i (of n) */
    void (*on_step)(void *ctx, int image, int n_images, int step, int n_steps);
    /* once the parameters are resolved, before the first image */
    void (*on_info)(void *ctx, const flux_info *info);
    /* (tests) image i's final latents [16, h, w] and its decoded image [3, H, W] in [-1, 1],
       as floats; either may be NULL */
    void (*on_latents)(void *ctx, int image, const float *lat, int64_t h, int64_t w);
    void (*on_decoded)(void *ctx, int image, const float *img, int64_t h, int64_t w);
    /* each finished image: RGB8, w x h, seed; returns an error to stop */
    err (*on_image)(void *ctx, int image, uint64_t seed, const uint8_t *rgb, int w, int h);
} flux_callbacks;

/* Initialises a job with diffusers' defaults (resolved against the model when 0). */
void flux_job_init(flux_job *j);
/* Runs the job; every failure comes back as an err with a message naming the component. */
err flux_pipeline_run(const flux_paths *p, const flux_job *j, const flux_callbacks *cb);

#endif
