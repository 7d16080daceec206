/* test_flux: the FLUX.1 transformer (unet_dit/flux.h) against diffusers'
 * FluxTransformer2DModel on the tiny fixture models (tests/fixtures/make_flux_ref.py: D 128,
 * 2 heads x 64, 2 double + 2 single blocks, RoPE axes (8, 28, 28), BF16 weights in two shards;
 * the reference P.fwd.out computed in fp32 on the CPU), dev (guidance) and schnell. Also: the
 * same call twice gives the same bits; BFL names (fused qkv and linear1, swapped final layer,
 * with and without the "model.diffusion_model." prefix) give the same bits as diffusers names;
 * DF11-compressed shards give the same bits as BF16 (GPU: under WP_RESIDENT, WP_DF11 and
 * WP_STREAM); a missing or mis-shaped block tensor is an error naming the file and tensor; the
 * timestep/guidance rounding chain gives MODEL-SPEC §6.3's values.
 * usage: test_flux --cpu|--gpu FIXTURES_DIR (exits 77 for --gpu without a GPU). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/gpu.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "df11/container.h"
#include "df11/tree.h"
#include "tests/testutil.h"
#include "tests/testutil_dit.h"
#include "unet_dit/flux.h"

/* Bounds, with the reasoning:
 * CPU_REL_L2 1e-5: fp32 against fp32 from the same BF16 weights. Both sides round every op to
 *   fp32 (u = 6e-8) and differ in summation order only (ours: plain sequential dot products and
 *   double-precision norm statistics; torch: blocked, vectorised sums). A dot product of K <= 640
 *   terms carries ~sqrt(K) u ~ 1.5e-6 relative error at worst; through the ~50 ops in sequence
 *   with random-weight gains near 1 that stays ~1e-6 (measured: 3e-7), so 1e-5 keeps a factor
 *   ~10 of margin, while any wrong op fails it (per MODEL-SPEC §0 even a LayerNorm eps of 1e-5
 *   instead of 1e-6 moves the output by ~1e-4).
 * GPU_REL_L2 2e-2: BF16 activations (u = 2^-9 = 2e-3 at each of the ~50 rounding points, plus
 *   the BF16 inputs) against the fp32 reference, given the fp32 reference's own sinusoid inputs
 *   (flux_forward_tau), so that only the arithmetic differs. diffusers' own BF16 forward of
 *   these fixtures lands at 5.7e-3 (dev) and 5.8e-3 (schnell) relative L2 from its fp32 one at
 *   equal sinusoid inputs (torch 2.15 on the CPU; the fixture's timestep 1.0 gives tau 1000 in
 *   both dtypes, guidance 3504 in both); 2e-2 allows ~3.5x that for a different accumulation
 *   order and kernel set, and any real mistake (a wrong op, order or chunk) costs O(1). The
 *   pipeline's own chain (flux_forward: guidance 3.5 -> 3504 in bf16) is printed too; for dev
 *   it is a different input than the reference's 3500, so it is not held to the bound. */
#define CPU_REL_L2 1e-5
#define GPU_REL_L2 2e-2

static op_ctx *ctx;
static int gpu;
static const st_file *ref;
static char tmp[] = "/tmp/df11_test_flux_XXXXXX";

/* one variant's reference tensors (F32, host) */
typedef struct variant {
    const char *name; /* "dev", "schnell" */
    const st_tensor *x, *ts, *g, *out, *t5, *pooled;
    int64_t h2, w2;
} variant;

/* Plans m for the variant, sets its text, runs one forward (tau, gs as given when use_tau,
 * else the pipeline's chain from t = 1000 timestep and g) into r. */
static err run_model(flux_model *m, const variant *p, int use_tau, float tau, float gs,
                     tu_result *r) {
    TRY(flux_plan(m, p->h2, p->w2, p->t5->shape[1]));
    tensor x = tu_to_dev(p->x, gpu), t5 = tu_to_dev(p->t5, gpu), pooled = tu_to_dev(p->pooled, gpu);
    const int64_t n = (int64_t)p->x->numel;
    tensor out = x;
    if (gpu)
        CHECK(!gpu_alloc(&out.data, (size_t)n * 2));
    else
        CHECK((out.data = malloc((size_t)n * 4)));
    flux_set_text(m, t5, pooled);
    const float t = 1000.0f * ((const float *)p->ts->data)[0];
    const float g = p->g ? ((const float *)p->g->data)[0] : 0.0f;
    if (use_tau)
        flux_forward_tau(m, out, x, tau, gs);
    else
        flux_forward(m, out, x, t, g);
    tu_result_free(r);
    r->n = n;
    r->raw_bytes = (size_t)n * (gpu ? 2 : 4);
    r->v = malloc((size_t)n * 4);
    r->raw = malloc(r->raw_bytes);
    CHECK(r->v && r->raw);
    err e = op_ctx_sync(ctx);
    if (!e && gpu) e = gpu_download(r->raw, out.data, r->raw_bytes);
    if (!e && !gpu) memcpy(r->raw, out.data, r->raw_bytes);
    for (int64_t i = 0; !e && i < n; i++)
        r->v[i] = gpu ? bf16_to_f32(((uint16_t *)r->raw)[i]) : ((float *)r->raw)[i];
    tu_dev_free(x, gpu), tu_dev_free(t5, gpu), tu_dev_free(pooled, gpu), tu_dev_free(out, gpu);
    return e;
}

/* Opens path, loads with mode (budget for WP_STREAM), runs the variant through the pipeline
 * chain; prints the error and returns it on failure. */
static err run_path(const char *path, wp_mode mode, size_t budget, const variant *p, tu_result *r,
                    flux_config *cfg) {
    wt_source *src = NULL;
    flux_model *m = NULL;
    flux_load_opts o = {mode, budget};
    err e = wt_open(path, &src);
    if (!e) e = flux_load(src, ctx, &o, &m);
    if (!e && cfg) *cfg = *flux_get_config(m);
    if (!e) e = run_model(m, p, 0, 0, 0, r);
    if (e) fprintf(stderr, "%s: %s\n", path, err_msg());
    flux_free(m);
    wt_close(src);
    return e;
}

static const st_tensor *ref_tensor(const char *name) {
    const st_tensor *t = st_find(ref, name);
    EXPECT(t && t->dtype == DTYPE_F32, "ref.safetensors: no F32 tensor '%s'", name);
    return t && t->dtype == DTYPE_F32 ? t : NULL;
}

/* the fixture's model: config, the reference, and the same call twice */
static void test_reference(const char *dir, const variant *p, tu_result *base) {
    flux_config c;
    if (run_path(dir, WP_RESIDENT, 0, p, base, &c)) {
        EXPECT(0, "%s: running the fixture transformer failed", p->name);
        return;
    }
    const int dev = !strcmp(p->name, "dev");
    EXPECT(c.D == 128 && c.heads == 2 && c.head_dim == 64 && c.n_double == 2 && c.n_single == 2 &&
               c.in_ch == 64 && c.ctx_dim == 128 && c.pooled_dim == 64 && c.mlp == 512 &&
               c.axes[0] == 8 && c.axes[1] == 28 && c.axes[2] == 28 && c.guidance == dev &&
               !c.bfl_names,
           "%s: config D %lld heads %lld x %lld blocks %lld + %lld in %lld ctx %lld pooled %lld "
           "mlp %lld axes %d %d %d guidance %d bfl %d",
           p->name, (long long)c.D, (long long)c.heads, (long long)c.head_dim,
           (long long)c.n_double, (long long)c.n_single, (long long)c.in_ch, (long long)c.ctx_dim,
           (long long)c.pooled_dim, (long long)c.mlp, c.axes[0], c.axes[1], c.axes[2], c.guidance,
           c.bfl_names);
    double mx, rel = tu_rel_l2(base, p->out, &mx);
    printf("  %s: reference (pipeline chain): relative L2 %.3e, max abs %.3e (%s, %lld values)\n",
           p->name, rel, mx, gpu ? "BF16 GPU" : "F32 CPU", (long long)base->n);
    if (!gpu)
        EXPECT(rel <= CPU_REL_L2, "%s: relative L2 %.3e, bound %.0e", p->name, rel, CPU_REL_L2);

    /* the same model twice, and (GPU) the arithmetic alone with the fp32 reference's inputs */
    wt_source *src = NULL;
    flux_model *m = NULL;
    tu_result a = {0}, b = {0}, f = {0};
    err e = wt_open(dir, &src);
    if (!e) e = flux_load(src, ctx, NULL, &m);
    if (!e) e = run_model(m, p, 0, 0, 0, &a);
    if (!e) e = run_model(m, p, 0, 0, 0, &b);
    float tau, gs;
    flux_time_inputs(TENSOR_CPU, 1000.0f * ((const float *)p->ts->data)[0],
                     p->g ? ((const float *)p->g->data)[0] : 0.0f, &tau, &gs);
    if (!e && gpu) e = run_model(m, p, 1, tau, gs, &f);
    EXPECT(!e, "%s: %s", p->name, err_msg());
    if (!e) {
        EXPECT(tu_same_bits(&a, &b), "%s: the same call twice gave different bits", p->name);
        EXPECT(tu_same_bits(&a, base), "%s: a second model from the same files gave other bits",
               p->name);
        printf("  %s: repeat: %s\n", p->name,
               tu_same_bits(&a, &b) && tu_same_bits(&a, base) ? "identical" : "DIFFERENT");
    }
    if (!e && gpu) {
        rel = tu_rel_l2(&f, p->out, &mx);
        printf("  %s: reference (fp32 tau %g, guidance %g): relative L2 %.3e, max abs %.3e\n",
               p->name, tau, gs, rel, mx);
        EXPECT(rel <= GPU_REL_L2, "%s: relative L2 %.3e, bound %.0e", p->name, rel, GPU_REL_L2);
    }
    tu_result_free(&a), tu_result_free(&b), tu_result_free(&f);
    flux_free(m);
    wt_close(src);
}

/* ---- BFL names (MODEL-SPEC §1.9) written from the diffusers tensors ---- */

/* The fixture's weights under BFL names (prefix "" or "model.diffusion_model."), one file. */
static err write_bfl(const char *dir, const flux_config *c, const char *prefix, const char *out) {
    tu_renamer b;
    char o[160], s[4][160];
    const char *sp[4] = {s[0], s[1], s[2], s[3]};
    TRY(tu_renamer_open(&b, dir, NULL));
#define ONE(bfl, dif)                                                                              \
    do {                                                                                           \
        snprintf(o, sizeof o, "%s" bfl, prefix);                                                   \
        snprintf(s[0], sizeof s[0], "%s", dif);                                                    \
        tu_rename_linear(&b, o, sp, 1, 0);                                                         \
    } while (0)
    ONE("img_in", "x_embedder");
    ONE("txt_in", "context_embedder");
    ONE("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1");
    ONE("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2");
    if (c->guidance) {
        ONE("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1");
        ONE("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2");
    }
    ONE("vector_in.in_layer", "time_text_embed.text_embedder.linear_1");
    ONE("vector_in.out_layer", "time_text_embed.text_embedder.linear_2");
    ONE("final_layer.linear", "proj_out");
    snprintf(o, sizeof o, "%sfinal_layer.adaLN_modulation.1", prefix);
    snprintf(s[0], sizeof s[0], "norm_out.linear");
    tu_rename_linear(&b, o, sp, 1, 1);
#undef ONE
    for (int i = 0; i < c->n_double; i++) {
        for (int txt = 0; txt < 2; txt++) {
            const char *bs = txt ? "txt" : "img", *ctxs = txt ? "_context" : "";
            snprintf(o, sizeof o, "%sdouble_blocks.%d.%s_mod.lin", prefix, i, bs);
            snprintf(s[0], sizeof s[0], "transformer_blocks.%d.norm1%s.linear", i, ctxs);
            tu_rename_linear(&b, o, sp, 1, 0);
            snprintf(o, sizeof o, "%sdouble_blocks.%d.%s_attn.qkv", prefix, i, bs);
            for (int j = 0; j < 3; j++)
                snprintf(s[j], sizeof s[j],
                         txt ? "transformer_blocks.%d.attn.add_%c_proj"
                             : "transformer_blocks.%d.attn.to_%c",
                         i, "qkv"[j]);
            tu_rename_linear(&b, o, sp, 3, 0);
            for (int j = 0; j < 2; j++) {
                snprintf(o, sizeof o, "%sdouble_blocks.%d.%s_attn.norm.%s_norm.scale", prefix, i,
                         bs, j ? "key" : "query");
                snprintf(s[0], sizeof s[0], "transformer_blocks.%d.attn.norm_%s%c.weight", i,
                         txt ? "added_" : "", "qk"[j]);
                tu_rename_one(&b, o, s[0]);
            }
            snprintf(o, sizeof o, "%sdouble_blocks.%d.%s_attn.proj", prefix, i, bs);
            snprintf(s[0], sizeof s[0],
                     txt ? "transformer_blocks.%d.attn.to_add_out"
                         : "transformer_blocks.%d.attn.to_out.0",
                     i);
            tu_rename_linear(&b, o, sp, 1, 0);
            for (int j = 0; j < 2; j++) {
                snprintf(o, sizeof o, "%sdouble_blocks.%d.%s_mlp.%d", prefix, i, bs, 2 * j);
                snprintf(s[0], sizeof s[0], "transformer_blocks.%d.ff%s.net.%s", i, ctxs,
                         j ? "2" : "0.proj");
                tu_rename_linear(&b, o, sp, 1, 0);
            }
        }
    }
    for (int i = 0; i < c->n_single; i++) {
        snprintf(o, sizeof o, "%ssingle_blocks.%d.modulation.lin", prefix, i);
        snprintf(s[0], sizeof s[0], "single_transformer_blocks.%d.norm.linear", i);
        tu_rename_linear(&b, o, sp, 1, 0);
        snprintf(o, sizeof o, "%ssingle_blocks.%d.linear1", prefix, i);
        for (int j = 0; j < 3; j++)
            snprintf(s[j], sizeof s[j], "single_transformer_blocks.%d.attn.to_%c", i, "qkv"[j]);
        snprintf(s[3], sizeof s[3], "single_transformer_blocks.%d.proj_mlp", i);
        tu_rename_linear(&b, o, sp, 4, 0);
        for (int j = 0; j < 2; j++) {
            snprintf(o, sizeof o, "%ssingle_blocks.%d.norm.%s_norm.scale", prefix, i,
                     j ? "key" : "query");
            snprintf(s[0], sizeof s[0], "single_transformer_blocks.%d.attn.norm_%c.weight", i,
                     "qk"[j]);
            tu_rename_one(&b, o, s[0]);
        }
        snprintf(o, sizeof o, "%ssingle_blocks.%d.linear2", prefix, i);
        snprintf(s[0], sizeof s[0], "single_transformer_blocks.%d.proj_out", i);
        tu_rename_linear(&b, o, sp, 1, 0);
    }
    if (!b.e && b.used != wt_count(b.src))
        b.e = err_set(ERR_FORMAT, "the BFL file uses %d of the %d diffusers tensors", b.used,
                      wt_count(b.src));
    return tu_renamer_finish(&b, out);
}

/* BFL names give the same bits as the diffusers names: the same weight values reach the same
 * ops with the same shapes (the fused tensors are bound as row ranges, each a [D, D] weight;
 * the final layer's swap only exchanges which half is scale), so nothing in the arithmetic
 * can differ. */
static void test_bfl(const char *dir, const variant *p, const tu_result *base, const char *prefix) {
    char out[300];
    snprintf(out, sizeof out, "%s/%s_bfl.safetensors", tmp, p->name);
    flux_config c = {0};
    wt_source *src = NULL;
    flux_model *m = NULL;
    err e = wt_open(dir, &src);
    if (!e) e = flux_load(src, ctx, NULL, &m);
    if (!e) c = *flux_get_config(m);
    flux_free(m);
    wt_close(src);
    if (!e) e = write_bfl(dir, &c, prefix, out);
    EXPECT(!e, "%s: writing the BFL file: %s", p->name, err_msg());
    if (e) return;
    tu_result r = {0};
    flux_config bc;
    if (!run_path(out, WP_RESIDENT, 0, p, &r, &bc)) {
        EXPECT(bc.bfl_names && bc.guidance == c.guidance && bc.axes[0] == c.axes[0] &&
                   bc.axes[1] == c.axes[1] && bc.mlp == c.mlp,
               "%s: BFL config: bfl %d guidance %d axes %d %d %d mlp %lld", p->name, bc.bfl_names,
               bc.guidance, bc.axes[0], bc.axes[1], bc.axes[2], (long long)bc.mlp);
        double mx = 0;
        for (int64_t i = 0; i < r.n; i++)
            mx = fmax(mx, fabs((double)r.v[i] - base->v[i]));
        EXPECT(tu_same_bits(&r, base),
               "%s: BFL names (prefix '%s') gave other bits (max diff %.3e)", p->name, prefix, mx);
        printf("  %s: BFL names%s%s: %s\n", p->name, *prefix ? ", prefix " : "", prefix,
               tu_same_bits(&r, base) ? "identical to diffusers names" : "DIFFERENT");
    } else {
        EXPECT(0, "%s: running the BFL file failed", p->name);
    }
    tu_result_free(&r);
}

/* ---- DF11 ---- */

/* DF11 shards give the same bits as the BF16 ones; on the GPU under every provider mode
 * (WP_STREAM at the smallest budget that loads, so that most blocks are streamed). */
static void test_df11(const char *dir, const variant *p, const tu_result *base) {
    char folder[300];
    snprintf(folder, sizeof folder, "%s/%s_df11", tmp, p->name);
    /* df11 compress of the folder, as the CLI does it: the shards compressed, the index and
       config.json copied */
    err e = df11_convert_path(DF11_OP_COMPRESS, dir, folder, NULL, 0, NULL);
    EXPECT(!e, "%s: compressing: %s", p->name, err_msg());
    if (e) return;
    wt_source *src = NULL;
    EXPECT(!wt_open(folder, &src) && wt_is_df11(src), "%s is not a DF11 checkpoint", folder);
    wt_close(src);
    static const char *const names[] = {"WP_RESIDENT", "WP_DF11", "WP_STREAM"};
    for (int mode = WP_RESIDENT; mode <= (gpu ? WP_STREAM : WP_RESIDENT); mode++) {
        tu_result r = {0};
        size_t budget = 0;
        if (mode == WP_STREAM) {
            /* the smallest budget in 64 KiB steps the provider accepts */
            flux_model *m = NULL;
            CHECK(!wt_open(folder, &src));
            for (budget = 1u << 20; budget < (64u << 20); budget += 64u << 10) {
                flux_load_opts o = {WP_STREAM, budget};
                if (!flux_load(src, ctx, &o, &m)) break;
            }
            flux_free(m);
            wt_close(src);
        }
        if (!run_path(folder, (wp_mode)mode, budget, p, &r, NULL)) {
            EXPECT(tu_same_bits(&r, base), "%s: DF11 (%s) and BF16 gave different bits", p->name,
                   names[mode]);
            printf("  %s: DF11 %s%s: %s\n", p->name, gpu ? names[mode] : "(CPU)",
                   mode == WP_STREAM ? " at the smallest budget" : "",
                   tu_same_bits(&r, base) ? "identical to BF16" : "DIFFERENT");
        } else {
            EXPECT(0, "%s: running DF11 (%s) failed", p->name, names[mode]);
        }
        tu_result_free(&r);
    }
}

/* ---- errors ---- */

/* A single-file copy of the fixture without `drop` and with `narrow` cut to [rows, cols]: the
 * load fails with a message naming the file and the tensor. */
static void test_bad(const char *dir, const char *drop, const char *narrow, int64_t rows,
                     int64_t cols, const char *expect_in_msg) {
    char out[300];
    snprintf(out, sizeof out, "%s/bad.safetensors", tmp);
    wt_source *src = NULL;
    st_writer *w = NULL;
    err e = wt_open(dir, &src);
    if (!e) e = st_writer_create(&w);
    for (int i = 0; !e && i < wt_count(src); i++) {
        const df11_tensor *t = wt_at(src, i);
        if (drop && !strcmp(t->name, drop)) continue;
        if (narrow && !strcmp(t->name, narrow))
            e = st_writer_add(w, t->name, t->dtype, 2, (int64_t[]){rows, cols}, t->data,
                              (uint64_t)(rows * cols * 2));
        else
            e = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->stored_bytes);
    }
    if (!e) e = st_writer_finish(w, out, 8);
    st_writer_free(w);
    wt_close(src);
    EXPECT(!e, "writing %s: %s", out, err_msg());
    if (e) return;
    flux_model *m = NULL;
    e = wt_open(out, &src);
    EXPECT(!e, "%s: %s", out, err_msg());
    if (!e) e = flux_load(src, ctx, NULL, &m);
    const char *msg = err_msg();
    EXPECT(e == ERR_FORMAT && strstr(msg, out) && strstr(msg, drop ? drop : narrow) &&
               strstr(msg, expect_in_msg),
           "loading without '%s': got %d '%s'", drop ? drop : narrow, (int)e, msg);
    printf("  error: %s\n", msg);
    flux_free(m);
    wt_close(src);
}

/* GPU: a plan the device cannot hold is ERR_NOMEM naming the bytes (not tried on the CPU,
 * where an overcommitting kernel may hand out the memory and fail only when it is touched). */
static void test_nomem(const char *dir) {
    wt_source *src = NULL;
    flux_model *m = NULL;
    err e = wt_open(dir, &src);
    if (!e) e = flux_load(src, ctx, NULL, &m);
    EXPECT(!e, "%s", err_msg());
    if (!e) {
        e = flux_plan(m, 1 << 13, 1 << 13, 64); /* 2^26 image tokens: ~200 GB of activations */
        EXPECT(e == ERR_NOMEM && strstr(err_msg(), "bytes"), "huge plan: got %d '%s'", (int)e,
               err_msg());
        printf("  huge plan: %s\n", err_msg());
        e = flux_plan(m, 8, 8, 64);
        EXPECT(!e, "a plan after the failed one: %s", err_msg());
    }
    flux_free(m);
    wt_close(src);
}

/* The rounding chain against MODEL-SPEC §6.3's table (dev, 28 steps, 1024^2) and §1.4. */
static void test_time_inputs(void) {
    static const float rows[][2] = {{1000.0f, 1000.0f},  {988.4086f, 988.0f}, {963.3944f, 964.0f},
                                    {850.4057f, 852.0f}, {462.7484f, 462.0f}, {274.828f, 274.0f},
                                    {195.4546f, 195.0f}, {104.7209f, 104.5f}};
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        float tau, gs;
        flux_time_inputs(TENSOR_CUDA, rows[i][0], 3.5f, &tau, &gs);
        EXPECT(tau == rows[i][1] && gs == 3504.0f,
               "bf16 chain: t %.4f -> tau %g (want %g), "
               "guidance %g (want 3504)",
               rows[i][0], tau, rows[i][1], gs);
    }
    float tau, gs;
    flux_time_inputs(TENSOR_CPU, 988.4086f, 3.5f, &tau, &gs);
    EXPECT(tau == 988.4086f / 1000.0f * 1000.0f && gs == 3500.0f, "fp32 chain: tau %.6f g %g", tau,
           gs);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "--cpu") && strcmp(argv[1], "--gpu"))) {
        fprintf(stderr, "usage: test_flux --cpu|--gpu FIXTURES_DIR\n");
        return 2;
    }
    gpu = !strcmp(argv[1], "--gpu");
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines survive an abort */
    if (op_ctx_create(gpu ? TENSOR_CUDA : TENSOR_CPU, &ctx)) {
        printf("test_flux: skipped: %s\n", err_msg());
        return 77;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/flux_tiny/ref.safetensors", argv[2]);
    st_file *rf = NULL;
    if (st_open(path, &rf)) {
        fprintf(stderr, "test_flux: %s (run tests/fixtures/make_flux_ref.py)\n", err_msg());
        op_ctx_free(ctx);
        return 1;
    }
    ref = rf;
    CHECK(mkdtemp(tmp));
    printf("test_flux (%s):\n", gpu ? "GPU, BF16" : "CPU, F32");
    test_time_inputs();
    const char *hs = st_meta(ref, "height"), *ws = st_meta(ref, "width");
    static const char *const names[] = {"dev", "schnell"};
    for (int k = 0; k < 2; k++) {
        variant p = {.name = names[k]};
        char n[64];
        snprintf(n, sizeof n, "%s.fwd.x", p.name), p.x = ref_tensor(n);
        snprintf(n, sizeof n, "%s.fwd.timestep", p.name), p.ts = ref_tensor(n);
        snprintf(n, sizeof n, "%s.fwd.out", p.name), p.out = ref_tensor(n);
        snprintf(n, sizeof n, "%s.fwd.guidance", p.name), p.g = k ? NULL : ref_tensor(n);
        p.t5 = ref_tensor("t5.hidden");
        p.pooled = ref_tensor("clip.pooled");
        /* the packed grid: pixels / 16 each way (VAE factor 8, 2x2 packing) */
        p.h2 = hs ? atoi(hs) / 16 : 0, p.w2 = ws ? atoi(ws) / 16 : 0;
        if (!p.x || !p.ts || !p.out || (!k && !p.g) || !p.t5 || !p.pooled ||
            p.h2 * p.w2 != p.x->shape[1]) {
            EXPECT(0, "%s: reference tensors or height/width metadata missing", p.name);
            continue;
        }
        snprintf(path, sizeof path, "%s/flux_tiny/%s/transformer", argv[2], p.name);
        tu_result base = {0};
        test_reference(path, &p, &base);
        if (base.raw) {
            test_bfl(path, &p, &base, k ? "model.diffusion_model." : "");
            test_df11(path, &p, &base);
        }
        if (!k) {
            test_bad(path, "single_transformer_blocks.1.attn.norm_k.weight", NULL, 0, 0, "missing");
            test_bad(path, NULL, "transformer_blocks.1.ff.net.2.weight", 128, 256,
                     "expected shape [128, 512], got [128, 256]");
        }
        tu_result_free(&base);
    }
    /* last: after a failed cudaMalloc the CUDA runtime's last error stays set (core/cuda/gpu.cu
     * does not clear it), and the next kernel launch check would take it for its own */
    snprintf(path, sizeof path, "%s/flux_tiny/dev/transformer", argv[2]);
    if (gpu) test_nomem(path);
    fio_remove_tree(tmp);
    st_close(rf);
    op_ctx_free(ctx);
    return tu_finish("test_flux");
}
