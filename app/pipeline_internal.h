/* pipeline_internal: what pipeline.c (the shared stages: parts, noise, VAE, postprocess) hands
 * the family stages in flux_pipeline.c and sd3_pipeline.c. Not part of the app's interface. */
#ifndef APP_PIPELINE_INTERNAL_H
#define APP_PIPELINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "app/pipeline.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "weights/weights.h"

#define PIPELINE_CLIP_LEN 77

/* An activation that outlives a stage: BF16 on the device, F32 on the host. */
typedef struct pipeline_buf {
    tensor t;
    int dev;
} pipeline_buf;

/* The resolved component paths (NULL: absent). */
typedef struct pipeline_parts {
    char b[10][4096];
    const char *dit, *vae, *clip_l, *clip_g, *t5, *ctok, *gtok, *ttok, *sched;
    const char *single; /* the checkpoint file -m named, which may hold several parts */
} pipeline_parts;

/* One job of a run; the states of a run share the context and the diffusion model's source. */
typedef struct pipeline_state {
    const pipeline_job *job;
    int index; /* the job's index in the run's list, for the callbacks */
    const pipeline_callbacks *cb;
    pipeline_parts pt;
    wt_source *dit; /* the diffusion model, open from detection to the end of its stage */
    op_ctx *ctx;
    int cuda;
    pipeline_info info;
    pipeline_buf *lat; /* per image: final latents [1, 16, h, w] */
    int64_t lh, lw;    /* latent size */
    sampler_config sc;
    noise_kind noise;
    double t_start;         /* when the job began, for the time to the first step */
    size_t free0, free_min; /* device memory free after the CUDA context, and its low */
} pipeline_state;

double pipeline_now(void);
/* Device memory in use, sampled after each load and step: its low is the peak. */
void pipeline_mem_mark(pipeline_state *r);

err pipeline_buf_make(op_ctx *c, int ndim, const int64_t *shape, pipeline_buf *b);
void pipeline_buf_free(pipeline_buf *b); /* accepts a freed or zeroed one */
err pipeline_buf_zero(pipeline_buf *b);
err pipeline_buf_upload(pipeline_buf *b, const float *v);
err pipeline_buf_download(op_ctx *c, const pipeline_buf *b, float *v);

/* The part given on its own, else <dir>/<sub> if it exists, else NULL. */
const char *pipeline_part(char *buf, size_t n, const char *own, const char *dir, const char *sub);
/* A part: the one given on its own, else the checkpoint -m named when it holds any tensor named
 * in probes (NULL-terminated), else the folder's <sub> (buffer b[slot]), else NULL. */
const char *pipeline_locate(pipeline_state *r, const pipeline_paths *p, int slot, const char *own,
                            const char *sub, const char *const *probes);
/* Image i's starting latents [1, 16, h, w] into x, as diffusers' prepare_latents draws them
 * (a CPU generator seeded seed + i, in the pipeline's dtype). */
err pipeline_initial_noise(pipeline_state *r, uint64_t seed, pipeline_buf *x);
/* The scheduler config: the folder's scheduler_config.json over the given defaults. */
err pipeline_schedule(pipeline_state *r);
/* Image i's final latents to on_latents, when the test asked. */
err pipeline_report_latents(pipeline_state *r, int img, const pipeline_buf *lat);
/* The log line of a transformer loaded since t0 in the given weight mode */
void pipeline_log_loaded(double t0, size_t device_bytes, wp_mode mode);
/* The transformer's weight mode from the job and the source (DF11 or not, --vram-budget). */
err pipeline_wp_mode(const pipeline_state *r, wt_source *s, wp_mode *mode, size_t *budget);
/* The image size from the job (default 1024): multiples of 16, floored with a warning
 * (FLUX) or an error (SD3, as diffusers' check_inputs); sets r->lh, r->lw. */
err pipeline_size(pipeline_state *r, int floor16);
/* Warns when a prompt was cut to the tokenizer's length (as diffusers does). */
void pipeline_warn_cut(const char *what, int n, int max);

/* The families' parts, defaults and names (one job), then their stages for the n jobs of a run
 * rs[0..n), each model loaded once, up to the final latents (rs[k].lat; they release their text
 * states). */
err flux_pipeline_resolve(pipeline_state *r, const pipeline_paths *p);
err flux_pipeline_stages(pipeline_state *rs, int n);
err sd3_pipeline_resolve(pipeline_state *r, const pipeline_paths *p);
err sd3_pipeline_stages(pipeline_state *rs, int n);
/* After step i (of S) of image img: the first-step log line, the step callback, the preview
 * of x - sigma * v (the latents x and their velocity v after the step, sigma the step's next
 * sigma; packed: FLUX's 2x2-packed tokens) when asked for, then ERR_CANCELLED if the caller
 * cancelled. */
err pipeline_step_done(pipeline_state *r, int img, int i, int S, tensor x, tensor v, float sigma,
                       int packed);
/* ERR_CANCELLED if the caller cancelled */
err pipeline_cancelled(const pipeline_state *r);

#endif
