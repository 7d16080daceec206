/* test_pipeline: FLUX.1 end to end (app/flux_pipeline.c) on the tiny random-weight dev and
 * schnell pipelines against diffusers' FluxPipeline run in fp32 on the CPU with the same seed
 * (tests/fixtures/make_flux_ref.py; tensors P.latents, P.image, P.png). With --cpu (the fp32
 * reference backend, noise drawn in float32 as the fp32 pipeline does):
 *   final latents within 1e-4 relative L2 (the bound: fp32 against fp32, the only
 *   differences are summation orders, amplified by the denoising loop);
 *   the decoded image within 1e-4 relative L2 and the 8-bit pixels within 1 of diffusers'
 *   (a value within 1e-4 of a rounding boundary may round the other way).
 * With --gpu (BF16 activations, noise drawn in float32 so the start matches the reference):
 *   the 8-bit image at PSNR >= 35 dB against diffusers' fp32 image (the bound).
 * Both: the DF11-compressed pipeline folder renders the same RGB bytes as the BF16 one, and
 * the same job twice gives the same bytes.
 * usage: test_pipeline --cpu|--gpu FIXTURES_DIR */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/flux_pipeline.h"
#include "core/ops.h"
#include "core/safetensors.h"
#include "df11/tree.h"
#include "tests/testutil.h"

static int fails;

typedef struct capture {
    float *lat, *img;
    uint8_t *rgb;
    int64_t lh, lw, h, w;
} capture;

static void on_latents(void *ctx, int image, const float *lat, int64_t h, int64_t w) {
    capture *c = ctx;
    c->lh = h, c->lw = w;
    c->lat = malloc(sizeof *c->lat * (size_t)(16 * h * w));
    memcpy(c->lat, lat, sizeof *c->lat * (size_t)(16 * h * w));
}

static void on_decoded(void *ctx, int image, const float *img, int64_t h, int64_t w) {
    capture *c = ctx;
    c->img = malloc(sizeof *c->img * (size_t)(3 * h * w));
    memcpy(c->img, img, sizeof *c->img * (size_t)(3 * h * w));
}

static err on_image(void *ctx, int image, uint64_t seed, const uint8_t *rgb, int w, int h) {
    capture *c = ctx;
    c->h = h, c->w = w;
    c->rgb = malloc((size_t)(3 * w * h));
    memcpy(c->rgb, rgb, (size_t)(3 * w * h));
    return ERR_OK;
}

static void capture_free(capture *c) {
    free(c->lat), free(c->img), free(c->rgb);
    memset(c, 0, sizeof *c);
}

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

static void expect(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void expect(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fails += !ok;
}

static err render(const char *dir, const flux_job *j, capture *c) {
    flux_paths p = {.model_dir = dir};
    flux_callbacks cb = {c, NULL, NULL, on_latents, on_decoded, on_image};
    return flux_pipeline_run(&p, j, &cb);
}

static void check_variant(const char *fixtures, const char *v, int gpu, st_file *ref) {
    char dir[4096], key[128];
    snprintf(dir, sizeof dir, "%s/flux_tiny/%s", fixtures, v);
    const int dev = !strcmp(v, "dev");
    flux_job j;
    flux_job_init(&j);
    j.prompt = meta(ref, "prompt");
    j.seed = strtoull(meta(ref, "seed"), NULL, 10);
    j.width = atoi(meta(ref, "width"));
    j.height = atoi(meta(ref, "height"));
    snprintf(key, sizeof key, "%s.steps", v);
    j.steps = atoi(meta(ref, key));
    snprintf(key, sizeof key, "%s.guidance", v);
    j.guidance = dev ? (float)atof(meta(ref, key)) : 0.0f;
    j.max_seq = atoi(meta(ref, "max_sequence_length"));
    j.cpu = !gpu;
    j.noise_dtype = NOISE_F32; /* the fp32 reference pipeline's noise */
    capture c = {0};
    err e = render(dir, &j, &c);
    expect(!e, "%s: render (%s)", v, e ? err_msg() : "");
    if (e) return;
    const int64_t H = c.h, W = c.w, nl = 16 * c.lh * c.lw;
    /* the reference's final latents are packed [1, N, 64]: unpack ours' layout to compare */
    snprintf(key, sizeof key, "%s.latents", v);
    const float *rl = ref_f32(ref, key, (uint64_t)nl);
    float *packed = malloc(sizeof *packed * (size_t)nl);
    for (int64_t ch = 0; ch < 16; ch++)
        for (int64_t y = 0; y < c.lh; y++)
            for (int64_t x = 0; x < c.lw; x++) {
                int64_t tok = (y / 2) * (c.lw / 2) + x / 2, f = ch * 4 + (y % 2) * 2 + x % 2;
                packed[tok * 64 + f] = c.lat[(ch * c.lh + y) * c.lw + x];
            }
    double el = rel_l2(packed, rl, nl);
    free(packed);
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
    /* the same job twice: the same bytes */
    capture c2 = {0};
    e = render(dir, &j, &c2);
    expect(!e && !memcmp(c.rgb, c2.rgb, (size_t)(3 * H * W)),
           "%s: the same job twice gives the "
           "same pixels",
           v);
    capture_free(&c2);
    /* DF11: the compressed folder renders the same bytes (default noise dtype this time) */
    char tmp[] = "/tmp/df11_pipe_XXXXXX", out[4200];
    if (!mkdtemp(tmp)) return;
    snprintf(out, sizeof out, "%s/%s", tmp, v);
    df11_params dp;
    df11_params_init(&dp);
    e = df11_convert_path(DF11_OP_COMPRESS, dir, out, &dp, 0, NULL);
    expect(!e, "%s: df11 compress of the pipeline folder (%s)", v, e ? err_msg() : "");
    j.noise_dtype = -1;
    capture a = {0}, b = {0};
    err ea = render(dir, &j, &a), eb = e ? e : render(out, &j, &b);
    expect(!ea && !eb && a.rgb && b.rgb && !memcmp(a.rgb, b.rgb, (size_t)(3 * H * W)),
           "%s %s: DF11 and BF16 weights render identical pixels", v, gpu ? "gpu" : "cpu");
    capture_free(&a), capture_free(&b), capture_free(&c);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd)) printf("note: could not remove %s\n", tmp);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "--cpu") && strcmp(argv[1], "--gpu"))) {
        fprintf(stderr, "usage: test_pipeline --cpu|--gpu FIXTURES_DIR\n");
        return 2;
    }
    const int gpu = !strcmp(argv[1], "--gpu");
    if (gpu) {
        op_ctx *c;
        if (op_ctx_create(TENSOR_CUDA, &c)) {
            printf("skipped: %s\n", err_msg());
            return 77;
        }
        op_ctx_free(c);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/flux_tiny/ref.safetensors", argv[2]);
    st_file *ref;
    if (st_open(path, &ref)) {
        printf("FAIL %s\n", err_msg());
        return 1;
    }
    check_variant(argv[2], "dev", gpu, ref);
    check_variant(argv[2], "schnell", gpu, ref);
    st_close(ref);
    printf("%s\n", fails ? "FAILED" : "all passed");
    return fails != 0;
}
