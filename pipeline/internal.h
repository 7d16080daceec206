/* internal: what the pipeline's files share and nothing outside pipeline/ sees. The session
 * (session.c) owns the opened model: its parts, tokenizers, the loaded components and the
 * residency choices; a run (pl_run) is one pipeline_run over n jobs (pl_job); a family
 * (pl_family, one row each in family_flux.c and family_sd3.c) is everything that differs
 * between FLUX.1 and SD3.5; sample.c holds the one sampling loop and the VAE stage that every
 * family goes through. */
#ifndef PIPELINE_INTERNAL_H
#define PIPELINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/ops.h"
#include "core/tensor.h"
#include "pipeline/pipeline.h"
#include "text_encoder/clip_tokenizer.h"
#include "text_encoder/t5_tokenizer.h"
#include "unet_dit/sampler.h"
#include "weights/weights.h"

#define PL_CLIP_LEN 77 /* CLIP's positions: prompts are padded to them */

typedef struct pl_run pl_run;
typedef struct pl_job pl_job;

/* ---- activations that outlive a stage: BF16 on the device, F32 on the host ---- */

err pl_buf_make(op_ctx *c, int ndim, const int64_t *shape, tensor *t);
void pl_buf_free(op_ctx *c, tensor *t); /* accepts a freed or zeroed one */
err pl_buf_zero(op_ctx *c, tensor t);
err pl_buf_upload(op_ctx *c, tensor t, const float *v); /* host floats in (BF16-rounded) */
err pl_buf_download(op_ctx *c, tensor t, float *v);     /* as host floats */
double pl_now(void);

/* ---- the parts of a model ---- */

typedef enum pl_part {
    PL_PART_VAE,
    PL_PART_CLIP_L,
    PL_PART_CLIP_G,
    PL_PART_T5,
    PL_PART_CLIP_TOK,
    PL_PART_CLIP_G_TOK,
    PL_PART_T5_TOK,
    PL_PART_SCHED,
    PL_N_PARTS
} pl_part;

/* Where a family finds a part: its diffusers sub-folder (NULL: the family has no such part),
 * the tensors that show a single checkpoint file holds it (NULL-terminated), whether the run
 * needs it, and what to say when it is missing (an error when required, else a warning; a
 * tokenizer is required where its encoder is there). */
typedef struct pl_part_spec {
    const char *sub;
    const char *const *probes;
    int required;
    const char *missing;
} pl_part_spec;

/* ---- the family table ---- */

/* A variant and the defaults it gives the job's parameters (diffusers' and the model cards'). */
typedef struct pl_variant {
    const char *name; /* "FLUX.1-dev" */
    int steps;
    float guidance;  /* FLUX: the distilled guidance (0: the variant has no guidance embedder) */
    float cfg_scale; /* SD3: the CFG scale; FLUX: 1 (no CFG) */
    int max_seq;     /* T5 tokens */
} pl_variant;

/* The parameters every family takes. */
#define PL_ACCEPTS_ALL                                                                             \
    (JOB_BIT(JOB_PROMPT) | JOB_BIT(JOB_SEED) | JOB_BIT(JOB_WIDTH) | JOB_BIT(JOB_HEIGHT) |          \
     JOB_BIT(JOB_STEPS) | JOB_BIT(JOB_MAX_SEQ) | JOB_BIT(JOB_NOISE) | JOB_BIT(JOB_BATCH_COUNT))

/* The models a session loads, one slot each. */
typedef enum pl_comp { PL_CLIP_L, PL_CLIP_G, PL_T5, PL_DIT, PL_VAE, PL_N_COMP } pl_comp;

typedef struct pl_family {
    const char *key;          /* "flux", "sd3": pipeline_info.family, the preview's projection */
    const char *name;         /* "FLUX.1", "SD3.5": for people */
    const char *const *marks; /* the transformer's tensors that show the family */
    const pl_variant *variants;
    int n_variants;
    uint32_t accepts;    /* JOB_BIT(k) of the parameters it takes */
    const char *refusal; /* why it refuses one it does not take */
    int floor16;         /* 1: sizes floored to multiples of 16 with a warning; 0: refused */
    float vae_scaling, vae_shift; /* for a VAE without config.json (0: the VAE's defaults) */
    pl_part_spec parts[PL_N_PARTS];
    /* the variant (an index into variants) from the transformer's tensors and its path */
    int (*variant)(const wt_source *dit, const char *path);
    /* the scheduler's defaults before scheduler_config.json */
    void (*schedule)(int variant, sampler_config *sc);
    /* sigmas[S + 1] for S steps at latent size lh x lw */
    void (*sigmas)(const sampler_config *sc, int S, int64_t lh, int64_t lw, float *sig);
    /* the family's own rules over a job with its defaults filled (what is in effect) */
    err (*resolve)(const pl_variant *v, pipeline_info *in);
    /* every job's conditioning (tokenizers, then each text encoder through pl_use) */
    err (*encode)(pl_run *run);
    void (*cond_free)(pl_run *run, pl_job *jb); /* the conditioning and the loop's buffers */
    /* the transformer: load from src, free, device bytes */
    err (*dit_load)(pl_run *run, wt_source *src, void **model);
    void (*dit_free)(void *model);
    size_t (*dit_bytes)(const void *model);
    /* a job's images are next: check the parts fit, plan (when the sizes differ from the
       transformer's plan), set its text */
    err (*prepare)(pl_run *run, pl_job *jb);
    /* the velocity for state x at step i (guidance combined), a tensor the family owns */
    err (*predict)(pl_run *run, pl_job *jb, tensor x, int i, tensor *v);
    /* the state the loop steps, from the latents [1,16,h,w] and back; NULL: the latents */
    void (*pack)(op_ctx *c, tensor x, tensor lat);
    void (*unpack)(op_ctx *c, tensor lat, tensor x);
    void (*state_shape)(int64_t lh, int64_t lw, int64_t shape[4], int *ndim);
} pl_family;

extern const pl_family pl_family_flux, pl_family_sd3;

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
