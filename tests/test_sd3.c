/* test_sd3: the SD3.5 transformer (unet_dit/sd3.h) against diffusers' SD3Transformer2DModel on
 * the tiny fixture models (tests/fixtures/make_sd3_ref.py: D 128, 2 heads x 64, 3 blocks, joint
 * 128, pooled 128, BF16 weights; large: pos_embed 24^2, no dual blocks, two shards; medium:
 * pos_embed 48^2, dual blocks 0 and 1), one CFG-batch forward (B 2) each, the reference
 * P.fwd.out computed in fp32 on the CPU. Also: the same call twice gives the same bits; the
 * Stability names (fused qkv, swapped final and last-context modulations, with and without the
 * "model.diffusion_model." prefix) give the same bits as diffusers names; a plan larger than
 * pos_embed is an error.
 * usage: test_sd3 --cpu|--gpu FIXTURES_DIR (exits 77 for --gpu without a GPU). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/gpu.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "df11/container.h"
#include "tests/testutil.h"
#include "tests/testutil_dit.h"
#include "unet_dit/sd3.h"

/* Bounds, with the reasoning:
 * CPU_REL_L2 1e-5: fp32 against fp32 from the same BF16 weights; both sides round every op to
 *   fp32 (u = 6e-8) and differ in summation order only. Dot products here have K <= 512 terms
 *   (~sqrt(K) u ~ 1.4e-6 relative at worst), through ~60 ops in sequence with random-weight gains
 *   near 1, so ~1e-6 is expected and 1e-5 keeps a margin of ~10, while any wrong op, order or
 *   chunk costs O(1e-2) or more (a LayerNorm eps of 1e-5 instead of 1e-6 already ~1e-4).
 * GPU_REL_L2 2e-2: BF16 activations (u = 2^-9 ~ 2e-3 at each of the ~60 rounding points, plus
 *   the BF16-rounded inputs) against the fp32 reference; the same bound as test_flux, whose
 *   diffusers BF16 forward of the same-sized fixtures lands at ~6e-3 from fp32, so ~3x that for
 *   another accumulation order and kernel set. */
#define CPU_REL_L2 1e-5
#define GPU_REL_L2 2e-2

static op_ctx *ctx;
static int gpu;
static const st_file *ref;
static char tmp[] = "/tmp/df11_test_sd3_XXXXXX";

typedef struct variant {
    const char *name; /* "large", "medium" */
    const st_tensor *x, *ts, *pe, *pooled, *out;
} variant;

/* Plans m for the variant and runs one forward into r. */
static err run_model(sd3_model *m, const variant *p, tu_result *r) {
    TRY(sd3_plan(m, p->x->shape[0], p->x->shape[2], p->x->shape[3], p->pe->shape[1]));
    tensor x = tu_to_dev(p->x, gpu), pe = tu_to_dev(p->pe, gpu), pooled = tu_to_dev(p->pooled, gpu);
    const int64_t n = (int64_t)p->x->numel;
    tensor out = x;
    if (gpu)
        CHECK(!gpu_alloc(&out.data, (size_t)n * 2));
    else
        CHECK((out.data = malloc((size_t)n * 4)));
    sd3_forward(m, out, x, (const float *)p->ts->data, pe, pooled);
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
    tu_dev_free(x, gpu), tu_dev_free(pe, gpu), tu_dev_free(pooled, gpu), tu_dev_free(out, gpu);
    return e;
}

static err run_path(const char *path, const variant *p, tu_result *r, sd3_config *cfg) {
    wt_source *src = NULL;
    sd3_model *m = NULL;
    err e = wt_open(path, &src);
    if (!e) e = sd3_load(src, ctx, NULL, &m);
    if (!e && cfg) *cfg = *sd3_get_config(m);
    if (!e) e = run_model(m, p, r);
    if (e) fprintf(stderr, "%s: %s\n", path, err_msg());
    sd3_free(m);
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
    sd3_config c;
    if (run_path(dir, p, base, &c)) {
        EXPECT(0, "%s: running the fixture transformer failed", p->name);
        return;
    }
    const int medium = !strcmp(p->name, "medium");
    EXPECT(c.D == 128 && c.heads == 2 && c.head_dim == 64 && c.layers == 3 && c.patch == 2 &&
               c.in_ch == 16 && c.out_ch == 16 && c.joint_dim == 128 && c.pooled_dim == 128 &&
               c.mlp == 512 && c.pos_max == (medium ? 48 : 24) && c.qk_norm && !c.original_names &&
               c.dual[0] == medium && c.dual[1] == medium && !c.dual[2],
           "%s: config D %lld heads %lld x %lld layers %lld joint %lld pooled %lld mlp %lld pos "
           "%lld dual %d %d %d",
           p->name, (long long)c.D, (long long)c.heads, (long long)c.head_dim, (long long)c.layers,
           (long long)c.joint_dim, (long long)c.pooled_dim, (long long)c.mlp, (long long)c.pos_max,
           c.dual[0], c.dual[1], c.dual[2]);
    double mx, rel = tu_rel_l2(base, p->out, &mx);
    printf("  %s: reference: relative L2 %.3e, max abs %.3e (%s, %lld values)\n", p->name, rel, mx,
           gpu ? "BF16 GPU" : "F32 CPU", (long long)base->n);
    const double bound = gpu ? GPU_REL_L2 : CPU_REL_L2;
    EXPECT(rel <= bound, "%s: relative L2 %.3e, bound %.0e", p->name, rel, bound);

    wt_source *src = NULL;
    sd3_model *m = NULL;
    tu_result a = {0}, b = {0};
    err e = wt_open(dir, &src);
    if (!e) e = sd3_load(src, ctx, NULL, &m);
    if (!e) e = run_model(m, p, &a);
    if (!e) e = run_model(m, p, &b);
    EXPECT(!e, "%s: %s", p->name, err_msg());
    if (!e) {
        EXPECT(tu_same_bits(&a, &b), "%s: the same call twice gave different bits", p->name);
        EXPECT(tu_same_bits(&a, base), "%s: a second model from the same files gave other bits",
               p->name);
        printf("  %s: repeat: %s\n", p->name,
               tu_same_bits(&a, &b) && tu_same_bits(&a, base) ? "identical" : "DIFFERENT");
        /* a grid larger than pos_embed's is refused */
        const int64_t big = 2 * (c.pos_max + 1);
        e = sd3_plan(m, 2, big, big, 8);
        EXPECT(e == ERR_ARG && strstr(err_msg(), "pos_embed"), "%s: oversized plan: %d '%s'",
               p->name, (int)e, err_msg());
    }
    tu_result_free(&a), tu_result_free(&b);
    sd3_free(m);
    wt_close(src);
}

/* ---- Stability's names, written from the diffusers fixture (MODEL-SPEC §2.7) ---- */

static err write_original(const char *dir, const sd3_config *c, const char *prefix,
                          const char *out) {
    tu_renamer o;
    TRY(tu_renamer_open(&o, dir, prefix));
    tu_rename_linear(&o, "x_embedder.proj", (const char *[]){"pos_embed.proj"}, 1, 0);
    tu_rename_one(&o, "pos_embed", "pos_embed.pos_embed");
    tu_rename_linear(&o, "t_embedder.mlp.0",
                     (const char *[]){"time_text_embed.timestep_embedder.linear_1"}, 1, 0);
    tu_rename_linear(&o, "t_embedder.mlp.2",
                     (const char *[]){"time_text_embed.timestep_embedder.linear_2"}, 1, 0);
    tu_rename_linear(&o, "y_embedder.mlp.0",
                     (const char *[]){"time_text_embed.text_embedder.linear_1"}, 1, 0);
    tu_rename_linear(&o, "y_embedder.mlp.2",
                     (const char *[]){"time_text_embed.text_embedder.linear_2"}, 1, 0);
    tu_rename_linear(&o, "context_embedder", (const char *[]){"context_embedder"}, 1, 0);
    tu_rename_linear(&o, "final_layer.adaLN_modulation.1", (const char *[]){"norm_out.linear"}, 1,
                     1);
    tu_rename_linear(&o, "final_layer.linear", (const char *[]){"proj_out"}, 1, 0);
    for (int i = 0; i < c->layers; i++) {
        const int last = i == c->layers - 1;
        char d[64], s[64], a[3][96], b[96];
#define D_(x) (snprintf(b, sizeof b, "%s%s", d, x), b)
#define S_(x) (snprintf(s, sizeof s, "joint_blocks.%d.%s", i, x), s)
        snprintf(d, sizeof d, "transformer_blocks.%d.", i);
        tu_rename_linear(&o, S_("x_block.adaLN_modulation.1"), (const char *[]){D_("norm1.linear")},
                         1, 0);
        tu_rename_linear(&o, S_("context_block.adaLN_modulation.1"),
                         (const char *[]){D_("norm1_context.linear")}, 1, last);
        static const char *const qkv[3][3] = {
            {"attn.to_q", "attn.to_k", "attn.to_v"},
            {"attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"},
            {"attn2.to_q", "attn2.to_k", "attn2.to_v"}};
        static const char *const fused[3] = {"x_block.attn.qkv", "context_block.attn.qkv",
                                             "x_block.attn2.qkv"};
        for (int f = 0; f < (c->dual[i] ? 3 : 2); f++) {
            for (int j = 0; j < 3; j++)
                snprintf(a[j], sizeof a[j], "%s%s", d, qkv[f][j]);
            tu_rename_linear(&o, S_(fused[f]), (const char *[]){a[0], a[1], a[2]}, 3, 0);
        }
        static const char *const norms[][2] = {
            {"x_block.attn.ln_q.weight", "attn.norm_q.weight"},
            {"x_block.attn.ln_k.weight", "attn.norm_k.weight"},
            {"context_block.attn.ln_q.weight", "attn.norm_added_q.weight"},
            {"context_block.attn.ln_k.weight", "attn.norm_added_k.weight"},
            {"x_block.attn2.ln_q.weight", "attn2.norm_q.weight"},
            {"x_block.attn2.ln_k.weight", "attn2.norm_k.weight"}};
        for (int j = 0; j < (c->dual[i] ? 6 : 4); j++)
            tu_rename_one(&o, S_(norms[j][0]), D_(norms[j][1]));
        static const char *const lin[][2] = {{"x_block.attn.proj", "attn.to_out.0"},
                                             {"x_block.mlp.fc1", "ff.net.0.proj"},
                                             {"x_block.mlp.fc2", "ff.net.2"},
                                             {"x_block.attn2.proj", "attn2.to_out.0"},
                                             {"context_block.attn.proj", "attn.to_add_out"},
                                             {"context_block.mlp.fc1", "ff_context.net.0.proj"},
                                             {"context_block.mlp.fc2", "ff_context.net.2"}};
        for (int j = 0; j < 7; j++) {
            if ((j == 3 && !c->dual[i]) || (j >= 4 && last)) continue;
            tu_rename_linear(&o, S_(lin[j][0]), (const char *[]){D_(lin[j][1])}, 1, 0);
        }
#undef D_
#undef S_
    }
    return tu_renamer_finish(&o, out);
}

static void test_original(const char *dir, const variant *p, const tu_result *base,
                          const char *prefix) {
    char out[300];
    snprintf(out, sizeof out, "%s/%s_orig%s.safetensors", tmp, p->name, prefix[0] ? "_pfx" : "");
    sd3_config c = {0};
    wt_source *src = NULL;
    sd3_model *m = NULL;
    err e = wt_open(dir, &src);
    if (!e) e = sd3_load(src, ctx, NULL, &m);
    if (!e) c = *sd3_get_config(m);
    sd3_free(m);
    wt_close(src);
    if (!e) e = write_original(dir, &c, prefix, out);
    EXPECT(!e, "%s: writing %s: %s", p->name, out, err_msg());
    if (e) return;
    tu_result r = {0};
    sd3_config oc;
    if (run_path(out, p, &r, &oc)) {
        EXPECT(0, "%s: Stability names%s failed", p->name, prefix[0] ? " (prefixed)" : "");
        return;
    }
    EXPECT(oc.original_names, "%s: Stability names not detected", p->name);
    EXPECT(tu_same_bits(&r, base), "%s: Stability names gave other bits than diffusers'", p->name);
    double mx, rel = tu_rel_l2(&r, p->out, &mx);
    printf("  %s: Stability names%s: %s (relative L2 %.3e)\n", p->name,
           prefix[0] ? " with the prefix" : "",
           tu_same_bits(&r, base) ? "identical to diffusers names" : "DIFFERENT", rel);
    tu_result_free(&r);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "--cpu") && strcmp(argv[1], "--gpu"))) {
        fprintf(stderr, "usage: %s --cpu|--gpu FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    gpu = !strcmp(argv[1], "--gpu");
    if (op_ctx_create(gpu ? TENSOR_CUDA : TENSOR_CPU, &ctx)) {
        fprintf(stderr, "test_sd3: skipped: %s\n", err_msg());
        return gpu ? 77 : 1;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/sd3_tiny/ref.safetensors", argv[2]);
    st_file *rf = NULL;
    if (st_open(path, &rf)) {
        fprintf(stderr, "test_sd3: %s\n", err_msg());
        op_ctx_free(ctx);
        return 1;
    }
    ref = rf;
    CHECK(mkdtemp(tmp));
    static const char *const names[] = {"large", "medium"};
    for (int v = 0; v < 2; v++) {
        variant p = {.name = names[v]};
        char n[64];
#define REF(field, suffix) (snprintf(n, sizeof n, "%s.%s", p.name, suffix), p.field = ref_tensor(n))
        REF(x, "fwd.x"), REF(ts, "fwd.timestep"), REF(pe, "prompt_embeds"), REF(pooled, "pooled");
        REF(out, "fwd.out");
#undef REF
        if (!p.x || !p.ts || !p.pe || !p.pooled || !p.out) continue;
        printf("%s:\n", p.name);
        char dir[512];
        snprintf(dir, sizeof dir, "%s/sd3_tiny/%s/transformer", argv[2], p.name);
        tu_result base = {0};
        test_reference(dir, &p, &base);
        if (base.raw) {
            test_original(dir, &p, &base, "");
            test_original(dir, &p, &base, "model.diffusion_model.");
        }
        tu_result_free(&base);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!getenv("TEST_SD3_KEEP") && system(cmd))
        fprintf(stderr, "test_sd3: could not remove %s\n", tmp);
    st_close(rf);
    op_ctx_free(ctx);
    return tu_finish("test_sd3");
}
