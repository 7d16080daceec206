/* internal: what the pipeline's files share and nothing outside pipeline/ sees. The session
 * (session.c) owns the opened model: its parts, tokenizers, the loaded components and the
 * residency choices; a run (pl_run) is one pipeline_run over n jobs (pl_job); the family table
 * (family.h) holds what differs between FLUX.1 and SD3.5; sample.c holds the one sampling loop
 * and the VAE stage that every family goes through. */
#ifndef PIPELINE_INTERNAL_H
#define PIPELINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/ops.h"
#include "core/tensor.h"
#include "pipeline/family.h"
#include "pipeline/pipeline.h"
#include "text_encoder/clip_tokenizer.h"
#include "text_encoder/t5_tokenizer.h"
#include "unet_dit/sampler.h"
#include "weights/weights.h"

#define PL_CLIP_LEN 77 /* CLIP's positions: prompts are padded to them */

/* ---- activations that outlive a stage: BF16 on the device, F32 on the host ---- */

err pl_buf_make(op_ctx *c, int ndim, const int64_t *shape, tensor *t);
void pl_buf_free(op_ctx *c, tensor *t); /* accepts a freed or zeroed one */
err pl_buf_zero(op_ctx *c, tensor t);
err pl_buf_upload(op_ctx *c, tensor t, const float *v); /* host floats in (BF16-rounded) */
err pl_buf_download(op_ctx *c, tensor t, float *v);     /* as host floats */
double pl_now(void);

/* ---- a run ---- */

struct pl_job {
    const pipeline_job *job; /* as given */
    int index;               /* in the run's list, for the callbacks */
    pipeline_info info;      /* resolved */
    int64_t lh, lw;          /* latent size */
    tensor *lat;             /* per image: the final latents [1, 16, lh, lw] */
    float *sig;              /* sigmas [S + 1], then the timesteps [S] */
    void *cond;              /* the family's: conditioning, then the loop's buffers */
};

struct pl_run {
    pipeline_session *s;
    const pl_family *fam;
    op_ctx *ctx;
    int cuda;
    const pipeline_callbacks *cb;
    pl_job *jobs;
    int n;
    void *dit;             /* the transformer, during its stage */
    double t_start;        /* when the run began, for the time to the first step */
    double t_text, t_load; /* seconds spent so far encoding and loading */
};

/* The session's pieces a family uses. */
const pl_variant *pl_variant_of(const pipeline_session *s);
const char *pl_part_path(const pipeline_session *s, pl_part p); /* NULL: absent */
const char *pl_dit_path(const pipeline_session *s);
const sampler_config *pl_schedule(const pipeline_session *s);
/* The tokenizers, loaded on first use and kept: CLIP's (L), CLIP-G's (its own, or CLIP-L's
 * padding with "!"), T5's. */
err pl_clip_tok(pipeline_session *s, int g, const clip_tok **out);
err pl_t5_tok(pipeline_session *s, const t5_tok **out);
/* The transformer's tensor under the diffusers name, or the original one (with or without
 * "model.diffusion_model."); NULL if neither. */
const df11_tensor *pl_dit_tensor(const pipeline_session *s, const char *diffusers,
                                 const char *original);

/* A component for this stage: loaded now unless the session kept it (*model: its handle:
 * clip_model, t5_model, the family's transformer, vae_model). pl_done ends the stage: it reports
 * its time and memory and keeps or frees the model by the residency policy. Errors of the
 * stage come back wrapped with the component and its path. */
err pl_use(pl_run *run, pl_comp c, void **model);
err pl_done(pl_run *run, pl_comp c, err e);
/* The error wrapped with the component's name and path ("T5 text encoder <path>: ..."). */
err pl_wrap(pl_run *run, pl_comp c, err e);
/* The transformer's weight mode from the options and the source (DF11 or not, the budget). */
err pl_dit_mode(const pl_run *run, wt_source *src, wp_mode *mode, size_t *budget);
/* The log line of a transformer just loaded. */
void pl_log_dit(const pl_run *run, size_t device_bytes, wp_mode mode);
/* Device memory, sampled after each load and step: its low is the peak. */
void pl_mem_mark(pl_run *run);
/* ERR_CANCELLED if the caller cancelled. */
err pl_cancelled(const pl_run *run);
/* A prompt longer than the tokenizer's length: warned, as diffusers does. */
void pl_warn_cut(const char *what, int n, int max);

/* sample.c: the one loop over a job's images, and the VAE stage over every job. */
err pl_denoise_job(pl_run *run, pl_job *jb);
err pl_decode_all(pl_run *run);

#endif
