/* pipeline: text to image with FLUX.1 (dev, schnell) or Stable Diffusion 3.5 (Large, Large
 * Turbo, Medium) as a library. A session opens a model once (a diffusers folder, single files,
 * BF16 or DF11; the family and variant found from the transformer's tensors) and runs any
 * number of jobs; what stays loaded between stages and jobs is its residency policy's choice,
 * and never changes an output bit. The stages run as diffusers' FluxPipeline and
 * StableDiffusion3Pipeline run them (docs/MODEL-SPEC.md §4.3, §6): tokenizers, text encoders,
 * the one flow-matching Euler loop over the family's transformer, latent scale and shift, VAE
 * decode, postprocess. Callers (app/) own argv, files and PNGs; this owns the models. */
#ifndef PIPELINE_PIPELINE_H
#define PIPELINE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "pipeline/job.h"
#include "weights/provider.h"

/* Where each component is: a diffusers model folder (or one checkpoint file holding several
 * parts), or each part on its own (a file or a folder; a part given on its own wins). */
typedef struct pipeline_paths {
    const char *model_dir;
    const char *diffusion_model, *vae, *clip_l, *clip_g, *t5xxl;
    const char *clip_tokenizer, *clip_g_tokenizer, *t5_tokenizer;
} pipeline_paths;

/* What stays loaded between stages and jobs. */
typedef enum pipeline_residency {
    PIPELINE_KEEP_AUTO, /* keep a model while the others' needs still fit the device's free
                           memory (or the VRAM budget), else release it (default) */
    PIPELINE_KEEP_NONE, /* release each stage's model after it: the lowest peak */
    PIPELINE_KEEP_ALL,  /* keep every model loaded: the fastest next job */
} pipeline_residency;

typedef struct pipeline_options {
    int cpu;               /* the CPU reference backend (fp32) instead of CUDA */
    int mode;              /* the transformer's wp_mode; -1: resident for BF16, WP_DF11 for DF11 */
    double vram_budget_gb; /* > 0: DF11 blocks streamed under this budget; AUTO keeps within it */
    pipeline_residency residency;
} pipeline_options;

/* A job as the model runs it, for the PNG's parameters, the log and the callbacks. */
typedef struct pipeline_info {
    const char *family;     /* the family table's key: "flux", "sd3" */
    const char *model_name; /* "FLUX.1-dev", "SD3.5-Large", ... */
    char model_hash[17];    /* 16 hex digits of wt_hash over the transformer ("" if not known) */
    const char *backend;    /* "cuda" or "cpu" */
    /* every parameter in effect set; its strings are the caller's job's (valid while it is) */
    pipeline_job job;
    uint32_t given;   /* JOB_BIT(k): the job gave parameter k */
    uint32_t accepts; /* JOB_BIT(k): the model takes parameter k */
    uint32_t active;  /* JOB_BIT(k): k is in effect for this job (what a PNG records) */
} pipeline_info;

/* Time and memory of one stage of a run. */
typedef struct pipeline_stage_report {
    const char *stage;   /* "CLIP-L", "T5", "transformer", "VAE", ... */
    double seconds;      /* the stage, its load included */
    int loaded;          /* the stage loaded its model (0: the session had kept it) */
    double load_seconds; /* the load's share of seconds */
    size_t model_bytes;  /* device bytes the model holds (0 on the CPU) */
    size_t peak_bytes;   /* device memory in use at the stage's peak, above the CUDA context */
    int kept;            /* the model stays loaded after the stage */
} pipeline_stage_report;

/* Callbacks; job is the job's index in pipeline_run's list, image the image's within it. */
typedef struct pipeline_callbacks {
    void *ctx;
    /* after each denoising step of image i (of n) */
    void (*on_step)(void *ctx, int job, int image, int n_images, int step, int n_steps);
    /* once a job's parameters are resolved, before the models run */
    void (*on_info)(void *ctx, int job, const pipeline_info *info);
    /* a job whose parameters do not fit the model (the message says why): it is left out and
       the others run; without this callback such a job fails the run */
    void (*on_skip)(void *ctx, int job, const char *msg);
    /* after each stage (the log has the same at INFO) */
    void (*on_stage)(void *ctx, const pipeline_stage_report *r);
    /* (tests) image i's final latents [16, h, w] and its decoded image [3, H, W] in [-1, 1],
       as floats; either may be NULL */
    void (*on_latents)(void *ctx, int job, int image, const float *lat, int64_t h, int64_t w);
    void (*on_decoded)(void *ctx, int job, int image, const float *img, int64_t h, int64_t w);
    /* (previews) after each step of image i: the current estimate of the clean latents,
       x - sigma * v, as [16, h, w] floats (at the last step the final latents) */
    void (*on_preview)(void *ctx, int job, int image, int step, const float *lat, int64_t h,
                       int64_t w);
    /* when non-NULL and set (from any thread), the run stops after the step or stage it is in
       and returns ERR_CANCELLED */
    const volatile int *cancel;
    /* each finished image: RGB8, w x h, seed; returns an error to stop */
    err (*on_image)(void *ctx, int job, int image, uint64_t seed, const uint8_t *rgb, int w, int h);
} pipeline_callbacks;

typedef struct pipeline_session pipeline_session;

/* Options with their defaults (GPU, weights as stored, AUTO residency). */
void pipeline_options_init(pipeline_options *o);
/* Opens the model: finds the diffusion model (-m's transformer/, a checkpoint file, or the
 * part given), its family and variant, and the other parts; loads nothing yet. */
err pipeline_open(const pipeline_paths *p, const pipeline_options *o, pipeline_session **out);
void pipeline_close(pipeline_session *s); /* accepts NULL; frees every model */
/* The model's name and family, and its defaults as the job resolves (an empty job). */
err pipeline_describe(pipeline_session *s, pipeline_info *info);
/* Resolves job j against the model without running it: info as a run would give it (its
 * model_hash "" until a run has hashed the weights), or the reason it does not fit. */
err pipeline_resolve(pipeline_session *s, const pipeline_job *j, pipeline_info *info);
/* Runs n jobs with each model loaded at most once: every job's prompts through the text
 * encoders, then every job's images through the transformer, then through the VAE (the text
 * states and latents of all the jobs are held between the stages: a few MB a job on the
 * device). Jobs may differ in every parameter. The same job gives the same bytes whatever
 * the residency, the other jobs of the run, and the session's history. */
err pipeline_run(pipeline_session *s, const pipeline_job *jobs, int n,
                 const pipeline_callbacks *cb);
/* The default of parameter k as the help states it: the schema's, or each variant's of the
 * families that take k ("FLUX.1-dev 28, FLUX.1-schnell 4, ..."); "" if it has none. */
const char *pipeline_default_text(job_key k, char *buf, size_t n);
/* Device bytes the session's loaded models hold now (0 on the CPU). */
size_t pipeline_loaded_bytes(const pipeline_session *s);

#endif
