/* family_flux: FLUX.1's row of the family table (internal.h), mirroring diffusers'
 * pipelines/flux/pipeline_flux.py::FluxPipeline.__call__: encode_prompt (CLIP-L's pooled
 * output, T5's hidden states), prepare_latents and _pack_latents, the dynamic-shift schedule,
 * the transformer's velocity with the distilled guidance, _unpack_latents. The loop and the VAE
 * are sample.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "pipeline/internal.h"
#include "text_encoder/clip.h"
#include "text_encoder/t5.h"
#include "unet_dit/flux.h"

/* A job's conditioning and the transformer's output buffer. */
typedef struct flux_cond {
    int32_t clip_ids[PL_CLIP_LEN], *t5_ids;
    tensor pooled, t5h; /* [1, 768], [1, T, 4096] */
    tensor vel;         /* [1, N, 64] */
} flux_cond;

/* The transformer and the sizes it is planned for. */
typedef struct flux_dit {
    flux_model *m;
    int64_t h2, w2, T;
} flux_dit;

static const char *const marks[] = {"single_transformer_blocks.0.proj_out.weight",
                                    "single_blocks.0.linear2.weight",
                                    "model.diffusion_model.single_blocks.0.linear2.weight", NULL};
static const char *const probe_vae[] = {"vae.decoder.conv_in.weight",
                                        "first_stage_model.decoder.conv_in.weight", NULL};
static const char *const probe_clip[] = {
    "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight", NULL};
static const char *const probe_t5[] = {
    "text_encoders.t5xxl.transformer.shared.weight",
    "text_encoders.t5xxl.transformer.encoder.embed_tokens.weight", NULL};

/* FluxPipeline's defaults and the model cards' (dev: 28 steps, guidance 3.5; schnell: 4). */
static const pl_variant variants[] = {
    {"FLUX.1-dev", 28, 3.5f, 1.0f, 512},
    {"FLUX.1-schnell", 4, 0.0f, 1.0f, 512},
};

/* dev has a guidance embedder, schnell does not (either naming) */
static int variant(const wt_source *dit, const char *path) {
    (void)path;
    const int dev = wt_find(dit, "time_text_embed.guidance_embedder.linear_1.weight") ||
                    wt_find(dit, "guidance_in.in_layer.weight") ||
                    wt_find(dit, "model.diffusion_model.guidance_in.in_layer.weight");
    return dev ? 0 : 1;
}

static void schedule(int v, sampler_config *sc) {
    if (v == 0)
        sampler_config_flux_dev(sc);
    else
        sampler_config_flux_schnell(sc);
}

/* image_seq_len: the packed tokens, (H/16)(W/16) */
static void sigmas(const sampler_config *sc, int S, int64_t lh, int64_t lw, float *sig) {
    sampler_flux_sigmas(sc, S, (lh / 2) * (lw / 2), sig);
}

static err resolve(const pl_variant *v, pipeline_info *in) {
    /* schnell has no guidance embedder: whatever is given, it runs (and records) 0, and a UI
       has nothing to offer for it */
    if (v->guidance <= 0) {
        in->job.guidance = 0.0f;
        in->accepts &= ~JOB_BIT(JOB_GUIDANCE);
    }
    in->job.cfg_scale = 1.0f;
    in->job.negative = NULL;
    in->active |= JOB_BIT(JOB_GUIDANCE);
    return ERR_OK;
}

/* ---- the prompts ---- */

static err tokenize(pl_run *run, pl_job *jb, flux_cond *c) {
    const clip_tok *ct;
    const t5_tok *tt;
    const int T = jb->info.job.max_seq;
    int n_clip = 0, n_t5 = 0;
    TRY(pl_clip_tok(run->s, 0, &ct));
    TRY(pl_t5_tok(run->s, &tt));
    TRY(clip_tok_encode(ct, jb->info.job.prompt, PL_CLIP_LEN, c->clip_ids, &n_clip));
    TRY(t5_tok_encode(tt, jb->info.job.prompt, T, c->t5_ids, &n_t5));
    pl_warn_cut("CLIP", n_clip, PL_CLIP_LEN - 2);
    pl_warn_cut("T5", n_t5, T - 1);
    return ERR_OK;
}

static err encode(pl_run *run) {
    for (int k = 0; k < run->n; k++) {
        pl_job *jb = &run->jobs[k];
        flux_cond *c = calloc(1, sizeof *c);
        FAIL_IF(!c, ERR_NOMEM, "out of memory");
        jb->cond = c;
        c->t5_ids = malloc(sizeof *c->t5_ids * (size_t)jb->info.job.max_seq);
        FAIL_IF(!c->t5_ids, ERR_NOMEM, "out of memory");
        TRY(tokenize(run, jb, c));
    }
    /* CLIP-L: FLUX takes the final-normed hidden state at the first EOS, unprojected */
    clip_model *cm;
    TRY(pl_use(run, PL_CLIP_L, (void **)&cm));
    err e = ERR_OK;
    for (int k = 0; !e && k < run->n; k++) {
        flux_cond *c = run->jobs[k].cond;
        e = pl_buf_make(run->ctx, 2, (int64_t[]){1, clip_hidden_size(cm)}, &c->pooled);
        if (!e) clip_encode(cm, c->clip_ids, PL_CLIP_LEN, 0, c->pooled, NULL, NULL);
    }
    TRY(pl_done(run, PL_CLIP_L, e));
    TRY(pl_cancelled(run));
    t5_model *tm;
    TRY(pl_use(run, PL_T5, (void **)&tm));
    for (int k = 0; !e && k < run->n; k++) {
        flux_cond *c = run->jobs[k].cond;
        const int T = run->jobs[k].info.job.max_seq;
        e = pl_buf_make(run->ctx, 3, (int64_t[]){1, T, t5_hidden_size(tm)}, &c->t5h);
        if (!e) t5_encode(tm, c->t5_ids, T, c->t5h);
    }
    return pl_done(run, PL_T5, e);
}

static void cond_free(pl_run *run, pl_job *jb) {
    flux_cond *c = jb->cond;
    if (!c) return;
    pl_buf_free(run->ctx, &c->pooled);
    pl_buf_free(run->ctx, &c->t5h);
    pl_buf_free(run->ctx, &c->vel);
    free(c->t5_ids);
    free(c);
    jb->cond = NULL;
}

/* ---- the transformer ---- */

static err dit_load(pl_run *run, wt_source *src, void **model) {
    flux_dit *d = calloc(1, sizeof *d);
    FAIL_IF(!d, ERR_NOMEM, "out of memory");
    flux_load_opts o;
    err e = pl_dit_mode(run, src, &o.mode, &o.budget);
    if (!e) e = flux_load(src, run->ctx, &o, &d->m);
    if (e) {
        free(d);
        return e;
    }
    pl_log_dit(run, flux_device_bytes(d->m), o.mode);
    *model = d;
    return ERR_OK;
}

static void dit_free(void *model) {
    flux_dit *d = model;
    if (d) flux_free(d->m);
    free(d);
}

static size_t dit_bytes(const void *model) {
    return flux_device_bytes(((const flux_dit *)model)->m);
}

/* The parts must fit together: T5's width is the transformer's joint_attention_dim, CLIP's
 * the pooled projection's input, and the latents are 16 channels packed 2x2 into 64. */
static err check_parts(const pl_run *run, const flux_cond *c, const flux_config *fc) {
    FAIL_IF(fc->ctx_dim != c->t5h.shape[2], ERR_FORMAT,
            "the transformer takes text states of width %lld (joint_attention_dim), but the T5 "
            "encoder %s gives %lld: the two are not parts of one model",
            (long long)fc->ctx_dim, pl_part_path(run->s, PL_PART_T5), (long long)c->t5h.shape[2]);
    FAIL_IF(fc->pooled_dim != c->pooled.shape[1], ERR_FORMAT,
            "the transformer takes a pooled text vector of %lld (pooled_projection_dim), but the "
            "CLIP encoder %s gives %lld: the two are not parts of one model",
            (long long)fc->pooled_dim, pl_part_path(run->s, PL_PART_CLIP_L),
            (long long)c->pooled.shape[1]);
    FAIL_IF(fc->in_ch != 64, ERR_UNSUPPORTED,
            "the transformer takes %lld input channels; FLUX.1 packs 16-channel latents 2x2 "
            "into 64",
            (long long)fc->in_ch);
    return ERR_OK;
}

static err prepare(pl_run *run, pl_job *jb) {
    flux_dit *d = run->dit;
    flux_cond *c = jb->cond;
    const int64_t h2 = jb->lh / 2, w2 = jb->lw / 2, T = jb->info.job.max_seq;
    TRY(check_parts(run, c, flux_get_config(d->m)));
    if (d->h2 != h2 || d->w2 != w2 || d->T != T) { /* a plan is kept while the sizes repeat */
        d->h2 = d->w2 = d->T = 0;
        TRY(flux_plan(d->m, h2, w2, T));
        d->h2 = h2, d->w2 = w2, d->T = T;
    }
    TRY(pl_buf_make(run->ctx, 3, (int64_t[]){1, h2 * w2, 64}, &c->vel));
    flux_set_text(d->m, c->t5h, c->pooled);
    return ERR_OK;
}

/* jb->sig holds the sigmas [S + 1], then the timesteps [S] */
static err predict(pl_run *run, pl_job *jb, tensor x, int i, tensor *v) {
    flux_dit *d = run->dit;
    flux_cond *c = jb->cond;
    flux_forward(d->m, c->vel, x, jb->sig[jb->info.job.steps + 1 + i], jb->info.job.guidance);
    *v = c->vel;
    return ERR_OK;
}

static void state_shape(int64_t lh, int64_t lw, int64_t shape[4], int *ndim) {
    shape[0] = 1, shape[1] = (lh / 2) * (lw / 2), shape[2] = 64;
    *ndim = 3;
}

const pl_family pl_family_flux = {
    .key = "flux",
    .name = "FLUX.1",
    .marks = marks,
    .variants = variants,
    .n_variants = 2,
    .accepts = PL_ACCEPTS_ALL | JOB_BIT(JOB_GUIDANCE),
    .refusal = "a negative prompt, --cfg-scale, skip-layer guidance and --flow-shift are "
               "SD3.5's; FLUX.1-dev is guidance-distilled (--guidance) and schnell takes no "
               "guidance",
    .floor16 = 1, /* FluxPipeline floors sizes to the VAE factor x 2 */
    .parts =
        {
            [PL_PART_VAE] = {"vae", probe_vae, 1, " (ae.safetensors)"},
            [PL_PART_CLIP_L] = {"text_encoder", probe_clip, 1, " (clip_l.safetensors)"},
            [PL_PART_T5] = {"text_encoder_2", probe_t5, 1, " (t5xxl_fp16.safetensors)"},
            [PL_PART_CLIP_TOK] = {"tokenizer", NULL, 1, ""},
            [PL_PART_T5_TOK] = {"tokenizer_2", NULL, 1, ""},
            [PL_PART_SCHED] = {"scheduler/scheduler_config.json", NULL, 0, NULL},
        },
    .variant = variant,
    .schedule = schedule,
    .sigmas = sigmas,
    .resolve = resolve,
    .encode = encode,
    .cond_free = cond_free,
    .dit_load = dit_load,
    .dit_free = dit_free,
    .dit_bytes = dit_bytes,
    .prepare = prepare,
    .predict = predict,
    .pack = op_pack2x2,
    .unpack = op_unpack2x2,
    .state_shape = state_shape,
};
