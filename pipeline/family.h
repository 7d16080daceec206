/* family: the family table, the one place that knows what differs between model families
 * (FLUX.1, SD3.5): a row each (pl_family, in family_flux.c and family_sd3.c) with its parts,
 * variants and their defaults, the job parameters it takes, and the functions the session and
 * the one sampling loop call (encode, the transformer's load, prepare and predict, latent
 * packing, sigmas). Internal to pipeline/; docs/ARCHITECTURE.md has the recipe for a new row. */
#ifndef PIPELINE_FAMILY_H
#define PIPELINE_FAMILY_H

#include <stddef.h>
#include <stdint.h>

#include "core/ops.h"
#include "core/tensor.h"
#include "pipeline/pipeline.h"
#include "unet_dit/sampler.h"
#include "weights/weights.h"

typedef struct pl_run pl_run;
typedef struct pl_job pl_job;

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
 * needs it (a tokenizer is needed where its encoder is there), and a note: for a part it needs,
 * the file users know it by, added to the message when it is missing; for one it does not, the
 * warning when it is missing. */
typedef struct pl_part_spec {
    const char *sub;
    const char *const *probes;
    int required;
    const char *note;
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

#endif
