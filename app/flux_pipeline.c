/* flux_pipeline: FLUX.1's stages of a job (pipeline_internal.h), mirroring diffusers'
 * pipelines/flux/pipeline_flux.py::FluxPipeline.__call__: encode_prompt (CLIP-L pooled, T5
 * hidden states), prepare_latents and _pack_latents, the timestep loop with
 * FlowMatchEulerDiscreteScheduler.step, _unpack_latents. The VAE is pipeline.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/pipeline_internal.h"
#include "core/log.h"
#include "text_encoder/clip.h"
#include "text_encoder/clip_tokenizer.h"
#include "text_encoder/t5.h"
#include "text_encoder/t5_tokenizer.h"
#include "unet_dit/flux.h"

#define CLIP_LEN PIPELINE_CLIP_LEN

/* The text states between the encoders and the transformer. */
typedef struct flux_text {
    int32_t clip_ids[CLIP_LEN], *t5_ids;
    pipeline_buf pooled, t5h; /* [1, 768], [1, T, 4096] */
} flux_text;

static const char *const probe_vae[] = {"vae.decoder.conv_in.weight",
                                        "first_stage_model.decoder.conv_in.weight", NULL};
static const char *const probe_clip[] = {
    "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight", NULL};
static const char *const probe_t5[] = {
    "text_encoders.t5xxl.transformer.shared.weight",
    "text_encoders.t5xxl.transformer.encoder.embed_tokens.weight", NULL};
static const char *const probe_none[] = {NULL};

err flux_pipeline_resolve(pipeline_state *r, const pipeline_paths *p) {
    const pipeline_job *j = r->job;
    pipeline_parts *pt = &r->pt;
    pt->vae = pipeline_locate(r, p, 1, p->vae, "vae", probe_vae);
    pt->clip_l = pipeline_locate(r, p, 2, p->clip_l, "text_encoder", probe_clip);
    pt->t5 = pipeline_locate(r, p, 3, p->t5xxl, "text_encoder_2", probe_t5);
    pt->ctok = pipeline_locate(r, p, 4, p->clip_tokenizer, "tokenizer", probe_none);
    pt->ttok = pipeline_locate(r, p, 5, p->t5_tokenizer, "tokenizer_2", probe_none);
    pt->sched = pipeline_locate(r, p, 6, NULL, "scheduler/scheduler_config.json", probe_none);
    static const char *hint = "pass -m MODEL_DIR (a diffusers FLUX.1 folder) or";
    FAIL_IF(!pt->vae, ERR_ARG, "no VAE: %s --vae FILE (ae.safetensors)", hint);
    FAIL_IF(!pt->clip_l, ERR_ARG, "no CLIP-L text encoder: %s --clip_l FILE", hint);
    FAIL_IF(!pt->t5, ERR_ARG, "no T5-XXL text encoder: %s --t5xxl FILE", hint);
    FAIL_IF(!pt->ctok, ERR_ARG,
            "no CLIP tokenizer: %s --clip-tokenizer DIR (vocab.json + merges.txt, or "
            "tokenizer.json)",
            hint);
    FAIL_IF(!pt->ttok, ERR_ARG,
            "no T5 tokenizer: %s --t5-tokenizer DIR (tokenizer.json or spiece.model)", hint);
    FAIL_IF(j->negative || j->cfg_scale >= 0 || j->slg_scale > 0, ERR_ARG,
            "a negative prompt, --cfg-scale and skip-layer guidance are SD3.5's; FLUX.1-dev is "
            "guidance-distilled (--guidance) and schnell takes no guidance");
    /* dev has a guidance embedder, schnell does not (either naming) */
    const int dev = wt_find(r->dit, "time_text_embed.guidance_embedder.linear_1.weight") ||
                    wt_find(r->dit, "guidance_in.in_layer.weight") ||
                    wt_find(r->dit, "model.diffusion_model.guidance_in.in_layer.weight");
    pipeline_info *in = &r->info;
    in->model_name = dev ? "FLUX.1-dev" : "FLUX.1-schnell";
    TRY(pipeline_size(r, 1)); /* FluxPipeline floors sizes to the VAE factor x 2 */
    in->steps = j->steps ? j->steps : dev ? 28 : 4;
    in->guidance = dev ? (j->guidance >= 0 ? j->guidance : 3.5f) : 0.0f;
    in->cfg_scale = 1.0f;
    in->max_seq = j->max_seq ? j->max_seq : 512;
    if (dev)
        sampler_config_flux_dev(&r->sc);
    else
        sampler_config_flux_schnell(&r->sc);
    return ERR_OK;
}

static err tokenize(pipeline_state *r, flux_text *tx) {
    clip_tok *ct = NULL;
    t5_tok *tt = NULL;
    int n_clip = 0, n_t5 = 0;
    err e = clip_tok_load(r->pt.ctok, &ct);
    if (!e) e = clip_tok_encode(ct, r->job->prompt, CLIP_LEN, tx->clip_ids, &n_clip);
    if (!e) e = t5_tok_load(r->pt.ttok, &tt);
    if (!e) e = t5_tok_encode(tt, r->job->prompt, r->info.max_seq, tx->t5_ids, &n_t5);
    clip_tok_free(ct);
    t5_tok_free(tt);
    TRY(e);
    pipeline_warn_cut("CLIP", n_clip, CLIP_LEN - 2);
    pipeline_warn_cut("T5", n_t5, r->info.max_seq - 1);
    return ERR_OK;
}

/* CLIP-L, loaded once: each job's pooled vector */
static err encode_clip(pipeline_state *rs, flux_text *txs, int n) {
    pipeline_state *r0 = &rs[0];
    double t0 = pipeline_now();
    wt_source *s = NULL;
    clip_model *m = NULL;
    err e = wt_open(r0->pt.clip_l, &s);
    if (!e)
        e = r0->pt.clip_l == r0->pt.single
                ? clip_load_prefix(s, r0->ctx, "text_encoders.clip_l.transformer.", &m)
                : clip_load(s, r0->ctx, &m);
    for (int k = 0; !e && k < n; k++) {
        flux_text *tx = &txs[k];
        e = pipeline_buf_make(r0->ctx, 2, (int64_t[]){1, clip_hidden_size(m)}, &tx->pooled);
        /* FLUX takes the final-normed hidden state at the first EOS, unprojected */
        if (!e) clip_encode(m, tx->clip_ids, CLIP_LEN, 0, tx->pooled.t, NULL, NULL);
    }
    if (!e) {
        e = op_ctx_sync(r0->ctx);
        pipeline_mem_mark(r0);
    }
    if (!e) LOG_INFO("CLIP-L: %.2f s", pipeline_now() - t0);
    clip_free(m);
    wt_close(s);
    return e ? err_wrap(e, "CLIP-L text encoder %s", r0->pt.clip_l) : ERR_OK;
}

/* T5, loaded once: each job's hidden states (the jobs share the length) */
static err encode_t5(pipeline_state *rs, flux_text *txs, int n) {
    pipeline_state *r0 = &rs[0];
    const int T = r0->info.max_seq;
    double t0 = pipeline_now();
    wt_source *s = NULL;
    t5_model *m = NULL;
    err e = wt_open(r0->pt.t5, &s);
    if (!e) e = t5_load(s, r0->ctx, T, &m);
    for (int k = 0; !e && k < n; k++) {
        e = pipeline_buf_make(r0->ctx, 3, (int64_t[]){1, T, t5_hidden_size(m)}, &txs[k].t5h);
        if (!e) t5_encode(m, txs[k].t5_ids, T, txs[k].t5h.t);
    }
    if (!e) {
        e = op_ctx_sync(r0->ctx);
        pipeline_mem_mark(r0);
    }
    if (!e)
        LOG_INFO("T5: %d tokens, %.2f s, %.2f GB on the device", T, pipeline_now() - t0,
                 t5_device_bytes(m) / 1e9);
    t5_free(m);
    wt_close(s);
    return e ? err_wrap(e, "T5 text encoder %s", r0->pt.t5) : ERR_OK;
}

/* sig: the sigmas [S + 1], then the timesteps [S] */
static err denoise(pipeline_state *r, flux_model *m, int img, pipeline_buf *lat, pipeline_buf *x,
                   pipeline_buf *vel, const float *sig) {
    const pipeline_job *j = r->job;
    const int S = r->info.steps;
    TRY(pipeline_initial_noise(r, j->seed + (uint64_t)img, lat));
    op_pack2x2(r->ctx, x->t, lat->t);
    for (int i = 0; i < S; i++) {
        double t0 = pipeline_now();
        flux_forward(m, vel->t, x->t, sig[S + 1 + i], r->info.guidance);
        /* the scheduler's dt in float32 (sigmas kept in float32 on the device) */
        op_euler_step(r->ctx, x->t, vel->t, sig[i + 1] - sig[i]);
        TRY(op_ctx_sync(r->ctx));
        pipeline_mem_mark(r);
        LOG_DEBUG("image %d step %d/%d: %.1f ms", img + 1, i + 1, S, (pipeline_now() - t0) * 1e3);
        TRY(pipeline_step_done(r, img, i, S, x->t, vel->t, sig[i + 1], 1));
    }
    op_unpack2x2(r->ctx, lat->t, x->t);
    TRY(op_ctx_sync(r->ctx));
    return pipeline_report_latents(r, img, lat);
}

/* The parts must fit together: T5's width is the transformer's joint_attention_dim, CLIP's
 * the pooled projection's input, and the latents are 16 channels packed 2x2 into 64. */
static err check_parts(const pipeline_state *r, const flux_text *tx, const flux_config *fc) {
    FAIL_IF(fc->ctx_dim != tx->t5h.t.shape[2], ERR_FORMAT,
            "the transformer takes text states of width %lld (joint_attention_dim), but the T5 "
            "encoder %s gives %lld: the two are not parts of one model",
            (long long)fc->ctx_dim, r->pt.t5, (long long)tx->t5h.t.shape[2]);
    FAIL_IF(fc->pooled_dim != tx->pooled.t.shape[1], ERR_FORMAT,
            "the transformer takes a pooled text vector of %lld (pooled_projection_dim), but the "
            "CLIP encoder %s gives %lld: the two are not parts of one model",
            (long long)fc->pooled_dim, r->pt.clip_l, (long long)tx->pooled.t.shape[1]);
    FAIL_IF(fc->in_ch != 64, ERR_UNSUPPORTED,
            "the transformer takes %lld input channels; FLUX.1 packs 16-channel latents 2x2 "
            "into 64",
            (long long)fc->in_ch);
    return ERR_OK;
}

/* One job's images through the loaded transformer: its plan, text and sigmas */
static err run_job(pipeline_state *r, flux_model *m, flux_text *tx, const pipeline_state *prev) {
    const int64_t h2 = r->lh / 2, w2 = r->lw / 2, S = r->info.steps;
    pipeline_buf x = {0}, vel = {0};
    float *sig = malloc(sizeof *sig * (size_t)(2 * S + 1));
    FAIL_IF(!sig, ERR_NOMEM, "out of memory");
    sampler_flux_sigmas(&r->sc, (int)S, h2 * w2, sig);
    sampler_timesteps(&r->sc, (int)S, sig, sig + S + 1);
    err e = check_parts(r, tx, flux_get_config(m));
    /* a plan is kept while the sizes repeat */
    if (!e && (!prev || prev->lh != r->lh || prev->lw != r->lw))
        e = flux_plan(m, h2, w2, r->info.max_seq);
    const int64_t C = flux_get_config(m)->in_ch;
    if (!e) e = pipeline_buf_make(r->ctx, 3, (int64_t[]){1, h2 * w2, C}, &x);
    if (!e) e = pipeline_buf_make(r->ctx, 3, (int64_t[]){1, h2 * w2, C}, &vel);
    if (!e) {
        pipeline_mem_mark(r);
        flux_set_text(m, tx->t5h.t, tx->pooled.t);
    }
    for (int i = 0; !e && i < r->job->batch_count; i++) {
        e = pipeline_buf_make(r->ctx, 4, (int64_t[]){1, 16, r->lh, r->lw}, &r->lat[i]);
        if (!e) e = denoise(r, m, i, &r->lat[i], &x, &vel, sig);
    }
    pipeline_buf_free(&x);
    pipeline_buf_free(&vel);
    free(sig);
    return e;
}

/* The transformer, loaded once, over every job */
static err run_transformer(pipeline_state *rs, flux_text *txs, int n) {
    pipeline_state *r0 = &rs[0];
    wt_source *s = r0->dit;
    double t0 = pipeline_now();
    flux_load_opts o;
    TRY(pipeline_wp_mode(r0, s, &o.mode, &o.budget));
    flux_model *m = NULL;
    err e = flux_load(s, r0->ctx, &o, &m);
    if (!e) pipeline_log_loaded(t0, flux_device_bytes(m), o.mode);
    for (int k = 0; !e && k < n; k++)
        e = run_job(&rs[k], m, &txs[k], k ? &rs[k - 1] : NULL);
    flux_free(m);
    return e ? err_wrap(e, "transformer %s", wt_path(s)) : ERR_OK;
}

err flux_pipeline_stages(pipeline_state *rs, int n) {
    flux_text *txs = calloc((size_t)n, sizeof *txs);
    err e = txs ? ERR_OK : err_set(ERR_NOMEM, "out of memory");
    for (int k = 0; !e && k < n; k++) {
        txs[k].t5_ids = malloc(sizeof *txs[k].t5_ids * (size_t)rs[k].info.max_seq);
        e = txs[k].t5_ids ? tokenize(&rs[k], &txs[k]) : err_set(ERR_NOMEM, "out of memory");
    }
    if (!e) e = encode_clip(rs, txs, n);
    if (!e) e = pipeline_cancelled(rs);
    if (!e) e = encode_t5(rs, txs, n);
    if (!e) e = pipeline_cancelled(rs);
    if (!e) e = run_transformer(rs, txs, n);
    for (int k = 0; txs && k < n; k++) {
        pipeline_buf_free(&txs[k].pooled);
        pipeline_buf_free(&txs[k].t5h);
        free(txs[k].t5_ids);
    }
    free(txs);
    return e;
}
