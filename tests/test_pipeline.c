/* test_pipeline: FLUX.1 and SD3.5 end to end (app/pipeline.c) on the tiny random-weight
 * pipelines, FLUX dev and schnell against diffusers' FluxPipeline, SD3.5 Large-like (a negative
 * prompt; and without CFG, as Turbo runs) and Medium-like (the default empty negative; and with
 * skip-layer guidance) against StableDiffusion3Pipeline, all run in fp32 on the CPU with the
 * same seed (tests/fixtures/make_flux_ref.py and make_sd3_ref.py; tensors P.latents, P.image,
 * P.png). With --cpu (the fp32
 * reference backend, noise drawn in float32 as the fp32 pipeline does):
 *   final latents within 1e-4 relative L2 (the bound: fp32 against fp32, the only
 *   differences are summation orders, amplified by the denoising loop);
 *   the decoded image within 1e-4 relative L2 and the 8-bit pixels within 1 of diffusers'
 *   (a value within 1e-4 of a rounding boundary may round the other way).
 * With --gpu (BF16 activations, noise drawn in float32 so the start matches the reference):
 *   the 8-bit image at PSNR >= 35 dB against diffusers' fp32 image (the bound).
 * Both: the DF11-compressed pipeline folder renders the same RGB bytes as the BF16 one, and
 * the same job twice gives the same bytes. SD3.5 Large-like also as one file, as
 * sd3.5_large.safetensors holds it (Stability's transformer names under
 * "model.diffusion_model.", the VAE and the three text encoders beside it; the tokenizers by
 * path): the same latents and pixels as the folder.
 * usage: test_pipeline --cpu|--gpu FIXTURES_DIR */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <unistd.h>

#include "pipeline/pipeline.h"
#include "unet_dit/sampler.h"
#include "unet_dit/sd3.h"
#include "weights/weights.h"
#include "core/half.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "df11/tree.h"
#include "tests/testutil.h"
#include "tests/testutil_pipeline.h"
#include "tests/testutil_sd3.h"

static const float *ref_f32(st_file *f, const char *name, uint64_t n) {
    const st_tensor *t = st_find(f, name);
    if (!t || t->dtype != DTYPE_F32 || t->numel != n) {
        printf("FAIL fixture tensor %s missing or not F32 x %llu\n", name, (unsigned long long)n);
        exit(1);
    }
    return (const float *)t->data;
}

static const char *meta(st_file *f, const char *key) {
    const char *v = st_meta(f, key);
    if (!v) {
        printf("FAIL fixture metadata %s missing\n", key);
        exit(1);
    }
    return v;
}

static double rel_l2(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* One reference run: v names its tensors (v.latents, ...), dir the pipeline folder under the
 * fixtures; the rest is the job as the fixture script ran it. */
typedef struct run_case {
    const char *v, *dir;
    int flux;     /* FLUX: latents packed in the reference; else SD3 */
    int full;     /* also: the same job twice, and DF11 = BF16 */
    float cfg;    /* SD3: < 0 the metadata's <v>.guidance */
    int negative; /* SD3 with CFG: the metadata's negative_prompt, else the default "" */
    int slg;      /* skip-layer guidance as the metadata's <v>.scale, ... give it */
} run_case;

/* [16, h, w] latents in FluxPipeline's packed [N, 64] order */
static float *pack(const capture *c) {
    const int64_t nl = 16 * c->lh * c->lw;
    float *packed = malloc(sizeof *packed * (size_t)nl);
    for (int64_t ch = 0; ch < 16; ch++)
        for (int64_t y = 0; y < c->lh; y++)
            for (int64_t x = 0; x < c->lw; x++) {
                int64_t tok = (y / 2) * (c->lw / 2) + x / 2, f = ch * 4 + (y % 2) * 2 + x % 2;
                packed[tok * 64 + f] = c->lat[(ch * c->lh + y) * c->lw + x];
            }
    return packed;
}

/* The fixture's job for case rc (free with job_free) */
static void job_for(const run_case *rc, st_file *ref, pipeline_job *j) {
    char key[128];
    job_init(j);
    jset(j, JOB_PROMPT, meta(ref, "prompt"));
    jset(j, JOB_SEED, meta(ref, "seed"));
    jset(j, JOB_WIDTH, meta(ref, "width"));
    jset(j, JOB_HEIGHT, meta(ref, "height"));
    snprintf(key, sizeof key, "%s.steps", rc->v);
    jset(j, JOB_STEPS, meta(ref, key));
    snprintf(key, sizeof key, "%s.guidance", rc->v);
    if (rc->flux && !strcmp(rc->v, "dev")) jset(j, JOB_GUIDANCE, meta(ref, key));
    if (!rc->flux && rc->cfg >= 0) jnum(j, JOB_CFG_SCALE, rc->cfg);
    if (!rc->flux && rc->cfg < 0) jset(j, JOB_CFG_SCALE, meta(ref, key));
    if (rc->negative) jset(j, JOB_NEGATIVE, meta(ref, "negative_prompt"));
    if (rc->slg) {
        /* <v>.scale, <v>.skip_layers ("1,2"), <v>.start, <v>.stop */
        snprintf(key, sizeof key, "%s.scale", rc->v);
        jset(j, JOB_SLG_SCALE, meta(ref, key));
        snprintf(key, sizeof key, "%s.skip_layers", rc->v);
        jset(j, JOB_SKIP_LAYERS, meta(ref, key));
        snprintf(key, sizeof key, "%s.start", rc->v);
        jset(j, JOB_SLG_START, meta(ref, key));
        snprintf(key, sizeof key, "%s.stop", rc->v);
        jset(j, JOB_SLG_END, meta(ref, key));
    }
    jset(j, JOB_MAX_SEQ, meta(ref, "max_sequence_length"));
    jset(j, JOB_NOISE, "f32"); /* the fp32 reference pipeline's noise */
}

static void check_variant(const char *fixtures, const run_case *rc, int gpu, st_file *ref) {
    char dir[4096], key[128];
    const char *v = rc->v;
    snprintf(dir, sizeof dir, "%s/%s", fixtures, rc->dir);
    pipeline_job j;
    job_for(rc, ref, &j);
    capture c = {0};
    err e = render(dir, gpu, &j, &c);
    expect(!e, "%s: render (%s)", v, e ? err_msg() : "");
    if (e) return job_free(&j);
    const int64_t H = c.h, W = c.w, nl = 16 * c.lh * c.lw;
    snprintf(key, sizeof key, "%s.latents", v);
    const float *rl = ref_f32(ref, key, (uint64_t)nl);
    float *lat = rc->flux ? pack(&c) : c.lat;
    double el = rel_l2(lat, rl, nl);
    if (rc->flux) free(lat);
    snprintf(key, sizeof key, "%s.image", v);
    double ei = rel_l2(c.img, ref_f32(ref, key, (uint64_t)(3 * H * W)), 3 * H * W);
    snprintf(key, sizeof key, "%s.png", v);
    const st_tensor *rp = st_find(ref, key);
    double mse = 0;
    int maxd = 0;
    for (int64_t i = 0; rp && i < 3 * H * W; i++) {
        int d = abs((int)c.rgb[i] - (int)rp->data[i]);
        mse += (double)d * d;
        if (d > maxd) maxd = d;
    }
    mse /= (double)(3 * H * W);
    double psnr = mse > 0 ? 10 * log10(255.0 * 255.0 / mse) : INFINITY;
    if (!gpu) {
        expect(el <= 1e-4, "%s cpu: final latents rel L2 %.3g (bound 1e-4)", v, el);
        expect(ei <= 1e-4, "%s cpu: decoded image rel L2 %.3g (bound 1e-4)", v, ei);
        expect(rp && maxd <= 1, "%s cpu: 8-bit pixels max diff %d (bound 1), PSNR %.1f dB", v, maxd,
               psnr);
    } else {
        printf("     %s gpu: final latents rel L2 %.3g, decoded image rel L2 %.3g\n", v, el, ei);
        expect(rp && psnr >= 35,
               "%s gpu: 8-bit image PSNR %.2f dB against diffusers fp32 "
               "(bound 35), max diff %d",
               v, psnr, maxd);
    }
    if (!rc->full) {
        capture_free(&c);
        return job_free(&j);
    }
    /* the same job twice: the same bytes */
    capture c2 = {0};
    e = render(dir, gpu, &j, &c2);
    expect(!e && !memcmp(c.rgb, c2.rgb, (size_t)(3 * H * W)),
           "%s: the same job twice gives the "
           "same pixels",
           v);
    capture_free(&c2);
    /* DF11: the compressed folder renders the same bytes (default noise dtype this time) */
    char tmp[] = "/tmp/df11_pipe_XXXXXX", out[4200];
    if (!mkdtemp(tmp)) return job_free(&j);
    snprintf(out, sizeof out, "%s/%s", tmp, v);
    df11_params dp;
    df11_params_init(&dp);
    e = df11_convert_path(DF11_OP_COMPRESS, dir, out, &dp, 0, NULL);
    expect(!e, "%s: df11 compress of the pipeline folder (%s)", v, e ? err_msg() : "");
    j.set &= ~JOB_BIT(JOB_NOISE);
    capture a = {0}, b = {0};
    err ea = render(dir, gpu, &j, &a), eb = e ? e : render(out, gpu, &j, &b);
    expect(!ea && !eb && a.rgb && b.rgb && !memcmp(a.rgb, b.rgb, (size_t)(3 * H * W)),
           "%s %s: DF11 and BF16 weights render identical pixels", v, gpu ? "gpu" : "cpu");
    capture_free(&a), capture_free(&b), capture_free(&c);
    job_free(&j);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd)) printf("note: could not remove %s\n", tmp);
}

/* dir (a diffusers SD3 folder) as one file at out, laid out as Stability's single files */
static err write_sd3_single(const char *dir, const char *out) {
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/transformer", dir);
    op_ctx *cpu = NULL;
    wt_source *src = NULL;
    sd3_model *m = NULL;
    TRY(op_ctx_create(TENSOR_CPU, &cpu));
    err e = wt_open(sub, &src);
    if (!e) e = sd3_load(src, cpu, NULL, &m);
    const sd3_config c = m ? *sd3_get_config(m) : (sd3_config){0};
    sd3_free(m);
    wt_close(src);
    op_ctx_free(cpu);
    TRY(e);
    tu_renamer o;
    TRY(tu_renamer_open(&o, sub, "model.diffusion_model."));
    tu_sd3_rename_original(&o, &c);
    static const char *const parts[][2] = {{"vae", "first_stage_model."},
                                           {"text_encoder", "text_encoders.clip_l.transformer."},
                                           {"text_encoder_2", "text_encoders.clip_g.transformer."},
                                           {"text_encoder_3", "text_encoders.t5xxl.transformer."}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0] && !o.e; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, parts[i][0]);
        o.e = tu_renamer_source(&o, sub, parts[i][1]);
        tu_rename_all(&o);
    }
    return tu_renamer_finish(&o, out);
}

static void check_sd3_single(const char *fixtures, const run_case *rc, int gpu, st_file *ref) {
    char dir[4096], tmp[] = "/tmp/df11_single_XXXXXX", file[4200], tok[3][4200];
    snprintf(dir, sizeof dir, "%s/%s", fixtures, rc->dir);
    if (!mkdtemp(tmp)) return;
    snprintf(file, sizeof file, "%s/sd3.5_large.safetensors", tmp);
    err e = write_sd3_single(dir, file);
    expect(!e, "single file: written (%s)", e ? err_msg() : "");
    pipeline_job j;
    job_for(rc, ref, &j);
    static const char *const toks[3] = {"tokenizer", "tokenizer_2", "tokenizer_3"};
    for (int i = 0; i < 3; i++)
        snprintf(tok[i], sizeof tok[i], "%s/%s", dir, toks[i]);
    pipeline_paths p = {.model_dir = file, .clip_tokenizer = tok[0], .t5_tokenizer = tok[2]};
    capture a = {0}, b = {0};
    pipeline_callbacks cb = capture_cb(&b);
    /* no CLIP-G tokenizer given: CLIP-L's padding with "!" (SD3's tokenizer_2 is just that) */
    e = e ? e : render(dir, gpu, &j, &a);
    err eb = e ? e : run_paths(&p, gpu, &j, 1, &cb);
    expect(!e && !eb, "single file %s: render (%s)", gpu ? "gpu" : "cpu", e || eb ? err_msg() : "");
    if (!e && !eb) {
        const int64_t nl = 16 * a.lh * a.lw, npx = 3 * a.h * a.w;
        const int shape = b.lat && b.lh == a.lh && b.lw == a.lw && b.rgb && b.h == a.h;
        expect(shape && !memcmp(a.lat, b.lat, sizeof *a.lat * (size_t)nl),
               "single file %s, CLIP-L's tokenizer padding with \"!\" for CLIP-G: the same "
               "latents as the diffusers folder (relative L2 %.3g)",
               gpu ? "gpu" : "cpu", shape ? rel_l2(b.lat, a.lat, nl) : -1.0);
        /* the file's VAE has no config: norm_num_groups is 32 as in every real SD3/FLUX VAE,
           but the tiny one has 8; with the folder's VAE by path, the same pixels */
        capture c = {0};
        char vae[4200];
        snprintf(vae, sizeof vae, "%s/vae", dir);
        p.vae = vae;
        p.clip_g_tokenizer = tok[1];
        cb.ctx = &c;
        eb = run_paths(&p, gpu, &j, 1, &cb);
        expect(!eb && c.rgb && c.h == a.h && !memcmp(a.lat, c.lat, sizeof *a.lat * (size_t)nl) &&
                   !memcmp(a.rgb, c.rgb, (size_t)npx),
               "single file %s with --clip-g-tokenizer and --vae: the same latents and pixels "
               "as the diffusers folder (%s)",
               gpu ? "gpu" : "cpu", eb ? err_msg() : "");
        capture_free(&c);
    }
    capture_free(&a), capture_free(&b);
    job_free(&j);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd)) printf("note: could not remove %s\n", tmp);
}

/* Several jobs in one run (each model loaded once: pipeline_run_many): each job's latents and
 * pixels are those of the job run alone; a job whose size the model refuses is left out with a
 * message, and the others run. rc: a case's job, and a second job changed as change() says. */
static void check_many(const char *fixtures, const run_case *rc, int gpu, st_file *ref,
                       const char *what, void (*change)(pipeline_job *)) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", fixtures, rc->dir);
    pipeline_job j[3];
    job_for(rc, ref, &j[0]);
    job_copy(&j[1], &j[0]);
    change(&j[1]);
    job_copy(&j[2], &j[0]);
    jnum(&j[2], JOB_WIDTH, 136); /* FLUX floors it with a warning; SD3 refuses it */
    capture many[3] = {{0}}, alone[2] = {{0}};
    pipeline_paths p = {.model_dir = dir};
    pipeline_callbacks cb = capture_cb(many);
    cb.on_skip = on_skip;
    err e = ERR_OK;
    for (int k = 0; k < 2 && !e; k++)
        e = render(dir, gpu, &j[k], &alone[k]);
    err em = e ? e : run_paths(&p, gpu, j, 3, &cb);
    expect(!e && !em, "%s %s: three jobs in one run (%s)", rc->v, what, e || em ? err_msg() : "");
    if (!e && !em) {
        for (int k = 0; k < 2; k++)
            expect(same_capture(&many[k], &alone[k]),
                   "%s %s %s: job %d of the run gives the bits it gives alone", rc->v, what,
                   gpu ? "gpu" : "cpu", k);
        if (rc->flux)
            expect(same_capture(&many[2], &alone[0]),
                   "%s: width 136 floored to 128 in a run: job 0's bits again", rc->v);
        else
            expect(!many[2].rgb && strstr(many[2].skipped, "multiples of 16"),
                   "%s: the job of width 136 left out with its reason ('%s')", rc->v,
                   many[2].skipped);
    }
    for (int k = 0; k < 3; k++)
        capture_free(&many[k]), job_free(&j[k]);
    capture_free(&alone[0]), capture_free(&alone[1]);
}

static void other_seed_size(pipeline_job *j) {
    jnum(j, JOB_SEED, (double)(j->seed + 5));
    jnum(j, JOB_WIDTH, 64);
    jnum(j, JOB_HEIGHT, 64);
}
static void no_cfg_fewer_steps(pipeline_job *j) {
    jnum(j, JOB_CFG_SCALE, 0);
    jnum(j, JOB_STEPS, 3);
    jset(j, JOB_PROMPT, "a red bicycle");
}

/* Writes src (a single safetensors file of BF16 tensors) as dst with every BF16 tensor in dt
 * (F32 or F16), the way users meet fp32/fp16 checkpoints. */
static err convert_file(const char *src, const char *dst, dtype dt) {
    st_file *f;
    TRY(st_open(src, &f));
    st_writer *w = NULL;
    err e = st_writer_create(&w);
    void **bufs = calloc((size_t)st_count(f) + 1, sizeof *bufs);
    for (int i = 0; !e && i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (t->dtype != DTYPE_BF16) {
            e = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->end - t->begin);
            continue;
        }
        const uint16_t *v = (const uint16_t *)t->data;
        size_t sz = dt == DTYPE_F32 ? 4 : 2;
        uint8_t *o = bufs[i] = malloc(t->numel * sz + 4);
        for (uint64_t k = 0; k < t->numel; k++) {
            float x = bf16_to_f32(v[k]);
            if (dt == DTYPE_F32)
                memcpy(o + 4 * k, &x, 4);
            else {
                uint16_t h = f32_to_f16(x);
                memcpy(o + 2 * k, &h, 2);
            }
        }
        e = st_writer_add(w, t->name, dt, t->ndim, t->shape, o, t->numel * sz);
    }
    if (!e) e = st_writer_finish(w, dst, 8);
    for (int i = 0; i < st_count(f); i++)
        free(bufs[i]);
    free(bufs);
    st_writer_free(w);
    st_close(f);
    return e;
}

/* A copy of the dev pipeline whose VAE, CLIP and T5 are stored as dt (the transformer stays
 * BF16: its sharded files are the DF11 tests' subject). F32 widens BF16 exactly, so the render
 * must be the BF16 one's bytes; F16 holds every BF16 weight of normal size exactly but rounds
 * the smallest (F16 subnormals), so its render is only close. */
static void check_dtypes(const char *fixtures, int gpu) {
    char rel[1024], dev[PATH_MAX], cmd[8 * PATH_MAX];
    snprintf(rel, sizeof rel, "%s/flux_tiny/dev", fixtures);
    if (!realpath(rel, dev)) {
        expect(0, "dtypes: %s not found", rel);
        return;
    }
    pipeline_job j;
    job_init(&j);
    jset(&j, JOB_PROMPT, "a red house by the sea");
    jnum(&j, JOB_WIDTH, 128);
    jnum(&j, JOB_HEIGHT, 128);
    jnum(&j, JOB_STEPS, 3);
    jnum(&j, JOB_MAX_SEQ, 64);
    capture ref = {0};
    if (render(dev, gpu, &j, &ref)) {
        expect(0, "dtypes: BF16 render (%s)", err_msg());
        return job_free(&j);
    }
    static const struct {
        dtype dt;
        const char *name;
    } kinds[] = {{DTYPE_F32, "F32"}, {DTYPE_F16, "F16"}};
    for (int k = 0; k < 2; k++) {
        char tmp[] = "/tmp/df11_dtype_XXXXXX";
        if (!mkdtemp(tmp)) break;
        snprintf(
            cmd, sizeof cmd,
            "cd '%s' && for c in transformer tokenizer tokenizer_2 scheduler model_index.json; "
            "do ln -s '%s'/$c $c; done && mkdir vae text_encoder "
            "text_encoder_2 && cp '%s'/vae/config.json vae/ && cp '%s'/text_encoder/config.json "
            "text_encoder/ && cp '%s'/text_encoder_2/config.json text_encoder_2/",
            tmp, dev, dev, dev, dev);
        int ok = system(cmd) == 0;
        static const char *files[] = {"vae/diffusion_pytorch_model.safetensors",
                                      "text_encoder/model.safetensors",
                                      "text_encoder_2/model.safetensors"};
        for (int i = 0; ok && i < 3; i++) {
            char a[4200], b[4200];
            snprintf(a, sizeof a, "%s/%s", dev, files[i]);
            snprintf(b, sizeof b, "%s/%s", tmp, files[i]);
            ok = !convert_file(a, b, kinds[k].dt);
        }
        capture c = {0};
        err e = ok ? render(tmp, gpu, &j, &c) : ERR_IO;
        if (e || !c.rgb) {
            expect(0, "dtypes: %s parts render (%s)", kinds[k].name, ok ? err_msg() : "setup");
        } else {
            double mse = 0;
            for (int64_t i = 0; i < 3 * c.h * c.w; i++)
                mse += ((double)c.rgb[i] - ref.rgb[i]) * ((double)c.rgb[i] - ref.rgb[i]);
            mse /= (double)(3 * c.h * c.w);
            double psnr = mse > 0 ? 10 * log10(255.0 * 255.0 / mse) : INFINITY;
            if (kinds[k].dt == DTYPE_F32)
                expect(mse == 0,
                       "dtypes: VAE, CLIP and T5 in F32 render the BF16 bytes (PSNR %.1f)", psnr);
            else
                expect(psnr >= 40,
                       "dtypes: VAE, CLIP and T5 in F16: PSNR %.1f dB against BF16 "
                       "(bound 40)",
                       psnr);
        }
        capture_free(&c);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd)) printf("note: could not remove %s\n", tmp);
    }
    capture_free(&ref);
    job_free(&j);
}

/* ---- the window's hooks: previews at every step, cancellation ---- */

typedef struct preview_capture {
    capture c;
    int n, last_step, order_ok, cancel_at, steps;
    volatile int cancel;
    float *last;
} preview_capture;

static void on_preview(void *ctx, int job, int image, int step, const float *lat, int64_t h,
                       int64_t w) {
    preview_capture *p = ctx;
    p->order_ok &= step == p->last_step + 1;
    p->last_step = step, p->n++;
    free(p->last);
    p->last = malloc(sizeof *p->last * (size_t)(16 * h * w));
    memcpy(p->last, lat, sizeof *p->last * (size_t)(16 * h * w));
}

static void on_step_cancel(void *ctx, int job, int image, int n_images, int step, int n_steps) {
    preview_capture *p = ctx;
    p->steps++;
    if (step == p->cancel_at) p->cancel = 1;
}

static void on_latents_p(void *ctx, int job, int image, const float *lat, int64_t h, int64_t w) {
    on_latents(&((preview_capture *)ctx)->c, job, image, lat, h, w);
}

static err on_image_p(void *ctx, int job, int image, uint64_t seed, const uint8_t *rgb, int w,
                      int h) {
    return on_image(&((preview_capture *)ctx)->c, job, image, seed, rgb, w, h);
}

/* A preview after every step, in order; the last is the final latents exactly (sigma 0: x -
 * 0 v), which for FLUX checks the unpacking of its 2x2 tokens. Cancelling after step 1 stops
 * the run there with ERR_CANCELLED and no image; cancelling before the start runs no step. */
static void check_preview_cancel(const char *fixtures, const run_case *rc, int gpu, st_file *ref) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", fixtures, rc->dir);
    pipeline_job j;
    job_for(rc, ref, &j);
    pipeline_paths p = {.model_dir = dir};
    preview_capture pc = {.order_ok = 1};
    pipeline_callbacks cb = {.ctx = &pc,
                             .on_preview = on_preview,
                             .on_latents = on_latents_p,
                             .on_image = on_image_p,
                             .on_step = on_step_cancel,
                             .cancel = &pc.cancel};
    err e = run_paths(&p, gpu, &j, 1, &cb);
    const int64_t n = 16 * pc.c.lh * pc.c.lw;
    int same = !e && pc.last && pc.c.lat && n > 0;
    for (int64_t i = 0; same && i < n; i++)
        same = pc.last[i] == pc.c.lat[i];
    expect(!e && pc.n == j.steps && pc.order_ok && same,
           "%s: a preview after each of the %d steps (%d, in order: %d), the last the final "
           "latents exactly: %d",
           rc->v, j.set & JOB_BIT(JOB_STEPS) ? j.steps : -1, pc.n, pc.order_ok, same);
    capture_free(&pc.c);
    free(pc.last);
    pc = (preview_capture){.order_ok = 1, .cancel_at = 1};
    e = run_paths(&p, gpu, &j, 1, &cb);
    expect(e == ERR_CANCELLED && pc.steps == 1 && !pc.c.rgb,
           "%s: cancelled after step 1: %s after %d steps, no image", rc->v, err_name(e), pc.steps);
    capture_free(&pc.c);
    free(pc.last);
    pc = (preview_capture){.order_ok = 1, .cancel = 1};
    e = run_paths(&p, gpu, &j, 1, &cb);
    expect(e == ERR_CANCELLED && pc.steps == 0 && !pc.c.rgb,
           "%s: cancelled before the start: %s, %d steps", rc->v, err_name(e), pc.steps);
    capture_free(&pc.c);
    free(pc.last);
    job_free(&j);
}

int main(int argc, char **argv) {
    const int gpu = backend_arg(argc, argv, "test_pipeline");
    char path[4096];
    st_file *ref[2];
    for (int f = 0; f < 2; f++) {
        snprintf(path, sizeof path, "%s/%s/ref.safetensors", argv[2], f ? "sd3_tiny" : "flux_tiny");
        if (st_open(path, &ref[f])) {
            printf("FAIL %s\n", err_msg());
            return 1;
        }
    }
    static const run_case cases[] = {
        {"dev", "flux_tiny/dev", 1, 1, 0, 0, 0},
        {"schnell", "flux_tiny/schnell", 1, 1, 0, 0, 0},
        {"large", "sd3_tiny/large", 0, 1, -1, 1, 0},
        {"medium", "sd3_tiny/medium", 0, 1, -1, 0, 0},
        {"medium.slg", "sd3_tiny/medium", 0, 0, -1, 0, 1},
        {"large.nocfg", "sd3_tiny/large", 0, 0, -1, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        check_variant(argv[2], &cases[i], gpu, ref[!cases[i].flux]);
    check_sd3_single(argv[2], &cases[2], gpu, ref[1]);
    check_many(argv[2], &cases[0], gpu, ref[0], "with another seed and size", other_seed_size);
    check_many(argv[2], &cases[2], gpu, ref[1], "without CFG, 3 steps, another prompt",
               no_cfg_fewer_steps);
    check_dtypes(argv[2], gpu);
    check_preview_cancel(argv[2], &cases[0], gpu, ref[0]);
    check_preview_cancel(argv[2], &cases[2], gpu, ref[1]);
    st_close(ref[0]);
    st_close(ref[1]);
    printf("%s\n", fails ? "FAILED" : "all passed");
    return fails != 0;
}
