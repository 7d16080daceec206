/* family_sd3: Stable Diffusion 3.5's row of the family table (internal.h), mirroring diffusers'
 * pipelines/stable_diffusion_3/pipeline_stable_diffusion_3.py::StableDiffusion3Pipeline:
 * encode_prompt (CLIP-L and CLIP-G penultimate states side by side, zero-padded to T5's width
 * and followed by T5's; the two projected pooled vectors side by side), CFG as one batch
 * [negative; positive], skip-layer guidance, the static-shift schedule. The loop and the VAE are
 * sample.c's. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "pipeline/internal.h"
#include "text_encoder/clip.h"
#include "text_encoder/t5.h"
#include "unet_dit/sd3.h"

#define CLIP_LEN PL_CLIP_LEN

/* A job's conditioning of its B prompts (row 0 the negative under CFG), and the loop's
 * buffers. */
typedef struct sd3_cond {
    int B;            /* 2 with CFG, else 1 */
    int T;            /* T5 tokens (77 zero rows without T5, as diffusers) */
    int64_t clip_w;   /* filled so far: the CLIP features' width */
    int64_t pooled_w; /* filled so far: the pooled vector's width */
    int32_t lids[2][CLIP_LEN], gids[2][CLIP_LEN], *tids[2];
    tensor embeds;       /* [B, 77 + T, joint] */
    tensor pooled;       /* [B, pooled_dim] */
    tensor x, vel, skip; /* [B,16,h,w] the CFG batch and its velocity; [1,...] SLG's */
} sd3_cond;

/* The transformer and the sizes it is planned for. */
typedef struct sd3_dit {
    sd3_model *m;
    int64_t B, lh, lw, T;
} sd3_dit;

static const char *const marks[] = {"pos_embed.pos_embed", "pos_embed",
                                    "model.diffusion_model.pos_embed", NULL};
static const char *const probe_vae[] = {"first_stage_model.decoder.conv_in.weight",
                                        "vae.decoder.conv_in.weight", NULL};
static const char *const probe_clip_l[] = {
    "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight", NULL};
static const char *const probe_clip_g[] = {
    "text_encoders.clip_g.transformer.text_model.embeddings.token_embedding.weight", NULL};
static const char *const probe_t5[] = {
    "text_encoders.t5xxl.transformer.shared.weight",
    "text_encoders.t5xxl.transformer.encoder.embed_tokens.weight", NULL};

/* The model cards' defaults (Large 28 steps CFG 3.5, Large Turbo 4 steps without CFG, Medium
 * 40 steps CFG 4.5; SD3 Medium, without q/k norms, 28 and 7.0); T5 256 tokens. */
static const pl_variant variants[] = {
    {"SD3.5-Large", 28, 0.0f, 3.5f, 256},
    {"SD3.5-Large-Turbo", 4, 0.0f, 0.0f, 256},
    {"SD3.5-Medium", 40, 0.0f, 4.5f, 256},
    {"SD3-Medium", 28, 0.0f, 7.0f, 256},
};

static int contains_ci(const char *s, const char *w) {
    for (; *s; s++) {
        size_t i = 0;
        while (w[i] && tolower((unsigned char)s[i]) == w[i])
            i++;
        if (!w[i]) return 1;
    }
    return 0;
}

/* The tensor under the diffusers name or Stability's (with or without the prefix). */
static int has(const wt_source *dit, const char *diffusers, const char *original) {
    char b[256];
    snprintf(b, sizeof b, "model.diffusion_model.%s", original);
    return wt_find(dit, diffusers) || wt_find(dit, original) || wt_find(dit, b);
}

static int variant(const wt_source *dit, const char *path) {
    const int dual = has(dit, "transformer_blocks.0.attn2.to_q.weight",
                         "joint_blocks.0.x_block.attn2.qkv.weight");
    const int qk = has(dit, "transformer_blocks.0.attn.norm_q.weight",
                       "joint_blocks.0.x_block.attn.ln_q.weight");
    /* Large and Large Turbo have the same tensors; the published names tell them apart */
    return !qk ? 3 : dual ? 2 : contains_ci(path, "turbo") ? 1 : 0;
}

static void schedule(int v, sampler_config *sc) {
    (void)v;
    sampler_config_sd3(sc);
}

static void sigmas(const sampler_config *sc, int S, int64_t lh, int64_t lw, float *sig) {
    (void)lh, (void)lw;
    sampler_sd3_sigmas(sc, S, sig);
}

static err resolve(const pl_variant *v, pipeline_info *in) {
    (void)v;
    pipeline_job *j = &in->job;
    const int do_cfg = j->cfg_scale > 1.0f;
    in->active |= JOB_BIT(JOB_CFG_SCALE);
    if (!do_cfg && j->negative)
        LOG_WARN("CFG scale %.2f (no guidance): the negative prompt is not used", j->cfg_scale);
    if (j->slg_scale > 0 && !do_cfg)
        LOG_WARN("skip-layer guidance runs only with CFG (scale > 1); it is off");
    j->negative = do_cfg ? (j->negative ? j->negative : "") : NULL;
    /* a shift given replaces the scheduler's (recorded then; the config's is the model's) */
    if (in->given & JOB_BIT(JOB_SHIFT)) in->active |= JOB_BIT(JOB_SHIFT);
    if (do_cfg) in->active |= JOB_BIT(JOB_NEGATIVE);
    if (j->slg_scale > 0 && do_cfg)
        in->active |= JOB_BIT(JOB_SLG_SCALE) | JOB_BIT(JOB_SKIP_LAYERS) | JOB_BIT(JOB_SLG_START) |
                      JOB_BIT(JOB_SLG_END);
    else
        j->slg_scale = 0, j->n_skip = 0;
    return ERR_OK;
}

/* ---- the prompts ---- */

static err tokenize(pl_run *run, pl_job *jb, sd3_cond *c) {
    const char *prompts[2] = {jb->info.job.negative, jb->info.job.prompt};
    const char **pr = c->B == 2 ? prompts : prompts + 1;
    const clip_tok *lt, *gt;
    const t5_tok *tt = NULL;
    int n[3] = {0};
    TRY(pl_clip_tok(run->s, 0, &lt));
    TRY(pl_clip_tok(run->s, 1, &gt));
    if (pl_part_path(run->s, PL_PART_T5)) TRY(pl_t5_tok(run->s, &tt));
    for (int b = 0; b < c->B; b++) {
        TRY(clip_tok_encode(lt, pr[b], CLIP_LEN, c->lids[b], &n[0]));
        TRY(clip_tok_encode(gt, pr[b], CLIP_LEN, c->gids[b], &n[1]));
        if (tt) TRY(t5_tok_encode(tt, pr[b], c->T, c->tids[b], &n[2]));
        const char *which = b + 1 < c->B ? "negative" : "positive";
        if (n[0] > CLIP_LEN - 2 || n[1] > CLIP_LEN - 2)
            LOG_WARN("the %s prompt is %d CLIP tokens; CLIP-L and CLIP-G see the first %d", which,
                     n[0] > n[1] ? n[0] : n[1], CLIP_LEN - 2);
        if (tt && n[2] > c->T - 1)
            LOG_WARN("the %s prompt is %d T5 tokens; T5 sees the first %d "
                     "(--max-sequence-length)",
                     which, n[2], c->T - 1);
    }
    return ERR_OK;
}

/* One CLIP (L, then G), loaded once: each job's prompts' penultimate states into the next
 * columns of the CLIP rows of its embeds, their projected pooled vectors into the next columns
 * of its pooled. */
static err encode_clip(pl_run *run, int g) {
    const pl_comp comp = g ? PL_CLIP_G : PL_CLIP_L;
    const char *path = pl_part_path(run->s, g ? PL_PART_CLIP_G : PL_PART_CLIP_L);
    const char *name = g ? "CLIP-G" : "CLIP-L";
    clip_model *m;
    TRY(pl_use(run, comp, (void **)&m));
    tensor pool = {0}, pen = {0};
    const int64_t D = clip_hidden_size(m), P = clip_projection_size(m);
    const sd3_cond *c0 = run->jobs[0].cond; /* every job's widths are the transformer's */
    const int64_t joint = c0->embeds.shape[2];
    err e = ERR_OK;
    if (!P)
        e = err_set(ERR_FORMAT,
                    "%s has no text_projection: SD3 takes the projected pooled output "
                    "(CLIPTextModelWithProjection)",
                    path);
    if (!e && c0->clip_w + D > joint)
        e = err_set(ERR_FORMAT,
                    "the CLIP features are %lld wide with %s, more than the transformer's text "
                    "width %lld (joint_attention_dim): the parts are not of one model",
                    (long long)(c0->clip_w + D), name, (long long)joint);
    if (!e && c0->pooled_w + P > c0->pooled.shape[1])
        e = err_set(ERR_FORMAT,
                    "the pooled CLIP vectors are %lld wide with %s, more than the transformer's "
                    "%lld (pooled_projection_dim): the parts are not of one model",
                    (long long)(c0->pooled_w + P), name, (long long)c0->pooled.shape[1]);
    if (!e) e = pl_buf_make(run->ctx, 2, (int64_t[]){1, P}, &pool);
    if (!e) e = pl_buf_make(run->ctx, 3, (int64_t[]){1, CLIP_LEN, D}, &pen);
    for (int k = 0; !e && k < run->n; k++) {
        sd3_cond *c = run->jobs[k].cond;
        for (int b = 0; b < c->B; b++) {
            /* hidden_states[-2] (clip_skip None), text_embeds */
            clip_encode(m, g ? c->gids[b] : c->lids[b], CLIP_LEN, 1, pool, &pen, NULL);
            tensor row = tensor_slice(c->embeds, 0, b, 1);
            op_copy(run->ctx, tensor_slice(tensor_slice(row, 1, 0, CLIP_LEN), 2, c->clip_w, D),
                    pen);
            op_copy(run->ctx, tensor_slice(tensor_slice(c->pooled, 0, b, 1), 1, c->pooled_w, P),
                    pool);
        }
        c->clip_w += D, c->pooled_w += P;
    }
    if (!e) e = op_ctx_sync(run->ctx);
    pl_buf_free(run->ctx, &pool);
    pl_buf_free(run->ctx, &pen);
    return pl_done(run, comp, e);
}

/* T5: each job's last hidden states into the rows after the CLIP rows. */
static err encode_t5(pl_run *run) {
    if (!pl_part_path(run->s, PL_PART_T5)) return ERR_OK; /* the rows stay zero */
    const sd3_cond *c0 = run->jobs[0].cond;
    const int64_t joint = c0->embeds.shape[2];
    t5_model *m;
    TRY(pl_use(run, PL_T5, (void **)&m));
    tensor h = {0};
    err e = ERR_OK;
    if (t5_hidden_size(m) != joint)
        e = err_set(ERR_FORMAT,
                    "the T5 encoder is %lld wide, but the transformer takes text states of width "
                    "%lld (joint_attention_dim): the two are not parts of one model",
                    (long long)t5_hidden_size(m), (long long)joint);
    for (int k = 0; !e && k < run->n; k++) {
        sd3_cond *c = run->jobs[k].cond;
        if (!h.data || h.shape[1] != c->T) {
            pl_buf_free(run->ctx, &h);
            e = pl_buf_make(run->ctx, 3, (int64_t[]){1, c->T, joint}, &h);
        }
        for (int b = 0; !e && b < c->B; b++) {
            t5_encode(m, c->tids[b], c->T, h);
            op_copy(run->ctx, tensor_slice(tensor_slice(c->embeds, 0, b, 1), 1, CLIP_LEN, c->T), h);
        }
    }
    if (!e) e = op_ctx_sync(run->ctx);
    pl_buf_free(run->ctx, &h);
    return pl_done(run, PL_T5, e);
}

/* The transformer's text width (context_embedder's input) and pooled width (text_embedder's),
 * read from its tensors before any encoder runs, so each encoder is checked as it loads. */
static err dit_widths(const pl_run *run, int64_t *joint, int64_t *pooled) {
    const df11_tensor *ce =
        pl_dit_tensor(run->s, "context_embedder.weight", "context_embedder.weight");
    const df11_tensor *te = pl_dit_tensor(run->s, "time_text_embed.text_embedder.linear_1.weight",
                                          "y_embedder.mlp.0.weight");
    FAIL_IF(!ce || !te || ce->ndim != 2 || te->ndim != 2, ERR_FORMAT,
            "%s: no 2-D context_embedder.weight and time_text_embed.text_embedder.linear_1.weight "
            "(or y_embedder.mlp.0.weight)",
            pl_dit_path(run->s));
    *joint = ce->shape[1], *pooled = te->shape[1];
    return ERR_OK;
}

static err cond_make(pl_run *run, pl_job *jb, int64_t joint, int64_t pooled) {
    sd3_cond *c = calloc(1, sizeof *c);
    FAIL_IF(!c, ERR_NOMEM, "out of memory");
    jb->cond = c;
    c->B = jb->info.job.negative ? 2 : 1;
    c->T = pl_part_path(run->s, PL_PART_T5) ? jb->info.job.max_seq : CLIP_LEN;
    for (int b = 0; b < c->B; b++) {
        c->tids[b] = malloc(sizeof *c->tids[b] * (size_t)c->T);
        FAIL_IF(!c->tids[b], ERR_NOMEM, "out of memory");
    }
    TRY(tokenize(run, jb, c));
    TRY(pl_buf_make(run->ctx, 3, (int64_t[]){c->B, CLIP_LEN + c->T, joint}, &c->embeds));
    TRY(pl_buf_make(run->ctx, 2, (int64_t[]){c->B, pooled}, &c->pooled));
    /* torch.nn.functional.pad of the CLIP features to T5's width: zeros */
    TRY(pl_buf_zero(run->ctx, c->embeds));
    return pl_buf_zero(run->ctx, c->pooled);
}

static err encode(pl_run *run) {
    FAIL_IF(pl_schedule(run->s)->dynamic, ERR_UNSUPPORTED,
            "%s: use_dynamic_shifting is set; SD3's pipeline passes no resolution-dependent mu "
            "(its configs use a static shift)",
            pl_part_path(run->s, PL_PART_SCHED));
    int64_t joint = 0, pooled = 0;
    TRY(dit_widths(run, &joint, &pooled));
    for (int k = 0; k < run->n; k++)
        TRY(cond_make(run, &run->jobs[k], joint, pooled));
    TRY(encode_clip(run, 0));
    TRY(encode_clip(run, 1));
    const sd3_cond *c0 = run->jobs[0].cond;
    FAIL_IF(c0->pooled_w != pooled, ERR_FORMAT,
            "the pooled CLIP-L and CLIP-G vectors are %lld wide together, but the transformer "
            "%s takes %lld (pooled_projection_dim)",
            (long long)c0->pooled_w, pl_dit_path(run->s), (long long)pooled);
    TRY(pl_cancelled(run));
    return encode_t5(run);
}

static void cond_free(pl_run *run, pl_job *jb) {
    sd3_cond *c = jb->cond;
    if (!c) return;
    tensor *bufs[] = {&c->embeds, &c->pooled, &c->x, &c->vel, &c->skip};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        pl_buf_free(run->ctx, bufs[i]);
    free(c->tids[0]), free(c->tids[1]);
    free(c);
    jb->cond = NULL;
}

/* ---- the transformer ---- */

static err dit_load(pl_run *run, wt_source *src, void **model) {
    sd3_dit *d = calloc(1, sizeof *d);
    FAIL_IF(!d, ERR_NOMEM, "out of memory");
    sd3_load_opts o;
    err e = pl_dit_mode(run, src, &o.mode, &o.budget);
    if (!e) e = sd3_load(src, run->ctx, &o, &d->m);
    if (!e && sd3_get_config(d->m)->in_ch != 16)
        e = err_set(ERR_UNSUPPORTED, "the transformer takes %lld latent channels; SD3 has 16",
                    (long long)sd3_get_config(d->m)->in_ch);
    if (e) {
        if (d->m) sd3_free(d->m);
        free(d);
        return e;
    }
    pl_log_dit(run, sd3_device_bytes(d->m), o.mode);
    *model = d;
    return ERR_OK;
}

static void dit_free(void *model) {
    sd3_dit *d = model;
    if (d) sd3_free(d->m);
    free(d);
}

static size_t dit_bytes(const void *model) { return sd3_device_bytes(((const sd3_dit *)model)->m); }

/* One job's images are next: its skip layers checked, the plan (its CFG batch), buffers. */
static err prepare(pl_run *run, pl_job *jb) {
    sd3_dit *d = run->dit;
    sd3_cond *c = jb->cond;
    const pipeline_job *j = &jb->info.job;
    /* the skip layers checked now, not at the first step that uses them */
    if (j->slg_scale > 0) TRY(sd3_set_skip_layers(d->m, j->skip_layers, j->n_skip));
    TRY(sd3_set_skip_layers(d->m, NULL, 0));
    const int64_t T = CLIP_LEN + c->T;
    if (d->B != c->B || d->lh != jb->lh || d->lw != jb->lw || d->T != T) {
        d->B = 0;
        TRY(sd3_plan(d->m, c->B, jb->lh, jb->lw, T));
        d->B = c->B, d->lh = jb->lh, d->lw = jb->lw, d->T = T;
    }
    const int64_t shape[4] = {c->B, 16, jb->lh, jb->lw}, one[4] = {1, 16, jb->lh, jb->lw};
    if (c->B == 2) TRY(pl_buf_make(run->ctx, 4, shape, &c->x));
    TRY(pl_buf_make(run->ctx, 4, shape, &c->vel));
    if (j->slg_scale > 0) TRY(pl_buf_make(run->ctx, 4, one, &c->skip));
    return ERR_OK;
}

/* diffusers' test: i > steps * start and i < steps * stop, in float64 */
static int slg_active(const pipeline_job *j, int i) {
    return j->slg_scale > 0 && i > j->steps * j->slg_start && i < j->steps * j->slg_end;
}

static err predict(pl_run *run, pl_job *jb, tensor x, int i, tensor *vout) {
    sd3_dit *d = run->dit;
    sd3_cond *c = jb->cond;
    const pipeline_job *j = &jb->info.job;
    op_ctx *ctx = run->ctx;
    const float t[2] = {jb->sig[j->steps + 1 + i], jb->sig[j->steps + 1 + i]};
    if (c->B == 1) {
        sd3_forward(d->m, c->vel, x, t, c->embeds, c->pooled);
        *vout = c->vel;
        return ERR_OK;
    }
    /* torch.cat([latents] * 2), one forward, noise_pred.chunk(2) */
    op_copy(ctx, tensor_slice(c->x, 0, 0, 1), x);
    op_copy(ctx, tensor_slice(c->x, 0, 1, 1), x);
    sd3_forward(d->m, c->vel, c->x, t, c->embeds, c->pooled);
    const tensor v = tensor_slice(c->vel, 0, 0, 1), cond = tensor_slice(c->vel, 0, 1, 1);
    op_guidance(ctx, v, v, cond, v, j->cfg_scale);
    if (slg_active(j, i)) {
        /* the positive prompt alone with the skipped blocks, then
           noise_pred + (noise_pred_text - noise_pred_skip_layers) * scale */
        TRY(sd3_set_skip_layers(d->m, j->skip_layers, j->n_skip));
        sd3_forward(d->m, c->skip, x, t, tensor_slice(c->embeds, 0, 1, 1),
                    tensor_slice(c->pooled, 0, 1, 1));
        TRY(sd3_set_skip_layers(d->m, NULL, 0));
        op_guidance(ctx, v, v, cond, c->skip, j->slg_scale);
    }
    *vout = v;
    return ERR_OK;
}

const pl_family pl_family_sd3 = {
    .key = "sd3",
    .name = "SD3.5",
    .marks = marks,
    .variants = variants,
    .n_variants = 4,
    .accepts = PL_ACCEPTS_ALL | JOB_BIT(JOB_NEGATIVE) | JOB_BIT(JOB_CFG_SCALE) |
               JOB_BIT(JOB_SLG_SCALE) | JOB_BIT(JOB_SKIP_LAYERS) | JOB_BIT(JOB_SLG_START) |
               JOB_BIT(JOB_SLG_END) | JOB_BIT(JOB_SHIFT),
    .refusal = "--guidance is FLUX.1-dev's distilled guidance; SD3.5 takes --cfg-scale",
    .floor16 = 0, /* StableDiffusion3Pipeline.check_inputs refuses other sizes */
    .vae_scaling = 1.5305f,
    .vae_shift = 0.0609f,
    .parts =
        {
            [PL_PART_VAE] = {"vae", probe_vae, 1, ""},
            [PL_PART_CLIP_L] = {"text_encoder", probe_clip_l, 1, " (clip_l.safetensors)"},
            [PL_PART_CLIP_G] = {"text_encoder_2", probe_clip_g, 1, " (clip_g.safetensors)"},
            [PL_PART_T5] = {"text_encoder_3", probe_t5, 0,
                            "no T5-XXL text encoder (--t5xxl): its 77 tokens are zeros, as in "
                            "diffusers without text_encoder_3; images will follow the prompt less "
                            "closely"},
            [PL_PART_CLIP_TOK] = {"tokenizer", NULL, 1, ""},
            [PL_PART_CLIP_G_TOK] = {"tokenizer_2", NULL, 0, NULL},
            [PL_PART_T5_TOK] = {"tokenizer_3", NULL, 0, ""},
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
    .pack = NULL,
    .unpack = NULL,
    .state_shape = NULL,
};
