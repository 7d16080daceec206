/* bench_blocks: a stack of FLUX-sized random transformer blocks (19 double-stream, 38
 * single-stream, the FLUX.1 structure of docs/MODEL-SPEC.md §1.6-1.7) at 1024x1024 (4096 image +
 * 512 text tokens), one forward timed under each weight provider mode (weights/provider.h): (a)
 * BF16 resident, (b) DF11 resident decoded per block into two slots, (c) DF11 streamed from pinned
 * host memory with the whole run under a device-memory budget (default 10 GB). The ceiling is (a)
 * itself: (b) and (c) are reported as a fraction of it. Each mode's output is compared bit for bit
 * with (a)'s, and the device memory each run holds is printed. Random weights ~N(0, 0.02), norm
 * weights 1, encoded once per distinct block and shared. usage: bench_blocks [--budget-gb G]
 * [--double N] [--single N] [--iters N] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cuda/gpu.h"
#include "core/log.h"
#include "core/ops.h"
#include "df11/df11.h"
#include "tests/testutil.h"
#include "weights/provider.h"

enum { D = 3072, HEADS = 24, HD = 128, N_IMG = 4096, N_TXT = 512, L = N_IMG + N_TXT };

/* weight indexes of a double block */
enum {
    DB_MOD_W,
    DB_MOD_B,
    DB_CMOD_W,
    DB_CMOD_B,
    DB_Q_W,
    DB_K_W,
    DB_V_W,
    DB_Q_B,
    DB_K_B,
    DB_V_B,
    DB_NQ,
    DB_NK,
    DB_AQ_W,
    DB_AK_W,
    DB_AV_W,
    DB_AQ_B,
    DB_AK_B,
    DB_AV_B,
    DB_NAQ,
    DB_NAK,
    DB_OUT_W,
    DB_OUT_B,
    DB_AOUT_W,
    DB_AOUT_B,
    DB_FF1_W,
    DB_FF1_B,
    DB_FF2_W,
    DB_FF2_B,
    DB_CFF1_W,
    DB_CFF1_B,
    DB_CFF2_W,
    DB_CFF2_B,
    DB_N
};
/* weight indexes of a single block */
enum {
    SB_MOD_W,
    SB_MOD_B,
    SB_Q_W,
    SB_K_W,
    SB_V_W,
    SB_Q_B,
    SB_K_B,
    SB_V_B,
    SB_NQ,
    SB_NK,
    SB_MLP_W,
    SB_MLP_B,
    SB_OUT_W,
    SB_OUT_B,
    SB_N
};

static void set_shape(wp_src *s, int64_t a, int64_t b) {
    s->ndim = b ? 2 : 1;
    s->shape[0] = a, s->shape[1] = b;
}

static void double_shapes(wp_src *w) {
    set_shape(&w[DB_MOD_W], 6 * D, D), set_shape(&w[DB_MOD_B], 6 * D, 0);
    set_shape(&w[DB_CMOD_W], 6 * D, D), set_shape(&w[DB_CMOD_B], 6 * D, 0);
    for (int i = 0; i < 3; i++) {
        set_shape(&w[DB_Q_W + i], D, D), set_shape(&w[DB_Q_B + i], D, 0);
        set_shape(&w[DB_AQ_W + i], D, D), set_shape(&w[DB_AQ_B + i], D, 0);
    }
    set_shape(&w[DB_NQ], HD, 0), set_shape(&w[DB_NK], HD, 0);
    set_shape(&w[DB_NAQ], HD, 0), set_shape(&w[DB_NAK], HD, 0);
    set_shape(&w[DB_OUT_W], D, D), set_shape(&w[DB_OUT_B], D, 0);
    set_shape(&w[DB_AOUT_W], D, D), set_shape(&w[DB_AOUT_B], D, 0);
    set_shape(&w[DB_FF1_W], 4 * D, D), set_shape(&w[DB_FF1_B], 4 * D, 0);
    set_shape(&w[DB_FF2_W], D, 4 * D), set_shape(&w[DB_FF2_B], D, 0);
    set_shape(&w[DB_CFF1_W], 4 * D, D), set_shape(&w[DB_CFF1_B], 4 * D, 0);
    set_shape(&w[DB_CFF2_W], D, 4 * D), set_shape(&w[DB_CFF2_B], D, 0);
}

static void single_shapes(wp_src *w) {
    set_shape(&w[SB_MOD_W], 3 * D, D), set_shape(&w[SB_MOD_B], 3 * D, 0);
    for (int i = 0; i < 3; i++)
        set_shape(&w[SB_Q_W + i], D, D), set_shape(&w[SB_Q_B + i], D, 0);
    set_shape(&w[SB_NQ], HD, 0), set_shape(&w[SB_NK], HD, 0);
    set_shape(&w[SB_MLP_W], 4 * D, D), set_shape(&w[SB_MLP_B], 4 * D, 0);
    set_shape(&w[SB_OUT_W], D, 5 * D), set_shape(&w[SB_OUT_B], D, 0);
}

/* random values for one block's weights (norm weights 1), and their DF11 blobs */
static void fill(wp_src *w, int n, const int *norms, int n_norms, uint64_t seed) {
    tu_rng r = {seed};
    for (int j = 0; j < n; j++) {
        int64_t m = w[j].shape[0] * (w[j].ndim == 2 ? w[j].shape[1] : 1);
        uint16_t *v = malloc((size_t)m * 2);
        int is_norm = 0;
        for (int k = 0; k < n_norms; k++)
            is_norm |= norms[k] == j;
        /* fast normal-ish values: a sum of four uniforms, scaled */
        for (int64_t k = 0; k < m; k++) {
            uint64_t u = tu_next(&r);
            double z = ((double)(u & 0xFFFF) + (double)((u >> 16) & 0xFFFF) +
                        (double)((u >> 32) & 0xFFFF) + (double)(u >> 48)) /
                           65536.0 -
                       2.0;
            v[k] = is_norm ? 0x3F80 : tu_bf16((float)(0.02 * 1.732 * z));
        }
        uint8_t *blob;
        size_t len;
        CHECK(!df11_encode(v, (uint64_t)m, NULL, &blob, &len));
        w[j].bf16 = v, w[j].blob = blob, w[j].blob_len = len;
    }
}

typedef struct acts {
    tensor h, xn, q, k, v, o, y, ff, cat, s, mod, cmod, cos, sin;
} acts;

static tensor sl(tensor t, int64_t start, int64_t len) { return tensor_slice(t, 1, start, len); }
static tensor vec(tensor mod, int i) { return tensor_slice(mod, 1, i * D, D); }
static tensor as_heads(tensor t) { /* [1, n, D] -> [1, n, H, 128] (tokens may be strided) */
    t.ndim = 4;
    t.shape[2] = HEADS, t.shape[3] = HD;
    t.stride[2] = HD, t.stride[3] = 1;
    return t;
}
static tensor rows_of_heads(tensor t) { /* contiguous [1, n, D] -> [n H, 128] */
    return tensor_reshape(t, 2, (int64_t[]){t.shape[1] * HEADS, HD});
}

/* one stream's half of a double block (image: rows T..L of the joint buffers, text: 0..T) */
static void qkv_half(op_ctx *c, acts *a, const tensor *w, int64_t r0, int64_t n, int qw, int nq,
                     const tensor *mod) {
    tensor xn = sl(a->xn, r0, n);
    op_layernorm_modulate(c, xn, sl(a->h, r0, n), vec(*mod, 0), vec(*mod, 1), 1e-6f);
    for (int i = 0; i < 3; i++) {
        tensor dst = sl(i == 0 ? a->q : i == 1 ? a->k : a->v, r0, n);
        op_linear(c, dst, xn, w[qw + i], &w[qw + 3 + i], OP_ACT_NONE);
    }
    tensor q = rows_of_heads(sl(a->q, r0, n)), k = rows_of_heads(sl(a->k, r0, n));
    op_rmsnorm(c, q, q, w[nq], 1e-6f);
    op_rmsnorm(c, k, k, w[nq + 1], 1e-6f);
}

static void out_half(op_ctx *c, acts *a, const tensor *w, int64_t r0, int64_t n, int ow, int f1,
                     const tensor *mod) {
    tensor x = sl(a->h, r0, n), y = sl(a->y, r0, n), xn = sl(a->xn, r0, n);
    tensor ff = sl(a->ff, r0, n);
    op_linear(c, y, sl(a->o, r0, n), w[ow], &w[ow + 1], OP_ACT_NONE);
    op_gate_residual(c, x, vec(*mod, 2), y);
    op_layernorm_modulate(c, xn, x, vec(*mod, 3), vec(*mod, 4), 1e-6f);
    op_linear(c, ff, xn, w[f1], &w[f1 + 1], OP_ACT_GELU_TANH);
    op_linear(c, y, ff, w[f1 + 2], &w[f1 + 3], OP_ACT_NONE);
    op_gate_residual(c, x, vec(*mod, 5), y);
}

static void attention(op_ctx *c, acts *a, tensor out) {
    op_rope(c, as_heads(a->q), a->cos, a->sin);
    op_rope(c, as_heads(a->k), a->cos, a->sin);
    op_attention(c, out, as_heads(a->q), as_heads(a->k), as_heads(a->v), NULL,
                 1.0f / sqrtf((float)HD), 0);
}

static void double_block(op_ctx *c, acts *a, const tensor *w) {
    op_linear(c, a->mod, a->s, w[DB_MOD_W], &w[DB_MOD_B], OP_ACT_NONE);
    op_linear(c, a->cmod, a->s, w[DB_CMOD_W], &w[DB_CMOD_B], OP_ACT_NONE);
    qkv_half(c, a, w, N_TXT, N_IMG, DB_Q_W, DB_NQ, &a->mod);
    qkv_half(c, a, w, 0, N_TXT, DB_AQ_W, DB_NAQ, &a->cmod);
    attention(c, a, as_heads(a->o));
    out_half(c, a, w, N_TXT, N_IMG, DB_OUT_W, DB_FF1_W, &a->mod);
    out_half(c, a, w, 0, N_TXT, DB_AOUT_W, DB_CFF1_W, &a->cmod);
}

static void single_block(op_ctx *c, acts *a, const tensor *w) {
    tensor mod = tensor_slice(a->mod, 1, 0, 3 * D);
    op_linear(c, mod, a->s, w[SB_MOD_W], &w[SB_MOD_B], OP_ACT_NONE);
    op_layernorm_modulate(c, a->xn, a->h, vec(mod, 0), vec(mod, 1), 1e-6f);
    op_linear(c, a->q, a->xn, w[SB_Q_W], &w[SB_Q_B], OP_ACT_NONE);
    op_linear(c, a->k, a->xn, w[SB_K_W], &w[SB_K_B], OP_ACT_NONE);
    op_linear(c, a->v, a->xn, w[SB_V_W], &w[SB_V_B], OP_ACT_NONE);
    /* cat = [attention | gelu(mlp)], the input of proj_out */
    op_linear(c, tensor_slice(a->cat, 2, D, 4 * D), a->xn, w[SB_MLP_W], &w[SB_MLP_B],
              OP_ACT_GELU_TANH);
    tensor q = rows_of_heads(a->q), k = rows_of_heads(a->k);
    op_rmsnorm(c, q, q, w[SB_NQ], 1e-6f);
    op_rmsnorm(c, k, k, w[SB_NK], 1e-6f);
    attention(c, a, as_heads(tensor_slice(a->cat, 2, 0, D)));
    op_linear(c, a->y, a->cat, w[SB_OUT_W], &w[SB_OUT_B], OP_ACT_NONE);
    op_gate_residual(c, a->h, vec(mod, 2), a->y);
}

static int n_double = 19, n_single = 38;

static void forward(op_ctx *c, acts *a, weight_provider *p) {
    tensor w[DB_N];
    for (int i = 0; i < n_double + n_single; i++) {
        wp_acquire(p, i, w);
        if (i < n_double)
            double_block(c, a, w);
        else
            single_block(c, a, w);
        wp_release(p, i);
    }
}

static void *dalloc(size_t bytes, size_t *total) {
    void *p;
    CHECK(!gpu_alloc(&p, bytes));
    *total += bytes;
    return p;
}

/* the activations, all allocated here, once (the memory plan of this stack) */
static size_t make_acts(acts *a) {
    size_t t = 0;
    const int64_t sh[3] = {1, L, D};
    a->h = tensor_make(dalloc((size_t)L * D * 2, &t), DTYPE_BF16, TENSOR_CUDA, 3, sh);
    tensor *ld[] = {&a->xn, &a->q, &a->k, &a->v, &a->o, &a->y};
    for (int i = 0; i < 6; i++)
        *ld[i] = tensor_make(dalloc((size_t)L * D * 2, &t), DTYPE_BF16, TENSOR_CUDA, 3, sh);
    a->ff = tensor_3d(dalloc((size_t)L * 4 * D * 2, &t), DTYPE_BF16, TENSOR_CUDA, 1, L, 4 * D);
    a->cat = tensor_3d(dalloc((size_t)L * 5 * D * 2, &t), DTYPE_BF16, TENSOR_CUDA, 1, L, 5 * D);
    a->s = tensor_2d(dalloc(D * 2, &t), DTYPE_BF16, TENSOR_CUDA, 1, D);
    a->mod = tensor_2d(dalloc(6 * D * 2, &t), DTYPE_BF16, TENSOR_CUDA, 1, 6 * D);
    a->cmod = tensor_2d(dalloc(6 * D * 2, &t), DTYPE_BF16, TENSOR_CUDA, 1, 6 * D);
    a->cos = tensor_2d(dalloc((size_t)L * HD * 4, &t), DTYPE_F32, TENSOR_CUDA, L, HD);
    a->sin = tensor_2d(dalloc((size_t)L * HD * 4, &t), DTYPE_F32, TENSOR_CUDA, L, HD);
    /* inputs: random h and temb, RoPE tables of FLUX's layout (axis 0 text, 1-2 the grid) */
    tu_rng r = {5};
    uint16_t *hb = malloc((size_t)L * D * 2);
    for (int64_t i = 0; i < (int64_t)L * D; i++)
        hb[i] = tu_bf16((float)tu_normal(&r));
    CHECK(!gpu_upload(a->s.data, hb, D * 2));
    float *cs = malloc((size_t)L * HD * 4), *sn = malloc((size_t)L * HD * 4);
    for (int l = 0; l < L; l++)
        for (int m = 0; m < HD / 2; m++) {
            double pos = l < N_TXT ? 0 : m < 8 ? 0 : m < 36 ? (l - N_TXT) / 64 : (l - N_TXT) % 64;
            double w = pow(10000.0, -(double)(2 * (m < 8    ? m
                                                   : m < 36 ? m - 8
                                                            : m - 36)) /
                                        (m < 8 ? 16.0 : 56.0));
            cs[l * HD + 2 * m] = cs[l * HD + 2 * m + 1] = (float)cos(pos * w);
            sn[l * HD + 2 * m] = sn[l * HD + 2 * m + 1] = (float)sin(pos * w);
        }
    CHECK(!gpu_upload(a->cos.data, cs, (size_t)L * HD * 4));
    CHECK(!gpu_upload(a->sin.data, sn, (size_t)L * HD * 4));
    free(cs), free(sn), free(hb);
    return t;
}

static void reset_h(acts *a) {
    tu_rng r = {9};
    uint16_t *hb = malloc((size_t)L * D * 2);
    for (int64_t i = 0; i < (int64_t)L * D; i++)
        hb[i] = tu_bf16((float)tu_normal(&r));
    CHECK(!gpu_upload(a->h.data, hb, (size_t)L * D * 2));
    free(hb);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    double budget_gb = 10;
    int iters = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--budget-gb"))
            budget_gb = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--double"))
            n_double = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--single"))
            n_single = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters"))
            iters = atoi(argv[i + 1]);
    }
    op_ctx *c;
    if (op_ctx_create(TENSOR_CUDA, &c)) {
        printf("bench_blocks: skipped: %s\n", err_msg());
        return 0;
    }
    double t0 = now();
    static wp_src dw[DB_N], sw[SB_N];
    double_shapes(dw);
    single_shapes(sw);
    fill(dw, DB_N, (int[]){DB_NQ, DB_NK, DB_NAQ, DB_NAK}, 4, 1);
    fill(sw, SB_N, (int[]){SB_NQ, SB_NK}, 2, 2);
    const int nb = n_double + n_single;
    wp_block *blocks = calloc((size_t)nb, sizeof *blocks);
    for (int i = 0; i < nb; i++)
        blocks[i] = i < n_double ? (wp_block){DB_N, dw} : (wp_block){SB_N, sw};
    printf("bench_blocks: %d double + %d single FLUX blocks, %d tokens (%d image + %d text); "
           "weights made and encoded in %.1f s\n",
           n_double, n_single, L, N_IMG, N_TXT, now() - t0);
    acts a;
    size_t free0, total;
    CHECK(!gpu_mem_info(&free0, &total));
    size_t act_bytes = make_acts(&a);
    LOG_INFO("memory plan: activations %.2f GiB (joint stream, q, k, v, attention, MLP, "
             "concatenation)",
             act_bytes / 1073741824.0);
    const size_t budget = (size_t)(budget_gb * 1e9);
    size_t stack0;
    CHECK(!gpu_mem_info(&stack0, &total));
    struct {
        const char *what;
        wp_config cfg;
    } modes[] = {
        {"(a) BF16 resident", {WP_RESIDENT, 0}},
        {"(b) DF11, two slots", {WP_DF11, 0}},
        {"(c) DF11 streamed", {WP_STREAM, 0}},
    };
    /* (c): the weights get what the budget leaves after everything else this run holds */
    modes[2].cfg.budget =
        budget > free0 - stack0 + (64u << 20) ? budget - (free0 - stack0) - (64u << 20) : 0;
    double ms_a = 0;
    uint16_t *ref = malloc((size_t)L * D * 2), *got = malloc((size_t)L * D * 2);
    printf("\nmode                      ms/forward   vs (a)  device GiB (all)  weights GiB  "
           "streamed  same bits as (a)\n");
    for (int m = 0; m < 3; m++) {
        weight_provider *p;
        if (wp_create(&modes[m].cfg, blocks, nb, op_ctx_stream(c), &p)) {
            printf("%-26s failed: %s\n", modes[m].what, err_msg());
            continue;
        }
        size_t free1;
        CHECK(!gpu_mem_info(&free1, &total));
        reset_h(&a);
        forward(c, &a, p);
        CHECK(!op_ctx_sync(c));
        CHECK(!gpu_download(m ? got : ref, a.h.data, (size_t)L * D * 2));
        struct CUevent_st *e0, *e1;
        CHECK(!gpu_event_create(&e0) && !gpu_event_create(&e1));
        CHECK(!gpu_event_record(e0, op_ctx_stream(c)));
        for (int it = 0; it < iters; it++)
            forward(c, &a, p);
        CHECK(!gpu_event_record(e1, op_ctx_stream(c)));
        float ms;
        CHECK(!gpu_event_ms(e0, e1, &ms));
        ms /= (float)iters;
        if (m == 0) ms_a = ms;
        printf("%-26s %10.1f  %6.3fx  %16.2f  %11.2f  %8d  %s\n", modes[m].what, ms, ms / ms_a,
               (free0 - free1) / 1073741824.0, wp_device_bytes(p) / 1073741824.0,
               wp_streamed_blocks(p),
               m == 0                                ? "-"
               : memcmp(got, ref, (size_t)L * D * 2) ? "NO"
                                                     : "yes");
        gpu_event_destroy(e0), gpu_event_destroy(e1);
        wp_free(p);
    }
    printf("(c)'s budget: %.1f GB for everything (weights %.2f GiB of it)\n", budget_gb,
           modes[2].cfg.budget / 1073741824.0);
    op_ctx_free(c);
    return 0;
}
