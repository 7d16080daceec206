/* test_ops_cuda: every op on the CUDA backend against the CPU reference on random inputs of
 * odd shapes (strided views where the op allows them), then the same run again, which must
 * give the same bits (determinism); and the host copies (op_mem_upload, op_mem_download) keep
 * the stream's order. Exits 77 (skipped) without a GPU.
 *
 * Both backends see the same inputs: random values rounded to BF16, given to the CPU as F32
 * and to the GPU as BF16. An element passes when
 *     |gpu - cpu| <= rtol |cpu| + atol max|cpu|
 * The tolerance table, by the BF16 rounding points the CUDA op has (docs/MODEL-SPEC.md §1.11) and
 * the fp32 arithmetic before them (the CPU reference is fp32 with double statistics): MOVE   0, 0
 * copies, packing, upsampling, lookups: no arithmetic at all. ONE    2^-8, 1e-4      one rounding
 * to BF16 (half an ulp = 2^-9 relative) of an fp32 value that differs from the reference by fp32
 * effects only (summation order over K <= 4096 terms: ~K 2^-24 of the largest partial sum, below
 * 1e-4 of the largest output); 2^-8 leaves room for a value within fp32 noise of a rounding
 * boundary. TWO    2^-8, 2^-9      two roundings (gated GELU, gated residual, GroupNorm then SiLU):
 * the first rounds an intermediate whose magnitude is up to the output's scale, so its half-ulp
 * counts against max|cpu|. BIAS   2^-8, 2^-7      conv then bias: the convolution's sum is rounded
 * before the bias is added and may exceed the output by |bias| (< 4 for the test's N(0,1) biases),
 * so its half-ulp is up to 2^-9 (|out| + 4). ACT2   1.125 2^-8, 2^-9  a GEMM rounded to BF16, then
 * an activation f without a cuBLASLt epilogue (SiLU, quick-GELU, erf-GELU), rounded again: the
 * first half-ulp reaches the output times f'(z) <= 1.13 (for z > 0, where f(z) ~ z), the second
 * adds its own; for z < 0, |z f'(z)| < 0.3 and atol covers it. MOD    2^-8, 2^-7      adaptive
 * LayerNorm: LN, 1 + scale, the product and the sum each round. ATTN   2^-8, 2^-8      attention:
 * the probabilities round to BF16 before P.V (as flash attention does), a relative 2^-9 on weights
 * summing to 1. TIME   0, 6e-4 (F32)   the sinusoid: CUDA's expf against glibc's, each within 2 ulp
 * of the frequency e (< 1), moves the argument t e for t up to 3504 (FLUX's guidance 3.5 in the
 * model's units) by 3504 x 2 x 2^-24 = 4.2e-4, plus half an ulp of the argument (1.2e-4) and
 * sin/cos's own ulps. */
#include <stdlib.h>

#include "core/cuda/gpu.h"
#include "core/log.h"
#include "core/ops.h"
#include "tests/testutil.h"

typedef struct tol {
    double rtol, atol;
} tol;
static const tol MOVE = {0, 0}, ONE = {0x1p-8, 1e-4}, TWO = {0x1p-8, 0x1p-9},
                 MOD = {0x1p-8, 0x1p-7}, ATTN = {0x1p-8, 0x1p-8}, TIME = {0, 6e-4},
                 ACT2 = {0x1.2p-8, 0x1p-9}, BIAS = {0x1p-8, 0x1p-7};

static op_ctx *cpu, *gpu;
static tu_rng rng;
static int pass; /* 0: compare with the CPU and keep the GPU's bytes; 1: compare bytes */

enum { MAX_OWNED = 1024, MAX_RESULTS = 256 };
static void *host_owned[MAX_OWNED], *dev_owned[MAX_OWNED];
static int n_host, n_dev;
static void *results[MAX_RESULTS];
static size_t result_bytes[MAX_RESULTS];
static int n_results;

static void *hown(void *p) {
    CHECK(p && n_host < MAX_OWNED);
    return host_owned[n_host++] = p;
}

static void *dalloc(size_t bytes) {
    void *p;
    CHECK(n_dev < MAX_OWNED && !gpu_alloc(&p, bytes ? bytes : 2));
    return dev_owned[n_dev++] = p;
}

/* one operand on both backends: h (F32, host) and d (BF16, device) hold the same values */
typedef struct pair {
    tensor h, d;
} pair;

static pair mk_dt(int ndim, const int64_t *shape, double scale, dtype ddt) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    float *h = hown(malloc((size_t)(n ? n : 1) * 4));
    uint16_t *b = hown(malloc((size_t)(n ? n : 1) * 2));
    for (int64_t i = 0; i < n; i++) {
        b[i] = f32_to_bf16((float)(scale * tu_normal(&rng)));
        h[i] = bf16_to_f32(b[i]);
    }
    pair p = {tensor_make(h, DTYPE_F32, TENSOR_CPU, ndim, shape), {0}};
    if (ddt == DTYPE_F32) {
        void *d = dalloc((size_t)n * 4);
        CHECK(!gpu_upload(d, h, (size_t)n * 4));
        p.d = tensor_make(d, DTYPE_F32, TENSOR_CUDA, ndim, shape);
    } else {
        void *d = dalloc((size_t)n * 2);
        CHECK(!gpu_upload(d, b, (size_t)n * 2));
        p.d = tensor_make(d, DTYPE_BF16, TENSOR_CUDA, ndim, shape);
    }
    return p;
}
static pair mk(int ndim, const int64_t *shape, double scale) {
    return mk_dt(ndim, shape, scale, DTYPE_BF16);
}
#define MK(scale, ...) mk(sizeof((int64_t[]){__VA_ARGS__}) / 8, (int64_t[]){__VA_ARGS__}, scale)
#define OUT(...) MK(0.0, __VA_ARGS__)

static pair slice(pair p, int dim, int64_t start, int64_t len) {
    return (pair){tensor_slice(p.h, dim, start, len), tensor_slice(p.d, dim, start, len)};
}

/* the GPU's contiguous output: its bytes, and as floats */
static float *fetch(const tensor *d, size_t *bytes, void **bytes_out) {
    int64_t n = tensor_numel(d);
    size_t eb = d->dt == DTYPE_F32 ? 4 : 2;
    *bytes = (size_t)n * eb;
    void *raw = *bytes_out = hown(malloc(*bytes + 1));
    CHECK(!gpu_download(raw, d->data, *bytes));
    if (d->dt == DTYPE_F32) return raw;
    float *f = hown(malloc((size_t)(n ? n : 1) * 4));
    for (int64_t i = 0; i < n; i++)
        f[i] = bf16_to_f32(((uint16_t *)raw)[i]);
    return f;
}

/* Compares out (contiguous) on both backends; on the second pass, the GPU's bytes with the
 * first pass's. */
static void check(const char *what, pair out, tol t) {
    CHECK(!op_ctx_sync(gpu));
    size_t bytes;
    const int64_t n = tensor_numel(&out.h);
    void *raw;
    const float *g = fetch(&out.d, &bytes, &raw), *r = out.h.data;
    CHECK(n_results < MAX_RESULTS);
    if (pass == 1) {
        EXPECT(result_bytes[n_results] == bytes && !memcmp(results[n_results], raw, bytes),
               "%s: the second run gave different bits", what);
        n_results++;
        return;
    }
    results[n_results] = malloc(bytes + 1);
    memcpy(results[n_results], raw, bytes);
    result_bytes[n_results++] = bytes;
    double mx = 0, worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++)
        mx = fmax(mx, fabs(r[i]));
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(g[i])) finite = 0;
        double lim = t.rtol * fabs(r[i]) + t.atol * mx, d = fabs((double)g[i] - r[i]);
        double q = lim > 0 ? d / lim : (d > 0 ? INFINITY : 0);
        if (q > worst) worst = q, at = i;
    }
    printf("  %-34s %8lld values, max|ref| %9.3g, worst error %.3f of bound\n", what, (long long)n,
           mx, worst);
    EXPECT(finite && worst <= 1.0, "%s: element %lld: gpu %.8g cpu %.8g (rtol %g atol %g)", what,
           (long long)at, g[at], r[at], t.rtol, t.atol);
}

static void test_linear(void) {
    static const op_act acts[] = {OP_ACT_NONE, OP_ACT_GELU_TANH, OP_ACT_SILU, OP_ACT_QUICK_GELU,
                                  OP_ACT_GELU_ERF};
    static const char *names[] = {"linear", "linear+gelu_tanh", "linear+silu", "linear+quick_gelu",
                                  "linear+gelu_erf"};
    /* x: 77 rows, K = 264, read as a strided chunk of a wider tensor */
    pair wide = MK(1.0, 77, 264 + 40), x = slice(wide, 1, 16, 264);
    pair w = MK(0.06, 136, 264), b = MK(0.5, 136);
    for (int i = 0; i < 5; i++) {
        pair o = OUT(77, 136);
        op_linear(cpu, o.h, x.h, w.h, i % 2 ? &b.h : NULL, acts[i]);
        op_linear(gpu, o.d, x.d, w.d, i % 2 ? &b.d : NULL, acts[i]);
        /* NONE and GELU(tanh) run fused in the GEMM's epilogue: one rounding */
        check(names[i], o, acts[i] == OP_ACT_NONE || acts[i] == OP_ACT_GELU_TANH ? ONE : ACT2);
    }
    /* out a strided chunk of a wider tensor (FLUX's MLP half of a concatenation) */
    pair ow = OUT(77, 136 + 24), os = slice(ow, 1, 8, 136);
    op_linear(cpu, os.h, x.h, w.h, &b.h, OP_ACT_GELU_TANH);
    op_linear(gpu, os.d, x.d, w.d, &b.d, OP_ACT_GELU_TANH);
    check("linear+gelu_tanh into strided rows", ow, ONE);
    /* one row (the pooled-text and timestep MLPs), batched 3-D activations */
    pair x1 = MK(1.0, 1, 512), w1 = MK(0.05, 3072, 512), o1 = OUT(1, 3072);
    op_linear(cpu, o1.h, x1.h, w1.h, NULL, OP_ACT_SILU);
    op_linear(gpu, o1.d, x1.d, w1.d, NULL, OP_ACT_SILU);
    check("linear M=1 +silu", o1, ACT2);
    pair x3 = MK(1.0, 2, 33, 4096), w3 = MK(0.02, 64, 4096), b3 = MK(0.1, 64), o3 = OUT(2, 33, 64);
    op_linear(cpu, o3.h, x3.h, w3.h, &b3.h, OP_ACT_NONE);
    op_linear(gpu, o3.d, x3.d, w3.d, &b3.d, OP_ACT_NONE);
    check("linear [2,33,4096] K=4096", o3, ONE);
    /* a batch whose rows do not collapse (SD3: one stream's rows of a joint [B, L, 3D]
       sequence): strided input and output, one batched GEMM; with GELU and without a bias */
    for (int g = 0; g < 2; g++) {
        pair xj = MK(1.0, 3, 45, 3 * 264), oj = OUT(3, 45 + 7, 136 + 40);
        const pair xs = slice(slice(xj, 1, 2, 41), 2, 264, 264),
                   ob = slice(slice(oj, 1, 7, 41), 2, 16, 136);
        op_linear(cpu, ob.h, xs.h, w.h, g ? NULL : &b.h, g ? OP_ACT_GELU_TANH : OP_ACT_NONE);
        op_linear(gpu, ob.d, xs.d, w.d, g ? NULL : &b.d, g ? OP_ACT_GELU_TANH : OP_ACT_NONE);
        check(g ? "linear batched rows +gelu, no bias" : "linear batched rows (3 x 41)", oj, ONE);
    }
}

static void test_elementwise(void) {
    static const op_act acts[] = {OP_ACT_GELU_TANH, OP_ACT_GELU_ERF, OP_ACT_SILU,
                                  OP_ACT_QUICK_GELU};
    static const char *names[] = {"act gelu_tanh", "act gelu_erf", "act silu", "act quick_gelu"};
    pair x = MK(3.0, 999);
    for (int i = 0; i < 4; i++) {
        pair o = OUT(999);
        op_act_apply(cpu, o.h, x.h, acts[i]);
        op_act_apply(gpu, o.d, x.d, acts[i]);
        check(names[i], o, ONE);
    }
    pair ab = MK(2.0, 37, 2 * 96), o = OUT(37, 96);
    op_gated_gelu(cpu, o.h, slice(ab, 1, 0, 96).h, slice(ab, 1, 96, 96).h);
    op_gated_gelu(gpu, o.d, slice(ab, 1, 0, 96).d, slice(ab, 1, 96, 96).d);
    check("gated_gelu (strided halves)", o, TWO);
    pair a = MK(1.0, 3, 5, 67), b = MK(1.0, 3, 5, 67), s = OUT(3, 5, 67);
    op_add(cpu, s.h, a.h, b.h);
    op_add(gpu, s.d, a.d, b.d);
    check("add", s, ONE);
    /* x += gate * y, gate a chunk of a modulation vector, y strided rows */
    pair xr = MK(1.0, 2, 19, 160), mod = MK(1.0, 2, 6 * 160), y = MK(1.0, 2, 19, 200);
    pair gate = slice(mod, 1, 2 * 160, 160), ys = slice(y, 2, 8, 160);
    op_gate_residual(cpu, xr.h, gate.h, ys.h);
    op_gate_residual(gpu, xr.d, gate.d, ys.d);
    check("gate_residual", xr, TWO);
    /* latent scale and shift, and the Euler step: two roundings each */
    pair z = MK(2.0, 16, 33), zo = OUT(16, 33);
    op_scale_shift(cpu, zo.h, z.h, 1.0f / 0.3611f, 0.1159f);
    op_scale_shift(gpu, zo.d, z.d, 1.0f / 0.3611f, 0.1159f);
    check("scale_shift", zo, TWO);
    pair xe = MK(1.0, 4, 1000), ve = MK(1.0, 4, 1000);
    op_euler_step(cpu, xe.h, ve.h, -0.0116f);
    op_euler_step(gpu, xe.d, ve.d, -0.0116f);
    check("euler_step", xe, TWO);
    /* guidance: the eager bf16 arithmetic exactly, bf16(b + bf16(g bf16(p - n)))
       (docs/MODEL-SPEC.md §6.4), on inputs that are BF16 values on both sides; CFG (u, c, u) and
       skip-layer guidance (v, c, s) */
    pair cu = MK(1.0, 2, 999), cc = MK(1.0, 2, 999), cs = MK(1.0, 2, 999), co = OUT(2, 999);
    for (int slg = 0; slg < 2; slg++) {
        /* the second pass guides the first's output */
        const float g = slg ? 2.8f : 4.5f;
        if (slg)
            op_guidance(gpu, co.d, co.d, cc.d, cs.d, g);
        else
            op_guidance(gpu, co.d, cu.d, cc.d, cu.d, g);
        CHECK(!op_ctx_sync(gpu));
        size_t nb;
        void *raw;
        fetch(&co.d, &nb, &raw);
        const float *uh = cu.h.data, *ch = cc.h.data, *sh = cs.h.data;
        int bad = 0;
        for (int64_t i = 0; i < 2 * 999; i++) {
            float want = bf16_round(uh[i] + bf16_round(4.5f * bf16_round(ch[i] - uh[i])));
            if (slg) want = bf16_round(want + bf16_round(g * bf16_round(ch[i] - sh[i])));
            bad += ((uint16_t *)raw)[i] != f32_to_bf16(want);
        }
        EXPECT(bad == 0, "guidance (%s): %d of %d values differ from the eager bf16 arithmetic",
               slg ? "skip-layer" : "CFG", bad, 2 * 999);
    }
    /* shapes the 16-byte paths cannot take: the scalar fallbacks */
    pair ab2 = MK(2.0, 7, 2 * 95), og2 = OUT(7, 95);
    op_gated_gelu(cpu, og2.h, slice(ab2, 1, 0, 95).h, slice(ab2, 1, 95, 95).h);
    op_gated_gelu(gpu, og2.d, slice(ab2, 1, 0, 95).d, slice(ab2, 1, 95, 95).d);
    check("gated_gelu D=95", og2, TWO);
    pair fa = MK(1.0, 1001), fb = MK(1.0, 1001), fo = OUT(1001);
    pair fa1 = slice(fa, 0, 1, 1000), fb1 = slice(fb, 0, 1, 1000), fo1 = slice(fo, 0, 1, 1000);
    op_add(cpu, fo1.h, fa1.h, fb1.h);
    op_add(gpu, fo1.d, fa1.d, fb1.d);
    check("add on misaligned slices", fo, ONE);
    pair xr2 = MK(1.0, 2, 19, 160), y2 = MK(1.0, 2, 19, 200), mod2 = MK(1.0, 2, 3 * 160);
    op_gate_residual(cpu, xr2.h, slice(mod2, 1, 160, 160).h, slice(y2, 2, 3, 160).h);
    op_gate_residual(gpu, xr2.d, slice(mod2, 1, 160, 160).d, slice(y2, 2, 3, 160).d);
    check("gate_residual, y rows at offset 3", xr2, TWO);
}

static void test_norms(void) {
    pair wide = MK(2.0, 45, 3200), x = slice(wide, 1, 64, 3072);
    pair w = MK(1.0, 3072), b = MK(1.0, 3072), o = OUT(45, 3072), o2 = OUT(45, 3072);
    op_layernorm(cpu, o.h, x.h, &w.h, &b.h, 1e-5f);
    op_layernorm(gpu, o.d, x.d, &w.d, &b.d, 1e-5f);
    check("layernorm C=3072 affine, strided", o, ONE);
    op_layernorm(cpu, o2.h, x.h, NULL, NULL, 1e-6f);
    op_layernorm(gpu, o2.d, x.d, NULL, NULL, 1e-6f);
    check("layernorm no affine", o2, ONE);
    pair xm = MK(3.0, 2, 37, 264), mod = MK(0.5, 2, 3 * 264), om = OUT(2, 37, 264);
    op_layernorm_modulate(cpu, om.h, xm.h, slice(mod, 1, 0, 264).h, slice(mod, 1, 264, 264).h,
                          1e-6f);
    op_layernorm_modulate(gpu, om.d, xm.d, slice(mod, 1, 0, 264).d, slice(mod, 1, 264, 264).d,
                          1e-6f);
    check("layernorm_modulate", om, MOD);
    pair xm2 = MK(3.0, 2, 13, 262), mod2 = MK(0.5, 2, 3 * 262), om2 = OUT(2, 13, 262);
    op_layernorm_modulate(cpu, om2.h, xm2.h, slice(mod2, 1, 0, 262).h, slice(mod2, 1, 262, 262).h,
                          1e-6f);
    op_layernorm_modulate(gpu, om2.d, xm2.d, slice(mod2, 1, 0, 262).d, slice(mod2, 1, 262, 262).d,
                          1e-6f);
    check("layernorm_modulate C=262", om2, MOD);
    pair xq2 = MK(1.5, 30, 2, 140), wq2 = MK(1.0, 128), q2 = slice(xq2, 2, 4, 128);
    op_rmsnorm(cpu, q2.h, q2.h, wq2.h, 1e-6f);
    op_rmsnorm(gpu, q2.d, q2.d, wq2.d, 1e-6f);
    check("rmsnorm on heads at offset 4", xq2, ONE);
    /* heads of 128 inside rows of 256 (rows strided), normalised in place */
    pair xq = MK(1.5, 50, 4, 256), wq = MK(1.0, 128), q = slice(xq, 2, 64, 128);
    op_rmsnorm(cpu, q.h, q.h, wq.h, 1e-6f);
    op_rmsnorm(gpu, q.d, q.d, wq.d, 1e-6f);
    check("rmsnorm in place on strided heads", xq, ONE);
    pair xt = MK(1.0, 7, 4096), wt = MK(1.0, 4096), ot = OUT(7, 4096);
    op_rmsnorm(cpu, ot.h, xt.h, wt.h, 1e-6f);
    op_rmsnorm(gpu, ot.d, xt.d, wt.d, 1e-6f);
    check("rmsnorm D=4096", ot, ONE);
    /* two roundings (T5LayerNorm): within the same bound as one, the extra rounding is 2^-9 */
    pair x2 = MK(1.0, 9, 4096), o2w = OUT(9, 4096), x3 = MK(1.0, 33, 64), w3 = MK(1.0, 64);
    op_rmsnorm2(cpu, o2w.h, x2.h, wt.h, 1e-6f);
    op_rmsnorm2(gpu, o2w.d, x2.d, wt.d, 1e-6f);
    check("rmsnorm2 D=4096", o2w, TWO);
    op_rmsnorm2(cpu, x3.h, x3.h, w3.h, 1e-6f);
    op_rmsnorm2(gpu, x3.d, x3.d, w3.d, 1e-6f);
    check("rmsnorm2 D=64 in place", x3, TWO);
    for (int silu = 0; silu < 2; silu++) {
        pair xg = MK(2.0, 2, 64, 33, 31), gw = MK(1.0, 64), gb = MK(1.0, 64);
        pair og = OUT(2, 64, 33, 31);
        op_groupnorm(cpu, og.h, xg.h, gw.h, gb.h, 32, 1e-6f, silu);
        op_groupnorm(gpu, og.d, xg.d, gw.d, gb.d, 32, 1e-6f, silu);
        check(silu ? "groupnorm+silu" : "groupnorm", og, TWO);
    }
    /* large groups: statistics split over many blocks */
    pair xg = MK(1.0, 1, 64, 256, 257), gw = MK(1.0, 64), gb = MK(1.0, 64);
    pair og = OUT(1, 64, 256, 257);
    op_groupnorm(cpu, og.h, xg.h, gw.h, gb.h, 32, 1e-6f, 1);
    op_groupnorm(gpu, og.d, xg.d, gw.d, gb.d, 32, 1e-6f, 1);
    check("groupnorm 2x256x257 per group", og, TWO);
    pair xs = MK(4.0, 10, 1001), os = OUT(10, 1001);
    op_softmax(cpu, os.h, xs.h);
    op_softmax(gpu, os.d, xs.d);
    check("softmax n=1001", os, ONE);
}

/* [B, L, H*D] (tokens maybe strided) seen as [B, L, H, D] */
static tensor heads(tensor t, int64_t H, int64_t D) {
    CHECK(t.ndim == 3 && t.stride[2] == 1 && t.shape[2] == H * D);
    t.ndim = 4;
    t.shape[2] = H, t.shape[3] = D;
    t.stride[2] = D, t.stride[3] = 1;
    return t;
}

static void test_rope(void) {
    /* q inside a fused [1, L, 3, H, D] projection seen as [1, L, H, D] with strided tokens */
    const int64_t L = 50, H = 3, D = 128;
    pair qkv = MK(1.0, 1, L, 3 * H * D);
    pair cs = mk_dt(2, (int64_t[]){L, D}, 1.0, DTYPE_F32),
         sn = mk_dt(2, (int64_t[]){L, D}, 1.0, DTYPE_F32);
    tensor qh = heads(tensor_slice(qkv.h, 2, H * D, H * D), H, D);
    tensor qd = heads(tensor_slice(qkv.d, 2, H * D, H * D), H, D);
    op_rope(cpu, qh, cs.h, sn.h);
    op_rope(gpu, qd, cs.d, sn.d);
    check("rope on strided q", qkv, ONE);
    /* FLUX's fused q/k norm + rotation: against the CPU on strided heads (D 128 and 64, the
       one-pass kernel; D 96 the two-op fallback), and bit for bit against the two ops */
    static const int64_t dims[] = {64, 96, 128};
    for (int di = 0; di < 3; di++) {
        const int64_t d = dims[di];
        pair a = MK(1.0, 1, L, 3 * H * d), w = MK(1.0, d);
        pair c2 = mk_dt(2, (int64_t[]){L, d}, 1.0, DTYPE_F32),
             s2 = mk_dt(2, (int64_t[]){L, d}, 1.0, DTYPE_F32);
        op_rmsnorm_rope(cpu, heads(tensor_slice(a.h, 2, H * d, H * d), H, d), w.h, 1e-6f, c2.h,
                        s2.h);
        op_rmsnorm_rope(gpu, heads(tensor_slice(a.d, 2, H * d, H * d), H, d), w.d, 1e-6f, c2.d,
                        s2.d);
        check(d == 128  ? "rmsnorm_rope D=128 strided"
              : d == 64 ? "rmsnorm_rope D=64 strided"
                        : "rmsnorm_rope D=96 fallback",
              a, TWO);
        pair x = MK(1.0, 1, L, H * d), y = OUT(1, L, H * d);
        op_copy(gpu, y.d, x.d);
        op_rmsnorm_rope(gpu, heads(x.d, H, d), w.d, 1e-6f, c2.d, s2.d);
        tensor rows = tensor_reshape(y.d, 2, (int64_t[]){L * H, d});
        op_rmsnorm(gpu, rows, rows, w.d, 1e-6f);
        op_rope(gpu, heads(y.d, H, d), c2.d, s2.d);
        CHECK(!op_ctx_sync(gpu));
        size_t bx, by;
        void *rx, *ry;
        fetch(&x.d, &bx, &rx), fetch(&y.d, &by, &ry);
        EXPECT(bx == by && !memcmp(rx, ry, bx), "rmsnorm_rope D=%lld: not the two ops' bits",
               (long long)d);
    }
}

/* SD3's q/k norm on heads of a stream's rows inside a joint [B, L, 3 H D] projection (batches
 * and tokens strided): against the CPU (D 64, the one-pass kernel; D 96, the per-token
 * fallback), and bit for bit against op_rmsnorm2 on the same rows made contiguous */
static void test_rmsnorm_heads(void) {
    const int64_t B = 2, L = 37, n = 29, H = 3;
    static const int64_t dims[] = {64, 96};
    for (int di = 0; di < 2; di++) {
        const int64_t d = dims[di];
        pair a = MK(2.0, B, L, 3 * H * d), w = MK(1.0, d);
        const pair k = slice(slice(a, 1, L - n, n), 2, H * d, H * d);
        op_rmsnorm2_heads(cpu, heads(k.h, H, d), w.h, 1e-6f);
        op_rmsnorm2_heads(gpu, heads(k.d, H, d), w.d, 1e-6f);
        check(d == 64 ? "rmsnorm2_heads D=64 strided" : "rmsnorm2_heads D=96 fallback", a, TWO);
        pair x = MK(2.0, B, n, H * d), y = OUT(B, n, H * d);
        op_copy(gpu, y.d, x.d);
        op_rmsnorm2_heads(gpu, heads(x.d, H, d), w.d, 1e-6f);
        tensor rows = tensor_reshape(y.d, 2, (int64_t[]){B * n * H, d});
        op_rmsnorm2(gpu, rows, rows, w.d, 1e-6f);
        CHECK(!op_ctx_sync(gpu));
        size_t bx, by;
        void *rx, *ry;
        fetch(&x.d, &bx, &rx), fetch(&y.d, &by, &ry);
        EXPECT(bx == by && !memcmp(rx, ry, bx), "rmsnorm2_heads D=%lld: not op_rmsnorm2's bits",
               (long long)d);
    }
}

/* q, k, v as chunks of one fused [B, L, 3, H, D] projection */
static void attention_case(const char *what, int64_t B, int64_t Lq, int64_t Lk, int64_t H,
                           int64_t D, int with_bias, int causal) {
    pair qb = MK(1.0, B, Lq, H * D), kv = MK(1.0, B, Lk, 2 * H * D);
    tensor q[2], k[2], v[2];
    for (int i = 0; i < 2; i++) {
        tensor qt = i ? qb.d : qb.h, kvt = i ? kv.d : kv.h;
        q[i] = heads(qt, H, D);
        k[i] = heads(tensor_slice(kvt, 2, 0, H * D), H, D);
        v[i] = heads(tensor_slice(kvt, 2, H * D, H * D), H, D);
    }
    pair bias = mk_dt(3, (int64_t[]){H, Lq, Lk}, 2.0, DTYPE_F32), o = OUT(B, Lq, H, D);
    const float scale = 1.0f / sqrtf((float)D);
    op_attention(cpu, o.h, q[0], k[0], v[0], with_bias ? &bias.h : NULL, scale, causal);
    op_attention(gpu, o.d, q[1], k[1], v[1], with_bias ? &bias.d : NULL, scale, causal);
    check(what, o, ATTN);
    if (with_bias || causal) return;
    /* out's tokens strided: the first half of a [B, Lq, 2 H D] concatenation (FLUX's single
     * block writes attention beside the MLP activations) */
    pair cat = OUT(B, Lq, 2 * H * D);
    tensor oh = heads(tensor_slice(cat.h, 2, 0, H * D), H, D);
    tensor od = heads(tensor_slice(cat.d, 2, 0, H * D), H, D);
    op_attention(cpu, oh, q[0], k[0], v[0], NULL, scale, 0);
    op_attention(gpu, od, q[1], k[1], v[1], NULL, scale, 0);
    char name[64];
    snprintf(name, sizeof name, "%s, strided out", what);
    check(name, cat, ATTN);
}

static void test_attention(void) {
    /* the log says which path each shape took (cuDNN's SDPA or the own kernel) */
    log_level was = log_get_level();
    if (pass == 0) log_set_level(LOG_LEVEL_DEBUG);
    attention_case("attention d64 causal (CLIP)", 2, 77, 77, 3, 64, 0, 1);
    attention_case("attention d64 bias (T5)", 1, 45, 45, 4, 64, 1, 0);
    attention_case("attention d128 L=300 (FLUX)", 1, 300, 300, 2, 128, 0, 0);
    attention_case("attention d64 Lq=65 Lk=130", 2, 65, 130, 2, 64, 0, 0);
    attention_case("attention d512 L=130 (VAE)", 1, 130, 130, 1, 512, 0, 0);
    log_set_level(was);
}

static void test_conv(void) {
    struct {
        const char *what;
        int64_t ci, co, h, w, k;
        int s, pad[4], bias;
    } cases[] = {
        {"conv 3x3 pad 1", 8, 16, 17, 19, 3, 1, {1, 1, 1, 1}, 1},
        {"conv 1x1", 16, 8, 9, 11, 1, 1, {0, 0, 0, 0}, 1},
        {"conv 3x3 s2 pad (0,1,0,1)", 8, 8, 16, 18, 3, 2, {0, 1, 0, 1}, 1},
        {"conv 3x3 no bias", 4, 12, 10, 10, 3, 1, {1, 1, 1, 1}, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int64_t ho =
            (cases[i].h + cases[i].pad[0] + cases[i].pad[1] - cases[i].k) / cases[i].s + 1;
        const int64_t wo =
            (cases[i].w + cases[i].pad[2] + cases[i].pad[3] - cases[i].k) / cases[i].s + 1;
        pair x = MK(1.0, 2, cases[i].ci, cases[i].h, cases[i].w);
        pair w = MK(0.2, cases[i].co, cases[i].ci, cases[i].k, cases[i].k),
             b = MK(1.0, cases[i].co);
        pair o = OUT(2, cases[i].co, ho, wo);
        op_conv2d(cpu, o.h, x.h, w.h, cases[i].bias ? &b.h : NULL, cases[i].s, cases[i].pad);
        op_conv2d(gpu, o.d, x.d, w.d, cases[i].bias ? &b.d : NULL, cases[i].s, cases[i].pad);
        check(cases[i].what, o, cases[i].bias ? BIAS : ONE);
    }
}

static void test_moves(void) {
    pair x = MK(1.0, 2, 3, 5, 7), up = OUT(2, 3, 10, 14);
    op_upsample2x(cpu, up.h, x.h);
    op_upsample2x(gpu, up.d, x.d);
    check("upsample2x", up, MOVE);
    pair x8 = MK(1.0, 1, 3, 5, 24), up8 = OUT(1, 3, 10, 48); /* W % 8 == 0: 8 columns a thread */
    op_upsample2x(cpu, up8.h, x8.h);
    op_upsample2x(gpu, up8.d, x8.d);
    check("upsample2x W=24", up8, MOVE);
    pair img = MK(1.0, 2, 16, 6, 10), tok = OUT(2, 15, 64), back = OUT(2, 16, 6, 10);
    op_pack2x2(cpu, tok.h, img.h);
    op_pack2x2(gpu, tok.d, img.d);
    check("pack2x2", tok, MOVE);
    op_unpack2x2(cpu, back.h, tok.h);
    op_unpack2x2(gpu, back.d, tok.d);
    check("unpack2x2", back, MOVE);
    pair t2 = MK(1.0, 1, 12, 4 * 16), un = OUT(1, 16, 6, 8);
    op_unpatchify(cpu, un.h, t2.h, 2);
    op_unpatchify(gpu, un.d, t2.d, 2);
    check("unpatchify p=2", un, MOVE);
    pair table = MK(1.0, 50, 72), e = OUT(2, 9, 72);
    int32_t ids[18];
    for (int i = 0; i < 18; i++)
        ids[i] = (int32_t)(tu_next(&rng) % 50);
    op_embedding(cpu, e.h, table.h, ids);
    op_embedding(gpu, e.d, table.d, ids);
    check("embedding", e, MOVE);
    /* a transposed (strided) view copied out contiguously, BF16 -> BF16 and BF16 -> F32 */
    pair m = MK(1.0, 3, 40, 24), mt = OUT(3, 24, 40);
    op_copy(cpu, mt.h, tensor_transpose(m.h, 1, 2));
    op_copy(gpu, mt.d, tensor_transpose(m.d, 1, 2));
    check("copy transposed", mt, MOVE);
    pair mf = mk_dt(3, (int64_t[]){3, 24, 40}, 0.0, DTYPE_F32);
    op_copy(cpu, mf.h, tensor_transpose(m.h, 1, 2));
    op_copy(gpu, mf.d, tensor_transpose(m.d, 1, 2));
    check("copy BF16 -> F32", mf, MOVE);
    /* F32 -> BF16 rounds to nearest even on both sides: the CPU copies into BF16 too */
    pair src = mk_dt(2, (int64_t[]){7, 33}, 1.0, DTYPE_F32), dst = OUT(7, 33);
    float *sh = src.h.data;
    for (int i = 0; i < 7 * 33; i++)
        sh[i] *= 1.0f + 0x1p-12f * (float)(i % 5); /* off-grid */
    CHECK(!gpu_upload(src.d.data, sh, 7 * 33 * 4));
    uint16_t *hb = hown(malloc(7 * 33 * 2));
    op_copy(cpu, tensor_2d(hb, DTYPE_BF16, TENSOR_CPU, 7, 33), src.h);
    for (int i = 0; i < 7 * 33; i++)
        ((float *)dst.h.data)[i] = bf16_to_f32(hb[i]);
    op_copy(gpu, dst.d, src.d);
    check("copy F32 -> BF16", dst, MOVE);
}

static void test_timestep(void) {
    const float t[3] = {1000.0f, 3504.0f, 0.25f};
    pair o = mk_dt(2, (int64_t[]){3, 256}, 0.0, DTYPE_F32), ob = OUT(3, 256);
    op_timestep_embedding(cpu, o.h, t, 1, 0.0f, 1.0f, 10000.0f);
    op_timestep_embedding(gpu, o.d, t, 1, 0.0f, 1.0f, 10000.0f);
    check("timestep_embedding F32 (flip)", o, TIME);
    op_timestep_embedding(cpu, ob.h, t, 0, 1.0f, 1.0f, 10000.0f);
    op_timestep_embedding(gpu, ob.d, t, 0, 1.0f, 1.0f, 10000.0f);
    check("timestep_embedding BF16 (shift 1)", ob, (tol){0x1p-8, 6e-4});
}

/* op_mem_download reads an enqueued op's output without a sync before it, and op_mem_upload
 * over a buffer an enqueued op writes lands after it (on both backends) */
static void test_mem(void) {
    enum { N = 1 << 22 }; /* big enough to be still running when the copy is asked for */
    pair x = MK(1.0, N), y = OUT(N);
    uint16_t *got = hown(malloc(N * 2)), *pat = hown(malloc(N * 2));
    float *pf = hown(malloc(N * 4)), *gf = hown(malloc(N * 4));
    op_scale_shift(gpu, y.d, x.d, 2.0f, -0.0f); /* + -0 keeps a -0 */
    CHECK(!op_mem_download(gpu, got, y.d.data, N * 2));
    int bad = 0;
    for (int i = 0; i < N; i++) /* twice a BF16 value is exact */
        bad += got[i] != f32_to_bf16(2.0f * ((const float *)x.h.data)[i]);
    EXPECT(bad == 0, "op_mem_download: %d of %d values not the op's output", bad, N);
    for (int i = 0; i < N; i++)
        pat[i] = (uint16_t)(tu_next(&rng) & 0x7f7f), pf[i] = (float)i;
    op_scale_shift(gpu, y.d, x.d, 2.0f, -0.0f);
    CHECK(!op_mem_upload(gpu, y.d.data, pat, N * 2));
    CHECK(!op_mem_download(gpu, got, y.d.data, N * 2));
    EXPECT(!memcmp(got, pat, N * 2), "op_mem_upload: the op's output overwrote the upload");
    CHECK(!op_mem_upload(cpu, y.h.data, pf, N * 4) && !op_mem_download(cpu, gf, y.h.data, N * 4));
    EXPECT(!memcmp(gf, pf, N * 4), "op_mem_upload / op_mem_download on the CPU");
}

static void free_run(void) {
    for (int i = 0; i < n_host; i++)
        free(host_owned[i]);
    for (int i = 0; i < n_dev; i++)
        gpu_free(dev_owned[i]);
    n_host = n_dev = 0;
}

int main(void) {
    if (op_ctx_create(TENSOR_CUDA, &gpu)) {
        printf("test_ops_cuda: skipped: %s\n", err_msg());
        return 77;
    }
    CHECK(!op_ctx_create(TENSOR_CPU, &cpu));
    for (pass = 0; pass < 2; pass++) {
        printf(pass ? "second run, compared bit for bit with the first\n"
                    : "CUDA against the CPU reference\n");
        rng.s = 20261122;
        n_results = 0;
        test_linear();
        test_elementwise();
        test_norms();
        test_rope();
        test_rmsnorm_heads();
        test_attention();
        test_conv();
        test_moves();
        test_timestep();
        test_mem();
        free_run();
    }
    for (int i = 0; i < n_results; i++)
        free(results[i]);
    op_ctx_free(gpu);
    op_ctx_free(cpu);
    return tu_finish("test_ops_cuda");
}
