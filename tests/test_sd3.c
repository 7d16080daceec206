/* test_sd3: the SD3.5 transformer (unet_dit/sd3.h) against diffusers' SD3Transformer2DModel on
 * the tiny fixture models (tests/fixtures/make_sd3_ref.py: D 128, 2 heads x 64, 3 blocks, joint
 * 192, pooled 128, BF16 weights; large: pos_embed 24^2, no dual blocks, two shards; medium:
 * pos_embed 48^2, dual blocks 0 and 1), one CFG-batch forward (B 2) each, the reference
 * P.fwd.out computed in fp32 on the CPU. Also: the same call twice gives the same bits; the
 * Stability names (fused qkv, swapped final and last-context modulations, with and without the
 * "model.diffusion_model." prefix) give the same bits as diffusers names; DF11-compressed
 * weights give the same bits as BF16 (GPU: under WP_RESIDENT, WP_DF11 and WP_STREAM); a batch of
 * one inside a plan of two gives row 1 of the batch of two; skip layers against the reference
 * medium.slg.fwd_skip; a missing or mis-shaped tensor, a config.json that disagrees with the
 * weights, a skip layer out of range and a plan larger than pos_embed are errors that say so;
 * GPU: a plan too large for the device is ERR_NOMEM.
 * usage: test_sd3 --cpu|--gpu FIXTURES_DIR (exits 77 for --gpu without a GPU). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/gpu.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "tests/testutil.h"
#include "tests/testutil_dit.h"
#include "tests/testutil_sd3.h"
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
 *   another accumulation order and kernel set.
 * The batch of one inside a plan of two is held to these bounds on the GPU (and compared bit
 * for bit with the batch of two only on the CPU): the CPU ops compute each batch row on its own,
 * but on the GPU the GEMMs see N rows instead of 2N and cuBLASLt may pick another algorithm, so
 * batch invariance is not claimed there (the test prints whether the bits agree). */
#define CPU_REL_L2 1e-5
#define GPU_REL_L2 2e-2

static char tmp[] = "/tmp/df11_test_sd3_XXXXXX";
static tu_dit dit; /* defined with its functions below */

typedef struct variant {
    const char *name; /* "large", "medium" */
    const st_tensor *x, *ts, *pe, *pooled, *out;
} variant;

/* One forward of the variant's inputs in m's current plan (their batch <= the planned one). */
static err forward(sd3_model *m, const variant *p, tu_result *r) {
    tensor x = tu_to_dev(p->x, dit.gpu), pe = tu_to_dev(p->pe, dit.gpu),
           pooled = tu_to_dev(p->pooled, dit.gpu);
    tensor out = tu_dev_alloc(x.ndim, x.shape, dit.gpu);
    sd3_forward(m, out, x, (const float *)p->ts->data, pe, pooled);
    const err e = tu_collect(dit.ctx, out, dit.gpu, r);
    tu_dev_free(x, dit.gpu), tu_dev_free(pe, dit.gpu), tu_dev_free(pooled, dit.gpu),
        tu_dev_free(out, dit.gpu);
    return e;
}

/* Plans m for batch B at the variant's grid and text length. */
static err plan_for(sd3_model *m, const variant *p, int64_t B) {
    return sd3_plan(m, B, p->x->shape[2], p->x->shape[3], p->pe->shape[1]);
}

/* Plans m for the variant (its own batch) and runs one forward into r. */
static err run_model(sd3_model *m, const variant *p, tu_result *r) {
    TRY(plan_for(m, p, p->x->shape[0]));
    return forward(m, p, r);
}

/* Opens dir and loads it resident (the caller frees both, also on failure). */
static err open_model(const char *dir, wt_source **src, sd3_model **m) {
    *src = NULL, *m = NULL;
    TRY(wt_open(dir, src));
    return sd3_load(*src, dit.ctx, NULL, m);
}

/* the tu_dit table (testutil_dit.h) */
static err dit_run(void *m, const void *p, tu_result *r) { return run_model(m, p, r); }
/* huge: a batch of 2^20 at pos_embed's whole grid, terabytes of activations (the grid itself is
 * capped by pos_embed) */
static err dit_plan(void *m, int huge) {
    const int64_t side = huge ? 2 * sd3_get_config(m)->pos_max : 4;
    return sd3_plan(m, huge ? 1 << 20 : 1, side, side, 8);
}
TU_DIT_DEFINE(sd3, tmp, dit_run, dit_plan);

/* p's inputs and reference at batch row `row` alone; the views live in v[5] */
static variant row_of(const variant *p, int64_t row, st_tensor v[5]) {
    const st_tensor *t[5] = {p->x, p->ts, p->pe, p->pooled, p->out};
    for (int i = 0; i < 5; i++)
        v[i] = tu_rows(t[i], row, 1);
    return (variant){
        .name = p->name, .x = &v[0], .ts = &v[1], .pe = &v[2], .pooled = &v[3], .out = &v[4]};
}

/* whether a (one batch row) has the bits of row `row` of b */
static int same_row_bits(const tu_result *a, const tu_result *b, int64_t row) {
    return a->raw && b->raw && b->raw_bytes >= (size_t)(row + 1) * a->raw_bytes &&
           !memcmp(a->raw, (const uint8_t *)b->raw + (size_t)row * a->raw_bytes, a->raw_bytes);
}

/* the fixture's model: config, the reference, and the same call twice */
static void test_reference(const char *dir, const variant *p, tu_result *base) {
    sd3_config c;
    if (tu_dit_run_path(&dit, dir, WP_RESIDENT, 0, p, base, &c)) {
        EXPECT(0, "%s: running the fixture transformer failed", p->name);
        return;
    }
    const int medium = !strcmp(p->name, "medium");
    EXPECT(c.D == 128 && c.heads == 2 && c.head_dim == 64 && c.layers == 3 && c.patch == 2 &&
               c.in_ch == 16 && c.out_ch == 16 && c.joint_dim == 192 && c.pooled_dim == 128 &&
               c.mlp == 512 && c.pos_max == (medium ? 48 : 24) && c.qk_norm && !c.original_names &&
               c.dual[0] == medium && c.dual[1] == medium && !c.dual[2],
           "%s: config D %lld heads %lld x %lld layers %lld joint %lld pooled %lld mlp %lld pos "
           "%lld dual %d %d %d",
           p->name, (long long)c.D, (long long)c.heads, (long long)c.head_dim, (long long)c.layers,
           (long long)c.joint_dim, (long long)c.pooled_dim, (long long)c.mlp, (long long)c.pos_max,
           c.dual[0], c.dual[1], c.dual[2]);
    double mx, rel = tu_rel_l2(base, p->out, &mx);
    printf("  %s: reference: relative L2 %.3e, max abs %.3e (%s, %lld values)\n", p->name, rel, mx,
           dit.gpu ? "BF16 GPU" : "F32 CPU", (long long)base->n);
    const double bound = dit.gpu ? GPU_REL_L2 : CPU_REL_L2;
    EXPECT(rel <= bound, "%s: relative L2 %.3e, bound %.0e", p->name, rel, bound);

    wt_source *src = NULL;
    sd3_model *m = NULL;
    tu_result a = {0}, b = {0};
    err e = open_model(dir, &src, &m);
    if (!e) e = run_model(m, p, &a);
    if (!e) e = run_model(m, p, &b);
    EXPECT(!e, "%s: %s", p->name, err_msg());
    if (!e) {
        tu_expect_repeat(p->name, &a, &b, base);
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

/* ---- Stability's names, written from the diffusers fixture (docs/MODEL-SPEC.md §2.7) ---- */

static err write_original(const char *dir, const sd3_config *c, const char *prefix,
                          const char *out) {
    tu_renamer o;
    TRY(tu_renamer_open(&o, dir, prefix));
    tu_sd3_rename_original(&o, c);
    return tu_renamer_finish(&o, out);
}

static void test_original(const char *dir, const variant *p, const tu_result *base,
                          const char *prefix) {
    char out[300];
    snprintf(out, sizeof out, "%s/%s_orig%s.safetensors", tmp, p->name, prefix[0] ? "_pfx" : "");
    sd3_config c = {0};
    wt_source *src = NULL;
    sd3_model *m = NULL;
    err e = open_model(dir, &src, &m);
    if (!e) c = *sd3_get_config(m);
    sd3_free(m);
    wt_close(src);
    if (!e) e = write_original(dir, &c, prefix, out);
    EXPECT(!e, "%s: writing %s: %s", p->name, out, err_msg());
    if (e) return;
    tu_result r = {0};
    sd3_config oc;
    if (tu_dit_run_path(&dit, out, WP_RESIDENT, 0, p, &r, &oc)) {
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

/* ---- batches and skip layers (skip-layer guidance: one row inside the CFG plan) ---- */

/* A batch of one inside the plan of two: row 1's inputs give row 1 of the batch of two (bit for
 * bit on the CPU; see the bounds above for the GPU). */
static void test_subbatch(const char *dir, const variant *p, const tu_result *base) {
    st_tensor v[5];
    const variant one = row_of(p, 1, v);
    wt_source *src;
    sd3_model *m;
    tu_result r = {0};
    err e = open_model(dir, &src, &m);
    if (!e) e = plan_for(m, p, p->x->shape[0]);
    if (!e) e = forward(m, &one, &r);
    EXPECT(!e, "%s: a batch of one in a plan of two: %s", p->name, err_msg());
    if (!e) {
        double mx, rel = tu_rel_l2(&r, one.out, &mx);
        const int same = same_row_bits(&r, base, 1);
        printf("  %s: batch 1 in a plan of 2: %s row 1 of batch 2 (relative L2 %.3e)\n", p->name,
               same ? "identical to" : "differs from", rel);
        EXPECT(dit.gpu || same, "%s: batch 1 in a plan of 2 differs from row 1 of batch 2",
               p->name);
        EXPECT(rel <= (dit.gpu ? GPU_REL_L2 : CPU_REL_L2), "%s: batch 1: relative L2 %.3e", p->name,
               rel);
    }
    tu_result_free(&r);
    sd3_free(m);
    wt_close(src);
}

/* a comma-separated list of ints into out[0..max); the count, or -1 if malformed */
static int parse_ints(const char *s, int *out, int max) {
    int n = 0;
    for (char *end; s && *s; s = *end ? end + 1 : end) {
        const long v = strtol(s, &end, 10);
        if (end == s || (*end && *end != ',') || n == max) return -1;
        out[n++] = (int)v;
    }
    return n;
}

/* Skip-layer guidance's forward (medium): the positive row alone at the first timestep with the
 * blocks of the metadata medium.slg.skip_layers skipped, against medium.slg.fwd_skip, in a plan
 * of one and inside the plan of two; a layer out of range is ERR_ARG and changes nothing;
 * clearing the list gives the plain forward back. */
static void test_skip(const char *dir, const variant *p, const tu_result *base) {
    const char *list = st_meta(dit.ref, "medium.slg.skip_layers");
    int layers[SD3_MAX_LAYERS];
    const int n = parse_ints(list, layers, SD3_MAX_LAYERS);
    EXPECT(n > 0, "ref.safetensors: metadata medium.slg.skip_layers is '%s'",
           list ? list : "(missing)");
    st_tensor v[5], ts;
    const variant row1 = row_of(p, 1, v); /* the same inputs, unskipped (fwd.x = [noise; noise]) */
    variant s = row1;
    s.x = tu_ref_f32(dit.ref, "medium.noise");
    const st_tensor *t = tu_ref_f32(dit.ref, "medium.timesteps");
    s.out = tu_ref_f32(dit.ref, "medium.slg.fwd_skip"); /* make_sd3_ref.py writes it */
    if (n <= 0 || !s.x || !t || !s.out) return;
    ts = tu_rows(t, 0, 1), s.ts = &ts;
    EXPECT(s.x->numel == row1.x->numel && !memcmp(s.x->data, row1.x->data, s.x->numel * 4) &&
               ((const float *)t->data)[0] == ((const float *)row1.ts->data)[0],
           "medium.fwd.x row 1 / fwd.timestep are not medium.noise / timesteps[0]");
    double mx;
    const double bound = dit.gpu ? GPU_REL_L2 : CPU_REL_L2;
    const double moved =
        tu_rel_l2(&(tu_result){.v = (float *)row1.out->data, .n = s.x->numel}, s.out, &mx);
    EXPECT(moved > 100 * CPU_REL_L2, "skipping blocks %s changes the reference by only %.3e", list,
           moved);

    wt_source *src;
    sd3_model *m;
    tu_result a = {0}, b = {0}, c = {0};
    err e = open_model(dir, &src, &m);
    if (!e) e = sd3_set_skip_layers(m, layers, n);
    if (!e) e = run_model(m, &s, &a);
    if (!e) {
        const double rel = tu_rel_l2(&a, s.out, &mx);
        printf("  medium: skip layers %s: relative L2 %.3e, max abs %.3e (unskipped: %.3e)\n", list,
               rel, mx, moved);
        EXPECT(rel <= bound, "skip layers %s: relative L2 %.3e, bound %.0e", list, rel, bound);
    }
    if (!e) e = plan_for(m, p, 2);
    if (!e) e = forward(m, &s, &b);
    if (!e) {
        const double rel = tu_rel_l2(&b, s.out, &mx);
        EXPECT(dit.gpu || tu_same_bits(&a, &b), "skip layers %s: a plan of 2 gave other bits",
               list);
        EXPECT(rel <= bound, "skip layers in a plan of 2: relative L2 %.3e", rel);
        const int bad[2] = {(int)sd3_get_config(m)->layers, -1};
        for (int i = 0; i < 2; i++) {
            e = sd3_set_skip_layers(m, &bad[i], 1);
            char want[32];
            snprintf(want, sizeof want, "skip layer %d", bad[i]);
            EXPECT(e == ERR_ARG && strstr(err_msg(), want), "skip layer %d: got %d '%s'", bad[i],
                   (int)e, err_msg());
        }
        printf("  error: %s\n", err_msg());
        e = forward(m, &s, &c);
        EXPECT(!e && tu_same_bits(&b, &c), "a refused skip list changed the forward");
        e = e ? e : sd3_set_skip_layers(m, NULL, 0);
        if (!e) e = forward(m, &s, &c);
        EXPECT(!e && (dit.gpu || same_row_bits(&c, base, 1)) &&
                   tu_rel_l2(&c, row1.out, &mx) <= bound,
               "skip layers cleared: not the plain forward (relative L2 %.3e)",
               tu_rel_l2(&c, row1.out, &mx));
    }
    EXPECT(!e, "skip layers: %s", err_msg());
    tu_result_free(&a), tu_result_free(&b), tu_result_free(&c);
    sd3_free(m);
    wt_close(src);
}

/* ---- broken checkpoints ---- */

/* A missing and a mis-shaped block tensor, and config.json keys that disagree with the weights,
 * each an error naming the file, the tensor or key, what was expected and what was found. */
static void test_bad(const char *dir, int medium) {
    if (medium) {
        tu_dit_test_bad(&dit, dir,
                        &(tu_bad){.drop = "transformer_blocks.1.attn2.to_out.0.weight",
                                  .expect = {"missing", "[128, 128]"}});
        tu_dit_test_bad(
            &dit, dir,
            &(tu_bad){.cfg_key = "dual_attention_layers",
                      .cfg_value = "[0]",
                      .expect = {"config.json", "block 1 is not listed", "weights have attn2"}});
        return;
    }
    tu_dit_test_bad(&dit, dir,
                    &(tu_bad){.drop = "transformer_blocks.1.attn.norm_added_k.weight",
                              .expect = {"missing", "[64]"}});
    tu_dit_test_bad(&dit, dir,
                    &(tu_bad){.narrow = "transformer_blocks.1.ff.net.2.weight",
                              .rows = 128,
                              .cols = 256,
                              .expect = {"expected shape [128, 512], got [128, 256]"}});
    tu_dit_test_bad(&dit, dir,
                    &(tu_bad){.cfg_key = "num_layers",
                              .cfg_value = "4",
                              .expect = {"config.json", "num_layers is 4", "weights give 3"}});
    tu_dit_test_bad(&dit, dir,
                    &(tu_bad){.cfg_key = "joint_attention_dim",
                              .cfg_value = "4096",
                              .expect = {"config.json", "is 4096", "weights give 192"}});
}

int main(int argc, char **argv) {
    const int rc = tu_dit_begin(argc, argv, "sd3_tiny/ref.safetensors", &dit);
    if (rc >= 0) return rc;
    char path[600];
    static const char *const names[] = {"large", "medium"};
    for (int v = 0; v < 2; v++) {
        variant p = {.name = names[v]};
        char n[64];
#define REF(field, suffix)                                                                         \
    (snprintf(n, sizeof n, "%s.%s", p.name, suffix), p.field = tu_ref_f32(dit.ref, n))
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
            tu_dit_test_df11(&dit, dir, p.name, &p, &base);
            test_subbatch(dir, &p, &base);
            if (v == 1) test_skip(dir, &p, &base);
        }
        test_bad(dir, v == 1);
        tu_result_free(&base);
    }
    snprintf(path, sizeof path, "%s/sd3_tiny/large/transformer", argv[2]);
    if (dit.gpu) tu_dit_test_nomem(&dit, path); /* last (see there) */
    return tu_dit_end(&dit, "test_sd3");
}
