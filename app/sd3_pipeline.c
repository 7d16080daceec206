/* sd3_pipeline: Stable Diffusion 3.5's stages of a job (pipeline_internal.h), mirroring
 * diffusers' pipelines/stable_diffusion_3/pipeline_stable_diffusion_3.py::
 * StableDiffusion3Pipeline: encode_prompt (CLIP-L and CLIP-G penultimate states side by side,
 * zero-padded to T5's width and followed by T5's; the two projected pooled vectors side by
 * side), CFG as one batch [negative; positive], skip-layer guidance, the flow-matching Euler
 * loop. The VAE is pipeline.c's. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/pipeline_internal.h"
#include "core/log.h"
#include "text_encoder/clip.h"
#include "text_encoder/clip_tokenizer.h"
#include "text_encoder/t5.h"
#include "text_encoder/t5_tokenizer.h"
#include "unet_dit/sd3.h"

#define CLIP_LEN PIPELINE_CLIP_LEN

/* The conditioning of the B prompts (row 0 the negative under CFG). */
typedef struct sd3_text {
    int B;            /* 2 with CFG, else 1 */
    int T;            /* T5 tokens (77 zero rows without T5, as diffusers) */
    int64_t joint;    /* the transformer's joint_attention_dim (T5's width) */
    int64_t pooled_w; /* filled so far: the pooled vector's width */
    int64_t clip_w;   /* filled so far: the CLIP features' width */
    int32_t lids[2][CLIP_LEN], gids[2][CLIP_LEN], *tids[2];
    pipeline_buf embeds; /* [B, 77 + T, joint] */
    pipeline_buf pooled; /* [B, pooled_dim] */
} sd3_text;

static const char *const probe_vae[] = {"first_stage_model.decoder.conv_in.weight",
                                        "vae.decoder.conv_in.weight", NULL};
static const char *const probe_clip_l[] = {
    "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight", NULL};
static const char *const probe_clip_g[] = {
    "text_encoders.clip_g.transformer.text_model.embeddings.token_embedding.weight", NULL};
static const char *const probe_t5[] = {
    "text_encoders.t5xxl.transformer.shared.weight",
    "text_encoders.t5xxl.transformer.encoder.embed_tokens.weight", NULL};
static const char *const probe_none[] = {NULL};

static int contains_ci(const char *s, const char *w) {
    for (; *s; s++) {
        size_t i = 0;
        while (w[i] && tolower((unsigned char)s[i]) == w[i])
            i++;
        if (!w[i]) return 1;
    }
    return 0;
}

/* The transformer's tensor under either naming, or NULL. */
static const df11_tensor *dit_tensor(const pipeline_state *r, const char *diffusers,
                                     const char *original) {
    const df11_tensor *t = wt_find(r->dit, diffusers);
    char b[256];
    snprintf(b, sizeof b, "model.diffusion_model.%s", original);
    if (!t) t = wt_find(r->dit, original);
    if (!t) t = wt_find(r->dit, b);
    return t;
}

/* Variant and its diffusers defaults (the model cards': Large 28 steps CFG 3.5, Large Turbo 4
 * steps without CFG, Medium 40 steps CFG 4.5; SD3 Medium, without q/k norms, 28 and 7.0). */
static void variant(pipeline_state *r, int *steps, float *cfg) {
    const int dual = dit_tensor(r, "transformer_blocks.0.attn2.to_q.weight",
                                "joint_blocks.0.x_block.attn2.qkv.weight") != NULL;
    const int qk = dit_tensor(r, "transformer_blocks.0.attn.norm_q.weight",
                              "joint_blocks.0.x_block.attn.ln_q.weight") != NULL;
    /* Large and Large Turbo have the same tensors; the published names tell them apart */
    const int turbo = contains_ci(r->pt.dit, "turbo");
    if (!qk)
        r->info.model_name = "SD3-Medium", *steps = 28, *cfg = 7.0f;
    else if (dual)
        r->info.model_name = "SD3.5-Medium", *steps = 40, *cfg = 4.5f;
    else if (turbo)
        r->info.model_name = "SD3.5-Large-Turbo", *steps = 4, *cfg = 0.0f;
    else
        r->info.model_name = "SD3.5-Large", *steps = 28, *cfg = 3.5f;
}

err sd3_pipeline_resolve(pipeline_state *r, const pipeline_paths *p) {
    const pipeline_job *j = r->job;
    pipeline_parts *pt = &r->pt;
    pt->vae = pipeline_locate(r, p, 1, p->vae, "vae", probe_vae);
    pt->clip_l = pipeline_locate(r, p, 2, p->clip_l, "text_encoder", probe_clip_l);
    pt->clip_g = pipeline_locate(r, p, 3, p->clip_g, "text_encoder_2", probe_clip_g);
    pt->t5 = pipeline_locate(r, p, 4, p->t5xxl, "text_encoder_3", probe_t5);
    pt->ctok = pipeline_locate(r, p, 5, p->clip_tokenizer, "tokenizer", probe_none);
    pt->gtok = pipeline_locate(r, p, 6, p->clip_g_tokenizer, "tokenizer_2", probe_none);
    pt->ttok = pipeline_locate(r, p, 7, p->t5_tokenizer, "tokenizer_3", probe_none);
    pt->sched = pipeline_locate(r, p, 8, NULL, "scheduler/scheduler_config.json", probe_none);
    static const char *hint = "pass -m MODEL_DIR (a diffusers SD3.5 folder) or";
    FAIL_IF(!pt->vae, ERR_ARG, "no VAE: %s --vae FILE", hint);
    FAIL_IF(!pt->clip_l, ERR_ARG, "no CLIP-L text encoder: %s --clip_l FILE (clip_l.safetensors)",
            hint);
    FAIL_IF(!pt->clip_g, ERR_ARG, "no CLIP-G text encoder: %s --clip_g FILE (clip_g.safetensors)",
            hint);
    FAIL_IF(!pt->ctok, ERR_ARG,
            "no CLIP tokenizer: %s --clip-tokenizer DIR (vocab.json + merges.txt, or "
            "tokenizer.json)",
            hint);
    if (!pt->gtok && pt->ctok)
        LOG_INFO("CLIP-G tokenizer: CLIP-L's (%s) padding with \"!\", as SD3's tokenizer_2 "
                 "does (--clip-g-tokenizer DIR to give one)",
                 pt->ctok);
    FAIL_IF(pt->t5 && !pt->ttok, ERR_ARG,
            "no T5 tokenizer: %s --t5-tokenizer DIR (tokenizer.json or spiece.model)", hint);
    if (!pt->t5)
        LOG_WARN("no T5-XXL text encoder (--t5xxl): its 77 tokens are zeros, as in diffusers "
                 "without text_encoder_3; images will follow the prompt less closely");
    FAIL_IF(j->guidance >= 0, ERR_ARG,
            "--guidance is FLUX.1-dev's distilled guidance; SD3.5 takes --cfg-scale");
    int steps;
    float cfg;
    variant(r, &steps, &cfg);
    pipeline_info *in = &r->info;
    TRY(pipeline_size(r, 0));
    in->steps = j->steps ? j->steps : steps;
    in->cfg_scale = j->cfg_scale >= 0 ? j->cfg_scale : cfg;
    in->guidance = 0.0f;
    in->max_seq = j->max_seq ? j->max_seq : 256;
    const int do_cfg = in->cfg_scale > 1.0f;
    in->negative = do_cfg ? (j->negative ? j->negative : "") : NULL;
    if (!do_cfg && j->negative)
        LOG_WARN("CFG scale %.2f (no guidance): the negative prompt is not used", in->cfg_scale);
    if (j->slg_scale > 0 && !do_cfg)
        LOG_WARN("skip-layer guidance runs only with CFG (scale > 1); it is off");
    if (j->slg_scale > 0 && do_cfg) {
        static const int dflt[] = {7, 8, 9};
        in->slg_scale = j->slg_scale;
        in->n_skip = j->n_skip ? j->n_skip : 3;
        memcpy(in->skip_layers, j->n_skip ? j->skip_layers : dflt,
               sizeof(int) * (size_t)in->n_skip);
        in->slg_start = j->slg_start, in->slg_end = j->slg_end;
    }
    sampler_config_sd3(&r->sc);
    return ERR_OK;
}

/* ---- the prompts ---- */

static err tokenize(pipeline_state *r, sd3_text *tx) {
    const char *prompts[2] = {r->info.negative, r->job->prompt};
    const char **pr = tx->B == 2 ? prompts : prompts + 1;
    clip_tok *lt = NULL, *gt = NULL;
    t5_tok *tt = NULL;
    int n[3] = {0};
    err e = clip_tok_load(r->pt.ctok, &lt);
    if (!e)
        e = r->pt.gtok ? clip_tok_load(r->pt.gtok, &gt) : clip_tok_load_pad(r->pt.ctok, "!", &gt);
    if (!e && r->pt.t5) e = t5_tok_load(r->pt.ttok, &tt);
    for (int b = 0; !e && b < tx->B; b++) {
        e = clip_tok_encode(lt, pr[b], CLIP_LEN, tx->lids[b], &n[0]);
        if (!e) e = clip_tok_encode(gt, pr[b], CLIP_LEN, tx->gids[b], &n[1]);
        if (!e && tt) e = t5_tok_encode(tt, pr[b], tx->T, tx->tids[b], &n[2]);
        if (e) break;
        const char *which = b + 1 < tx->B ? "negative" : "positive";
        if (n[0] > CLIP_LEN - 2 || n[1] > CLIP_LEN - 2)
            LOG_WARN("the %s prompt is %d CLIP tokens; CLIP-L and CLIP-G see the first %d", which,
                     n[0] > n[1] ? n[0] : n[1], CLIP_LEN - 2);
        if (tt && n[2] > tx->T - 1)
            LOG_WARN("the %s prompt is %d T5 tokens; T5 sees the first %d "
                     "(--max-sequence-length)",
                     which, n[2], tx->T - 1);
    }
    clip_tok_free(lt);
    clip_tok_free(gt);
    t5_tok_free(tt);
    return e;
}

/* One CLIP (L, then G), loaded once: each job's prompts' penultimate states into the next
 * columns of the CLIP rows of its embeds, their projected pooled vectors into the next columns
 * of its pooled. */
static err encode_clip(pipeline_state *rs, sd3_text *txs, int n, int g) {
    pipeline_state *r0 = &rs[0];
    const char *path = g ? r0->pt.clip_g : r0->pt.clip_l, *name = g ? "CLIP-G" : "CLIP-L";
    double t0 = pipeline_now();
    wt_source *s = NULL;
    clip_model *m = NULL;
    pipeline_buf pool = {0}, pen = {0};
    err e = wt_open(path, &s);
    if (!e)
        e = path == r0->pt.single ? clip_load_prefix(s, r0->ctx,
                                                     g ? "text_encoders.clip_g.transformer."
                                                       : "text_encoders.clip_l.transformer.",
                                                     &m)
                                  : clip_load(s, r0->ctx, &m);
    const int64_t D = e ? 0 : clip_hidden_size(m), P = e ? 0 : clip_projection_size(m);
    const sd3_text *t0x = &txs[0]; /* every job's widths are the transformer's */
    if (!e && !P)
        e = err_set(ERR_FORMAT,
                    "%s has no text_projection: SD3 takes the projected pooled output "
                    "(CLIPTextModelWithProjection)",
                    path);
    if (!e && t0x->clip_w + D > t0x->joint)
        e = err_set(ERR_FORMAT,
                    "the CLIP features are %lld wide with %s, more than the transformer's text "
                    "width %lld (joint_attention_dim): the parts are not of one model",
                    (long long)(t0x->clip_w + D), name, (long long)t0x->joint);
    if (!e && t0x->pooled_w + P > t0x->pooled.t.shape[1])
        e = err_set(ERR_FORMAT,
                    "the pooled CLIP vectors are %lld wide with %s, more than the transformer's "
                    "%lld (pooled_projection_dim): the parts are not of one model",
                    (long long)(t0x->pooled_w + P), name, (long long)t0x->pooled.t.shape[1]);
    if (!e) e = pipeline_buf_make(r0->ctx, 2, (int64_t[]){1, P}, &pool);
    if (!e) e = pipeline_buf_make(r0->ctx, 3, (int64_t[]){1, CLIP_LEN, D}, &pen);
    for (int k = 0; !e && k < n; k++) {
        sd3_text *tx = &txs[k];
        for (int b = 0; b < tx->B; b++) {
            /* hidden_states[-2] (clip_skip None), text_embeds */
            clip_encode(m, g ? tx->gids[b] : tx->lids[b], CLIP_LEN, 1, pool.t, &pen.t, NULL);
            tensor row = tensor_slice(tx->embeds.t, 0, b, 1);
            op_copy(r0->ctx, tensor_slice(tensor_slice(row, 1, 0, CLIP_LEN), 2, tx->clip_w, D),
                    pen.t);
            op_copy(r0->ctx, tensor_slice(tensor_slice(tx->pooled.t, 0, b, 1), 1, tx->pooled_w, P),
                    pool.t);
        }
        tx->clip_w += D, tx->pooled_w += P;
    }
    if (!e) e = op_ctx_sync(r0->ctx);
    if (!e) {
        pipeline_mem_mark(r0);
        LOG_INFO("%s: %.2f s", name, pipeline_now() - t0);
    }
    pipeline_buf_free(&pool);
    pipeline_buf_free(&pen);
    clip_free(m);
    wt_close(s);
    return e ? err_wrap(e, "%s text encoder %s", name, path) : ERR_OK;
}

/* T5, loaded once: each job's last hidden states into the rows after the CLIP rows. */
static err encode_t5(pipeline_state *rs, sd3_text *txs, int n) {
    pipeline_state *r0 = &rs[0];
    if (!r0->pt.t5) return ERR_OK; /* the rows stay zero */
    const int T = txs[0].T;
    const int64_t joint = txs[0].joint;
    double t0 = pipeline_now();
    wt_source *s = NULL;
    t5_model *m = NULL;
    pipeline_buf h = {0};
    err e = wt_open(r0->pt.t5, &s);
    if (!e) e = t5_load(s, r0->ctx, T, &m);
    if (!e && t5_hidden_size(m) != joint)
        e = err_set(ERR_FORMAT,
                    "the T5 encoder is %lld wide, but the transformer takes text states of width "
                    "%lld (joint_attention_dim): the two are not parts of one model",
                    (long long)t5_hidden_size(m), (long long)joint);
    if (!e) e = pipeline_buf_make(r0->ctx, 3, (int64_t[]){1, T, joint}, &h);
    for (int k = 0; !e && k < n; k++)
        for (int b = 0; b < txs[k].B; b++) {
            t5_encode(m, txs[k].tids[b], T, h.t);
            op_copy(r0->ctx, tensor_slice(tensor_slice(txs[k].embeds.t, 0, b, 1), 1, CLIP_LEN, T),
                    h.t);
        }
    if (!e) e = op_ctx_sync(r0->ctx);
    if (!e) {
        pipeline_mem_mark(r0);
        LOG_INFO("T5: %d tokens, %.2f s, %.2f GB on the device", T, pipeline_now() - t0,
                 t5_device_bytes(m) / 1e9);
    }
    pipeline_buf_free(&h);
    t5_free(m);
    wt_close(s);
    return e ? err_wrap(e, "T5 text encoder %s", r0->pt.t5) : ERR_OK;
}

/* ---- the denoising loop ---- */

typedef struct sd3_loop {
    sd3_model *m;
    pipeline_buf x, vel, skip; /* [B,16,h,w] the CFG batch and its velocity; [1,...] SLG's */
    float *sig;                /* sigmas [S + 1], then timesteps [S] */
} sd3_loop;

/* diffusers' test: i > steps * start and i < steps * stop, in float64 */
static int slg_active(const pipeline_info *in, int i) {
    return in->slg_scale > 0 && i > in->steps * in->slg_start && i < in->steps * in->slg_end;
}

static err denoise(pipeline_state *r, sd3_text *tx, sd3_loop *L, int img, pipeline_buf *lat) {
    const pipeline_info *in = &r->info;
    const int S = in->steps, B = tx->B;
    op_ctx *c = r->ctx;
    TRY(pipeline_initial_noise(r, r->job->seed + (uint64_t)img, lat));
    for (int i = 0; i < S; i++) {
        double t0 = pipeline_now();
        const float t[2] = {L->sig[S + 1 + i], L->sig[S + 1 + i]};
        tensor v = L->vel.t;
        if (B == 2) {
            /* torch.cat([latents] * 2), one forward, noise_pred.chunk(2) */
            op_copy(c, tensor_slice(L->x.t, 0, 0, 1), lat->t);
            op_copy(c, tensor_slice(L->x.t, 0, 1, 1), lat->t);
            sd3_forward(L->m, L->vel.t, L->x.t, t, tx->embeds.t, tx->pooled.t);
            v = tensor_slice(L->vel.t, 0, 0, 1);
            const tensor cond = tensor_slice(L->vel.t, 0, 1, 1);
            op_guidance(c, v, v, cond, v, in->cfg_scale);
            if (slg_active(in, i)) {
                /* the positive prompt alone with the skipped blocks, then
                   noise_pred + (noise_pred_text - noise_pred_skip_layers) * scale */
                TRY(sd3_set_skip_layers(L->m, in->skip_layers, in->n_skip));
                sd3_forward(L->m, L->skip.t, lat->t, t, tensor_slice(tx->embeds.t, 0, 1, 1),
                            tensor_slice(tx->pooled.t, 0, 1, 1));
                TRY(sd3_set_skip_layers(L->m, NULL, 0));
                op_guidance(c, v, v, cond, L->skip.t, in->slg_scale);
            }
        } else {
            sd3_forward(L->m, L->vel.t, lat->t, t, tx->embeds.t, tx->pooled.t);
        }
        /* the scheduler's dt in float32 */
        op_euler_step(c, lat->t, v, L->sig[i + 1] - L->sig[i]);
        TRY(op_ctx_sync(c));
        pipeline_mem_mark(r);
        LOG_DEBUG("image %d step %d/%d: %.1f ms", img + 1, i + 1, S, (pipeline_now() - t0) * 1e3);
        TRY(pipeline_step_done(r, img, i, S, lat->t, v, L->sig[i + 1], 0));
    }
    return pipeline_report_latents(r, img, lat);
}

/* One job's images through the loaded transformer: its sigmas, skip layers, plan (the CFG
 * batch) and buffers */
static err run_job(pipeline_state *r, sd3_text *tx, sd3_model *m, const pipeline_state *prev,
                   const sd3_text *ptx) {
    const pipeline_info *in = &r->info;
    sd3_loop L = {.m = m};
    const int S = in->steps;
    L.sig = malloc(sizeof *L.sig * (size_t)(2 * S + 1));
    FAIL_IF(!L.sig, ERR_NOMEM, "out of memory");
    sampler_sd3_sigmas(&r->sc, S, L.sig);
    sampler_timesteps(&r->sc, S, L.sig, L.sig + S + 1);
    err e = ERR_OK;
    /* the skip layers checked now, not at the first step that uses them */
    if (in->slg_scale > 0) e = sd3_set_skip_layers(m, in->skip_layers, in->n_skip);
    if (!e) e = sd3_set_skip_layers(m, NULL, 0);
    /* a plan is kept while the sizes and the CFG batch repeat */
    if (!e && (!prev || prev->lh != r->lh || prev->lw != r->lw || ptx->B != tx->B))
        e = sd3_plan(m, tx->B, r->lh, r->lw, CLIP_LEN + tx->T);
    const int64_t shape[4] = {tx->B, 16, r->lh, r->lw}, one[4] = {1, 16, r->lh, r->lw};
    if (!e && tx->B == 2) e = pipeline_buf_make(r->ctx, 4, shape, &L.x);
    if (!e) e = pipeline_buf_make(r->ctx, 4, shape, &L.vel);
    if (!e && in->slg_scale > 0) e = pipeline_buf_make(r->ctx, 4, one, &L.skip);
    if (!e) pipeline_mem_mark(r);
    for (int i = 0; !e && i < r->job->batch_count; i++) {
        e = pipeline_buf_make(r->ctx, 4, one, &r->lat[i]);
        if (!e) e = denoise(r, tx, &L, i, &r->lat[i]);
    }
    pipeline_buf_free(&L.x);
    pipeline_buf_free(&L.vel);
    pipeline_buf_free(&L.skip);
    free(L.sig);
    return e;
}

/* The transformer, loaded once, over every job */
static err run_transformer(pipeline_state *rs, sd3_text *txs, int n) {
    pipeline_state *r0 = &rs[0];
    wt_source *s = r0->dit;
    double t0 = pipeline_now();
    sd3_load_opts o;
    TRY(pipeline_wp_mode(r0, s, &o.mode, &o.budget));
    sd3_model *m = NULL;
    err e = sd3_load(s, r0->ctx, &o, &m);
    if (!e && sd3_get_config(m)->in_ch != 16)
        e = err_set(ERR_UNSUPPORTED, "the transformer takes %lld latent channels; SD3 has 16",
                    (long long)sd3_get_config(m)->in_ch);
    if (!e) pipeline_log_loaded(t0, sd3_device_bytes(m), o.mode);
    for (int k = 0; !e && k < n; k++)
        e = run_job(&rs[k], &txs[k], m, k ? &rs[k - 1] : NULL, k ? &txs[k - 1] : NULL);
    sd3_free(m);
    return e ? err_wrap(e, "transformer %s", wt_path(s)) : ERR_OK;
}

/* The transformer's text width (context_embedder's input) and pooled width (text_embedder's),
 * read from its tensors before any encoder runs, so each encoder is checked as it loads. */
static err dit_widths(const pipeline_state *r, int64_t *joint, int64_t *pooled) {
    const df11_tensor *ce = dit_tensor(r, "context_embedder.weight", "context_embedder.weight");
    const df11_tensor *te =
        dit_tensor(r, "time_text_embed.text_embedder.linear_1.weight", "y_embedder.mlp.0.weight");
    FAIL_IF(!ce || !te || ce->ndim != 2 || te->ndim != 2, ERR_FORMAT,
            "%s: no 2-D context_embedder.weight and time_text_embed.text_embedder.linear_1.weight "
            "(or y_embedder.mlp.0.weight)",
            wt_path(r->dit));
    *joint = ce->shape[1], *pooled = te->shape[1];
    return ERR_OK;
}

err sd3_pipeline_stages(pipeline_state *rs, int n) {
    pipeline_state *r0 = &rs[0];
    FAIL_IF(r0->sc.dynamic, ERR_UNSUPPORTED,
            "%s: use_dynamic_shifting is set; SD3's pipeline passes no resolution-dependent mu "
            "(its configs use a static shift)",
            r0->pt.sched);
    int64_t joint = 0, pooled = 0;
    TRY(dit_widths(r0, &joint, &pooled));
    sd3_text *txs = calloc((size_t)n, sizeof *txs);
    err e = txs ? ERR_OK : err_set(ERR_NOMEM, "out of memory");
    for (int k = 0; !e && k < n; k++) {
        sd3_text *tx = &txs[k];
        pipeline_state *r = &rs[k];
        tx->B = r->info.negative ? 2 : 1;
        tx->T = r->pt.t5 ? r->info.max_seq : CLIP_LEN;
        tx->joint = joint;
        for (int b = 0; !e && b < tx->B; b++) {
            tx->tids[b] = malloc(sizeof *tx->tids[b] * (size_t)tx->T);
            if (!tx->tids[b]) e = err_set(ERR_NOMEM, "out of memory");
        }
        if (!e) e = tokenize(r, tx);
        if (!e)
            e = pipeline_buf_make(r->ctx, 3, (int64_t[]){tx->B, CLIP_LEN + tx->T, joint},
                                  &tx->embeds);
        if (!e) e = pipeline_buf_make(r->ctx, 2, (int64_t[]){tx->B, pooled}, &tx->pooled);
        /* torch.nn.functional.pad of the CLIP features to T5's width: zeros */
        if (!e) e = pipeline_buf_zero(&tx->embeds);
        if (!e) e = pipeline_buf_zero(&tx->pooled);
    }
    if (!e) e = encode_clip(rs, txs, n, 0);
    if (!e) e = encode_clip(rs, txs, n, 1);
    if (!e && txs[0].pooled_w != pooled)
        e = err_set(ERR_FORMAT,
                    "the pooled CLIP-L and CLIP-G vectors are %lld wide together, but the "
                    "transformer %s takes %lld (pooled_projection_dim)",
                    (long long)txs[0].pooled_w, wt_path(r0->dit), (long long)pooled);
    if (!e) e = pipeline_cancelled(rs);
    if (!e) e = encode_t5(rs, txs, n);
    if (!e) e = pipeline_cancelled(rs);
    if (!e) e = run_transformer(rs, txs, n);
    for (int k = 0; txs && k < n; k++) {
        pipeline_buf_free(&txs[k].embeds);
        pipeline_buf_free(&txs[k].pooled);
        free(txs[k].tids[0]);
        free(txs[k].tids[1]);
    }
    free(txs);
    return e;
}
