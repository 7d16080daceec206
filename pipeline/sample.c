/* sample: what every family goes through (internal.h): buffers that outlive a stage, the
 * initial noise (diffusers' prepare_latents: a CPU generator seeded seed + i, in the pipeline's
 * dtype), the one flow-matching Euler loop (FlowMatchEulerDiscreteScheduler.step, docs/
 * docs/MODEL-SPEC.md §6.2) with previews and cancellation, and the VAE stage (latents / scaling +
 * shift, vae.decode, VaeImageProcessor.postprocess). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cuda/gpu.h"
#include "core/half.h"
#include "core/log.h"
#include "pipeline/internal.h"
#include "vae/vae.h"

double pl_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- activations that outlive a stage ---- */

static size_t elem(const op_ctx *c) { return op_ctx_dev(c) == TENSOR_CUDA ? 2 : 4; }

err pl_buf_make(op_ctx *c, int ndim, const int64_t *shape, tensor *t) {
    const int cuda = op_ctx_dev(c) == TENSOR_CUDA;
    *t = tensor_make(NULL, cuda ? DTYPE_BF16 : DTYPE_F32, op_ctx_dev(c), ndim, shape);
    const size_t bytes = (size_t)tensor_numel(t) * elem(c);
    return op_mem_alloc(c, bytes ? bytes : 4, &t->data);
}

void pl_buf_free(op_ctx *c, tensor *t) {
    if (c && t->data) op_mem_free(c, t->data);
    t->data = NULL;
}

err pl_buf_zero(op_ctx *c, tensor t) {
    const size_t bytes = (size_t)tensor_numel(&t) * elem(c);
    if (op_ctx_dev(c) != TENSOR_CUDA) {
        memset(t.data, 0, bytes);
        return ERR_OK;
    }
    /* cudaMemset, then a device-wide sync: the ops' stream does not order after it */
    TRY(gpu_memset(t.data, 0, bytes));
    return gpu_sync();
}

err pl_buf_upload(op_ctx *c, tensor t, const float *v) {
    const int64_t n = tensor_numel(&t);
    if (op_ctx_dev(c) != TENSOR_CUDA) {
        memcpy(t.data, v, (size_t)n * 4);
        return ERR_OK;
    }
    uint16_t *h = malloc((size_t)n * 2 + 2);
    FAIL_IF(!h, ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++)
        h[i] = f32_to_bf16(v[i]);
    err e = op_mem_upload(c, t.data, h, (size_t)n * 2);
    free(h);
    return e;
}

err pl_buf_download(op_ctx *c, tensor t, float *v) {
    const int64_t n = tensor_numel(&t);
    TRY(op_ctx_sync(c));
    if (op_ctx_dev(c) != TENSOR_CUDA) {
        memcpy(v, t.data, (size_t)n * 4);
        return ERR_OK;
    }
    uint16_t *h = malloc((size_t)n * 2 + 2);
    FAIL_IF(!h, ERR_NOMEM, "out of memory");
    err e = op_mem_download(c, h, t.data, (size_t)n * 2);
    for (int64_t i = 0; !e && i < n; i++)
        v[i] = bf16_to_f32(h[i]);
    free(h);
    return e;
}

/* ---- the loop ---- */

/* Image img's starting latents [1, 16, h, w], as prepare_latents draws them. */
static err initial_noise(pl_run *run, pl_job *jb, int img, tensor lat) {
    const int64_t n = 16 * jb->lh * jb->lw;
    float *v = malloc(sizeof *v * (size_t)n);
    FAIL_IF(!v, ERR_NOMEM, "out of memory");
    sampler_randn(jb->info.job.seed + (uint64_t)img, n, (noise_kind)jb->info.job.noise, v);
    err e = pl_buf_upload(run->ctx, lat, v);
    free(v);
    return e;
}

/* The scratch of the previews: x - sigma v in the state's shape, and as latents. */
typedef struct pl_preview {
    tensor x0, lat;
    float *host;
} pl_preview;

/* x - sigma * v unpacked to [16, h, w] floats, to on_preview */
static err preview(pl_run *run, pl_job *jb, pl_preview *pv, int img, int step, tensor x, tensor v,
                   float sigma) {
    op_copy(run->ctx, pv->x0, x);
    op_euler_step(run->ctx, pv->x0, v, -sigma);
    if (run->fam->unpack) run->fam->unpack(run->ctx, pv->lat, pv->x0);
    TRY(pl_buf_download(run->ctx, run->fam->unpack ? pv->lat : pv->x0, pv->host));
    run->cb->on_preview(run->cb->ctx, jb->index, img, step, pv->host, jb->lh, jb->lw);
    return ERR_OK;
}

/* After step i (of S) of image img: the first-step log line, the step callback, the preview,
 * then ERR_CANCELLED if the caller cancelled. */
static err step_done(pl_run *run, pl_job *jb, pl_preview *pv, int img, int i, tensor x, tensor v) {
    const int S = jb->info.job.steps;
    if (jb == run->jobs && img == 0 && i == 0)
        LOG_INFO("first step done %.2f s after the start (text encoders %.2f s; loading %.2f s "
                 "of it)",
                 pl_now() - run->t_start, run->t_text, run->t_load);
    if (run->cb->on_step)
        run->cb->on_step(run->cb->ctx, jb->index, img, jb->info.job.batch_count, i + 1, S);
    if (run->cb->on_preview) TRY(preview(run, jb, pv, img, i + 1, x, v, jb->sig[i + 1]));
    return pl_cancelled(run);
}

/* One image: noise, the family's state, the steps, the final latents. */
static err denoise(pl_run *run, pl_job *jb, pl_preview *pv, int img, tensor x) {
    const int S = jb->info.job.steps;
    tensor lat = jb->lat[img];
    TRY(initial_noise(run, jb, img, lat));
    if (run->fam->pack)
        run->fam->pack(run->ctx, x, lat);
    else
        x = lat; /* the loop steps the latents themselves */
    for (int i = 0; i < S; i++) {
        const double t0 = pl_now();
        tensor v;
        TRY(run->fam->predict(run, jb, x, i, &v));
        /* the scheduler's dt in float32 (sigmas kept in float32 on the device) */
        op_euler_step(run->ctx, x, v, jb->sig[i + 1] - jb->sig[i]);
        TRY(op_ctx_sync(run->ctx));
        pl_mem_mark(run);
        LOG_DEBUG("image %d step %d/%d: %.1f ms", img + 1, i + 1, S, (pl_now() - t0) * 1e3);
        TRY(step_done(run, jb, pv, img, i, x, v));
    }
    if (run->fam->pack) run->fam->unpack(run->ctx, lat, x);
    TRY(op_ctx_sync(run->ctx));
    if (!run->cb->on_latents) return ERR_OK;
    float *v = malloc(sizeof *v * (size_t)tensor_numel(&lat));
    FAIL_IF(!v, ERR_NOMEM, "out of memory");
    err e = pl_buf_download(run->ctx, lat, v);
    if (!e) run->cb->on_latents(run->cb->ctx, jb->index, img, v, jb->lh, jb->lw);
    free(v);
    return e;
}

err pl_denoise_job(pl_run *run, pl_job *jb) {
    const int64_t lat_shape[4] = {1, 16, jb->lh, jb->lw};
    int64_t shape[4];
    int ndim = 4;
    memcpy(shape, lat_shape, sizeof shape);
    if (run->fam->state_shape) run->fam->state_shape(jb->lh, jb->lw, shape, &ndim);
    TRY(run->fam->prepare(run, jb));
    tensor x = {0};
    pl_preview pv = {0};
    err e = run->fam->pack ? pl_buf_make(run->ctx, ndim, shape, &x) : ERR_OK;
    if (!e && run->cb->on_preview) {
        e = pl_buf_make(run->ctx, ndim, shape, &pv.x0);
        if (!e) e = pl_buf_make(run->ctx, 4, lat_shape, &pv.lat);
        pv.host = malloc(sizeof *pv.host * (size_t)(16 * jb->lh * jb->lw));
        if (!e && !pv.host) e = err_set(ERR_NOMEM, "out of memory");
    }
    if (!e) pl_mem_mark(run);
    for (int i = 0; !e && i < jb->info.job.batch_count; i++) {
        e = pl_buf_make(run->ctx, 4, lat_shape, &jb->lat[i]);
        if (!e) e = denoise(run, jb, &pv, i, x);
    }
    pl_buf_free(run->ctx, &x);
    pl_buf_free(run->ctx, &pv.x0);
    pl_buf_free(run->ctx, &pv.lat);
    free(pv.host);
    return e;
}

/* ---- the VAE ---- */

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

/* The buffers of one image size, kept while the sizes repeat. */
typedef struct pl_vae_bufs {
    int64_t lh, lw;
    tensor z, img;
    float *host;
    uint8_t *rgb;
} pl_vae_bufs;

static void vae_bufs_free(op_ctx *c, pl_vae_bufs *b) {
    pl_buf_free(c, &b->z);
    pl_buf_free(c, &b->img);
    free(b->host), free(b->rgb);
    memset(b, 0, sizeof *b);
}

static err vae_bufs(pl_run *run, vae_model *m, const pl_job *jb, pl_vae_bufs *b) {
    if (b->host && b->lh == jb->lh && b->lw == jb->lw) return ERR_OK;
    vae_bufs_free(run->ctx, b);
    const int64_t H = jb->lh * 8, W = jb->lw * 8;
    b->host = malloc(sizeof *b->host * (size_t)(3 * H * W));
    b->rgb = malloc((size_t)(3 * H * W));
    FAIL_IF(!b->host || !b->rgb, ERR_NOMEM, "out of memory");
    TRY(vae_plan(m, jb->lh, jb->lw));
    TRY(pl_buf_make(run->ctx, 4, (int64_t[]){1, 16, jb->lh, jb->lw}, &b->z));
    TRY(pl_buf_make(run->ctx, 4, (int64_t[]){1, 3, H, W}, &b->img));
    b->lh = jb->lh, b->lw = jb->lw;
    return ERR_OK;
}

/* *caller: the error is the caller's on_image's (a PNG not written), not the VAE's */
static err decode_job(pl_run *run, vae_model *m, pl_job *jb, pl_vae_bufs *b, int *caller) {
    const vae_config *vc = vae_get_config(m);
    const int64_t H = jb->lh * 8, W = jb->lw * 8;
    const pipeline_callbacks *cb = run->cb;
    TRY(pl_cancelled(run));
    FAIL_IF(vc->latent_channels != 16, ERR_FORMAT, "the VAE has %d latent channels; %s takes 16",
            vc->latent_channels, jb->info.model_name);
    TRY(vae_bufs(run, m, jb, b));
    for (int i = 0; i < jb->info.job.batch_count; i++) {
        const double t1 = pl_now();
        /* latents / scaling_factor + shift_factor; a division by a Python float runs as a
           product with its float32 reciprocal on CUDA (docs/MODEL-SPEC.md §3.1) */
        op_scale_shift(run->ctx, b->z, jb->lat[i], 1.0f / vc->scaling_factor, vc->shift_factor);
        vae_decode(m, b->img, b->z);
        TRY(pl_buf_download(run->ctx, b->img, b->host));
        pl_mem_mark(run);
        LOG_INFO("VAE: image %d decoded in %.1f ms", i + 1, (pl_now() - t1) * 1e3);
        if (cb->on_decoded) cb->on_decoded(cb->ctx, jb->index, i, b->host, H, W);
        postprocess(b->host, H, W, run->cuda, b->rgb);
        const err e = cb->on_image
                          ? cb->on_image(cb->ctx, jb->index, i, jb->info.job.seed + (uint64_t)i,
                                         b->rgb, (int)W, (int)H)
                          : ERR_OK;
        if (e) return *caller = 1, e;
    }
    return ERR_OK;
}

err pl_decode_all(pl_run *run) {
    vae_model *m;
    TRY(pl_use(run, PL_VAE, (void **)&m));
    pl_vae_bufs b = {0};
    err e = ERR_OK;
    int caller = 0;
    for (int k = 0; !e && k < run->n; k++)
        e = decode_job(run, m, &run->jobs[k], &b, &caller);
    vae_bufs_free(run->ctx, &b);
    const err d = pl_done(run, PL_VAE, caller ? ERR_OK : e);
    return caller ? e : d;
}
