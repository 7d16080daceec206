/* test_ops: every CPU op against PyTorch / diffusers / transformers outputs computed in float64
 * (tests/fixtures/make_ops_ref.py), on odd shapes. The error measure is max |got - ref| over
 * max |ref|, per case. Bounds, with the reasoning:
 *   EXACT 0     moves and lookups (copy, pack, unpatchify, upsample, embedding): no arithmetic.
 *   ELEM  2e-6  elementwise and normalisations: a few fp32 roundings (2^-24 = 6e-8 each) and
 *               libm's tanhf/expf/erff (<= 2 ulp), on values of order 1 after normalisation.
 *   SUM   2e-5  dot products of K <= 37 terms (linear, conv with 27, attention with 16 and a
 *               softmax): fp32 summation error grows like K ulp of the largest partial sum,
 *               which can exceed the result by a factor of a few on random signs.
 *   TIME  1.2e-4 the timestep sinusoid: both sides compute in fp32 in the same order, but
 *               torch's vectorised exp may differ from expf by an ulp, which moves an argument
 *               near t = 1e3 by up to 1e3 * 2^-23 = 1.2e-4, and sin or cos by as much (the
 *               models round this embedding to BF16, whose ulp at 1 is 3.9e-3). */
#include <stdlib.h>

#include "core/ops.h"
#include "core/safetensors.h"
#include "tests/testutil.h"

#define EXACT 0.0
#define ELEM 2e-6
#define SUM 2e-5
#define TIME 1.2e-4

static st_file *fx;
static op_ctx *cpu;
static void *owned[256]; /* every buffer the test allocates, freed at the end */
static int n_owned;

static void *own(void *p) {
    CHECK(p && n_owned < 256);
    return owned[n_owned++] = p;
}

static const st_tensor *get(const char *cs, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", cs, name);
    const st_tensor *t = st_find(fx, key);
    if (!t) {
        fprintf(stderr, "fixture has no tensor %s\n", key);
        exit(1);
    }
    return t;
}

/* a writable host copy of a fixture tensor, as a view */
static tensor load(const char *cs, const char *name) {
    const st_tensor *s = get(cs, name);
    void *p = own(malloc(s->end - s->begin + 1));
    memcpy(p, s->data, s->end - s->begin);
    return tensor_make(p, s->dtype, TENSOR_CPU, s->ndim, s->shape);
}

static tensor like(const tensor *t) {
    void *p = own(calloc((size_t)tensor_numel(t) + 1, 4));
    return tensor_make(p, DTYPE_F32, TENSOR_CPU, t->ndim, t->shape);
}

static void compare(const char *cs, tensor got, double tol) {
    tensor ref = load(cs, "out");
    EXPECT(tensor_numel(&ref) == tensor_numel(&got), "%s: %lld values, expected %lld", cs,
           (long long)tensor_numel(&got), (long long)tensor_numel(&ref));
    const float *g = got.data, *r = ref.data;
    double worst = 0, mag = 0;
    for (int64_t i = 0; i < tensor_numel(&ref); i++) {
        double d = fabs((double)g[i] - r[i]);
        worst = d > worst || isnan(d) ? d : worst;
        mag = fabs(r[i]) > mag ? fabs(r[i]) : mag;
    }
    double rel = worst / (mag > 0 ? mag : 1);
    EXPECT(rel <= tol, "%s: error %.3g of max |ref| %.3g, bound %.3g", cs, rel, mag, tol);
    printf("  %-22s error %.2e (bound %.0e)\n", cs, rel, tol);
}

static void test_linear(void) {
    const char *names[] = {"none", "gelu_tanh", "gelu_erf", "silu", "quick_gelu"};
    const op_act acts[] = {OP_ACT_NONE, OP_ACT_GELU_TANH, OP_ACT_GELU_ERF, OP_ACT_SILU,
                           OP_ACT_QUICK_GELU};
    for (int i = 0; i < 5; i++) {
        char cs[64];
        snprintf(cs, sizeof cs, "linear_%s", names[i]);
        tensor x = load(cs, "x"), w = load(cs, "w"), b = load(cs, "b");
        tensor out = like(&(tensor){.ndim = 3, .shape = {2, 3, w.shape[0]}});
        op_linear(cpu, out, x, w, &b, acts[i]);
        compare(cs, out, SUM);
    }
    /* a strided x: the 37 columns of x inside rows of 40 */
    tensor x = load("linear_none", "x"), w = load("linear_none", "w"), b = load("linear_none", "b");
    float *wide = own(calloc(6 * 40, 4));
    for (int r = 0; r < 6; r++) memcpy(wide + r * 40 + 3, (float *)x.data + r * 37, 37 * 4);
    tensor xs = tensor_slice(tensor_2d(wide, DTYPE_F32, TENSOR_CPU, 6, 40), 1, 3, 37);
    tensor out = like(&(tensor){.ndim = 3, .shape = {2, 3, w.shape[0]}});
    op_linear(cpu, out, xs, w, &b, OP_ACT_NONE);
    compare("linear_none", out, SUM);
    /* a batch whose rows do not collapse: x's 2 x 3 rows as rows 1-3 of 2 x 5, out likewise */
    const int64_t K = x.shape[2], N = w.shape[0];
    float *xb = own(calloc(2 * 5 * (size_t)K, 4)), *ob = own(calloc(2 * 5 * (size_t)N, 4));
    for (int r = 0; r < 6; r++)
        memcpy(xb + ((r / 3) * 5 + 1 + r % 3) * K, (float *)x.data + r * K, (size_t)K * 4);
    const int64_t bx[3] = {2, 5, K}, bo[3] = {2, 5, N};
    op_linear(cpu, tensor_slice(tensor_make(ob, DTYPE_F32, TENSOR_CPU, 3, bo), 1, 1, 3),
              tensor_slice(tensor_make(xb, DTYPE_F32, TENSOR_CPU, 3, bx), 1, 1, 3), w, &b,
              OP_ACT_NONE);
    out = like(&(tensor){.ndim = 3, .shape = {2, 3, N}});
    for (int r = 0; r < 6; r++)
        memcpy((float *)out.data + r * N, ob + ((r / 3) * 5 + 1 + r % 3) * N, (size_t)N * 4);
    compare("linear_none", out, SUM);
}

static void test_norms(void) {
    tensor x = load("layernorm_affine", "x"), w = load("layernorm_affine", "w");
    tensor b = load("layernorm_affine", "b"), out = like(&x);
    op_layernorm(cpu, out, x, &w, &b, 1e-5f);
    compare("layernorm_affine", out, ELEM);
    x = load("layernorm_plain", "x");
    op_layernorm(cpu, out, x, NULL, NULL, 1e-6f);
    compare("layernorm_plain", out, ELEM);

    x = load("layernorm_modulate", "x");
    tensor m = load("layernorm_modulate", "m"); /* [2, 6C]: shift, scale, gate, ... */
    const int64_t C = x.shape[2];
    out = like(&x);
    op_layernorm_modulate(cpu, out, x, tensor_slice(m, 1, 0, C), tensor_slice(m, 1, C, C), 1e-6f);
    compare("layernorm_modulate", out, ELEM);

    x = load("gate_residual", "x");
    op_gate_residual(cpu, x, load("gate_residual", "gate"), load("gate_residual", "y"));
    compare("gate_residual", x, ELEM);

    x = load("rmsnorm", "x");
    out = like(&x);
    op_rmsnorm(cpu, out, x, load("rmsnorm", "w"), 1e-6f);
    compare("rmsnorm", out, ELEM);
    op_rmsnorm(cpu, x, x, load("rmsnorm", "w"), 1e-6f); /* in place */
    compare("rmsnorm", x, ELEM);
    /* the rows as heads: [1, rows, 1, D] inside rows of D + 5 (SD3's q/k in a fused projection) */
    x = load("rmsnorm", "x");
    const int64_t D = x.shape[x.ndim - 1], R = tensor_numel(&x) / D;
    float *hp = own(calloc((size_t)(R * (D + 5)), 4));
    for (int64_t r = 0; r < R; r++)
        memcpy(hp + r * (D + 5), (float *)x.data + r * D, (size_t)D * 4);
    tensor hv = tensor_make(hp, DTYPE_F32, TENSOR_CPU, 4, (int64_t[]){1, R, 1, D});
    hv.stride[0] = R * (D + 5), hv.stride[1] = D + 5, hv.stride[2] = D;
    op_rmsnorm2_heads(cpu, hv, load("rmsnorm", "w"), 1e-6f);
    for (int64_t r = 0; r < R; r++)
        memcpy((float *)x.data + r * D, hp + r * (D + 5), (size_t)D * 4);
    compare("rmsnorm", x, ELEM);

    x = load("groupnorm_silu", "x");
    out = like(&x);
    op_groupnorm(cpu, out, x, load("groupnorm_silu", "w"), load("groupnorm_silu", "b"), 4, 1e-6f, 1);
    compare("groupnorm_silu", out, ELEM);

    x = load("softmax", "x");
    out = like(&x);
    op_softmax(cpu, out, x);
    compare("softmax", out, ELEM);
}

static void test_rope_attention(void) {
    tensor x = load("rope", "x");
    op_rope(cpu, x, load("rope", "cos"), load("rope", "sin"));
    compare("rope", x, ELEM);

    tensor q = load("attention_plain", "q"), k = load("attention_plain", "k");
    tensor v = load("attention_plain", "v"), out = like(&q);
    op_attention(cpu, out, q, k, v, NULL, 0.25f, 0);
    compare("attention_plain", out, SUM);
    op_attention(cpu, out, q, load("attention_causal", "k"), load("attention_causal", "v"), NULL,
                 0.3f, 1);
    compare("attention_causal", out, SUM);
    tensor bias = load("attention_bias", "bias");
    op_attention(cpu, out, q, k, v, &bias, 1.0f, 0);
    compare("attention_bias", out, SUM);

    /* q, k, v as chunks of one fused projection: tokens strided by 3 H D */
    const int64_t B = 2, L = 11, H = 3, D = 16;
    float *qkv = own(calloc((size_t)(B * L * 3 * H * D), 4));
    for (int64_t i = 0; i < B * L; i++)
        for (int part = 0; part < 3; part++) {
            const tensor *src = part < 2 ? &k : &v; /* k serves as the queries too */
            memcpy(qkv + (i * 3 + part) * H * D, (float *)src->data + i * H * D, (size_t)(H * D) * 4);
        }
    tensor all = tensor_make(qkv, DTYPE_F32, TENSOR_CPU, 4, (int64_t[]){B, L, 3 * H, D});
    tensor kq = tensor_slice(all, 2, 0, H), kk = tensor_slice(all, 2, H, H), vv = tensor_slice(all, 2, 2 * H, H);
    tensor o1 = like(&k), o2 = like(&k);
    op_attention(cpu, o1, kq, kk, vv, NULL, 0.25f, 0);
    op_attention(cpu, o2, k, k, v, NULL, 0.25f, 0);
    EXPECT(!memcmp(o1.data, o2.data, (size_t)tensor_numel(&k) * 4), "strided q, k, v differ");
}

static void test_conv(void) {
    const char *names[] = {"conv3x3", "conv3x3_s2", "conv1x1"};
    for (int i = 0; i < 3; i++) {
        tensor x = load(names[i], "x"), w = load(names[i], "w"), b = load(names[i], "b");
        const int32_t *pad = (const int32_t *)get(names[i], "pad")->data;
        const int32_t s = *(const int32_t *)get(names[i], "stride")->data;
        const int p[4] = {pad[0], pad[1], pad[2], pad[3]};
        const st_tensor *ref = get(names[i], "out");
        tensor out = like(&(tensor){.ndim = 4, .shape = {ref->shape[0], ref->shape[1], ref->shape[2], ref->shape[3]}});
        op_conv2d(cpu, out, x, w, &b, s, p);
        compare(names[i], out, SUM);
    }
    tensor x = load("upsample2x", "x");
    tensor out = like(&(tensor){.ndim = 4, .shape = {x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3]}});
    op_upsample2x(cpu, out, x);
    compare("upsample2x", out, EXACT);
}

static void test_moves(void) {
    tensor table = load("embedding", "table");
    const int32_t *ids = (const int32_t *)get("embedding", "ids")->data;
    tensor out = like(&(tensor){.ndim = 2, .shape = {5, table.shape[1]}});
    op_embedding(cpu, out, table, ids);
    compare("embedding", out, EXACT);

    tensor t = load("timestep_embedding", "t");
    out = like(&(tensor){.ndim = 2, .shape = {t.shape[0], 256}});
    op_timestep_embedding(cpu, out, t.data, 1, 0.0f, 1.0f, 10000.0f);
    compare("timestep_embedding", out, TIME);

    tensor lat = load("pack2x2", "x");
    out = like(&(tensor){.ndim = 3, .shape = {2, 12, 16}});
    op_pack2x2(cpu, out, lat);
    compare("pack2x2", out, EXACT);
    tensor back = like(&lat);
    op_unpack2x2(cpu, back, out);
    compare("unpack2x2", back, EXACT);

    tensor hs = load("unpatchify", "x");
    out = like(&(tensor){.ndim = 4, .shape = {2, 3, 6, 8}});
    op_unpatchify(cpu, out, hs, 2);
    compare("unpatchify", out, EXACT);

    /* copy: a transposed view to BF16 and back rounds each value once */
    tensor src = load("softmax", "x"); /* [4, 19] */
    uint16_t *h = own(calloc(4 * 19, 2));
    tensor dst = tensor_2d(h, DTYPE_BF16, TENSOR_CPU, 19, 4);
    op_copy(cpu, dst, tensor_transpose(src, 0, 1));
    int bad = 0; /* nearest: neither neighbour is closer; a tie goes to the even one */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 19; j++) {
            double x = ((float *)src.data)[i * 19 + j], d = fabs(bf16_to_f32(h[j * 4 + i]) - x);
            double up = fabs(bf16_to_f32((uint16_t)(h[j * 4 + i] + 1)) - x);
            double down = fabs(bf16_to_f32((uint16_t)(h[j * 4 + i] - 1)) - x);
            bad += up < d || down < d || ((up == d || down == d) && (h[j * 4 + i] & 1));
        }
    EXPECT(bad == 0, "op_copy to BF16: %d values not rounded to nearest even", bad);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_ops fixtures/ops_ref.safetensors\n");
        return 2;
    }
    if (st_open(argv[1], &fx) || op_ctx_create(TENSOR_CPU, &cpu)) {
        fprintf(stderr, "%s\n", err_msg());
        return 1;
    }
    printf("fixture: torch %s, diffusers %s\n", st_meta(fx, "torch"), st_meta(fx, "diffusers"));
    test_linear();
    test_norms();
    test_rope_attention();
    test_conv();
    test_moves();
    op_ctx_free(cpu);
    st_close(fx);
    while (n_owned) free(owned[--n_owned]);
    printf("%s\n", tu_failures ? "FAILED" : "ok");
    return tu_failures != 0;
}
