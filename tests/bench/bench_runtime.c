/* bench_runtime: the CUDA backend's GEMMs and attention at FLUX and SD3.5 shapes, each beside
 * its ceiling measured in the same run:
 *   GEMM: op_linear (one fixed cuBLASLt algorithm per shape, bias and GELU fused as the model
 *         runs them) against the best of cuBLASLt's top 16 heuristic algorithms for the same
 *         problem and epilogue, each timed here;
 *   attention: op_attention's TFLOP/s (4 B H L^2 D per call); PyTorch's SDPA on the same GPU
 *         is measured by tools/device-check.sh next to this run and printed with it;
 *   memory-bound ops (the adaLN LayerNorm, gated residual, RoPE, q/k RMSNorm): GB/s of the
 *         bytes each call must read and write, against a 256 MiB device-to-device copy.
 * usage: bench_runtime [--quick] [--mem: the memory-bound ops only] */
#include <cublasLt.h>
#include <cudnn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/gpu.h"
#include "core/ops.h"

static int quick;

static struct CUevent_st *ev0, *ev1;

/* milliseconds per call of fn over iters calls, after 3 warm-up calls */
static double time_ms(void (*fn)(void *), void *arg, struct CUstream_st *s, int iters) {
    for (int i = 0; i < 3; i++)
        fn(arg);
    CHECK(!gpu_event_record(ev0, s));
    for (int i = 0; i < iters; i++)
        fn(arg);
    CHECK(!gpu_event_record(ev1, s));
    float ms;
    CHECK(!gpu_event_ms(ev0, ev1, &ms));
    return ms / iters;
}

static void *dev_random(size_t n) {
    uint16_t *h = malloc(n * 2);
    uint64_t x = 88172645463325252ull ^ n;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        /* uniform in about [-1, 1) as BF16: sign, exponent 126 or 125, random mantissa */
        h[i] =
            (uint16_t)(((x >> 20) & 0x8000) | ((125 + ((x >> 30) & 1)) << 7) | ((x >> 40) & 0x7F));
    }
    void *d;
    CHECK(!gpu_alloc(&d, n * 2));
    CHECK(!gpu_upload(d, h, n * 2));
    free(h);
    return d;
}

typedef struct gemm_args {
    op_ctx *c;
    tensor out, x, w, b;
    op_act act;
    /* the reference: cuBLASLt directly */
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t lw, lx, ld;
    const cublasLtMatmulAlgo_t *algo;
    void *ws;
    size_t ws_bytes;
} gemm_args;

static void run_op(void *p) {
    gemm_args *a = p;
    op_linear(a->c, a->out, a->x, a->w, &a->b, a->act);
}

static void run_ref(void *p) {
    gemm_args *a = p;
    const float one = 1, zero = 0;
    cublasLtMatmul(a->lt, a->op, &one, a->w.data, a->lw, a->x.data, a->lx, &zero, a->out.data,
                   a->ld, a->out.data, a->ld, a->algo, a->ws, a->ws_bytes, op_ctx_stream(a->c));
}

static void bench_gemm(op_ctx *c, const char *what, int64_t M, int64_t K, int64_t N, op_act act) {
    gemm_args a = {.c = c, .act = act};
    void *x = dev_random((size_t)(M * K)), *w = dev_random((size_t)(N * K));
    void *b = dev_random((size_t)N), *o;
    CHECK(!gpu_alloc(&o, (size_t)(M * N) * 2));
    a.x = tensor_2d(x, DTYPE_BF16, TENSOR_CUDA, M, K);
    a.w = tensor_2d(w, DTYPE_BF16, TENSOR_CUDA, N, K);
    a.b = tensor_2d(b, DTYPE_BF16, TENSOR_CUDA, 1, N);
    a.b = tensor_reshape(a.b, 1, (int64_t[]){N});
    a.out = tensor_2d(o, DTYPE_BF16, TENSOR_CUDA, M, N);
    const int iters = quick ? 5 : 20;
    const double flop = 2.0 * M * K * N;
    double ms = time_ms(run_op, &a, op_ctx_stream(c), iters);

    /* cuBLASLt's top 16 for the same problem, each timed */
    CHECK(cublasLtCreate(&a.lt) == CUBLAS_STATUS_SUCCESS);
    a.ws_bytes = 32u << 20;
    CHECK(!gpu_alloc(&a.ws, a.ws_bytes));
    CHECK(cublasLtMatmulDescCreate(&a.op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi =
        act == OP_ACT_GELU_TANH ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t bt = CUDA_R_16BF;
    cublasLtMatmulDescSetAttribute(a.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(a.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    cublasLtMatmulDescSetAttribute(a.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    cublasLtMatmulDescSetAttribute(a.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt);
    cublasLtMatmulDescSetAttribute(a.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b);
    cublasLtMatrixLayoutCreate(&a.lw, CUDA_R_16BF, (uint64_t)K, (uint64_t)N, K);
    cublasLtMatrixLayoutCreate(&a.lx, CUDA_R_16BF, (uint64_t)K, (uint64_t)M, K);
    cublasLtMatrixLayoutCreate(&a.ld, CUDA_R_16BF, (uint64_t)N, (uint64_t)M, N);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    uint64_t wsb = a.ws_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                         sizeof wsb);
    cublasLtMatmulHeuristicResult_t r[16];
    int found = 0;
    cublasLtMatmulAlgoGetHeuristic(a.lt, a.op, a.lw, a.lx, a.ld, a.ld, pref, 16, r, &found);
    double best = 1e30;
    for (int i = 0; i < found; i++) {
        a.algo = &r[i].algo;
        double t = time_ms(run_ref, &a, op_ctx_stream(c), iters);
        if (t < best) best = t;
    }
    printf("%-26s %5lld x %5lld -> %5lld  %7.3f ms %6.0f TFLOP/s   best of %2d: %6.0f TFLOP/s  "
           "%5.1f %%\n",
           what, (long long)M, (long long)K, (long long)N, ms, flop / ms / 1e9, found,
           flop / best / 1e9, 100.0 * best / ms);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(a.lw);
    cublasLtMatrixLayoutDestroy(a.lx);
    cublasLtMatrixLayoutDestroy(a.ld);
    cublasLtMatmulDescDestroy(a.op);
    cublasLtDestroy(a.lt);
    gpu_free(a.ws);
    gpu_free(x), gpu_free(w), gpu_free(b), gpu_free(o);
}

typedef struct attn_args {
    op_ctx *c;
    tensor out, q, k, v;
    float scale;
} attn_args;

static void run_attn(void *p) {
    attn_args *a = p;
    op_attention(a->c, a->out, a->q, a->k, a->v, NULL, a->scale, 0);
}

/* q, k, v as chunks of one fused [B, L, 3 H D] projection, as the models produce them */
static void bench_attention(op_ctx *c, const char *what, int64_t B, int64_t H, int64_t L,
                            int64_t D) {
    void *qkv = dev_random((size_t)(B * L * 3 * H * D)), *o;
    CHECK(!gpu_alloc(&o, (size_t)(B * L * H * D) * 2));
    attn_args a = {.c = c, .scale = 1.0f / sqrtf((float)D)};
    tensor f = tensor_4d(qkv, DTYPE_BF16, TENSOR_CUDA, B, L, 3 * H, D);
    a.q = tensor_slice(f, 2, 0, H);
    a.k = tensor_slice(f, 2, H, H);
    a.v = tensor_slice(f, 2, 2 * H, H);
    a.out = tensor_4d(o, DTYPE_BF16, TENSOR_CUDA, B, L, H, D);
    double ms = time_ms(run_attn, &a, op_ctx_stream(c), quick ? 3 : 10);
    double flop = 4.0 * B * H * L * L * D;
    printf("%-26s %lldx%lldx%lldx%lld  %7.3f ms %6.0f TFLOP/s\n", what, (long long)B, (long long)H,
           (long long)L, (long long)D, ms, flop / ms / 1e9);
    gpu_free(qkv), gpu_free(o);
}

/* The memory-bound ops at FLUX.1 1024^2 shapes (4096 image + 512 text tokens, D = 3072, 24
 * heads of 128). Each op cycles over MEM_SETS copies of its operands, more than the L2 holds
 * (50 MB on an H100), so every call reads DRAM as in the model's step. */
enum { MEM_SETS = 4, MEM_N = 4096, MEM_L = 4608, MEM_D = 3072, MEM_H = 24, MEM_HD = 128 };

typedef struct mem_args {
    op_ctx *c;
    int op, next; /* which op; the operand set of the next call */
    tensor x[MEM_SETS], y[MEM_SETS], mod, cos, sin, w;
} mem_args;

enum { MEM_COPY, MEM_LN_MOD, MEM_GATE, MEM_ROPE, MEM_RMS };

static void run_mem(void *p) {
    mem_args *a = p;
    const int k = a->next++ % MEM_SETS;
    /* the modulation chunks exist only for the ops that take them */
    tensor c0 = a->mod, c1 = a->mod;
    if (a->op == MEM_LN_MOD || a->op == MEM_GATE)
        c0 = tensor_slice(a->mod, 1, 0, MEM_D), c1 = tensor_slice(a->mod, 1, MEM_D, MEM_D);
    switch (a->op) {
    case MEM_COPY:
        CHECK(!gpu_copy(a->y[k].data, a->x[k].data, tensor_nbytes(&a->x[k]), op_ctx_stream(a->c)));
        break;
    case MEM_LN_MOD: op_layernorm_modulate(a->c, a->y[k], a->x[k], c0, c1, 1e-6f); break;
    case MEM_GATE: op_gate_residual(a->c, a->x[k], c0, a->y[k]); break;
    case MEM_ROPE: op_rope(a->c, a->x[k], a->cos, a->sin); break;
    default: op_rmsnorm(a->c, a->x[k], a->x[k], a->w, 1e-6f); break;
    }
}

/* times one op over the sets; bytes: what one call must read and write */
static double bench_mem(mem_args *a, const char *what, double bytes, double ceiling) {
    a->next = 0;
    const double ms = time_ms(run_mem, a, op_ctx_stream(a->c), quick ? 8 : 40);
    const double gbs = bytes / ms / 1e6;
    if (ceiling > 0)
        printf("%-44s %8.1f us %6.0f GB/s  %5.1f %% of copy\n", what, ms * 1e3, gbs,
               100.0 * gbs / ceiling);
    else
        printf("%-44s %8.1f us %6.0f GB/s\n", what, ms * 1e3, gbs);
    return gbs;
}

static void free_sets(mem_args *a) {
    for (int k = 0; k < MEM_SETS; k++) {
        gpu_free(a->x[k].data), gpu_free(a->y[k].data);
        a->x[k].data = a->y[k].data = NULL;
    }
}

static void bench_memory_bound(op_ctx *c) {
    mem_args a = {.c = c};
    const double act = (double)MEM_N * MEM_D * 2; /* one [1, 4096, 3072] BF16 activation */
    printf("\nmemory-bound ops, FLUX 1024^2 (GB/s: bytes read + written per call / time)\n");
    /* the ceiling: cudaMemcpy device to device, 256 MiB read and 256 MiB written */
    const int64_t cn = 128ll << 20; /* BF16 values in 256 MiB */
    for (int k = 0; k < 2; k++) {
        void *s, *d;
        CHECK(!gpu_alloc(&s, (size_t)cn * 2) && !gpu_alloc(&d, (size_t)cn * 2));
        CHECK(!gpu_memset(s, 0x3f, (size_t)cn * 2));
        a.x[k] = tensor_2d(s, DTYPE_BF16, TENSOR_CUDA, 1, cn);
        a.y[k] = tensor_2d(d, DTYPE_BF16, TENSOR_CUDA, 1, cn);
    }
    for (int k = 2; k < MEM_SETS; k++)
        a.x[k] = a.x[k - 2], a.y[k] = a.y[k - 2];
    a.op = MEM_COPY;
    const double copy = bench_mem(&a, "copy D2D 256 MiB (ceiling)", 2.0 * cn * 2, 0);
    for (int k = 0; k < 2; k++)
        gpu_free(a.x[k].data), gpu_free(a.y[k].data);
    memset(a.x, 0, sizeof a.x), memset(a.y, 0, sizeof a.y);

    a.mod = tensor_2d(dev_random(6 * MEM_D), DTYPE_BF16, TENSOR_CUDA, 1, 6 * MEM_D);
    for (int k = 0; k < MEM_SETS; k++) {
        a.x[k] =
            tensor_3d(dev_random((size_t)MEM_N * MEM_D), DTYPE_BF16, TENSOR_CUDA, 1, MEM_N, MEM_D);
        a.y[k] =
            tensor_3d(dev_random((size_t)MEM_N * MEM_D), DTYPE_BF16, TENSOR_CUDA, 1, MEM_N, MEM_D);
    }
    a.op = MEM_LN_MOD;
    bench_mem(&a, "layernorm_modulate [1,4096,3072]", 2 * act, copy);
    a.op = MEM_GATE;
    bench_mem(&a, "gate_residual [1,4096,3072]", 3 * act, copy);
    free_sets(&a);
    gpu_free(a.mod.data);

    /* q of the whole joint sequence as heads [1, L, H, D]; the tables hold angles' cos and sin,
     * each value twice, so repeated rotations keep q's scale */
    float *cs = malloc((size_t)MEM_L * MEM_HD * 4), *sn = malloc((size_t)MEM_L * MEM_HD * 4);
    for (int l = 0; l < MEM_L; l++)
        for (int m = 0; m < MEM_HD; m++) {
            const double th = l * pow(10000.0, -(double)(m / 2 * 2) / MEM_HD);
            cs[l * MEM_HD + m] = (float)cos(th), sn[l * MEM_HD + m] = (float)sin(th);
        }
    void *dcs, *dsn;
    CHECK(!gpu_alloc(&dcs, (size_t)MEM_L * MEM_HD * 4) &&
          !gpu_alloc(&dsn, (size_t)MEM_L * MEM_HD * 4));
    CHECK(!gpu_upload(dcs, cs, (size_t)MEM_L * MEM_HD * 4) &&
          !gpu_upload(dsn, sn, (size_t)MEM_L * MEM_HD * 4));
    free(cs), free(sn);
    a.cos = tensor_2d(dcs, DTYPE_F32, TENSOR_CUDA, MEM_L, MEM_HD);
    a.sin = tensor_2d(dsn, DTYPE_F32, TENSOR_CUDA, MEM_L, MEM_HD);
    for (int k = 0; k < MEM_SETS; k++)
        a.x[k] = tensor_4d(dev_random((size_t)MEM_L * MEM_D), DTYPE_BF16, TENSOR_CUDA, 1, MEM_L,
                           MEM_H, MEM_HD);
    a.op = MEM_ROPE;
    bench_mem(&a, "rope [1,4608,24,128] in place (+F32 tables)",
              2.0 * MEM_L * MEM_D * 2 + 2.0 * MEM_L * MEM_HD * 4, copy);
    free_sets(&a);
    gpu_free(dcs), gpu_free(dsn);

    /* the image stream's q as one row per head, normalised in place */
    a.w = tensor_2d(dev_random(MEM_HD), DTYPE_BF16, TENSOR_CUDA, 1, MEM_HD);
    a.w = tensor_reshape(a.w, 1, (int64_t[]){MEM_HD});
    for (int k = 0; k < MEM_SETS; k++)
        a.x[k] = tensor_2d(dev_random((size_t)MEM_N * MEM_D), DTYPE_BF16, TENSOR_CUDA,
                           (int64_t)MEM_N * MEM_H, MEM_HD);
    a.op = MEM_RMS;
    bench_mem(&a, "rmsnorm [4096*24,128] in place", 2 * act, copy);
    free_sets(&a);
    gpu_free(a.w.data);
}

int main(int argc, char **argv) {
    int mem_only = 0;
    for (int i = 1; i < argc; i++) {
        quick |= !strcmp(argv[i], "--quick");
        mem_only |= !strcmp(argv[i], "--mem");
    }
    op_ctx *c;
    if (op_ctx_create(TENSOR_CUDA, &c)) {
        printf("bench_runtime: skipped: %s\n", err_msg());
        return 0;
    }
    CHECK(!gpu_event_create(&ev0) && !gpu_event_create(&ev1));
    char name[256];
    int sms;
    size_t mem;
    CHECK(!gpu_device_info(name, sizeof name, &sms, &mem));
    printf("bench_runtime on %s (%d SMs), cuBLASLt %zu, cuDNN %zu\n", name, sms,
           cublasLtGetVersion(), cudnnGetVersion());
    if (!mem_only) {
        printf(
            "\nGEMM (bias fused; fc1 with GELU)     op_linear               cuBLASLt best of its "
            "top 16  best/ours\n");
        bench_gemm(c, "FLUX img qkv", 4096, 3072, 9216, OP_ACT_NONE);
        bench_gemm(c, "FLUX txt qkv", 512, 3072, 9216, OP_ACT_NONE);
        bench_gemm(c, "FLUX img out", 4096, 3072, 3072, OP_ACT_NONE);
        bench_gemm(c, "FLUX img fc1 +gelu", 4096, 3072, 12288, OP_ACT_GELU_TANH);
        bench_gemm(c, "FLUX img fc2", 4096, 12288, 3072, OP_ACT_NONE);
        bench_gemm(c, "FLUX single linear1", 4608, 3072, 21504, OP_ACT_NONE);
        bench_gemm(c, "FLUX single linear2", 4608, 15360, 3072, OP_ACT_NONE);
        bench_gemm(c, "SD3.5L qkv (B=2)", 8192, 2432, 7296, OP_ACT_NONE);
        bench_gemm(c, "SD3.5L fc1 +gelu (B=2)", 8192, 2432, 9728, OP_ACT_GELU_TANH);
        /* the per-block modulation GEMVs (M = 1): memory-bound, TFLOP/s x 1000 = GB/s of weight */
        bench_gemm(c, "FLUX double mod (GEMV)", 1, 3072, 18432, OP_ACT_NONE);
        bench_gemm(c, "FLUX single mod (GEMV)", 1, 3072, 9216, OP_ACT_NONE);
        printf("\nattention (no mask, fused qkv input): op_attention (cuDNN SDPA where it runs)\n");
        bench_attention(c, "FLUX 1024^2", 1, 24, 4608, 128);
        bench_attention(c, "SD3.5 Large 1024^2 CFG", 2, 38, 4429, 64);
        bench_attention(c, "VAE mid block 512^2", 1, 1, 4096, 512);
        /* the own kernel alone (read when a context is created) */
        op_ctx *own;
        setenv("DF11_ATTENTION", "own", 1);
        CHECK(!op_ctx_create(TENSOR_CUDA, &own));
        printf("attention, own kernel only\n");
        bench_attention(own, "FLUX 1024^2", 1, 24, 4608, 128);
        bench_attention(own, "SD3.5 Large 1024^2 CFG", 2, 38, 4429, 64);
        op_ctx_free(own);
    }
    bench_memory_bound(c);
    gpu_event_destroy(ev0);
    gpu_event_destroy(ev1);
    op_ctx_free(c);
    return 0;
}
