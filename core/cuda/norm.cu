/* norm.cu: LayerNorm (plain, and with the adaLN modulation), RMSNorm, GroupNorm (+SiLU) and the
 * row softmax on BF16 activations, statistics in fp32 (ops.h; the CPU reference is
 * ops_cpu.c). A row is one block (a group of lanes of a warp for RMSNorm rows of up to 1024,
 * the q/k heads); each thread keeps its values of the row in registers from the load to the
 * write, so a row is read once and RMSNorm may write in place. Where the row length, pointers
 * and strides allow, a thread moves its values in groups of 8 (16-byte accesses: these kernels
 * are bound by DRAM bandwidth, and scalar 2-byte accesses leave it mostly idle), else one at a
 * time; the arithmetic per value is the same either way. Every sum goes through
 * warp_sum/block_sum or a fixed butterfly, so the same input gives the same bits. A GroupNorm
 * group can hold 16M values: blocks of GN_CHUNK values each store their (mean, M2), a second
 * kernel merges a group's chunks by Chan's formula in a fixed order, and a third normalises. */
#include "core/cuda/common.cuh"

#define NORM_VPT 8 /* scalar path: row values a thread keeps (rows of up to 8192) */
/* 16-byte path: threads of a row's block, about (apex's fast LayerNorm also takes 4 warps a row
 * of 1024-8192 values) */
#define NORM_THREADS 128
#define RMS_THREADS 256 /* block of the RMSNorm kernel for rows of up to 1024 */
#define RMS_RPT 2       /* rows a lane group holds at once: two rows' loads in flight */
#define GN_THREADS 256
#define GN_VPT 16                      /* values a thread keeps in the statistics pass */
#define GN_CHUNK (GN_THREADS * GN_VPT) /* values of one partial statistic */
#define GN_APPLY 4                     /* values a thread normalises, about */

/* Threads of a block that holds a row of n values, NORM_VPT to a thread (scalar path). */
static int row_threads(int64_t n) {
    int64_t t = (n + NORM_VPT - 1) / NORM_VPT;
    t = (t + 31) / 32 * 32;
    CHECK(t <= 1024);
    return t < 32 ? 32 : (int)t;
}

/* 16-byte path: groups of 8 a thread holds (1-4, 6 or 8, the kernels instantiated) for a row of
 * nvec groups over about NORM_THREADS threads, and the threads that then cover the row. */
static int vec_nv(int64_t nvec) {
    const int64_t nv = (nvec + NORM_THREADS - 1) / NORM_THREADS;
    return nv <= 4 ? (int)nv : nv <= 6 ? 6 : 8;
}
static int vec_threads(int64_t nvec, int nv) {
    int64_t t = ((nvec + nv - 1) / nv + 31) / 32 * 32;
    CHECK(t <= 1024);
    return (int)t;
}

/* Thread t of a block of T holds the NV groups of VW consecutive values at (t + j T) VW, j < NV,
 * of a row of n (0 past the end; a group lies wholly inside the row or past it). */
template <int VW, int NV>
static __device__ __forceinline__ void row_load(const bf16 *xr, int n, float *v) {
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = (threadIdx.x + j * blockDim.x) * VW;
        if (i < n) {
            ldv<VW>(xr + i, v + j * VW);
        } else {
#pragma unroll
            for (int k = 0; k < VW; k++)
                v[j * VW + k] = 0.0f;
        }
    }
}

/* The same groups of a parameter row kept as BF16 (half the registers) until they are used,
 * so their loads go out with x's before the reductions; dflt where p is NULL or past n. */
template <int VW, int NV>
static __device__ __forceinline__ void row_load_raw(const bf16 *p, int n, bf16 *r, float dflt) {
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = (threadIdx.x + j * blockDim.x) * VW;
        if (p && i < n) {
            if constexpr (VW == 8) {
                *(uint4 *)(r + j * VW) = *(const uint4 *)(p + i);
            } else {
#pragma unroll
                for (int k = 0; k < VW; k++)
                    r[j * VW + k] = p[i + k];
            }
        } else {
#pragma unroll
            for (int k = 0; k < VW; k++)
                r[j * VW + k] = f2bf(dflt);
        }
    }
}

/* Mean and 1/sqrt(var + eps) of the row the block holds: the mean first, then the biased
 * variance of x - mean (two passes over registers; torch.nn.LayerNorm's fp32 statistics). */
template <int VW, int NV>
static __device__ __forceinline__ float2 row_moments(const float *v, int n, float eps, float *sh) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < NV * VW; k++)
        s += v[k];
    const float mu = block_sum(s, sh) / (float)n;
    float q = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        if ((threadIdx.x + j * blockDim.x) * VW >= n) continue;
#pragma unroll
        for (int k = 0; k < VW; k++) {
            const float d = v[j * VW + k] - mu;
            q += d * d;
        }
    }
    return make_float2(mu, rsqrtf(block_sum(q, sh) / (float)n + eps));
}

/* One block per row (blockIdx.x; blockIdx.y the batch, which picks pa's and pb's rows), spread
 * over the threads as row_load spreads it. MOD: the adaLN modulation, pa = scale, pb = shift,
 * where the eager bf16 reference rounds LN(x), 1 + scale, the product and the sum. Else plain
 * LayerNorm, pa = w and pb = b (NULL: 1 and 0), one fused multiply-add and one rounding. */
template <bool MOD, int VW, int NV>
static __global__ void layernorm_kernel(bf16 *out, const bf16 *x, int64_t xs, const bf16 *pa,
                                        int64_t pas, const bf16 *pb, int64_t pbs, int C,
                                        float eps) {
    __shared__ float sh[32];
    const int64_t r = (int64_t)blockIdx.y * gridDim.x + blockIdx.x;
    float v[NV * VW];
    alignas(16) bf16 a[NV * VW], b[NV * VW];
    row_load<VW, NV>(x + r * xs, C, v);
    row_load_raw<VW, NV>(pa ? pa + blockIdx.y * pas : NULL, C, a, 1.0f);
    row_load_raw<VW, NV>(pb ? pb + blockIdx.y * pbs : NULL, C, b, 0.0f);
    const float2 m = row_moments<VW, NV>(v, C, eps, sh);
    bf16 *o = out + r * C;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = (threadIdx.x + j * blockDim.x) * VW;
        if (i >= C) continue;
        float y[VW];
#pragma unroll
        for (int k = 0; k < VW; k++) {
            const float z = (v[j * VW + k] - m.x) * m.y;
            const float s = bf2f(a[j * VW + k]), t = bf2f(b[j * VW + k]);
            y[k] = MOD ? rbf(rbf(z) * rbf(1.0f + s)) + t : __fmaf_rn(z, s, t);
        }
        stv<VW>(o + i, y);
    }
}

/* Groups of G lanes (a power of two, at most 32) hold a row of D each, lane l of a group the NV
 * groups of VW values at (l + j G) VW, j < NV; a block takes RMS_RPT rows to a group, all
 * loaded before the first write (out may be x). */
template <int VW, int NV, int G>
static __global__ void rmsnorm_rows_kernel(bf16 *out, int64_t os, const bf16 *x, int64_t xs,
                                           const bf16 *w, int64_t rows, int D, float eps,
                                           int twice) {
    const int l = threadIdx.x % G, ng = RMS_THREADS / G;
    const int64_t r0 = (int64_t)blockIdx.x * ng * RMS_RPT + threadIdx.x / G;
    float v[RMS_RPT][NV * VW];
    alignas(16) bf16 wr[NV * VW];
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = (l + j * G) * VW;
#pragma unroll
        for (int k = 0; k < VW; k++)
            wr[j * VW + k] = f2bf(0.0f);
        if (i < D) {
            if constexpr (VW == 8)
                *(uint4 *)(wr + j * VW) = *(const uint4 *)(w + i);
            else
                wr[j * VW] = w[i];
        }
    }
#pragma unroll
    for (int q = 0; q < RMS_RPT; q++) {
        const int64_t r = r0 + q * ng;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int i = (l + j * G) * VW;
            if (r < rows && i < D) {
                ldv<VW>(x + r * xs + i, v[q] + j * VW);
            } else {
#pragma unroll
                for (int k = 0; k < VW; k++)
                    v[q][j * VW + k] = 0.0f;
            }
        }
    }
    /* every lane takes part in the shuffles, rows past the end included */
    float rs[RMS_RPT];
#pragma unroll
    for (int q = 0; q < RMS_RPT; q++) {
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < NV * VW; k++)
            ss += v[q][k] * v[q][k];
#pragma unroll
        for (int o = G / 2; o > 0; o >>= 1)
            ss += __shfl_xor_sync(0xffffffffu, ss, o);
        rs[q] = rsqrtf(ss / (float)D + eps);
    }
#pragma unroll
    for (int q = 0; q < RMS_RPT; q++) {
        const int64_t r = r0 + q * ng;
        if (r >= rows) continue;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int i = (l + j * G) * VW;
            if (i >= D) continue;
            float y[VW];
#pragma unroll
            for (int k = 0; k < VW; k++) {
                const float n = v[q][j * VW + k] * rs[q];
                y[k] = (twice ? rbf(n) : n) * bf2f(wr[j * VW + k]);
            }
            stv<VW>(out + r * os + i, y);
        }
    }
}

/* The RMSNorm of every (batch, token, head) row of x [B,L,H,D] in place, rows strided: a group
 * of G = D/8 lanes takes a row, 8 values a lane; the sum is the rows kernel's with G lanes and
 * one group of 8 (same order). ROPE: FLUX's q/k norm (one rounding) then RoPE in one pass
 * (op_rmsnorm_rope), the rotation rope_kernel's on the rounded values, so the result is the
 * two ops' bit for bit with one pass over x. Without: the norm alone, rounded twice if twice
 * (op_rmsnorm2_heads, SD3's q/k norms). */
template <int G, bool ROPE>
static __global__ void rmsnorm_heads_kernel(bf16 *x, int64_t s0, int64_t s1, int64_t s2,
                                            const bf16 *w, const float *cs, const float *sn,
                                            int64_t L, int64_t H, int64_t rows, float eps,
                                            int twice) {
    const int l = threadIdx.x % G, D = 8 * G, i = 8 * l;
    const int64_t r = (int64_t)blockIdx.x * (RMS_THREADS / G) + threadIdx.x / G;
    const int64_t h = r % H, tok = r / H % L, b = r / H / L;
    float v[8], c[8], sv[8];
    alignas(16) bf16 wr[8];
    bf16 *p = x + b * s0 + tok * s1 + h * s2 + i;
    *(uint4 *)wr = *(const uint4 *)(w + i);
    if (r < rows) {
        ldv<8>(p, v);
        if constexpr (ROPE) {
            const float4 *c4 = (const float4 *)(cs + tok * D + i),
                         *s4 = (const float4 *)(sn + tok * D + i);
            *(float4 *)c = c4[0], *(float4 *)(c + 4) = c4[1];
            *(float4 *)sv = s4[0], *(float4 *)(sv + 4) = s4[1];
        }
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++)
            v[k] = 0.0f;
    }
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; k++)
        ss += v[k] * v[k];
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (r >= rows) return;
    const float rs = rsqrtf(ss / (float)D + eps);
    float y[8];
    if constexpr (ROPE) {
#pragma unroll
        for (int k = 0; k < 8; k++)
            y[k] = rbf(v[k] * rs * bf2f(wr[k]));
#pragma unroll
        for (int k = 0; k < 8; k += 2) {
            const float a = y[k], bb = y[k + 1];
            /* torch's x cos + rotate(x) sin: each product rounded, then the sum (no FMA) */
            y[k] = __fsub_rn(__fmul_rn(a, c[k]), __fmul_rn(bb, sv[k]));
            y[k + 1] = __fadd_rn(__fmul_rn(bb, c[k]), __fmul_rn(a, sv[k]));
        }
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const float n = v[k] * rs;
            y[k] = (twice ? rbf(n) : n) * bf2f(wr[k]);
        }
    }
    stv<8>(p, y);
}

/* One block per row of D (T5's 4096), spread as row_load spreads it. */
template <int VW, int NV>
static __global__ void rmsnorm_block_kernel(bf16 *out, int64_t os, const bf16 *x, int64_t xs,
                                            const bf16 *w, int D, float eps, int twice) {
    __shared__ float sh[32];
    const int64_t r = blockIdx.x;
    float v[NV * VW], ss = 0.0f;
    alignas(16) bf16 wr[NV * VW];
    row_load<VW, NV>(x + r * xs, D, v);
    row_load_raw<VW, NV>(w, D, wr, 0.0f);
#pragma unroll
    for (int k = 0; k < NV * VW; k++)
        ss += v[k] * v[k];
    const float rs = rsqrtf(block_sum(ss, sh) / (float)D + eps);
    bf16 *o = out + r * os;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = (threadIdx.x + j * blockDim.x) * VW;
        if (i >= D) continue;
        float y[VW];
#pragma unroll
        for (int k = 0; k < VW; k++) {
            const float n = v[j * VW + k] * rs;
            y[k] = (twice ? rbf(n) : n) * bf2f(wr[j * VW + k]);
        }
        stv<VW>(o + i, y);
    }
}

/* Block (k, g): chunk k of group g (a group's values are contiguous in [B,C,H,W]); stores the
 * chunk's mean and M2 (sum of squared deviations from that mean). Thread t holds the groups of
 * VW values at (t + j GN_THREADS) VW, j < GN_VPT / VW. */
template <int VW>
static __global__ void groupnorm_partial_kernel(float2 *part, const bf16 *x, int64_t n) {
    __shared__ float sh[32];
    const int64_t g = blockIdx.y, start = (int64_t)blockIdx.x * GN_CHUNK;
    const int cnt = (int)(n - start < GN_CHUNK ? n - start : GN_CHUNK);
    const bf16 *xc = x + g * n + start;
    float v[GN_VPT], s = 0.0f;
#pragma unroll
    for (int j = 0; j < GN_VPT / VW; j++) {
        const int i = (threadIdx.x + j * GN_THREADS) * VW;
        if (i < cnt) {
            ldv<VW>(xc + i, v + j * VW);
        } else {
#pragma unroll
            for (int k = 0; k < VW; k++)
                v[j * VW + k] = 0.0f;
        }
#pragma unroll
        for (int k = 0; k < VW; k++)
            s += v[j * VW + k];
    }
    const float mean = block_sum(s, sh) / (float)cnt;
    float q = 0.0f;
#pragma unroll
    for (int j = 0; j < GN_VPT / VW; j++) {
        const int i = (threadIdx.x + j * GN_THREADS) * VW;
#pragma unroll
        for (int k = 0; k < VW; k++) {
            const float d = v[j * VW + k] - mean;
            if (i < cnt) q += d * d;
        }
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

/* Block (p, j): plane p = b C + c, its values j GN_THREADS VW, ... (grid-stride on y), VW at a
 * time. */
template <int VW>
static __global__ void groupnorm_apply_kernel(bf16 *out, const bf16 *x, const float2 *stats,
                                              const bf16 *w, const bf16 *b, int C, int cg,
                                              int64_t HW, int silu) {
    const int64_t p = blockIdx.x;
    const int ch = (int)(p % C);
    const float2 st = stats[p / cg]; /* group b groups + ch / cg */
    const float wc = bf2f(w[ch]), bc = bf2f(b[ch]);
    const bf16 *xp = x + p * HW;
    bf16 *op = out + p * HW;
    for (int64_t i = ((int64_t)blockIdx.y * GN_THREADS + threadIdx.x) * VW; i < HW;
         i += (int64_t)gridDim.y * GN_THREADS * VW) {
        float v[VW];
        ldv<VW>(xp + i, v);
#pragma unroll
        for (int k = 0; k < VW; k++) {
            const float y = (v[k] - st.x) * st.y * wc + bc;
            /* torch rounds GroupNorm's output to bf16 before the SiLU */
            v[k] = silu ? act_eval(rbf(y), OP_ACT_SILU) : y;
        }
        stv<VW>(op + i, v);
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

/* B batches of N rows of C: x's rows xs apart, out contiguous, pa and pb one row per batch
 * (pas, pbs apart; NULL: none). 16-byte groups where C, the pointers and the strides allow,
 * else the scalar path. */
template <bool MOD>
static void layernorm(op_ctx *c, bf16 *out, const bf16 *x, int64_t xs, const bf16 *pa, int64_t pas,
                      const bf16 *pb, int64_t pbs, int64_t B, int64_t N, int64_t C, float eps) {
    if (B * N == 0) return;
    CHECK(N <= INT32_MAX && B <= 65535);
    const bool vec = C > 0 && C % 8 == 0 && xs % 8 == 0 && pas % 8 == 0 && pbs % 8 == 0 &&
                     opcu_al16(out) && opcu_al16(x) && opcu_al16(pa) && opcu_al16(pb);
    const int nv = vec ? vec_nv(C / 8) : 0;
    const int threads = vec ? vec_threads(C / 8, nv) : row_threads(C);
    const dim3 grid((unsigned)N, (unsigned)B);
#define LN(vw, n)                                                                                  \
    layernorm_kernel<MOD, vw, n>                                                                   \
        <<<grid, threads, 0, opcu_st(c)>>>(out, x, xs, pa, pas, pb, pbs, (int)C, eps)
    switch (nv) {
    case 0: LN(1, NORM_VPT); break;
    case 1: LN(8, 1); break;
    case 2: LN(8, 2); break;
    case 3: LN(8, 3); break;
    case 4: LN(8, 4); break;
    case 6: LN(8, 6); break;
    default: LN(8, 8); break;
    }
#undef LN
    CU_LAUNCHED(c);
}

extern "C" {

/* torch.nn.LayerNorm(C, eps, elementwise_affine = w != NULL) */
void opcu_layernorm(op_ctx *c, tensor out, tensor x, const tensor *w, const tensor *b, float eps) {
    int64_t xs;
    const int64_t rows = tensor_rows(&x, &xs), C = x.shape[x.ndim - 1];
    layernorm<false>(c, mbf(out), cbf(x), xs, w ? cbf(*w) : NULL, 0, b ? cbf(*b) : NULL, 0, 1, rows,
                     C, eps);
}

/* diffusers AdaLayerNormZero / FluxTransformerBlock: norm(x) * (1 + scale[:, None]) + shift */
void opcu_layernorm_modulate(op_ctx *c, tensor out, tensor x, tensor shift, tensor scale,
                             float eps) {
    const int64_t C = x.shape[2];
    layernorm<true>(c, mbf(out), cbf(x), C, cbf(scale), scale.stride[0], cbf(shift),
                    shift.stride[0], x.shape[0], x.shape[1], C, eps);
}

/* x rsqrt(mean(x^2) + eps) w. once: rounded once, as torch.nn.RMSNorm / F.rms_norm's fused
 * CUDA kernel in torch 2.11 (FLUX q/k, docs/MODEL-SPEC.md §1.11); twice: the normalised x is
 * rounded before the product, as T5LayerNorm and diffusers' RMSNorm compute it (§2.5, §4.2). Rows of
 * up to 1024 go to lane groups (16 lanes of 8 values for FLUX's heads of 128), longer ones to
 * a block each. */
static void rmsnorm(op_ctx *c, tensor out, tensor x, tensor w, float eps, int twice) {
    int64_t xs, os;
    const int64_t rows = tensor_rows(&x, &xs), D = x.shape[x.ndim - 1];
    tensor_rows(&out, &os);
    if (rows == 0) return;
    const cudaStream_t st = opcu_st(c);
    const bool vec = D % 8 == 0 && xs % 8 == 0 && os % 8 == 0 && opcu_al16(out.data) &&
                     opcu_al16(x.data) && opcu_al16(w.data);
    if (D > 1024) {
        const int nv = vec ? vec_nv(D / 8) : 0;
        const int threads = vec ? vec_threads(D / 8, nv) : row_threads(D);
#define RMS_BLOCK(vw, n)                                                                           \
    rmsnorm_block_kernel<vw, n>                                                                    \
        <<<(unsigned)rows, threads, 0, st>>>(mbf(out), os, cbf(x), xs, cbf(w), (int)D, eps, twice)
        switch (nv) {
        case 0: RMS_BLOCK(1, NORM_VPT); break;
        case 1: RMS_BLOCK(8, 1); break;
        case 2: RMS_BLOCK(8, 2); break;
        case 3: RMS_BLOCK(8, 3); break;
        case 4: RMS_BLOCK(8, 4); break;
        case 6: RMS_BLOCK(8, 6); break;
        default: RMS_BLOCK(8, 8); break;
        }
#undef RMS_BLOCK
        CU_LAUNCHED(c);
        return;
    }
    /* lanes per row and values per lane: a power-of-two row of 8-value groups fills a lane
     * group exactly; any other row takes a warp, 8 values (vec) or 1 to a lane at a time */
    const int64_t g = D / 8;
    const int G = vec && (g == 4 || g == 8 || g == 16) ? (int)g : 32;
    int nv = 1;
    if (!vec)
        nv = D <= 64 ? 2 : D <= 128 ? 4 : D <= 256 ? 8 : D <= 512 ? 16 : 32;
    else if (G == 32)
        nv = g <= 32 ? 1 : g <= 64 ? 2 : 4;
    const int64_t per_block = RMS_THREADS / G * RMS_RPT;
    const unsigned blocks = (unsigned)((rows + per_block - 1) / per_block);
#define RMS_ROWS(vw, n, lanes)                                                                     \
    rmsnorm_rows_kernel<vw, n, lanes><<<blocks, RMS_THREADS, 0, st>>>(                             \
        mbf(out), os, cbf(x), xs, cbf(w), rows, (int)D, eps, twice)
    if (vec) {
        switch (G == 32 ? 32 * nv : G) {
        case 4: RMS_ROWS(8, 1, 4); break;
        case 8: RMS_ROWS(8, 1, 8); break;
        case 16: RMS_ROWS(8, 1, 16); break;
        case 32: RMS_ROWS(8, 1, 32); break;
        case 64: RMS_ROWS(8, 2, 32); break;
        default: RMS_ROWS(8, 4, 32); break;
        }
    } else {
        switch (nv) {
        case 2: RMS_ROWS(1, 2, 32); break;
        case 4: RMS_ROWS(1, 4, 32); break;
        case 8: RMS_ROWS(1, 8, 32); break;
        case 16: RMS_ROWS(1, 16, 32); break;
        default: RMS_ROWS(1, 32, 32); break;
        }
    }
#undef RMS_ROWS
    CU_LAUNCHED(c);
}

/* One pass where the shape allows (D 64 or 128, 16-byte aligned rows), else the two ops. */
/* rmsnorm_heads_kernel over x [B,L,H,D] where D is 64 or 128 and every row is 16-byte
 * aligned; 0 (nothing launched) otherwise */
static int rmsnorm_heads(op_ctx *c, tensor x, tensor w, float eps, const tensor *cos,
                         const tensor *sin, int twice) {
    const int64_t B = x.shape[0], L = x.shape[1], H = x.shape[2], D = x.shape[3];
    const int64_t rows = B * L * H;
    const int vec = (D == 64 || D == 128) && opcu_al16(x.data) && opcu_al16(w.data) &&
                    x.stride[0] % 8 == 0 && x.stride[1] % 8 == 0 && x.stride[2] % 8 == 0 &&
                    (!cos || (opcu_al16(cos->data) && opcu_al16(sin->data)));
    if (!vec) return 0;
    if (rows == 0) return 1;
    const int G = (int)D / 8;
    const unsigned blocks = (unsigned)((rows + RMS_THREADS / G - 1) / (RMS_THREADS / G));
    const float *cp = cos ? (const float *)cos->data : NULL;
    const float *sp = sin ? (const float *)sin->data : NULL;
#define RMS_HEADS(GG, R)                                                                           \
    rmsnorm_heads_kernel<GG, R><<<blocks, RMS_THREADS, 0, opcu_st(c)>>>(                           \
        mbf(x), x.stride[0], x.stride[1], x.stride[2], cbf(w), cp, sp, L, H, rows, eps, twice)
    if (cos) {
        if (G == 16) RMS_HEADS(16, true);
        else RMS_HEADS(8, true);
    } else {
        if (G == 16) RMS_HEADS(16, false);
        else RMS_HEADS(8, false);
    }
#undef RMS_HEADS
    CU_LAUNCHED(c);
    return 1;
}

void opcu_rmsnorm_rope(op_ctx *c, tensor x, tensor w, float eps, tensor cos, tensor sin) {
    if (rmsnorm_heads(c, x, w, eps, &cos, &sin, 0)) return;
    ops_rmsnorm_heads(c, x, w, eps, opcu_rmsnorm);
    opcu_rope(c, x, cos, sin);
}

void opcu_rmsnorm2_heads(op_ctx *c, tensor x, tensor w, float eps) {
    if (rmsnorm_heads(c, x, w, eps, NULL, NULL, 1)) return;
    ops_rmsnorm_heads(c, x, w, eps, opcu_rmsnorm2);
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
    /* 8 values a load where every plane starts 16-byte aligned */
    const int vec = HW % 8 == 0 && opcu_al16(x.data) && opcu_al16(out.data);
    if (vec)
        groupnorm_partial_kernel<8>
            <<<dim3((unsigned)nchunk, (unsigned)G), GN_THREADS, 0, st>>>(part, cbf(x), n);
    else
        groupnorm_partial_kernel<1>
            <<<dim3((unsigned)nchunk, (unsigned)G), GN_THREADS, 0, st>>>(part, cbf(x), n);
    CU_LAUNCHED(c);
    groupnorm_stats_kernel<<<(unsigned)G, GN_THREADS, 0, st>>>(stats, part, n, (int)nchunk, eps);
    CU_LAUNCHED(c);
    int64_t by = (HW + GN_THREADS * GN_APPLY - 1) / (GN_THREADS * GN_APPLY);
    by = by < 65535 ? by : 65535;
    if (vec)
        groupnorm_apply_kernel<8><<<dim3((unsigned)(B * C), (unsigned)by), GN_THREADS, 0, st>>>(
            mbf(out), cbf(x), stats, cbf(w), cbf(b), (int)C, (int)cg, HW, silu);
    else
        groupnorm_apply_kernel<1><<<dim3((unsigned)(B * C), (unsigned)by), GN_THREADS, 0, st>>>(
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
