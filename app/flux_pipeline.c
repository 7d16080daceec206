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
static const char *const probe_t5[] = {"text_encoders.t5xxl.transformer.shared.weight",
                                       "text_encoders.t5xxl.transformer.encoder.embed_tokens.weight",
                                       NULL};
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

static err encode_clip(pipeline_state *r, flux_text *tx) {
    double t0 = pipeline_now();
    wt_source *s = NULL;
    clip_model *m = NULL;
    err e = wt_open(r->pt.clip_l, &s);
    if (!e)
        e = r->pt.clip_l == r->pt.single
                ? clip_load_prefix(s, r->ctx, "text_encoders.clip_l.transformer.", &m)
                : clip_load(s, r->ctx, &m);
    if (!e) e = pipeline_buf_make(r->ctx, 2, (int64_t[]){1, clip_hidden_size(m)}, &tx->pooled);
    if (!e) {
        /* FLUX takes the final-normed hidden state at the first EOS, unprojected */
        clip_encode(m, tx->clip_ids, CLIP_LEN, 0, tx->pooled.t, NULL, NULL);
        e = op_ctx_sync(r->ctx);
        pipeline_mem_mark(r);
    }
    if (!e) LOG_INFO("CLIP-L: %.2f s", pipeline_now() - t0);
    clip_free(m);
    wt_close(s);
    return e ? err_wrap(e, "CLIP-L text encoder %s", r->pt.clip_l) : ERR_OK;
}

static err encode_t5(pipeline_state *r, flux_text *tx) {
    double t0 = pipeline_now();
    wt_source *s = NULL;
    t5_model *m = NULL;
    err e = wt_open(r->pt.t5, &s);
    if (!e) e = t5_load(s, r->ctx, r->info.max_seq, &m);
    if (!e)
        e = pipeline_buf_make(r->ctx, 3, (int64_t[]){1, r->info.max_seq, t5_hidden_size(m)},
                              &tx->t5h);
    if (!e) {
        t5_encode(m, tx->t5_ids, r->info.max_seq, tx->t5h.t);
        e = op_ctx_sync(r->ctx);
        pipeline_mem_mark(r);
    }
    if (!e)
        LOG_INFO("T5: %d tokens, %.2f s, %.2f GB on the device", r->info.max_seq,
                 pipeline_now() - t0, t5_device_bytes(m) / 1e9);
    t5_free(m);
    wt_close(s);
    return e ? err_wrap(e, "T5 text encoder %s", r->pt.t5) : ERR_OK;
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
        if (img == 0 && i == 0)
            LOG_INFO("first step done %.2f s after the start", pipeline_now() - r->t_start);
        if (r->cb->on_step) r->cb->on_step(r->cb->ctx, img, j->batch_count, i + 1, S);
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

static err run_transformer(pipeline_state *r, flux_text *tx) {
    const pipeline_job *j = r->job;
    wt_source *s = r->dit;
    double t0 = pipeline_now();
    flux_load_opts o;
    TRY(pipeline_wp_mode(r, s, &o.mode, &o.budget));
    flux_model *m = NULL;
    pipeline_buf x = {0}, vel = {0};
    float *sig = malloc(sizeof *sig * (size_t)(2 * r->info.steps + 1));
    FAIL_IF(!sig, ERR_NOMEM, "out of memory");
    const int64_t h2 = r->lh / 2, w2 = r->lw / 2;
    sampler_flux_sigmas(&r->sc, r->info.steps, h2 * w2, sig);
    sampler_timesteps(&r->sc, r->info.steps, sig, sig + r->info.steps + 1);
    err e = flux_load(s, r->ctx, &o, &m);
    if (!e) e = check_parts(r, tx, flux_get_config(m));
    if (!e) e = flux_plan(m, h2, w2, r->info.max_seq);
    const int64_t C = e ? 0 : flux_get_config(m)->in_ch;
    if (!e) e = pipeline_buf_make(r->ctx, 3, (int64_t[]){1, h2 * w2, C}, &x);
    if (!e) e = pipeline_buf_make(r->ctx, 3, (int64_t[]){1, h2 * w2, C}, &vel);
    if (!e) {
        pipeline_mem_mark(r);
        flux_set_text(m, tx->t5h.t, tx->pooled.t);
        LOG_INFO("transformer: loaded in %.2f s, %.2f GB on the device (%s)", pipeline_now() - t0,
                 flux_device_bytes(m) / 1e9,
                 o.mode == WP_RESIDENT ? "resident"
                 : o.mode == WP_DF11   ? "DF11, decoded per block"
                                       : "DF11, streamed");
    }
    for (int i = 0; !e && i < j->batch_count; i++) {
        e = pipeline_buf_make(r->ctx, 4, (int64_t[]){1, 16, r->lh, r->lw}, &r->lat[i]);
        if (!e) e = denoise(r, m, i, &r->lat[i], &x, &vel, sig);
    }
    pipeline_buf_free(&x);
    pipeline_buf_free(&vel);
    free(sig);
    flux_free(m);
    return e ? err_wrap(e, "transformer %s", wt_path(s)) : ERR_OK;
}

err flux_pipeline_stages(pipeline_state *r) {
    flux_text tx = {0};
    tx.t5_ids = malloc(sizeof *tx.t5_ids * (size_t)r->info.max_seq);
    err e = tx.t5_ids ? ERR_OK : err_set(ERR_NOMEM, "out of memory");
    if (!e) e = tokenize(r, &tx);
    if (!e) e = encode_clip(r, &tx);
    if (!e) e = encode_t5(r, &tx);
    if (!e) e = run_transformer(r, &tx);
    pipeline_buf_free(&tx.pooled);
    pipeline_buf_free(&tx.t5h);
    free(tx.t5_ids);
    return e;
}
