/* norm.cu: LayerNorm (plain, and with the adaLN modulation), RMSNorm, GroupNorm (+SiLU) and the
 * row softmax on BF16 activations, statistics in fp32 (ops.h; the CPU reference is
 * ops_cpu.c). A row is one block (one warp for RMSNorm rows of up to 1024, the q/k heads); each
 * thread keeps its NORM_VPT values of the row in registers from the load to the write, so a row
 * is read once and RMSNorm may write in place. Every sum goes through warp_sum/block_sum in a
 * fixed order, so the same input gives the same bits. A GroupNorm group can hold 16M values:
 * blocks of GN_CHUNK values each store their (mean, M2), a second kernel merges a group's
 * chunks by Chan's formula in a fixed order, and a third normalises. */
#include "core/cuda/common.cuh"

#define NORM_VPT 8  /* row values a thread keeps: rows of up to 8192 in one block */
#define RMS_WARPS 8 /* rows per block of the warp-per-row RMSNorm */
#define GN_THREADS 256
#define GN_VPT 16                      /* values a thread keeps in the statistics pass */
#define GN_CHUNK (GN_THREADS * GN_VPT) /* values of one partial statistic */
#define GN_APPLY 4                     /* values a thread normalises, about */

/* Threads of a block that holds a row of n values, NORM_VPT to a thread. */
static int row_threads(int64_t n) {
    int64_t t = (n + NORM_VPT - 1) / NORM_VPT;
    t = (t + 31) / 32 * 32;
    CHECK(t <= 1024);
    return t < 32 ? 32 : (int)t;
}

/* The thread's values t, t + T, t + 2T, ... of a row of n (0 past the end). */
static __device__ __forceinline__ void row_load(const bf16 *xr, int n, float v[NORM_VPT]) {
#pragma unroll
    for (int k = 0; k < NORM_VPT; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        v[k] = i < n ? bf2f(xr[i]) : 0.0f;
    }
}

/* Mean and 1/sqrt(var + eps) of the row the block holds: the mean first, then the biased
 * variance of x - mean (two passes over registers; torch.nn.LayerNorm's fp32 statistics). */
static __device__ __forceinline__ float2 row_moments(const float v[NORM_VPT], int n, float eps,
                                                     float *sh) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < NORM_VPT; k++)
        s += v[k];
    const float mu = block_sum(s, sh) / (float)n;
    float q = 0.0f;
#pragma unroll
    for (int k = 0; k < NORM_VPT; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        const float d = v[k] - mu;
        if (i < n) q += d * d;
    }
    return make_float2(mu, rsqrtf(block_sum(q, sh) / (float)n + eps));
}

/* One block per row of C. Plain LayerNorm (optional affine w, b, one rounding), or with MOD the
 * adaLN modulation, where the row's batch picks the shift and scale rows and the eager bf16
 * reference rounds LN(x), 1 + scale, the product and the sum. */
template <bool MOD>
static __global__ void layernorm_kernel(bf16 *out, const bf16 *x, int64_t xs, const bf16 *w,
                                        const bf16 *b, const bf16 *shift, int64_t shs,
                                        const bf16 *scale, int64_t scs, int64_t N, int C,
                                        float eps) {
    __shared__ float sh[32];
    const int64_t r = blockIdx.x;
    float v[NORM_VPT];
    row_load(x + r * xs, C, v);
    const float2 m = row_moments(v, C, eps, sh);
    bf16 *o = out + r * C;
    const bf16 *shr = MOD ? shift + r / N * shs : NULL, *scr = MOD ? scale + r / N * scs : NULL;
#pragma unroll
    for (int k = 0; k < NORM_VPT; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i >= C) continue;
        const float y = (v[k] - m.x) * m.y;
        if (MOD)
            o[i] = f2bf(rbf(rbf(y) * rbf(1.0f + bf2f(scr[i]))) + bf2f(shr[i]));
        else
            o[i] = f2bf(y * (w ? bf2f(w[i]) : 1.0f) + (b ? bf2f(b[i]) : 0.0f));
    }
}

/* One warp per row of D <= 32 VPL, RMS_WARPS rows to a block; lane l holds l, l + 32, ... */
template <int VPL>
static __global__ void rmsnorm_warp_kernel(bf16 *out, int64_t os, const bf16 *x, int64_t xs,
                                           const bf16 *w, int64_t rows, int D, float eps,
                                           int twice) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * RMS_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return; /* a whole warp: the shuffles below see all 32 lanes */
    const bf16 *xr = x + r * xs;
    float v[VPL], ss = 0.0f;
#pragma unroll
    for (int k = 0; k < VPL; k++) {
        const int i = lane + 32 * k;
        v[k] = i < D ? bf2f(xr[i]) : 0.0f;
        ss += v[k] * v[k];
    }
    /* the whole row is in registers before the first write: out may be x */
    const float rs = rsqrtf(warp_sum(ss) / (float)D + eps);
    bf16 *o = out + r * os;
#pragma unroll
    for (int k = 0; k < VPL; k++) {
        const int i = lane + 32 * k;
        if (i < D) o[i] = f2bf((twice ? rbf(v[k] * rs) : v[k] * rs) * bf2f(w[i]));
    }
}

/* One block per row of D (T5's 4096). */
static __global__ void rmsnorm_block_kernel(bf16 *out, int64_t os, const bf16 *x, int64_t xs,
                                            const bf16 *w, int D, float eps, int twice) {
    __shared__ float sh[32];
    const int64_t r = blockIdx.x;
    float v[NORM_VPT], ss = 0.0f;
    row_load(x + r * xs, D, v);
#pragma unroll
    for (int k = 0; k < NORM_VPT; k++)
        ss += v[k] * v[k];
    const float rs = rsqrtf(block_sum(ss, sh) / (float)D + eps);
    bf16 *o = out + r * os;
#pragma unroll
    for (int k = 0; k < NORM_VPT; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i < D) o[i] = f2bf((twice ? rbf(v[k] * rs) : v[k] * rs) * bf2f(w[i]));
    }
}

/* Block (k, g): chunk k of group g (a group's values are contiguous in [B,C,H,W]); stores the
 * chunk's mean and M2 (sum of squared deviations from that mean). */
static __global__ void groupnorm_partial_kernel(float2 *part, const bf16 *x, int64_t n) {
    __shared__ float sh[32];
    const int64_t g = blockIdx.y, start = (int64_t)blockIdx.x * GN_CHUNK;
    const int cnt = (int)(n - start < GN_CHUNK ? n - start : GN_CHUNK);
    const bf16 *xc = x + g * n + start;
    float v[GN_VPT], s = 0.0f;
#pragma unroll
    for (int k = 0; k < GN_VPT; k++) {
        const int i = threadIdx.x + k * GN_THREADS;
        v[k] = i < cnt ? bf2f(xc[i]) : 0.0f;
        s += v[k];
    }
    const float mean = block_sum(s, sh) / (float)cnt;
    float q = 0.0f;
#pragma unroll
    for (int k = 0; k < GN_VPT; k++) {
        const int i = threadIdx.x + k * GN_THREADS;
        const float d = v[k] - mean;
        if (i < cnt) q += d * d;
    }
    q = block_sum(q, sh);
    if (threadIdx.x == 0) part[g * gridDim.x + blockIdx.x] = make_float2(mean, q);
}

/* (na, ma, m2a) += (nb, mb, m2b): Chan, Golub and LeVeque's pairwise update. */
static __device__ __forceinline__ void chan_merge(int64_t *na, float *ma, float *m2a, int64_t nb,
                                                  float mb, float m2b) {
    if (nb == 0) return;
    const int64_t n = *na + nb;
    const float d = mb - *ma, fb = (float)nb / (float)n;
    *ma += d * fb;
    *m2a += m2b + d * d * (float)*na * fb;
    *na = n;
}

/* One block per group: thread t merges chunks t, t + T, ... in order, then a fixed tree over
 * the threads; stores the group's mean and 1/sqrt(var + eps). */
static __global__ void groupnorm_stats_kernel(float2 *stats, const float2 *part, int64_t n,
                                              int nchunk, float eps) {
    __shared__ int64_t sn[GN_THREADS];
    __shared__ float smean[GN_THREADS], sm2[GN_THREADS];
    const int t = threadIdx.x;
    const float2 *pg = part + (int64_t)blockIdx.x * nchunk;
    int64_t cnt = 0;
    float mean = 0.0f, m2 = 0.0f;
    for (int k = t; k < nchunk; k += GN_THREADS) {
        const int64_t rest = n - (int64_t)k * GN_CHUNK;
        chan_merge(&cnt, &mean, &m2, rest < GN_CHUNK ? rest : GN_CHUNK, pg[k].x, pg[k].y);
    }
    sn[t] = cnt;
    smean[t] = mean;
    sm2[t] = m2;
    __syncthreads();
    for (int s = GN_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) chan_merge(&sn[t], &smean[t], &sm2[t], sn[t + s], smean[t + s], sm2[t + s]);
        __syncthreads();
    }
    if (t == 0) stats[blockIdx.x] = make_float2(smean[0], rsqrtf(sm2[0] / (float)n + eps));
}

/* Blocks (p, j): channel plane p = b C + c, its values j T + t, then on by gridDim.y T. */
static __global__ void groupnorm_apply_kernel(bf16 *out, const bf16 *x, const float2 *stats,
                                              const bf16 *w, const bf16 *b, int C, int cg,
                                              int64_t HW, int silu) {
    const int64_t p = blockIdx.x;
    const int ch = (int)(p % C);
    const float2 st = stats[p / cg]; /* group b groups + ch / cg */
    const float wc = bf2f(w[ch]), bc = bf2f(b[ch]);
    const bf16 *xp = x + p * HW;
    bf16 *op = out + p * HW;
    for (int64_t i = (int64_t)blockIdx.y * GN_THREADS + threadIdx.x; i < HW;
         i += (int64_t)gridDim.y * GN_THREADS) {
        const float y = (bf2f(xp[i]) - st.x) * st.y * wc + bc;
        /* torch rounds GroupNorm's output to bf16 before the SiLU */
        op[i] = f2bf(silu ? act_eval(rbf(y), OP_ACT_SILU) : y);
    }
}

/* One block per row of n: the max, the sum of exp(x - max), then the quotients; each pass
 * re-reads the row (any length), and every read of x ends at a barrier before the first
 * write, so out may be x. */
static __global__ void softmax_kernel(bf16 *out, const bf16 *x, int64_t n) {
    __shared__ float sh[32];
    const bf16 *xr = x + (int64_t)blockIdx.x * n;
    bf16 *o = out + (int64_t)blockIdx.x * n;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        mx = fmaxf(mx, bf2f(xr[i]));
    mx = block_max(mx, sh);
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        s += expf(bf2f(xr[i]) - mx);
    s = block_sum(s, sh);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        o[i] = f2bf(expf(bf2f(xr[i]) - mx) / s);
}

extern "C" {

/* torch.nn.LayerNorm(C, eps, elementwise_affine = w != NULL) */
void opcu_layernorm(op_ctx *c, tensor out, tensor x, const tensor *w, const tensor *b, float eps) {
    int64_t xs;
    const int64_t rows = tensor_rows(&x, &xs), C = x.shape[x.ndim - 1];
    if (rows == 0) return;
    layernorm_kernel<false><<<(unsigned)rows, row_threads(C), 0, opcu_st(c)>>>(
        mbf(out), cbf(x), xs, w ? cbf(*w) : NULL, b ? cbf(*b) : NULL, NULL, 0, NULL, 0, 1, (int)C,
        eps);
    CU_LAUNCHED(c);
}

/* diffusers AdaLayerNormZero / FluxTransformerBlock: norm(x) * (1 + scale[:, None]) + shift */
void opcu_layernorm_modulate(op_ctx *c, tensor out, tensor x, tensor shift, tensor scale,
                             float eps) {
    const int64_t N = x.shape[1], C = x.shape[2], rows = x.shape[0] * N;
    if (rows == 0) return;
    layernorm_kernel<true><<<(unsigned)rows, row_threads(C), 0, opcu_st(c)>>>(
        mbf(out), cbf(x), C, NULL, NULL, cbf(shift), shift.stride[0], cbf(scale), scale.stride[0],
        N, (int)C, eps);
    CU_LAUNCHED(c);
}

/* x rsqrt(mean(x^2) + eps) w. once: rounded once, as torch.nn.RMSNorm / F.rms_norm's fused
 * CUDA kernel in torch 2.11 (FLUX q/k, MODEL-SPEC §1.11); twice: the normalised x is rounded
 * before the product, as T5LayerNorm and diffusers' RMSNorm compute it (§2.5, §4.2). */
static void rmsnorm(op_ctx *c, tensor out, tensor x, tensor w, float eps, int twice) {
    int64_t xs, os;
    const int64_t rows = tensor_rows(&x, &xs), D = x.shape[x.ndim - 1];
    tensor_rows(&out, &os);
    if (rows == 0) return;
    const cudaStream_t st = opcu_st(c);
    if (D > 1024) {
        rmsnorm_block_kernel<<<(unsigned)rows, row_threads(D), 0, st>>>(
            mbf(out), os, cbf(x), xs, cbf(w), (int)D, eps, twice);
        CU_LAUNCHED(c);
        return;
    }
    const unsigned blocks = (unsigned)((rows + RMS_WARPS - 1) / RMS_WARPS);
#define RMS_WARP(vpl)                                                                              \
    rmsnorm_warp_kernel<vpl><<<blocks, RMS_WARPS * 32, 0, st>>>(mbf(out), os, cbf(x), xs, cbf(w),  \
                                                                rows, (int)D, eps, twice)
    switch (D <= 64 ? 2 : D <= 128 ? 4 : D <= 256 ? 8 : D <= 512 ? 16 : 32) {
    case 2: RMS_WARP(2); break;
    case 4: RMS_WARP(4); break;
    case 8: RMS_WARP(8); break;
    case 16: RMS_WARP(16); break;
    default: RMS_WARP(32); break;
    }
#undef RMS_WARP
    CU_LAUNCHED(c);
}

void opcu_rmsnorm(op_ctx *c, tensor out, tensor x, tensor w, float eps) {
    rmsnorm(c, out, x, w, eps, 0);
}

void opcu_rmsnorm2(op_ctx *c, tensor out, tensor x, tensor w, float eps) {
    rmsnorm(c, out, x, w, eps, 1);
}

/* torch.nn.GroupNorm(groups, C, eps), then SiLU (diffusers ResnetBlock2D's norm + act) */
void opcu_groupnorm(op_ctx *c, tensor out, tensor x, tensor w, tensor b, int groups, float eps,
                    int silu) {
    const int64_t B = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3];
    const int64_t cg = C / groups, n = cg * HW, G = B * groups;
    const int64_t nchunk = (n + GN_CHUNK - 1) / GN_CHUNK;
    if (G == 0 || n == 0) return;
    CHECK(G <= 65535 && nchunk <= INT32_MAX);
    const cudaStream_t st = opcu_st(c);
    float2 *part = (float2 *)opcu_scratch(c, (size_t)(G * nchunk + G) * sizeof(float2));
    float2 *stats = part + G * nchunk;
    groupnorm_partial_kernel<<<dim3((unsigned)nchunk, (unsigned)G), GN_THREADS, 0, st>>>(part,
                                                                                         cbf(x), n);
    CU_LAUNCHED(c);
    groupnorm_stats_kernel<<<(unsigned)G, GN_THREADS, 0, st>>>(stats, part, n, (int)nchunk, eps);
    CU_LAUNCHED(c);
    int64_t by = (HW + GN_THREADS * GN_APPLY - 1) / (GN_THREADS * GN_APPLY);
    by = by < 65535 ? by : 65535;
    groupnorm_apply_kernel<<<dim3((unsigned)(B * C), (unsigned)by), GN_THREADS, 0, st>>>(
        mbf(out), cbf(x), stats, cbf(w), cbf(b), (int)C, (int)cg, HW, silu);
    CU_LAUNCHED(c);
}

void opcu_softmax(op_ctx *c, tensor out, tensor x) {
    const int64_t rows = tensor_rows(&x, NULL), n = x.shape[x.ndim - 1];
    if (rows == 0) return;
    int64_t t = ((n + NORM_VPT - 1) / NORM_VPT + 31) / 32 * 32;
    t = t < 32 ? 32 : t > 1024 ? 1024 : t;
    softmax_kernel<<<(unsigned)rows, (unsigned)t, 0, opcu_st(c)>>>(mbf(out), cbf(x), n);
    CU_LAUNCHED(c);
}

} /* extern "C" */
