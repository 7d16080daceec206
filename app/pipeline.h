/* pipeline: text to image with FLUX.1 (dev, schnell) or Stable Diffusion 3.5 (Large, Large
 * Turbo, Medium), the family and variant detected from the diffusion model's tensors. The stages
 * run as diffusers' FluxPipeline and StableDiffusion3Pipeline run them (MODEL-SPEC §4.3, §6):
 * tokenize, text encoders, the flow-matching Euler loop over the transformer (with CFG and
 * skip-layer guidance for SD3), latent scale and shift, VAE decode, postprocess. Each stage's
 * weights are loaded, used and released in turn, so peak memory is the largest stage's. The app
 * (cmd_generate.c) owns argv, files and PNGs; this owns the models. */
#ifndef APP_PIPELINE_H
#define APP_PIPELINE_H

#include <stdint.h>

#include "core/err.h"
#include "weights/provider.h"
#include "unet_dit/sampler.h"

#define PIPELINE_MAX_SKIP 64

/* Where each component is: a diffusers model folder (or one checkpoint file holding several
 * parts), or each part on its own (a file or a folder; a part given on its own wins). */
typedef struct pipeline_paths {
    const char *model_dir;
    const char *diffusion_model, *vae, *clip_l, *clip_g, *t5xxl;
    const char *clip_tokenizer, *clip_g_tokenizer, *t5_tokenizer;
} pipeline_paths;

typedef struct pipeline_job {
    const char *prompt;
    const char *negative; /* SD3 with CFG; NULL: "" as in diffusers */
    uint64_t seed;
    int width, height; /* pixels; 0: the model's default (1024) */
    int steps;         /* 0: the variant's default */
    float guidance;    /* FLUX.1-dev's distilled guidance; < 0: 3.5 */
    float cfg_scale;   /* SD3 classifier-free guidance (<= 1: none); < 0: the variant's */
    float slg_scale;   /* SD3 skip-layer guidance scale; 0: off */
    int skip_layers[PIPELINE_MAX_SKIP], n_skip; /* n_skip 0: 7, 8, 9 (Medium's card) */
    double slg_start, slg_end; /* the fraction of the steps it runs in: 0.01 and 0.2 */
    int max_seq;               /* T5 tokens; 0: 512 for FLUX, 256 for SD3 */
    int batch_count;           /* images with seeds seed, seed+1, ... */
    int noise_dtype;           /* -1: as the matching diffusers pipeline (CPU f32, GPU bf16),
                                  else a noise_kind */
    int cpu;                   /* the CPU reference backend (fp32) instead of CUDA */
    wp_mode mode;          /* GPU transformer weights; -1: resident for BF16, WP_DF11 for DF11 */
    double vram_budget_gb; /* > 0: DF11 weights streamed from host memory under this budget */
} pipeline_job;

typedef enum pipeline_family { PIPELINE_FLUX, PIPELINE_SD3 } pipeline_family;

/* What was resolved, for the PNG's parameters and the log. */
typedef struct pipeline_info {
    pipeline_family family;
    const char *model_name; /* "FLUX.1-dev", "SD3.5-Large", ... */
    char model_hash[17];    /* 16 hex digits of wt_hash over the transformer */
    int width, height, steps, max_seq;
    float guidance;       /* FLUX: distilled guidance; SD3: 0 */
    float cfg_scale;      /* SD3: CFG scale (<= 1: none); FLUX: 1 */
    const char *negative; /* SD3 with CFG: the negative prompt; else NULL */
    float slg_scale;      /* 0 when skip-layer guidance is off */
    int skip_layers[PIPELINE_MAX_SKIP], n_skip;
    double slg_start, slg_end;
    const char *noise_dtype; /* "f32", "bf16", ... */
    const char *backend;     /* "cuda" or "cpu" */
} pipeline_info;

/* Callbacks; job is the job's index in pipeline_run_many's list (0 for pipeline_run), image
 * the image's within its job. */
typedef struct pipeline_callbacks {
    void *ctx;
    /* after each denoising step of image i (of n) */
    void (*on_step)(void *ctx, int job, int image, int n_images, int step, int n_steps);
    /* once a job's parameters are resolved, before the models load */
    void (*on_info)(void *ctx, int job, const pipeline_info *info);
    /* a job whose parameters do not fit the model (the message says why): it is left out and
       the others run; without this callback such a job fails the run */
    void (*on_skip)(void *ctx, int job, const char *msg);
    /* (tests) image i's final latents [16, h, w] and its decoded image [3, H, W] in [-1, 1],
       as floats; either may be NULL */
    void (*on_latents)(void *ctx, int job, int image, const float *lat, int64_t h, int64_t w);
    void (*on_decoded)(void *ctx, int job, int image, const float *img, int64_t h, int64_t w);
    /* (previews) after each step of image i: the current estimate of the clean latents,
       x - sigma * v, unpacked to [16, h, w] floats (at the last step the final latents) */
    void (*on_preview)(void *ctx, int job, int image, int step, const float *lat, int64_t h,
                       int64_t w);
    /* when non-NULL and set (from any thread), the run stops after the step or stage it is in
       and returns ERR_CANCELLED */
    const volatile int *cancel;
    /* each finished image: RGB8, w x h, seed; returns an error to stop */
    err (*on_image)(void *ctx, int job, int image, uint64_t seed, const uint8_t *rgb, int w, int h);
} pipeline_callbacks;

/* Initialises a job with diffusers' defaults (resolved against the model when unset). */
void pipeline_job_init(pipeline_job *j);
/* Resolves the job against the model without loading it (the diffusion model's header is
 * read, nothing is hashed): the family, the variant's name and the parameters it would run
 * with (a NULL prompt counts as ""). info->model_hash is left empty. */
err pipeline_describe(const pipeline_paths *p, const pipeline_job *j, pipeline_info *info);
/* Runs the job; every failure comes back as an err with a message naming the component. */
err pipeline_run(const pipeline_paths *p, const pipeline_job *j, const pipeline_callbacks *cb);
/* Runs n jobs with each model loaded once: every job's prompts through the text encoders,
 * then every job's images through the transformer, then through the VAE (the text states and
 * latents of all the jobs are held between the stages: a few MB a job on the device). The jobs
 * share the first job's backend, weight mode, noise and T5 length (cpu, mode, vram_budget_gb,
 * noise_dtype, max_seq); prompts, seeds, sizes, steps and guidance are each job's own. */
err pipeline_run_many(const pipeline_paths *p, const pipeline_job *jobs, int n,
                      const pipeline_callbacks *cb);

#endif
