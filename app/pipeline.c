/* pipeline: the job's shared stages (pipeline.h): where the parts are, which family the
 * diffusion model is, the initial noise, the VAE (latents / scaling + shift, vae.decode) and
 * VaeImageProcessor.postprocess. The family stages are flux_pipeline.c and sd3_pipeline.c. */
#include "app/pipeline.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "app/pipeline_internal.h"
#include "core/cuda/gpu.h"
#include "core/fileio.h"
#include "core/half.h"
#include "core/log.h"
#include "vae/vae.h"

void pipeline_job_init(pipeline_job *j) {
    memset(j, 0, sizeof *j);
    j->guidance = -1.0f;
    j->cfg_scale = -1.0f;
    j->slg_start = 0.01, j->slg_end = 0.2;
    j->batch_count = 1;
    j->noise_dtype = -1;
    j->mode = (wp_mode)-1;
}

double pipeline_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Allocations are made at load and held, so the low of free memory is the peak (ops' scratch
 * aside). */
void pipeline_mem_mark(pipeline_state *r) {
    size_t f, t;
    if (!r->cuda || gpu_mem_info(&f, &t)) return;
    if (!r->free0) r->free0 = r->free_min = f;
    if (f < r->free_min) r->free_min = f;
}

/* ---- activations that outlive a stage ---- */

err pipeline_buf_make(op_ctx *c, int ndim, const int64_t *shape, pipeline_buf *b) {
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

void pipeline_buf_free(pipeline_buf *b) {
    if (b->dev)
        gpu_free(b->t.data);
    else
        free(b->t.data);
    b->t.data = NULL;
}

err pipeline_buf_zero(pipeline_buf *b) {
    const size_t bytes = (size_t)tensor_numel(&b->t) * (b->dev ? 2 : 4);
    /* cudaMemset, then a device-wide sync: the ops' stream does not order after it */
    if (b->dev) {
        TRY(gpu_memset(b->t.data, 0, bytes));
        return gpu_sync();
    }
    memset(b->t.data, 0, bytes);
    return ERR_OK;
}

/* Host floats -> the tensor (BF16 rounding on the GPU). */
err pipeline_buf_upload(pipeline_buf *b, const float *v) {
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
err pipeline_buf_download(op_ctx *c, const pipeline_buf *b, float *v) {
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

/* ---- shared pieces of the stages ---- */

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

const char *pipeline_part(char *buf, size_t n, const char *own, const char *dir, const char *sub) {
    if (own) return own;
    if (!dir) return NULL;
    snprintf(buf, n, "%s/%s", dir, sub);
    return exists(buf) ? buf : NULL;
}

const char *pipeline_locate(pipeline_state *r, const pipeline_paths *p, int slot, const char *own,
                            const char *sub, const char *const *probes) {
    if (own) return own;
    if (r->pt.single) {
        for (; *probes; probes++)
            if (wt_find(r->dit, *probes)) return r->pt.single;
        return NULL;
    }
    return pipeline_part(r->pt.b[slot], sizeof r->pt.b[slot], NULL, p->model_dir, sub);
}

err pipeline_initial_noise(pipeline_state *r, uint64_t seed, pipeline_buf *x) {
    int64_t n = 16 * r->lh * r->lw;
    float *v = malloc((size_t)n * 4);
    FAIL_IF(!v, ERR_NOMEM, "out of memory");
    sampler_randn(seed, n, r->noise, v);
    err e = pipeline_buf_upload(x, v);
    free(v);
    return e;
}

err pipeline_schedule(pipeline_state *r) {
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

err pipeline_report_latents(pipeline_state *r, int img, const pipeline_buf *lat) {
    if (!r->cb->on_latents) return ERR_OK;
    float *v = malloc(sizeof *v * (size_t)tensor_numel(&lat->t));
    FAIL_IF(!v, ERR_NOMEM, "out of memory");
    err e = pipeline_buf_download(r->ctx, lat, v);
    if (!e) r->cb->on_latents(r->cb->ctx, r->index, img, v, r->lh, r->lw);
    free(v);
    return e;
}

err pipeline_cancelled(const pipeline_state *r) {
    FAIL_IF(r->cb->cancel && *r->cb->cancel, ERR_CANCELLED, "cancelled");
    return ERR_OK;
}

/* x - sigma * v as [16, h, w] floats, unpacking FLUX's 2x2 patches (diffusers' _pack_latents:
 * token (y, x) of the half-size grid, channel c * 4 + dy * 2 + dx) */
static err preview(pipeline_state *r, int img, int step, tensor x, tensor v, float sigma,
                   int packed) {
    const int64_t n = tensor_numel(&x), lh = r->lh, lw = r->lw;
    float *a = malloc(sizeof *a * (size_t)n * 3);
    FAIL_IF(!a, ERR_NOMEM, "out of memory");
    float *b = a + n, *lat = b + n;
    pipeline_buf bx = {.t = x, .dev = r->cuda}, bv = {.t = v, .dev = r->cuda};
    err e = pipeline_buf_download(r->ctx, &bx, a);
    if (!e) e = pipeline_buf_download(r->ctx, &bv, b);
    for (int64_t k = 0; !e && k < n; k++)
        a[k] -= sigma * b[k];
    if (!e && packed) {
        const int64_t w2 = lw / 2;
        for (int64_t k = 0; k < n; k++) {
            const int64_t tok = k / 64, ch = k % 64, c = ch / 4, dy = ch / 2 % 2, dx = ch % 2;
            lat[(c * lh + tok / w2 * 2 + dy) * lw + tok % w2 * 2 + dx] = a[k];
        }
    }
    if (!e) r->cb->on_preview(r->cb->ctx, r->index, img, step, packed ? lat : a, lh, lw);
    free(a);
    return e;
}

err pipeline_step_done(pipeline_state *r, int img, int i, int S, tensor x, tensor v, float sigma,
                       int packed) {
    if (r->index == 0 && img == 0 && i == 0)
        LOG_INFO("first step done %.2f s after the start", pipeline_now() - r->t_start);
    if (r->cb->on_step) r->cb->on_step(r->cb->ctx, r->index, img, r->job->batch_count, i + 1, S);
    if (r->cb->on_preview) TRY(preview(r, img, i + 1, x, v, sigma, packed));
    return pipeline_cancelled(r);
}

void pipeline_log_loaded(double t0, size_t device_bytes, wp_mode mode) {
    LOG_INFO("transformer: loaded in %.2f s, %.2f GB on the device (%s)", pipeline_now() - t0,
             (double)device_bytes / 1e9,
             mode == WP_RESIDENT ? "resident"
             : mode == WP_DF11   ? "DF11, decoded per block"
                                 : "DF11, streamed");
}

err pipeline_wp_mode(const pipeline_state *r, wt_source *s, wp_mode *mode, size_t *budget) {
    const pipeline_job *j = r->job;
    *mode = WP_RESIDENT, *budget = 0;
    if (j->mode != (wp_mode)-1)
        *mode = j->mode;
    else if (wt_is_df11(s))
        *mode = WP_DF11;
    if (j->vram_budget_gb > 0) {
        FAIL_IF(!wt_is_df11(s), ERR_ARG,
                "--vram-budget streams DF11 weights; %s is not DF11 (compress it with df11 "
                "compress)",
                wt_path(s));
        *mode = WP_STREAM, *budget = (size_t)(j->vram_budget_gb * 1e9);
    }
    return ERR_OK;
}

err pipeline_size(pipeline_state *r, int floor16) {
    pipeline_info *in = &r->info;
    in->width = r->job->width ? r->job->width : 1024;
    in->height = r->job->height ? r->job->height : 1024;
    FAIL_IF(in->width < 16 || in->height < 16 || in->width > 8192 || in->height > 8192, ERR_ARG,
            "image size %dx%d: width and height must be 16..8192", in->width, in->height);
    if (in->width % 16 || in->height % 16) {
        FAIL_IF(!floor16, ERR_ARG, "image size %dx%d: %s takes multiples of 16", in->width,
                in->height, in->model_name);
        LOG_WARN("%dx%d is not a multiple of 16; rendering %dx%d", in->width, in->height,
                 in->width / 16 * 16, in->height / 16 * 16);
    }
    in->width = in->width / 16 * 16, in->height = in->height / 16 * 16;
    r->lh = in->height / 8, r->lw = in->width / 8;
    return ERR_OK;
}

void pipeline_warn_cut(const char *what, int n, int max) {
    if (n > max) LOG_WARN("the prompt is %d %s tokens; %s sees the first %d", n, what, what, max);
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

/* The VAE, loaded once, over every image of the run's jobs */
static err run_vae(pipeline_state *rs, int n) {
    pipeline_state *r0 = &rs[0];
    double t0 = pipeline_now();
    wt_source *s = NULL;
    vae_model *m = NULL;
    err e = wt_open(r0->pt.vae, &s);
    if (!e) e = vae_load(s, r0->ctx, &m);
    cJSON *cfg = NULL;
    if (!e) e = wt_config(s, &cfg);
    /* a single file has no config: the family's scaling (the loader's default is FLUX's) */
    if (!e && !cfg && r0->info.family == PIPELINE_SD3) {
        vae_set_scaling(m, 1.5305f, 0.0609f);
        LOG_INFO("vae: no config.json: SD3's latent scaling 1.5305 and shift 0.0609");
    }
    cJSON_Delete(cfg);
    if (!e && vae_get_config(m)->latent_channels != 16)
        e = err_set(ERR_FORMAT, "%s: the VAE has %d latent channels; %s takes 16", r0->pt.vae,
                    vae_get_config(m)->latent_channels, r0->info.model_name);
    /* the plan and the buffers are kept while the sizes repeat */
    pipeline_buf z = {0}, img = {0};
    float *host = NULL;
    uint8_t *rgb = NULL;
    for (int k = 0; !e && k < n; k++) {
        pipeline_state *r = &rs[k];
        const pipeline_job *j = r->job;
        const int64_t H = r->lh * 8, W = r->lw * 8;
        e = pipeline_cancelled(r);
        if (!e && (k == 0 || r->lh != rs[k - 1].lh || r->lw != rs[k - 1].lw)) {
            pipeline_buf_free(&z);
            pipeline_buf_free(&img);
            free(host), free(rgb);
            host = malloc(sizeof *host * (size_t)(3 * H * W));
            rgb = malloc((size_t)(3 * H * W));
            e = host && rgb ? ERR_OK : err_set(ERR_NOMEM, "out of memory");
            if (!e) e = vae_plan(m, r->lh, r->lw);
            if (!e) e = pipeline_buf_make(r->ctx, 4, (int64_t[]){1, 16, r->lh, r->lw}, &z);
            if (!e) e = pipeline_buf_make(r->ctx, 4, (int64_t[]){1, 3, H, W}, &img);
        }
        for (int i = 0; !e && i < j->batch_count; i++) {
            const vae_config *vc = vae_get_config(m);
            double t1 = pipeline_now();
            /* latents / scaling_factor + shift_factor; a division by a Python float runs as a
               product with its float32 reciprocal on CUDA (MODEL-SPEC §3.1) */
            op_scale_shift(r->ctx, z.t, r->lat[i].t, 1.0f / vc->scaling_factor, vc->shift_factor);
            vae_decode(m, img.t, z.t);
            e = pipeline_buf_download(r->ctx, &img, host);
            pipeline_mem_mark(r0);
            if (e) break;
            LOG_INFO("VAE: image %d decoded in %.1f ms", i + 1, (pipeline_now() - t1) * 1e3);
            if (r->cb->on_decoded) r->cb->on_decoded(r->cb->ctx, r->index, i, host, H, W);
            postprocess(host, H, W, r->cuda, rgb);
            if (r->cb->on_image)
                e = r->cb->on_image(r->cb->ctx, r->index, i, j->seed + (uint64_t)i, rgb, (int)W,
                                    (int)H);
        }
    }
    pipeline_buf_free(&z);
    pipeline_buf_free(&img);
    free(host);
    free(rgb);
    if (!e) LOG_INFO("VAE: %.2f s", pipeline_now() - t0);
    vae_free(m);
    wt_close(s);
    return e && s ? err_wrap(e, "VAE %s", wt_path(s)) : e;
}

/* ---- the job ---- */

/* The diffusion model's family from its tensors (diffusers or original names, any prefix the
 * original single files use). */
static err detect(wt_source *s, pipeline_family *f) {
    static const char *const sd3[] = {"pos_embed.pos_embed", "pos_embed",
                                      "model.diffusion_model.pos_embed"};
    static const char *const flux[] = {"single_transformer_blocks.0.proj_out.weight",
                                       "single_blocks.0.linear2.weight",
                                       "model.diffusion_model.single_blocks.0.linear2.weight"};
    for (size_t i = 0; i < 3; i++) {
        if (wt_find(s, sd3[i])) return *f = PIPELINE_SD3, ERR_OK;
        if (wt_find(s, flux[i])) return *f = PIPELINE_FLUX, ERR_OK;
    }
    FAIL(
        ERR_FORMAT,
        "%s: neither a FLUX.1 nor an SD3.5 transformer (found no tensor named pos_embed.pos_embed, "
        "pos_embed, single_transformer_blocks.0.proj_out.weight or single_blocks.0.linear2.weight, "
        "with or without model.diffusion_model.)",
        wt_path(s));
}

/* The diffusion model: --diffusion-model, else -m's file (a checkpoint), else -m's
 * transformer/ folder. */
static err find_dit(const pipeline_paths *p, pipeline_parts *pt) {
    const char *d = p->model_dir;
    struct stat st;
    if (d) {
        FAIL_IF(stat(d, &st) != 0, ERR_IO, "%s: no such model folder or file", d);
        if (S_ISREG(st.st_mode)) {
            pt->single = d;
        } else {
            char mi[4096];
            snprintf(mi, sizeof mi, "%s/model_index.json", d);
            if (!exists(mi))
                LOG_WARN("%s has no model_index.json; looking for the diffusers sub-folders anyway",
                         d);
        }
    }
    pt->dit = p->diffusion_model ? p->diffusion_model
              : pt->single       ? pt->single
                                 : pipeline_part(pt->b[0], sizeof pt->b[0], NULL, d, "transformer");
    FAIL_IF(!pt->dit, ERR_ARG,
            "no diffusion model: pass -m MODEL_DIR (a diffusers folder) or a checkpoint file, or "
            "--diffusion-model FILE");
    return ERR_OK;
}

/* Job k's state: its parts, defaults and names against the open diffusion model */
static err resolve(pipeline_state *r, const pipeline_paths *p, wt_source *dit, uint64_t hash) {
    const pipeline_job *j = r->job;
    FAIL_IF(!j->prompt, ERR_ARG, "no prompt (-p)");
    FAIL_IF(j->batch_count < 1, ERR_ARG, "batch count %d: at least 1", j->batch_count);
    r->cuda = !j->cpu;
    TRY(find_dit(p, &r->pt));
    r->dit = dit;
    TRY(detect(dit, &r->info.family));
    TRY(r->info.family == PIPELINE_FLUX ? flux_pipeline_resolve(r, p) : sd3_pipeline_resolve(r, p));
    snprintf(r->info.model_hash, sizeof r->info.model_hash, "%016llx", (unsigned long long)hash);
    r->info.backend = r->cuda ? "cuda" : "cpu";
    r->noise = j->noise_dtype >= 0 ? (noise_kind)j->noise_dtype : r->cuda ? NOISE_BF16 : NOISE_F32;
    r->info.noise_dtype = sampler_noise_name(r->noise);
    TRY(pipeline_schedule(r));
    r->lat = calloc((size_t)j->batch_count, sizeof *r->lat);
    FAIL_IF(!r->lat, ERR_NOMEM, "out of memory");
    return ERR_OK;
}

err pipeline_run_many(const pipeline_paths *p, const pipeline_job *jobs, int n,
                      const pipeline_callbacks *cb) {
    FAIL_IF(n < 1, ERR_ARG, "no job to run");
    const double t_start = pipeline_now();
    pipeline_parts pt = {0};
    TRY(find_dit(p, &pt));
    wt_source *dit = NULL;
    TRY(wt_open(pt.dit, &dit));
    uint64_t hash = 0;
    pipeline_state *rs = calloc((size_t)n, sizeof *rs);
    err e = rs ? wt_hash(dit, &hash) : err_set(ERR_NOMEM, "out of memory");
    /* the jobs that resolve, packed to the front of rs */
    int m = 0;
    for (int k = 0; !e && k < n; k++) {
        pipeline_state *r = &rs[m];
        *r = (pipeline_state){.job = &jobs[k], .index = k, .cb = cb, .t_start = t_start};
        err ek = resolve(r, p, dit, hash);
        if (!ek && m > 0 &&
            (r->info.family != rs[0].info.family || r->cuda != rs[0].cuda ||
             r->info.max_seq != rs[0].info.max_seq))
            ek = err_set(ERR_ARG, "a run's jobs share the backend and the T5 length");
        if (ek) {
            free(r->lat);
            r->lat = NULL;
            if (!cb->on_skip)
                e = ek;
            else
                cb->on_skip(cb->ctx, k, err_msg());
            continue;
        }
        if (cb->on_info) cb->on_info(cb->ctx, k, &r->info);
        m++;
    }
    op_ctx *ctx = NULL;
    if (!e && m) e = op_ctx_create(rs[0].cuda ? TENSOR_CUDA : TENSOR_CPU, &ctx);
    for (int k = 0; k < m; k++)
        rs[k].ctx = ctx;
    if (!e && m) {
        pipeline_mem_mark(&rs[0]);
        e = rs[0].info.family == PIPELINE_FLUX ? flux_pipeline_stages(rs, m)
                                               : sd3_pipeline_stages(rs, m);
    }
    wt_close(dit);
    for (int k = 0; k < m; k++)
        rs[k].dit = NULL;
    if (!e && m) e = run_vae(rs, m);
    if (!e && m && rs[0].cuda)
        LOG_INFO("peak device memory: %.2f GB above the CUDA context",
                 (double)(rs[0].free0 - rs[0].free_min) / 1e9);
    for (int k = 0; rs && k < m; k++) {
        for (int i = 0; rs[k].lat && i < rs[k].job->batch_count; i++)
            pipeline_buf_free(&rs[k].lat[i]);
        free(rs[k].lat);
    }
    free(rs);
    op_ctx_free(ctx);
    return e;
}

err pipeline_describe(const pipeline_paths *p, const pipeline_job *j, pipeline_info *info) {
    pipeline_parts pt = {0};
    TRY(find_dit(p, &pt));
    wt_source *dit = NULL;
    TRY(wt_open(pt.dit, &dit));
    pipeline_job jj = *j;
    if (!jj.prompt) jj.prompt = "";
    static const pipeline_callbacks none = {0};
    pipeline_state r = {.job = &jj, .cb = &none};
    err e = resolve(&r, p, dit, 0);
    free(r.lat);
    wt_close(dit);
    if (e) return e;
    *info = r.info;
    info->model_hash[0] = 0;
    return ERR_OK;
}

err pipeline_run(const pipeline_paths *p, const pipeline_job *j, const pipeline_callbacks *cb) {
    return pipeline_run_many(p, j, 1, cb);
}
