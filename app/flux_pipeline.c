/* flux_pipeline: FLUX.1 text-to-image in stages (flux_pipeline.h). Mirrors diffusers'
 * pipelines/flux/pipeline_flux.py::FluxPipeline.__call__: encode_prompt, prepare_latents,
 * the timestep loop with FlowMatchEulerDiscreteScheduler.step, _unpack_latents, the VAE's
 * scaling and shift, vae.decode, VaeImageProcessor.postprocess. */
#include "app/flux_pipeline.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/cuda/gpu.h"
#include "core/fileio.h"
#include "core/half.h"
#include "core/log.h"
#include "core/ops.h"
#include "df11/weights.h"
#include "text_encoder/clip.h"
#include "text_encoder/clip_tokenizer.h"
#include "text_encoder/t5.h"
#include "text_encoder/t5_tokenizer.h"
#include "unet_dit/flux.h"
#include "vae/vae.h"

#define CLIP_LEN 77

void flux_job_init(flux_job *j) {
    memset(j, 0, sizeof *j);
    j->guidance = 3.5f;
    j->batch_count = 1;
    j->noise_dtype = -1;
    j->mode = (wp_mode)-1;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- where the components are ---- */

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* The part given on its own, else <model_dir>/<sub> if it exists, else NULL. */
static const char *part(char *buf, size_t n, const char *own, const char *dir, const char *sub) {
    if (own) return own;
    if (!dir) return NULL;
    snprintf(buf, n, "%s/%s", dir, sub);
    return exists(buf) ? buf : NULL;
}

typedef struct parts {
    char b_dit[4096], b_vae[4096], b_clip[4096], b_t5[4096], b_ctok[4096], b_ttok[4096],
        b_sched[4096];
    const char *dit, *vae, *clip, *t5, *ctok, *ttok, *sched;
} parts;

static err resolve(const flux_paths *p, parts *r) {
    const char *d = p->model_dir;
    if (d) {
        char mi[4096];
        snprintf(mi, sizeof mi, "%s/model_index.json", d);
        FAIL_IF(!exists(d), ERR_IO, "%s: no such model folder", d);
        if (!exists(mi))
            LOG_WARN("%s has no model_index.json; looking for the diffusers sub-folders anyway", d);
    }
    r->dit = part(r->b_dit, sizeof r->b_dit, p->diffusion_model, d, "transformer");
    r->vae = part(r->b_vae, sizeof r->b_vae, p->vae, d, "vae");
    r->clip = part(r->b_clip, sizeof r->b_clip, p->clip_l, d, "text_encoder");
    r->t5 = part(r->b_t5, sizeof r->b_t5, p->t5xxl, d, "text_encoder_2");
    r->ctok = part(r->b_ctok, sizeof r->b_ctok, p->clip_tokenizer, d, "tokenizer");
    r->ttok = part(r->b_ttok, sizeof r->b_ttok, p->t5_tokenizer, d, "tokenizer_2");
    r->sched = part(r->b_sched, sizeof r->b_sched, NULL, d, "scheduler/scheduler_config.json");
    static const char *hint = "pass -m MODEL_DIR (a diffusers FLUX.1 folder) or";
    FAIL_IF(!r->dit, ERR_ARG, "no diffusion model: %s --diffusion-model FILE", hint);
    FAIL_IF(!r->vae, ERR_ARG, "no VAE: %s --vae FILE (ae.safetensors)", hint);
    FAIL_IF(!r->clip, ERR_ARG, "no CLIP-L text encoder: %s --clip_l FILE", hint);
    FAIL_IF(!r->t5, ERR_ARG, "no T5-XXL text encoder: %s --t5xxl FILE", hint);
    FAIL_IF(!r->ctok, ERR_ARG,
            "no CLIP tokenizer: %s --clip-tokenizer DIR (vocab.json + merges.txt, or "
            "tokenizer.json)",
            hint);
    FAIL_IF(!r->ttok, ERR_ARG,
            "no T5 tokenizer: %s --t5-tokenizer DIR (tokenizer.json or spiece.model)", hint);
    return ERR_OK;
}

/* ---- activations that outlive a stage ---- */

typedef struct buf {
    tensor t;
    int dev;
} buf;

static err buf_make(op_ctx *c, int ndim, const int64_t *shape, buf *b) {
    const int cuda = op_ctx_dev(c) == TENSOR_CUDA;
    b->t = tensor_make(NULL, cuda ? DTYPE_BF16 : DTYPE_F32, cuda ? TENSOR_CUDA : TENSOR_CPU, ndim,
                       shape);
    b->dev = cuda;
    size_t bytes = (size_t)tensor_numel(&b->t) * (cuda ? 2 : 4);
    if (cuda) return gpu_alloc(&b->t.data, bytes ? bytes : 2);
    b->t.data = calloc(1, bytes ? bytes : 4);
    FAIL_IF(!b->t.data, ERR_NOMEM, "out of memory (%zu bytes)", bytes);
    return ERR_OK;
}

static void buf_free(buf *b) {
    if (b->dev)
        gpu_free(b->t.data);
    else
        free(b->t.data);
    b->t.data = NULL;
}

/* Host floats -> the tensor (BF16 rounding on the GPU). */
static err buf_upload(buf *b, const float *v) {
    int64_t n = tensor_numel(&b->t);
    if (!b->dev) {
        memcpy(b->t.data, v, (size_t)n * 4);
        return ERR_OK;
    }
    uint16_t *h = malloc((size_t)n * 2 + 2);
    FAIL_IF(!h, ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++)
        h[i] = f32_to_bf16(v[i]);
    err e = gpu_upload(b->t.data, h, (size_t)n * 2);
    free(h);
    return e;
}

/* The tensor -> host floats. */
static err buf_download(op_ctx *c, const buf *b, float *v) {
    int64_t n = tensor_numel(&b->t);
    TRY(op_ctx_sync(c));
    if (!b->dev) {
        memcpy(v, b->t.data, (size_t)n * 4);
        return ERR_OK;
    }
    uint16_t *h = malloc((size_t)n * 2 + 2);
    FAIL_IF(!h, ERR_NOMEM, "out of memory");
    err e = gpu_download(h, b->t.data, (size_t)n * 2);
    for (int64_t i = 0; !e && i < n; i++)
        v[i] = bf16_to_f32(h[i]);
    free(h);
    return e;
}

/* ---- stages ---- */

typedef struct run {
    const flux_job *job;
    const flux_callbacks *cb;
    parts pt;
    op_ctx *ctx;
    int cuda;
    flux_info info;
    int32_t clip_ids[CLIP_LEN], *t5_ids;
    buf pooled, t5h; /* [1, 768], [1, T, 4096] */
    buf *lat;        /* per image: final latents [1, 16, h, w] */
    int64_t lh, lw;  /* latent size */
    sampler_config sc;
    noise_kind noise;
    double t_start;         /* when the job began, for the time to the first step */
    size_t free0, free_min; /* device memory free after the CUDA context, and its low */
} run;

/* Device memory in use is sampled after each load and each step: allocations are made at load
 * and held, so the low of free memory is the peak (ops' scratch aside). */
static void mem_mark(run *r) {
    size_t f, t;
    if (!r->cuda || gpu_mem_info(&f, &t)) return;
    if (!r->free0) r->free0 = r->free_min = f;
    if (f < r->free_min) r->free_min = f;
}

static err tokenize(run *r) {
    clip_tok *ct = NULL;
    t5_tok *tt = NULL;
    int n_clip = 0, n_t5 = 0;
    err e = clip_tok_load(r->pt.ctok, &ct);
    if (!e) e = clip_tok_encode(ct, r->job->prompt, CLIP_LEN, r->clip_ids, &n_clip);
    if (!e) e = t5_tok_load(r->pt.ttok, &tt);
    if (!e) e = t5_tok_encode(tt, r->job->prompt, r->info.max_seq, r->t5_ids, &n_t5);
    clip_tok_free(ct);
    t5_tok_free(tt);
    TRY(e);
    /* diffusers warns the same way when the prompt is cut */
    if (n_clip > CLIP_LEN - 2)
        LOG_WARN("the prompt is %d CLIP tokens; CLIP sees the first %d", n_clip, CLIP_LEN - 2);
    if (n_t5 > r->info.max_seq - 1)
        LOG_WARN("the prompt is %d T5 tokens; T5 sees the first %d (--max-sequence-length)", n_t5,
                 r->info.max_seq - 1);
    return ERR_OK;
}

static err encode_clip(run *r) {
    double t0 = now_s();
    wt_source *s = NULL;
    clip_model *m = NULL;
    err e = wt_open(r->pt.clip, &s);
    if (!e) e = clip_load(s, r->ctx, &m);
    if (!e) e = buf_make(r->ctx, 2, (int64_t[]){1, clip_hidden_size(m)}, &r->pooled);
    if (!e) {
        /* FLUX takes the final-normed hidden state at the first EOS, unprojected */
        clip_encode(m, r->clip_ids, CLIP_LEN, 0, r->pooled.t, NULL, NULL);
        e = op_ctx_sync(r->ctx);
        mem_mark(r);
    }
    if (!e) LOG_INFO("CLIP-L: %.2f s", now_s() - t0);
    clip_free(m);
    wt_close(s);
    return e ? err_wrap(e, "CLIP-L text encoder %s", r->pt.clip) : ERR_OK;
}

static err encode_t5(run *r) {
    double t0 = now_s();
    wt_source *s = NULL;
    t5_model *m = NULL;
    err e = wt_open(r->pt.t5, &s);
    if (!e) e = t5_load(s, r->ctx, r->info.max_seq, &m);
    if (!e) e = buf_make(r->ctx, 3, (int64_t[]){1, r->info.max_seq, t5_hidden_size(m)}, &r->t5h);
    if (!e) {
        t5_encode(m, r->t5_ids, r->info.max_seq, r->t5h.t);
        e = op_ctx_sync(r->ctx);
        mem_mark(r);
    }
    if (!e)
        LOG_INFO("T5: %d tokens, %.2f s, %.2f GB on the device", r->info.max_seq, now_s() - t0,
                 t5_device_bytes(m) / 1e9);
    t5_free(m);
    wt_close(s);
    return e ? err_wrap(e, "T5 text encoder %s", r->pt.t5) : ERR_OK;
}

/* The starting latents of image i, as diffusers' prepare_latents draws them: randn of
 * [1, 16, h, w] with a CPU generator seeded seed + i, in the pipeline's dtype. */
static err initial_noise(run *r, uint64_t seed, buf *x) {
    int64_t n = 16 * r->lh * r->lw;
    float *v = malloc((size_t)n * 4);
    FAIL_IF(!v, ERR_NOMEM, "out of memory");
    sampler_randn(seed, n, r->noise, v);
    err e = buf_upload(x, v);
    free(v);
    return e;
}

/* sig: the sigmas [S + 1], then the timesteps [S] */
static err denoise(run *r, flux_model *m, int img, buf *lat, buf *x, buf *vel, const float *sig) {
    const flux_job *j = r->job;
    const int S = r->info.steps;
    TRY(initial_noise(r, j->seed + (uint64_t)img, lat));
    op_pack2x2(r->ctx, x->t, lat->t);
    for (int i = 0; i < S; i++) {
        double t0 = now_s();
        flux_forward(m, vel->t, x->t, sig[S + 1 + i], r->info.guidance);
        /* the scheduler's dt in float32 (sigmas kept in float32 on the device) */
        op_euler_step(r->ctx, x->t, vel->t, sig[i + 1] - sig[i]);
        TRY(op_ctx_sync(r->ctx));
        mem_mark(r);
        LOG_DEBUG("image %d step %d/%d: %.1f ms", img + 1, i + 1, S, (now_s() - t0) * 1e3);
        if (img == 0 && i == 0)
            LOG_INFO("first step done %.2f s after the start", now_s() - r->t_start);
        if (r->cb->on_step) r->cb->on_step(r->cb->ctx, img, j->batch_count, i + 1, S);
    }
    op_unpack2x2(r->ctx, lat->t, x->t);
    TRY(op_ctx_sync(r->ctx));
    if (!r->cb->on_latents) return ERR_OK;
    float *v = malloc(sizeof *v * (size_t)tensor_numel(&lat->t));
    FAIL_IF(!v, ERR_NOMEM, "out of memory");
    err e = buf_download(r->ctx, lat, v);
    if (!e) r->cb->on_latents(r->cb->ctx, img, v, r->lh, r->lw);
    free(v);
    return e;
}

/* The parts must fit together: T5's width is the transformer's joint_attention_dim, CLIP's
 * the pooled projection's input, and the latents are 16 channels packed 2x2 into 64. */
static err check_parts(const run *r, const flux_config *fc) {
    FAIL_IF(fc->ctx_dim != r->t5h.t.shape[2], ERR_FORMAT,
            "the transformer takes text states of width %lld (joint_attention_dim), but the T5 "
            "encoder %s gives %lld: the two are not parts of one model",
            (long long)fc->ctx_dim, r->pt.t5, (long long)r->t5h.t.shape[2]);
    FAIL_IF(fc->pooled_dim != r->pooled.t.shape[1], ERR_FORMAT,
            "the transformer takes a pooled text vector of %lld (pooled_projection_dim), but the "
            "CLIP encoder %s gives %lld: the two are not parts of one model",
            (long long)fc->pooled_dim, r->pt.clip, (long long)r->pooled.t.shape[1]);
    FAIL_IF(fc->in_ch != 64, ERR_UNSUPPORTED,
            "the transformer takes %lld input channels; FLUX.1 packs 16-channel latents 2x2 "
            "into 64",
            (long long)fc->in_ch);
    return ERR_OK;
}

static err run_transformer(run *r, wt_source *s) {
    const flux_job *j = r->job;
    double t0 = now_s();
    flux_load_opts o = {WP_RESIDENT, 0};
    if (j->mode != (wp_mode)-1)
        o.mode = j->mode;
    else if (wt_is_df11(s))
        o.mode = WP_DF11;
    if (j->vram_budget_gb > 0) {
        FAIL_IF(!wt_is_df11(s), ERR_ARG,
                "--vram-budget streams DF11 weights; %s is not DF11 (compress it with df11 "
                "compress)",
                wt_path(s));
        o.mode = WP_STREAM, o.budget = (size_t)(j->vram_budget_gb * 1e9);
    }
    flux_model *m = NULL;
    buf x = {0}, vel = {0};
    float *sig = malloc(sizeof *sig * (size_t)(2 * r->info.steps + 1));
    FAIL_IF(!sig, ERR_NOMEM, "out of memory");
    const int64_t h2 = r->lh / 2, w2 = r->lw / 2;
    sampler_flux_sigmas(&r->sc, r->info.steps, h2 * w2, sig);
    sampler_timesteps(&r->sc, r->info.steps, sig, sig + r->info.steps + 1);
    err e = flux_load(s, r->ctx, &o, &m);
    if (!e) e = check_parts(r, flux_get_config(m));
    if (!e) e = flux_plan(m, h2, w2, r->info.max_seq);
    const int64_t C = e ? 0 : flux_get_config(m)->in_ch;
    if (!e) e = buf_make(r->ctx, 3, (int64_t[]){1, h2 * w2, C}, &x);
    if (!e) e = buf_make(r->ctx, 3, (int64_t[]){1, h2 * w2, C}, &vel);
    if (!e) {
        mem_mark(r);
        flux_set_text(m, r->t5h.t, r->pooled.t);
        LOG_INFO("transformer: loaded in %.2f s, %.2f GB on the device (%s)", now_s() - t0,
                 flux_device_bytes(m) / 1e9,
                 o.mode == WP_RESIDENT ? "resident"
                 : o.mode == WP_DF11   ? "DF11, decoded per block"
                                       : "DF11, streamed");
    }
    for (int i = 0; !e && i < j->batch_count; i++) {
        e = buf_make(r->ctx, 4, (int64_t[]){1, 16, r->lh, r->lw}, &r->lat[i]);
        if (!e) e = denoise(r, m, i, &r->lat[i], &x, &vel, sig);
    }
    buf_free(&x);
    buf_free(&vel);
    free(sig);
    flux_free(m);
    return e ? err_wrap(e, "transformer %s", wt_path(s)) : ERR_OK;
}

/* VaeImageProcessor.postprocess: (x / 2 + 0.5).clamp(0, 1) in the VAE's dtype (each op
 * rounds to BF16 on the GPU), then round(255 y) half to even in float32. */
static void postprocess(const float *img, int64_t h, int64_t w, int cuda, uint8_t *rgb) {
    for (int64_t c = 0; c < 3; c++)
        for (int64_t i = 0; i < h * w; i++) {
            float y = img[c * h * w + i] * 0.5f;
            if (cuda) y = bf16_round(y);
            y += 0.5f;
            if (cuda) y = bf16_round(y);
            y = y < 0 ? 0 : y > 1 ? 1 : y;
            rgb[i * 3 + c] = (uint8_t)rintf(y * 255.0f);
        }
}

static err run_vae(run *r) {
    const flux_job *j = r->job;
    double t0 = now_s();
    wt_source *s = NULL;
    vae_model *m = NULL;
    buf z = {0}, img = {0};
    const int64_t H = r->lh * 8, W = r->lw * 8;
    float *host = malloc(sizeof *host * (size_t)(3 * H * W));
    uint8_t *rgb = malloc((size_t)(3 * H * W));
    err e = host && rgb ? ERR_OK : err_set(ERR_NOMEM, "out of memory");
    if (!e) e = wt_open(r->pt.vae, &s);
    if (!e) e = vae_load(s, r->ctx, &m);
    if (!e && vae_get_config(m)->latent_channels != 16)
        e = err_set(ERR_FORMAT, "%s: the VAE has %d latent channels; FLUX.1's has 16", r->pt.vae,
                    vae_get_config(m)->latent_channels);
    if (!e) e = vae_plan(m, r->lh, r->lw);
    if (!e) e = buf_make(r->ctx, 4, (int64_t[]){1, 16, r->lh, r->lw}, &z);
    if (!e) e = buf_make(r->ctx, 4, (int64_t[]){1, 3, H, W}, &img);
    for (int i = 0; !e && i < j->batch_count; i++) {
        const vae_config *vc = vae_get_config(m);
        double t1 = now_s();
        /* latents / scaling_factor + shift_factor; a division by a Python float runs as a
           product with its float32 reciprocal on CUDA (MODEL-SPEC §3.1) */
        op_scale_shift(r->ctx, z.t, r->lat[i].t, 1.0f / vc->scaling_factor, vc->shift_factor);
        vae_decode(m, img.t, z.t);
        e = buf_download(r->ctx, &img, host);
        mem_mark(r);
        if (e) break;
        LOG_INFO("VAE: image %d decoded in %.1f ms", i + 1, (now_s() - t1) * 1e3);
        if (r->cb->on_decoded) r->cb->on_decoded(r->cb->ctx, i, host, H, W);
        postprocess(host, H, W, r->cuda, rgb);
        if (r->cb->on_image)
            e = r->cb->on_image(r->cb->ctx, i, j->seed + (uint64_t)i, rgb, (int)W, (int)H);
    }
    if (!e) LOG_INFO("VAE: %.2f s", now_s() - t0);
    buf_free(&z);
    buf_free(&img);
    vae_free(m);
    wt_close(s);
    free(host);
    free(rgb);
    return e && s ? err_wrap(e, "VAE %s", wt_path(s)) : e;
}

/* The schedule: the folder's scheduler_config.json, else dev's or schnell's defaults. */
static err schedule(run *r, int dev) {
    if (dev)
        sampler_config_flux_dev(&r->sc);
    else
        sampler_config_flux_schnell(&r->sc);
    if (!r->pt.sched) return ERR_OK;
    fio_map mp;
    TRY(fio_map_open(r->pt.sched, &mp));
    cJSON *js = cJSON_ParseWithLength((const char *)mp.data, mp.size);
    fio_map_close(&mp);
    FAIL_IF(!js, ERR_FORMAT, "%s: not valid JSON", r->pt.sched);
    err e = sampler_config_from_json(js, r->pt.sched, &r->sc);
    cJSON_Delete(js);
    return e;
}

static err resolve_job(run *r, wt_source *dit) {
    const flux_job *j = r->job;
    /* dev has a guidance embedder, schnell does not (either naming) */
    const int dev = wt_find(dit, "time_text_embed.guidance_embedder.linear_1.weight") ||
                    wt_find(dit, "guidance_in.in_layer.weight") ||
                    wt_find(dit, "model.diffusion_model.guidance_in.in_layer.weight");
    flux_info *in = &r->info;
    in->model_name = dev ? "FLUX.1-dev" : "FLUX.1-schnell";
    in->width = j->width ? j->width : 1024;
    in->height = j->height ? j->height : 1024;
    FAIL_IF(in->width < 16 || in->height < 16 || in->width > 8192 || in->height > 8192, ERR_ARG,
            "image size %dx%d: width and height must be 16..8192", in->width, in->height);
    /* FluxPipeline floors sizes to the VAE factor x 2 (with a warning) */
    if (in->width % 16 || in->height % 16)
        LOG_WARN("%dx%d is not a multiple of 16; rendering %dx%d", in->width, in->height,
                 in->width / 16 * 16, in->height / 16 * 16);
    in->width = in->width / 16 * 16, in->height = in->height / 16 * 16;
    r->lh = in->height / 8, r->lw = in->width / 8;
    in->steps = j->steps ? j->steps : dev ? 28 : 4;
    in->guidance = dev ? j->guidance : 0.0f;
    in->max_seq = j->max_seq ? j->max_seq : 512;
    in->backend = r->cuda ? "cuda" : "cpu";
    r->noise = j->noise_dtype >= 0 ? (noise_kind)j->noise_dtype : r->cuda ? NOISE_BF16 : NOISE_F32;
    in->noise_dtype = sampler_noise_name(r->noise);
    uint64_t h;
    TRY(wt_hash(dit, &h));
    snprintf(in->model_hash, sizeof in->model_hash, "%016llx", (unsigned long long)h);
    TRY(schedule(r, dev));
    r->t5_ids = malloc(sizeof *r->t5_ids * (size_t)in->max_seq);
    FAIL_IF(!r->t5_ids, ERR_NOMEM, "out of memory");
    return ERR_OK;
}

err flux_pipeline_run(const flux_paths *p, const flux_job *j, const flux_callbacks *cb) {
    FAIL_IF(!j->prompt, ERR_ARG, "no prompt (-p)");
    FAIL_IF(j->batch_count < 1, ERR_ARG, "batch count %d: at least 1", j->batch_count);
    run r = {.job = j, .cb = cb, .t_start = now_s()};
    TRY(resolve(p, &r.pt));
    r.cuda = !j->cpu;
    wt_source *dit = NULL;
    err e = wt_open(r.pt.dit, &dit);
    if (!e) e = resolve_job(&r, dit);
    if (!e) e = op_ctx_create(r.cuda ? TENSOR_CUDA : TENSOR_CPU, &r.ctx);
    if (!e) mem_mark(&r);
    if (!e && cb->on_info) cb->on_info(cb->ctx, &r.info);
    r.lat = calloc((size_t)j->batch_count, sizeof *r.lat);
    if (!e && !r.lat) e = err_set(ERR_NOMEM, "out of memory");
    if (!e) e = tokenize(&r);
    if (!e) e = encode_clip(&r);
    if (!e) e = encode_t5(&r);
    if (!e) e = run_transformer(&r, dit);
    /* the text states are not needed by the VAE: release them first */
    buf_free(&r.pooled);
    buf_free(&r.t5h);
    wt_close(dit);
    if (!e) e = run_vae(&r);
    if (!e && r.cuda)
        LOG_INFO("peak device memory: %.2f GB above the CUDA context",
                 (double)(r.free0 - r.free_min) / 1e9);
    for (int i = 0; r.lat && i < j->batch_count; i++)
        buf_free(&r.lat[i]);
    free(r.lat);
    free(r.t5_ids);
    op_ctx_free(r.ctx);
    return e;
}
