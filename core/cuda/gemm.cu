/* gemm: op_linear through cuBLASLt. out[M,N] = act(x[M,K] w[N,K]^T + bias) in row-major terms
 * is, column-major, D[N,M] = (W^T)^T X with W stored as K x N (ld K), X as K x M (ld = x's row
 * stride) and D with ld = out's row stride. Bias and GELU(tanh) run fused in cuBLASLt's
 * epilogue; SiLU, quick-GELU and erf-GELU have no epilogue there and run as a second pass over
 * the BF16 output. A batch of matrices (x and out [B,n,.] whose rows do not collapse) is one
 * strided-batched matmul, the weight and the bias shared (batch stride 0).
 *
 * Exactness (docs/ARCHITECTURE.md): each shape gets one algorithm, cuBLASLt's first heuristic
 * choice, chosen once and kept in a cache. The heuristic is asked with fixed 16-byte alignment
 * preferences, so the choice depends on the shape alone, never on where a buffer happens to
 * lie: resident, decoded and streamed weights run the same algorithm and give the same bits.
 * Split-K reductions, when chosen, go through the workspace in a fixed order, not atomics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/common.cuh"

#define ALIGN_BYTES 16u

struct gemm_key {
    int64_t M, N, K, ldx, ldo;
    int64_t nb, bsx, bso; /* a batch of nb: x and out advance bsx, bso elements, w stays */
    int bias;
    cublasLtEpilogue_t epi;
};

struct gemm_entry {
    gemm_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t lw, lx, ld;
    cublasLtMatmulAlgo_t algo;
};

struct gemm_cache {
    int n, cap;
    gemm_entry *e;
};

static void lt_ok(cublasStatus_t s, const char *what, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    char msg[48];
    snprintf(msg, sizeof msg, "cublasStatus_t %d", (int)s); /* the string is in libcublas */
    opcu_die(__FILE__, line, what, msg);
}
#define LT_OK(call) lt_ok((call), #call, __LINE__)

void gemm_cache_free(struct gemm_cache *g) {
    if (!g) return;
    for (int i = 0; i < g->n; i++) {
        gemm_entry *e = &g->e[i];
        cublasLtMatmulDescDestroy(e->op);
        cublasLtMatrixLayoutDestroy(e->lw);
        cublasLtMatrixLayoutDestroy(e->lx);
        cublasLtMatrixLayoutDestroy(e->ld);
    }
    free(g->e);
    free(g);
}

/* The descriptors of one GEMM shape. */
static void describe(const gemm_key *k, gemm_entry *e) {
    e->key = *k;
    LT_OK(cublasLtMatmulDescCreate(&e->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LT_OK(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_OK(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    LT_OK(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &k->epi,
                                         sizeof k->epi));
    if (k->bias) {
        cudaDataType_t bt = CUDA_R_16BF;
        LT_OK(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
                                             sizeof bt));
    }
    LT_OK(cublasLtMatrixLayoutCreate(&e->lw, CUDA_R_16BF, (uint64_t)k->K, (uint64_t)k->N, k->K));
    LT_OK(cublasLtMatrixLayoutCreate(&e->lx, CUDA_R_16BF, (uint64_t)k->K, (uint64_t)k->M, k->ldx));
    LT_OK(cublasLtMatrixLayoutCreate(&e->ld, CUDA_R_16BF, (uint64_t)k->N, (uint64_t)k->M, k->ldo));
    if (k->nb > 1) {
        const int32_t nb = (int32_t)k->nb;
        const int64_t strides[3] = {0, k->bsx, k->bso}; /* the weight is every batch's */
        const cublasLtMatrixLayout_t ls[3] = {e->lw, e->lx, e->ld};
        for (int i = 0; i < 3; i++) {
            LT_OK(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &nb,
                                                   sizeof nb));
            LT_OK(cublasLtMatrixLayoutSetAttribute(
                ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i], sizeof strides[i]));
        }
        /* the bias is every batch's too (CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE 0, its default) */
    }
}

/* The cached plan for a shape, made on first use. */
static gemm_entry *plan_for(opcu_state *s, const gemm_key *k) {
    if (!s->gemm) {
        s->gemm = (gemm_cache *)calloc(1, sizeof *s->gemm);
        CHECK(s->gemm);
    }
    gemm_cache *g = s->gemm;
    for (int i = 0; i < g->n; i++)
        if (!memcmp(&g->e[i].key, k, sizeof *k)) return &g->e[i];
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 16;
        g->e = (gemm_entry *)realloc(g->e, (size_t)g->cap * sizeof *g->e);
        CHECK(g->e);
    }
    gemm_entry *e = &g->e[g->n];
    memset(e, 0, sizeof *e);
    describe(k, e);
    cublasLtMatmulPreference_t pref;
    LT_OK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = s->ws_bytes;
    uint32_t al = ALIGN_BYTES;
    LT_OK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                               sizeof ws));
    const cublasLtMatmulPreferenceAttributes_t aligns[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++)
        LT_OK(cublasLtMatmulPreferenceSetAttribute(pref, aligns[i], &al, sizeof al));
    cublasLtMatmulHeuristicResult_t r;
    int found = 0;
    LT_OK(cublasLtMatmulAlgoGetHeuristic(s->lt, e->op, e->lw, e->lx, e->ld, e->ld, pref, 1, &r,
                                         &found));
    cublasLtMatmulPreferenceDestroy(pref);
    if (found < 1) opcu_die(__FILE__, __LINE__, "cublasLtMatmulAlgoGetHeuristic", "no algorithm");
    e->algo = r.algo;
    g->n++;
    return e;
}

extern "C" void opcu_linear(op_ctx *c, tensor out, tensor x, tensor w, const tensor *bias,
                            op_act act) {
    /* a batch of matrices (ops.c lets only 3-d x and out whose rows do not collapse here) */
    int64_t nb = 1, bsx = 0, bso = 0;
    if (x.ndim == 3 && (x.stride[0] != x.shape[1] * x.stride[1] ||
                        out.stride[0] != out.shape[1] * out.stride[1]) &&
        x.shape[0] > 1 && x.shape[1] > 1) {
        nb = x.shape[0], bsx = x.stride[0], bso = out.stride[0];
        x = tensor_slice(x, 0, 0, 1), out = tensor_slice(out, 0, 0, 1);
        CHECK(bsx % 8 == 0 && bso % 8 == 0);
    }
    int64_t ldx, ldo, M = tensor_rows(&x, &ldx);
    tensor_rows(&out, &ldo);
    const int64_t K = x.shape[x.ndim - 1], N = w.shape[0];
    if (M == 0 || N == 0) return;
    CHECK(K > 0);
    /* the alignment every plan was chosen for */
    CHECK((uintptr_t)x.data % ALIGN_BYTES == 0 && (uintptr_t)w.data % ALIGN_BYTES == 0 &&
          (uintptr_t)out.data % ALIGN_BYTES == 0 && K % 8 == 0 && N % 8 == 0 &&
          (M == 1 || (ldx % 8 == 0 && ldo % 8 == 0)));
    if (M == 1) ldx = K, ldo = N;
    CHECK(!bias || (uintptr_t)bias->data % ALIGN_BYTES == 0);
    gemm_key k;
    memset(&k, 0, sizeof k); /* the key is compared bytewise */
    k.M = M, k.N = N, k.K = K, k.ldx = ldx, k.ldo = ldo, k.bias = bias != NULL;
    k.nb = nb, k.bsx = bsx, k.bso = bso;
    const int fused_gelu = act == OP_ACT_GELU_TANH;
    k.epi = bias ? (fused_gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                 : (fused_gelu ? CUBLASLT_EPILOGUE_GELU : CUBLASLT_EPILOGUE_DEFAULT);
    opcu_state *s = c->cu;
    gemm_entry *e = plan_for(s, &k);
    if (bias) {
        const void *bp = bias->data;
        LT_OK(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp,
                                             sizeof bp));
    }
    const float one = 1.0f, zero = 0.0f;
    LT_OK(cublasLtMatmul(s->lt, e->op, &one, w.data, e->lw, x.data, e->lx, &zero, out.data, e->ld,
                         out.data, e->ld, &e->algo, s->ws, s->ws_bytes, s->stream));
    if (act != OP_ACT_NONE && !fused_gelu) {
        CHECK(nb == 1);
        opcu_act_apply(c, out, out, act);
    }
}
